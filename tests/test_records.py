"""The typed trial records (orchestrator.results.records): built from rows, statistics, JSON, MLflow names."""
import json
import math

import numpy as np
import pytest

from orchestrator.results.records import (RECORD_VERSION, ClassificationRecord, StreamRecord, record_from_json,
                                          record_type, to_json_row)
from orchestrator.results.store import read_trials, write_trial
from orchestrator.results.summary import config_entry
from orchestrator.study.schema import Config, ObjectiveSpec, TrialSpec

ORDER = (2, 0, 1)
# A[i, j], columns are task identities; the order learns 2, then 0, then 1
A = np.array([[np.nan, np.nan, 90.0],
              [80.0, np.nan, 70.0],
              [60.0, 85.0, 50.0]])


def spec(order=ORDER, trial_id="t0"):
    return TrialSpec(trial_id, "c0", "lab", "finetune", {"lr": 0.1}, tuple(order), 0, 0, "task_incremental", False)


def rows_of(A, order, series=None):
    out = []
    for i, t in enumerate(order):
        row = {"position": i, "task_id": t, "row": to_json_row(A[i]), "acc_seen": 0.0, "train_s": 1.0 + i,
               "eval_s": 0.1, "info_loss": 0.5 / (i + 1)}
        if series is not None:
            row["series"] = series[i]
        out.append(row)
    return out


def test_a_failed_trial_keeps_its_finished_tasks_and_nans_the_rest():
    rec = ClassificationRecord.from_rows(spec(), rows_of(A, ORDER)[:2], 3, status="failed", error="Boom: no")
    assert rec.status == "failed" and rec.error == "Boom: no" and rec.tasks_done == 2
    M = rec.matrix()
    assert M.shape == (3, 3)
    assert np.array_equal(M[:2], A[:2], equal_nan=True)  # the finished tasks, as reported
    assert np.isnan(M[2]).all()                         # the task it never finished
    assert [t["position"] for t in rec.timings] == [0, 1] and rec.task_info[1] == {"info_loss": 0.25}
    assert rec.stats() is None  # not completed: no per-trial statistics


def test_stats_of_a_hand_computed_three_task_matrix():
    rec = ClassificationRecord.from_rows(spec(), rows_of(A, ORDER), 3, status="completed")
    s = rec.stats()
    # ACC: mean of the last row
    assert s["acc"] == pytest.approx((60 + 85 + 50) / 3)
    # BWT over tasks not last (2 then 0): A[T,j] - A[pos(j),j] = (50-90) and (60-80) -> -30
    assert s["bwt"] == pytest.approx(((50 - 90) + (60 - 80)) / 2)
    # forgetting: task 2: max(90, 70) - 50 = 40; task 0: 80 - 60 = 20 -> 30
    assert s["forgetting"] == pytest.approx((40 + 20) / 2)
    # Task.Acc: just-learned accuracies 90 (task 2), 80 (task 0), 85 (task 1)
    assert s["task_acc"] == pytest.approx((90 + 80 + 85) / 3)


def test_json_round_trip_of_a_classification_record(tmp_path):
    rec = ClassificationRecord.from_rows(spec(), rows_of(A, ORDER), 3, status="completed", started_at=1.0,
                                         wall_s=2.0, resumed_at=[1], trace={"step": [0, 1], "lr/a": [0.1, 0.2]})
    rec.ended_at = 3.0
    d = rec.to_json()
    json.dumps(d, allow_nan=False)  # strict JSON: NaN entries are None
    assert d["record_version"] == RECORD_VERSION == 2 and d["kind"] == "classification"
    assert d["matrix"][0] == [None, None, 90.0] and d["order"] == list(ORDER)
    back = record_from_json(json.loads(json.dumps(d)))
    assert isinstance(back, ClassificationRecord) and back == rec
    assert back.trace == rec.trace and back.resumed_at == [1] and back.ended_at == 3.0
    write_trial(tmp_path, rec)
    assert read_trials(tmp_path) == [rec]


def test_init_row_and_test_sizes_ride_on_the_first_row_and_round_trip():
    rows = rows_of(A, ORDER)
    rows[0].update(init_row=[10.0, None, 30.0], test_sizes=[100, 200, 300])
    rec = ClassificationRecord.from_rows(spec(), rows, 3, status="completed")
    assert rec.init_row == [10.0, None, 30.0] and rec.test_sizes == [100, 200, 300]
    d = json.loads(json.dumps(rec.to_json()))
    assert d["init_row"] == [10.0, None, 30.0] and d["test_sizes"] == [100, 200, 300]
    assert record_from_json(d) == rec
    # a record without them (older records) has neither key and reads back as None
    plain = ClassificationRecord.from_rows(spec(), rows_of(A, ORDER), 3, status="completed")
    assert "init_row" not in plain.to_json() and "test_sizes" not in plain.to_json()
    assert record_from_json(plain.to_json()).init_row is None


def test_json_round_trip_of_a_stream_record():
    sq = np.linspace(2.0, 0.0, 1000)
    rec = StreamRecord.from_stream(spec((0,)), sq, np.ones((10, 3)) * 0.1, 100,
                                   {"relevant": np.array([True, False, True]), "signal": np.arange(1000.0)}, 0.5)
    assert rec.steps == 1000 and rec.window == 10 and len(rec.window_mse) == 100
    assert np.mean(rec.window_mse) == pytest.approx(rec.mse) and rec.truth["signal"] == list(np.arange(0, 1000, 100.0))
    d = rec.to_json()
    assert d["kind"] == "regression_stream" and d["matrix"] is None and d["tasks_done"] == 1
    back = record_from_json(json.loads(json.dumps(d)))
    assert isinstance(back, StreamRecord) and back == rec
    assert rec.stats() == {"mse": rec.mse}


def test_a_version_1_record_written_by_the_old_code_still_reads():
    old = {  # results/<study>/trials/*.json as the dict record of the previous version wrote it
        "trial_id": "sgd-aaaa1111-o0-s0", "config_id": "sgd-aaaa1111", "label": "sgd", "method": "finetune",
        "params": {"optimizer": "sgd", "lr": 0.05}, "order": [2, 0, 1], "order_index": 0, "seed": 0,
        "setting": "task_incremental", "evaluate_unseen": False, "kind": "classification", "status": "completed",
        "error": None, "num_tasks": 3, "tasks_done": 3,
        "matrix": [[None, None, 90.0], [80.0, None, 70.0], [60.0, 85.0, 50.0]],
        "timings": [{"position": i, "task_id": t, "train_s": 0.5, "eval_s": 0.05} for i, t in enumerate(ORDER)],
        "task_info": [{}, {}, {}], "started_at": 1700000000.0, "wall_s": 3.0, "resumed_at": [],
        "ended_at": 1700000010.0}
    rec = record_from_json(old)
    assert isinstance(rec, ClassificationRecord) and rec.order == ORDER and rec.series == {}
    assert np.array_equal(rec.matrix(), A, equal_nan=True)
    assert rec.stats()["acc"] == pytest.approx(65.0) and rec.ended_at == 1700000010.0
    again = rec.to_json()
    assert {k: again[k] for k in old} == old  # the same layout and key names, plus record_version
    assert again["record_version"] == 2
    stream_v1 = {"trial_id": "s", "config_id": "c", "label": "linear_sgd", "method": "linear_sgd", "params": {},
                 "order": [0], "order_index": 0, "seed": 3, "setting": "task_incremental", "evaluate_unseen": False,
                 "kind": "regression_stream", "status": "failed", "error": "TrainingDiverged: x", "num_tasks": 1,
                 "tasks_done": 0, "matrix": [[None]], "timings": [], "task_info": []}
    srec = record_from_json(stream_v1)
    assert isinstance(srec, StreamRecord) and srec.status == "failed" and srec.stats() is None


def test_mlflow_metric_names_are_the_ones_logged_before():
    series = [{"gate": 0.5, "ranks": [3, 2]}, {"gate": 0.25, "ranks": [4, 1]}, {"gate": 0.125, "ranks": [5, 0]}]
    rec = ClassificationRecord.from_rows(spec(), rows_of(A, ORDER, series), 3, status="completed")
    metrics = rec.mlflow_metrics()
    names = {n for n, _, _ in metrics}
    assert {"acc", "bwt", "forgetting", "task_acc", "min_acc", "wc_acc", "acc_task_0", "acc_task_1", "acc_task_2", "train_s", "eval_s",
            "info_loss", "series/gate", "series/ranks/0", "series/ranks/1"} == names
    assert ("acc_task_2", 90.0, 0) in metrics and ("train_s", 3.0, 2) in metrics
    assert not any(isinstance(v, float) and math.isnan(v) for _, v, _ in metrics)  # NaN entries are not logged
    stream = StreamRecord.from_stream(spec((0,)), np.ones(200), np.ones((2, 1)), 100, {}, 0.5)
    assert {n for n, _, _ in stream.mlflow_metrics()} == {"mse", "window_mse", "train_s", "eval_s"}


def test_per_task_series_round_trip_and_survive_a_failure():
    series = [{"gate": 0.5, "ranks": [3, 2]}, {"gate": 0.25, "ranks": [4, 1]}, {"ranks": [5, 0]}]
    rec = ClassificationRecord.from_rows(spec(), rows_of(A, ORDER, series), 3, status="completed")
    assert rec.series == {"gate": [0.5, 0.25, None], "ranks": [[3.0, 2.0], [4.0, 1.0], [5.0, 0.0]]}
    assert record_from_json(json.loads(json.dumps(rec.to_json()))).series == rec.series
    partial = ClassificationRecord.from_rows(spec(), rows_of(A, ORDER, series)[:1], 3, status="failed", error="x")
    assert partial.series == {"gate": [0.5], "ranks": [[3.0, 2.0]]}


def test_a_config_without_records_takes_the_benchmark_kind():
    config = Config("c0", "lab", "finetune", {}, {})
    assert config_entry(config, [], kind="regression_stream")["mse_mean"] is None
    assert config_entry(config, [], kind="classification")["acc_mean"] is None
    assert record_type("regression_stream") is StreamRecord and record_type(None) is ClassificationRecord
    done = [ClassificationRecord.from_rows(spec(trial_id=f"t{i}"), rows_of(A, ORDER), 3, "completed")
            for i in range(2)]
    entry = config_entry(config, done, ObjectiveSpec(kind="mean_acc"))
    assert entry["acc_mean"] == pytest.approx(65.0)  # reported: test
    assert entry["objective"] != entry["objective"] and "val" not in entry  # no validation: nothing to choose on
    assert config_entry(config, done, ObjectiveSpec(kind="mean_acc"), selection="test")["objective"] == \
        pytest.approx(65.0)
    streams = [StreamRecord.from_stream(spec((0,), f"s{i}"), np.full(100, 1.0 + i), np.ones((1, 1)), 100, {}, 0.1)
               for i in range(2)]
    entry = config_entry(config, streams)
    assert entry["mse_mean"] == pytest.approx(1.5) and entry["objective"] == pytest.approx(-1.5)


def test_a_json_without_status_is_not_a_record():
    with pytest.raises(ValueError, match="status"):
        record_from_json({"trial_id": "x"})
