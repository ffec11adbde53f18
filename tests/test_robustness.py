"""A study that survives anything: deterministic errors fail once, collapse is flagged, Ctrl-C keeps what
finished, resources the machine lacks are refused before anything starts."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("isolated_registries")

COUNTING_METHOD = '''
"""Counts its attempts in a file; raises TrainingDiverged on the task it is told to."""
from pathlib import Path

import torch
from pydantic import BaseModel

import methods


class CountingParams(BaseModel):
    lr: float = 0.1
    counter: str = ""


@methods.register("counting_mean")
class CountingMean:
    Params = CountingParams

    def __init__(self, params, ctx):
        self.p, self.ctx, self.means = params, ctx, {}

    def learn_task(self, task_id, data):
        with open(self.p.counter, "a") as f:
            f.write(f"lr={self.p.lr} task={task_id}\\n")
        if self.p.lr >= 10 and len(self.means) == 1:  # the second task diverges, every time
            raise methods.TrainingDiverged(f"training loss became nan (lr {self.p.lr})")
        x = data.x.flatten(1).float()
        classes = self.ctx.classes_per_task[task_id]
        self.means[task_id] = torch.stack([x[data.y == c].mean(0) for c in range(classes)])
        return {}

    def predict(self, x, task_id):
        return -torch.cdist(x.flatten(1).float(), self.means[task_id])

    def state_dict(self):
        return {"means": dict(self.means)}

    def load_state_dict(self, state):
        self.means = dict(state["means"])
'''


def _study(tmp: Path, name: str, **extra) -> Path:
    study = {"name": name, "benchmark": {"name": "split_digits", "params": {"classes_per_task": 5}},
             "orders": {"kind": "explicit", "orders": [[0, 1]]}, "seeds": [0],
             "output_dir": str(tmp / "results"), "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}, **extra}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_deterministic_error_fails_the_trial_once_with_one_line(ray_local, tmp_path, capfd):
    (tmp_path / "counting.py").write_text(COUNTING_METHOD)
    counter = tmp_path / "attempts.txt"
    path = _study(tmp_path, "diverge", plugins=["counting.py"], retries=2,
                  methods=[{"name": "counting_mean", "params": {"lr": {"grid": [0.1, 10.0]}, "counter": str(counter)}}])
    assert main(["run", str(path)]) == 1
    out = capfd.readouterr()
    text = out.out + out.err
    attempts = counter.read_text().splitlines()
    assert [a for a in attempts if a.startswith("lr=10.0")] == ["lr=10.0 task=0", "lr=10.0 task=1"]  # once
    assert len([a for a in attempts if a.startswith("lr=0.1")]) == 2  # the rest of the study completed
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "diverge" / "trials").glob("*.json")]
    failed = [r for r in records if r["status"] == "failed"]
    assert len(records) == 2 and len(failed) == 1
    assert failed[0]["error"] == "TrainingDiverged: training loss became nan (lr 10.0)"
    assert failed[0]["tasks_done"] == 1  # the finished task is kept
    assert len([ln for ln in text.splitlines() if "TrainingDiverged" in ln]) == 1, text
    assert "Traceback" not in text, text


def _checkpoints(results: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for rows in (results / "tune").glob("*/*/checkpoint_*/rows.json"):
        try:
            done = json.loads(rows.read_text())["tasks_done"]
        except (OSError, ValueError):
            continue
        found[rows.parent.parent.name] = max(found.get(rows.parent.parent.name, 0), done)
    return found


def _wait(condition, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the study ended (rc {proc.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_ctrl_c_stops_cleanly_keeps_finished_tasks_and_says_how_to_resume(tmp_path):
    tasks = 5
    path = _study(tmp_path, "sigint", benchmark={"name": "split_digits", "params": {"classes_per_task": 2}},
                  orders={"kind": "random", "count": 3, "seed": 0}, resources={"cpu": 2},
                  methods=[{"name": "finetune", "params": {"training": {"epochs": 3}}}],
                  checkpoint_every_s=0)  # a checkpoint after every task: the signal lands part way
    results = tmp_path / "results" / "sigint"
    log = open(tmp_path / "driver.log", "w")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(path)], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = _wait(lambda: {p.stem for p in (results / "trials").glob("*.json")}, 300, "a trial record", proc)
        _wait(lambda: any(0 < d < tasks for t, d in _checkpoints(results).items() if t not in first), 120,
              "a second trial part way", proc)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    text = (tmp_path / "driver.log").read_text()
    assert code == 130, text[-3000:]
    assert f"clorch run {path} --resume" in text
    assert "Tuner.restore" not in text and "trial did not run" not in text
    assert not (results / "summary.json").exists() and not (results / "report.md").exists()
    records = [json.loads(p.read_text()) for p in (results / "trials").glob("*.json")]
    assert {r["status"] for r in records} <= {"completed", "stopped"}
    stopped = [r for r in records if r["status"] == "stopped"]
    assert stopped and all(r["tasks_done"] >= 1 for r in stopped)  # the running trial's finished tasks are kept
    assert all(r["tasks_done"] == tasks for r in records if r["status"] == "completed")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("sigint")
    runs = client.search_runs([exp.experiment_id], "", max_results=1000)
    assert runs and not [r.data.tags.get("clorch.level") for r in runs if r.info.status == "RUNNING"]
    assert {r.info.status for r in runs if r.data.tags.get("clorch.level") == "study"} == {"KILLED"}


def test_a_gpu_this_machine_lacks_is_refused_by_validate_and_run(tmp_path, capsys):
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    path = _study(tmp_path, "gpu", resources={"gpu": 1},
                  methods=[{"name": "finetune", "params": {"training": {"epochs": 1}}}])
    for command in ("validate", "run"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "resources.gpu (got 1.0)" in err and "has 0" in err, err
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()
    cpu = _study(tmp_path, "cpu", resources={"cpu": (os.cpu_count() or 1) + 1},
                 methods=[{"name": "finetune", "params": {"training": {"epochs": 1}}}])
    assert main(["validate", str(cpu)]) == 2
    assert "resources.cpu" in capsys.readouterr().err


def test_cluster_resources_are_checked_by_the_same_rule():
    from orchestrator.study.resources import resource_problems

    assert resource_problems(1, 1, {"CPU": 8.0}, "the Ray cluster at X")[0][0] == "resources.gpu"
    assert resource_problems(1, 0.5, {"CPU": 8.0, "GPU": 1.0}, "there") == []


def test_collapse_is_flagged_on_a_hand_built_record_and_shown_in_the_report():
    from types import SimpleNamespace

    from orchestrator.report.render import _collapsed
    from orchestrator.results.records import ClassificationRecord, collapsed_positions, record_from_json
    from orchestrator.study.schema import TrialSpec

    spec = TrialSpec("t0", "c0", "sgd10", "finetune", {}, (1, 0), 0, 0, "task_il", False)
    rows = [{"position": 0, "task_id": 1, "row": [None, 90.0], "val_row": [None, 95.0], "train_s": 1, "eval_s": 0},
            {"position": 1, "task_id": 0, "row": [21.0, 80.0], "val_row": [22.0, 85.0], "train_s": 1, "eval_s": 0}]
    rec = ClassificationRecord.from_rows(spec, rows, 2, status="completed")
    # 5 classes, 100 validation images: chance 20%, 2 SEs = 8 points; 22% is at chance, 95% is not
    assert collapsed_positions(rec, [5, 5], [100, 100]) == [1]
    assert collapsed_positions(rec, [5, 5], [10000, 10000]) == []  # 2 SEs are 0.8 points there
    rec.collapsed_tasks = [1]
    again = record_from_json(rec.to_json())
    assert again.collapsed_tasks == [1] and again.completed  # a flag, never a filter
    line = _collapsed(SimpleNamespace(records=[again, record_from_json({**rec.to_json(), "trial_id": "t1",
                                                                         "collapsed_tasks": []})]))
    assert line[0].startswith("Collapsed: 1 of 2 trials (1 configs: sgd10)")


def test_a_finite_divergence_is_flagged_collapsed_in_a_real_run(ray_local, tmp_path, capfd):
    # SGD at lr 3 on 5-class digit tasks: the loss stays finite, validation accuracy sits at 20% (chance)
    path = _study(tmp_path, "collapse", methods=[
        {"name": "finetune", "label": "sgd10", "params": {"optimizer": {"name": "sgd", "lr": 3.0},
                                                          "training": {"epochs": 1}}},
        {"name": "finetune", "label": "ok", "params": {"optimizer": {"name": "sgd", "lr": 0.5},
                                                       "training": {"epochs": 3}}}])
    code = main(["run", str(path)])
    text = capfd.readouterr().out
    records = {r["label"]: r for r in (json.loads(p.read_text())
                                       for p in (tmp_path / "results" / "collapse" / "trials").glob("*.json"))}
    assert records["sgd10"]["status"] == "completed" and records["sgd10"]["collapsed_tasks"], records["sgd10"]
    assert records["ok"]["collapsed_tasks"] == []
    assert len([ln for ln in text.splitlines() if "COLLAPSED sgd10" in ln]) == 1, text
    assert code == 0
    assert "Collapsed: 1 of 2 trials" in (tmp_path / "results" / "collapse" / "report.md").read_text()
