"""The function every Tune worker runs: one trial, checkpointed after its tasks (``checkpoint_every_s``).

It imports torch and the method core inside the worker, never in the driver
before it is needed, and reports each task's row through ``tune.report``.
"""
from __future__ import annotations

import logging
import tempfile
from typing import Any

import datasets
from orchestrator.study.schema import TrialSpec


def trainable(config: dict[str, Any], benchmark: datasets.Benchmark, plugins: list[dict[str, str]] = ()) -> None:
    """Runs inside a Tune worker process: one trial, checkpointed after a task once ``checkpoint_every_s`` passed.

    ``plugins``: the study's plugin refs as the driver loaded them; imported here (once per worker process)
    before the method registry is read, so a researcher's own method runs in every worker.
    """
    import torch
    from ray import tune

    from orchestrator.study.plugins import PluginRef, load_refs

    try:
        load_refs([PluginRef.from_dict(p) for p in plugins])
    except Exception as e:  # noqa: BLE001 - a plugin that does not import fails the same way on every retry
        tune.report(failure_row(e, 0))
        return

    from orchestrator.run.checkpoint import load_state, save_state
    from orchestrator.run.trial import pick_device, run_trial

    torch.set_num_threads(max(1, int(config["cpu"])))
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not a line per task checkpoint
    unit = config["unit"]
    spec = TrialSpec.from_dict(unit["trial"])
    from orchestrator.run.checkpoint_store import load_newest, older_siblings

    candidates = []
    checkpoint = tune.get_checkpoint()  # set when Tune retries this trial after its worker died
    if checkpoint is not None:
        candidates += [checkpoint, *older_siblings(checkpoint)]
    earlier = unit.get("resume_from") or []  # --resume: the checkpoints of earlier runs, the furthest first
    candidates += [tune.Checkpoint(p) for p in ([earlier] if isinstance(earlier, str) else earlier)]
    resume = load_newest(candidates, load_state)  # the newest that loads; a truncated one is skipped, said why

    done = [resume.tasks_done if resume is not None else 0]

    def report(row: dict[str, Any]) -> None:
        done[0] = row.get("tasks_learned", done[0])
        state = row.pop("checkpoint", None)
        if state is None:
            tune.report(row)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_state(directory, state)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(directory))

    every_s = unit.get("checkpoint_every_s", 0.0)  # the driver always sets it; 0 (every task) for a unit saved before
    try:
        run_trial(spec, benchmark, report=report, device=pick_device(config["gpu"]), resume=resume,
                  checkpoints=benchmark.kind == "classification", checkpoint_every_s=every_s)
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - deterministic: the same config fails the same way on a retry
        tune.report(failure_row(e, done[0]))


def failure_row(error: BaseException, tasks_done: int) -> dict[str, Any]:
    """The last row of a trial whose run_trial raised (the trainable returns after it, so Tune does not retry).

    Retries (``retries``) are for what may go another way next time: a dead worker (killed, OOM-killed, its
    actor gone; Tune sees those, never this code) and out-of-memory errors, which the trainable raises again.
    Every other exception (TrainingDiverged, a bad param, an import error) would fail the same way again.
    This row is: the error as ``Type: message`` (first line), ``failed``.

    The scheduler's metrics ride along as NaN (ASHA and Tune's metric check expect them on every row).
    """
    text = f"{type(error).__name__}: {error}".strip()
    return {"failed": True, "error": text.splitlines()[0] if text else type(error).__name__,
            "tasks_learned": tasks_done, "acc_seen": float("nan"), "val_acc_seen": float("nan")}
