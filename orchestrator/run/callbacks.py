"""Tune -> driver: each reported row and each trial's end reach the study's recorder.

The recorder is the only writer of results files and MLflow runs, so it runs in
the driver, fed by this callback.
"""
from __future__ import annotations

import time
from typing import Callable

from orchestrator.run.recorder import StudyRecorder


class Unschedulable(RuntimeError):
    """Trials waited ``resources.schedule_timeout_s`` with none running: no node can give what they ask."""


class SchedulingWatch:
    """Ends a study whose trials wait with nothing running for longer than ``timeout_s``.

    Tune waits forever for resources no node has (a GPU on a CPU-only cluster that
    passed no check, an autoscaler that never adds the node); the clock starts when
    trials are pending and none runs, and resets whenever one runs.
    """

    def __init__(self, timeout_s: float, cpu: float, gpu: float, clock: Callable[[], float] = time.monotonic):
        self.timeout_s, self.cpu, self.gpu, self.clock = timeout_s, cpu, gpu, clock
        self.idle_since: float | None = None

    def observe(self, pending: int, running: int) -> None:
        if running or not pending:
            self.idle_since = None
            return
        now = self.clock()
        self.idle_since = now if self.idle_since is None else self.idle_since
        if now - self.idle_since > self.timeout_s:
            raise Unschedulable(
                f"{pending} trial(s) waited {now - self.idle_since:.0f} s with none running: no node can give "
                f"{self.cpu:g} CPU / {self.gpu:g} GPU per trial (resources.cpu / resources.gpu); lower them, add "
                f"nodes that have them, or raise resources.schedule_timeout_s; finished trials are kept, "
                f"`clorch run STUDY --resume` goes on")


def watch_callback(watch: SchedulingWatch, recorder: StudyRecorder | None = None):
    """Every step of Tune's loop: the scheduling watch, and the counts of the progress line."""
    from ray import tune

    class Watch(tune.Callback):
        def on_step_begin(self, iteration, trials, **info):
            status = [t.status for t in trials]
            pending, running = status.count("PENDING"), status.count("RUNNING")
            if recorder is not None:
                recorder.set_counts(pending, running)
            watch.observe(pending, running)

    return Watch()


def tune_callback(recorder: StudyRecorder):
    from ray import tune

    class Callback(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            recorder.on_result(trial.config["unit"]["trial"], result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            recorder.on_end(trial.config["unit"]["trial"], None)

        def on_trial_error(self, iteration, trials, trial, **info):
            recorder.on_end(trial.config["unit"]["trial"], _error_text(trial))

    return Callback()


def _error_text(trial) -> str:
    """The trial's exception as ``Type: message``.

    Read from the local error files Tune writes before calling on_trial_error
    (``trial.get_error()`` reads the storage copy, which is synced later).
    """
    from ray import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as f:
            err = cloudpickle.load(f)
        cause = getattr(err, "cause", None) or err
        return f"{type(cause).__name__}: {cause}".strip()
    except Exception:  # noqa: BLE001 - fall back to the text trace, then to a plain note
        try:
            with open(trial.error_file) as f:
                lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
            return lines[-1] if lines else "trial failed (no error recorded by Ray)"
        except (OSError, TypeError):
            return "trial failed (no error recorded by Ray)"
