"""Bad input: exit 2, one message naming the field and the fix, nothing written, all before Ray starts.

Each scenario goes through ``main([...])`` in-process, in an empty working directory, and must leave it
holding only what the test put there (no results/, no mlflow.db).
"""
from __future__ import annotations

import gzip
import os
import socket
import struct

import numpy as np
import pytest
import yaml

from orchestrator.cli import main

BASE = {
    "name": "bad",
    "benchmark": {"name": "split_digits"},
    "orders": {"kind": "random", "count": 2, "seed": 0},
    "methods": [{"name": "finetune", "params": {"training": {"epochs": 1}}}],
}


def study(**changes):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in changes.items():
        node, keys = raw, path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
        node[int(keys[-1]) if isinstance(node, list) else keys[-1]] = value
    return raw


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BOMB = """name: bad
benchmark: {name: split_digits}
orders: {kind: random, count: 2}
methods:
  - name: finetune
    params:
      training:
        epochs: &a [1,1,1,1,1,1,1,1,1]
        b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
        c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
        d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
        e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
        f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
        g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
        h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
        i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _idx_gz(folder, corrupt: str | None = None, n_train: int = 30, n_test: int = 10):
    """MNIST's four archives, tiny, in the real idx format (gzip only, as torchvision downloads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        files = {f"{prefix}-images-idx3-ubyte.gz": struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes(),
                 f"{prefix}-labels-idx1-ubyte.gz": struct.pack(">II", 2049, n) + labels.tobytes()}
        for name, payload in files.items():
            data = gzip.compress(payload)
            (folder / name).write_bytes(b"not a gzip file at all" if name == corrupt else data)


# (id, argv after the command, the study (dict, text or bytes) or None, words the message must contain, setup)
def _scenarios(tmp):
    port = _free_port()
    blocker = tmp / "a_file"
    return {
        "random_bytes": (["validate", "s.yaml"], bytes(range(256)) * 3, ["not UTF-8"]),
        "latin1_text": (["run", "s.yaml"], "name: caf\u00e9\n".encode("latin-1"), ["not UTF-8"]),
        "set_bad_yaml": (["run", "s.yaml", "--set", "seeds=[0,1"], BASE, ["--set seeds", "YAML"]),
        "alias_bomb": (["validate", "s.yaml"], BOMB, ["nodes"]),
        "long_name": (["run", "s.yaml"], study(name="n" * 300), ["name", "100"]),
        "tracking_scheme": (["run", "s.yaml"], study(tracking={"uri": "foo://bar"}), ["tracking.uri", "sqlite"]),
        "tracking_sqlite_dir": (["run", "s.yaml"], study(tracking={"uri": f"sqlite:///{blocker}/sub/mlflow.db"}),
                                ["tracking.uri", "director"]),
        "tracking_http_down": (["run", "s.yaml"], study(tracking={"uri": f"http://127.0.0.1:{port}"}),
                               ["tracking.uri", f"127.0.0.1:{port}"]),
        "storage_scheme": (["run", "s.yaml"], study(storage="foo://bar"), ["storage", "s3://"]),
        "label_path": (["run", "s.yaml"], study(methods=[{"name": "finetune", "label": "../x"}]),
                       ["methods[0].label"]),
        "too_many_trials": (["run", "s.yaml"],
                            study(methods=[{"name": "finetune", "params": {"training": {
                                "epochs": 1, "batch_size": {"grid": list(range(1, 101))}},
                                "optimizer": {"name": "sgd", "lr": {"grid": [0.1, 0.2, 0.3] * 1},
                                              "momentum": {"grid": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]},
                                              "weight_decay": {"grid": [0.0, 1e-5, 1e-4, 1e-3]}}}}]),
                            ["search.max_trials", "24000"]),
        "million_seeds": (["validate", "s.yaml"], "seeds: [" + ",".join(map(str, range(1_000_000))) + "]\n",
                          ["bytes", "seeds"]),
        "many_seeds": (["validate", "s.yaml"], yaml.safe_dump(BASE) + "seeds: [" + ",".join(map(str, range(20_000)))
                       + "]\n", ["search.max_trials", "40000"]),
        "huge_seed": (["run", "s.yaml"], study(seeds=[10 ** 20]), ["seeds", "4294967295"]),
        "orders_count": (["run", "s.yaml"], study(benchmark={"name": "split_digits", "params": {"classes_per_task": 5}},
                                                  orders={"kind": "random", "count": 5}),
                         ["orders.count", "2 permutations"]),
        "duplicate_orders": (["run", "s.yaml"], study(orders={"kind": "explicit",
                                                              "orders": [[0, 1, 2, 3, 4], [1, 0, 2, 3, 4],
                                                                         [0, 1, 2, 3, 4]]}),
                             ["orders.orders[2]", "orders.orders[0]"]),
        "halrp_no_val": (["validate", "s.yaml"],
                         study(benchmark={"name": "split_digits", "params": {"val_fraction": 0.0}},
                               methods=[{"name": "halrp", "params": {"training": {"epochs": 2}}}]),
                         ["importance_split", "val_fraction"]),
        "halrp_no_task_ids": (["validate", "s.yaml"],
                              study(benchmark={"name": "split_digits", "setting": "domain_incremental"},
                                    methods=[{"name": "halrp", "params": {"training": {"epochs": 2}}}]),
                              ["task_incremental"]),
        "mnist_corrupt_gz": (["validate", "s.yaml", "--data-root", "root"],
                             study(benchmark={"name": "split_mnist", "params": {"download": False}}),
                             ["train-labels-idx1-ubyte.gz", "corrupt"]),
        "mnist_missing": (["validate", "s.yaml", "--data-root", "root"],
                          study(benchmark={"name": "split_mnist", "params": {"download": False}}),
                          ["t10k-images-idx3-ubyte", "download: true"]),
        "cifar_missing": (["validate", "s.yaml", "--data-root", "root"],
                          study(benchmark={"name": "split_cifar10", "params": {"download": False}}),
                          ["cifar-10-batches-py", "download: true"]),
    }


SCENARIOS = ["random_bytes", "latin1_text", "set_bad_yaml", "alias_bomb", "long_name", "tracking_scheme",
             "tracking_sqlite_dir", "tracking_http_down", "storage_scheme", "label_path", "too_many_trials",
             "million_seeds", "many_seeds", "huge_seed", "orders_count", "duplicate_orders", "halrp_no_val", "halrp_no_task_ids",
             "mnist_corrupt_gz", "mnist_missing", "cifar_missing"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_bad_input_exits_2_with_one_message_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv, content, words = _scenarios(tmp_path)[name]
    (tmp_path / "a_file").write_text("a file where a directory should be")
    if name == "mnist_corrupt_gz":
        _idx_gz(tmp_path / "root" / "MNIST" / "raw", corrupt="train-labels-idx1-ubyte.gz")
    if name == "mnist_missing":
        _idx_gz(tmp_path / "root" / "MNIST" / "raw")
        os.remove(tmp_path / "root" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    if name == "cifar_missing":
        (tmp_path / "root").mkdir()
    if isinstance(content, bytes):
        (tmp_path / "s.yaml").write_bytes(content)
    elif isinstance(content, str):
        (tmp_path / "s.yaml").write_text(content)
    else:
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(content))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if not line.startswith("clorch: note")]
    assert lines and ("nothing was run" in lines[0] or lines[0].startswith("clorch:")), err
    assert len(err) < 4000, err[:4000]
    for word in words:
        assert word in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


def test_set_alias_bomb_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(BASE))
    nested = "&a0 [1,1,1,1,1,1,1,1,1,1]"
    text = "{a0: " + nested
    for k in range(1, 9):
        text += f", a{k}: &a{k} [" + ",".join([f"*a{k - 1}"] * 10) + "]"
    text += "}"
    assert main(["validate", "s.yaml", "--set", "methods.0.params.training.x=" + text]) == 2
    err = capsys.readouterr().err
    assert "nodes" in err and "Traceback" not in err and len(err) < 4000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_mnist_gz_only_with_download_false_validates_and_loads(tmp_path, monkeypatch, capsys):
    """Intact archives and download: false: read through gzip, nothing unpacked into the data root."""
    import datasets

    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "root" / "MNIST" / "raw"
    _idx_gz(raw)
    os.chmod(raw, 0o555)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study(benchmark={"name": "split_mnist",
                                                                     "params": {"download": False}})))
    assert main(["validate", "s.yaml", "--data-root", "root"]) == 0, capsys.readouterr().err
    b = datasets.load_benchmark("split_mnist", {"download": False, "normalize": False},
                                datasets.LoadContext(tmp_path / "root"))
    assert b.num_tasks == 5 and len(b.tasks[0].y_test) == 2
    assert sorted(p.name for p in raw.iterdir()) == sorted(f for f in os.listdir(raw) if f.endswith(".gz"))


def test_scenario_count():
    assert len(SCENARIOS) + 1 == 22
