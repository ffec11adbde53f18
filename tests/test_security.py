"""Safe defaults: checkpoints load without running code, credentials are never printed."""
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import methods
from orchestrator.run.checkpoint import TrialState, UnsafeCheckpoint, load_state, save_state
from orchestrator.run.trial import run_trial
from orchestrator.study.schema import TrialSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METHOD_STATES = [
    ("finetune", {"optimizer": "adam", "lr": 0.01}),
    ("finetune", {"optimizer": "adam", "lr": 0.01, "lr_scheduler": "lot", "lot_every": 5}),
    ("ewc", {"ewc_lambda": 10.0}),
    ("joint", {}),
    ("update_magnitude", {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "strategy": "adaptive", "k_min": 2}),
    ("halrp", {"backbone": "mlp", "hidden": [32, 32], "lr": 3e-3, "upper_rank": 8, "epochs": 2}),
]


@pytest.mark.parametrize("method,params", METHOD_STATES, ids=lambda v: v if isinstance(v, str) else None)
def test_every_methods_checkpoint_loads_weights_only_and_resumes_exactly(digits, tmp_path, method, params):
    """Saved after task 2, read back from the file with weights_only=True: the rest equals the uninterrupted run."""
    p = methods.METHODS.get(method).params(**{"epochs": 1, "batch_size": 32, **params}).model_dump()
    s = TrialSpec("t0", "c0", method, method, p, (3, 0, 4, 1, 2), 0, 0, "task_incremental", False)
    reports = []
    whole = run_trial(s, digits, report=reports.append, checkpoints=True)
    save_state(tmp_path, reports[1]["checkpoint"])
    torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)  # nothing but tensors and plain data
    state = load_state(tmp_path)
    assert state.tasks_done == 2
    resumed = run_trial(s, digits, report=lambda row: None, resume=state, checkpoints=True)
    assert resumed["matrix"] == whole["matrix"] and resumed["resumed_at"] == [2]


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_a_foreign_pickled_object_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": 2, "tasks_done": 1, "rows": [], "method": {"x": _Boom(marker)}, "rng": {}},
               tmp_path / "state.pt")
    with pytest.raises(UnsafeCheckpoint, match=r"(?s)refusing to load checkpoint .*state\.pt.*system.*delete it"):
        load_state(tmp_path)
    assert not marker.exists()


def test_a_checkpoint_of_the_old_pickled_format_is_refused(tmp_path):
    torch.save({"tasks_done": 1, "rows": [], "method": {}, "rng": {"numpy": np.random.get_state()}},
               tmp_path / "state.pt")
    with pytest.raises(UnsafeCheckpoint, match="refusing to load checkpoint"):
        load_state(tmp_path)


def test_checkpoint_encoding_round_trips_numpy_tuples_deques_and_marker_like_keys(tmp_path):
    from collections import OrderedDict, deque

    od = OrderedDict(w=torch.ones(2))
    od._metadata = {"": {"version": 1}}
    method = {"arr": np.arange(6, dtype=np.uint32).reshape(2, 3), "scalar": np.float64(0.25), "tup": (1, (2.5, "a")),
              "dq": deque([1, 2], maxlen=4), "od": od, "gen": torch.Generator().manual_seed(3).get_state(),
              "user": {"__clorch__": "ndarray"}, "nested": [{"k": None, 3: b"x"}]}
    save_state(tmp_path, TrialState(1, [{"position": 0, "row": [0.5, None]}], method, {"numpy": np.random.get_state()}))
    back = load_state(tmp_path).method
    assert back["arr"].dtype == np.uint32 and (back["arr"] == method["arr"]).all()
    assert type(back["scalar"]) is np.float64 and back["scalar"] == 0.25
    assert back["tup"] == (1, (2.5, "a")) and back["dq"] == deque([1, 2]) and back["dq"].maxlen == 4
    assert back["od"]._metadata == {"": {"version": 1}} and torch.equal(back["od"]["w"], torch.ones(2))
    assert torch.equal(back["gen"], method["gen"])
    assert back["user"] == {"__clorch__": "ndarray"} and back["nested"] == [{"k": None, 3: b"x"}]


def test_a_state_that_cannot_be_stored_safely_fails_at_save_naming_where(tmp_path):
    with pytest.raises(TypeError, match=r"state\['method'\]\['opt'\].*cannot be checkpointed safely"):
        save_state(tmp_path, TrialState(1, [], {"opt": object()}))


# ---------------------------------------------------------------- credentials
def test_redaction_masks_uri_passwords_and_secret_looking_keys():
    from orchestrator.study.redact import is_secret_key, redact_override, redact_text, redact_uri, split_credentials

    assert redact_uri("http://alice:s3cret@head:5000/x") == "http://alice:***@head:5000/x"
    assert redact_uri("http://head:5000") == "http://head:5000" and redact_uri("sqlite:///m.db") == "sqlite:///m.db"
    assert redact_text("see s3://k:v@bucket/p?token=abc&x=1") == "see s3://k:***@bucket/p?token=***&x=1"
    assert all(map(is_secret_key, ["tracking.password", "plugin.api_token", "aws_secret_access_key", "apiKey",
                                   "db.key", "MLFLOW_TRACKING_PASSWORD"]))
    assert not any(map(is_secret_key, ["seeds", "tracking.uri", "methods.0.params.lr", "class_order_seed",
                                       "monkey", "training.epochs"]))
    assert redact_override("plugin.token=abc") == "plugin.token=***"
    assert redact_override("tracking.uri=http://u:p@h:5000") == "tracking.uri=http://u:***@h:5000"
    assert redact_override("seeds=[0,1]") == "seeds=[0,1]"
    assert split_credentials("http://u:p@h:5000/a") == ("http://h:5000/a", "u", "p")
    assert split_credentials("http://h:5000") == ("http://h:5000", None, None)


def test_a_jobs_command_line_carries_no_secret_and_its_env_carries_the_real_values():
    import shlex
    import subprocess

    from orchestrator.cluster import jobs

    overrides = ["tracking.uri=http://alice:s3cret@127.0.0.1:5000", "plugin.api_token=tok'en $x", "seeds=[0,1]"]
    command = jobs.entrypoint("s.yaml", overrides, None, False)
    assert "s3cret" not in command and "tok'en" not in command and "$x" not in command
    assert "--set tracking.uri=http://127.0.0.1:5000" in command and "'seeds=[0,1]'" in command
    items, env = jobs.job_secrets(overrides)
    assert env["MLFLOW_TRACKING_USERNAME"] == "alice" and env["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    assert env["CLORCH_SET_1"] == "tok'en $x"
    # the job's shell (Ray runs the entrypoint with shell=True) expands the reference to the real value
    echoed = subprocess.run(command.replace("python -m orchestrator.cli run", "printf '%s\\n'", 1), shell=True,
                            env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True).stdout
    assert "plugin.api_token=tok'en $x" in echoed.splitlines()
    assert shlex.split(command)[:5] == ["python", "-m", "orchestrator.cli", "run", "s.yaml"]


def test_mlflow_params_never_hold_a_password():
    from orchestrator.results.tracking import _params

    params = {p.key: p.value for p in _params({"plugin": {"api_token": "abc", "url": "http://u:pw@h/"}, "lr": 0.1})}
    assert params == {"plugin.api_token": "***", "plugin.url": "http://u:***@h/", "lr": "0.1"}


def test_a_bad_study_error_echoing_a_uri_prints_no_password(tmp_path, capsys):
    from orchestrator.cli import main

    study = tmp_path / "s.yaml"
    study.write_text("name: s\nbenchmark: {name: split_digits}\nmethods: [{name: finetune}]\n"
                     "tracking: {uri: 'http://u:hunter2@h:5000'}\nseeds: nope\n")
    assert main(["validate", str(study), "--set", "seeds=http://u:hunter2@h:5000"]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "seeds" in err


# ---------------------------------------------------------------- the embedded Ray
_LISTENERS = r'''
import os, re, subprocess, sys
from orchestrator.cluster.connect import connect
connect(None)
import ray
@ray.remote
def f():
    return 1
assert ray.get(f.remote()) == 1
def tree(root):
    kids = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            kids.setdefault(int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]), []).append(int(p))
        except OSError:
            pass
    out, todo = set(), [root]
    while todo:
        x = todo.pop(); out.add(x); todo += kids.get(x, [])
    return out
mine = tree(os.getpid())
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
    if {int(x) for x in re.findall(r"pid=(\d+)", line)} & mine:
        print("LISTEN", line.split()[3], re.findall(r'"([^"]+)"', line)[0])
ray.shutdown()
'''


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ss") is None, reason="needs Linux ss")
def test_the_embedded_local_ray_listens_on_loopback_only():
    """GCS, raylet, object manager, workers and agents of `clorch run` without --address: 127.0.0.1 only."""
    done = subprocess.run([sys.executable, "-c", _LISTENERS], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    listening = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("LISTEN")]
    assert any(name == "gcs_server" for _, name in listening) and any(n == "raylet" for _, n in listening)
    exposed = [(a, n) for a, n in listening if not re.match(r"(\[::ffff:)?127\.0\.0\.1\]?:\d+$|\[::1\]:\d+$", a)]
    assert exposed == []


# ---------------------------------------------------------------- CIFAR pickles
def test_a_cifar_file_with_a_foreign_global_is_refused_even_when_trusted(tmp_path):
    """The second line of defence: the restricted unpickler rebuilds no global but numpy's array ones."""
    from datasets import BENCHMARKS, LoadContext, MissingData
    from datasets import cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    good = {"data": np.zeros((10, 3072), dtype=np.uint8), "labels": list(range(10))}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(good, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    entry = BENCHMARKS.get("split_cifar10")
    params = dict(download=False, trust_unverified_pickles=True)
    assert entry.target(entry.params(**params), LoadContext(tmp_path)).num_tasks == 5  # numpy arrays are fine
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Boom(marker), "labels": []}, protocol=2))
    cifar.cifar_arrays.cache_clear()
    with pytest.raises(MissingData, match="refusing to unpickle the global posix.system"):
        entry.target(entry.params(**params), LoadContext(tmp_path))
    assert not marker.exists()
    cifar.cifar_arrays.cache_clear()
    with pytest.raises(MissingData, match="trust_unverified_pickles: true"):  # without the opt-in: md5 first
        entry.target(entry.params(download=False), LoadContext(tmp_path))
    assert not marker.exists()
