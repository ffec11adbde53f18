"""5-Datasets: five 10-class datasets, one task each, all 3x32x32 (specs/halrp.md).

Task identities, in this order: 0 CIFAR-10, 1 MNIST, 2 SVHN, 3 Fashion-MNIST,
4 notMNIST. Every task has 10 classes with the dataset's own labels 0..9.

Files (each source's own layout under the data root, downloaded when
``download`` is on and the source allows it):

- CIFAR-10: ``cifar-10-batches-py/`` (datasets.cifar.cifar_arrays, torchvision)
- MNIST / Fashion-MNIST: ``MNIST/raw/``, ``FashionMNIST/raw/`` idx files
  (datasets.mnist.mnist_arrays, torchvision)
- SVHN: ``SVHN/train_32x32.mat``, ``SVHN/test_32x32.mat`` (datasets.svhn; the
  "extra" split unused)
- notMNIST: ``notMNIST_small/A..J/*.png`` (datasets.notmnist; no official
  split: a fixed stratified 80/20 train/test split, seed 0)

Shapes: CIFAR-10 and SVHN are 32x32 RGB already. The 28x28 greyscale sources
(MNIST, Fashion-MNIST, notMNIST) are padded with 2 zero pixels on every side
to 32x32 and the grey channel is replicated to 3 identical channels (the
Adversarial-Continual-Learning / GPM recipe). Arrays stay uint8; ``Task.on``
scales to [0, 1] and, with ``normalize``, standardises with the per-channel
mean/std of THAT dataset's training images (after padding), so each task is
normalised on its own statistics.

A missing source does not stop the others from being checked: one
MissingData lists every absent file of every source, with each source's fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import Field

from datasets.benchmark import Benchmark
from datasets.common import FileParams, LoadContext, MissingData, make_task
from datasets.common import uint8_normalization
from datasets.notmnist import notmnist_arrays
from datasets.registry import BENCHMARKS
from datasets.svhn import svhn_arrays

INPUT_SHAPE = (3, 32, 32)
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


class FiveDatasetsParams(FileParams):
    trust_unverified_pickles: bool = Field(False, description="DANGEROUS: read CIFAR-10 files whose md5 differs "
                                                              "from the published one (see split_cifar10)")

    @property
    def num_tasks(self) -> int:
        return 5


def _cifar10(root: Path, p: FileParams) -> Arrays:
    from datasets.cifar import cifar_arrays

    a = cifar_arrays("cifar10", root, p.download, p.verify_checksums, getattr(p, "trust_unverified_pickles", False))
    return a.x_train, a.y_train, a.x_test, a.y_test


def _mnist_like(dataset: str) -> Callable[[Path, FileParams], Arrays]:
    def load(root: Path, p: FileParams) -> Arrays:
        from datasets.mnist import mnist_arrays

        x_tr, y_tr, x_te, y_te = mnist_arrays(dataset, root, p.download, p.verify_checksums)
        return pad_to_rgb32(x_tr), y_tr, pad_to_rgb32(x_te), y_te

    return load


def _svhn(root: Path, p: FileParams) -> Arrays:
    return svhn_arrays(root, p.download, p.verify_checksums)


def _notmnist(root: Path, p: FileParams) -> Arrays:
    x_tr, y_tr, x_te, y_te = notmnist_arrays(root, p.download, p.verify_checksums)
    return pad_to_rgb32(x_tr), y_tr, pad_to_rgb32(x_te), y_te


# Task identity = position in this list.
SOURCES: list[tuple[str, Callable[[Path, FileParams], Arrays]]] = [
    ("CIFAR-10", _cifar10),
    ("MNIST", _mnist_like("mnist")),
    ("SVHN", _svhn),
    ("Fashion-MNIST", _mnist_like("fashion_mnist")),
    ("notMNIST", _notmnist),
]


def pad_to_rgb32(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> (N, 3, 32, 32): 2 zero pixels each side, grey copied to 3 channels."""
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(padded[:, None], 3, axis=1))


def _how(e: MissingData) -> str:
    """The fix part of a source's MissingData message (between its file list and its footer)."""
    lines = str(e).split("\n")
    return "\n".join(lines[1 + len(e.expected):-1]) or str(e)


def _load_all(root: Path, p: FileParams) -> list[Arrays]:
    loaded, missing = [], []
    for name, load in SOURCES:
        try:
            loaded.append(load(root, p))
        except MissingData as e:
            missing.append((name, e))
    if missing:
        expected = [f for _, e in missing for f in e.expected]
        how = "\n".join(f"{name}: {_how(e)}" for name, e in missing)
        raise MissingData("5-Datasets", root, expected, how)
    return loaded


@BENCHMARKS.register("five_datasets", FiveDatasetsParams)
def five_datasets(p: FiveDatasetsParams, ctx: LoadContext | None = None) -> Benchmark:
    """CIFAR-10, MNIST, SVHN, Fashion-MNIST, notMNIST: 5 tasks x 10 classes, 3x32x32, per-dataset normalisation."""
    ctx = ctx or LoadContext.resolve()
    tasks = []
    for k, ((name, _), (x_tr, y_tr, x_te, y_te)) in enumerate(zip(SOURCES, _load_all(ctx.root, p))):
        norm = uint8_normalization(x_tr) if p.normalize else None
        tasks.append(make_task(name, x_tr, y_tr, x_te, y_te, range(10), p, salt=k, normalization=norm))
    return Benchmark("five_datasets", tuple(tasks), INPUT_SHAPE, default_setting="task_incremental")
