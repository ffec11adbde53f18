"""MLflow records of a study, written only by the driver.

One experiment per study; a study run; under it a run per method config with
its robustness statistics; under each config run a run per trial with its
order, seed, per-task metrics and accuracy matrix. Trial runs are written as
trials finish, so an interrupted study keeps what it finished.
"""
from __future__ import annotations

import json
import time
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from orchestrator.results.records import TrialRecord
from orchestrator.results.store import clean
from orchestrator.study.redact import redact_value
from orchestrator.study.schema import Config

_MAX_PARAM = 6000


def _params(d: dict[str, Any], prefix: str = "") -> list[Param]:
    """MLflow params by dotted path (``optimizer.lr``, ``penalties.0.lambda``), so the UI can filter and sort
    on a component's field; lists of plain values (``network.hidden``) and other leaves as JSON text."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _params(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out += _params({str(i): x for i, x in enumerate(v)}, f"{prefix}{k}.")
        else:
            v = redact_value(str(k), v)  # never store a credential in MLflow
            out.append(Param(f"{prefix}{k}", (v if isinstance(v, str) else json.dumps(v))[:_MAX_PARAM]))
    return out


def _metrics(d: dict[str, Any], step: int = 0, prefix: str = "") -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(f"{prefix}{k}", float(v), now, step) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]


class StudyTracker:
    """The driver's MLflow writer. Runs are keyed by id tags, never by name.

    ``resume``: continue the latest study run of this study in the experiment
    (its config runs and trial runs are found by their ``clorch.*`` tags), so
    a resumed study adds to the same tree and a trial never gets two runs.
    """

    def __init__(self, uri: str, experiment: str, study_name: str, study_params: dict[str, Any],
                 configs: list[Config], resume: bool = False):
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.study_name = study_name
        self.tags = {"clorch.study": study_name}
        self.config_runs: dict[str, str] = {}
        self.trial_runs: dict[str, tuple[str, str]] = {}  # trial id -> (run id, clorch.status)
        previous = self._latest_study_run() if resume else None
        if previous is not None:
            self.study_run = previous
            self.client.update_run(previous, status="RUNNING")
            for run in self._children(f"tags.`clorch.level` = 'config' and tags.`mlflow.parentRunId` = '{previous}'"):
                self.config_runs[run.data.tags["clorch.config_id"]] = run.info.run_id
            for run in self._children("tags.`clorch.level` = 'trial'"):
                if run.data.tags.get("mlflow.parentRunId") in self.config_runs.values():
                    # a run the driver died writing (tagged, never terminated) counts as not logged: redone
                    ended = run.info.status in ("FINISHED", "FAILED", "KILLED")
                    self.trial_runs[run.data.tags["clorch.trial_id"]] = (
                        run.info.run_id, run.data.tags.get("clorch.status", "") if ended else "")
        else:
            self.study_run = self._run(study_name, {**self.tags, "clorch.level": "study"})
            self.client.log_batch(self.study_run, params=_params(study_params))
        for c in configs:
            self.ensure_config(c)

    def _latest_study_run(self) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`clorch.study` = '{self.study_name}' and tags.`clorch.level` = 'study'",
            order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def _children(self, query: str) -> list:
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`clorch.study` = '{self.study_name}' and {query}",
                                           max_results=1000, page_token=token)
            out += list(page)
            token = page.token
            if not token:
                return out

    def ensure_config(self, c: Config) -> str:
        """The config's run, created the first time a config is seen (searches find configs as they go)."""
        if c.config_id not in self.config_runs:
            run = self._run(c.config_id, {**self.tags, "clorch.level": "config", "clorch.config_id": c.config_id,
                                          "clorch.method": c.method, "mlflow.parentRunId": self.study_run})
            self.client.log_batch(run, params=_params(c.params) + [Param("method", c.method)])
            self.config_runs[c.config_id] = run
        return self.config_runs[c.config_id]

    def has_finished_trial(self, trial_id: str) -> bool:
        return self.trial_runs.get(trial_id, ("", ""))[1] == "completed"

    def _run(self, name: str, tags: dict[str, str]) -> str:
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def log_trial(self, record: TrialRecord, config: Config | None = None) -> str:
        """One run per trial id: a trial rerun after a failure replaces its earlier (failed) run."""
        if config is not None:
            self.ensure_config(config)
        earlier = self.trial_runs.pop(record.trial_id, None)
        if earlier is not None:
            self.client.delete_run(earlier[0])
        run = self._run(record.trial_id, {
            "clorch.study": self.study_name, "clorch.level": "trial", "clorch.trial_id": record.trial_id,
            "clorch.config_id": record.config_id, "mlflow.parentRunId": self.config_runs[record.config_id]})
        params = {"method": record.method, "order": list(record.order), "order_index": record.order_index,
                  "seed": record.seed, "setting": record.setting, **record.params}
        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for name, value, step in record.mlflow_metrics()]
        self.client.log_batch(run, metrics=metrics, params=_params(params),
                              tags=[RunTag("clorch.status", record.status)])
        self.client.log_dict(run, clean(record.to_json()), "trial.json")
        if record.error:
            self.client.set_tag(run, "clorch.error", record.error[:5000])
        self.client.set_terminated(run, {"completed": "FINISHED", "stopped": "KILLED"}.get(record.status, "FAILED"))
        self.trial_runs[record.trial_id] = (run, record.status)
        return run

    def log_config(self, config_id: str, entry: dict[str, Any]) -> None:
        run = self.config_runs[config_id]
        stats = {k: v for k, v in entry.items() if k not in ("opd_per_task", "window_mse_mean")}
        stats.update({f"opd_task_{j}": v for j, v in enumerate(entry.get("opd_per_task") or [])})
        stats.pop("curve", None)
        curve = [m for i, v in enumerate(entry.get("curve") or []) for m in _metrics({"curve": v}, step=i)]
        self.client.log_batch(run, metrics=_metrics(stats) + curve)
        self.client.log_dict(run, clean(entry), "summary_entry.json")
        ok = entry.get("acc_mean", entry.get("mse_mean")) is not None
        self.client.set_terminated(run, "FINISHED" if ok else "FAILED")

    def log_paired(self, block: dict[str, Any] | None) -> None:
        """The summary's paired comparisons on each compared config's run: ``paired_dacc``, its interval
        ``paired_dacc_lo`` / ``paired_dacc_hi``, ``paired_p`` (and Holm's ``paired_p_holm``, the number of
        orders paired ``paired_R``); the baseline's label and config id as tags."""
        for row in (block or {}).get("configs", []):
            run = self.config_runs.get(row["config_id"])
            if run is None:
                continue
            values = {"paired_dacc": row["dacc"], "paired_dacc_lo": row["dacc_lo"], "paired_dacc_hi": row["dacc_hi"],
                      "paired_p": row["p"], "paired_p_holm": row.get("p_holm"), "paired_R": row["R"],
                      "paired_dforgetting": row["dforgetting"]}
            self.client.log_batch(run, metrics=_metrics({k: v for k, v in values.items() if v is not None}),
                                  tags=[RunTag("clorch.paired_baseline", block["baseline"]),
                                        RunTag("clorch.paired_baseline_config", block["baseline_config_id"])])

    def interrupt(self) -> None:
        """The study was stopped by a signal: its study run and config runs end KILLED (trial runs are
        terminated as they are logged), so no run stays RUNNING; ``--resume`` sets the study run RUNNING again."""
        for run in self.config_runs.values():
            if self.client.get_run(run).info.status == "RUNNING":
                self.client.set_terminated(run, "KILLED")
        self.client.set_terminated(self.study_run, "KILLED")

    def finish(self, summary: dict[str, Any], failed: bool) -> None:
        self.client.log_dict(self.study_run, clean(summary), "summary.json")
        self.client.set_terminated(self.study_run, "FAILED" if failed else "FINISHED")


def delete_study_tree(uri: str, experiment: str, study_name: str) -> int:
    """Move every active run of ``study_name`` in ``experiment`` (study run, config runs, trial runs: all carry the
    ``clorch.study`` tag) to MLflow's deleted lifecycle stage (``MlflowClient.delete_run``: out of the default view,
    restorable). Returns how many runs were moved; 0 when the experiment is not there."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    ids, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], f"tags.`clorch.study` = '{study_name}'",
                                  max_results=1000, page_token=token)
        ids += [r.info.run_id for r in page]
        token = page.token
        if not token:
            break
    for run_id in ids:
        client.delete_run(run_id)
    return len(ids)
