"""clorch compare: one report across studies, from results directories or the MLflow store.

Two small synthetic studies (tests/test_report.py's records, summaries from results.summary.build_summary);
the CSV tables are checked against each study's summary.json, the differences against the records.
"""
import csv

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.results import stats
from orchestrator.results.store import read_trials

from test_report import synthetic_study
from test_report_views import SEARCH, write_summary

A_CONFIGS = SEARCH[:3] + [("ewc", "ewc-9999", {"lambda": 1.0}, 0.0, 1.0)]            # sgd, adam (2 configs), ewc
B_CONFIGS = [("sgd", "sgd-bbbb", {"lr": 0.1}, 1.0, 2.0), ("adam", "adam-x", {"lr": 0.01}, 2.0, 1.0),
             ("joint", "joint-1", {}, 0.0, 0.5)]


def make_study(results, name, configs, benchmark, R=4):
    records = synthetic_study(results / name, R=R, seeds=(0,), configs=configs, fail=None)
    return write_summary(results / name, name, configs, records, benchmark=benchmark)


def read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def per_order(results, name, cid, key):
    out = {}
    for r in read_trials(results / name):
        if r.config_id == cid:
            A = r.matrix()
            out.setdefault(r.order, []).append(stats.acc(A) if key == "acc" else stats.forgetting(A, r.order))
    return {o: float(np.mean(v)) for o, v in out.items()}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    results = root / "results"
    a = make_study(results, "study_a", A_CONFIGS, "bench_one")
    b = make_study(results, "study_b", B_CONFIGS, "bench_two")
    out = root / "out"
    code = main(["compare", str(results / "study_a"), str(results / "study_b"), "--out", str(out),
                 "--resamples", "200"])
    return results, out, a, b, code


def test_compare_writes_a_table_per_shared_label_and_lists_the_others(compared):
    results, out, a, b, code = compared
    assert code == 0
    text = (out / "report.md").read_text()
    assert text.startswith("# Comparison: study_a vs study_b")
    assert "### sgd" in text and "### adam" in text and "### ewc" not in text and "### joint" not in text
    alone = text.split("## Labels in one study only")[1].split("##")[0]
    assert "- study_a: ewc" in alone and "- study_b: joint" in alone
    assert "**study_b − study_a** | unpaired" in text  # other benchmarks: nothing to pair
    for name in ("compare_acc", "compare_differences"):
        path = out / "figures" / f"{name}.png"
        assert path.read_bytes()[:4] == b"\x89PNG" and f"](figures/{name}.png)" in text


def test_compare_values_csv_holds_each_studys_summary_numbers(compared):
    results, out, a, b, code = compared
    rows = read_csv(out / "tables" / "compare_values.csv")
    assert [(r["label"], r["study"]) for r in rows] == [("sgd", "study_a"), ("sgd", "study_b"),
                                                        ("adam", "study_a"), ("adam", "study_b")]
    for row in rows:
        summary = a if row["study"] == "study_a" else b
        entry = next(e for e in summary["configs"] if e["config_id"] == row["config_id"])
        if row["label"] == "adam" and row["study"] == "study_a":  # a search: its selected config represents it
            assert row["config_id"] == summary["best"]["adam"]["config_id"] == "adam-1"
        for key in ("acc_mean", "acc_std", "forgetting_mean", "forgetting_std", "aopd", "mopd"):
            assert float(row[key]) == pytest.approx(entry[key], rel=1e-12), (row["study"], row["label"], key)
        assert int(row["R"]) == entry["R"]
    tex = (out / "tables" / "compare_values.tex").read_text()
    assert "\\begin{tabular}" in tex and "study\\_a" in tex


def test_compare_differences_are_b_minus_a_with_an_interval_over_orders(compared):
    results, out, a, b, code = compared
    rows = {r["label"]: r for r in read_csv(out / "tables" / "compare_differences.csv")}
    assert set(rows) == {"sgd", "adam"}
    for label, ida, idb in (("sgd", "sgd-aaaa1111", "sgd-bbbb"), ("adam", "adam-1", "adam-x")):
        row = rows[label]
        ea = next(e for e in a["configs"] if e["config_id"] == ida)
        eb = next(e for e in b["configs"] if e["config_id"] == idb)
        assert row["study"] == "study_b" and row["versus"] == "study_a" and row["pairing"] == "unpaired"
        assert float(row["dacc"]) == pytest.approx(eb["acc_mean"] - ea["acc_mean"])
        assert float(row["dforgetting"]) == pytest.approx(eb["forgetting_mean"] - ea["forgetting_mean"])
        assert float(row["daopd"]) == pytest.approx(eb["aopd"] - ea["aopd"])
        assert float(row["dmopd"]) == pytest.approx(eb["mopd"] - ea["mopd"])
        assert float(row["dacc_lo"]) <= float(row["dacc"]) <= float(row["dacc_hi"])
        assert row["p"] == ""  # unpaired: no sign-flip test


def test_the_same_benchmark_on_the_same_orders_is_compared_order_by_order(tmp_path):
    """One method across two versions: same benchmark, same orders -> paired differences, with a p."""
    results = tmp_path / "results"
    make_study(results, "v1", SEARCH[:1], "bench_one")
    make_study(results, "v2", [("sgd", "sgd-v2", {"lr": 0.02}, 6.0, 1.0)], "bench_one")
    out = tmp_path / "cmp"
    assert main(["compare", str(results / "v1"), str(results / "v2"), "--out", str(out), "--resamples", "100"]) == 0
    (row,) = read_csv(out / "tables" / "compare_differences.csv")
    assert row["pairing"] == "paired" and int(row["R"]) == 4
    for key in ("acc", "forgetting"):
        x, y = per_order(results, "v1", "sgd-aaaa1111", key), per_order(results, "v2", "sgd-v2", key)
        assert float(row[f"d{key}"]) == pytest.approx(np.mean([y[o] - x[o] for o in x]))
    assert float(row["p"]) == pytest.approx(2 / 2 ** 4)  # every order moved the same way: the smallest p at R = 4
    assert "| paired |" in (out / "report.md").read_text()


def test_compare_reads_a_study_from_mlflow(tmp_path, monkeypatch):
    from orchestrator.results.tracking import StudyTracker
    from orchestrator.study.schema import Config

    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    make_study(results, "local", SEARCH[:1], "bench_one", R=3)
    records = synthetic_study(tmp_path / "gone" / "remote", R=3, seeds=(0,), configs=B_CONFIGS[:1], fail=None)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = StudyTracker(uri, "remote-exp", "remote", {"benchmark": "bench_two"},
                           [Config(cid, label, "finetune", p, {}) for label, cid, p, _, _ in B_CONFIGS[:1]])
    for rec in records:
        tracker.log_trial(rec)
    assert main(["compare", str(results / "local"), "remote", "--tracking-uri", uri, "--resamples", "100"]) == 0
    text = (tmp_path / "compare" / "local_vs_remote" / "report.md").read_text()  # the default ./compare/<a>_vs_<b>/
    assert "MLflow" in text and tracker.study_run in text and "### sgd" in text


def test_bad_input_exits_2_names_the_argument_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    make_study(results, "one", SEARCH[:1], "bench_one", R=2)
    make_study(results, "other", [("joint", "joint-1", {}, 0.0, 0.5)], "bench_one", R=2)
    missing = str(results / "missing")
    assert main(["compare", str(results / "one"), missing]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and missing in err and "not found" in err
    assert main(["compare", str(results / "one"), str(results / "other")]) == 2
    err = capsys.readouterr().err
    assert "no config label is in two of the studies" in err and "one: sgd" in err and "other: joint" in err
    assert main(["compare", str(results / "one")]) == 2
    assert "two studies or more" in capsys.readouterr().err
    assert main(["compare", str(results / "one"), str(results / "one")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert not (tmp_path / "compare").exists()
