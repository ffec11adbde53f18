"""SVHN (cropped digits, 32x32 RGB), a source of the 5-Datasets benchmark.

On disk: ``<root>/SVHN/train_32x32.mat`` (73,257 images) and
``<root>/SVHN/test_32x32.mat`` (26,032) -- the official files, MATLAB format
with ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1), where label 10 means the
digit 0. The "extra" split is not used. torchvision's ``datasets.SVHN``
downloads (``download: true``, from http://ufldl.stanford.edu/housenumbers/)
and parses them: images come back (N, 3, 32, 32) uint8, label 10 mapped to 0.

torchvision insists on the published md5 of each .mat file. With
``verify_checksums: false`` the small subclass below checks existence only,
so a locally re-packed or a test-sized file is accepted.

No benchmark of its own is registered; five_datasets uses it.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from datasets.common import MissingData
from datasets.images import download_file, frozen

FOLDER = "SVHN"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
SOURCE = "http://ufldl.stanford.edu/housenumbers/"


@lru_cache(maxsize=None)
def _svhn_class():
    """torchvision's SVHN with the md5 check switchable (existence-only when verify is False).

    Built on first use: importing torchvision costs a second that listing
    benchmarks should not pay.
    """
    from torchvision.datasets import SVHN

    class _SVHN(SVHN):
        def __init__(self, root: str, split: str, verify: bool):
            self._verify = verify
            super().__init__(root, split=split, download=False)

        def _check_integrity(self) -> bool:
            if self._verify:
                return super()._check_integrity()
            return os.path.isfile(os.path.join(self.root, self.filename))

    return _SVHN


def svhn_arrays(root: Path, download: bool = True,
                verify_checksums: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): x uint8 (N, 3, 32, 32), y int64 0..9 (digit d -> d)."""
    root = Path(root)
    missing = [f for f in FILES.values() if not (root / FOLDER / f).is_file()]
    if missing and not download:
        raise MissingData("SVHN", root, [f"{FOLDER}/{f}" for f in missing],
                          f"Set the benchmark's download: true, or download {', '.join(missing)} "
                          f"from {SOURCE} into {root / FOLDER}.")
    for filename in missing:
        _download(root, filename, verify_checksums)
    return _read(str(root / FOLDER), verify_checksums)


def _download(root: Path, filename: str, verify: bool) -> None:
    md5 = {f: md5 for _, f, md5 in _svhn_class().split_list.values()}[filename]
    try:
        download_file(SOURCE + filename, root / FOLDER, filename, md5 if verify else None)
    except (OSError, RuntimeError) as e:
        raise MissingData("SVHN", root, [f"{FOLDER}/{filename}"],
                          f"Downloading {SOURCE}{filename} failed ({type(e).__name__}: {e}); "
                          f"download it into {root / FOLDER} by hand.") from None


@lru_cache(maxsize=2)
def _read(folder: str, verify: bool) -> tuple[np.ndarray, ...]:
    """Both splits through torchvision, read once per process per folder."""
    from scipy.io.matlab import MatReadError

    out = []
    for split, filename in FILES.items():
        try:
            ds = _svhn_class()(folder, split, verify)
        except RuntimeError:  # torchvision's "not found or corrupted": here, an md5 mismatch
            raise MissingData("SVHN", Path(folder).parent, [f"{FOLDER}/{filename}"],
                              "The file differs from the published one (md5). Re-download it (delete it and "
                              "set download: true), or set verify_checksums: false to accept it.") from None
        except (ValueError, OSError, MatReadError) as e:  # scipy could not parse it
            raise MissingData("SVHN", Path(folder).parent, [f"{FOLDER}/{filename}"],
                              f"The file cannot be read as MATLAB data ({type(e).__name__}: {e}); "
                              "delete it and re-download it.") from None
        out += [np.ascontiguousarray(ds.data, dtype=np.uint8), ds.labels.astype(np.int64)]
    return frozen(*out)
