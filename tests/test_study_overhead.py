"""What makes a study of short trials fast without changing what it writes (issue 21; bench/study_overhead.py
measures the time): trial runs written to MLflow on a thread, checkpoints only when a task's work is worth
saving."""
from __future__ import annotations

import pickle
import threading

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
        self.gate = threading.Event()  # log_trial waits for it: a write that takes as long as the test likes
        self.gate.set()

    def __getstate__(self):  # the writer pickles its tracker (Tune pickles the callbacks); an Event does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "gate"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.gate = threading.Event()
        self.gate.set()

    def log_trial(self, record, config=None):
        self.gate.wait()
        if record == self.fail_on:
            raise RuntimeError(f"MLflow refused {record}")
        self.threads.add(threading.current_thread().name)
        self.logged.append(record)

    def finish(self):
        return list(self.logged)


def test_trial_runs_are_queued_and_every_other_use_waits_for_them():
    tracker = SlowTracker()
    tracker.gate.clear()  # MLflow "busy": no write can finish
    writer = TrialRunWriter(tracker)
    for k in range(5):
        writer.log_trial(f"trial-{k}")  # returns although nothing could be written: the Tune loop goes on
    assert tracker.logged == []
    tracker.gate.set()
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


def test_a_retry_without_a_checkpoint_replaces_the_rows_of_the_attempt_that_died(digits, tmp_path):
    """With checkpoint_every_s > 0 a worker can die after reporting tasks but before any checkpoint: Tune then
    runs the trial again from task 0, and its record must hold each task once, as the retry learned it."""
    from orchestrator.run.recorder import StudyRecorder

    order = (3, 0, 4, 1, 2)
    dead, retry = [], []
    run_trial(_spec(order), digits, report=dead.append, checkpoints=True, checkpoint_every_s=1e9)
    run_trial(_spec(order), digits, report=retry.append, checkpoints=True, checkpoint_every_s=1e9)
    assert retry[0]["rows_before"] == []  # from scratch: no rows before, said explicitly
    recorder = StudyRecorder(tmp_path, SlowTracker(), num_tasks=5, kind="classification", previous={})
    spec = _spec(order).to_dict()
    for result in dead[:3] + retry[:2]:  # three tasks reported, the worker died; the retry died after two
        recorder.on_result(spec, result)
    assert [r["position"] for r in recorder.rows["t0"]] == [0, 1]
    recorder.on_end(spec, "the actor died")
    rec = recorder.records["t0"]
    assert rec.status == "failed" and rec.tasks_done == 2


def test_the_study_default_checkpoints_every_ten_seconds_and_refuses_a_negative_value():
    from pydantic import ValidationError

    from orchestrator.study.schema import Study

    base = {"name": "s", "benchmark": {"name": "split_digits"}, "orders": {"kind": "random", "count": 2},
            "methods": [{"name": "finetune"}]}
    assert Study.model_validate(base).checkpoint_every_s == 10.0
    with pytest.raises(ValidationError, match="checkpoint_every_s"):
        Study.model_validate({**base, "checkpoint_every_s": -1})
