"""What every benchmark builder returns, and every method consumes.

A Benchmark is a canonical list of tasks. A task's identity is its index in
that list; task orders permute identities and never touch data. Arrays are
numpy so a benchmark put in the Ray object store is read zero-copy by every
trial on the node; a trial moves them to its device once (``Task.on``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Kind = Literal["classification", "regression_stream"]
Setting = Literal["task_incremental", "domain_incremental"]


@dataclass(frozen=True)
class DeviceSplit:
    """One split of one task, resident on the trial's device."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class Task:
    """One task: labels are remapped to 0..n_classes-1 inside the task."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    classes: tuple[int, ...] = ()  # the original labels, for reports

    def on(self, device: torch.device | str, split: Literal["train", "test"]) -> DeviceSplit:
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        return DeviceSplit(_tensor(x, device), _tensor(y, device))


@dataclass(frozen=True)
class Benchmark:
    name: str
    tasks: tuple[Task, ...]
    input_shape: tuple[int, ...]
    kind: Kind = "classification"
    default_setting: Setting = "task_incremental"

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def classes_per_task(self) -> tuple[int, ...]:
        return tuple(t.n_classes for t in self.tasks)


def _tensor(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    # Arrays from the Ray object store are read-only views; torch warns about
    # that even though we never write to them. On CPU this shares the memory.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).to(device)
