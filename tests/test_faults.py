"""Faults, for real: a trial's worker killed mid-task, and the driver killed and resumed.

Each test runs `clorch run` as its own process (its own embedded Ray, in its
own process group, so killing it cannot touch the Ray of the test session)
on a study whose tasks take a second or two, and kills processes with
SIGKILL while trials are inside a task.
"""
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

BIN = Path(sys.executable).parent
TASKS = 4


def write_study(root: Path, name: str, orders: int) -> Path:
    study = {
        "name": name,
        "benchmark": {"name": "permuted_digits", "params": {"num_tasks": TASKS}},
        "orders": {"kind": "random", "count": orders, "seed": 0},
        "methods": [{"name": "finetune", "params": {"epochs": 40, "hidden": [256, 256], "optimizer": "adam",
                                                    "lr": 0.001}}],
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db"},
        "output_dir": str(root / "results"),
        "checkpoint_every_s": 0,  # a checkpoint after every task: the kill lands between two of them
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def start(root: Path, path: Path, *extra: str) -> subprocess.Popen:
    log = open(root / f"driver{len(list(root.glob('driver*.log')))}.log", "w")
    return subprocess.Popen([str(BIN / "clorch"), "run", str(path), *extra], cwd=root, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def checkpoints(root: Path, name: str) -> dict[str, int]:
    """trial id -> tasks done in its newest checkpoint on disk."""
    found: dict[str, int] = {}
    for rows in (root / "results" / name / "tune").glob("*/*/checkpoint_*/rows.json"):
        try:
            done = json.loads(rows.read_text())["tasks_done"]
        except (OSError, ValueError):
            continue
        trial = rows.parent.parent.name
        found[trial] = max(found.get(trial, 0), done)
    return found


def finished(root: Path, name: str) -> set[str]:
    return {p.stem for p in (root / "results" / name / "trials").glob("*.json")}


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the study ended (rc {proc.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def trial_workers(session_pid: int) -> list[int]:
    """PIDs of the Tune trial workers of the study started as session ``session_pid``."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines():
        pid, sid, args = line.strip().split(None, 2)
        if int(sid) == session_pid and "ImplicitFunc" in args:
            pids.append(int(pid))
    return pids


def stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def check_complete(root: Path, name: str, n_trials: int) -> list[dict]:
    """Every trial completed with its full matrix; exactly one MLflow run per trial, all finished."""
    records = [json.loads(p.read_text()) for p in (root / "results" / name / "trials").glob("*.json")]
    assert len(records) == n_trials
    for r in records:
        assert r["status"] == "completed" and r["tasks_done"] == TASKS
        assert all(r["matrix"][i][t] is not None for i in range(TASKS) for t in r["order"][: i + 1])
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'trial'", max_results=1000)
    ids = sorted(r.data.tags["clorch.trial_id"] for r in runs)
    assert ids == sorted(r["trial_id"] for r in records)  # one run per trial, no duplicate
    assert all(r.info.status == "FINISHED" for r in runs), [(r.data.tags["clorch.trial_id"], r.info.status) for r in runs]
    studies = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'study'")
    assert len(studies) == 1
    return records


def test_a_killed_worker_is_retried_from_its_last_finished_task(tmp_path):
    path = write_study(tmp_path, "killworker", orders=2)
    proc = start(tmp_path, path)
    try:
        # both trials are past their first task and neither has finished: kill one mid-task
        wait_for(lambda: len(checkpoints(tmp_path, "killworker")) == 2 and not finished(tmp_path, "killworker"),
                 240, "two trials to checkpoint", proc)
        victims = wait_for(lambda: trial_workers(proc.pid), 30, "a trial worker process", proc)
        os.kill(victims[0], signal.SIGKILL)
        assert proc.wait(timeout=300) == 0
    finally:
        stop_group(proc)
    records = check_complete(tmp_path, "killworker", 2)
    resumed = [r for r in records if r["resumed_at"]]
    assert len(resumed) == 1 and 1 <= resumed[0]["resumed_at"][0] < TASKS  # not from scratch
    assert sum(len(r["timings"]) for r in records) == 2 * TASKS  # every task once in the record


def test_a_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    path = write_study(tmp_path, "killdriver", orders=3)
    proc = start(tmp_path, path)
    try:
        # one trial finished, another part way: kill the driver and its whole Ray
        wait_for(lambda: finished(tmp_path, "killdriver") and any(
            0 < done < TASKS for trial, done in checkpoints(tmp_path, "killdriver").items()
            if trial not in finished(tmp_path, "killdriver")), 300, "a finished and a half-done trial", proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop_group(proc)
    done_before = finished(tmp_path, "killdriver")
    stamps = {t: (tmp_path / "results" / "killdriver" / "trials" / f"{t}.json").stat().st_mtime_ns for t in done_before}
    partial = {t: d for t, d in checkpoints(tmp_path, "killdriver").items() if t not in done_before}
    again = start(tmp_path, path, "--resume")
    try:
        assert again.wait(timeout=400) == 0, (tmp_path / "driver1.log").read_text()[-3000:]
    finally:
        stop_group(again)
    log = (tmp_path / "driver1.log").read_text()
    assert f"resuming: {len(done_before)} trials finished earlier are kept" in log
    records = {r["trial_id"]: r for r in check_complete(tmp_path, "killdriver", 3)}
    for t in done_before:  # finished trials were not rerun: their files are untouched
        assert (tmp_path / "results" / "killdriver" / "trials" / f"{t}.json").stat().st_mtime_ns == stamps[t]
    for t, done in partial.items():  # interrupted ones went on from their last checkpoint
        if 0 < done < TASKS:
            assert records[t]["resumed_at"] and records[t]["resumed_at"][0] >= done


class OutOfMemoryError(Exception):
    """Named as Ray's: what its OOM killer raises inside Tune's controller."""


def test_tune_stopped_by_a_lost_worker_reruns_only_the_unfinished_trials_and_then_gives_up_cleanly(capsys):
    """Ray's OOM killer makes Tune's controller raise (not fail one trial): the study must keep what finished,
    run the rest again, and after `retries` attempts record them as not finished rather than die."""
    from types import SimpleNamespace

    from orchestrator.run.driver import TuneRuns, worker_lost

    specs = [SimpleNamespace(trial_id=f"t{i}") for i in range(4)]
    recorded, fits = {}, []

    def crash(finish):  # finish[k]: the trials the k-th attempt completes before Tune dies
        def fit(phase, num_samples, space, schedule=True):
            fits.append([u for u in space["unit"]["grid_search"]])
            for tid in finish[len(fits) - 1] if len(fits) <= len(finish) else []:
                recorded[tid] = "completed"
            if len(fits) < 3:
                raise RuntimeError("Caught unexpected exception") from OutOfMemoryError("2 worker(s) were killed")
        return fit

    runs = object.__new__(TuneRuns)
    runs.study = SimpleNamespace(retries=2)
    runs.recorder = SimpleNamespace(records=recorded, expect=lambda n: None,
                                    not_run=lambda t, why: recorded.setdefault(t.trial_id, why))
    runs.lineage = SimpleNamespace(checkpoint_candidates=dict)
    runs.unit = lambda t: t.trial_id
    runs.budget_spent = lambda: False
    runs._fit = crash([["t0"], ["t1"], ["t2", "t3"]])
    runs.run_fixed("search", specs)
    assert fits == [["t0", "t1", "t2", "t3"], ["t1", "t2", "t3"], ["t2", "t3"]]  # finished ones never rerun
    assert all(recorded[t.trial_id] == "completed" for t in specs)  # the third attempt went through
    assert "Ray lost a trial worker (OutOfMemoryError" in capsys.readouterr().out

    recorded.clear(), fits.clear()
    runs.study = SimpleNamespace(retries=1)
    runs._fit = crash([])
    runs.run_fixed("search", specs)  # every attempt crashes: records, not an exception
    assert len(fits) == 2 and all(recorded[t.trial_id].startswith("not finished: Ray lost") for t in specs)
    assert worker_lost(ValueError("bad config")) is None
