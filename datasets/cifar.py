"""CIFAR-10 and CIFAR-100 benchmarks (task-incremental, 3x32x32, no augmentation).

Files are torchvision's layout under the data root: ``<root>/cifar-10-batches-py/``
(data_batch_1..5, test_batch, batches.meta) and ``<root>/cifar-100-python/``
(train, test, meta). torchvision downloads and extracts the archive when
``download`` is on (its md5 checked unless ``verify_checksums`` is off).

The files are Python pickles, and unpickling a file can run any code in it, so
clorch reads them itself, in two lines of defence: every file's md5 is checked
against the published one before it is opened, always (``verify_checksums``
does not turn this off), and a file that differs is refused unless the study
sets ``trust_unverified_pickles: true`` (dangerous: only for files you made
yourself, e.g. small test files); and even then the unpickler only rebuilds
dicts, lists, strings, numbers and numpy arrays, refusing any other global.
Missing or rejected files raise MissingData naming the files and the fix,
never torchvision's errors.

- split_cifar10: 5 tasks x 2 classes; task k = classes order[2k], order[2k+1],
  where order is 0..9 or its ``class_order_seed`` permutation.
- split_cifar100: 10 tasks x 10 classes or 20 x 5 (``num_tasks``); task k =
  order[k*c:(k+1)*c] of 0..99 (or its ``class_order_seed`` permutation).
- cifar100_superclass: HALRP's SuperClass setting. 20 tasks x 5 classes; task k
  = the 5 fine classes of coarse class k (CIFAR-100's own ``coarse_labels``),
  ordered by fine label.
- correlated_split_cifar100: the adaptive update-magnitude method's
  "tasks built from related classes" (specs/hybrid.md). 10 tasks x 10 classes.
  The 20 superclasses (coarse labels, 0..19, or their ``superclass_seed``
  permutation) each hold 5 fine classes sorted by fine label. Block A = the
  first 10 superclasses, block B = the last 10. Task k (k = 0..4) holds the
  k-th fine class of every superclass of block A; task 5+k the k-th fine class
  of every superclass of block B; inside a task, label i is the class from the
  i-th superclass of the block. So tasks 0-4 are mutually related (the same ten
  superclasses, different members), tasks 5-9 likewise, and the two blocks
  share no superclass.

Pixels are scaled to [0, 1]; with ``normalize`` they are standardised with
fixed published constants (not statistics of the loaded files): CIFAR-100
uses HALRP's mean (0.507, 0.487, 0.441) / std (0.267, 0.256, 0.276)
(specs/halrp.md), CIFAR-10 the standard (0.4914, 0.4822, 0.4465) /
(0.2470, 0.2435, 0.2616). Task arrays stay uint8 (N, 3, 32, 32), C-contiguous;
the scaling and standardisation happen on the trial's device (Task.on).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal
from urllib.error import URLError

import numpy as np
from pydantic import Field, field_validator

from datasets.benchmark import Benchmark, Task
from datasets.common import FileParams, LoadContext, MissingData, class_order, make_task
from datasets.registry import BENCHMARKS

Dataset = Literal["cifar10", "cifar100"]
INPUT_SHAPE = (3, 32, 32)
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"
NORMALIZATION = {  # (mean, std) of [0, 1] pixels, per channel
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),  # HALRP's published constants
}
NUM_SUPERCLASSES, FINE_PER_SUPERCLASS = 20, 5


# ---------------------------------------------------------------- files
class CifarFileParams(FileParams):
    trust_unverified_pickles: bool = Field(
        False, description="DANGEROUS: read CIFAR files whose md5 differs from the published one (they are "
                           "pickles; a crafted file could run code if the restricted reader had a hole); "
                           "only for files you made yourself")


def _torchvision_base(dataset: Dataset):
    from torchvision import datasets as tv

    return {"cifar10": tv.CIFAR10, "cifar100": tv.CIFAR100}[dataset]


class UnverifiedPickle(RuntimeError):
    """A CIFAR file whose md5 is not the published one, read without the study's explicit opt-in."""


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler for the CIFAR format only: dicts, lists, str/bytes, numbers and numpy arrays.

    Containers and scalars need no global; a numpy array needs these three, and
    bytes in a Python 3 protocol-2 pickle ``_codecs.encode`` (str -> bytes).
    Anything else (os.system, builtins.eval, ...) is refused before it is looked up.
    """

    def find_class(self, module: str, name: str):
        if module == "_codecs" and name == "encode":
            import codecs

            return codecs.encode
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _np_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(f"refusing to unpickle the global {module}.{name}: a CIFAR file holds only "
                                     "dicts, lists, strings, numbers and numpy arrays")


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        out = _CifarUnpickler(f, encoding="latin1").load()
    if not isinstance(out, dict):
        raise ValueError(f"{path.name} holds a {type(out).__name__}, not a dict")
    return out


def _verify(dataset: Dataset, root: Path, trust_unverified_pickles: bool) -> None:
    """Every file's md5 against the published one before anything is unpickled."""
    from torchvision.datasets.utils import check_integrity

    bad = [rel for rel, md5 in _checksums(_torchvision_base(dataset)).items() if not check_integrity(root / rel, md5)]
    if bad and not trust_unverified_pickles:
        raise UnverifiedPickle(", ".join(bad))


def _decode(dataset: Dataset, root: Path) -> tuple:
    """(x_train, y_train, x_test, y_test, class names, coarse train, coarse test) from the pickles."""
    tv = _torchvision_base(dataset)
    folder = root / tv.base_folder

    def part(files):
        entries = [_read_pickle(folder / name) for name, _ in files]
        x = np.vstack([np.asarray(e["data"]) for e in entries])
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise ValueError(f"'data' is {x.dtype} {x.shape}, not uint8 rows of 3072 pixels")
        y = [v for e in entries for v in (e["labels"] if "labels" in e else e["fine_labels"])]
        coarse = [v for e in entries for v in e["coarse_labels"]] if dataset == "cifar100" else None
        # the files hold R, G, B planes per row: (N, 3, 32, 32) directly, C-contiguous
        return np.ascontiguousarray(x.reshape(-1, 3, 32, 32)), _labels(y), None if coarse is None else _labels(coarse)

    x_tr, y_tr, c_tr = part(tv.train_list)
    x_te, y_te, c_te = part(tv.test_list)
    names = _read_pickle(folder / tv.meta["filename"])[tv.meta["key"]]
    return x_tr, y_tr, x_te, y_te, tuple(str(c) for c in names), c_tr, c_te


def expected_files(tv_class) -> list[str]:
    """The files torchvision reads, relative to the data root (train, test, meta)."""
    names = [name for name, _ in tv_class.train_list + tv_class.test_list] + [tv_class.meta["filename"]]
    return [f"{tv_class.base_folder}/{name}" for name in names]


def _checksums(tv_class) -> dict[str, str]:
    pairs = tv_class.train_list + tv_class.test_list + [[tv_class.meta["filename"], tv_class.meta["md5"]]]
    return {f"{tv_class.base_folder}/{name}": md5 for name, md5 in pairs}


def _missing_data(dataset: Dataset, root: Path, download: bool, error: BaseException) -> MissingData:
    """Why torchvision could not give us the files, said in terms of the files and the fix."""
    from torchvision.datasets.utils import check_integrity

    tv_class = _torchvision_base(dataset)
    expected = expected_files(tv_class)
    missing = [rel for rel in expected if not (root / rel).is_file()]
    fix = (f"Fix: set download: true on a machine with internet (torchvision fetches {tv_class.url}), "
           f"or download {tv_class.filename} from {SOURCE} and extract it under {root} "
           f"(it unpacks to {tv_class.base_folder}/).")
    problems = []
    if download and not isinstance(error, UnverifiedPickle):
        problems.append(f"the download failed ({type(error).__name__}: {_first_line(error)})")
    elif missing:
        problems.append("downloading is off (download: false)")
    if missing:
        problems.append("none of these files is there" if missing == expected else f"missing: {', '.join(missing)}")
    else:
        bad = [rel for rel, md5 in _checksums(tv_class).items() if not check_integrity(root / rel, md5)]
        if bad:
            problems.append(f"these files are there but their md5 differs from the published one: {', '.join(bad)} "
                            "(truncated, corrupted, or not the original files); delete them and download again. "
                            "CIFAR files are Python pickles, which can run code when read, so clorch reads only "
                            "files with the published md5; to use files you made yourself set "
                            "trust_unverified_pickles: true (dangerous: never for files from elsewhere)")
        elif not download:
            problems.append(f"torchvision could not read them ({type(error).__name__}: {_first_line(error)})")
    why = "; ".join(problems)
    return MissingData(dataset, root, expected, f"{why}.\n{fix}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines() or [""])[0][:200]


@dataclass(frozen=True)
class CifarArrays:
    """A CIFAR dataset as decoded from its files: x uint8 (N, 3, 32, 32), labels int64.

    ``coarse_*`` are CIFAR-100's superclass labels (None for CIFAR-10).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    coarse_train: np.ndarray | None = None
    coarse_test: np.ndarray | None = None


@lru_cache(maxsize=4)
def cifar_arrays(dataset: Dataset, root: Path, download: bool = False, verify_checksums: bool = True,
                 trust_unverified_pickles: bool = False) -> CifarArrays:
    """Read (downloading when allowed) one dataset's files once per process.

    Cached per (dataset, root, flags): every benchmark built from the same
    files shares the decoded uint8 arrays (read-only, so no builder can alter
    another's data). Raises MissingData, never torchvision's own errors.
    ``verify_checksums`` applies to a downloaded archive; the files' md5 is
    always checked before they are unpickled (see the module docstring).
    """
    from torchvision.datasets import cifar as tv_cifar

    root = Path(root)
    tv = _torchvision_base(dataset)
    expected = expected_files(tv)
    try:
        if download and not all((root / rel).is_file() for rel in expected):
            tv_cifar.download_and_extract_archive(tv.url, str(root), filename=tv.filename,
                                                  md5=tv.tgz_md5 if verify_checksums else None)
        if not all((root / rel).is_file() for rel in expected):
            raise FileNotFoundError(", ".join(rel for rel in expected if not (root / rel).is_file()))
        _verify(dataset, root, trust_unverified_pickles)
        x_tr, y_tr, x_te, y_te, names, c_tr, c_te = _decode(dataset, root)
    except (URLError, OSError, RuntimeError) as e:  # not found, bad md5, or the download failed
        raise _missing_data(dataset, root, download, e) from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise MissingData(dataset, root, expected,  # present but not CIFAR pickles
                          f"the files are there but could not be read as CIFAR pickles ({type(e).__name__}: "
                          f"{_first_line(e)}); replace them with the originals from {SOURCE}") from None
    arrays = CifarArrays(x_tr, y_tr, x_te, y_te, names, c_tr, c_te)
    for a in (arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test, c_tr, c_te):
        if a is not None:
            a.setflags(write=False)
    return arrays


def _labels(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def superclass_members(a: CifarArrays) -> list[list[int]]:
    """For coarse class s = 0..19, its 5 fine classes sorted by fine label (checked against the files)."""
    pairs = set(zip(np.concatenate([a.y_train, a.y_test]).tolist(),
                    np.concatenate([a.coarse_train, a.coarse_test]).tolist()))
    members: list[list[int]] = [[] for _ in range(NUM_SUPERCLASSES)]
    for fine, coarse in sorted(pairs):
        if not 0 <= coarse < NUM_SUPERCLASSES:
            raise ValueError(f"CIFAR-100 coarse label {coarse} is outside 0..{NUM_SUPERCLASSES - 1}")
        members[coarse].append(fine)
    fines = [f for m in members for f in m]
    if len(fines) != len(set(fines)) or any(len(m) != FINE_PER_SUPERCLASS for m in members):
        raise ValueError("the CIFAR-100 files do not have 20 superclasses of 5 fine classes each "
                         "(every fine label must map to one coarse label); are they the original files?")
    return members


# ---------------------------------------------------------------- tasks
def _load(dataset: Dataset, p: CifarFileParams, ctx: LoadContext | None) -> CifarArrays:
    ctx = ctx or LoadContext.resolve()
    return cifar_arrays(dataset, ctx.root, p.download, p.verify_checksums, p.trust_unverified_pickles)


def _tasks(dataset: Dataset, a: CifarArrays, groups: list[list[int]], names: list[str], p: FileParams) -> tuple[Task, ...]:
    """One task per group of original labels (label i of a task = the group's i-th class)."""
    return tuple(_with_normalization(make_task(name, a.x_train, a.y_train, a.x_test, a.y_test, group, p, salt=k), dataset, p)
                 for k, (name, group) in enumerate(zip(names, groups)))


def _with_normalization(task: Task, dataset: Dataset, p: FileParams) -> Task:
    """Keep uint8 pixels; Task.on scales them to [0, 1] and standardises on the device.

    A quarter of the bytes of float32 in the object store and in every trial.
    """
    return replace(task, normalization=NORMALIZATION[dataset] if p.normalize else None)


def _chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def _benchmark(name: str, tasks: tuple[Task, ...]) -> Benchmark:
    return Benchmark(name, tasks, INPUT_SHAPE, default_setting="task_incremental")


def _class_order_seed():
    return Field(None, description="shuffle which classes form each task (None: natural order 0, 1, 2, ...)")


class _CifarFiles(CifarFileParams):
    """CIFAR params know their files: ``check_files`` is what `clorch validate --data-root` reports."""

    cifar_files: ClassVar[str] = "cifar100"

    def check_files(self, ctx: LoadContext) -> list[str]:
        """Cheap: every file torchvision reads is there (no md5, no unpickling); absent ones matter only
        when downloading is off."""
        tv_class = _torchvision_base(self.cifar_files)
        expected = expected_files(tv_class)
        missing = [rel for rel in expected if not (Path(ctx.root) / rel).is_file()]
        if not missing or self.download:
            return []
        return [str(_missing_data(self.cifar_files, Path(ctx.root), False, FileNotFoundError(missing[0])))]


# ---------------------------------------------------------------- split CIFAR-10
class SplitCifar10Params(_CifarFiles):
    cifar_files: ClassVar[str] = "cifar10"
    class_order_seed: int | None = _class_order_seed()

    @property
    def num_tasks(self) -> int:
        return 5


@BENCHMARKS.register("split_cifar10", SplitCifar10Params)
def split_cifar10(p: SplitCifar10Params, ctx: LoadContext | None = None) -> Benchmark:
    """CIFAR-10 in 5 tasks of 2 classes (class order optionally seeded)."""
    a = _load("cifar10", p, ctx)
    groups = _chunks(class_order(10, p.class_order_seed), 2)
    names = [f"cifar10 {'/'.join(a.class_names[c] for c in g)}" for g in groups]
    return _benchmark("split_cifar10", _tasks("cifar10", a, groups, names, p))


# ---------------------------------------------------------------- split CIFAR-100
class SplitCifar100Params(_CifarFiles):
    num_tasks: int = Field(10, ge=1, le=100, description="10 (10 classes per task) or 20 (5 classes per task)")
    class_order_seed: int | None = _class_order_seed()

    @field_validator("num_tasks")
    @classmethod
    def _ten_or_twenty(cls, v: int) -> int:
        if v not in (10, 20):
            raise ValueError(f"num_tasks={v} is not supported: use 10 (10 tasks x 10 classes) or 20 (20 tasks x 5 classes)")
        return v

    @property
    def classes_per_task(self) -> int:
        return 100 // self.num_tasks


@BENCHMARKS.register("split_cifar100", SplitCifar100Params)
def split_cifar100(p: SplitCifar100Params, ctx: LoadContext | None = None) -> Benchmark:
    """CIFAR-100 in 10 tasks of 10 classes or 20 of 5 (class order optionally seeded)."""
    a = _load("cifar100", p, ctx)
    groups = _chunks(class_order(100, p.class_order_seed), p.classes_per_task)
    names = [f"cifar100 task {k}" for k in range(len(groups))]
    return _benchmark("split_cifar100", _tasks("cifar100", a, groups, names, p))


# ---------------------------------------------------------------- superclass CIFAR-100
class Cifar100SuperclassParams(_CifarFiles):
    """No class-order seed: the grouping is CIFAR-100's own; task orders permute the tasks."""

    @property
    def num_tasks(self) -> int:
        return NUM_SUPERCLASSES


@BENCHMARKS.register("cifar100_superclass", Cifar100SuperclassParams)
def cifar100_superclass(p: Cifar100SuperclassParams, ctx: LoadContext | None = None) -> Benchmark:
    """CIFAR-100 SuperClass (HALRP): task k = the 5 fine classes of coarse class k."""
    a = _load("cifar100", p, ctx)
    groups = superclass_members(a)
    names = [f"cifar100 superclass {s}" for s in range(NUM_SUPERCLASSES)]
    return _benchmark("cifar100_superclass", _tasks("cifar100", a, groups, names, p))


# ---------------------------------------------------------------- correlated CIFAR-100
class CorrelatedSplitCifar100Params(_CifarFiles):
    superclass_seed: int | None = Field(None, description="permute the 20 superclasses before splitting them into "
                                                          "blocks A (first 10) and B (last 10); None keeps 0..19")

    @property
    def num_tasks(self) -> int:
        return 2 * FINE_PER_SUPERCLASS


def correlated_groups(members: list[list[int]], superclass_seed: int | None) -> list[list[int]]:
    """The 10 tasks' fine classes: task k / 5+k = the k-th member of each superclass of block A / B."""
    supers = class_order(NUM_SUPERCLASSES, superclass_seed)
    blocks = (supers[:NUM_SUPERCLASSES // 2], supers[NUM_SUPERCLASSES // 2:])
    return [[members[s][k] for s in block] for block in blocks for k in range(FINE_PER_SUPERCLASS)]


@BENCHMARKS.register("correlated_split_cifar100", CorrelatedSplitCifar100Params)
def correlated_split_cifar100(p: CorrelatedSplitCifar100Params, ctx: LoadContext | None = None) -> Benchmark:
    """CIFAR-100 in 10 tasks of 10 classes: tasks 0-4 share ten superclasses, tasks 5-9 the other ten."""
    a = _load("cifar100", p, ctx)
    groups = correlated_groups(superclass_members(a), p.superclass_seed)
    names = [f"cifar100 correlated block {'AB'[k // 5]} member {k % 5}" for k in range(len(groups))]
    return _benchmark("correlated_split_cifar100", _tasks("cifar100", a, groups, names, p))
