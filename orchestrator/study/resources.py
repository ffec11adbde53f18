"""Does a trial fit where the study runs? ``resources.cpu`` / ``resources.gpu`` against what is there.

A trial asking for more than any node has is never scheduled: Tune waits forever. ``clorch validate`` and
``clorch run`` check against this machine (os.cpu_count(), torch.cuda.device_count(); no Ray is started),
``clorch run --address`` against the cluster's resources once joined, before any trial; a study that
cannot fit is refused (exit 2) naming the field, the value and what is available.
"""
from __future__ import annotations

import os

from orchestrator.study.base import StudyError


def local_resources(gpu_needed: bool = True) -> dict[str, float]:
    """What an embedded local Ray would have: this machine's CPUs and CUDA GPUs (torch only if asked)."""
    found = {"CPU": float(os.cpu_count() or 1), "GPU": 0.0}
    if gpu_needed:
        try:
            import torch

            found["GPU"] = float(torch.cuda.device_count())
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
    return found


def resource_problems(cpu: float, gpu: float, available: dict[str, float], where: str) -> list[tuple]:
    have_cpu, have_gpu = float(available.get("CPU", 0)), float(available.get("GPU", 0))
    problems = []
    if gpu > have_gpu:
        problems.append(("resources.gpu", gpu, f"each trial asks for {gpu:g} GPU but {where} has {have_gpu:g}: "
                         "no trial could ever be scheduled; set resources.gpu: 0 (--set resources.gpu=0) or run "
                         "where there are GPUs (clorch run --address)"))
    if cpu > have_cpu:
        problems.append(("resources.cpu", cpu, f"each trial asks for {cpu:g} CPUs but {where} has {have_cpu:g}: "
                         f"no trial could ever be scheduled; set resources.cpu to at most {have_cpu:g}"))
    return problems


def check_resources(study, available: dict[str, float] | None = None, where: str = "this machine") -> None:
    """Raise StudyError when one trial's ``resources`` exceed what ``available`` has (default: this machine)."""
    res = study.resources
    if available is None:
        available = local_resources(gpu_needed=res.gpu > 0)
    problems = resource_problems(res.cpu, res.gpu, available, where)
    if problems:
        raise StudyError(f"study {study.name}", problems)
