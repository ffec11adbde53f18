"""`clorch run --address` joins an existing Ray cluster instead of starting its own.

The test starts a real head on loopback (tests/servers.py) and stops it after.
"""
import json
import subprocess

import pytest
import yaml

from servers import BIN, free_port, start_ray_head, stop_group


@pytest.fixture
def ray_head(tmp_path):
    head, address = start_ray_head(tmp_path / "head.log")
    yield address
    stop_group(head)


def test_run_with_address_uses_the_running_cluster(ray_head, tmp_path):
    study = {
        "name": "joined",
        "benchmark": {"name": "permuted_digits", "params": {"num_tasks": 3}},
        "orders": {"kind": "latin_square"},
        "methods": [{"name": "finetune", "params": {"epochs": 1, "optimizer": "adam", "lr": 0.01}}],
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "output_dir": str(tmp_path / "results"),
    }
    path = tmp_path / "joined.yaml"
    path.write_text(yaml.safe_dump(study))
    proc = subprocess.run([str(BIN / "clorch"), "run", str(path), "--address", ray_head],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert f"joined the Ray cluster at {ray_head}: 2 CPUs" in proc.stdout
    summary = json.loads((tmp_path / "results" / "joined" / "summary.json").read_text())
    assert summary["trials_total"] == 3 and summary["trials_failed"] == 0
    assert summary["configs"][0]["R"] == 3
    assert "[3/3 done, " in proc.stdout


def test_an_unreachable_address_is_one_clear_error_and_nothing_written(tmp_path):
    study = {"name": "nowhere", "benchmark": {"name": "split_digits"}, "orders": {"kind": "random", "count": 1},
             "methods": [{"name": "finetune"}], "output_dir": str(tmp_path / "results"),
             "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    proc = subprocess.run([str(BIN / "clorch"), "run", str(path), "--address", f"127.0.0.1:{free_port()}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "cannot join the Ray cluster at 127.0.0.1:" in proc.stderr and "no Ray head answered" in proc.stderr
    assert "Traceback" not in proc.stderr.split("clorch: cannot join")[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
