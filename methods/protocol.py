"""The contract between the orchestrator and every continual-learning method.

A method learns one task at a time and predicts for a given task id. The
orchestrator never imports a concrete method: it looks one up in METHODS,
validates its ``Params`` and drives it through these four calls.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel

from datasets.benchmark import DeviceSplit, Setting


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the trial stops with this message."""


@dataclass(frozen=True)
class MethodContext:
    """What a method may know about the benchmark and where it runs."""

    input_shape: tuple[int, ...]
    classes_per_task: tuple[int, ...]
    setting: Setting
    device: torch.device
    seed: int

    @property
    def num_tasks(self) -> int:
        return len(self.classes_per_task)


@runtime_checkable
class Method(Protocol):
    Params: ClassVar[type[BaseModel]]

    def __init__(self, params: Any, ctx: MethodContext) -> None: ...

    def learn_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        """Train on one task (its identity, its training split); return scalars to log."""

    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Logits for inputs of task ``task_id`` (eval mode, no grad)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue or to predict exactly as now."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # Optional: ``learn_all(tasks: Mapping[int, DeviceSplit]) -> dict`` for
    # offline methods (joint training). When present, the trial calls it once,
    # with every task's training split keyed by identity, before the first task.
    #
    # Optional: ``task_series() -> dict[str, float | list[float]]``, called by
    # the trial after each task (after ``learn_task`` and the evaluation): named
    # per-task quantities, a scalar or a vector each (a gate statistic per block,
    # ranks per layer, used capacity). The trial record keeps them as
    # ``series[name][position]`` (orchestrator/results/records.py), MLflow gets
    # ``series/<name>`` (``series/<name>/<k>`` per element) with the position as
    # step, and the report draws one figure per name and config: value against
    # the task position, a line per element; names ``group/element`` are drawn
    # together, a line per element (``n_lot_cools/backbone.1``), and a name
    # starting with ``n_`` declares a count per task (how often something
    # happened in it): the report also tabulates its total over the tasks and
    # the tasks where it was above 0. ``learn_task``'s returned scalars
    # stay what they are (``info_<key>`` per task).
    #
    # Optional: ``trace() -> dict[str, list] | None``, called once at the end of
    # a trial: a per-step series dict, JSON-ready and small (subsample it).
    # ``step`` is the x axis; ``task_start_step`` (the step each task began) and
    # ``task_position`` (each step's task position) place the task boundaries;
    # every other key is a series aligned with ``step`` (None where undefined),
    # and ``group/element`` keys are drawn together, one figure per group and
    # config with a line per element (``lr/<layer>`` -> the ``lr`` figure).


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a trial is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
