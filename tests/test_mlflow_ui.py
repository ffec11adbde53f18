"""MLflow as the study's web page: the tree, names, times, params and artifacts a person finds there.

A tiny searched study runs against a real `mlflow server` on loopback (artifacts proxied by the server, as on a
cluster) and is read back through the server's REST API alone, the way the UI reads it: the experiment's kind,
description and shared view; a config run per config named by label (``#k`` within a search) and a trial run per
trial named ``<config> o<r> s<seed>`` (``f<r>`` on fresh orders); real start and end times; per-task metrics as
steps; only non-default params, all of them in params.json; the heatmap, CSV and figures readable. Then
``clorch report`` with the results directory gone, twice: it updates the study run's report (stale figures
deleted) and adds no run; and ``--overwrite`` leaves one visible tree.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.results.tracking import (EXPERIMENT_KIND_TAG, NOTE_TAG, TRAINING_KIND, VIEW_TAG_PREFIX,
                                           StudyTracker, non_default, trial_slot, ui_path, view_key)
from orchestrator.results.records import ClassificationRecord
from orchestrator.study.schema import Config, TrialSpec
from servers import start_mlflow_server, stop_group

PNG = b"\x89PNG\r\n\x1a\n"

STUDY = {
    "name": "ui",
    "benchmark": {"name": "permuted_digits", "params": {"num_tasks": 3}},
    "orders": {"kind": "random", "count": 2, "seed": 0, "include_identity": True},
    "seeds": [0],
    "methods": [
        {"name": "finetune", "label": "ft",
         "params": {"training": {"epochs": 1}, "optimizer": {"name": "sgd", "lr": {"grid": [0.01, 0.05]}}}},
        {"name": "finetune", "label": "plain", "params": {"training": {"epochs": 1}}},
    ],
    "search": {"final_orders": {"kind": "random", "count": 1, "seed": 7}},
    "resources": {"cpu": 1},
}


class Rest:
    """The MLflow server's REST API, as the UI calls it."""

    def __init__(self, base: str):
        self.base = base

    def get(self, endpoint: str, **query) -> dict:
        with urllib.request.urlopen(f"{self.base}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}",
                                    timeout=60) as r:
            return json.loads(r.read())

    def post(self, endpoint: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.base}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def experiment(self, name: str) -> dict:
        return self.get("experiments/get-by-name", experiment_name=name)["experiment"]

    def runs(self, experiment_id: str, study: str, view: str = "ACTIVE_ONLY") -> list[dict]:
        return self.post("runs/search", {"experiment_ids": [experiment_id], "max_results": 1000, "run_view_type": view,
                                         "filter": f"tags.`clorch.study` = '{study}'"}).get("runs", [])

    def artifacts(self, run_id: str, path: str = "") -> list[str]:
        files = self.get("artifacts/list", run_id=run_id, **({"path": path} if path else {})).get("files", [])
        return [f["path"] for f in files]

    def artifact(self, run_id: str, path: str) -> bytes:
        """A file as the UI's artifact viewer fetches it."""
        with urllib.request.urlopen(f"{self.base}/get-artifact?{urllib.parse.urlencode({'path': path, 'run_uuid': run_id})}",
                                    timeout=60) as r:
            return r.read()

    def history(self, run_id: str, key: str) -> list[dict]:
        return self.get("metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def by_level(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(tags(r)["clorch.level"], []).append(r)
    return out


@pytest.fixture(scope="module")
def served_study(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    server, uri = start_mlflow_server(root, timeout_s=300)
    try:
        study = dict(STUDY, output_dir=str(root / "results"), tracking={"uri": uri})
        path = root / "ui.yaml"
        path.write_text(yaml.safe_dump(study))
        assert main(["run", str(path)]) == 0
        yield root, path, uri, Rest(uri)
    finally:
        stop_group(server)


def test_the_experiment_opens_as_a_training_experiment_with_a_description_and_a_view(served_study):
    _, _, _, rest = served_study
    exp = rest.experiment("ui")
    t = {x["key"]: x["value"] for x in exp["tags"]}
    assert t[EXPERIMENT_KIND_TAG] == TRAINING_KIND == "custom_model_development"
    assert "clorch study `ui`" in t[NOTE_TAG] and ui_path(exp["experiment_id"], "ui") in t[NOTE_TAG]
    view = json.loads(t[VIEW_TAG_PREFIX + view_key("ui")])
    assert {"metrics.`acc`", "metrics.`aopd`", "metrics.`mopd`", "params.`order`"} <= set(view["selectedColumns"])
    assert view["orderByKey"] == "tags.`mlflow.runName`"
    assert ui_path(exp["experiment_id"], "ui").endswith("workflowType=machine_learning&viewStateShareKey=clorch-ui")


def test_config_runs_are_named_by_label_and_trial_runs_by_config_order_and_seed(served_study):
    root, _, _, rest = served_study
    runs = by_level(rest.runs(rest.experiment("ui")["experiment_id"], "ui"))
    assert len(runs["study"]) == 1 and runs["study"][0]["info"]["run_name"] == "ui"
    configs = {r["info"]["run_id"]: r for r in runs["config"]}
    names = {r["info"]["run_name"] for r in configs.values()}
    assert names == {"ft #1", "ft #2", "plain", "ft@fresh"}
    ft1 = next(r for r in configs.values() if r["info"]["run_name"] == "ft #1")
    assert "optimizer.lr" in params(ft1) and tags(ft1)["clorch.label"] == "ft"
    trials = runs["trial"]
    assert len(trials) == 3 * 2 + 1 and len({r["info"]["run_name"] for r in trials}) == len(trials)
    for r in trials:
        parent = configs[tags(r)["mlflow.parentRunId"]]
        m = re.fullmatch(r"(.+) ([of])(\d) s0", r["info"]["run_name"])
        assert m and m[1] == parent["info"]["run_name"], r["info"]["run_name"]
        assert (m[2] == "f") == parent["info"]["run_name"].endswith("@fresh")
        rec = json.loads((root / "results" / "ui" / "trials" / f"{tags(r)['clorch.trial_id']}.json").read_text())
        assert json.loads(params(r)["order"]) == rec["order"] and int(m[3]) == rec["order_index"]


def test_trial_runs_start_and_end_when_the_trial_did(served_study):
    root, _, _, rest = served_study
    for r in by_level(rest.runs(rest.experiment("ui")["experiment_id"], "ui"))["trial"]:
        rec = json.loads((root / "results" / "ui" / "trials" / f"{tags(r)['clorch.trial_id']}.json").read_text())
        start, end = int(r["info"]["start_time"]), int(r["info"]["end_time"])
        assert start == int(rec["started_at"] * 1000)
        assert end - start == pytest.approx(rec["wall_s"] * 1000, abs=2) and end - start > 0


def test_per_task_metrics_are_steps_and_only_non_default_params_are_logged(served_study):
    root, _, _, rest = served_study
    trial = next(r for r in by_level(rest.runs(rest.experiment("ui")["experiment_id"], "ui"))["trial"]
                 if tags(r)["clorch.status"] == "completed")
    rec = json.loads((root / "results" / "ui" / "trials" / f"{tags(trial)['clorch.trial_id']}.json").read_text())
    first = rec["order"][0]
    history = rest.history(trial["info"]["run_id"], f"acc_task_{first}")
    assert [int(m["step"]) for m in history] == [0, 1, 2]
    assert [m["value"] for m in history] == pytest.approx([row[first] for row in rec["matrix"]])
    stamps = [int(m["timestamp"]) for m in sorted(history, key=lambda m: int(m["step"]))]
    assert stamps == sorted(stamps) and stamps[0] >= int(trial["info"]["start_time"])
    seen = rest.history(trial["info"]["run_id"], "acc_seen")
    assert len(seen) == 3 and seen[-1]["value"] == pytest.approx(metrics(trial)["acc"])
    logged = params(trial)
    assert {"method", "order", "order_index", "seed", "training.epochs"} <= set(logged)
    assert "training.batch_size" not in logged and "network.backbone" not in logged  # defaults: in params.json
    assert len(logged) <= 8
    full = json.loads(rest.artifact(trial["info"]["run_id"], "params.json"))
    assert full["training"]["batch_size"] == 32 and full == rec["params"]


def test_trial_and_config_artifacts_are_there_and_readable(served_study):
    root, _, _, rest = served_study
    runs = by_level(rest.runs(rest.experiment("ui")["experiment_id"], "ui"))
    trial = next(r for r in runs["trial"] if tags(r)["clorch.status"] == "completed")
    tid = trial["info"]["run_id"]
    assert set(rest.artifacts(tid)) == {"trial.json", "params.json", "matrix.png", "matrix.csv"}
    assert rest.artifact(tid, "matrix.png").startswith(PNG)
    rec = json.loads(rest.artifact(tid, "trial.json"))
    rows = list(csv.DictReader(io.StringIO(rest.artifact(tid, "matrix.csv").decode())))
    assert [int(r["task_learned"]) for r in rows] == rec["order"]
    last = rows[-1]
    assert [float(last[f"task_{j}"]) for j in range(3)] == pytest.approx(rec["matrix"][-1], abs=0.006)
    for config in runs["config"]:
        cid = config["info"]["run_id"]
        assert {"params.json", "summary_entry.json", "learning_curve.png", "opd_per_task.png"} <= set(rest.artifacts(cid))
        assert rest.artifact(cid, "learning_curve.png").startswith(PNG)
        assert rest.artifact(cid, "opd_per_task.png").startswith(PNG)
        assert {"acc", "bwt", "forgetting", "aopd", "mopd", "R"} <= set(metrics(config))
    study_run = runs["study"][0]["info"]["run_id"]
    assert {"params.json", "summary.json", "report"} <= set(rest.artifacts(study_run))
    assert "report/report.md" in rest.artifacts(study_run, "report")


def test_report_without_results_updates_the_study_runs_report_and_adds_no_run(served_study, monkeypatch, capsys):
    root, _, uri, rest = served_study
    eid = rest.experiment("ui")["experiment_id"]
    before = {r["info"]["run_id"] for r in rest.runs(eid, "ui")}
    study_run = by_level(rest.runs(eid, "ui"))["study"][0]["info"]["run_id"]
    from mlflow import MlflowClient

    stale = root / "stale_figure.png"
    stale.write_bytes(PNG)
    MlflowClient(tracking_uri=uri).log_artifact(study_run, str(stale), "report/figures")  # an earlier report's
    shutil.rmtree(root / "results")
    elsewhere = root / "elsewhere"
    for _ in range(2):
        assert main(["report", "ui", "--results-dir", str(elsewhere), "--tracking-uri", uri, "--resamples", "50"]) == 0
    assert f"updated in MLflow study run {study_run}" in capsys.readouterr().out
    assert {r["info"]["run_id"] for r in rest.runs(eid, "ui")} == before
    figures = rest.artifacts(study_run, "report/figures")
    assert figures and "report/figures/stale_figure.png" not in figures
    assert {p.rsplit("/", 1)[-1] for p in figures} == {p.name for p in (elsewhere / "ui" / "figures").glob("*.png")}
    run = rest.get("runs/get", run_id=study_run)["run"]
    assert "clorch.report_updated" in tags(run)


def test_overwrite_leaves_one_visible_tree(served_study):
    _, path, _, rest = served_study
    eid = rest.experiment("ui")["experiment_id"]
    before = {r["info"]["run_id"] for r in rest.runs(eid, "ui")}
    assert main(["run", str(path), "--overwrite"]) == 0
    active = rest.runs(eid, "ui")
    assert len(by_level(active)["study"]) == 1 and len(active) == len(before)
    assert not before & {r["info"]["run_id"] for r in active}
    deleted = {r["info"]["run_id"] for r in rest.runs(eid, "ui", view="DELETED_ONLY")}
    assert before <= deleted


# ---------------------------------------------------------------- without a server


def test_non_default_keeps_what_differs_and_every_searched_path():
    defaults = {"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.0}, "training": {"epochs": 5}, "penalties": []}
    given = {"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}, "training": {"epochs": 5},
             "penalties": [{"name": "l2", "lambda": 1.0}]}
    assert non_default(given, defaults) == {"optimizer.momentum": 0.9, "penalties.0.name": "l2",
                                            "penalties.0.lambda": 1.0}
    assert non_default(given, defaults, keep=["optimizer.lr"])["optimizer.lr"] == 0.01
    assert len(non_default(given, None)) == 6


def test_trial_slot_reads_the_order_tag_index_and_seed_off_the_trial_id():
    assert trial_slot("ft-1a2b3c4d-o3-s0", 3, 0) == "o3 s0"
    assert trial_slot("ft-1a2b3c4d@fresh-f0-s2", 0, 2) == "f0 s2"
    assert trial_slot("hand-written", 4, 1) == "o4 s1"


def test_a_labels_second_config_renames_the_first_and_the_names_survive_a_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = Config("ft-aaaa", "ft", "finetune", {"optimizer": {"lr": 0.01}}, {"optimizer.lr": 0.01})
    b = Config("ft-bbbb", "ft", "finetune", {"optimizer": {"lr": 0.05}}, {"optimizer.lr": 0.05})
    c = Config("ft-cccc", "ft", "finetune", {"optimizer": {"lr": 0.1}}, {"optimizer.lr": 0.1})
    tracker = StudyTracker(uri, "names", "names", {}, [a])
    name = lambda cid, t=tracker: t.client.get_run(t.config_runs[cid]).info.run_name  # noqa: E731
    assert name("ft-aaaa") == "ft"
    spec = TrialSpec("ft-aaaa-o1-s0", "ft-aaaa", "ft", "finetune", a.params, (1, 0), 1, 0, "task_incremental", False)
    trial = tracker.log_trial(ClassificationRecord.from_rows(spec, [], 2, status="failed", error="boom"))
    assert tracker.client.get_run(trial).info.run_name == "ft o1 s0"
    tracker.ensure_config(b)  # a search found a second config of the label: the first and its trials are renamed
    assert (name("ft-aaaa"), name("ft-bbbb")) == ("ft #1", "ft #2")
    assert tracker.client.get_run(trial).info.run_name == "ft #1 o1 s0"
    again = StudyTracker(uri, "names", "names", {}, [a, b, c], resume=True)
    assert [name(cid, again) for cid in ("ft-aaaa", "ft-bbbb", "ft-cccc")] == ["ft #1", "ft #2", "ft #3"]


def test_cli_report_finds_the_mlflow_db_here_when_the_results_are_gone(tmp_path, monkeypatch, capsys):
    """`clorch report STUDY` in the folder a study ran in, its results directory deleted: ./mlflow.db."""
    from mlflow import MlflowClient
    from test_report import CONFIGS, synthetic_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    records = synthetic_study(tmp_path / "results" / "syn", R=3, seeds=(0,), fail=None)
    configs = [Config(cid, label, "finetune", p, {}) for label, cid, p, _, _ in CONFIGS]
    tracker = StudyTracker("sqlite:///mlflow.db", "syn", "syn", {"benchmark": "synthetic"}, configs)
    for rec in records:
        tracker.log_trial(rec)
    shutil.rmtree(tmp_path / "results")
    client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
    before = len(client.search_runs([tracker.experiment_id], max_results=1000))
    assert main(["report", "syn", "--resamples", "50"]) == 0
    assert main(["report", "syn", "--resamples", "50"]) == 0
    captured = capsys.readouterr()
    assert "sqlite:///mlflow.db (found here" in captured.err
    assert f"updated in MLflow study run {tracker.study_run}" in captured.out
    assert (tmp_path / "results" / "syn" / "report.md").exists()
    assert len(client.search_runs([tracker.experiment_id], max_results=1000)) == before
    assert "report/report.md" in {a.path for a in client.list_artifacts(tracker.study_run, "report")}


def test_the_installed_mlflow_ui_reads_the_tags_and_query_clorch_writes():
    """Guards an MLflow upgrade: the UI bundle still knows the experiment kind tag and its training value, the
    shared-view tag prefix and key, and the workflowType query (checked in a real browser by
    tools/mlflow_screenshots.py)."""
    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="ignore") for p in bundle.glob("main.*.js"))
    for needle in (EXPERIMENT_KIND_TAG, TRAINING_KIND, VIEW_TAG_PREFIX, "viewStateShareKey", "workflowType",
                   "machine_learning"):
        assert needle in text, needle
