"""The bundled digits benchmarks: what a study on them actually trains and tests on."""
import numpy as np
import pytest

import datasets
from datasets import BENCHMARKS, RegistryError


def build(name, **params):
    entry = BENCHMARKS.get(name)
    return entry.target(entry.params(**params))


def test_split_digits_tasks_are_disjoint_class_pairs_with_local_labels():
    b = build("split_digits")
    assert b.num_tasks == 5 and b.classes_per_task == (2,) * 5
    assert [t.classes for t in b.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for t in b.tasks:
        assert set(np.unique(t.y_train)) == {0, 1} and set(np.unique(t.y_test)) == {0, 1}
        assert t.x_train.shape[1:] == (1, 8, 8) and t.x_train.dtype == np.float32
        assert 0.0 <= t.x_train.min() and t.x_train.max() <= 1.0
        assert set(np.unique(t.y_val)) == {0, 1} and t.x_val.shape[1:] == (1, 8, 8)
    total = sum(len(t.y_train) + len(t.y_val) + len(t.y_test) for t in b.tasks)
    assert total == 1797  # every image used exactly once (train, validation or test)
    images = [x.tobytes() for t in b.tasks for x in (*t.x_train, *t.x_val, *t.x_test)]
    assert len(set(images)) == 1797  # (the 1,797 bundled images are all distinct)


def test_split_is_stratified_and_train_test_do_not_overlap():
    b = build("split_digits", test_fraction=0.3)
    for t in b.tasks:
        train, val = {x.tobytes() for x in t.x_train}, {x.tobytes() for x in t.x_val}
        assert not any(x.tobytes() in train or x.tobytes() in val for x in t.x_test)
        assert not train & val
        share = len(t.y_test) / (len(t.y_test) + len(t.y_train) + len(t.y_val))  # train + val: the old training set
        assert share == pytest.approx(0.3, abs=0.02)
        # validation: the default val_fraction 0.1 of each class's training images (at least 1)
        for c in (0, 1):
            n = int((t.y_train == c).sum() + (t.y_val == c).sum())
            assert (t.y_val == c).sum() == max(1, round(0.1 * n))


def test_classes_per_task_must_divide_ten():
    with pytest.raises(ValueError, match="must divide 10"):
        BENCHMARKS.get("split_digits").params(classes_per_task=3)
    assert build("split_digits", classes_per_task=5).num_tasks == 2


def test_permuted_digits_permutes_pixels_per_task_seeded():
    b = build("permuted_digits", num_tasks=3, permutation_seed=7)
    again = build("permuted_digits", num_tasks=3, permutation_seed=7)
    other = build("permuted_digits", num_tasks=3, permutation_seed=8)
    base, t1 = b.tasks[0].x_train.reshape(-1, 64), b.tasks[1].x_train.reshape(-1, 64)
    assert not np.array_equal(base, t1)
    # a permutation of pixels: the multiset of pixel values of each image is kept
    assert np.array_equal(np.sort(base, axis=1), np.sort(t1, axis=1))
    assert np.array_equal(b.tasks[2].x_train, again.tasks[2].x_train)
    assert not np.array_equal(b.tasks[1].x_train, other.tasks[1].x_train)
    assert np.array_equal(b.tasks[0].y_train, b.tasks[1].y_train)
    # every task holds out the same images for validation (permuted), never another task's training images
    val0, val1 = b.tasks[0].x_val.reshape(-1, 64), b.tasks[1].x_val.reshape(-1, 64)
    assert len(val0) > 0 and np.array_equal(b.tasks[0].y_val, b.tasks[1].y_val)
    assert np.array_equal(np.sort(val0, axis=1), np.sort(val1, axis=1))
    assert not {x.tobytes() for x in np.sort(val0, axis=1)} & {x.tobytes() for x in np.sort(t1, axis=1)}
    assert b.default_setting == "domain_incremental"


def test_first_task_is_the_original_images_unless_asked():
    original = build("split_digits", classes_per_task=10).tasks[0]
    plain = build("permuted_digits", num_tasks=2).tasks[0]
    assert np.array_equal(plain.x_train, original.x_train)
    permuted = build("permuted_digits", num_tasks=2, permute_first=True).tasks[0]
    assert not np.array_equal(permuted.x_train, original.x_train)


def test_unknown_benchmark_names_the_available_ones():
    with pytest.raises(RegistryError, match="unknown benchmark 'mnistt'; available: .*split_digits"):
        datasets.BENCHMARKS.get("mnistt")


def test_task_on_device_shares_memory_on_cpu():
    t = build("split_digits").tasks[0]
    split = t.on("cpu", "train")
    assert split.x.data_ptr() == t.x_train.ctypes.data  # no copy for the object-store case
    assert split.y.dtype.is_floating_point is False


def test_the_digits_read_from_the_bundled_file_equal_scikit_learns_load_digits(monkeypatch):
    """The loader reads scikit-learn's digits file without importing scikit-learn (seconds per process);
    the same arrays as load_digits, and the fallback through scikit-learn when the file is not found."""
    import numpy as np
    from sklearn.datasets import load_digits

    from datasets import digits

    bunch = load_digits()
    digits._load_digits.cache_clear()
    x, y = digits._load_digits()
    assert digits._digits_file() is not None
    np.testing.assert_array_equal(x.reshape(len(x), -1), (bunch.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target)
    monkeypatch.setattr(digits, "_digits_file", lambda: None)
    digits._load_digits.cache_clear()
    x2, y2 = digits._load_digits()
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    digits._load_digits.cache_clear()
