"""What every benchmark builder returns, and every method consumes.

A Benchmark is a canonical list of tasks. A task's identity is its index in
that list; task orders permute identities and never touch data. Arrays are
numpy so a benchmark put in the Ray object store is read zero-copy by every
trial on the node; a trial moves them to its device once (``Task.on``).

Image arrays may stay uint8 with per-channel ``normalization`` (mean, std of
the [0, 1] pixels): ``Task.on`` scales and standardises on the device, so the
object store holds a quarter of the bytes (it matters for permuted benchmarks,
where every task is a full copy of the dataset).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch

Kind = Literal["classification", "regression_stream"]
Setting = Literal["task_incremental", "domain_incremental", "class_incremental"]
"""task_incremental: a head per task, task id at test time; domain_incremental: one head shared by every
task's labels; class_incremental: one head whose classes grow as tasks arrive, labels global, no task id."""


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
    x_val: np.ndarray | None = None  # held out of the training set (val_fraction > 0)
    y_val: np.ndarray | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # per-channel (mean, std)

    def on(self, device: torch.device | str, split: Literal["train", "val", "test"],
           label_offset: int = 0) -> DeviceSplit:
        """The split on ``device``; ``label_offset`` shifts the labels (class_incremental: the task's first
        global class, ``Benchmark.class_offsets``)."""
        x, y = {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[split]
        if x is None:
            raise ValueError(f"task {self.name!r} has no {split} split; set the benchmark's val_fraction > 0")
        labels = _tensor(y, device)
        return DeviceSplit(self._inputs(_tensor(x, device)), labels + label_offset if label_offset else labels)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> float in [0, 1], then standardised when the task says so."""
        fresh = x.dtype == torch.uint8
        if fresh:
            x = x.float().div_(255.0)
        if self.normalization is not None:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            mean = torch.tensor(self.normalization[0], device=x.device).view(shape)
            std = torch.tensor(self.normalization[1], device=x.device).view(shape)
            # in place on our own fresh copy (no second temporary); never on a float
            # input, which may share memory with the benchmark's arrays
            x = x.sub_(mean).div_(std) if fresh else (x - mean) / std
        return x


@dataclass(frozen=True)
class Benchmark:
    name: str
    tasks: tuple[Task, ...]
    input_shape: tuple[int, ...]
    kind: Kind = "classification"
    default_setting: Setting = "task_incremental"
    # regression_stream only: seed -> datasets.streams.Stream (drawn inside the trial)
    make_stream: Callable[[int], Any] | None = None
    # what the val split is: held_out (carved from training, the default) | training_set (a trainability
    # benchmark evaluated on what it trains on) | none (val_fraction 0); the report says which
    validation: Literal["held_out", "training_set", "none"] = "held_out"

    @property
    def num_tasks(self) -> int:
        return len(self.tasks) if self.kind == "classification" else 1

    @property
    def validation_source(self) -> str:
        """held_out | training_set | none: what the val matrices of this benchmark's trials measure."""
        if not any(t.x_val is not None and len(t.x_val) > 0 for t in self.tasks):
            return "none"
        return self.validation

    @property
    def classes_per_task(self) -> tuple[int, ...]:
        return tuple(t.n_classes for t in self.tasks)

    @property
    def class_offsets(self) -> tuple[int, ...]:
        return class_offsets(self.classes_per_task)

    def split(self, task_id: int, device: torch.device | str, split: Literal["train", "val", "test"],
              setting: str) -> DeviceSplit:
        """Task ``task_id``'s split as a method sees it: class_incremental shifts the task's labels
        0..C-1 to its global classes offset..offset+C-1 (fixed by task identity, so an order
        permutes which class group comes when, never what the classes are called)."""
        offset = self.class_offsets[task_id] if setting == "class_incremental" else 0
        return self.tasks[task_id].on(device, split, label_offset=offset)


def class_offsets(classes_per_task: tuple[int, ...]) -> tuple[int, ...]:
    """The first global class of each task identity in the class-incremental setting (a running sum)."""
    out, total = [], 0
    for c in classes_per_task:
        out.append(total)
        total += c
    return tuple(out)


def _tensor(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    # Arrays from the Ray object store are read-only views; torch warns about
    # that even though we never write to them. On CPU this shares the memory.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).to(device)
