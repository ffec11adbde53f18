"""Where a report's data comes from: results/<study>/ on disk, or the MLflow store alone.

Both give the same thing, a ``StudyData``: the typed trial records
(orchestrator.results.records, rebuilt from the JSON each trial wrote) and the study's summary.json when there
is one (for the benchmark name and the configs' order). Every number of the
report is recomputed from the records, so a study interrupted before its
summary still gets a report. A study run on a cluster with an MLflow server
may have no results directory here: its trial runs carry the full record as
the artifact trial.json, which is what is read back.

Each record also gets ``ended_at`` (unix seconds) when it lacks one: the
trial file's modification time on disk, the trial run's end time in MLflow
(both written by the driver as the trial ended).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.results.records import TrialRecord, as_records, record_from_json
from orchestrator.results.store import read_trials
from orchestrator.study.redact import redact_uri


class StudyNotFound(LookupError):
    """Neither source has the study; the message says what was looked for where."""


@dataclass
class StudyData:
    name: str
    records: list[TrialRecord]       # typed; JSON dicts given here are rebuilt (record_from_json)
    summary: dict[str, Any] | None
    source: str                      # a sentence for the report: where the data came from
    study_run_id: str | None = None  # the MLflow study run, when known
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.records = as_records(self.records)


def from_results(study_dir: Path, name: str) -> StudyData | None:
    """The study's trial records in ``study_dir`` (results/<study>), or None if there are none."""
    files = sorted((study_dir / "trials").glob("*.json"))
    if not files:
        return None
    records = read_trials(study_dir)
    for rec, path in zip(records, files):
        if rec.ended_at is None:
            rec.ended_at = path.stat().st_mtime
    summary_path = study_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    notes = []
    if summary is not None:
        kept = [r for r in records if _in_summary(r, summary)]
        if len(kept) < len(records):
            notes.append(f"{len(records) - len(kept)} trial files in {study_dir / 'trials'} are not part of the "
                         f"latest run (their config, order or seed is not in summary.json) and are left out")
        records = kept or records
    return StudyData(name, records, summary, f"results directory `{study_dir}`", notes=notes)


def _in_summary(record: TrialRecord, summary: dict[str, Any]) -> bool:
    """Whether a trial file belongs to the run summary.json describes (an earlier run may have left others)."""
    configs = {e["config_id"] for e in summary.get("configs", [])}
    orders = summary.get("orders")
    if orders:
        orders = orders + (summary.get("final_orders") or [])  # the best configs' fresh-order re-runs
    seeds = summary.get("seeds")
    return (record.config_id in configs and (not orders or list(record.order) in orders)
            and (seeds is None or record.seed in seeds))


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_ids(client, experiment: str | None) -> list[str]:
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        return [found.experiment_id] if found else []
    return [e.experiment_id for e in client.search_experiments()]


def find_study_run(uri: str, name: str, experiment: str | None = None):
    """The latest MLflow study run (tag clorch.level = 'study') of study ``name``, or None."""
    client = _client(uri)
    ids = _experiment_ids(client, experiment)
    if not ids:
        return None
    runs = client.search_runs(ids, f"tags.`clorch.study` = '{name}' and tags.`clorch.level` = 'study'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _children(client, run) -> list:
    return client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
                              max_results=50_000)


def _load_json(client, run_id: str, artifact: str, into: Path) -> dict[str, Any] | None:
    try:
        path = client.download_artifacts(run_id, artifact, str(into / run_id))
    except Exception:  # noqa: BLE001 - absent artifact: the caller says what is missing
        return None
    return json.loads(Path(path).read_text())


def from_mlflow(uri: str, name: str, experiment: str | None = None) -> StudyData | None:
    """The records of the latest study run named ``name`` in the MLflow store at ``uri``, or None."""
    client = _client(uri)
    study_run = find_study_run(uri, name, experiment)
    if study_run is None:
        return None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per trial.json is noise
    records, notes = [], []
    with tempfile.TemporaryDirectory(prefix="clorch-report-") as tmp:
        for config_run in _children(client, study_run):
            for trial_run in _children(client, config_run):
                found = _load_json(client, trial_run.info.run_id, "trial.json", Path(tmp))
                if found is None:
                    notes.append(f"trial run {trial_run.info.run_id} has no trial.json; left out")
                    continue
                rec = record_from_json(found)
                if rec.ended_at is None and trial_run.info.end_time:
                    rec.ended_at = trial_run.info.end_time / 1000
                records.append(rec)
        summary = _load_json(client, study_run.info.run_id, "summary.json", Path(tmp))
    if not records:
        return None
    records.sort(key=lambda r: r.trial_id)
    source = (f"MLflow `{redact_uri(uri)}`, experiment {study_run.info.experiment_id}, "
              f"study run `{study_run.info.run_id}`")
    return StudyData(name, records, summary, source, study_run.info.run_id, notes)


def _missing_sqlite_file(uri: str | None) -> Path | None:
    """The file of a sqlite:/// URI when it does not exist (opening it would create an empty store)."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///"):])
    return None if path.exists() else path


def load_study(name: str, study_dir: Path, tracking_uri: str | None = None,
               experiment: str | None = None) -> StudyData:
    """From the results directory when it has the study, else from MLflow; StudyNotFound otherwise."""
    data = from_results(study_dir, name)
    if data is not None:
        return data
    looked = [f"no trial records in {study_dir / 'trials'}"]
    missing_db = _missing_sqlite_file(tracking_uri)
    if missing_db:
        looked.append(f"no MLflow store at {tracking_uri} ({missing_db} does not exist)")
    elif tracking_uri:
        data = from_mlflow(tracking_uri, name, experiment)
        if data is not None:
            return data
        where = f"experiment '{experiment}'" if experiment else "any experiment"
        looked.append(f"no study run tagged clorch.study = '{name}' with trial records in MLflow "
                      f"{redact_uri(tracking_uri)} ({where})")
    else:
        looked.append("no MLflow store to look in (pass --tracking-uri, or set MLFLOW_TRACKING_URI)")
    raise StudyNotFound(f"study '{name}' not found: " + "; ".join(looked))
