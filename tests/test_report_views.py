"""What the report shows beyond its main table: learning and forgetting curves, the paired forest plot,
a search's parameter importances and scatter, the heatmap's colour range, and the tables exported as CSV
and LaTeX (checked against summary.json).

Synthetic records as in tests/test_report.py; the summary is built with results.summary.build_summary,
so summary.json holds what a real run writes (best, paired).
"""
import csv

import numpy as np
import pytest

from orchestrator.report import curves, importance
from orchestrator.report.analysis import analyse
from orchestrator.report.figures import accuracy_matrix
from orchestrator.report.render import report_study, write_report
from orchestrator.report.sources import StudyData
from orchestrator.report.tables import latex_escape
from orchestrator.results import stats
from orchestrator.results.records import StreamRecord
from orchestrator.results.store import read_trials, write_json, write_trial
from orchestrator.results.summary import build_summary
from orchestrator.study.orders import random_orders
from orchestrator.study.schema import Config, TrialSpec

from test_report import T, make_record, synthetic_study

# a fixed baseline and a search of 4 configs over lr and a width: the objective follows lr, not the width
SEARCH = [("sgd", "sgd-aaaa1111", {"lr": 0.05}, 3.0, 2.0)] + [
    ("adam", f"adam-{k}", {"lr": lr, "width": width}, beta, 1.0)
    for k, (lr, width, beta) in enumerate([(0.0001, "[64]", -6.0), (0.001, "[128]", -2.0),
                                           (0.01, "[64]", 1.0), (0.1, "[128]", 4.0)])]


def write_summary(directory, name, configs, records, benchmark="synthetic"):
    """summary.json as the driver writes it (test numbers = validation numbers in these records)."""
    searched = {cid: ({k: v for k, v in p.items()} if label == "adam" else {}) for label, cid, p, _, _ in configs}
    cfgs = [Config(cid, label, "finetune", params, searched[cid]) for label, cid, params, _, _ in configs]
    orders = sorted({r.order for r in records})
    meta = {"benchmark": {"name": benchmark, "params": {}}, "kind": "classification", "num_tasks": T,
            "orders": [list(o) for o in orders], "seeds": sorted({r.seed for r in records}), "baseline": "sgd"}
    summary = build_summary(name, meta, cfgs, records)
    write_json(directory / "summary.json", summary)
    return summary


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    results = tmp_path_factory.mktemp("views") / "results"
    records = synthetic_study(results / "srch", R=4, seeds=(0,), configs=SEARCH, fail=None)
    summary = write_summary(results / "srch", "srch", SEARCH, records)
    return results, summary, report_study("srch", results, n_resamples=200)


def read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def value(cell):
    return None if cell == "" else float(cell)


# ---------------------------------------------------------------- curves


def test_forgetting_curve_by_hand_and_its_last_value_is_forgetting():
    order = (2, 0, 1)
    A = np.array([[np.nan, np.nan, 90.0],
                  [80.0, np.nan, 70.0],
                  [60.0, 50.0, 75.0]])
    curve = stats.forgetting_curve(A, order)
    assert np.isnan(curve[0])
    assert curve[1] == pytest.approx(90 - 70)                      # task 2 fell from 90 to 70
    assert curve[2] == pytest.approx(((90 - 75) + (80 - 60)) / 2)  # task 2 from its best 90, task 0 from 80
    assert curve[-1] == pytest.approx(stats.forgetting(A, order))


def test_study_with_a_search_gets_every_new_figure(searched):
    results, summary, report = searched
    assert {"learning_curves", "forgetting_curves", "paired_forest", "search_params_adam", "search_progress",
            "accuracy_matrix"} <= set(report.figures)
    text = report.path.read_text()
    for name in ("learning_curves", "forgetting_curves", "paired_forest", "search_params_adam"):
        path = report.figures[name]
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
        assert f"](figures/{path.name})" in text
    assert "### Searched parameters" in text and "Optuna" in text


def test_curves_draw_one_line_per_method_the_selected_config_for_a_search(searched):
    results, summary, report = searched
    chosen = summary["best"]["adam"]["config_id"]
    assert chosen == "adam-3"  # the objective rises with lr
    shown = curves.shown(report.results, summary)
    assert [r.config.config_id for r in shown] == ["sgd-aaaa1111", "adam-3"]
    ax = curves.learning_curves(report.results, summary).axes[0]
    lines = {ln.get_label().rsplit(" (", 1)[0]: ln for ln in ax.get_lines()}
    assert set(lines) == {"sgd", "adam #4"}
    stored = [r for r in read_trials(results / "srch") if r.config_id == chosen]
    expected = np.mean([stats.learning_curve(r.matrix(), r.order) for r in stored], axis=0)  # one seed per order
    assert np.allclose(lines["adam #4"].get_ydata(), expected)
    assert lines["adam #4"].get_ydata()[-1] == pytest.approx(summary["configs"][-1]["acc_mean"])
    band = ax.collections[1].get_paths()[0].vertices[:, 1]  # min-max over orders
    per_order = np.array([stats.learning_curve(r.matrix(), r.order) for r in stored])
    assert band.min() == pytest.approx(per_order.min()) and band.max() == pytest.approx(per_order.max())
    fax = curves.forgetting_curves(report.results, summary).axes[0]
    f = {ln.get_label().rsplit(" (", 1)[0]: ln for ln in fax.get_lines()}
    assert list(f["adam #4"].get_xdata()) == list(range(2, T + 1))  # no forgetting after the first task
    assert f["adam #4"].get_ydata()[-1] == pytest.approx(summary["configs"][-1]["forgetting_mean"])


def test_paired_forest_has_a_row_per_compared_config_with_its_interval(searched):
    results, summary, report = searched
    from orchestrator.report.paired_view import forest

    block = summary["paired"]
    fig = forest(block, {r.config.config_id: r.name for r in report.results})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["adam #4 (R=4)"]
    (c,) = block["configs"]
    interval = next(ln for ln in ax.get_lines() if len(ln.get_xdata()) == 2 and ln.get_linestyle() == "-")
    assert list(interval.get_xdata()) == pytest.approx([c["dacc_lo"], c["dacc_hi"]])


# ---------------------------------------------------------------- search


def test_importances_follow_the_parameter_the_objective_depends_on(searched):
    results, summary, report = searched
    configs, objectives, params = importance.search_points(report.results, "adam", None)
    assert len(configs) == 4 and params == ["lr", "width"]
    found, why = importance.importances(configs, objectives, params)
    assert why == "" and sum(found.values()) == pytest.approx(1.0)
    assert found["lr"] > found["width"]
    assert importance.scale([1e-4, 1e-3, 0.1]) == "log" and importance.scale(["[64]", "[128]"]) == "categorical"
    rows = read_csv(report.tables["importance.csv"])
    assert {(r["parameter"], r["scale"]) for r in rows} == {("lr", "log"), ("width", "categorical")}
    assert value(next(r for r in rows if r["parameter"] == "lr")["importance"]) == pytest.approx(found["lr"])
    fig = importance.scatter("adam", configs, objectives, params, "adam-3", found, "validation")
    assert [ax.get_xscale() for ax in fig.axes[:2]] == ["log", "linear"]
    assert sorted(fig.axes[0].collections[0].get_offsets()[:, 1]) == pytest.approx(sorted(objectives))


def test_importances_need_three_configs():
    configs = SEARCH[:1] + SEARCH[1:3]
    records = []
    rng = np.random.default_rng(0)
    for r, order in enumerate(random_orders(T, 2, 0, True)):
        for label, cid, params, _, _ in configs:
            records.append(make_record(label, cid, params, order, r, 0, rng.uniform(60, 80, T), ended_at=1e9 + r))
    results = analyse(records, n_resamples=20)
    points = importance.search_points(results, "adam", None)
    found, why = importance.importances(*points)
    assert found is None and why.startswith("n/a: 2 config(s)")


# ---------------------------------------------------------------- heatmap colours


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_heatmap_colour_scale_spans_the_values_shown(searched):
    results, summary, report = searched
    fig = accuracy_matrix(report.results)
    means = [np.nanmean(np.stack([A[:, list(o)] for A, o in zip(r.matrices, r.orders)]), axis=0)
             for r in report.results]
    lo = min(np.nanmin(m) for m in means)
    hi = max(np.nanmax(m) for m in means)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == len(SEARCH)
    assert all(im.get_clim() == pytest.approx((lo, hi)) for im in images)
    assert hi - lo < 60  # a 0-100 scale would have wasted most of the colours


# ---------------------------------------------------------------- tables: CSV and LaTeX


def test_comparison_csv_holds_summary_json_numbers_and_latex_its_cells(searched):
    results, summary, report = searched
    assert {"comparison.csv", "comparison.tex", "paired.csv", "sequence.csv", "position_effect.csv",
            "importance.csv"} <= set(report.tables)
    assert all(p.parent == results / "srch" / "tables" for p in report.tables.values())
    rows = {r["config_id"]: r for r in read_csv(report.tables["comparison.csv"])}
    assert list(rows) == [e["config_id"] for e in summary["configs"]]
    for e in summary["configs"]:
        row = rows[e["config_id"]]
        assert row["label"] == e["label"] and int(row["R"]) == e["R"]
        for key in ("acc_mean", "acc_std", "bwt_mean", "bwt_std", "forgetting_mean", "forgetting_std",
                    "task_acc_mean", "task_acc_std", "aopd", "mopd"):
            assert value(row[key]) == pytest.approx(e[key], rel=1e-12, abs=1e-12), (e["config_id"], key)
        assert int(row["trials_failed"]) == e["trials_failed"] and int(row["trials"]) == e["trials"]
        assert value(row["acc_ci_lo"]) <= e["acc_mean"] <= value(row["acc_ci_hi"])
    tex = report.tables["comparison.tex"].read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    for e in summary["configs"]:
        assert f"{e['acc_mean']:.2f} $\\pm$ {e['acc_std']:.2f}" in tex
    assert latex_escape("adam_lr #2 50%") == "adam\\_lr \\#2 50\\%"
    sequence = {r["config_id"]: r for r in read_csv(report.tables["sequence.csv"])}
    for e in summary["configs"]:
        assert [float(x) for x in sequence[e["config_id"]]["curve"].split()] == pytest.approx(e["curve"])


def test_paired_csv_holds_summary_json_paired_block(searched):
    results, summary, report = searched
    (row,) = read_csv(report.tables["paired.csv"])
    (c,) = summary["paired"]["configs"]
    assert row["config_id"] == c["config_id"] and row["baseline"] == summary["paired"]["baseline"] == "sgd"
    for key in ("dacc", "dacc_lo", "dacc_hi", "p", "p_holm", "dforgetting", "dforgetting_lo", "dforgetting_hi"):
        assert value(row[key]) == pytest.approx(c[key], rel=1e-12, abs=1e-12), key
    assert int(row["R"]) == c["R"]
    tex = report.tables["paired.tex"].read_text()
    assert f"{c['dacc']:.2f}" in tex and "$\\Delta$ACC" in tex


def test_tables_of_an_earlier_report_that_no_longer_apply_are_removed(tmp_path):
    synthetic_study(tmp_path / "results" / "one", R=3, seeds=(0,), configs=SEARCH[:1], fail=None)
    stale = tmp_path / "results" / "one" / "tables" / "importance.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    report = report_study("one", tmp_path / "results", n_resamples=50)
    assert not stale.exists() and "importance.csv" not in report.tables
    assert "paired.csv" not in report.tables  # one method: nothing to pair
    assert "search_params_sgd" not in report.figures and "paired_forest" not in report.figures


# ---------------------------------------------------------------- stream study and method-declared series


def test_a_stream_study_gets_its_figure_and_its_table_as_csv(tmp_path):
    directory = tmp_path / "results" / "stream"
    recs = []
    for seed in (0, 1):
        spec = TrialSpec(f"linear_idbd-dddd4444-s{seed}", "linear_idbd-dddd4444", "linear_idbd", "linear_idbd", {},
                         (0,), 0, seed, "task_incremental", False)
        rec = StreamRecord.for_spec(spec, steps=20, mse=0.5 + seed, window=10, window_mse=[1.0, 0.5],
                                    step_trace=[[0.001] * 3 + [0.1] * 2, [0.0005] * 3 + [0.2] * 2], trace_every=10,
                                    truth={"relevant": [False] * 3 + [True] * 2})
        write_trial(directory, rec)
        recs.append(rec)
    config = Config("linear_idbd-dddd4444", "linear_idbd", "linear_idbd", {"theta": 0.01}, {})
    summary = build_summary("stream", {}, [config], recs)
    write_json(directory / "summary.json", summary)
    report = report_study("stream", tmp_path / "results")
    assert set(report.figures) == {"step_sizes"} and report.figures["step_sizes"].stat().st_size > 5000
    (row,) = read_csv(report.tables["mse.csv"])
    e = summary["configs"][0]
    assert value(row["mse_mean"]) == pytest.approx(e["mse_mean"]) and value(row["mse_std"]) == pytest.approx(e["mse_std"])
    assert "tables/mse.csv" in report.path.read_text()


def test_a_study_with_method_declared_series_gets_them_and_the_curves(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for r, order in enumerate(random_orders(T, 3, 0, True)):
        for label, cid in (("gated", "gated-eeee5555"), ("plain", "plain-ffff6666")):
            rec = make_record(label, cid, {}, order, r, 0, rng.uniform(60, 80, T))
            if label == "gated":
                rec.series = {"gate_mean": [0.1 * (p + 1) for p in range(T)], "sparsity": [[p, 2 * p] for p in range(T)]}
            records.append(rec)
    report = write_report(StudyData("gen", records, None, "test records"), tmp_path / "gen", n_resamples=20)
    assert {"series_gate_mean_gated", "series_sparsity_gated", "trainability", "learning_curves",
            "forgetting_curves", "paired_forest"} <= set(report.figures)
    assert not any(n.startswith("series_") and n.endswith("_plain") for n in report.figures)
    text = report.path.read_text()
    assert "](figures/series_sparsity_gated.png)" in text and "](figures/learning_curves.png)" in text
