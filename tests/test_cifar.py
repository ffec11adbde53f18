"""CIFAR benchmarks, built from tiny files in the real on-disk format (offline, fast).

The helpers write what torchvision reads: Python-2-style pickles (protocol 2,
keys and strings as Python 2 byte strings, so ``encoding='latin1'`` gives
'data' and ``encoding='bytes'`` gives b'data', as with the published files).
Every image is its (fine) label everywhere, except two pixels of the blue
channel that hold a per-file serial number, so a test can tell which image
went where and what a normalised constant image must look like.
"""
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from pydantic import ValidationError

import datasets
from datasets import BENCHMARKS, LoadContext, MissingData
from datasets import cifar

# An invented, real-like CIFAR-100 hierarchy: fine f belongs to coarse 7f mod 20,
# so every coarse class has 5 fine classes, never contiguous (f = 3s mod 20, +20j).
COARSE_OF = [(7 * f) % 20 for f in range(100)]
C10_TRAIN, C10_TEST = 10, 3  # images per class
C100_TRAIN, C100_TEST = 6, 2
TEST_SERIAL = 5000  # test images are numbered from here, train images from 0


# ---------------------------------------------------------------- writing real-format files
class _Py2Pickler(pickle._Pickler):
    """Pickles str as Python 2 byte strings (and ndarray data with it), like the published CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, f):
        super().__init__(f, protocol=2)

    def _save_py2_str(self, obj: str):
        raw = obj.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:  # numpy's own reduce, with its byte strings as Python 2 str
            func, (cls, shape, typecode), (version, dims, dtype, fortran, data) = obj.__reduce__()
            return func, (cls, shape, typecode.decode("latin1")), (version, dims, dtype, fortran, data.decode("latin1"))
        return NotImplemented


def _dump(path: Path, obj: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        _Py2Pickler(f).dump(obj)


def _image(label: int, serial: int) -> np.ndarray:
    img = np.full((3, 32, 32), label, dtype=np.uint8)
    img[2, 31, 30], img[2, 31, 31] = divmod(serial, 256)
    return img.reshape(3072)  # CIFAR's row: 1024 red, 1024 green, 1024 blue


def _images(labels: list[int], first_serial: int) -> np.ndarray:
    return np.stack([_image(c, first_serial + i) for i, c in enumerate(labels)])


def _shuffled_labels(num_classes: int, per_class: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class)).tolist()


def write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    train = _shuffled_labels(10, C10_TRAIN, seed=0)
    per_batch = len(train) // 5
    for b in range(5):
        labels = train[b * per_batch:(b + 1) * per_batch]
        _dump(folder / f"data_batch_{b + 1}", {
            "batch_label": f"training batch {b + 1} of 5", "labels": labels,
            "data": _images(labels, b * per_batch), "filenames": [f"img_{b}_{i}.png" for i in range(len(labels))]})
    test = _shuffled_labels(10, C10_TEST, seed=1)
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test,
                                  "data": _images(test, TEST_SERIAL), "filenames": [f"t{i}.png" for i in range(len(test))]})
    _dump(folder / "batches.meta", {"num_cases_per_batch": per_batch, "num_vis": 3072,
                                    "label_names": [f"class{c}" for c in range(10)]})
    return root


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    for name, per_class, seed, first in (("train", C100_TRAIN, 2, 0), ("test", C100_TEST, 3, TEST_SERIAL)):
        fine = _shuffled_labels(100, per_class, seed)
        _dump(folder / name, {"batch_label": f"{name}ing batch 1 of 1", "filenames": [f"{i}.png" for i in range(len(fine))],
                              "fine_labels": fine, "coarse_labels": [COARSE_OF[f] for f in fine],
                              "data": _images(fine, first)})
    _dump(folder / "meta", {"fine_label_names": [f"fine{f}" for f in range(100)],
                            "coarse_label_names": [f"coarse{s}" for s in range(20)]})
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_cifar100(write_cifar10(tmp_path_factory.mktemp("data")))


def build(name, root, **params):
    entry = BENCHMARKS.get(name)
    # the tiny files are not the published ones: reading them needs the explicit (dangerous) opt-in
    params = {"download": False, "verify_checksums": False, "trust_unverified_pickles": True, **params}
    return entry.target(entry.params(**params), LoadContext(Path(root)))


def raw(x: np.ndarray) -> np.ndarray:
    """The bytes written: task arrays keep the uint8 pixels."""
    assert x.dtype == np.uint8
    return x.astype(np.int64)


def labels_in_pixels(x: np.ndarray) -> list[int]:
    return raw(x[:, 0, 0, 0]).tolist()


def serials(x: np.ndarray) -> set[int]:
    r = raw(x[:, 2, 31, 30:32])
    return set((r[:, 0] * 256 + r[:, 1]).tolist())


def assert_images_match_labels(bench):
    """Every image in every split is of the class its task label says."""
    for t in bench.tasks:
        for x, y in ((t.x_train, t.y_train), (t.x_val, t.y_val), (t.x_test, t.y_test)):
            assert labels_in_pixels(x) == [t.classes[i] for i in y]


def fine_of(s: int) -> list[int]:
    return sorted(f for f in range(100) if COARSE_OF[f] == s)


# ---------------------------------------------------------------- the helper writes the real format
def test_tiny_files_have_the_published_pickle_layout(root):
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")
    assert {b"data", b"labels", b"batch_label", b"filenames"} <= set(as_bytes)
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (20, 3072)
    with open(root / "cifar-100-python" / "train", "rb") as f:
        as_str = pickle.load(f, encoding="latin1")
    assert {"data", "fine_labels", "coarse_labels"} <= set(as_str)
    with open(root / "cifar-100-python" / "meta", "rb") as f:
        assert set(pickle.load(f, encoding="bytes")) == {b"fine_label_names", b"coarse_label_names"}


def test_registered_with_num_tasks_known_before_loading():
    assert {"split_cifar10", "split_cifar100", "cifar100_superclass", "correlated_split_cifar100"} <= set(
        datasets.BENCHMARKS.names())
    num = lambda name, **kw: BENCHMARKS.get(name).params(**kw).num_tasks
    assert num("split_cifar10") == 5
    assert num("split_cifar100") == 10 and num("split_cifar100", num_tasks=20) == 20
    assert num("cifar100_superclass") == 20 and num("correlated_split_cifar100") == 10


# ---------------------------------------------------------------- class -> task
def test_split_cifar10_pairs_classes_and_relabels(root):
    b = build("split_cifar10", root, normalize=False)
    assert b.name == "split_cifar10" and b.input_shape == (3, 32, 32) and b.default_setting == "task_incremental"
    assert b.num_tasks == 5 and b.classes_per_task == (2,) * 5
    assert [t.classes for t in b.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert b.tasks[1].name == "cifar10 class2/class3"
    assert_images_match_labels(b)
    for t in b.tasks:
        assert set(t.y_train.tolist()) == set(t.y_val.tolist()) == set(t.y_test.tolist()) == {0, 1}
        # the default val_fraction 0.1 holds out 1 of the 10 training images of each class
        assert np.bincount(t.y_val).tolist() == [1, 1] and np.bincount(t.y_train).tolist() == [C10_TRAIN - 1] * 2
        assert len(t.y_test) == 2 * C10_TEST
        assert not serials(t.x_val) & serials(t.x_train)
        for x in (t.x_train, t.x_val, t.x_test):
            assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and x.flags.c_contiguous
    # every training image of the five batches is used exactly once (in training or in validation)
    assert sum(len(t.y_train) + len(t.y_val) for t in b.tasks) == 10 * C10_TRAIN
    assert set().union(*(serials(t.x_train) | serials(t.x_val) for t in b.tasks)) == set(range(10 * C10_TRAIN))


def test_class_order_seed_reassigns_classes_reproducibly(root):
    seeded = build("split_cifar10", root, class_order_seed=3)
    order = np.random.default_rng(3).permutation(10).tolist()
    assert [t.classes for t in seeded.tasks] == [tuple(order[2 * k:2 * k + 2]) for k in range(5)]
    assert [t.classes for t in build("split_cifar10", root, class_order_seed=3).tasks] == [t.classes for t in seeded.tasks]
    assert [t.classes for t in build("split_cifar10", root, class_order_seed=4).tasks] != [t.classes for t in seeded.tasks]
    assert_images_match_labels(build("split_cifar100", root, class_order_seed=3, normalize=False))


@pytest.mark.parametrize("num_tasks", [10, 20])
def test_split_cifar100_cuts_100_classes_in_order(root, num_tasks):
    b = build("split_cifar100", root, num_tasks=num_tasks, normalize=False)
    c = 100 // num_tasks
    assert b.num_tasks == num_tasks and b.classes_per_task == (c,) * num_tasks
    assert [t.classes for t in b.tasks] == [tuple(range(k * c, (k + 1) * c)) for k in range(num_tasks)]
    assert all(set(t.y_train.tolist()) == set(range(c)) for t in b.tasks)
    assert_images_match_labels(b)


def test_split_cifar100_num_tasks_must_be_10_or_20():
    with pytest.raises(ValidationError, match=r"num_tasks\n.*num_tasks=7 is not supported: use 10 .* or 20"):
        BENCHMARKS.get("split_cifar100").params(num_tasks=7)
    with pytest.raises(ValidationError, match="class_order"):  # extra keys are rejected by name
        BENCHMARKS.get("split_cifar10").params(class_order=1)


def test_superclass_tasks_are_the_coarse_classes(root):
    b = build("cifar100_superclass", root, normalize=False)
    assert b.num_tasks == 20 and b.classes_per_task == (5,) * 20
    assert b.tasks[0].classes == (0, 20, 40, 60, 80)  # 7f = 0 mod 20
    assert b.tasks[1].classes == (3, 23, 43, 63, 83)  # 7f = 1 mod 20  <=>  f = 3 mod 20
    assert [t.classes for t in b.tasks] == [tuple(fine_of(s)) for s in range(20)]
    assert_images_match_labels(b)


def test_correlated_split_blocks_of_related_tasks(root):
    b = build("correlated_split_cifar100", root, normalize=False)
    assert b.num_tasks == 10 and b.classes_per_task == (10,) * 10
    # block A = superclasses 0..9; task 0 = their smallest members, task 1 the next ones
    assert b.tasks[0].classes == (0, 3, 6, 9, 12, 15, 18, 1, 4, 7)
    assert b.tasks[1].classes == (20, 23, 26, 29, 32, 35, 38, 21, 24, 27)
    assert b.tasks[4].classes == (80, 83, 86, 89, 92, 95, 98, 81, 84, 87)
    # block B = superclasses 10..19
    assert b.tasks[5].classes == (10, 13, 16, 19, 2, 5, 8, 11, 14, 17)
    supers = lambda t: [COARSE_OF[c] for c in t.classes]
    assert all(supers(t) == list(range(10)) for t in b.tasks[:5])  # label i = the i-th superclass of the block
    assert all(supers(t) == list(range(10, 20)) for t in b.tasks[5:])
    assert sorted(c for t in b.tasks for c in t.classes) == list(range(100))
    assert_images_match_labels(b)


def test_superclass_seed_permutes_superclasses_before_the_blocks(root):
    b = build("correlated_split_cifar100", root, superclass_seed=11)
    supers = np.random.default_rng(11).permutation(20).tolist()
    for k in range(5):
        assert b.tasks[k].classes == tuple(fine_of(s)[k] for s in supers[:10])
        assert b.tasks[5 + k].classes == tuple(fine_of(s)[k] for s in supers[10:])
    again = build("correlated_split_cifar100", root, superclass_seed=11)
    assert [t.classes for t in again.tasks] == [t.classes for t in b.tasks]


# ---------------------------------------------------------------- splits, normalisation, caching
def test_val_and_train_fractions_are_stratified_and_disjoint(root):
    b = build("split_cifar10", root, val_fraction=0.2, train_fraction=0.5, split_seed=1, normalize=False)
    for t in b.tasks:
        assert np.bincount(t.y_val).tolist() == [2, 2]  # 20% of 10 per class
        assert np.bincount(t.y_train).tolist() == [4, 4]  # half of the 8 left
        assert not serials(t.x_val) & serials(t.x_train)
        assert len(t.y_test) == 2 * C10_TEST  # the test set is never cut
    same = build("split_cifar10", root, val_fraction=0.2, train_fraction=0.5, split_seed=1, normalize=False)
    other = build("split_cifar10", root, val_fraction=0.2, train_fraction=0.5, split_seed=2, normalize=False)
    assert serials(same.tasks[0].x_val) == serials(b.tasks[0].x_val)
    assert any(serials(o.x_train) != serials(t.x_train) for o, t in zip(other.tasks, b.tasks))
    default = build("split_cifar10", root).tasks[0]  # val_fraction 0.1 by default: 1 of 10 per class
    assert np.bincount(default.y_val).tolist() == [1, 1] and np.bincount(default.y_train).tolist() == [9, 9]
    assert build("split_cifar10", root, val_fraction=0.0).tasks[0].x_val.shape == (0, 3, 32, 32)  # 0: none


@pytest.mark.parametrize("name, dataset", [("split_cifar10", "cifar10"), ("split_cifar100", "cifar100"),
                                           ("cifar100_superclass", "cifar100")])
def test_normalisation_uses_the_published_constants(root, name, dataset):
    mean = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.507, 0.487, 0.441)}[dataset]
    std = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.267, 0.256, 0.276)}[dataset]
    t = build(name, root).tasks[1]
    label = t.classes[t.y_test[0]]
    img = t.on("cpu", "test").x[0].numpy()  # what the network sees
    for c in range(3):  # the image is the constant `label` (but for two serial pixels in the corner)
        assert img[c, :16, :16].mean() == pytest.approx((label / 255 - mean[c]) / std[c], abs=1e-5)
    assert img.dtype == np.float32
    assert t.x_train.dtype == np.uint8 and t.x_train.flags.c_contiguous
    assert t.normalization == (mean, std)


def test_files_are_decoded_once_per_process(root):
    cifar.cifar_arrays.cache_clear()
    build("split_cifar100", root)
    build("cifar100_superclass", root)
    build("correlated_split_cifar100", root, superclass_seed=1)
    info = cifar.cifar_arrays.cache_info()
    assert info.misses == 1 and info.hits == 2


def test_without_a_context_the_data_root_comes_from_the_environment(root, monkeypatch):
    monkeypatch.setenv("CLORCH_DATA_ROOT", str(root))
    entry = BENCHMARKS.get("split_cifar10")
    b = entry.target(entry.params(download=False, verify_checksums=False, trust_unverified_pickles=True))
    assert b.num_tasks == 5


# ---------------------------------------------------------------- errors a user sees
C10_FILES = ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_5", "cifar-10-batches-py/test_batch",
             "cifar-10-batches-py/batches.meta"]
C100_FILES = ["cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"]


@pytest.mark.parametrize("name, files, archive", [
    ("split_cifar10", C10_FILES, "cifar-10-python.tar.gz"),
    ("cifar100_superclass", C100_FILES, "cifar-100-python.tar.gz"),
])
def test_missing_files_without_download_name_the_paths_and_the_fix(tmp_path, name, files, archive):
    with pytest.raises(MissingData) as err:
        build(name, tmp_path)
    msg = str(err.value)
    for rel in files:
        assert str(tmp_path / rel) in msg
    assert "download: false" in msg and "set download: true" in msg
    assert archive in msg and "https://www.cs.toronto.edu/~kriz/" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no torchvision traceback attached


def test_a_partly_present_dataset_names_what_is_missing(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(MissingData, match=r"missing: cifar-10-batches-py/data_batch_3\."):
        build("split_cifar10", tmp_path)


@pytest.mark.parametrize("verify_checksums", [True, False])
def test_checksums_reject_the_tiny_files_with_a_clear_message(root, verify_checksums):
    """The md5 is checked before unpickling whatever verify_checksums says: only the opt-in reads other files."""
    cifar.cifar_arrays.cache_clear()
    with pytest.raises(MissingData) as err:
        build("split_cifar10", root, verify_checksums=verify_checksums, trust_unverified_pickles=False)
    msg = str(err.value)
    assert "md5 differs from the published one" in msg and "cifar-10-batches-py/data_batch_1" in msg
    assert "trust_unverified_pickles: true" in msg and "dangerous" in msg and "download failed" not in msg
    with pytest.raises(MissingData, match="cifar-100-python/train"):
        build("split_cifar100", root, verify_checksums=verify_checksums, trust_unverified_pickles=False)


def test_a_failed_download_is_missing_data_not_a_network_traceback(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(MissingData, match=r"the download failed \(URLError: .*name resolution"):
        build("split_cifar100", tmp_path, download=True)


def test_unreadable_files_are_reported_as_such(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(MissingData, match="could not be read as CIFAR pickles"):
        build("split_cifar10", tmp_path)


# ---------------------------------------------------------------- through the orchestrator (no Ray)
def test_study_validates_and_a_finetune_trial_completes(root):
    import methods
    from orchestrator.study.schema import TrialSpec
    from orchestrator.study.loading import parse_study
    from orchestrator.results.records import matrix_array
    from orchestrator.run.trial import run_trial

    params = {"download": False, "verify_checksums": False, "trust_unverified_pickles": True}
    study = parse_study({
        "name": "cifar", "data_root": str(root),
        "benchmark": {"name": "split_cifar10", "params": params},
        "orders": {"kind": "random", "count": 2},
        "methods": [{"name": "finetune", "params": {"backbone": "small_cnn", "epochs": 1}}],
    })
    orders = study.task_orders()
    assert len(orders) == 2 and all(sorted(o) == list(range(5)) for o in orders)

    bench = datasets.load_benchmark("split_cifar10", study.benchmark_params(), LoadContext.resolve(study.data_root))
    p = methods.METHODS.get("finetune").params(backbone="small_cnn", epochs=1, channels=[4, 8]).model_dump()
    rec = run_trial(TrialSpec("t0", "c0", "finetune", "finetune", p, orders[0], 0, 0, "task_incremental", False), bench)
    assert rec["status"] == "completed" and rec["tasks_done"] == 5
    A = matrix_array(rec)
    assert A.shape == (5, 5) and not np.isnan(A[-1]).any()
