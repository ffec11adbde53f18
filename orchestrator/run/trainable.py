"""The function every Tune worker runs: one trial, checkpointed after every task.

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
    """Runs inside a Tune worker process: one trial, checkpointed after every task.

    ``plugins``: the study's plugin refs as the driver loaded them; imported here (once per worker process)
    before the method registry is read, so a researcher's own method runs in every worker.
    """
    import torch
    from ray import tune

    from orchestrator.study.plugins import PluginRef, load_refs

    load_refs([PluginRef.from_dict(p) for p in plugins])

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

    def report(row: dict[str, Any]) -> None:
        state = row.pop("checkpoint", None)
        if state is None:
            tune.report(row)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_state(directory, state)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(directory))

    run_trial(spec, benchmark, report=report, device=pick_device(config["gpu"]), resume=resume,
              checkpoints=benchmark.kind == "classification")
