"""Benchmarks on scikit-learn's bundled handwritten digits (1,797 8x8 images).

They ship inside an installed package, so the quickstart and the tests run on
a fresh machine with no network and no data root.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datasets.benchmark import Benchmark, Task
from datasets.registry import BENCHMARKS

INPUT_SHAPE = (1, 8, 8)


class _DigitsCommon(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="share of each class held out for test")
    split_seed: int = Field(0, description="seed of the train/test split")


class SplitDigitsParams(_DigitsCommon):
    classes_per_task: int = Field(2, ge=1, le=10, description="classes per task; must divide 10")

    @model_validator(mode="after")
    def _divides(self):
        if 10 % self.classes_per_task:
            raise ValueError(f"classes_per_task={self.classes_per_task} must divide 10 (use 1, 2, 5 or 10)")
        return self

    @property
    def num_tasks(self) -> int:
        return 10 // self.classes_per_task


class PermutedDigitsParams(_DigitsCommon):
    num_tasks: int = Field(5, ge=1, le=1000, description="number of pixel permutations")
    permutation_seed: int = Field(0, description="seed of the permutations")
    permute_first: bool = Field(False, description="permute task 0 too (default: task 0 is the original images)")


@lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, *INPUT_SHAPE)
    return x, bunch.target.astype(np.int64)


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, test), the same share of every class in test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = max(1, round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@BENCHMARKS.register("split_digits", SplitDigitsParams)
def split_digits(p: SplitDigitsParams) -> Benchmark:
    """Digits split by class: task k holds classes [k*c, (k+1)*c), labels 0..c-1."""
    x, y = _load_digits()
    tr, te = _stratified_split(y, p.test_fraction, p.split_seed)
    tasks = []
    for k in range(p.num_tasks):
        classes = tuple(range(k * p.classes_per_task, (k + 1) * p.classes_per_task))
        lo = classes[0]
        sel_tr = tr[np.isin(y[tr], classes)]
        sel_te = te[np.isin(y[te], classes)]
        tasks.append(Task(
            name=f"digits {classes[0]}-{classes[-1]}",
            x_train=x[sel_tr], y_train=y[sel_tr] - lo,
            x_test=x[sel_te], y_test=y[sel_te] - lo,
            n_classes=len(classes), classes=classes,
        ))
    return Benchmark("split_digits", tuple(tasks), INPUT_SHAPE, default_setting="task_incremental")


@BENCHMARKS.register("permuted_digits", PermutedDigitsParams)
def permuted_digits(p: PermutedDigitsParams) -> Benchmark:
    """Digits under T seeded pixel permutations, 10 classes per task."""
    x, y = _load_digits()
    tr, te = _stratified_split(y, p.test_fraction, p.split_seed)
    flat = x.reshape(len(x), -1)
    rng = np.random.default_rng(p.permutation_seed)
    tasks = []
    for k in range(p.num_tasks):
        perm = rng.permutation(flat.shape[1])
        if k == 0 and not p.permute_first:
            perm = np.arange(flat.shape[1])
        xp = np.ascontiguousarray(flat[:, perm]).reshape(x.shape)
        tasks.append(Task(
            name=f"permutation {k}", x_train=xp[tr], y_train=y[tr], x_test=xp[te], y_test=y[te],
            n_classes=10, classes=tuple(range(10)),
        ))
    return Benchmark("permuted_digits", tuple(tasks), INPUT_SHAPE, default_setting="domain_incremental")
