"""What every benchmark builder shares: where data lives, how a task is cut, errors.

- ``LoadContext``: the data root. The root
  comes from the study (``data_root``), else ``--data-root``, else the
  CLORCH_DATA_ROOT environment variable, else ./data.
- ``MissingData``: a dataset is not on disk and may not (or cannot) be
  downloaded; the message names the files expected, the path, and the fix.
- ``SplitParams``: the parameters every benchmark takes (validation and
  training fractions, normalisation, class-order seed, split seed).
- ``make_task``: one task from arrays: labels remapped to 0..C-1, training
  fraction and validation split drawn stratified and seeded.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from datasets.benchmark import Task

DATA_ROOT_ENV = "CLORCH_DATA_ROOT"


class MissingData(FileNotFoundError):
    """A dataset's files are not where they should be; says which, where, and what to do."""

    def __init__(self, dataset: str, root: Path, expected: Iterable[str], how: str):
        self.dataset, self.root, self.expected = dataset, Path(root), list(expected)
        files = "\n".join(f"    {Path(root) / e}" for e in self.expected)
        super().__init__(f"{dataset} is not available under {root}; expected:\n{files}\n{how}\n"
                         f"(data root: the study's data_root, --data-root, or ${DATA_ROOT_ENV})")


@dataclass(frozen=True)
class LoadContext:
    """Where benchmarks read their files (downloading is each benchmark's ``download`` param)."""

    root: Path

    @classmethod
    def resolve(cls, study_root: str | None = None, cli_root: str | None = None) -> LoadContext:
        root = study_root or cli_root or os.environ.get(DATA_ROOT_ENV) or "data"
        return cls(Path(root).expanduser().resolve())


class SplitParams(BaseModel):
    """Parameters every benchmark shares."""

    model_config = ConfigDict(extra="forbid")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of each task's training set held out for "
                                "validation (stratified, seeded): what a search chooses on; 0: no validation split")
    train_fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of each task's training set used (after validation is held out)")
    split_seed: int = Field(0, description="seed of the validation split and training subsample")


class FileParams(SplitParams):
    """Benchmarks read from files under the data root."""

    download: bool = Field(True, description="download missing files where the source allows it")
    verify_checksums: bool = Field(True, description="check the published md5 of downloaded archives/files where known")
    normalize: bool = Field(True, description="standardise inputs per channel with training-set statistics")


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (rest, held): ``fraction`` of every class held out (at least one if > 0)."""
    rest, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = 0 if fraction == 0 else max(1, round(fraction * len(idx)))
        held.append(idx[:n])
        rest.append(idx[n:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    return cat(rest), cat(held)


def make_task(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              classes: Sequence[int], p: SplitParams, salt: int = 0,
              normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Task:
    """A task over ``classes`` (original labels), relabelled 0..C-1 in the given order.

    Validation is carved from the training set first, then ``train_fraction``
    of what is left is kept; both stratified, seeded by split_seed and ``salt``
    (use the task index so tasks get independent draws).
    """
    classes = tuple(int(c) for c in classes)
    lut = np.full(int(max(max(classes), y_train.max(initial=0), y_test.max(initial=0))) + 1, -1, dtype=np.int64)
    lut[list(classes)] = np.arange(len(classes))
    sel_tr = np.flatnonzero(np.isin(y_train, classes))
    sel_te = np.flatnonzero(np.isin(y_test, classes))
    rng = np.random.default_rng([p.split_seed, salt])
    keep, val = stratified_split(y_train[sel_tr], p.val_fraction, rng)
    if p.train_fraction < 1.0:
        _, sub = stratified_split(y_train[sel_tr][keep], p.train_fraction, rng)
        keep = keep[sub]
    tr, va = sel_tr[keep], sel_tr[val]
    return Task(
        name=name,
        x_train=np.ascontiguousarray(x_train[tr]), y_train=lut[y_train[tr]],
        x_test=np.ascontiguousarray(x_test[sel_te]), y_test=lut[y_test[sel_te]],
        x_val=np.ascontiguousarray(x_train[va]), y_val=lut[y_train[va]],
        n_classes=len(classes), classes=classes, normalization=normalization,
    )


def cap_eval_splits(task: Task, max_val: int | None, max_test: int | None, seed: int) -> Task:
    """``task`` with its validation and test splits cut to about ``max_val`` / ``max_test`` images.

    A stratified seeded subsample (the same share of every class, seeded by
    ``seed``), so tasks that are one image set under different transforms
    (permutations) keep the same images. None, or a split already small
    enough, is left as it is. Training data is never touched.
    """
    import dataclasses

    def cut(x: np.ndarray | None, y: np.ndarray | None, n: int | None, part: int):
        if x is None or y is None or n is None or len(y) <= n:
            return x, y
        _, keep = stratified_split(y, n / len(y), np.random.default_rng([seed, part]))
        return np.ascontiguousarray(x[keep]), y[keep]

    x_val, y_val = cut(task.x_val, task.y_val, max_val, 1)
    x_test, y_test = cut(task.x_test, task.y_test, max_test, 2)
    return dataclasses.replace(task, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)


def class_order(num_classes: int, seed: int | None) -> list[int]:
    """Classes 0..K-1, shuffled by ``seed`` (None keeps the natural order)."""
    order = np.arange(num_classes)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(num_classes)
    return [int(c) for c in order]


def uint8_normalization(x: np.ndarray, chunk: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 images (N, C, ...) as [0, 1] values, for Task.normalization.

    Summed over chunks, so 100,000 training images never exist as one float64 copy.
    (N, D) flat inputs count as one channel.
    """
    x = x.reshape(x.shape[0], x.shape[1] if x.ndim > 2 else 1, -1)
    chunk = chunk or max(1, 2 ** 22 // max(1, x.shape[1] * x.shape[2]))  # ~32 MB of float64 at a time
    total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].astype(np.float64)
        total += part.sum(axis=(0, 2))
        squares += np.square(part).sum(axis=(0, 2))
    n = x.shape[0] * x.shape[2]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
    return tuple(float(m / 255) for m in mean), tuple(float(max(v / 255, 1e-8)) for v in std)
