"""Split CUB-200 and Corrupted Split CUB-200 (Caltech-UCSD Birds-200-2011), task-incremental.

Files: the official archive extracted under the data root::

    <root>/CUB_200_2011/images.txt              "<image id> <class folder>/<file>.jpg"
    <root>/CUB_200_2011/image_class_labels.txt  "<image id> <class id, 1-based>"
    <root>/CUB_200_2011/train_test_split.txt    "<image id> <1 = train, 0 = test>"
    <root>/CUB_200_2011/classes.txt             "<class id> <class name>"
    <root>/CUB_200_2011/images/<class folder>/<file>.jpg

With ``download: true`` the archive
https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz (1.1 GB,
md5 97eceeb196236b17998738112f37df78, checked unless ``verify_checksums`` is
off) is fetched into the root and extracted there (tarfile, data filter).

Images: the official train/test split (5,994 / 5,794 images). Every image is
decoded as RGB and the whole image (bounding boxes unused, aspect ratio not
kept) resized bilinearly to ``image_size`` x ``image_size`` (default 64).
Arrays stay uint8 (N, 3, S, S); ``Task.on`` scales them to [0, 1] and, with
``normalize``, standardises per channel with the mean/std of ALL CUB training
images (every class, before the validation split).

split_cub200: the classes (class ids in classes.txt order, or shuffled by
``class_order_seed``) are cut into ``num_tasks`` (10 or 20) equal consecutive
groups; task k holds group k, labels 0..C-1 in group order. A folder with fewer
classes than 200 works too if their number divides num_tasks (tests use one).

corrupted_split_cub200 (specs/hybrid.md, "tasks differ by image corruption"):
the same tasks, and every image of task k (train and test) is corrupted by
``corruptions[k % len(corruptions)]`` (default order ``CORRUPTIONS``) at
``severity`` s (1..5), on [0, 1] pixels x of shape (N, 3, S, S), result clipped to
[0, 1] and rounded back to uint8 (as ImageNet-C stores its images). Constants
c = SEVERITY[name][s - 1] (ImageNet-C's, Hendrycks & Dietterich 2019, except
blur, see below):

- gaussian_noise: x + c * n, n ~ N(0, 1) per value; c = .08 .12 .18 .26 .38
- impulse_noise: each value independently set to 0 with probability c/2 and
  to 1 with probability c/2 (salt and pepper); c = .03 .06 .09 .17 .27
- gaussian_blur: Gaussian filter per channel, sigma = c * S / 32 pixels,
  kernel 2*ceil(3 sigma)+1, reflect padding; c = .4 .6 .7 .8 1 (CIFAR-10-C's
  sigmas for 32 px, scaled with the image size; ImageNet-C's 224 px sigmas
  would make severity 1 invisible at 64 px)
- contrast: m + c * (x - m), m = the image's per-channel mean; c = .4 .3 .2 .1 .05
- brightness: x * min(V + c, 1) / V, V = the pixel's max over channels (its HSV
  value), black pixels (V = 0) become grey c -- ImageNet-C's "add c to V in
  HSV" without the colour-space round trip; c = .1 .2 .3 .4 .5
- pixelate: box-downsample to floor(c * S) pixels a side, upsample back with
  pixel-centre nearest neighbour; c = .6 .5 .4 .3 .25

Noise is drawn from numpy's default_rng([corruption_seed, k, split]) (split
0 = train, 1 = test): the same seed gives the same images. Normalisation
statistics are those of the CLEAN training images, so a corruption's shift
of brightness or contrast stays visible to the network.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal, get_args

import numpy as np
import torch
from pydantic import Field, field_validator

from datasets.benchmark import Benchmark
from datasets.common import FileParams, LoadContext, class_order, make_task
from datasets.images import DecodedImages, fetch_archive, read_images, require_readable
from datasets.registry import BENCHMARKS

FOLDER = "CUB_200_2011"
URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
ARCHIVE, MD5 = "CUB_200_2011.tgz", "97eceeb196236b17998738112f37df78"
INDEX_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
EXPECTED = [f"{FOLDER}/{f}" for f in INDEX_FILES] + [f"{FOLDER}/images/"]

Corruption = Literal["gaussian_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness", "pixelate"]
CORRUPTIONS: tuple[str, ...] = get_args(Corruption)  # the default order: task k gets CORRUPTIONS[k % 6]
SEVERITY: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
}


class SplitCub200Params(FileParams):
    num_tasks: Literal[10, 20] = Field(10, description="tasks; the 200 classes are split evenly (10 x 20 or 20 x 10)")
    class_order_seed: int | None = Field(None, description="shuffle the classes before cutting them into tasks "
                                                           "(null: class-id order of classes.txt)")
    image_size: int = Field(64, ge=8, le=512, description="images are resized (whole image) to image_size x image_size RGB")


class CorruptedSplitCub200Params(SplitCub200Params):
    severity: int = Field(3, ge=1, le=5, description="corruption severity 1..5 (constants in datasets/cub.py)")
    corruption_seed: int = Field(0, description="seed of the noise corruptions")
    corruptions: list[Corruption] = Field(list(CORRUPTIONS), min_length=1,
                                          description="task k is corrupted by corruptions[k % len(corruptions)]")

    @field_validator("corruptions")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"corruptions lists a corruption twice: {v}")
        return v


# ---------------------------------------------------------------- files

def cub_arrays(root: Path, image_size: int, download: bool = True, verify_checksums: bool = True) -> DecodedImages:
    """CUB-200-2011's official train/test images, uint8 (N, 3, S, S), labels 0-based class ids."""
    root = Path(root)
    fetch_archive("CUB-200-2011", root, EXPECTED, URL, ARCHIVE, MD5, download, verify_checksums)
    return _decoded(str(root), image_size)


@lru_cache(maxsize=2)
def _decoded(root: str, image_size: int) -> DecodedImages:
    """Decode once per (root, size): split_cub200 and its corrupted variant share it."""
    base = Path(root) / FOLDER
    paths = _table(base / "images.txt", str)
    labels = _table(base / "image_class_labels.txt", int)
    is_train = _table(base / "train_test_split.txt", int)
    classes = _table(base / "classes.txt", str)
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise ValueError(f"{base / 'classes.txt'}: class ids must be 1..K, got {sorted(classes)[:5]}...")
    ids = sorted(paths)
    files = [base / "images" / paths[i] for i in ids]
    x, ok = read_images(files, image_size, "RGB")
    require_readable("CUB-200-2011", Path(root), files, ok)
    y = np.array([labels[i] - 1 for i in ids], dtype=np.int64)
    train = np.array([is_train[i] == 1 for i in ids])
    names = [classes[c] for c in range(1, len(classes) + 1)]
    return DecodedImages.of(x[train], y[train], x[~train], y[~train], names)


def _table(path: Path, kind: Callable[[str], object]) -> dict[int, object]:
    """CUB's "<id> <value>" text files as {id: value}."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, value = line.split(maxsplit=1)
            out[int(key)] = kind(value.strip())
    return out


# ---------------------------------------------------------------- corruptions

def corrupt(x: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 3, H, W) images -> the same images corrupted (formulas in the module docstring)."""
    c = SEVERITY[name][severity - 1]
    f = x.astype(np.float32) / np.float32(255)
    out = _CORRUPT[name](f, c, rng)
    return np.ascontiguousarray(np.round(np.clip(out, 0.0, 1.0) * 255).astype(np.uint8))


def _gaussian_noise(x, c, rng):
    return x + c * rng.standard_normal(x.shape, dtype=np.float32)


def _impulse_noise(x, c, rng):
    u = rng.random(x.shape, dtype=np.float32)
    return np.where(u < c / 2, 0.0, np.where(u < c, 1.0, x))


def _gaussian_blur(x, c, rng):
    from torchvision.transforms.functional import gaussian_blur

    sigma = c * x.shape[-1] / 32
    radius = min(math.ceil(3 * sigma), x.shape[-1] - 1, x.shape[-2] - 1)  # reflect padding needs radius < side
    return gaussian_blur(torch.from_numpy(x), [2 * radius + 1] * 2, [sigma, sigma]).numpy()


def _contrast(x, c, rng):
    m = x.mean(axis=(2, 3), keepdims=True)
    return m + c * (x - m)


def _brightness(x, c, rng):
    v = x.max(axis=1, keepdims=True)
    lifted = np.minimum(v + c, 1.0)
    return np.where(v > 0, x * lifted / np.maximum(v, 1e-12), lifted)


def _pixelate(x, c, rng):
    small = [max(1, int(c * side)) for side in x.shape[-2:]]
    down = torch.nn.functional.interpolate(torch.from_numpy(x), size=small, mode="area")  # box average
    return torch.nn.functional.interpolate(down, size=x.shape[-2:], mode="nearest-exact").numpy()


_CORRUPT = {"gaussian_noise": _gaussian_noise, "impulse_noise": _impulse_noise, "gaussian_blur": _gaussian_blur,
            "contrast": _contrast, "brightness": _brightness, "pixelate": _pixelate}


# ---------------------------------------------------------------- benchmarks

def _class_groups(num_classes: int, p: SplitCub200Params) -> list[list[int]]:
    if num_classes % p.num_tasks:
        raise ValueError(f"CUB has {num_classes} classes here, which num_tasks={p.num_tasks} does not divide")
    per = num_classes // p.num_tasks
    order = class_order(num_classes, p.class_order_seed)
    return [order[k * per:(k + 1) * per] for k in range(p.num_tasks)]


def _data(p: SplitCub200Params, ctx: LoadContext | None) -> DecodedImages:
    ctx = ctx or LoadContext.resolve()
    return cub_arrays(ctx.root, p.image_size, p.download, p.verify_checksums)


@BENCHMARKS.register("split_cub200", SplitCub200Params)
def split_cub200(p: SplitCub200Params, ctx: LoadContext | None = None) -> Benchmark:
    """CUB-200-2011 split by class into 10 or 20 tasks, RGB image_size x image_size."""
    d = _data(p, ctx)
    norm = d.normalization if p.normalize else None
    tasks = tuple(make_task(f"cub task {k}", d.x_train, d.y_train, d.x_test, d.y_test, classes, p, salt=k,
                            normalization=norm)
                  for k, classes in enumerate(_class_groups(len(d.class_names), p)))
    return Benchmark("split_cub200", tasks, (3, p.image_size, p.image_size), default_setting="task_incremental")


@BENCHMARKS.register("corrupted_split_cub200", CorruptedSplitCub200Params)
def corrupted_split_cub200(p: CorruptedSplitCub200Params, ctx: LoadContext | None = None) -> Benchmark:
    """Split CUB-200 with one image corruption per task (noise, blur, contrast, ...), seeded."""
    d = _data(p, ctx)
    norm = d.normalization if p.normalize else None  # of the clean images: corruptions stay visible
    tasks = []
    for k, classes in enumerate(_class_groups(len(d.class_names), p)):
        name = p.corruptions[k % len(p.corruptions)]
        tr, te = np.isin(d.y_train, classes), np.isin(d.y_test, classes)
        x_tr = corrupt(d.x_train[tr], name, p.severity, np.random.default_rng([p.corruption_seed, k, 0]))
        x_te = corrupt(d.x_test[te], name, p.severity, np.random.default_rng([p.corruption_seed, k, 1]))
        tasks.append(make_task(f"cub task {k} {name} s{p.severity}", x_tr, d.y_train[tr], x_te, d.y_test[te],
                               classes, p, salt=k, normalization=norm))
    return Benchmark("corrupted_split_cub200", tuple(tasks), (3, p.image_size, p.image_size),
                     default_setting="task_incremental")
