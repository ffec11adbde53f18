"""A trial no node can take ends the study with a clear error instead of waiting forever."""
from __future__ import annotations

import pytest

from orchestrator.run.callbacks import SchedulingWatch, Unschedulable


def test_the_watch_starts_when_trials_wait_with_none_running_and_resets_when_one_runs():
    now = [0.0]
    watch = SchedulingWatch(10.0, cpu=1, gpu=1, clock=lambda: now[0])
    watch.observe(pending=2, running=0)
    now[0] = 9.0
    watch.observe(pending=2, running=0)  # 9 s idle: still waiting
    watch.observe(pending=1, running=1)  # one runs: the clock resets
    now[0] = 15.0
    watch.observe(pending=1, running=0)  # idle again from 15 s
    now[0] = 24.0
    watch.observe(pending=1, running=0)
    now[0] = 25.5
    with pytest.raises(Unschedulable, match=r"1 trial\(s\) waited 10 s with none running: no node can give "
                                            r"1 CPU / 1 GPU per trial \(resources.cpu / resources.gpu\)"):
        watch.observe(pending=1, running=0)
    watch.observe(pending=0, running=0)  # nothing pending: nothing to watch


def test_a_gpu_trial_on_a_cpu_only_ray_ends_the_study_after_the_timeout(ray_local, tmp_path):
    """run_study on an embedded Ray that has no GPU (the CLI's preflight would refuse it first)."""
    from mlflow import MlflowClient

    from orchestrator.run.driver import run_study
    from orchestrator.study.loading import parse_study

    study = parse_study({
        "name": "nogpu", "benchmark": {"name": "split_digits", "params": {"classes_per_task": 5}},
        "orders": {"kind": "latin_square"}, "methods": [{"name": "finetune", "params": {"training": {"epochs": 1}}}],
        "resources": {"cpu": 1, "gpu": 1, "schedule_timeout_s": 3},
        "output_dir": str(tmp_path / "results"), "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    with pytest.raises(Unschedulable, match="resources.schedule_timeout_s"):
        run_study(study)
    assert not (tmp_path / "results" / "nogpu" / "summary.json").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("nogpu").experiment_id])
    assert runs and all(r.info.status != "RUNNING" for r in runs)  # nothing left RUNNING


def test_the_progress_line_counts_and_estimates_from_finished_trial_times(capsys, tmp_path):
    from types import SimpleNamespace

    from orchestrator.run.recorder import StudyRecorder

    rec = StudyRecorder(tmp_path, SimpleNamespace(), 5, "classification", {})
    rec.expect(10)
    rec.set_counts(pending=8, running=2)
    rec._progress(None)
    assert "[0/10 done, 2 running, 8 pending] elapsed 0:00:00, ETA --" in capsys.readouterr().out
    rec.records = {f"t{i}": SimpleNamespace(status="completed") for i in range(4)}
    rec.trial_seconds = [30.0, 30.0, 30.0, 30.0]  # 4 done; 6 left, 2 at once: 6 * 30 / 2 = 90 s
    rec._progress(None)
    assert "[4/10 done, 2 running, 8 pending] elapsed 0:00:00, ETA 0:01:30" in capsys.readouterr().out
