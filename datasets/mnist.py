"""MNIST-style benchmarks over MNIST, Fashion-MNIST and KMNIST (one code path, a ``dataset`` param).

Files are torchvision's layout under the data root (<root>/MNIST/raw, FashionMNIST/raw,
KMNIST/raw). torchvision downloads them when allowed and verifies the
published md5 of each archive; archives already on disk are verified and
unpacked without a network.

- permuted_mnist: T tasks, each a fixed pixel permutation, 10 classes.
  protocol ``standard``: 28x28 flattened to 784, task 0 unpermuted.
  protocol ``halrp`` (3x32x32, every task permuted, task 0 included; specs/halrp.md),
  ``pmnist_input``:
  ``official`` (default): the HALRP code's input (loader_pmnist.py): each image
  bilinearly resized to 32x32 (PIL, as torchvision's Resize(32)), copied to 3
  channels, normalised with the code's constants Normalize(0.1307, 0.3081),
  then ONE permutation of all 3072 values per task (our seeded permutation,
  not sklearn's);
  ``pad`` [ours]: padded to 32x32 (2 zero pixels each side), one permutation of
  the 1024 positions copied to 3 identical channels, normalised with the
  training images' statistics.
  ``max_val_per_task`` / ``max_test_per_task`` cut the validation / test splits
  to a stratified seeded subsample, the same images in every task (for
  CPU-sized studies; the training data is ``train_fraction``'s).
- split_mnist: 5 tasks of 2 classes (class order optionally seeded).
- rotated_mnist: T tasks, each the images rotated by one angle (evenly spaced
  in [0, max_angle) or an explicit list), 10 classes.
- mixed_similarity_mnist: a stream of mixed task similarity (specs/hybrid.md):
  ``stretches`` stretches of ``len(angles)`` tasks; stretch 0 is the images
  rotated by each angle, stretch k >= 1 the same rotations with one seeded
  pixel permutation P_k applied after rotating (task "P_k + 10" is task
  "P_k"'s images turned by 10 degrees, then scrambled). Inside a stretch
  neighbours are related (a small rotation); between stretches unrelated
  (a new permutation). 10 classes, 1x28x28.
- random_label_mnist: for loss of trainability (specs/lot.md): a fixed seeded
  subset of N training images; every task draws fresh uniform random labels
  for them. There is nothing to generalise to, so a task's test split is its
  own training set: accuracy measures whether the network can still fit
  (trainability), which is what the benchmark is for.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from datasets.benchmark import Benchmark, Task
from datasets.common import (
    FileParams,
    LoadContext,
    MissingData,
    cap_eval_splits,
    class_order,
    make_task,
    stratified_split,
    uint8_normalization,
)
from datasets.registry import BENCHMARKS

Dataset = Literal["mnist", "fashion_mnist", "kmnist"]
_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _torchvision_class(dataset: str):
    from torchvision import datasets as tv

    return {"mnist": tv.MNIST, "fashion_mnist": tv.FashionMNIST, "kmnist": tv.KMNIST}[dataset]


_MAGIC = {"images": 2051, "labels": 2049}


class CorruptData(ValueError):
    """A dataset file is there but unreadable; the message names it and the fix."""


def _source(folder: Path, name: str) -> Path | None:
    """The unpacked idx file, else its .gz archive (read through gzip: nothing is unpacked), else None."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _corrupt(path: Path, why: str) -> CorruptData:
    return CorruptData(f"{path} is corrupt ({why}): delete it and download it again (download: true), or copy an "
                       "intact one there")


def _open(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _header(path: Path, name: str) -> tuple[int, ...]:
    """The idx header's dims (N, 28, 28 or N), checked against the file's (uncompressed) size, cheaply."""
    import gzip
    import struct
    import zlib

    kind = "images" if "images" in name else "labels"
    ndims = 3 if kind == "images" else 1
    try:
        with _open(path) as f:
            head = f.read(4 + 4 * ndims)
        if len(head) < 4 + 4 * ndims:
            raise _corrupt(path, "shorter than an idx header")
        magic, *dims = struct.unpack(f">I{ndims}I", head)
        if magic != _MAGIC[kind]:
            raise _corrupt(path, f"idx magic number {magic}, expected {_MAGIC[kind]}")
        size = len(head) + int(np.prod(dims))
        if path.suffix == ".gz":
            with open(path, "rb") as f:  # the gzip trailer: the uncompressed size mod 2**32
                f.seek(-4, 2)
                stored = struct.unpack("<I", f.read(4))[0]
            if stored != size % 2 ** 32:
                raise _corrupt(path, f"unpacks to {stored} bytes, the header promises {size}: truncated?")
        elif path.stat().st_size != size:
            raise _corrupt(path, f"{path.stat().st_size} bytes, the header promises {size}: truncated?")
    except (gzip.BadGzipFile, EOFError, zlib.error, struct.error, OSError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {str(e)[:120]}") from None
    return tuple(dims)


def _read_idx(path: Path, name: str) -> np.ndarray:
    import gzip
    import zlib

    dims = _header(path, name)
    try:
        with _open(path) as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {str(e)[:120]}") from None
    offset = 4 + 4 * len(dims)
    if len(data) != offset + int(np.prod(dims)):
        raise _corrupt(path, "its size does not match its header")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _missing(dataset: str, root: Path, download: bool, error: BaseException | None = None) -> MissingData:
    folder = f"{_FOLDERS[dataset]}/raw"
    how = (f"the download failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
           if download and error is not None else "downloading is off (download: false); ")
    how += (f"put the four original files ({', '.join(f + '.gz' for f in _FILES)}) in {Path(root) / folder}, "
            "or run with download: true on a machine with internet")
    return MissingData(dataset, root, [f"{folder}/{f}[.gz]" for f in _FILES], how)


def check_files(dataset: str, root: Path, download: bool) -> list[str]:
    """Cheap: each of the four files is there (unpacked or .gz) with a sound header and size; no full read."""
    folder = Path(root) / _FOLDERS[dataset] / "raw"
    problems = []
    missing = [name for name in _FILES if _source(folder, name) is None]
    if missing and not download:
        err = _missing(dataset, root, download)
        problems.append(f"{err}\n(missing: {', '.join(missing)})")
    for name in _FILES:
        path = _source(folder, name)
        if path is not None:
            try:
                _header(path, name)
            except CorruptData as e:
                problems.append(str(e))
    return problems


@lru_cache(maxsize=6)
def mnist_arrays(dataset: str, root: Path, download: bool, verify_checksums: bool = True):
    """(x_train, y_train, x_test, y_test): x uint8 (N, 28, 28), y int64.

    Read from the idx files under <root>/<Folder>/raw, unpacked or .gz (read
    through gzip, so a read-only data root works). Only when a file is missing
    and ``download`` is on does torchvision fetch them (it checks the published
    md5). Raises MissingData (absent) or CorruptData (unreadable), naming the file.
    """
    folder = Path(root) / _FOLDERS[dataset] / "raw"
    if any(_source(folder, name) is None for name in _FILES):
        if not download:
            raise _missing(dataset, root, download)
        cls = _torchvision_class(dataset)
        try:
            cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
        except (RuntimeError, OSError) as e:  # the download failed (no network)
            raise _missing(dataset, root, download, e) from None
    x_tr, y_tr, x_te, y_te = (_read_idx(_source(folder, name), name) for name in _FILES)
    return x_tr.copy(), y_tr.astype(np.int64), x_te.copy(), y_te.astype(np.int64)


class _MnistParams(FileParams):
    dataset: Dataset = Field("mnist", description="mnist | fashion_mnist | kmnist")

    def check_files(self, ctx: LoadContext) -> list[str]:
        """What `clorch validate --data-root` reports: files absent (download off) or corrupt."""
        return check_files(self.dataset, ctx.root, self.download)


def _arrays(p: _MnistParams, ctx: LoadContext | None):
    """uint8 (N, 1, 28, 28) images and labels; scaling happens on the device (Task.on)."""
    ctx = ctx or LoadContext.resolve()
    x_tr, y_tr, x_te, y_te = mnist_arrays(p.dataset, ctx.root, p.download, p.verify_checksums)
    return x_tr[:, None], y_tr, x_te[:, None], y_te


def _norm(p: FileParams, x_train: np.ndarray):
    """Task.normalization from the training images, or None when normalize is off."""
    return uint8_normalization(x_train) if p.normalize else None


# ---------------------------------------------------------------- permuted
OFFICIAL_PMNIST_NORMALIZATION = (0.1307, 0.3081)  # loader_pmnist.py: Normalize(mean, std), every channel


class PermutedMnistParams(_MnistParams):
    num_tasks: int = Field(10, ge=1, le=10_000, description="number of permutations")
    protocol: Literal["standard", "halrp"] = Field("standard", description="standard: 784 inputs, task 0 unpermuted; halrp: 3x32x32, all permuted")
    pmnist_input: Literal["official", "pad"] | None = Field(
        None, description="protocol halrp only (null there means official): official: the HALRP code's input, "
                          "bilinear resize to 32x32, Normalize(0.1307, 0.3081), 3 channels, one permutation of all "
                          "3072 values per task | pad: 2 zero pixels each side, one permutation of the 1024 "
                          "positions copied to 3 channels, training-set statistics")
    permutation_seed: int = Field(0, description="seed of the permutations")
    max_val_per_task: int | None = Field(None, ge=1, le=1_000_000, description="cut each task's validation split to about this many images (stratified, seeded, the same images in every task); null: all")
    max_test_per_task: int | None = Field(None, ge=1, le=1_000_000, description="cut each task's test split to about this many images (stratified, seeded, the same images in every task); null: all 10,000")

    @model_validator(mode="after")
    def _input_of_the_protocol(self):
        if self.protocol == "halrp" and self.pmnist_input is None:
            self.pmnist_input = "official"
        elif self.protocol == "standard" and self.pmnist_input is not None:
            raise ValueError(f"pmnist_input {self.pmnist_input!r} is for protocol: halrp (3x32x32 inputs); "
                             "protocol standard is 784 flat pixels: drop pmnist_input or set protocol: halrp")
        return self

    @property
    def default_setting(self) -> str:
        return "task_incremental" if self.protocol == "halrp" else "domain_incremental"


def resize32(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> uint8 (N, 32, 32), bilinear: PIL's resize, which torchvision's Resize(32) calls
    on the PIL images of the HALRP code (so the values are theirs, rounded to uint8 as PIL does)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in x])


@lru_cache(maxsize=2)
def _resized_arrays(dataset: str, root: Path, download: bool, verify_checksums: bool):
    x_tr, y_tr, x_te, y_te = mnist_arrays(dataset, root, download, verify_checksums)
    return resize32(x_tr), y_tr, resize32(x_te), y_te


def _pmnist_inputs(p: PermutedMnistParams, ctx: LoadContext | None):
    """(flat x_train, y_train, flat x_test, y_test, normalization, how a flat row becomes an input)."""
    if p.protocol == "halrp" and p.pmnist_input == "official":
        ctx = ctx or LoadContext.resolve()
        x_tr, y_tr, x_te, y_te = _resized_arrays(p.dataset, ctx.root, p.download, p.verify_checksums)
        x_tr, x_te = (np.repeat(x.reshape(len(x), 1, -1), 3, axis=1).reshape(len(x), -1) for x in (x_tr, x_te))
        mean, std = OFFICIAL_PMNIST_NORMALIZATION
        norm = ((mean,) * 3, (std,) * 3) if p.normalize else None
        return x_tr, y_tr, x_te, y_te, norm, lambda x: x.reshape(-1, 3, 32, 32)
    x_tr, y_tr, x_te, y_te = _arrays(p, ctx)
    if p.protocol == "standard":
        norm = _norm(p, x_tr)
        return x_tr.reshape(len(x_tr), -1), y_tr, x_te.reshape(len(x_te), -1), y_te, norm, lambda x: x
    pad = ((0, 0), (0, 0), (2, 2), (2, 2))
    x_tr, x_te = np.pad(x_tr, pad), np.pad(x_te, pad)  # zero pixels = background, before normalising
    norm = _norm(p, x_tr)
    if norm is not None:
        norm = (norm[0] * 3, norm[1] * 3)  # the three channels are copies
    return (x_tr.reshape(len(x_tr), -1), y_tr, x_te.reshape(len(x_te), -1), y_te, norm,
            lambda x: np.repeat(x.reshape(-1, 1, 32, 32), 3, axis=1))


@BENCHMARKS.register("permuted_mnist", PermutedMnistParams)
def permuted_mnist(p: PermutedMnistParams, ctx: LoadContext | None = None) -> Benchmark:
    """MNIST-style images under T seeded pixel permutations (standard or HALRP protocol)."""
    flat_tr, y_tr, flat_te, y_te, norm, shape = _pmnist_inputs(p, ctx)
    # salt=0: the same images are held out for every task (they are one image set, permuted:
    # per-task draws would train on other tasks' validation images); so the split is drawn once
    base = make_task(p.dataset, flat_tr, y_tr, flat_te, y_te, range(10), p, salt=0, normalization=norm)
    base = cap_eval_splits(base, p.max_val_per_task, p.max_test_per_task, p.split_seed)
    side = flat_tr.shape[1]
    rng = np.random.default_rng(p.permutation_seed)
    tasks = []
    for k in range(p.num_tasks):
        perm = rng.permutation(side)
        if k == 0 and p.protocol == "standard":
            perm = np.arange(side)
        x_train, x_val, x_test = (None if x is None else np.ascontiguousarray(shape(x[:, perm]))
                                  for x in (base.x_train, base.x_val, base.x_test))
        tasks.append(dataclasses.replace(base, name=f"{p.dataset} permutation {k}", x_train=x_train, x_val=x_val,
                                         x_test=x_test))
    input_shape = (3, 32, 32) if p.protocol == "halrp" else (784,)
    return Benchmark("permuted_mnist", tuple(tasks), input_shape, default_setting=p.default_setting)


# ---------------------------------------------------------------- split
class SplitMnistParams(_MnistParams):
    class_order_seed: int | None = Field(None, description="shuffle which classes form each task (None: 0-1, 2-3, ...)")

    @property
    def num_tasks(self) -> int:
        return 5


@BENCHMARKS.register("split_mnist", SplitMnistParams)
def split_mnist(p: SplitMnistParams, ctx: LoadContext | None = None) -> Benchmark:
    """MNIST-style images split into 5 tasks of 2 classes."""
    x_tr, y_tr, x_te, y_te = _arrays(p, ctx)
    norm, order = _norm(p, x_tr), class_order(10, p.class_order_seed)
    tasks = tuple(make_task(f"{p.dataset} {order[2 * k]}/{order[2 * k + 1]}", x_tr, y_tr, x_te, y_te,
                            order[2 * k:2 * k + 2], p, salt=k, normalization=norm) for k in range(5))
    return Benchmark("split_mnist", tasks, (1, 28, 28), default_setting="task_incremental")


# ---------------------------------------------------------------- rotated
class RotatedMnistParams(_MnistParams):
    num_tasks: int = Field(10, ge=1, le=1000, description="number of rotations")
    max_angle: float = Field(180.0, gt=0.0, le=360.0, description="angles k * max_angle / num_tasks, degrees")
    angles: list[float] | None = Field(None, description="explicit angles in degrees (overrides max_angle; length = num_tasks)")

    @model_validator(mode="after")
    def _angles_match(self):
        if self.angles is not None and len(self.angles) != self.num_tasks:
            raise ValueError(f"angles has {len(self.angles)} entries but num_tasks is {self.num_tasks}")
        return self

    def task_angles(self) -> list[float]:
        return list(self.angles) if self.angles is not None else [k * self.max_angle / self.num_tasks for k in range(self.num_tasks)]


def _rotate(x: np.ndarray, angle: float) -> np.ndarray:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import rotate

    return rotate(torch.from_numpy(x), angle, interpolation=InterpolationMode.BILINEAR).numpy()


@BENCHMARKS.register("rotated_mnist", RotatedMnistParams)
def rotated_mnist(p: RotatedMnistParams, ctx: LoadContext | None = None) -> Benchmark:
    """MNIST-style images rotated by one angle per task (bilinear, zero fill), 10 classes."""
    x_tr, y_tr, x_te, y_te = _arrays(p, ctx)
    norm = _norm(p, x_tr)  # of the upright images, shared by every angle
    tasks = []
    for k, angle in enumerate(p.task_angles()):
        # salt=0: every angle holds out the same images (per-task draws would train, at a nearby
        # angle, on another task's validation images)
        tasks.append(make_task(f"{p.dataset} rotated {angle:g}", _rotate(x_tr, angle), y_tr, _rotate(x_te, angle),
                               y_te, range(10), p, salt=0, normalization=norm))
    return Benchmark("rotated_mnist", tuple(tasks), (1, 28, 28), default_setting="domain_incremental")


# ---------------------------------------------------------------- mixed similarity
class MixedSimilarityMnistParams(_MnistParams):
    angles: list[float] = Field([0.0, 10.0, 20.0], min_length=1, max_length=360,
                                description="rotations (degrees) of every stretch, in task order")
    stretches: int = Field(2, ge=1, le=100, description="stretch 0 upright pixels, stretch k >= 1 under permutation P_k")
    permutation_seed: int = Field(0, description="seed of the permutations P_1, P_2, ...")
    test_images: int | None = Field(None, ge=10, le=10_000, description="a stratified seeded subset of the test set "
                                    "(split_seed), the same images for every task; None: all 10,000")

    @property
    def num_tasks(self) -> int:
        return self.stretches * len(self.angles)

    def task_names(self) -> list[str]:
        return [f"{'' if k == 0 else f'P{k} + '}rot {a:g}" for k in range(self.stretches) for a in self.angles]


@BENCHMARKS.register("mixed_similarity_mnist", MixedSimilarityMnistParams)
def mixed_similarity_mnist(p: MixedSimilarityMnistParams, ctx: LoadContext | None = None) -> Benchmark:
    """Stretches of rotations, each stretch under its own pixel permutation (stretch 0: none); 10 classes."""
    x_tr, y_tr, x_te, y_te = _arrays(p, ctx)
    norm = _norm(p, x_tr)  # of the upright images, shared by every task (as rotated_mnist)
    # salt=0 (as rotated_mnist): every task trains on and holds out the same images, transformed. The
    # split is drawn once, on the indices, so only the images kept are rotated (not all 70,000 per angle).
    split = make_task("index", np.arange(len(y_tr)), y_tr, np.arange(len(y_te)), y_te, range(10), p, salt=0)
    test, y_test = split.x_test, split.y_test
    if p.test_images is not None and p.test_images < len(test):
        _, keep = stratified_split(y_test, p.test_images / len(test), np.random.default_rng([p.split_seed, 1]))
        test, y_test = test[keep], y_test[keep]
    parts = {"train": x_tr[split.x_train], "val": x_tr[split.x_val], "test": x_te[test]}
    rng = np.random.default_rng(p.permutation_seed)
    perms = [None] + [rng.permutation(28 * 28) for _ in range(p.stretches - 1)]
    turned = {a: {k: v if a % 360 == 0 or len(v) == 0 else _rotate(v, a) for k, v in parts.items()}
              for a in dict.fromkeys(p.angles)}
    names = iter(p.task_names())
    tasks = []
    for perm in perms:
        for a in p.angles:
            x = turned[a] if perm is None else {k: v.reshape(len(v), -1)[:, perm].reshape(v.shape)
                                                for k, v in turned[a].items()}
            tasks.append(Task(f"{p.dataset} {next(names)}", x["train"], split.y_train, x["test"], y_test, n_classes=10,
                              classes=split.classes, x_val=x["val"], y_val=split.y_val, normalization=norm))
    return Benchmark("mixed_similarity_mnist", tuple(tasks), (1, 28, 28), default_setting="task_incremental")


# ---------------------------------------------------------------- random labels
class RandomLabelMnistParams(_MnistParams):
    validates_on_training_set: ClassVar[bool] = True  # trainability: the val matrices are on the training set
    num_tasks: int = Field(50, ge=1, le=100_000, description="tasks, each with fresh random labels")
    num_images: int = Field(1000, ge=10, le=60_000, description="size N of the fixed image subset")
    label_seed: int = Field(0, description="seed of the image subset and of every task's labels")


@BENCHMARKS.register("random_label_mnist", RandomLabelMnistParams)
def random_label_mnist(p: RandomLabelMnistParams, ctx: LoadContext | None = None) -> Benchmark:
    """A fixed subset of N images with fresh random labels per task; tested on itself (trainability)."""
    x_tr, _, _, _ = _arrays(p, ctx)
    rng = np.random.default_rng(p.label_seed)
    x = np.ascontiguousarray(x_tr[np.sort(rng.choice(len(x_tr), p.num_images, replace=False))].reshape(p.num_images, -1))
    norm = _norm(p, x[:, None])
    tasks = []
    for k in range(p.num_tasks):  # one image array shared by every task (stored once)
        y = rng.integers(0, 10, p.num_images).astype(np.int64)
        tasks.append(Task(f"random labels {k}", x, y, x, y, n_classes=10, classes=tuple(range(10)),
                          x_val=x, y_val=y, normalization=norm))  # trainability: validation IS the training set
    return Benchmark("random_label_mnist", tuple(tasks), (784,), default_setting="domain_incremental",
                     validation="training_set")
