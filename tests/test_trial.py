"""run_trial as a plain function: the accuracy matrix is aligned by task identity."""
import math

import numpy as np
import pytest

import methods
from methods import TrainingDiverged
from orchestrator.results import stats
from orchestrator.study.schema import TrialSpec
from orchestrator.results.records import matrix_array
from orchestrator.run.trial import run_trial



def spec(order, evaluate_unseen=False, **params):
    p = methods.METHODS.get("finetune").params(**{"epochs": 1, **params}).model_dump()
    return TrialSpec("t0", "c0", "finetune", "finetune", p, tuple(order), 0, 0, "task_incremental", evaluate_unseen)


def test_matrix_columns_are_task_identities_not_positions(digits):
    order = (3, 0, 4, 1, 2)
    rows = []
    rec = run_trial(spec(order), digits, report=rows.append)
    assert len(rows) == 5 and all("record" not in r for r in rows[:-1])
    assert rows[-1]["record"] == rec  # the driver stores exactly what the trial computed, sent with the last row
    assert [r["tasks_learned"] for r in rows] == [1, 2, 3, 4, 5]  # ASHA's time unit
    A = matrix_array(rec)
    for i in range(5):
        learned = set(order[: i + 1])
        assert all(not math.isnan(A[i, j]) for j in learned)
        assert all(math.isnan(A[i, j]) for j in set(range(5)) - learned)
    # the row reported at each boundary is the row stored
    assert [r["task_id"] for r in rows] == list(order)
    assert [r["position"] for r in rows] == list(range(5))
    assert np.allclose(np.array([[np.nan if v is None else v for v in r["row"]] for r in rows]), A, equal_nan=True)
    assert rec["status"] == "completed" and rec["tasks_done"] == 5
    assert all(t["train_s"] > 0 and t["eval_s"] > 0 for t in rec["timings"])
    assert "info_loss_last_epoch" in rec["task_info"][0]


def test_same_order_same_seed_same_matrix_and_other_order_differs(digits):
    a = matrix_array(run_trial(spec((0, 1, 2, 3, 4)), digits))
    b = matrix_array(run_trial(spec((0, 1, 2, 3, 4)), digits))
    c = matrix_array(run_trial(spec((4, 3, 2, 1, 0)), digits))
    assert np.array_equal(a, b, equal_nan=True)
    assert not np.array_equal(a[-1], c[-1])


def test_evaluate_unseen_fills_the_whole_matrix(digits):
    rec = run_trial(spec((1, 0, 2, 3, 4), evaluate_unseen=True), digits)
    A = matrix_array(rec)
    assert not np.isnan(A).any()
    # the untrained network's accuracy on every task (forward transfer's reference) and the test-set sizes
    assert len(rec["init_row"]) == 5 and all(0 <= v <= 100 for v in rec["init_row"])
    assert rec["test_sizes"] == [int(t.on("cpu", "test").x.shape[0]) for t in digits.tasks]
    assert not math.isnan(stats.fwt(A, (1, 0, 2, 3, 4), rec["init_row"]))


def test_without_evaluate_unseen_there_is_no_init_row_but_test_sizes(digits):
    rec = run_trial(spec((0, 1, 2, 3, 4)), digits)
    assert "init_row" not in rec and len(rec["test_sizes"]) == 5 and min(rec["test_sizes"]) > 0


def test_trial_statistics_come_from_the_matrix(digits):
    order = (2, 4, 0, 1, 3)
    rec = run_trial(spec(order, optimizer="adam", lr=0.01), digits)
    A = matrix_array(rec)
    s = stats.trial_stats(A, order)
    assert s["acc"] == pytest.approx(A[-1].mean())
    assert s["task_acc"] == pytest.approx(np.mean([A[i, t] for i, t in enumerate(order)]))
    assert s["task_acc"] > 90  # each task is learned


def test_a_diverging_trial_raises_a_clear_error(digits):
    with pytest.raises(TrainingDiverged, match="lower lr"):
        run_trial(spec((0, 1, 2, 3, 4), lr=10.0, hidden=[2000, 2000], epochs=2), digits)


@pytest.mark.parametrize("method,params", [("finetune", {"optimizer": "adam", "lr": 0.01}),
                                           ("ewc", {"ewc_lambda": 10.0}), ("joint", {})])
def test_a_trial_resumed_from_any_task_checkpoint_equals_the_uninterrupted_one(digits, method, params):
    """The checkpoint holds the method, every RNG and the rows: resuming changes nothing."""
    p = methods.METHODS.get(method).params(**{"epochs": 2, **params}).model_dump()
    s = TrialSpec("t0", "c0", method, method, p, (3, 0, 4, 1, 2), 0, 0, "task_incremental", False)
    reports = []
    whole = run_trial(s, digits, report=reports.append, checkpoints=True)
    states = [r["checkpoint"] for r in reports]
    assert [st.tasks_done for st in states] == [1, 2, 3, 4, 5]
    for k in (1, 3):
        again = []
        resumed = run_trial(s, digits, report=again.append, resume=states[k - 1], checkpoints=True)
        assert resumed["matrix"] == whole["matrix"] and resumed["resumed_at"] == [k]
        assert [r["position"] for r in again] == list(range(k, 5))  # nothing before the checkpoint is redone
        assert [r["position"] for r in again[0]["rows_before"]] == list(range(k))
        assert again[-1]["checkpoint"].resumed_at == [k]
    assert whole["resumed_at"] == []


def test_checkpoint_files_round_trip(digits, tmp_path):
    from orchestrator.run.checkpoint import load_state, save_state

    reports = []
    whole = run_trial(spec((1, 2, 0, 3, 4)), digits, report=reports.append, checkpoints=True)
    save_state(tmp_path / "c", reports[1]["checkpoint"])
    state = load_state(tmp_path / "c")
    assert state.tasks_done == 2 and len(state.rows) == 2
    assert run_trial(spec((1, 2, 0, 3, 4)), digits, resume=state)["matrix"] == whole["matrix"]


def test_a_methods_task_series_lands_in_the_record_per_task_position(digits, monkeypatch):
    """The optional ``task_series()`` hook: called after every task, kept per position (scalars and vectors)."""
    from orchestrator.results.records import ClassificationRecord, record_from_json

    target = methods.METHODS.get("finetune").target
    calls = []

    def task_series(self):
        calls.append(1)
        return {"capacity": 0.5 * len(calls), "per_layer": [len(calls), 2 * len(calls)]}

    monkeypatch.setattr(target, "task_series", task_series, raising=False)
    rows = []
    rec = record_from_json(run_trial(spec((2, 0, 1, 3, 4)), digits, report=rows.append))
    assert isinstance(rec, ClassificationRecord) and rec.completed
    assert rec.series == {"capacity": [0.5, 1.0, 1.5, 2.0, 2.5],
                          "per_layer": [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 8.0], [5.0, 10.0]]}
    assert rows[0]["series"] == {"capacity": 0.5, "per_layer": [1.0, 2.0]}  # the driver sees it row by row
    assert ("series/per_layer/1", 10.0, 4) in rec.mlflow_metrics()
