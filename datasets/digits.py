"""Benchmarks on scikit-learn's bundled handwritten digits (1,797 8x8 images).

They ship inside an installed package, so the quickstart and the tests run on
a fresh machine with no network and no data root.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import Field, model_validator

from datasets.benchmark import Benchmark
from datasets.common import LoadContext, SplitParams, make_task, stratified_split
from datasets.registry import BENCHMARKS

INPUT_SHAPE = (1, 8, 8)


class _DigitsCommon(SplitParams):
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="share of each class held out for test")


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


def _digits_file() -> str | None:
    """scikit-learn's bundled ``datasets/data/digits.csv.gz``, found without importing scikit-learn (its import
    takes seconds, every study on the digits paid it in the driver and in every worker); None if not there."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(root, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return path
    return None


@lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 digits (values 0..16 scaled to [0, 1]) and their labels, as ``sklearn.datasets.load_digits``
    gives them: read from its file directly (64 pixel columns, then the label), else through scikit-learn."""
    path = _digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",")
        data, target = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        data, target = bunch.data, bunch.target
    x = (data / 16.0).astype(np.float32).reshape(-1, *INPUT_SHAPE)
    return x, target.astype(np.int64)


def _train_test(p: _DigitsCommon):
    x, y = _load_digits()
    tr, te = stratified_split(y, p.test_fraction, np.random.default_rng(p.split_seed))
    return x[tr], y[tr], x[te], y[te]


@BENCHMARKS.register("split_digits", SplitDigitsParams)
def split_digits(p: SplitDigitsParams, ctx: LoadContext | None = None) -> Benchmark:
    """Digits split by class: task k holds classes [k*c, (k+1)*c), labels 0..c-1."""
    x_tr, y_tr, x_te, y_te = _train_test(p)
    c = p.classes_per_task
    tasks = tuple(make_task(f"digits {k * c}-{k * c + c - 1}", x_tr, y_tr, x_te, y_te,
                            range(k * c, (k + 1) * c), p, salt=k) for k in range(p.num_tasks))
    return Benchmark("split_digits", tasks, INPUT_SHAPE, default_setting="task_incremental")


@BENCHMARKS.register("permuted_digits", PermutedDigitsParams)
def permuted_digits(p: PermutedDigitsParams, ctx: LoadContext | None = None) -> Benchmark:
    """Digits under T seeded pixel permutations, 10 classes per task."""
    x_tr, y_tr, x_te, y_te = _train_test(p)
    rng = np.random.default_rng(p.permutation_seed)
    tasks = []
    for k in range(p.num_tasks):
        perm = rng.permutation(64)
        if k == 0 and not p.permute_first:
            perm = np.arange(64)
        tr = x_tr.reshape(len(x_tr), -1)[:, perm].reshape(x_tr.shape)
        te = x_te.reshape(len(x_te), -1)[:, perm].reshape(x_te.shape)
        # salt=0: every task holds out the same images (else one task's validation images would be
        # another's training images, permuted: validation would not be held out from the learner)
        tasks.append(make_task(f"permutation {k}", tr, y_tr, te, y_te, range(10), p, salt=0))
    return Benchmark("permuted_digits", tuple(tasks), INPUT_SHAPE, default_setting="domain_incremental")
