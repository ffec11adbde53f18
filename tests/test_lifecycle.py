"""A study's run lifecycle: trial ids that cover everything, a resume only of the same study, a checkpoint
that does not load is skipped, one run of a study at a time, no silent overwrite.

The cases that refuse run no Ray (they are refused before anything starts); the others share the session's
embedded Ray and run tiny studies (permuted_digits, 3 tasks, one epoch).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.run import lifecycle
from orchestrator.study.expand import expand_trials, study_identity
from orchestrator.study.loading import parse_study

TASKS = 3


def study_dict(root: Path, name: str, **extra) -> dict:
    return {"name": name, "benchmark": {"name": "permuted_digits", "params": {"num_tasks": TASKS}},
            "orders": {"kind": "random", "count": 2, "seed": 0},
            "methods": [{"name": "finetune", "label": "ft", "params": {"training": {"epochs": 1}}}],
            "output_dir": str(root / "results"), "tracking": {"uri": f"sqlite:///{root}/mlflow.db"},
            "checkpoint_every_s": 0, **extra}  # per-task checkpoints: what resume goes on from


def write(root: Path, d: dict) -> Path:
    path = root / f"{d['name']}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


# ---------------------------------------------------------------- 1. trial ids and a changed study
def test_a_trial_id_hashes_everything_that_determines_the_trial(tmp_path):
    base = study_dict(tmp_path, "ids")

    def first_id(d: dict, version: int = 2) -> str:
        study = parse_study(d)
        return expand_trials(study, "domain_incremental", identity=study_identity(study, version))[0].trial_id

    reference = first_id(base)
    assert re.fullmatch(r"ft-[0-9a-f]{8}-o0-s0", reference)
    assert first_id(base) == reference  # the same study: the same id, each time
    variants = {
        "benchmark params": {**base, "benchmark": {"name": "permuted_digits",
                                                   "params": {"num_tasks": TASKS, "permutation_seed": 1}}},
        "task count": {**base, "benchmark": {"name": "permuted_digits", "params": {"num_tasks": 4}}},
        "the order itself": {**base, "orders": {"kind": "random", "count": 2, "seed": 7}},
        "setting": {**base, "benchmark": {**base["benchmark"], "setting": "task_incremental"}},
        "method params": {**base, "methods": [{"name": "finetune", "label": "ft",
                                               "params": {"training": {"epochs": 2}}}]},
        "evaluate_unseen": {**base, "evaluate_unseen": True},
    }
    for what, d in variants.items():
        assert first_id(d) != reference, what
    assert first_id(base, version=3) != reference  # another record version


def test_resume_of_a_changed_study_is_refused_naming_what_changed(tmp_path, capsys):
    d = study_dict(tmp_path, "changed", benchmark={"name": "permuted_digits", "params": {"num_tasks": 5}})
    path = write(tmp_path, d)
    out = tmp_path / "results" / "changed"
    lifecycle.write_fingerprint(out, parse_study(d))
    (out / "trials").mkdir()
    (out / "trials" / "ft-00000000-o0-s0.json").write_text("{}")
    before = listing(tmp_path)
    cases = {("--set", "benchmark.params.num_tasks=3"): "benchmark.params.num_tasks 5 -> 3",
             ("--set", "orders.seed=3"): "orders changed",
             ("--set", "methods.0.params.training.epochs=2"): "methods[0].params changed",
             ("--set", "seeds=[0,1]"): "seeds [0] -> [0, 1]"}
    for args, phrase in cases.items():
        assert main(["run", str(path), "--resume", *args]) == 2
        err = capsys.readouterr().err
        assert phrase in err and "--allow-changes" in err and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert listing(tmp_path) == before  # nothing started, nothing written
    assert not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------- 3. one run at a time
HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    fd = os.open(os.path.join(out, ".clorch.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()} on testhost since now\\n".encode())
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_second_run_of_a_study_being_run_is_refused_naming_the_pid(tmp_path, capsys):
    path = write(tmp_path, study_dict(tmp_path, "busy"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "results" / "busy")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = listing(tmp_path)
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert main(["run", str(path), *extra]) == 2
            err = capsys.readouterr().err
            assert f"pid {holder.pid}" in err and "in use by another clorch run" in err and "Traceback" not in err
        assert listing(tmp_path) == before and not (tmp_path / "mlflow.db").exists()
    finally:
        holder.kill()
        holder.wait()
    lock = lifecycle.StudyLock(tmp_path / "results" / "busy")  # released when its holder died
    lock.acquire()
    lock.release()


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    path = write(tmp_path, study_dict(tmp_path, "both"))
    assert main(["run", str(path), "--resume", "--overwrite"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert main(["run", str(path), "--allow-changes"]) == 2
    assert "--allow-changes goes with --resume" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- 2. a checkpoint that does not load
class _Checkpoint:
    def __init__(self, path: Path):
        self.path = str(path)

    def as_directory(self):
        from contextlib import nullcontext

        return nullcontext(self.path)


def test_a_truncated_newest_checkpoint_is_skipped_for_the_older_one(tmp_path):
    from orchestrator.run.checkpoint import STATE_FILE, TrialState, load_state, save_state
    from orchestrator.run.checkpoint_store import load_newest

    for done in (1, 2):
        save_state(tmp_path / f"checkpoint_00000{done}", TrialState(done, [{"position": i} for i in range(done)],
                                                                     {"w": [float(done)]}))
    newest = tmp_path / "checkpoint_000002" / STATE_FILE
    newest.write_bytes(newest.read_bytes()[:40])
    said = []
    state = load_newest([_Checkpoint(tmp_path / "checkpoint_000002"), _Checkpoint(tmp_path / "checkpoint_000001")],
                        load_state, say=lambda *a, **k: said.append(" ".join(a)))
    assert state.tasks_done == 1 and state.method == {"w": [1.0]}
    assert "checkpoint_000002 skipped, it does not load" in said[0] and "checkpoint_000001" in said[1]
    assert load_newest([_Checkpoint(tmp_path / "checkpoint_000002")], load_state, say=lambda *a, **k: None) is None


def test_resume_goes_on_from_the_older_checkpoint_when_the_newest_is_truncated(ray_local, tmp_path):
    d = study_dict(tmp_path, "ckpt", orders={"kind": "random", "count": 1, "seed": 0})
    path = write(tmp_path, d)
    assert main(["run", str(path)]) == 0
    out = tmp_path / "results" / "ckpt"
    (record_file,) = (out / "trials").glob("*.json")
    trial = record_file.stem
    record_file.unlink()  # the driver died before it wrote the record: the trial is unfinished
    found = sorted((out / "tune").glob(f"*/{trial}/checkpoint_*"))
    assert len(found) == 2
    older = json.loads((found[0] / "rows.json").read_text())["tasks_done"]
    state = found[-1] / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    assert main(["run", str(path), "--resume"]) == 0
    rec = json.loads(record_file.read_text())
    assert rec["status"] == "completed" and rec["tasks_done"] == TASKS
    assert rec["resumed_at"] == [older]  # from the older checkpoint, not from scratch
    assert [t["position"] for t in rec["timings"]][-1] == TASKS - 1


# ---------------------------------------------------------------- a finished study: rerun, resume, overwrite
@pytest.fixture(scope="module")
def finished(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("life")
    path = write(root, study_dict(root, "life"))
    assert main(["run", str(path)]) == 0
    return root, path


def _stamps(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (root / "results" / "life" / "trials").glob("*.json")}


def test_a_plain_rerun_of_a_finished_study_is_refused_and_keeps_its_records(finished, capsys):
    root, path = finished
    before = _stamps(root)
    assert len(before) == 2
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "holds 2 trial records" in err and "--resume" in err and "--overwrite" in err
    assert _stamps(root) == before


def test_resume_allow_changes_keeps_only_the_trials_that_still_belong(finished, capsys):
    root, path = finished
    before = _stamps(root)
    assert main(["run", str(path), "--resume", "--set", "seeds=[0,1]"]) == 2
    assert "seeds [0] -> [0, 1]" in capsys.readouterr().err
    assert main(["run", str(path), "--resume", "--allow-changes", "--set", "seeds=[0,1]"]) == 0
    assert "resuming: 2 trials finished earlier are kept" in capsys.readouterr().out
    after = _stamps(root)
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())  # kept untouched, 2 new
    summary = json.loads((root / "results" / "life" / "summary.json").read_text())
    assert summary["trials_total"] == 4 and summary["seeds"] == [0, 1]
    # the method's params change: no earlier trial belongs any more; they are moved aside, not mixed in
    assert main(["run", str(path), "--resume", "--allow-changes", "--set", "seeds=[0,1]",
                 "--set", "methods.0.params.training.batch_size=16"]) == 0
    assert "4 earlier trials no longer belong" in capsys.readouterr().out
    assert set(_stamps(root)).isdisjoint(after)
    assert len(list((root / "results" / "life" / "stale").glob("*.json"))) == 4
    summary = json.loads((root / "results" / "life" / "summary.json").read_text())
    assert summary["trials_total"] == 4 and len(summary["configs"]) == 1


def test_overwrite_starts_over_and_moves_the_earlier_mlflow_tree_to_deleted(finished, capsys):
    root, path = finished
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("life")
    earlier = [r.info.run_id for r in client.search_runs([exp.experiment_id], "tags.`clorch.study` = 'life'",
                                                         max_results=1000)]
    assert earlier
    assert main(["run", str(path), "--overwrite"]) == 0
    assert all(client.get_run(r).info.lifecycle_stage == "deleted" for r in earlier)
    active = client.search_runs([exp.experiment_id], "tags.`clorch.study` = 'life'", max_results=1000)
    studies = [r for r in active if r.data.tags["clorch.level"] == "study"]
    trials = [r for r in active if r.data.tags["clorch.level"] == "trial"]
    assert len(studies) == 1 and len(trials) == 2 and not set(earlier) & {r.info.run_id for r in active}
    assert len(_stamps(root)) == 2
