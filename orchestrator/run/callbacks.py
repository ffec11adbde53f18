"""Tune -> driver: each reported row and each trial's end reach the study's recorder.

The recorder is the only writer of results files and MLflow runs, so it runs in
the driver, fed by this callback.
"""
from __future__ import annotations

from orchestrator.run.recorder import StudyRecorder


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
