"""What makes a study of short trials fast without changing what it writes (issue 21; bench/study_overhead.py
measures the time): trial runs written to MLflow on a thread, checkpoints only when a task's work is worth
saving."""
from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest

import methods
from orchestrator.results.tracking_writer import TrialRunWriter
from orchestrator.run.trial import run_trial
from orchestrator.study.schema import TrialSpec


class SlowTracker:
    """A stand-in for results.tracking.StudyTracker: log_trial takes time; records what ran in which thread."""

    def __init__(self, fail_on: str | None = None):
        self.logged: list[str] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.study_run = "study-run-id"

    def log_trial(self, record, config=None):
        time.sleep(0.05)
        if record == self.fail_on:
            raise RuntimeError(f"MLflow refused {record}")
        self.threads.add(threading.current_thread().name)
        self.logged.append(record)

    def finish(self):
        return list(self.logged)


def test_trial_runs_are_queued_and_every_other_use_waits_for_them():
    tracker = SlowTracker()
    writer = TrialRunWriter(tracker)
    start = time.perf_counter()
    for k in range(5):
        writer.log_trial(f"trial-{k}")
    assert time.perf_counter() - start < 0.2  # the Tune loop is not held up: 5 x 50 ms run on the thread
    assert writer.finish() == [f"trial-{k}" for k in range(5)]  # finish saw every queued trial, in order
    assert tracker.threads == {"clorch-mlflow-trials"}
    assert writer.study_run == "study-run-id"
    writer.close()
    writer.log_trial("after-close")  # closed: written in the caller's thread
    assert tracker.logged[-1] == "after-close"


def test_an_mlflow_error_on_the_thread_is_raised_at_the_next_use_and_later_trials_wait():
    tracker = SlowTracker(fail_on="trial-1")
    writer = TrialRunWriter(tracker)
    for k in range(3):
        writer.log_trial(f"trial-{k}")
    with pytest.raises(RuntimeError, match="MLflow refused trial-1"):
        writer.flush()
    assert tracker.logged == ["trial-0"]  # nothing written after the failure
    writer.close()


def test_the_writer_pickles_drained_and_its_copy_writes_inline():
    """Tune pickles its callbacks (the recorder and this writer with them) when a Tuner is made."""
    tracker = SlowTracker()
    writer = TrialRunWriter(tracker)
    writer.log_trial("trial-0")
    copy = pickle.loads(pickle.dumps(writer))
    assert tracker.logged == ["trial-0"]  # drained before pickling
    copy.log_trial("trial-1")
    assert copy._tracker.logged == ["trial-0", "trial-1"]
    writer.close()


def _spec(order):
    p = methods.METHODS.get("finetune").params(**{"training": {"epochs": 1}}).model_dump()
    return TrialSpec("t0", "c0", "finetune", "finetune", p, tuple(order), 0, 0, "task_incremental", False)


def test_checkpoint_every_s_saves_only_when_enough_work_passed_and_changes_no_result(digits):
    order = (3, 0, 4, 1, 2)
    every, rare = [], []
    whole = run_trial(_spec(order), digits, report=every.append, checkpoints=True, checkpoint_every_s=0)
    same = run_trial(_spec(order), digits, report=rare.append, checkpoints=True, checkpoint_every_s=1e9)
    assert [r["checkpoint"].tasks_done for r in every] == [1, 2, 3, 4, 5]  # 0: after every task, the last too
    assert not any("checkpoint" in r for r in rare)  # short tasks: nothing saved
    assert same["matrix"] == whole["matrix"]
    tiny = []  # any positive threshold: never on the last row (it carries the record)
    run_trial(_spec(order), digits, report=tiny.append, checkpoints=True, checkpoint_every_s=1e-9)
    assert ["checkpoint" in r for r in tiny] == [True, True, True, True, False]
    assert "record" in tiny[-1]


def test_the_study_default_checkpoints_every_ten_seconds_and_refuses_a_negative_value():
    from pydantic import ValidationError

    from orchestrator.study.schema import Study

    base = {"name": "s", "benchmark": {"name": "split_digits"}, "orders": {"kind": "random", "count": 2},
            "methods": [{"name": "finetune"}]}
    assert Study.model_validate(base).checkpoint_every_s == 10.0
    with pytest.raises(ValidationError, match="checkpoint_every_s"):
        Study.model_validate({**base, "checkpoint_every_s": -1})
