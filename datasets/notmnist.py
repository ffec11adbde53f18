"""notMNIST (small): letters A-J in many fonts, a source of the 5-Datasets benchmark.

On disk (the layout of the public archive, extracted under the data root)::

    <root>/notMNIST_small/A/*.png ... <root>/notMNIST_small/J/*.png

28x28 greyscale PNGs, about 1,870 a letter; a few files of the real archive
are unreadable (empty or truncated): they are skipped and counted (a
warning says how many). Labels: A=0 ... J=9.

notMNIST has no official train/test split, so ``notmnist_arrays`` draws one:
a stratified 80/20 split (20% of every letter is test) seeded by the constant
``SPLIT_SEED`` = 0 -- a constant, not a study parameter, so every study that
uses notMNIST tests on the same images. Download (``download: true``):
http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz (no checksum is
published for it, so ``verify_checksums`` has no effect here).

No benchmark of its own is registered; five_datasets uses it.

"""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from datasets.common import MissingData, stratified_split
from datasets.images import fetch_archive, frozen, read_images

URL = "http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz"
FOLDER = "notMNIST_small"
LETTERS = tuple("ABCDEFGHIJ")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
IMAGE_SIZE = 28

# ---------------------------------------------------------------- notMNIST

def notmnist_arrays(root: Path, download: bool = True,
                    verify_checksums: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): x uint8 (N, 28, 28), y int64 0..9; the fixed 80/20 split."""
    root = Path(root)
    fetch_archive("notMNIST", root, [f"{FOLDER}/{c}/" for c in LETTERS], URL, "notMNIST_small.tar.gz",
                  None, download, verify_checksums)
    return _decoded_split(str(root))


@lru_cache(maxsize=2)
def _decoded_split(root: str) -> tuple[np.ndarray, ...]:
    x, y = _decode_folder(Path(root))
    train, test = stratified_split(y, TEST_FRACTION, np.random.default_rng(SPLIT_SEED))
    return frozen(x[train], y[train], x[test], y[test])


def _decode_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every readable PNG under notMNIST_small/<letter>/, in sorted file order."""
    paths, labels = [], []
    for label, letter in enumerate(LETTERS):
        files = sorted((root / FOLDER / letter).glob("*.png"))
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise MissingData("notMNIST", root, [f"{FOLDER}/A/*.png"],
                          f"the letter folders hold no PNG files; extract {URL} in {root}.")
    x, ok = read_images(paths, IMAGE_SIZE, "L")
    if not ok.all():
        warnings.warn(f"notMNIST: skipped {int((~ok).sum())} unreadable file(s) of {len(paths)} "
                      f"(the public archive has a few)", stacklevel=3)
    return x[ok][:, 0], np.asarray(labels, dtype=np.int64)[ok]
