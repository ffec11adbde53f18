"""Searches through real Ray Tune and MLflow: Optuna TPE over orders with a fresh-order re-run, and ASHA."""
import json

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.cli import main


def run(root, study):
    study = dict(study, output_dir=str(root / "results"), tracking={"uri": f"sqlite:///{root}/mlflow.db"})
    path = root / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study))
    code = main(["run", str(path)])
    summary = json.loads((root / "results" / study["name"] / "summary.json").read_text())
    return code, summary, MlflowClient(tracking_uri=study["tracking"]["uri"])


def trial_runs(client, study_name):
    exp = client.get_experiment_by_name(study_name)
    return client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'trial'", max_results=1000)


@pytest.fixture(scope="module")
def optuna_study(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("optuna")
    return run(root, {
        "name": "tpe",
        "benchmark": {"name": "split_digits"},
        "orders": {"kind": "random", "count": 2, "seed": 0},
        "methods": [{"name": "finetune", "label": "ft",
                     "params": {"epochs": 1, "optimizer": "adam",
                                "lr": {"loguniform": [1e-4, 3e-2]}, "hidden": {"choice": [[32], [64, 64]]}}},
                    {"name": "finetune", "label": "fixed", "params": {"epochs": 1}}],
        "search": {"algorithm": "optuna", "num_samples": 3, "seed": 1, "objective": {"kind": "worst_acc"},
                   "final_orders": {"kind": "random", "count": 2, "seed": 0}},
    })


def test_optuna_runs_every_config_on_every_order_and_picks_by_the_objective(optuna_study):
    code, summary, _ = optuna_study
    assert code == 0
    searched = [e for e in summary["configs"] if e["label"] == "ft"]
    assert len(searched) == 3 and all(e["R"] == 2 and e["trials"] == 2 for e in searched)
    assert all(isinstance(e["searched"]["hidden"], list) for e in searched)  # categorical lists survive Optuna
    best = summary["best"]["ft"]
    assert best["objective"] == max(e["objective"] for e in searched)  # worst-order ACC of the winner
    winner = next(e for e in searched if e["config_id"] == best["config_id"])
    assert best["objective"] <= winner["val"]["acc_mean"]  # chosen on validation: the worst order is at most the mean


def test_a_search_keeps_every_slot_busy(optuna_study):
    """Ray Tune holds one trial pending at a time for a custom searcher unless it is capped; uncapped, a
    search ran one trial after another. Capped at the slots (2 CPUs, 1 per trial), trials overlap."""
    _, summary, client = optuna_study
    searched = {e["config_id"] for e in summary["configs"] if e["label"] == "ft"}
    spans = sorted((r.info.start_time, r.info.end_time) for r in trial_runs(client, "tpe")
                   if r.data.tags.get("clorch.config_id") in searched)
    assert len(spans) == 6
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # two ran at once


def test_trial_slots_count_what_the_cluster_holds_now(monkeypatch):
    import ray

    from orchestrator.run.driver import trial_slots
    from orchestrator.study.schema import Study

    base = {"name": "s", "benchmark": {"name": "split_digits"}, "orders": {"kind": "random", "count": 2},
            "methods": [{"name": "finetune"}]}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    assert trial_slots(Study.model_validate({**base, "resources": {"cpu": 3, "gpu": 0}})) == 5
    assert trial_slots(Study.model_validate({**base, "resources": {"cpu": 1, "gpu": 0.25}})) == 8
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    assert trial_slots(Study.model_validate({**base, "resources": {"cpu": 2, "gpu": 0}})) == 1  # never 0


def test_the_winner_is_re_run_on_fresh_orders_and_both_estimates_are_in_the_summary(optuna_study):
    _, summary, _ = optuna_study
    fresh_orders = {tuple(o) for o in summary["final_orders"]}
    assert len(fresh_orders) == 2 and not fresh_orders & {tuple(o) for o in summary["orders"]}
    rerun = next(e for e in summary["configs"] if e["label"] == "ft@fresh")
    best = summary["best"]["ft"]
    assert rerun["config_id"] == best["config_id"] + "@fresh" and rerun["R"] == 2
    assert best["fresh"]["objective"] == rerun["objective"] and best["fresh"]["R"] == 2
    assert "fixed" in summary["best"] and "fresh" not in summary["best"]["fixed"]  # one config: nothing chosen
    assert summary["trials_total"] == 3 * 2 + 2 + 2


def test_the_report_names_the_winner_by_the_objective_and_its_fresh_order_estimate(optuna_study, tmp_path_factory):
    _, summary, _ = optuna_study
    root = next(p for p in tmp_path_factory.getbasetemp().iterdir() if p.name.startswith("optuna"))
    report = (root / "results" / "tpe" / "report.md").read_text()
    line = next(l for l in report.splitlines() if l.startswith("- best ft by worst-order ACC"))
    fresh = summary["best"]["ft"]["fresh"]
    assert f"re-run on {fresh['R']} fresh orders" in line
    assert f"objective {fresh['objective']:.2f}, ACC" in line, line


def test_one_mlflow_run_per_trial_including_the_searched_and_fresh_ones(optuna_study):
    _, summary, client = optuna_study
    runs = trial_runs(client, "tpe")
    ids = [r.data.tags["clorch.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == summary["trials_total"]
    assert sum(i.startswith("ft-") and "@fresh-f" in i for i in ids) == 2


def test_a_resumed_optuna_search_keeps_its_configs_and_only_runs_the_rest_of_the_budget(optuna_study, tmp_path_factory):
    _, before, client = optuna_study
    root = next(p for p in tmp_path_factory.getbasetemp().iterdir() if p.name.startswith("optuna"))
    trials = root / "results" / "tpe" / "trials"
    stamps = {p.name: p.stat().st_mtime_ns for p in trials.glob("*.json")}
    assert main(["run", str(root / "tpe.yaml"), "--resume", "--set", "search.num_samples=4"]) == 0
    after = json.loads((root / "results" / "tpe" / "summary.json").read_text())
    searched = [e for e in after["configs"] if e["label"] == "ft"]
    assert len(searched) == 4  # the 3 earlier configs (warm start for TPE) and one new one
    assert {e["config_id"] for e in before["configs"]} <= {e["config_id"] for e in after["configs"]}
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in trials.glob("*.json") if p.name in stamps)
    ids = [r.data.tags["clorch.trial_id"] for r in trial_runs(client, "tpe")]
    assert len(ids) == len(set(ids)) == after["trials_total"]


def test_asha_stops_poor_trials_early_as_stopped_not_failed(ray_local, tmp_path):
    code, summary, client = run(tmp_path, {
        "name": "asha",
        "benchmark": {"name": "permuted_digits", "params": {"num_tasks": 4}},
        "orders": {"kind": "random", "count": 2, "seed": 0},
        "methods": [{"name": "finetune", "params": {"epochs": 1, "optimizer": "adam",
                                                    "lr": {"grid": [0.01, 0.003, 1e-6, 2e-6]}}}],
        "search": {"scheduler": {"kind": "asha", "grace_tasks": 1, "reduction_factor": 2},
                   "max_concurrent": 1},
    })
    assert code == 0  # stopping is the scheduler's decision, not a failure
    assert summary["trials_failed"] == 0 and summary["trials_stopped"] >= 1
    by_lr = {e["params"]["optimizer"]["lr"]: e for e in summary["configs"]}
    assert by_lr[1e-6]["trials_stopped"] + by_lr[2e-6]["trials_stopped"] >= 1  # the hopeless ones
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "asha" / "trials").glob("*.json")]
    for r in records:
        if r["status"] == "stopped":  # kept with the tasks it finished, and says why
            assert 1 <= r["tasks_done"] < 4 and "stopped early by ASHA" in r["error"]
            assert all(v is None for v in r["matrix"][-1])
    for b in summary["best"].values():  # a config stopped on some order is never the winner
        assert next(e for e in summary["configs"] if e["config_id"] == b["config_id"])["trials_stopped"] == 0
    stopped = [r for r in trial_runs(client, "asha") if r.data.tags["clorch.status"] == "stopped"]
    assert len(stopped) == summary["trials_stopped"] and all(r.info.status == "KILLED" for r in stopped)
