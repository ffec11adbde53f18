"""Split CUB-200, Corrupted Split CUB-200 and Split TinyImageNet, from tiny files in the real layout.

Offline and fast: every test writes a few small JPEGs plus the real index
files under tmp_path. An image's red channel encodes its class (a constant
red of SPACING * class + 5), so a test can read off where each image went;
green is a checkerboard plus a gradient and blue a gradient, so every
corruption has something to change.
"""
import shutil
import tarfile
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

import methods
from datasets import BENCHMARKS, LoadContext, MissingData
from datasets import cub, images, tinyimagenet
from datasets.common import class_order, uint8_normalization
from orchestrator.study.schema import TrialSpec
from orchestrator.run.trial import run_trial

CUB_CLASSES, CUB_TRAIN, CUB_TEST, CUB_SPACING = 20, 4, 2, 12
TINY_CLASSES, TINY_TRAIN, TINY_VAL, TINY_SPACING = 40, 3, 1, 6


# ---------------------------------------------------------------- writing real-format files
def _pattern(red: int, height: int, width: int) -> Image.Image:
    rows, cols = np.mgrid[0:height, 0:width]
    checker = 60 * ((rows // 2 + cols // 2) % 2)  # texture, so blur and pixelate show
    rgb = np.stack([np.full((height, width), red), 40 + checker + rows * 100 // height, 30 + cols * 180 // width],
                   axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _save_jpeg(img: Image.Image, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=95, subsampling=0)


def write_cub(root: Path, classes: int = CUB_CLASSES) -> Path:
    """CUB_200_2011/ with its four index files and images/<NNN.Name>/<file>.jpg (20x24 px, not square)."""
    base = root / "CUB_200_2011"
    images, labels, split, names = [], [], [], []
    image_id = 0
    for c in range(1, classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        names.append(f"{c} {folder}")
        for j in range(CUB_TRAIN + CUB_TEST):
            image_id += 1
            rel = f"{folder}/Bird_{c}_{j:04d}.jpg"
            _save_jpeg(_pattern(CUB_SPACING * (c - 1) + 5, 20, 24), base / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(j < CUB_TRAIN)}")
    for name, lines in [("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("classes.txt", names)]:
        (base / name).write_text("\n".join(lines) + "\n")
    return root


def write_tiny(root: Path, classes: int = TINY_CLASSES) -> Path:
    """tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
    base = root / "tiny-imagenet-200"
    wnids = [f"n{1000 + c:08d}" for c in range(classes)]
    annotations = []
    for c, w in enumerate(wnids):
        red = TINY_SPACING * c + 5
        for j in range(TINY_TRAIN):
            img = _pattern(red, 64, 64)
            if c == 3 and j == 0:  # the real set has a few greyscale JPEGs
                img = Image.new("L", (64, 64), red)
            _save_jpeg(img, base / "train" / w / "images" / f"{w}_{j}.JPEG")
        for j in range(TINY_VAL):
            name = f"val_{c * TINY_VAL + j}.JPEG"
            _save_jpeg(_pattern(red, 64, 64), base / "val" / "images" / name)
            annotations.append(f"{name}\t{w}\t0\t0\t63\t63")
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # file order, not sorted order, defines ids
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


def red_class(x: np.ndarray, spacing: int) -> np.ndarray:
    """The class each uint8 (N, 3, H, W) image encodes in its red channel."""
    return np.rint((x[:, 0].mean(axis=(1, 2)) - 5) / spacing).astype(int)


def build(name, root, **params):
    entry = BENCHMARKS.get(name)
    return entry.target(entry.params(**{"download": False, **params}), LoadContext(Path(root)))


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    return write_cub(tmp_path_factory.mktemp("cub"))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"))


# ---------------------------------------------------------------- split CUB-200
def test_split_cub200_cuts_classes_into_equal_tasks_with_local_labels(cub_root):
    b = build("split_cub200", cub_root, num_tasks=10, image_size=16)
    assert b.name == "split_cub200" and b.num_tasks == 10 and b.classes_per_task == (2,) * 10
    assert b.input_shape == (3, 16, 16) and b.default_setting == "task_incremental"
    assert [t.classes for t in b.tasks] == [(2 * k, 2 * k + 1) for k in range(10)]  # classes.txt order
    for t in b.tasks:
        # the default val_fraction 0.1 holds out 1 of the 4 training images of each class (at least 1)
        assert t.x_train.shape == (2 * (CUB_TRAIN - 1), 3, 16, 16) and t.x_test.shape == (2 * CUB_TEST, 3, 16, 16)
        assert t.x_val.shape == (2, 3, 16, 16) and np.bincount(t.y_val).tolist() == [1, 1]
        assert t.x_train.dtype == np.uint8 and t.x_train.flags.c_contiguous
        assert set(t.y_train.tolist()) == set(t.y_test.tolist()) == {0, 1}
        # every image is one of the task's classes, under its local label
        assert np.array_equal(red_class(t.x_train, CUB_SPACING), np.array(t.classes)[t.y_train])
        assert np.array_equal(red_class(t.x_val, CUB_SPACING), np.array(t.classes)[t.y_val])
        assert np.array_equal(red_class(t.x_test, CUB_SPACING), np.array(t.classes)[t.y_test])


def test_split_cub200_class_order_seed_and_twenty_tasks(cub_root):
    b = build("split_cub200", cub_root, num_tasks=10, image_size=16, class_order_seed=3)
    order = class_order(CUB_CLASSES, 3)
    assert [list(t.classes) for t in b.tasks] == [order[2 * k:2 * k + 2] for k in range(10)]
    t = b.tasks[4]
    assert np.array_equal(red_class(t.x_train, CUB_SPACING), np.array(t.classes)[t.y_train])
    twenty = build("split_cub200", cub_root, num_tasks=20, image_size=16)
    assert twenty.classes_per_task == (1,) * 20


def test_split_cub200_normalisation_is_of_all_training_images(cub_root):
    b = build("split_cub200", cub_root, image_size=16)
    d = cub.cub_arrays(cub_root, 16, download=False)
    mean, std = b.tasks[0].normalization
    ref_mean, ref_std = uint8_normalization(d.x_train)
    assert np.allclose(mean, ref_mean, atol=1e-6) and np.allclose(std, ref_std, atol=1e-6)
    assert all(t.normalization == b.tasks[0].normalization for t in b.tasks)
    on = b.tasks[0].on("cpu", "train").x
    assert on.dtype == torch.float32 and on.shape == (2 * (CUB_TRAIN - 1), 3, 16, 16)  # 1 per class held out for val
    expected = (b.tasks[0].x_train / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert np.allclose(on.numpy(), expected, atol=1e-5)
    raw = build("split_cub200", cub_root, image_size=16, normalize=False)
    assert raw.tasks[0].normalization is None


def test_split_cub200_validation_and_training_fractions(cub_root):
    b = build("split_cub200", cub_root, image_size=16, val_fraction=0.25, train_fraction=2 / 3, split_seed=1)
    for t in b.tasks:  # per class: 4 train images -> 1 validation, 2 of the other 3 kept
        assert np.bincount(t.y_val).tolist() == [1, 1] and np.bincount(t.y_train).tolist() == [2, 2]
        assert np.array_equal(red_class(t.x_val, CUB_SPACING), np.array(t.classes)[t.y_val])
        assert len(t.y_test) == 2 * CUB_TEST  # the test set is never subsampled


def test_cub_images_are_decoded_once_per_root_and_size(tmp_path):
    root = write_cub(tmp_path, classes=10)
    before = cub._decoded.cache_info()
    build("split_cub200", root, image_size=12)
    build("corrupted_split_cub200", root, image_size=12, severity=1)
    build("split_cub200", root, image_size=12, num_tasks=10, class_order_seed=5)
    after = cub._decoded.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 2


def test_split_cub200_params_are_checked_before_loading():
    params = BENCHMARKS.get("split_cub200").params
    with pytest.raises(ValidationError, match="num_tasks"):
        params(num_tasks=7)
    with pytest.raises(ValidationError, match="image_size"):
        params(image_size=4)
    assert params(num_tasks=20).num_tasks == 20
    corrupted = BENCHMARKS.get("corrupted_split_cub200").params
    with pytest.raises(ValidationError, match="severity"):
        corrupted(severity=6)
    with pytest.raises(ValidationError, match="twice"):
        corrupted(corruptions=["contrast", "contrast"])
    with pytest.raises(ValidationError, match="corruptions"):
        corrupted(corruptions=["fog"])


def test_split_cub200_class_count_must_divide_into_tasks(tmp_path):
    root = write_cub(tmp_path, classes=15)
    with pytest.raises(ValueError, match="15 classes .* num_tasks=10"):
        build("split_cub200", root, image_size=12)


def test_missing_cub_names_the_files_and_the_fix_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "download_file", lambda *a: pytest.fail("download attempted"))
    with pytest.raises(MissingData) as err:
        build("split_cub200", tmp_path)
    msg = str(err.value)
    for rel in ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images"]:
        assert str(tmp_path / "CUB_200_2011" / rel) in msg
    assert "download: true" in msg and "CUB_200_2011.tgz" in msg


def test_missing_cub_image_is_named(tmp_path):
    root = write_cub(tmp_path, classes=10)
    gone = next((root / "CUB_200_2011" / "images").glob("003.*/*.jpg"))
    gone.unlink()
    with pytest.raises(MissingData, match=gone.name):
        build("split_cub200", root, image_size=12)


def _fake_download(archive: Path):
    def download_file(url, folder, filename, md5):
        shutil.copy(archive, Path(folder) / filename)
    return download_file


def test_cub_download_fetches_and_extracts_the_archive(tmp_path, monkeypatch):
    src = write_cub(tmp_path / "src", classes=10)
    archive = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(src / "CUB_200_2011", arcname="CUB_200_2011")
    monkeypatch.setattr(images, "download_file", _fake_download(archive))
    b = build("split_cub200", tmp_path / "data", download=True, image_size=12)
    assert b.num_tasks == 10 and (tmp_path / "data" / "CUB_200_2011" / "classes.txt").is_file()


def test_a_failed_download_is_missing_data_not_a_network_error(tmp_path, monkeypatch):
    def offline(*args):
        raise URLError("no network")
    monkeypatch.setattr(images, "download_file", offline)
    with pytest.raises(MissingData, match="(?s)failed.*URLError.*no network.*by hand"):
        build("split_cub200", tmp_path, download=True)
    with pytest.raises(MissingData, match="tiny-imagenet-200.zip"):
        build("split_tinyimagenet", tmp_path, download=True)


# ---------------------------------------------------------------- corrupted split CUB-200
def test_each_task_gets_its_corruption_and_labels_stay(cub_root):
    clean = build("split_cub200", cub_root, image_size=16)
    bad = build("corrupted_split_cub200", cub_root, image_size=16, severity=3)
    assert bad.name == "corrupted_split_cub200" and bad.num_tasks == 10 and bad.input_shape == (3, 16, 16)
    names = [cub.CORRUPTIONS[k % len(cub.CORRUPTIONS)] for k in range(10)]
    assert [t.name for t in bad.tasks] == [f"cub task {k} {n} s3" for k, n in enumerate(names)]
    for c, b in zip(clean.tasks, bad.tasks):
        assert c.classes == b.classes
        assert np.array_equal(c.y_train, b.y_train) and np.array_equal(c.y_test, b.y_test)
        assert b.x_train.dtype == np.uint8 and b.x_train.shape == c.x_train.shape
        assert not np.array_equal(c.x_train, b.x_train) and not np.array_equal(c.x_test, b.x_test)
        assert b.normalization == c.normalization  # clean statistics: the corruption stays visible


def test_corruptions_are_deterministic_for_a_seed(cub_root):
    a = build("corrupted_split_cub200", cub_root, image_size=16, corruption_seed=1)
    again = build("corrupted_split_cub200", cub_root, image_size=16, corruption_seed=1)
    other = build("corrupted_split_cub200", cub_root, image_size=16, corruption_seed=2)
    for k, (x, y, z) in enumerate(zip(a.tasks, again.tasks, other.tasks)):
        assert np.array_equal(x.x_train, y.x_train) and np.array_equal(x.x_test, y.x_test)
        random = cub.CORRUPTIONS[k % 6] in ("gaussian_noise", "impulse_noise")
        assert np.array_equal(x.x_train, z.x_train) != random


def test_corruption_list_and_severity_are_parameters(cub_root):
    b = build("corrupted_split_cub200", cub_root, image_size=16, corruptions=["contrast", "pixelate"], severity=5)
    assert [t.name.split()[3] for t in b.tasks] == ["contrast", "pixelate"] * 5
    contrast = b.tasks[0].x_test.astype(float)
    clean = build("split_cub200", cub_root, image_size=16).tasks[0].x_test.astype(float)
    assert contrast[:, 1].std() < 0.1 * clean[:, 1].std()  # severity 5 keeps 5% of the contrast


@pytest.mark.parametrize("name", cub.CORRUPTIONS)
def test_every_corruption_changes_images_more_with_severity(name):
    low = torch.from_numpy(np.random.default_rng(5).uniform(30, 220, (4, 3, 8, 8)))  # a smooth random scene
    x = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear").round().numpy().astype(np.uint8)
    change = []
    for s in range(1, 6):
        out = cub.corrupt(x, name, s, np.random.default_rng(0))
        assert out.dtype == np.uint8 and out.shape == x.shape
        assert np.array_equal(out, cub.corrupt(x, name, s, np.random.default_rng(0)))
        change.append(np.abs(out.astype(float) - x).mean())
    assert change[0] > 0 and change[-1] > change[0]
    assert all(b >= a - 1e-9 for a, b in zip(change, change[1:]))


def test_corruption_formulas_on_known_pixels():
    x = np.array([[[[0, 100], [200, 255]]] * 3], dtype=np.uint8)  # (1, 3, 2, 2), grey
    bright = cub.corrupt(x, "brightness", 1, np.random.default_rng(0))[0, 0]
    # grey pixels: V = x, so x * (V + c) / V = x + c; black -> grey c; clipped at 1
    assert np.allclose(bright, [[25.5, 125.5], [225.5, 255]], atol=0.51)
    contrast = cub.corrupt(x, "contrast", 1, np.random.default_rng(0))[0, 0].astype(float)
    m = x[0, 0].mean()
    assert np.allclose(contrast, np.round(m + 0.4 * (x[0, 0] - m)), atol=1)
    impulse = cub.corrupt(np.full((1, 3, 64, 64), 128, np.uint8), "impulse_noise", 5, np.random.default_rng(0))
    assert {0, 128, 255} == set(np.unique(impulse).tolist())
    assert np.isclose((impulse != 128).mean(), 0.27, atol=0.02)


# ---------------------------------------------------------------- split TinyImageNet
def test_split_tinyimagenet_twenty_and_forty_tasks(tiny_root):
    b = build("split_tinyimagenet", tiny_root, num_tasks=20)
    assert b.name == "split_tinyimagenet" and b.num_tasks == 20 and b.classes_per_task == (2,) * 20
    assert b.input_shape == (3, 64, 64)
    # class c = the c-th line of wnids.txt (written in reverse: wnid index 39 - c)
    assert [t.classes for t in b.tasks] == [(2 * k, 2 * k + 1) for k in range(20)]
    for t in b.tasks:
        # the default val_fraction 0.1 holds out 1 of the 3 training images of each class (at least 1)
        assert t.x_train.shape == (2 * (TINY_TRAIN - 1), 3, 64, 64) and t.x_train.dtype == np.uint8
        assert t.x_val.shape == (2, 3, 64, 64) and np.bincount(t.y_val).tolist() == [1, 1]
        assert t.x_test.shape == (2 * TINY_VAL, 3, 64, 64)  # the published val set is the test set
        assert set(t.y_train.tolist()) == {0, 1}
        wnid_index = TINY_CLASSES - 1 - np.array(t.classes)
        assert np.array_equal(red_class(t.x_train, TINY_SPACING), wnid_index[t.y_train])
        assert np.array_equal(red_class(t.x_val, TINY_SPACING), wnid_index[t.y_val])
        assert np.array_equal(red_class(t.x_test, TINY_SPACING), wnid_index[t.y_test])
    forty = build("split_tinyimagenet", tiny_root, num_tasks=40, class_order_seed=0, val_fraction=0.34)
    assert forty.classes_per_task == (1,) * 40
    assert [t.classes[0] for t in forty.tasks] == class_order(TINY_CLASSES, 0)
    assert all(len(t.y_val) == 1 and len(t.y_train) == 2 for t in forty.tasks)


def test_tinyimagenet_greyscale_jpegs_become_rgb(tiny_root):
    d = tinyimagenet.tiny_arrays(tiny_root, download=False)
    grey = d.x_train[np.flatnonzero(d.y_train == TINY_CLASSES - 1 - 3)[0]]  # class of wnid index 3, image 0
    assert grey.shape == (3, 64, 64) and np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])


def test_tinyimagenet_params_and_missing_files(tmp_path):
    with pytest.raises(ValidationError, match="num_tasks"):
        BENCHMARKS.get("split_tinyimagenet").params(num_tasks=10)
    with pytest.raises(MissingData) as err:
        build("split_tinyimagenet", tmp_path)
    msg = str(err.value)
    for rel in ["wnids.txt", "train", "val/images", "val/val_annotations.txt"]:
        assert str(tmp_path / "tiny-imagenet-200" / rel) in msg
    assert "download: true" in msg and "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in msg


def test_tinyimagenet_inconsistent_files_are_named(tmp_path):
    root = write_tiny(tmp_path, classes=20)
    ann = root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_x.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="n99999999.*not in wnids.txt"):
        build("split_tinyimagenet", root)
    root2 = write_tiny(tmp_path / "b", classes=20)
    shutil.rmtree(root2 / "tiny-imagenet-200" / "train" / "n00001005")
    with pytest.raises(MissingData, match="train/n00001005/images"):
        build("split_tinyimagenet", root2)


def test_tinyimagenet_zip_download_is_extracted(tmp_path, monkeypatch):
    src = write_tiny(tmp_path / "src", classes=20)
    archive = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in (src / "tiny-imagenet-200").rglob("*"):
            z.write(f, f.relative_to(src))
    monkeypatch.setattr(images, "download_file", _fake_download(archive))
    b = build("split_tinyimagenet", tmp_path / "data", download=True)
    assert b.num_tasks == 20 and b.classes_per_task == (1,) * 20


# ---------------------------------------------------------------- a trial on a tiny benchmark
def test_finetune_trial_completes_on_corrupted_cub(cub_root):
    b = build("corrupted_split_cub200", cub_root, image_size=16, num_tasks=10)
    p = methods.METHODS.get("finetune").params(backbone="small_cnn", channels=[8, 16], epochs=1).model_dump()
    order = tuple(range(10))[::-1]
    rec = run_trial(TrialSpec("t0", "c0", "finetune", "finetune", p, order, 0, 0, "task_incremental", False), b)
    assert rec["status"] == "completed" and rec["tasks_done"] == 10
    last = rec["matrix"][-1]
    assert all(0.0 <= v <= 100.0 for v in last)
