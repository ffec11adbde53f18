"""The study report (clorch report): table, bootstrap intervals, position effect, figures, sources.

Synthetic trial records (built with ClassificationRecord.from_rows, written with
results.write_trial) keep these fast and free of Ray; one test writes them to
a real MLflow SQLite store and builds the report from MLflow alone.
"""
import json
import re

import numpy as np
import pytest

from orchestrator.report import bootstrap
from orchestrator.report import figures
from orchestrator.results import stats
from orchestrator.report.analysis import analyse
from orchestrator.cli import main
from orchestrator.study.schema import Config, ObjectiveSpec, TrialSpec
from orchestrator.study.orders import latin_square, random_orders
from orchestrator.report.position import position_effect, verdict
from orchestrator.report.render import report_after_run, report_study
from orchestrator.results.store import write_json, read_trials, write_trial
from orchestrator.results.summary import trial_stats
from orchestrator.results.records import ClassificationRecord, StreamRecord, to_json_row

T = 5


def synthetic_matrix(order, finals, learned=96.0):
    """A matrix aligned by identity: tasks decay from ``learned`` towards their final accuracy; NaN if unseen."""
    A = np.full((len(order), len(order)), np.nan)
    for i in range(len(order)):
        for k, j in enumerate(order[:i + 1]):
            left = (len(order) - 1 - i) / max(1, len(order) - 1 - k)  # 1 when just learned, 0 at the end
            A[i, j] = finals[j] + (learned - finals[j]) * left if i < len(order) - 1 else finals[j]
    return A


def make_record(label, config_id, params, order, order_index, seed, finals, status="completed", ended_at=None):
    spec = TrialSpec(f"{config_id}-o{order_index}-s{seed}", config_id, label, "finetune", params, tuple(order),
                     order_index, seed, "task_incremental", False)
    A = synthetic_matrix(order, finals)
    rows = [{"position": i, "task_id": t, "row": to_json_row(A[i]), "val_row": to_json_row(A[i]), "train_s": 0.5,
             "eval_s": 0.05} for i, t in enumerate(order)]  # validation = test here, so choices read the same
    if status != "completed":
        rec = ClassificationRecord.from_rows(spec, rows[:2], len(order), status="failed",
                                             error="TrainingDiverged: loss is nan; lower lr")
    else:
        rec = ClassificationRecord.from_rows(spec, rows, len(order), status="completed")
    rec.ended_at = ended_at
    return rec


def finals_for(order, base, beta, noise, rng):
    """Final accuracy of each task identity: its own base + beta per position later + noise."""
    pos = np.empty(len(order), dtype=int)
    pos[list(order)] = np.arange(len(order))
    return base + beta * pos + rng.normal(0, noise, len(order))


CONFIGS = [  # label, config id, params, position slope (points per position), noise
    ("sgd", "sgd-aaaa1111", {"optimizer": "sgd", "lr": 0.05}, 3.0, 2.0),
    ("adam", "adam-bbbb2222", {"optimizer": "adam", "lr": 0.001}, 0.0, 2.0),
    ("adam", "adam-cccc3333", {"optimizer": "adam", "lr": 0.01}, -2.0, 1.0),
]


def synthetic_study(directory, R=6, seeds=(0, 1), configs=CONFIGS,
                    fail=(("adam-cccc3333", 0, 0), ("adam-cccc3333", 0, 1))):
    """Records of a study (every config x order x seed) written under ``directory``.

    By default both seeds of one order of one config fail: that config has R - 1 orders.
    """
    rng = np.random.default_rng(1)
    base = rng.uniform(65, 85, T)
    orders = random_orders(T, R, 0, True)
    records, clock = [], 1_700_000_000.0
    for label, cid, params, beta, noise in configs:
        for r, order in enumerate(orders):
            for seed in seeds:
                clock += 2.0
                status = "failed" if (cid, r, seed) in (fail or ()) else "completed"
                rec = make_record(label, cid, params, order, r, seed, finals_for(order, base, beta, noise, rng),
                                  status, ended_at=clock)
                write_trial(directory, rec)
                records.append(rec)
    return records


def parse_table(markdown, column):
    """The first markdown table with a column named ``column``: list of {column: cell}."""
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|") and f"| {column} |" in ln + " ")
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(header, [c.strip() for c in ln.strip("|").split("|")])))
    return rows


def numbers(cell):
    return [float(x) for x in re.findall(r"-?\d+\.\d+", cell)]


@pytest.fixture
def study(tmp_path):
    results = tmp_path / "results"
    records = synthetic_study(results / "syn")
    return results, records


@pytest.fixture(scope="module")
def syn_report(tmp_path_factory):
    """The report of the synthetic study, built once for the tests that only read it."""
    results = tmp_path_factory.mktemp("report") / "results"
    synthetic_study(results / "syn")
    return results, report_study("syn", results)


# ---------------------------------------------------------------- the table


def test_table_numbers_equal_the_statistics_of_the_stored_matrices(syn_report):
    results, report = syn_report
    text = report.path.read_text()
    stored = read_trials(results / "syn")
    rows = {row["config"]: row for row in parse_table(text, "ACC CI")}
    names = {"sgd-aaaa1111": "sgd", "adam-bbbb2222": "adam #1", "adam-cccc3333": "adam #2"}
    for cid, name in names.items():
        mine = [r for r in stored if r.config_id == cid]
        done = [r for r in mine if r.completed]
        expected = stats.config_stats([r.matrix() for r in done], [r.order for r in done])
        row = rows[name]
        assert int(row["R"]) == expected["R"]
        for column, key in [("ACC", "acc"), ("BWT", "bwt"), ("Forgetting", "forgetting"), ("Task.Acc", "task_acc")]:
            mean, std = numbers(row[column])
            assert mean == pytest.approx(expected[f"{key}_mean"], abs=0.005), (name, column)
            assert std == pytest.approx(expected[f"{key}_std"], abs=0.005), (name, column)
        assert numbers(row["AOPD"])[0] == pytest.approx(expected["aopd"], abs=0.005)
        assert numbers(row["MOPD"])[0] == pytest.approx(expected["mopd"], abs=0.005)
        assert row["failed"] == f"{len(mine) - len(done)}/{len(mine)}"
        lo, hi = numbers(row["ACC CI"])
        assert lo <= expected["acc_mean"] <= hi
    # the config that lost a trial has one order fewer: the report warns that R differs
    assert int(rows["adam #2"]["R"]) == 5 and int(rows["sgd"]["R"]) == 6
    assert "compared at different R" in text


def test_no_r_warning_when_every_config_has_the_same_r(tmp_path):
    synthetic_study(tmp_path / "results" / "same", fail=None)
    text = report_study("same", tmp_path / "results").path.read_text()
    assert "compared at different R" not in text
    assert "## Failed trials" not in text


def test_configs_and_searched_parameters_are_listed(syn_report):
    text = syn_report[1].path.read_text()
    configs = {row["config"]: row for row in parse_table(text, "searched parameters")}
    assert configs["adam #1"]["searched parameters"] == "lr=0.001"
    assert configs["adam #2"]["searched parameters"] == "lr=0.01"
    assert configs["sgd"]["searched parameters"] == "–"
    assert "`adam-cccc3333-o0-s0`: TrainingDiverged" in text


# ---------------------------------------------------------------- bootstrap


def _finals_study(R, beta=1.5, noise=4.0, seed=0):
    """Matrices and orders of one config over R distinct random orders.

    Final accuracy = task base + beta per position + uniform noise in [-noise, noise]:
    bounded, so each task's range over orders settles as R grows (as accuracies do).
    """
    rng = np.random.default_rng(seed)
    base = np.linspace(70, 90, T)
    orders = random_orders(T, R, seed, False)
    matrices = [synthetic_matrix(o, base + beta * np.argsort(o) + rng.uniform(-noise, noise, T)) for o in orders]
    return matrices, orders


@pytest.mark.parametrize("R", [4, 8, 32])
def test_acc_and_slope_intervals_contain_the_point_estimate(R):
    matrices, orders = _finals_study(R)
    point = stats.config_stats(matrices, orders)
    lo, hi = bootstrap.acc_ci(matrices, orders)
    assert lo <= point["acc_mean"] <= hi and lo < hi
    effect = position_effect(matrices, orders)
    assert effect["slope_lo"] <= effect["slope"] <= effect["slope_hi"]
    for p in range(T):
        assert effect["curve_lo"][p] <= effect["curve"][p] <= effect["curve_hi"][p]


def test_aopd_interval_lies_at_or_below_aopd_a_resample_only_narrows_a_range():
    matrices, orders = _finals_study(12)
    point = stats.config_stats(matrices, orders)["aopd"]
    lo, hi = bootstrap.aopd_ci(matrices, orders)
    assert lo < hi <= point + 1e-9


def test_intervals_shrink_with_more_orders():
    """Mean width over 5 synthetic studies at each R (one study's width is itself noisy at small R)."""
    def widths(R):
        out = []
        for replicate in range(5):
            m, o = _finals_study(R, seed=100 * R + replicate)
            acc, aopd = bootstrap.acc_ci(m, o), bootstrap.aopd_ci(m, o)
            effect = position_effect(m, o)
            out.append((acc[1] - acc[0], aopd[1] - aopd[0], effect["slope_hi"] - effect["slope_lo"]))
        return np.mean(out, axis=0)

    few, some, many = widths(6), widths(24), widths(96)
    assert np.all(many < some) and np.all(some < few)  # ACC, AOPD, position slope
    assert np.all(many < 0.5 * few)


def test_batched_statistics_equal_the_statistics_functions():
    matrices, orders = _finals_study(7)
    orders = orders + [orders[0]]  # a second seed of one order
    matrices = matrices + [synthetic_matrix(orders[0], np.full(T, 50.0))]
    expected = stats.config_stats(matrices, orders)
    n, acc = bootstrap.acc_statistic(matrices, orders)
    assert n == 7 == expected["R"]
    everything = np.arange(n)[None, :]
    assert acc(everything)[0] == pytest.approx(expected["acc_mean"])
    _, aopd = bootstrap.aopd_statistic(matrices, orders)
    assert aopd(everything)[0] == pytest.approx(expected["aopd"])
    # the batched AOPD on each resample = stats.opd on the same resampled orders (same seed, same resamples)
    _, finals = bootstrap.order_finals(matrices, orders)
    plain = bootstrap.bootstrap_ci(list(finals), lambda units: np.nanmean(stats.opd(np.stack(units))),
                                   n_resamples=300, seed=3)
    batched = bootstrap.bootstrap_batched(n, aopd, n_resamples=300, seed=3)
    assert batched == pytest.approx(plain)


def test_bootstrap_is_seeded_and_configurable():
    matrices, orders = _finals_study(8)
    assert bootstrap.acc_ci(matrices, orders, seed=5) == bootstrap.acc_ci(matrices, orders, seed=5)
    assert bootstrap.acc_ci(matrices, orders, seed=5) != bootstrap.acc_ci(matrices, orders, seed=6)
    narrow = bootstrap.acc_ci(matrices, orders, confidence=0.5)
    wide = bootstrap.acc_ci(matrices, orders, confidence=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        bootstrap.acc_ci(matrices, orders, n_resamples=0)


# ---------------------------------------------------------------- position effect


@pytest.mark.parametrize("beta, answer", [(2.0, "later helps"), (-1.5, "later hurts"), (0.0, "no clear effect")])
def test_position_effect_recovers_a_planted_slope(beta, answer):
    """Latin square orders, final = task base + beta * position exactly: e(p) = beta * (p - mean p)."""
    base = np.array([60.0, 70.0, 80.0, 75.0, 65.0])
    orders = latin_square(T)
    matrices = [synthetic_matrix(o, base + beta * np.argsort(o)) for o in orders]  # argsort: the positions
    effect = position_effect(matrices, orders)
    assert effect["R"] == T
    assert effect["slope"] == pytest.approx(beta)
    assert effect["curve"] == pytest.approx([beta * (p - 2) for p in range(T)])
    assert effect["slope_lo"] == pytest.approx(beta) and effect["slope_hi"] == pytest.approx(beta)
    assert verdict(effect).startswith(answer)


def test_position_effect_needs_two_orders():
    effect = position_effect([synthetic_matrix((0, 1, 2, 3, 4), np.full(T, 80.0))], [(0, 1, 2, 3, 4)])
    assert effect["R"] == 1 and np.isnan(effect["slope"]) and verdict(effect).startswith("not estimable")


# ---------------------------------------------------------------- figures


@pytest.fixture
def analysed(study):
    _, records = study
    return analyse(records, n_resamples=200)


def test_accuracy_matrix_has_one_position_aligned_heatmap_per_config(analysed):
    fig = figures.accuracy_matrix(analysed)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert len(panels) == len(analysed)
    for ax, r in zip(panels, analysed):
        assert ax.get_xlabel().startswith("task at position") and ax.get_ylabel().startswith("after training")
        assert ax.get_title().startswith(r.name)
        M = np.asarray(ax.images[0].get_array())
        assert M.shape == (T, T)
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # empty above the diagonal
            expected = np.nanmean([figures.position_aligned(A, o) for A, o in zip(r.matrices, r.orders)], axis=0)
        assert np.allclose(M, expected, equal_nan=True)
        assert np.isnan(M[0, 1]) and not np.isnan(np.diag(M)).any()  # nothing before it is learned


def test_final_accuracy_has_one_column_per_task_and_one_point_per_order(analysed):
    fig = figures.final_accuracy_per_task(analysed)
    assert len(fig.axes) == T
    assert [ax.get_title() for ax in fig.axes] == [f"task {j}" for j in range(T)]
    assert fig.axes[0].get_ylabel() == "final accuracy (%)"
    for j, ax in enumerate(fig.axes):
        points = [c.get_offsets() for c in ax.collections]
        assert len(points) == len(analysed)
        for pts, r in zip(points, analysed):
            assert len(pts) == r.entry["R"]
            assert np.ptp(pts[:, 1]) == pytest.approx(r.entry["opd_per_task"][j])  # the spread is OPD_j


def test_opd_figure_has_one_bar_group_per_config(analysed):
    ax = figures.opd_per_task(analysed).axes[0]
    assert ax.get_ylabel() == "OPD (points)" and ax.get_xlabel() == "task"
    assert len(ax.containers) == len(analysed)
    for bars, r in zip(ax.containers, analysed):
        assert [b.get_height() for b in bars] == pytest.approx(r.entry["opd_per_task"])


def test_acc_vs_aopd_places_each_config_and_its_intervals(analysed):
    ax = figures.acc_vs_aopd(analysed).axes[0]
    assert ax.get_xlabel().startswith("test AOPD") and ax.get_ylabel() == "test ACC (%)"
    dots = [c for c in ax.collections if c.get_label() in {r.name + f" (R={r.entry['R']})" for r in analysed}]
    assert len(dots) == len(analysed)
    for dot, r in zip(dots, analysed):
        assert tuple(dot.get_offsets()[0]) == pytest.approx((r.entry["aopd"], r.entry["acc_mean"]))
    assert len(ax.lines) >= 2 * len(analysed)  # an interval line each way per config


def test_frontier_keeps_configs_no_other_beats_on_both():
    points = [(10.0, 90.0), (5.0, 85.0), (12.0, 88.0), (5.0, 80.0), (20.0, 95.0)]
    assert figures.frontier(points) == [1, 0, 4]


def test_position_effect_figure_has_one_curve_per_config(analysed):
    ax = figures.position_effect(analysed).axes[0]
    assert ax.get_xlabel().startswith("position in the order") and "mean over orders" in ax.get_ylabel()
    curves = [ln for ln in ax.lines if len(ln.get_xdata()) == T]
    assert len(curves) == len(analysed)
    for line, r in zip(curves, analysed):
        assert list(line.get_xdata()) == list(range(1, T + 1))
        assert list(line.get_ydata()) == pytest.approx(r.position["curve"])


def progress_records():
    """A search of three configs of one label, two orders each (ACC = the constant final accuracy):
    X 80, 60 (trials end at 5 and 20), Y 70, 72 (end at 8, 10), Z 95, 75 (end at 25, 30).
    Completion order (a config counts once all its trials are in): Y at 10, X at 20, Z at 30."""
    orders = [(0, 1, 2, 3, 4), (4, 3, 2, 1, 0)]
    plan = {"X": [(80.0, 5.0), (60.0, 20.0)], "Y": [(70.0, 8.0), (72.0, 10.0)], "Z": [(95.0, 25.0), (75.0, 30.0)]}
    return [make_record("s", f"s-{cid}", {"lr": k}, orders[r], r, 0, np.full(T, a), ended_at=1000.0 + t)
            for k, (cid, trials) in enumerate(plan.items()) for r, (a, t) in enumerate(trials)]


@pytest.mark.parametrize("kind, values, best", [
    # mean ACC: Y 71, X 70, Z 85 -> best so far 71, 71, 85
    ("mean_acc", [71.0, 70.0, 85.0], [71.0, 71.0, 85.0]),
    # worst-order ACC: Y 70, X 60, Z 75 -> best so far 70, 70, 75 (the best single trial would start at 80)
    ("worst_acc", [70.0, 60.0, 75.0], [70.0, 70.0, 75.0]),
])
def test_search_figure_plots_the_best_config_objective_so_far(kind, values, best):
    results = analyse(progress_records(), n_resamples=50)
    ax = figures.search_progress(results, ObjectiveSpec(kind=kind)).axes[0]
    assert ax.get_xlabel().startswith("config completion time") and "objective" in ax.get_ylabel()
    points = sorted((float(x), float(y)) for c in ax.collections for x, y in c.get_offsets())
    assert [x for x, _ in points] == [0.0, 10.0, 20.0]
    assert [y for _, y in points] == pytest.approx(values)
    step = next(line for line in ax.get_lines() if "best so far" in line.get_label())
    assert list(step.get_xdata()) == [0.0, 10.0, 20.0]
    assert list(step.get_ydata()) == pytest.approx(best)


def test_search_figure_leaves_out_configs_with_a_failed_trial(analysed):
    ax = figures.search_progress(analysed).axes[0]
    shown = {c.get_label() for c in ax.collections}
    assert "adam #2" not in shown and {"sgd", "adam #1"} <= shown  # adam-cccc3333 has failed trials


def test_report_writes_non_empty_figures_and_embeds_them(syn_report):
    report = syn_report[1]
    # adam is a search: its progress and its searched-parameter figures are there too
    assert set(report.figures) == set(figures.FIGURES) | {"learning_curves", "forgetting_curves", "paired_forest",
                                                          "search_params_adam"}
    text = report.path.read_text()
    for name, path in report.figures.items():
        assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"
        assert f"](figures/{path.name})" in text
    assert "## Position effect" in text and "later helps" in text and "later hurts" in text


def test_without_a_search_the_search_figure_is_skipped_and_said_so(tmp_path):
    synthetic_study(tmp_path / "results" / "nosearch", configs=CONFIGS[:2], fail=None)
    stale = tmp_path / "results" / "nosearch" / "figures" / "search_progress.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    report = report_study("nosearch", tmp_path / "results", n_resamples=100)
    assert "search_progress" not in report.figures and not stale.exists()
    assert "No search in this study" in report.path.read_text()


# ---------------------------------------------------------------- sources and CLI


def test_report_from_mlflow_alone_and_logged_to_the_study_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from orchestrator.results.tracking import StudyTracker

    monkeypatch.chdir(tmp_path)  # MLflow's default ./mlruns artifact folder lands here
    results = tmp_path / "results"
    records = synthetic_study(results / "syn", R=3, seeds=(0,), fail=(("adam-cccc3333", 1, 0),))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    configs = [Config(cid, label, "finetune", params, {}) for label, cid, params, _, _ in CONFIGS]
    tracker = StudyTracker(uri, "syn-exp", "syn", {"benchmark": "synthetic"}, configs)
    for rec in records:
        tracker.log_trial(rec)

    local = report_study("syn", results, n_resamples=300)
    remote = report_study("syn", tmp_path / "elsewhere", tracking_uri=uri, n_resamples=300)
    assert remote.path == (tmp_path / "elsewhere" / "syn" / "report.md").resolve()
    assert "MLflow" in remote.path.read_text() and tracker.study_run in remote.path.read_text()
    assert parse_table(remote.path.read_text(), "ACC CI") == parse_table(local.path.read_text(), "ACC CI")
    assert set(remote.figures) == set(local.figures)

    client = MlflowClient(tracking_uri=uri)
    assert remote.logged_to == tracker.study_run
    logged = {a.path for a in client.list_artifacts(tracker.study_run, "report")}
    assert "report/report.md" in logged
    logged_figures = {a.path for a in client.list_artifacts(tracker.study_run, "report/figures")}
    assert logged_figures == {f"report/figures/{p.name}" for p in remote.figures.values()}


class BrokenTracker:
    """A StudyTracker whose MLflow server went away."""
    study_run = "run-that-does-not-exist"

    class client:  # noqa: N801 - stands in for an MlflowClient
        @staticmethod
        def log_artifact(*args, **kwargs):
            raise ConnectionError("tracking server went away")


def test_report_after_run_warns_when_logging_fails_and_keeps_the_report(study, capsys):
    results, _ = study
    report = report_after_run(results / "syn", "syn", BrokenTracker())
    err = capsys.readouterr().err
    assert "logging it to MLflow failed" in err and "tracking server went away" in err
    assert "clorch report syn" in err
    assert report is not None and report.path.exists()


def test_report_after_run_warns_and_never_raises_when_the_report_fails(tmp_path, capsys):
    trials = tmp_path / "results" / "broken" / "trials"
    trials.mkdir(parents=True)
    (trials / "x.json").write_text(json.dumps({"trial_id": "x"}))  # a record without its fields
    assert report_after_run(tmp_path / "results" / "broken", "broken", BrokenTracker()) is None
    err = capsys.readouterr().err
    assert "warning: the report failed" in err and "results are complete" in err
    assert (trials / "x.json").exists()


def test_cli_report_of_an_unknown_study_exits_2_and_says_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["report", "nope", "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "study 'nope' not found" in err and str(tmp_path / "results" / "nope" / "trials") in err
    assert "--tracking-uri" in err
    db = tmp_path / "absent.db"
    assert main(["report", "nope", "--results-dir", str(tmp_path / "results"),
                 "--tracking-uri", f"sqlite:///{db}"]) == 2
    assert "does not exist" in capsys.readouterr().err and not db.exists()


def test_cli_report_writes_the_report(study, capsys):
    results, _ = study
    assert main(["report", "syn", "--results-dir", str(results), "--resamples", "100"]) == 0
    assert "report.md" in capsys.readouterr().out
    assert "(100 resamples" in (results / "syn" / "report.md").read_text()


def test_results_without_ended_at_fall_back_to_the_file_time(study):
    results, _ = study
    path = next((results / "syn" / "trials").glob("*.json"))
    rec = json.loads(path.read_text())
    del rec["ended_at"]
    path.write_text(json.dumps(rec))
    from orchestrator.report.sources import from_results

    data = from_results(results / "syn", "syn")
    again = next(r for r in data.records if r.trial_id == rec["trial_id"])
    assert again.ended_at == pytest.approx(path.stat().st_mtime)


def test_trial_files_of_an_earlier_run_are_left_out_when_a_summary_says_what_ran(study):
    results, records = study
    summary = {"configs": [{"config_id": "sgd-aaaa1111", "searched": {}}],
               "orders": [list(o) for o in random_orders(T, 3, 0, True)], "seeds": [0]}
    (results / "syn" / "summary.json").write_text(json.dumps(summary))
    from orchestrator.report.sources import from_results

    data = from_results(results / "syn", "syn")
    assert len(data.records) == 3 and {r.config_id for r in data.records} == {"sgd-aaaa1111"}
    assert f"{len(records) - 3} trial files" in data.notes[0]


def test_a_regression_stream_study_gets_its_error_table_and_step_size_figure(tmp_path):
    """No orders, so no order statistics: the MSE table, best configs and the learned step-sizes."""
    from orchestrator.study.schema import Config
    from orchestrator.results.summary import build_summary

    directory = tmp_path / "results" / "stream"
    relevant = [False] * 3 + [True] * 2
    recs = []
    for seed in (0, 1):
        spec = TrialSpec(f"linear_idbd-dddd4444-s{seed}", "linear_idbd-dddd4444", "linear_idbd", "linear_idbd", {},
                         (0,), 0, seed, "task_incremental", False)
        trace = [[0.001] * 3 + [0.1] * 2, [0.0005] * 3 + [0.2] * 2]
        rec = StreamRecord.for_spec(spec, steps=20, mse=0.5 + seed, window=10, window_mse=[1.0, 0.5],
                                    step_trace=trace, trace_every=10, truth={"relevant": relevant})
        write_trial(directory, rec)
        recs.append(rec)
    config = Config("linear_idbd-dddd4444", "linear_idbd", "linear_idbd", {"theta": 0.01}, {})
    write_json(directory / "summary.json", build_summary("stream", {}, [config], recs))
    report = report_study("stream", tmp_path / "results")
    text = report.path.read_text()
    assert "no task orders" in text and "linear_idbd" in text and "1 ± 0.71" in text
    assert set(report.figures) == {"step_sizes"} and report.figures["step_sizes"].stat().st_size > 0


def test_series_and_traces_are_drawn_generically_one_figure_per_name_and_config(tmp_path):
    """Whatever a method names its per-task series and per-step traces, the report draws them."""
    from orchestrator.report.render import write_report
    from orchestrator.report.sources import StudyData
    from orchestrator.report.trace_figures import series_figure, trajectories

    rng = np.random.default_rng(0)
    records = []
    for r, order in enumerate(random_orders(T, 2, 0, True)):
        rec = make_record("gated", "gated-eeee5555", {}, order, r, 0, rng.uniform(60, 80, T))
        rec.series = {"gate_mean": [0.1 * (p + 1) for p in range(T)],
                      "rank": [[p, 2 * p] for p in range(T)]}
        rec.trace = {"step": [0, 10, 20, 30], "task_start_step": [0, 20], "task_position": [0, 0, 1, 1],
                     "w_norm/fc1": [1.0, 2.0, 3.0, 4.0], "w_norm/fc2": [2.0, 2.0, None, 1.0]}
        records.append(rec)
    report = write_report(StudyData("gen", records, None, "test records"), tmp_path / "gen", n_resamples=20)
    assert {"trainability", "series_gate_mean_gated", "series_rank_gated", "w_norm_trajectories_gated"} <= \
        set(report.figures)
    text = report.path.read_text()
    assert "](figures/series_rank_gated.png)" in text and "](figures/w_norm_trajectories_gated.png)" in text

    (result,) = analyse(records, n_resamples=20)
    lines = {ln.get_label(): ln for ln in series_figure(result, "rank").axes[0].get_lines()}
    assert set(lines) == {"0", "1"} and list(lines["1"].get_ydata()) == [0, 2, 4, 6, 8]
    ax = trajectories(result, "w_norm").axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert set(lines) == {"fc1", "fc2"} and list(lines["fc2"].get_xdata()) == [0, 10, 30]
    assert [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"] == [20]


# ---------------------------------------------------------------- paired comparisons and noise


def test_report_compares_each_method_with_the_baseline_order_by_order(syn_report):
    results, report = syn_report
    text = report.path.read_text()
    assert "## Paired comparisons" in text and "Holm" in text and "## Within the sequence" in text
    rows = parse_table(text, "ΔACC")
    # no summary.json: the configs come sorted by label, so the baseline is the first, adam, through its
    # selected config (adam #1: adam #2 has failed trials and cannot be selected); sgd is compared with it
    assert "Against the baseline **adam #1**" in text
    assert [r["config"] for r in rows] == ["sgd"] and rows[0]["R"] == "6"
    recs = read_trials(results / "syn")
    def per_order(cid):
        out = {}
        for r in recs:
            if r.config_id == cid and r.completed:
                out.setdefault(r.order, []).append(stats.acc(r.matrix()))
        return {o: np.mean(v) for o, v in out.items()}
    a, b = per_order("sgd-aaaa1111"), per_order("adam-bbbb2222")
    assert numbers(rows[0]["ΔACC"])[0] == pytest.approx(np.mean([a[o] - b[o] for o in b]), abs=0.006)
    assert "test-set sizes" in text or "do not carry test-set sizes" in text


def test_a_difference_within_two_binomial_standard_errors_is_flagged(tmp_path):
    configs = [("base", "base-1", {}, 0.0, 0.5), ("other", "other-1", {}, 0.0, 0.5)]
    records = synthetic_study(tmp_path / "results" / "noisy", R=3, seeds=(0,), configs=configs, fail=None)
    for rec in records:  # 20 test examples per task: a binomial SE of several points
        rec.test_sizes = [20] * T
        write_trial(tmp_path / "results" / "noisy", rec)
    text = report_study("noisy", tmp_path / "results", n_resamples=100).path.read_text()
    assert "Test examples per task: min 20, median 20" in text
    assert "Warning: within test-set noise" in text and "other" in text.split("within test-set noise")[1]
