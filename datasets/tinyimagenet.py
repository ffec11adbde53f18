"""Split TinyImageNet (200 ImageNet classes, 64x64 RGB), task-incremental.

Files: the public archive extracted under the data root::

    <root>/tiny-imagenet-200/wnids.txt                      one class id (wnid) a line
    <root>/tiny-imagenet-200/train/<wnid>/images/*.JPEG     500 a class
    <root>/tiny-imagenet-200/val/images/*.JPEG              10,000 (50 a class)
    <root>/tiny-imagenet-200/val/val_annotations.txt        "<file>\\t<wnid>\\t<box>" a line

With ``download: true`` http://cs231n.stanford.edu/tiny-imagenet-200.zip (md5
90528d7ca1a48142e341f4ef8d21d0de, checked unless ``verify_checksums`` is off)
is fetched into the root and extracted there.

The official test set has no labels, so the labelled val set is the test set
(the usual practice); a validation split, if wanted, comes out of the
training set (``val_fraction``; HALRP uses 0.1). Class c is the c-th wnid of
wnids.txt. Images are decoded as RGB (a few are greyscale JPEGs) and kept uint8
(N, 3, 64, 64); ``Task.on`` scales them to [0, 1] and, with ``normalize``,
standardises per channel with the mean/std of all training images.

split_tinyimagenet: the classes (wnids.txt order, or shuffled by
``class_order_seed``) are cut into ``num_tasks`` equal consecutive groups:
20 tasks x 10 classes or 40 x 5 (specs/halrp.md); task k holds group k, labels
0..C-1 in group order. A folder with fewer classes works if their number
divides num_tasks (tests use one).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from datasets.benchmark import Benchmark
from datasets.common import FileParams, LoadContext, MissingData, class_order, make_task
from datasets.images import DecodedImages, fetch_archive, read_images, require_readable
from datasets.registry import BENCHMARKS

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ARCHIVE, MD5 = "tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"
EXPECTED = [f"{FOLDER}/wnids.txt", f"{FOLDER}/train/", f"{FOLDER}/val/images/", f"{FOLDER}/val/val_annotations.txt"]
SIZE = 64


class SplitTinyImageNetParams(FileParams):
    num_tasks: Literal[20, 40] = Field(20, description="tasks: 20 x 10 classes or 40 x 5")
    class_order_seed: int | None = Field(None, description="shuffle the classes before cutting them into tasks "
                                                           "(null: wnids.txt order)")


def tiny_arrays(root: Path, download: bool = True, verify_checksums: bool = True) -> DecodedImages:
    """TinyImageNet train (as train) and val (as test), uint8 (N, 3, 64, 64), labels = wnids.txt index."""
    root = Path(root)
    fetch_archive("TinyImageNet", root, EXPECTED, URL, ARCHIVE, MD5, download, verify_checksums)
    return _decoded(str(root))


@lru_cache(maxsize=1)
def _decoded(root: str) -> DecodedImages:
    base = Path(root) / FOLDER
    wnids = [w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()]
    label = {w: i for i, w in enumerate(wnids)}
    train_files, y_train = _train_files(Path(root), wnids)
    test_files, y_test = _val_files(base, label)
    x, ok = read_images(train_files + test_files, SIZE, "RGB")
    require_readable("TinyImageNet", Path(root), train_files + test_files, ok)
    n = len(train_files)
    return DecodedImages.of(x[:n], np.array(y_train, dtype=np.int64), x[n:], np.array(y_test, dtype=np.int64), wnids)


def _train_files(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """train/<wnid>/images/*.JPEG in wnid order; a class with no images is missing data."""
    files, labels, empty = [], [], []
    for i, w in enumerate(wnids):
        found = sorted((root / FOLDER / "train" / w / "images").glob("*.JPEG"))
        if not found:
            empty.append(f"{FOLDER}/train/{w}/images/*.JPEG")
        files += found
        labels += [i] * len(found)
    if empty:
        raise MissingData("TinyImageNet", root, empty[:10],
                          f"{len(empty)} class folder(s) of wnids.txt hold no training images; "
                          f"re-extract {URL} in {root}.")
    return files, labels


def _val_files(base: Path, label: dict[str, int]) -> tuple[list[Path], list[int]]:
    """val/images/<file> labelled by val_annotations.txt (tab-separated: file, wnid, box)."""
    files, labels = [], []
    annotations = base / "val" / "val_annotations.txt"
    for n, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, wnid = line.split("\t")[:2]
        if wnid not in label:
            raise ValueError(f"{annotations}:{n} labels {name} as {wnid}, which is not in wnids.txt")
        files.append(base / "val" / "images" / name)
        labels.append(label[wnid])
    return files, labels


@BENCHMARKS.register("split_tinyimagenet", SplitTinyImageNetParams)
def split_tinyimagenet(p: SplitTinyImageNetParams, ctx: LoadContext | None = None) -> Benchmark:
    """TinyImageNet split by class into 20 x 10 or 40 x 5 tasks; val set as test, 64x64 RGB."""
    ctx = ctx or LoadContext.resolve()
    d = tiny_arrays(ctx.root, p.download, p.verify_checksums)
    k_classes = len(d.class_names)
    if k_classes % p.num_tasks:
        raise ValueError(f"TinyImageNet has {k_classes} classes here, which num_tasks={p.num_tasks} does not divide")
    per = k_classes // p.num_tasks
    order = class_order(k_classes, p.class_order_seed)
    norm = d.normalization if p.normalize else None
    tasks = tuple(make_task(f"tinyimagenet task {k}", d.x_train, d.y_train, d.x_test, d.y_test,
                            order[k * per:(k + 1) * per], p, salt=k, normalization=norm)
                  for k in range(p.num_tasks))
    return Benchmark("split_tinyimagenet", tasks, (3, SIZE, SIZE), default_setting="task_incremental")
