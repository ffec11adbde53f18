"""`clorch submit` / `status` / `logs` against real servers on loopback.

A Ray head (`ray start --head` with its dashboard, the job server) and an
`mlflow server` are started on loopback for the module (tests/servers.py) and
stopped after.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cluster import jobs
from orchestrator.study.loading import parse_study
from servers import BIN, free_port, start_mlflow_server, start_ray_head, stop_group


@pytest.fixture(scope="module")
def job_server(tmp_path_factory):
    """A Ray head on loopback with its job server; yields the job server's http address."""
    dashboard = free_port()
    head, _ = start_ray_head(tmp_path_factory.mktemp("head") / "head.log", dashboard_port=dashboard)
    yield f"http://127.0.0.1:{dashboard}"
    stop_group(head)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on loopback with a SQLite store; yields its http URI."""
    server, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    stop_group(server)


def clorch(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "clorch"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


TINY = {
    "name": "tiny_job",
    "benchmark": {"name": "permuted_digits", "params": {"num_tasks": 2}},
    "orders": {"kind": "latin_square"},
    "methods": [{"name": "finetune", "params": {"epochs": 1, "optimizer": "adam", "lr": 0.01}}],
}


@pytest.fixture(scope="module")
def submitted(job_server, mlflow_server, tmp_path_factory):
    """The tiny study submitted as a Ray Job that logs to the MLflow server over HTTP."""
    tmp = tmp_path_factory.mktemp("submit")
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    proc = clorch("submit", "tiny.yaml", "--address", job_server, "--set", f"tracking.uri={mlflow_server}",
                  "--set", f"output_dir={tmp / 'results'}", cwd=tmp)
    return tmp, proc


def _job_id(proc) -> str:
    line = next(l for l in proc.stdout.splitlines() if l.startswith("submitted study"))
    return line.rsplit(" as job ", 1)[1].strip()


def test_submit_runs_the_study_on_the_cluster_and_waits_for_its_result(submitted, job_server):
    tmp, proc = submitted
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job = _job_id(proc)
    assert job.startswith("clorch-tiny_job-")
    assert "python -m orchestrator.cli run tiny.yaml --address auto" in proc.stdout
    assert "joined the Ray cluster at auto: 2 CPUs" in proc.stdout  # the driver ran on the head
    assert f"job {job}: SUCCEEDED (exit code 0); study tiny_job" in proc.stdout
    summary = json.loads((tmp / "results" / "tiny_job" / "summary.json").read_text())
    assert summary["trials_total"] == 2 and summary["trials_failed"] == 0


def test_the_job_logged_every_trial_to_the_mlflow_server_over_http(submitted, mlflow_server):
    tmp, proc = submitted
    assert proc.returncode == 0
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("tiny_job")
    trials = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'trial'")
    assert sorted(r.data.tags["clorch.trial_id"] for r in trials) == sorted(
        p.stem for p in (tmp / "results" / "tiny_job" / "trials").glob("*.json"))
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert all("acc" in r.data.metrics for r in trials)


def test_status_and_logs_follow_a_job_by_id(submitted, job_server):
    tmp, proc = submitted
    job = _job_id(proc)
    status = clorch("status", job, "--address", job_server, cwd=tmp)
    assert status.returncode == 0 and status.stdout.startswith(f"job {job}: SUCCEEDED"), status.stderr
    logs = clorch("logs", job, "--address", job_server, cwd=tmp)
    assert logs.returncode == 0 and "[2/2 done, " in logs.stdout and "results:" in logs.stdout
    followed = clorch("logs", job, "--address", job_server, "--follow", cwd=tmp)
    assert followed.returncode == 0 and f"job {job}: SUCCEEDED" in followed.stdout


def test_an_unknown_job_and_a_wrong_token_get_one_clear_message(submitted, job_server):
    tmp, _ = submitted
    unknown = clorch("status", "clorch-nope", "--address", job_server, cwd=tmp)
    assert unknown.returncode == 2 and "no job 'clorch-nope' on this cluster" in unknown.stderr
    wrong = clorch("status", "clorch-nope", "--address", job_server, cwd=tmp, env={"RAY_AUTH_TOKEN": "0" * 64})
    assert wrong.returncode == 2 and "rejected this machine's token (from $RAY_AUTH_TOKEN)" in wrong.stderr
    assert "Traceback" not in unknown.stderr + wrong.stderr


def test_a_bad_study_is_refused_before_anything_is_submitted(submitted, job_server):
    tmp, _ = submitted
    (tmp / "bad.yaml").write_text(yaml.safe_dump(dict(TINY, name="bad_job", methods=[{"name": "ewcc"}])))
    proc = clorch("submit", "bad.yaml", "--address", job_server, cwd=tmp)
    assert proc.returncode == 2 and "methods[0].name (got 'ewcc'): unknown method" in proc.stderr
    listed = subprocess.run([str(BIN / "ray"), "job", "list", "--address", job_server],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, RAY_AUTH_MODE="token"))
    assert "clorch-tiny_job-" in listed.stdout and "bad_job" not in listed.stdout


# ---- without servers ----
def test_nothing_listening_or_a_gcs_address_is_a_clear_error_in_seconds(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    started = time.monotonic()
    proc = clorch("submit", "tiny.yaml", "--address", f"http://127.0.0.1:{free_port()}", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "no Ray job server answered at http://127.0.0.1:" in proc.stderr
    assert time.monotonic() - started < 30
    gcs = clorch("status", "x", "--address", "127.0.0.1:6379", cwd=tmp_path, timeout=60)
    assert gcs.returncode == 2 and "is not a job server address" in gcs.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_no_address_anywhere_names_the_flag_and_the_variable(monkeypatch):
    for name in jobs.ADDRESS_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(jobs.JobError, match="pass --address http://HEAD:8265"):
        jobs.resolve_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.1:8265/")
    assert jobs.resolve_address(None) == "http://10.0.0.1:8265"
    assert jobs.resolve_address("http://127.0.0.1:9999") == "http://127.0.0.1:9999"  # the flag wins


def test_the_uploaded_working_dir_holds_the_study_and_this_clorchs_code_only(tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(yaml.safe_dump(TINY))
    staged = jobs.stage_working_dir(study, tmp_path / "wd")
    assert sorted(p.name for p in staged.iterdir()) == ["datasets", "methods", "orchestrator", "tiny.yaml"]
    assert (staged / "orchestrator" / "run" / "driver.py").read_text() == \
        (Path(jobs.__file__).parents[1] / "run" / "driver.py").read_text()
    assert not list(staged.rglob("__pycache__"))


def test_the_uploaded_working_dir_holds_the_studys_plugins_at_their_relative_paths(tmp_path):
    from orchestrator.study.loading import load_study

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "staged_plugin.py").write_text('"""a plugin that registers nothing"""\n')
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(yaml.safe_dump({**TINY, "plugins": ["lab/staged_plugin.py"]}))
    study = load_study(study_file)
    staged = jobs.stage_working_dir(study_file, tmp_path / "wd", study.plugin_refs)
    assert (staged / "lab" / "staged_plugin.py").read_text() == (tmp_path / "lab" / "staged_plugin.py").read_text()
    (tmp_path / "far_plugin.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.yaml").write_text(yaml.safe_dump({**TINY, "plugins": ["../far_plugin.py"]}))
    far = load_study(tmp_path / "sub" / "s.yaml")
    with pytest.raises(jobs.JobError, match="outside the study's folder"):
        jobs.stage_working_dir(tmp_path / "sub" / "s.yaml", tmp_path / "wd2", far.plugin_refs)
    assert jobs.entrypoint("tiny.yaml", ["seeds=[0,1]"], "/data", True) == \
        "python -m orchestrator.cli run tiny.yaml --address auto --set 'seeds=[0,1]' --data-root /data --resume"


def test_relative_paths_in_a_submitted_study_are_warned_about():
    warnings = jobs.path_warnings(parse_study(TINY), data_root=None)
    text = "\n".join(warnings)
    assert "tracking.uri 'sqlite:///mlflow.db'" in text and "output_dir 'results'" in text
    ok = parse_study(dict(TINY, output_dir="/mnt/shared/results", tracking={"uri": "http://127.0.0.1:5000"}))
    assert jobs.path_warnings(ok, data_root="/data") == []
