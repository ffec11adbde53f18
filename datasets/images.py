"""Image-file helpers shared by the file-based loaders (svhn, notmnist, cub, tinyimagenet).

Archive download and extraction that fail as MissingData, threaded decoding
of image files at a fixed size, and a read-only cache type for decoded
datasets.
"""
from __future__ import annotations

import os
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from datasets.common import MissingData, uint8_normalization

Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # Task.normalization


def fetch_archive(dataset: str, root: Path, expected: Sequence[str], url: str, filename: str,
                  md5: str | None, download: bool, verify_checksums: bool) -> None:
    """Make sure ``expected`` (paths relative to root) exist, downloading ``url`` if allowed.

    Every way this can fail -- download off, no network, a bad checksum, a
    broken archive -- ends as MissingData naming the files and the fix, not
    as an exception from urllib/tarfile.
    """
    root = Path(root)
    if all((root / e).exists() for e in expected):
        return
    by_hand = f"download {url} and extract it in {root}"
    if not download:
        raise MissingData(dataset, root, expected, f"Set the benchmark's download: true, or {by_hand}.")
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_file(url, root, filename, md5 if verify_checksums else None)
        extract_archive(root / filename, root)
    except (OSError, RuntimeError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise MissingData(dataset, root, expected,
                          f"Downloading or extracting {url} failed ({type(e).__name__}: {e}); "
                          f"{by_hand} by hand.") from None
    missing = [e for e in expected if not (root / e).exists()]
    if missing:
        raise MissingData(dataset, root, missing, f"{filename} did not contain them; {by_hand} by hand.")


def download_file(url: str, folder: Path, filename: str, md5: str | None) -> None:
    """torchvision's downloader (redirects, md5 check); imported here, as torchvision takes a second to import."""
    from torchvision.datasets.utils import download_url

    download_url(url, str(folder), filename, md5)


def extract_archive(archive: Path, into: Path) -> None:
    """Unpack a .zip or a (compressed) tar; tar members may not escape ``into`` (filter='data')."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")


def read_image(path: Path, size: int, mode: Literal["L", "RGB"]) -> np.ndarray:
    """One image file -> uint8 (C, size, size); resized (whole image, bilinear) when it differs.

    ``draft`` lets the JPEG decoder shrink by DCT scaling first (several
    times faster on CUB's ~500px photos); it never goes below ``size``.
    """
    with Image.open(path) as im:
        im.draft(None, (size, size))
        im = im.convert(mode)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def read_images(paths: Sequence[Path], size: int, mode: Literal["L", "RGB"]) -> tuple[np.ndarray, np.ndarray]:
    """Decode many files in threads (PIL releases the GIL): uint8 (N, C, size, size) and an ok mask.

    An unreadable file leaves a zero image and ok=False, so callers decide
    whether to skip it (notMNIST) or to stop (CUB, TinyImageNet).
    """
    channels = 1 if mode == "L" else 3
    out = np.zeros((len(paths), channels, size, size), dtype=np.uint8)
    ok = np.ones(len(paths), dtype=bool)

    def one(i: int) -> None:
        try:
            out[i] = read_image(paths[i], size, mode)
        except (OSError, ValueError, SyntaxError):  # PIL's ways of saying "not an image"
            ok[i] = False

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(paths))))
    return out, ok


def require_readable(dataset: str, root: Path, paths: Sequence[Path], ok: np.ndarray) -> None:
    """Stop with MissingData naming the unreadable files (a damaged copy must be re-extracted)."""
    if not ok.all():
        bad = [str(Path(paths[i]).relative_to(root)) for i in np.flatnonzero(~ok)[:10]]
        raise MissingData(dataset, root, bad, f"{int((~ok).sum())} listed image file(s) are missing or cannot be "
                                              "decoded (first ones above); re-extract the dataset archive.")


@dataclass(frozen=True)
class DecodedImages:
    """A labelled image dataset as decoded from its files, cached once per process.

    x uint8 (N, C, H, W) and y int64 are read-only (every benchmark built in
    the process shares them); ``normalization`` is the per-channel (mean, std)
    of the [0, 1] training pixels, for Task.normalization.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    normalization: Normalization

    @classmethod
    def of(cls, x_train, y_train, x_test, y_test, class_names) -> "DecodedImages":
        frozen(x_train, y_train, x_test, y_test)
        return cls(x_train, y_train, x_test, y_test, tuple(class_names), uint8_normalization(x_train))


def frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cached arrays are shared by every benchmark built in the process: make them read-only."""
    for a in arrays:
        a.flags.writeable = False
    return arrays
