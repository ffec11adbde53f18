"""A small study through real Ray Tune and a real MLflow SQLite store, read back with the client.

One config diverges on purpose: the study must finish, keep every other
trial's full matrix, and record the failure in the files and in MLflow.
"""
import json

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.results import stats
from orchestrator.cli import main
from orchestrator.results.records import matrix_array

STUDY = {
    "name": "e2e",
    "benchmark": {"name": "split_digits", "params": {"classes_per_task": 2}},
    "orders": {"kind": "random", "count": 3, "seed": 1, "include_identity": True},
    "seeds": [0],
    "methods": [
        {"name": "finetune", "label": "ft",
         "params": {"optimizer": "sgd", "momentum": 0.9, "epochs": 1, "lr": {"grid": [0.02, 0.05]}}},
        {"name": "finetune", "label": "diverges", "params": {"lr": 10.0, "hidden": [2000, 2000], "epochs": 2}},
    ],
    "resources": {"cpu": 1},
}


@pytest.fixture(scope="module")
def finished_study(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    study = dict(STUDY, output_dir=str(root / "results"),
                 tracking={"uri": f"sqlite:///{root}/mlflow.db", "experiment": "e2e-exp"})
    path = root / "e2e.yaml"
    path.write_text(yaml.safe_dump(study))
    code = main(["run", str(path)])
    summary = json.loads((root / "results" / "e2e" / "summary.json").read_text())
    return code, root, summary, MlflowClient(tracking_uri=study["tracking"]["uri"])


def test_study_finishes_despite_a_failing_config_and_says_so(finished_study):
    code, root, summary, _ = finished_study
    assert code == 1  # some trials failed; everything else is kept
    assert summary["trials_total"] == 9 and summary["trials_failed"] == 3
    by_label = {}
    for e in summary["configs"]:
        by_label.setdefault(e["label"], []).append(e)
    assert len(by_label["ft"]) == 2 and len(by_label["diverges"]) == 1
    bad = by_label["diverges"][0]
    assert bad["trials_failed"] == 3 and bad["acc_mean"] is None and bad["R"] == 0


def test_every_completed_trial_has_its_full_matrix_on_disk(finished_study):
    _, root, summary, _ = finished_study
    files = sorted((root / "results" / "e2e" / "trials").glob("*.json"))
    assert len(files) == 9
    for f in files:
        rec = json.loads(f.read_text())
        if rec["label"] == "diverges":
            assert rec["status"] == "failed" and "TrainingDiverged" in rec["error"] and "lower lr" in rec["error"]
            continue
        A = matrix_array(rec)
        assert rec["status"] == "completed" and not np.isnan(A[-1]).any()
        for i, task in enumerate(rec["order"]):
            assert not np.isnan(A[i, task])
        assert len(rec["timings"]) == 5 and rec["params"]["training"]["batch_size"] == 32


def test_summary_statistics_equal_the_statistics_of_the_stored_matrices(finished_study):
    _, root, summary, _ = finished_study
    records = [json.loads(f.read_text()) for f in (root / "results" / "e2e" / "trials").glob("*.json")]
    for entry in summary["configs"]:
        mine = [r for r in records if r["config_id"] == entry["config_id"] and r["status"] == "completed"]
        if not mine:
            continue
        expected = stats.config_stats([matrix_array(r) for r in mine], [r["order"] for r in mine])
        assert entry["R"] == 3
        for key in ("acc_mean", "acc_std", "bwt_mean", "forgetting_mean", "task_acc_mean", "aopd", "mopd"):
            assert entry[key] == pytest.approx(expected[key]), key
        assert entry["opd_per_task"] == pytest.approx(expected["opd_per_task"])


def test_mlflow_has_study_config_and_trial_runs_nested(finished_study):
    _, _, summary, client = finished_study
    exp = client.get_experiment_by_name("e2e-exp")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    level = {}
    for r in runs:
        level.setdefault(r.data.tags["clorch.level"], []).append(r)
    assert len(level["study"]) == 1 and len(level["config"]) == 3 and len(level["trial"]) == 9
    study_id = level["study"][0].info.run_id
    config_ids = {r.info.run_id: r.data.tags["clorch.config_id"] for r in level["config"]}
    assert all(r.data.tags["mlflow.parentRunId"] == study_id for r in level["config"])
    for r in level["trial"]:
        parent = r.data.tags["mlflow.parentRunId"]
        assert config_ids[parent] == r.data.tags["clorch.config_id"]
    # one trial run per trial id, none duplicated
    assert len({r.data.tags["clorch.trial_id"] for r in level["trial"]}) == 9


def test_mlflow_trial_runs_hold_order_seed_metrics_and_matrix(finished_study):
    _, root, _, client = finished_study
    exp = client.get_experiment_by_name("e2e-exp")
    trials = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'trial'", max_results=100)
    for run in trials:
        rec = json.loads((root / "results" / "e2e" / "trials" / f"{run.data.tags['clorch.trial_id']}.json").read_text())
        assert json.loads(run.data.params["order"]) == rec["order"] and run.data.params["seed"] == "0"
        if rec["status"] == "failed":
            assert run.info.status == "FAILED" and "TrainingDiverged" in run.data.tags["clorch.error"]
            continue
        assert run.info.status == "FINISHED"
        assert "info_loss_last_epoch" in run.data.metrics  # what the method reported per task
        A = matrix_array(rec)
        assert run.data.metrics["acc"] == pytest.approx(np.nanmean(A[-1]))
        first = rec["order"][0]
        history = client.get_metric_history(run.info.run_id, f"acc_task_{first}")
        assert [m.step for m in history] == list(range(5))
        assert [m.value for m in history] == pytest.approx(list(A[:, first]))
        local = client.download_artifacts(run.info.run_id, "trial.json", str(root / "dl" / run.info.run_id))
        assert json.loads(open(local).read())["matrix"] == rec["matrix"]


def test_mlflow_config_runs_hold_the_robustness_statistics(finished_study):
    _, _, summary, client = finished_study
    exp = client.get_experiment_by_name("e2e-exp")
    configs = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'config'")
    entries = {e["config_id"]: e for e in summary["configs"]}
    for run in configs:
        e = entries[run.data.tags["clorch.config_id"]]
        if e["acc_mean"] is None:
            assert run.info.status == "FAILED"
            continue
        for key in ("acc_mean", "acc_std", "aopd", "mopd", "R"):
            assert run.data.metrics[key] == pytest.approx(e[key])
        assert run.data.params["optimizer.lr"] == json.dumps(e["params"]["optimizer"]["lr"])


def test_report_is_written_and_logged_to_the_study_run(finished_study):
    _, root, _, client = finished_study
    exp = client.get_experiment_by_name("e2e-exp")
    study_run = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'study'")[0].info.run_id
    assert (root / "results" / "e2e" / "report.md").exists() and \
        "report/report.md" in {a.path for a in client.list_artifacts(study_run, "report")}
