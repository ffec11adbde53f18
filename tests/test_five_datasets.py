"""5-Datasets and its own sources (SVHN, notMNIST), from tiny files in each source's real format.

CIFAR-10 pickles, MNIST / Fashion-MNIST idx files, SVHN .mat files and
notMNIST PNGs are written under tmp_path. Every image is the constant
20 * class + 10 + source id (MNIST-like sources: inside the 28x28 square),
and every source has its own number of images per class, so a test can tell
which source a task came from and which class an image is.
"""
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from datasets import BENCHMARKS, LoadContext, MissingData
from datasets import notmnist, svhn
from datasets.common import uint8_normalization

# images per class (train, test); notMNIST has no split on disk: 10 files a letter -> 8 / 2
PER_CLASS = {"CIFAR-10": (3, 2), "MNIST": (4, 1), "SVHN": (5, 2), "Fashion-MNIST": (6, 1), "notMNIST": (8, 2)}
NOTMNIST_FILES = 10


SOURCE_ID = {name: i for i, name in enumerate(PER_CLASS)}


def value(c, source):
    """The pixel value of class c in a source: the class, and the source in the units digit."""
    return 20 * np.asarray(c) + 10 + SOURCE_ID[source]


def _labels(n_per_class: int) -> np.ndarray:
    return np.tile(np.arange(10), n_per_class)  # interleaved classes, as in the real files


def write_cifar10(root: Path):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    n_train, n_test = PER_CLASS["CIFAR-10"]

    def batch(labels):
        data = np.repeat(value(labels, "CIFAR-10")[:, None], 3072, axis=1).astype(np.uint8)  # rows of R, G, B planes
        return {"data": data, "labels": labels.tolist()}

    train = _labels(n_train)
    for i, part in enumerate(np.array_split(train, 5), start=1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(part), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(_labels(n_test)), protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))


def write_idx(folder: Path, source: str):
    """Extracted idx files (big-endian magic 2051/2049, dims, uint8 payload), as torchvision reads them."""
    folder.mkdir(parents=True)
    for prefix, n in zip(("train", "t10k"), PER_CLASS[source]):
        labels = _labels(n).astype(np.uint8)
        images = np.repeat(value(labels, source)[:, None, None], 28, axis=1).repeat(28, axis=2).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(labels), 28, 28)
                                                              + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def write_svhn(root: Path):
    """train/test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 standing for the digit 0."""
    folder = root / "SVHN"
    folder.mkdir(parents=True)
    for name, n in zip(("train_32x32.mat", "test_32x32.mat"), PER_CLASS["SVHN"]):
        digits = _labels(n)
        x = np.broadcast_to(value(digits, "SVHN"), (32, 32, 3, len(digits))).astype(np.uint8)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        scipy.io.savemat(folder / name, {"X": x, "y": y})


def write_notmnist(root: Path):
    """notMNIST_small/A..J/*.png (28x28 greyscale) plus one unreadable file, as in the real archive."""
    for c, letter in enumerate("ABCDEFGHIJ"):
        folder = root / "notMNIST_small" / letter
        folder.mkdir(parents=True)
        for j in range(NOTMNIST_FILES):
            Image.new("L", (28, 28), int(value(c, "notMNIST"))).save(folder / f"font{j}.png")
    (root / "notMNIST_small" / "A" / "RGVtb2NyYXRpY2FCb2xkT2xkc3R5bGUgQm9sZC50dGY=.png").write_bytes(b"")


def write_all(root: Path, skip=()) -> Path:
    writers = {"CIFAR-10": write_cifar10, "MNIST": lambda r: write_idx(r / "MNIST" / "raw", "MNIST"),
               "SVHN": write_svhn, "Fashion-MNIST": lambda r: write_idx(r / "FashionMNIST" / "raw", "Fashion-MNIST"),
               "notMNIST": write_notmnist}
    for name, write in writers.items():
        if name not in skip:
            write(root)
    return root


def build(root, **params):
    entry = BENCHMARKS.get("five_datasets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notMNIST's skipped-file warning; tested on its own
        return entry.target(entry.params(**{"download": False, "verify_checksums": False, "trust_unverified_pickles": True, **params}),
                            LoadContext(Path(root)))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("five"))


def test_five_tasks_in_identity_order_ten_classes_each(root):
    b = build(root)
    assert b.name == "five_datasets" and b.num_tasks == 5 and b.classes_per_task == (10,) * 5
    assert b.input_shape == (3, 32, 32) and b.default_setting == "task_incremental"
    assert [t.name for t in b.tasks] == list(PER_CLASS)
    assert BENCHMARKS.get("five_datasets").params().num_tasks == 5
    for t, (n_train, n_test) in zip(b.tasks, PER_CLASS.values()):
        n_val = max(1, round(0.1 * n_train))  # the default val_fraction 0.1, at least 1 per class (here: 1)
        assert t.x_train.shape == (10 * (n_train - n_val), 3, 32, 32) and t.x_test.shape == (10 * n_test, 3, 32, 32)
        assert t.x_val.shape == (10 * n_val, 3, 32, 32)
        assert t.x_train.dtype == np.uint8 and t.x_train.flags.c_contiguous
        assert t.classes == tuple(range(10))
        assert np.bincount(t.y_train).tolist() == [n_train - n_val] * 10 and np.bincount(t.y_test).tolist() == [n_test] * 10
        assert np.bincount(t.y_val).tolist() == [n_val] * 10
        # the class is in the pixels (the image centre: MNIST-like images are padded)
        assert np.array_equal(t.x_train[:, 0, 16, 16], value(t.y_train, t.name))
        assert np.array_equal(t.x_val[:, 2, 16, 16], value(t.y_val, t.name))
        assert np.array_equal(t.x_test[:, 1, 16, 16], value(t.y_test, t.name))


def test_svhn_label_ten_is_the_digit_zero(root):
    svhn_task = build(root).tasks[2]
    zeros = np.concatenate([svhn_task.x_train[svhn_task.y_train == 0], svhn_task.x_val[svhn_task.y_val == 0]])
    assert len(zeros) == PER_CLASS["SVHN"][0] and (zeros == value(0, "SVHN")).all()
    x_tr, y_tr, _, _ = svhn.svhn_arrays(root, download=False, verify_checksums=False)
    assert x_tr.shape == (50, 3, 32, 32) and set(y_tr.tolist()) == set(range(10))


@pytest.mark.parametrize("k", [1, 3, 4])  # MNIST, Fashion-MNIST, notMNIST
def test_greyscale_sources_are_padded_and_replicated_to_rgb(root, k):
    x = build(root).tasks[k].x_train
    assert (x[:, :, :2] == 0).all() and (x[:, :, 30:] == 0).all()
    assert (x[:, :, :, :2] == 0).all() and (x[:, :, :, 30:] == 0).all()
    inner = x[:, :, 2:30, 2:30]
    assert (inner == inner[:, :, :1, :1]).all()  # the 28x28 image, untouched
    assert np.array_equal(x[:, 0], x[:, 1]) and np.array_equal(x[:, 1], x[:, 2])


def test_each_dataset_is_normalised_with_its_own_statistics(root):
    b = build(root)
    for t in b.tasks:
        mean, std = t.normalization
        ref_mean, ref_std = uint8_normalization(t.x_train)  # the task's training set is its dataset's
        assert np.allclose(mean, ref_mean) and np.allclose(std, ref_std)
    assert len({t.normalization for t in b.tasks}) == 5
    x = b.tasks[2].on("cpu", "train").x.numpy()
    assert np.allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5) and np.allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert all(t.normalization is None for t in build(root, normalize=False).tasks)


def test_validation_and_training_fractions_apply_to_every_task(root):
    b = build(root, val_fraction=0.25, train_fraction=0.5, split_seed=3)
    for t, (n_train, n_test) in zip(b.tasks, PER_CLASS.values()):
        n_val = max(1, round(0.25 * n_train))
        assert np.bincount(t.y_val).tolist() == [n_val] * 10
        assert np.bincount(t.y_train).tolist() == [max(1, round(0.5 * (n_train - n_val)))] * 10
        assert len(t.y_test) == 10 * n_test


def test_notmnist_skips_unreadable_files_with_a_count_and_splits_80_20_fixed(tmp_path):
    write_notmnist(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 unreadable file"):
        x_tr, y_tr, x_te, y_te = notmnist.notmnist_arrays(tmp_path, download=False)
    assert x_tr.shape == (80, 28, 28) and x_te.shape == (20, 28, 28) and x_tr.dtype == np.uint8
    assert np.bincount(y_tr).tolist() == [8] * 10 and np.bincount(y_te).tolist() == [2] * 10
    assert np.array_equal(x_tr[:, 5, 5], value(y_tr, "notMNIST"))


def test_notmnist_test_set_does_not_depend_on_split_seed(root):
    """The 80/20 split is a constant of the dataset; split_seed only draws validation/subsamples."""
    one, two = build(root, split_seed=0), build(root, split_seed=9, val_fraction=0.25)
    assert np.array_equal(one.tasks[4].x_test, two.tasks[4].x_test)
    assert np.array_equal(one.tasks[4].y_test, two.tasks[4].y_test)


def test_all_missing_sources_are_named_in_one_error(tmp_path):
    with pytest.raises(MissingData) as err:
        build(tmp_path)
    msg = str(err.value)
    for rel in ["cifar-10-batches-py/data_batch_1", "MNIST/raw/train-images-idx3-ubyte",
                "SVHN/train_32x32.mat", "SVHN/test_32x32.mat", "FashionMNIST/raw/t10k-labels-idx1-ubyte",
                "notMNIST_small/A"]:
        assert str(tmp_path / rel) in msg
    for source in PER_CLASS:
        assert f"{source}: " in msg
    assert "download: true" in msg and "notMNIST_small.tar.gz" in msg and "ufldl.stanford.edu" in msg


def test_one_missing_source_names_only_its_files(tmp_path):
    write_all(tmp_path, skip=("SVHN",))
    with pytest.raises(MissingData) as err:
        build(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "SVHN" / "train_32x32.mat") in msg and "MNIST/raw" not in msg


def test_svhn_files_that_fail_the_md5_check_say_so(tmp_path):
    write_svhn(tmp_path)
    with pytest.raises(MissingData, match="(?s)md5.*verify_checksums: false"):
        svhn.svhn_arrays(tmp_path, download=False, verify_checksums=True)


def test_uint8_channel_stats_match_the_common_helper():
    x = np.random.default_rng(0).integers(0, 256, (37, 3, 5, 6), dtype=np.uint8)
    mean, std = uint8_normalization(x, chunk=7)
    ref_mean, ref_std = uint8_normalization(x)
    assert np.allclose(mean, ref_mean, atol=1e-9) and np.allclose(std, ref_std, atol=1e-9)
