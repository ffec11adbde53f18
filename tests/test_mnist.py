"""The MNIST family: real MNIST from ../shared/data, and tiny real-format idx files for the others."""
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from pydantic import ValidationError

import datasets
from datasets import LoadContext, MissingData, load_benchmark
from datasets.common import DATA_ROOT_ENV

needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(),
                                 reason=f"MNIST not found under {SHARED_DATA} (a torchvision root with MNIST/raw/*.gz)")


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A torchvision root linking the shared MNIST archives (unpacking writes here, not into ../shared)."""
    root = tmp_path_factory.mktemp("mnist_root")
    (root / "MNIST" / "raw").mkdir(parents=True)
    for f in (SHARED_DATA / "MNIST" / "raw").glob("*.gz"):
        os.symlink(f, root / "MNIST" / "raw" / f.name)
    return LoadContext(root)


MNIST_TRAIN_PER_CLASS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@needs_mnist
def test_permuted_mnist_standard_protocol(mnist_root):
    b = load_benchmark("permuted_mnist", {"num_tasks": 3, "normalize": False}, mnist_root)
    assert b.input_shape == (784,) and b.num_tasks == 3 and b.default_setting == "domain_incremental"
    t0, t1 = b.tasks[0], b.tasks[1]
    # the default val_fraction 0.1 holds out 10% of each class: train + val are the 60,000 training images
    assert t0.x_train.shape == (60000 - 5999, 784) and t0.x_val.shape == (5999, 784)
    assert np.bincount(t0.y_val).tolist() == [round(0.1 * n) for n in MNIST_TRAIN_PER_CLASS]
    assert (np.bincount(t0.y_train) + np.bincount(t0.y_val)).tolist() == MNIST_TRAIN_PER_CLASS
    assert t0.x_train.dtype == np.uint8 and len(t0.y_test) == 10000
    assert not {r.tobytes() for r in t0.x_val} & {r.tobytes() for r in t0.x_train}
    assert not np.array_equal(t0.x_train, t1.x_train)
    assert np.array_equal(np.sort(t0.x_train[:50], axis=1), np.sort(t1.x_train[:50], axis=1))  # a permutation
    assert np.array_equal(np.sort(t0.x_val[:50], axis=1), np.sort(t1.x_val[:50], axis=1))  # the same images held out
    plain = load_benchmark("split_mnist", {"normalize": False, "class_order_seed": None}, mnist_root)
    zero_one = plain.tasks[0]
    # task 0 is the unpermuted images: the 0/1 images of split_mnist appear unchanged in it
    assert any(np.array_equal(zero_one.x_train[0].reshape(-1), row) for row in t0.x_train[t0.y_train == 0][:2000])
    again = load_benchmark("permuted_mnist", {"num_tasks": 3, "normalize": False, "permutation_seed": 1}, mnist_root)
    assert not np.array_equal(again.tasks[1].x_train[:5], t1.x_train[:5])


@needs_mnist
def test_permuted_mnist_halrp_protocol_padded_input(mnist_root):
    b = load_benchmark("permuted_mnist", {"num_tasks": 2, "protocol": "halrp", "pmnist_input": "pad",
                                          "normalize": False}, mnist_root)
    assert b.input_shape == (3, 32, 32) and b.default_setting == "task_incremental"
    x = b.tasks[0].x_train[:20]
    assert x.shape == (20, 3, 32, 32)
    assert np.array_equal(x[:, 0], x[:, 1]) and np.array_equal(x[:, 0], x[:, 2])  # three copies
    # every task is permuted, task 0 included: the padding border is not where it was
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert x[:, 0][:, border].any()
    # 28x28 content padded to 32x32: 1024 positions, 784 of them carry the image
    assert (x[:, 0].reshape(20, -1) > 0).sum(axis=1).max() <= 784


def test_the_official_pmnist_input_is_resized_normalised_and_all_3072_values_permuted(tmp_path):
    """The HALRP code's loader_pmnist.py on a small case: Resize(32) -> ToTensor -> 3 channels ->
    Normalize(0.1307, 0.3081) -> one permutation of the 3072 values per task, task 0 included."""
    from PIL import Image
    from torchvision import transforms

    folder = tmp_path / "MNIST" / "raw"
    _write_idx(folder, n_train=30, n_test=20)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)  # a real-format test file with varied pixels
    (folder / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, 20, 28, 28) + images.tobytes())
    params = {"num_tasks": 2, "protocol": "halrp", "download": False, "permutation_seed": 3}
    b = load_benchmark("permuted_mnist", params, LoadContext(tmp_path))
    assert b.input_shape == (3, 32, 32) and b.default_setting == "task_incremental"
    official = transforms.Compose([transforms.Resize(32), transforms.ToTensor(),
                                   transforms.Lambda(lambda x: torch.cat([x, x, x], 0)),
                                   transforms.Normalize((0.1307,), (0.3081,))])
    want = torch.stack([official(Image.fromarray(im)).reshape(-1) for im in images])  # (20, 3072)
    perms = np.random.default_rng(3)
    for task in b.tasks:
        perm = torch.from_numpy(perms.permutation(3072))
        x = task.on("cpu", "test").x  # the test split keeps the file's order
        assert x.shape == (20, 3, 32, 32)
        assert torch.allclose(x.reshape(20, -1), want[:, perm], atol=1e-6)
        assert not torch.equal(x[:, 0], x[:, 1])  # one permutation across the channels, not one copied 3 times
    assert not torch.equal(b.tasks[0].on("cpu", "test").x, b.tasks[1].on("cpu", "test").x)
    assert b.tasks[0].normalization == ((0.1307,) * 3, (0.3081,) * 3)  # the code's constants, not our statistics
    raw = load_benchmark("permuted_mnist", {**params, "normalize": False}, LoadContext(tmp_path)).tasks[0]
    assert raw.normalization is None and raw.x_test.dtype == np.uint8  # stored as uint8, scaled on the device


def test_eval_splits_can_be_capped_with_the_same_images_in_every_task(tmp_path):
    _write_idx(tmp_path / "MNIST" / "raw", n_train=200, n_test=100)
    params = {"num_tasks": 2, "protocol": "halrp", "download": False, "normalize": False, "val_fraction": 0.5,
              "max_val_per_task": 40, "max_test_per_task": 30}
    b = load_benchmark("permuted_mnist", params, LoadContext(tmp_path))
    t0, t1 = b.tasks
    assert len(t0.y_val) == 40 and len(t0.y_test) == 30 and len(t0.y_train) == 100  # training untouched
    assert np.bincount(t0.y_test).tolist() == [3] * 10  # stratified
    assert np.array_equal(t0.y_val, t1.y_val) and np.array_equal(t0.y_test, t1.y_test)
    assert np.array_equal(np.sort(t0.x_test.reshape(30, -1), 1), np.sort(t1.x_test.reshape(30, -1), 1))
    full = load_benchmark("permuted_mnist", {**params, "max_val_per_task": None, "max_test_per_task": 500},
                          LoadContext(tmp_path))
    assert len(full.tasks[0].y_val) == 100 and len(full.tasks[0].y_test) == 100


def test_pmnist_input_belongs_to_the_halrp_protocol():
    P = datasets.BENCHMARKS.get("permuted_mnist").params
    assert P(protocol="halrp").pmnist_input == "official" and P().pmnist_input is None
    assert P(protocol="halrp", pmnist_input="pad").pmnist_input == "pad"
    with pytest.raises(ValidationError, match="pmnist_input 'pad' is for protocol: halrp"):
        P(pmnist_input="pad")
    with pytest.raises(ValidationError, match="pmnist_input"):
        P(protocol="halrp", pmnist_input="resize")


@needs_mnist
def test_split_mnist_classes_labels_fractions(mnist_root):
    b = load_benchmark("split_mnist", {"val_fraction": 0.2, "train_fraction": 0.5}, mnist_root)
    assert [t.classes for t in b.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    t = b.tasks[0]
    assert set(np.unique(t.y_train)) == {0, 1} and set(np.unique(t.y_val)) == {0, 1}
    full = 5923 + 6742  # MNIST training images of digits 0 and 1
    assert len(t.y_val) == pytest.approx(0.2 * full, abs=2)
    assert len(t.y_train) == pytest.approx(0.5 * 0.8 * full, abs=3)
    assert len(t.y_test) == 980 + 1135
    shuffled = load_benchmark("split_mnist", {"class_order_seed": 3}, mnist_root)
    assert [t.classes for t in shuffled.tasks] != [t.classes for t in b.tasks]
    assert sorted(c for t in shuffled.tasks for c in t.classes) == list(range(10))


@needs_mnist
def test_inputs_are_standardised_on_the_device(mnist_root):
    b = load_benchmark("split_mnist", {}, mnist_root)
    x = torch.cat([t.on("cpu", "train").x for t in b.tasks])
    assert x.dtype == torch.float32
    assert x.mean().item() == pytest.approx(0.0, abs=1e-3) and x.std().item() == pytest.approx(1.0, abs=1e-3)
    raw = load_benchmark("split_mnist", {"normalize": False}, mnist_root).tasks[0].on("cpu", "test").x
    assert raw.min().item() == 0.0 and raw.max().item() == 1.0


@needs_mnist
def test_rotated_mnist_angles(mnist_root):
    b = load_benchmark("rotated_mnist", {"num_tasks": 2, "angles": [0.0, 90.0], "normalize": False}, mnist_root)
    upright, turned = b.tasks[0].x_train[:10, 0], b.tasks[1].x_train[:10, 0]
    assert np.abs(turned.astype(int) - np.rot90(upright, k=1, axes=(1, 2)).astype(int)).max() <= 1
    # every angle holds out the same images for validation (val_fraction 0.1 by default)
    upright, turned = b.tasks[0].x_val[:10, 0], b.tasks[1].x_val[:10, 0]
    assert len(b.tasks[0].y_val) == 5999 and np.array_equal(b.tasks[0].y_val, b.tasks[1].y_val)
    assert np.abs(turned.astype(int) - np.rot90(upright, k=1, axes=(1, 2)).astype(int)).max() <= 1
    with pytest.raises(ValidationError, match="angles has 1 entries but num_tasks is 2"):
        datasets.BENCHMARKS.get("rotated_mnist").params(num_tasks=2, angles=[10.0])


@needs_mnist
def test_random_label_mnist_same_images_fresh_labels_tested_on_itself(mnist_root):
    b = load_benchmark("random_label_mnist", {"num_tasks": 3, "num_images": 500}, mnist_root)
    t0, t1 = b.tasks[:2]
    assert t0.x_train is t1.x_train and t0.x_test is t0.x_train  # one array, stored once
    assert t0.x_train.shape == (500, 784)
    assert not np.array_equal(t0.y_train, t1.y_train)
    assert np.array_equal(t0.y_test, t0.y_train)
    agree = (t0.y_train == t1.y_train).mean()
    assert 0.02 < agree < 0.25  # independent uniform labels agree ~10% of the time


@needs_mnist
def test_load_benchmark_caches_per_process(mnist_root):
    a = load_benchmark("split_mnist", {}, mnist_root)
    assert load_benchmark("split_mnist", {}, mnist_root) is a
    assert load_benchmark("split_mnist", {"split_seed": 1}, mnist_root) is not a


def _write_idx(folder: Path, n_train: int = 30, n_test: int = 10):
    """Extracted idx files, the real format: big-endian magic, dims, uint8 payload."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[np.arange(n), labels, labels] = 255  # the label encoded in the pixel pattern
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


@pytest.mark.parametrize("dataset, folder", [("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_fashion_and_kmnist_use_the_same_loaders(tmp_path, dataset, folder):
    _write_idx(tmp_path / folder / "raw")
    ctx = LoadContext(tmp_path)
    b = load_benchmark("split_mnist", {"dataset": dataset, "download": False, "normalize": False}, ctx)
    t = b.tasks[2]  # classes 4 and 5
    # 3 training images a class: the default val_fraction 0.1 holds out 1 (at least 1), 2 are trained on
    assert t.classes == (4, 5) and len(t.y_train) == 4 and len(t.y_val) == 2 and len(t.y_test) == 2
    for x, y in zip((*t.x_train, *t.x_val), (*t.y_train, *t.y_val)):
        label = 4 + y
        assert x[0, label, label] == 255
    p = load_benchmark("permuted_mnist", {"dataset": dataset, "download": False, "num_tasks": 2}, ctx)
    assert p.tasks[1].x_train.shape == (20, 784) and p.tasks[1].x_val.shape == (10, 784)


def test_missing_files_name_the_paths_and_the_fix(tmp_path):
    with pytest.raises(MissingData) as e:
        load_benchmark("split_mnist", {"dataset": "kmnist", "download": False}, LoadContext(tmp_path))
    msg = str(e.value)
    assert f"{tmp_path}/KMNIST/raw/train-images-idx3-ubyte" in msg and "download: true" in msg
    assert "data_root" in msg and DATA_ROOT_ENV in msg


def test_data_root_comes_from_study_then_flag_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "env"))
    assert LoadContext.resolve("/s", "/c").root == Path("/s")
    assert LoadContext.resolve(None, "/c").root == Path("/c")
    assert LoadContext.resolve(None, None).root == tmp_path / "env"
    monkeypatch.delenv(DATA_ROOT_ENV)
    monkeypatch.chdir(tmp_path)
    assert LoadContext.resolve().root == tmp_path / "data"


def test_cli_run_with_a_missing_dataset_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import yaml

    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "name": "needs_kmnist", "benchmark": {"name": "split_mnist", "params": {"dataset": "kmnist", "download": False}},
        "orders": {"kind": "random", "count": 2}, "methods": [{"name": "finetune"}]}))
    assert main(["run", "s.yaml", "--data-root", str(tmp_path / "nodata")]) == 2
    err = capsys.readouterr().err
    assert "kmnist is not available under" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodata", "s.yaml"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


@needs_mnist
def test_mixed_similarity_mnist_stretches_of_rotations_under_permutations(mnist_root):
    params = {"angles": [0.0, 10.0], "stretches": 3, "train_fraction": 0.01, "val_fraction": 0.01,
              "test_images": 500, "normalize": False}
    b = load_benchmark("mixed_similarity_mnist", params, mnist_root)
    assert b.num_tasks == 6 and b.input_shape == (1, 28, 28) and b.default_setting == "task_incremental"
    assert [t.name for t in b.tasks] == ["mnist rot 0", "mnist rot 10", "mnist P1 + rot 0", "mnist P1 + rot 10",
                                         "mnist P2 + rot 0", "mnist P2 + rot 10"]
    t = b.tasks
    assert t[0].x_train.shape[1:] == (1, 28, 28) and 580 <= len(t[0].x_train) <= 600  # 1% of 59,400
    assert t[0].x_test.shape == (500, 1, 28, 28) and np.bincount(t[0].y_test).min() >= 40  # stratified
    for k in range(1, 6):  # every task: the same images (labels), transformed
        for split in ("train", "val", "test"):
            assert np.array_equal(getattr(t[k], f"y_{split}"), getattr(t[0], f"y_{split}"))
    # task 0 is the untouched images: they are in rotated_mnist's upright task, which draws the same split
    upright = load_benchmark("rotated_mnist", {"num_tasks": 1, "angles": [0.0], "train_fraction": 0.01,
                                               "val_fraction": 0.01, "normalize": False}, mnist_root).tasks[0]
    assert np.array_equal(upright.x_train, t[0].x_train) and np.array_equal(upright.x_val, t[0].x_val)
    # rot 10 is the upright images turned by 10 degrees (rotated_mnist's rotation)
    from datasets.mnist import _rotate

    assert np.array_equal(_rotate(t[0].x_train, 10.0), t[1].x_train)
    assert np.array_equal(_rotate(t[0].x_test, 10.0), t[1].x_test)
    # task 2 is a pixel permutation of task 0's images: the same pixels, scrambled; the same permutation
    # maps task 1 (rot 10) to task 3 (P1 + rot 10); task 4 uses another permutation
    flat = lambda task, s="train": getattr(task, f"x_{s}").reshape(len(getattr(task, f"x_{s}")), -1)
    assert np.array_equal(np.sort(flat(t[0]), axis=1), np.sort(flat(t[2]), axis=1))
    assert not np.array_equal(flat(t[0]), flat(t[2]))
    rng = np.random.default_rng(0)  # permutation_seed 0: P1, P2 are its first two draws
    p1, p2 = rng.permutation(784), rng.permutation(784)
    for s in ("train", "val", "test"):
        assert np.array_equal(flat(t[0], s)[:, p1], flat(t[2], s))
        assert np.array_equal(flat(t[1], s)[:, p1], flat(t[3], s))
        assert np.array_equal(flat(t[0], s)[:, p2], flat(t[4], s))
    with pytest.raises(ValidationError, match="stretches"):
        datasets.BENCHMARKS.get("mixed_similarity_mnist").params(stretches=0)
