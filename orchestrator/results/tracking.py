"""MLflow records of a study, written only by the driver: the study's web page.

One experiment per study; a study run; under it a run per method config with
its robustness statistics; under each config run a run per trial with its
order, seed, per-task metrics and accuracy matrix. Trial runs are written as
trials finish, so an interrupted study keeps what it finished.

What a person sees in the MLflow UI (``mlflow ui`` / ``mlflow server``):

- the experiment is tagged as a training experiment (``mlflow.experimentKind``
  = ``custom_model_development``, which MLflow 3 UIs without the GenAI / ML
  switch read) and carries a description (``mlflow.note.content``); MLflow
  3.17's UI instead opens every experiment as its sidebar switch says (GenAI
  by default: "Traces 0"), so ``ui_path`` adds ``workflowType=machine_learning``;
- a shared view (experiment tag ``mlflow.sharedViewState.<key>``, opened by
  ``viewStateShareKey=<key>`` in ``ui_path``): runs sorted by name (a config
  run, then its trial runs), the key metric and param columns shown;
- run names: the config run by its label, ``<label> #k`` for the k-th config
  of a label that has several (a search); the trial run ``<config> o<r>
  s<seed>`` (``f<r>``: the r-th fresh order of a best config's re-run);
- real start and end times: a trial run's are the trial's own (``started_at``,
  ``wall_s``), its per-task metrics are stamped when each task ended;
- per-task metrics as steps (step = position in the order), so the charts are
  per-task curves; ``acc_seen`` per step is a trial's learning curve (on a
  config run: the mean over its trials);
- params: only those that differ from the method's defaults (and every
  searched one), with ``params.json`` holding them all;
- artifacts: a trial run ``trial.json``, ``params.json``, ``matrix.png`` and
  ``matrix.csv``; a config run ``params.json``, ``summary_entry.json``,
  ``learning_curve.png`` and ``opd_per_task.png``; the study run
  ``params.json``, ``summary.json`` and the report under ``report/``.
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from orchestrator.results import stats
from orchestrator.results.records import TrialRecord
from orchestrator.results.store import clean
from orchestrator.study.redact import redact_value
from orchestrator.study.schema import Config

_MAX_PARAM = 6000
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # MLflow 3's kind for model training (the other: genai_development)
NOTE_TAG = "mlflow.note.content"            # an experiment's or run's description in the UI
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"  # the metric the UI's charts start with
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # + key: a runs-table view the UI opens with ?viewStateShareKey=key
VIEW_METRICS = ("acc", "acc_std", "bwt", "forgetting", "aopd", "mopd", "R", "mse")
VIEW_PARAMS = ("order", "seed")
_TRIAL_SLOT = re.compile(r"-([of])(\d+)-s(-?\d+)$")  # the end of a trial id: <tag><order index>-s<seed>


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Params by dotted path (``optimizer.lr``, ``penalties.0.lambda``), so the UI can filter and sort on a
    component's field; lists of plain values (``network.hidden``) and other leaves kept whole."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out.update(_flat({str(i): x for i, x in enumerate(v)}, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _param_list(flat: dict[str, Any]) -> list[Param]:
    out = []
    for path, v in flat.items():
        v = redact_value(path.rsplit(".", 1)[-1], v)  # never store a credential in MLflow
        out.append(Param(path, (v if isinstance(v, str) else json.dumps(v))[:_MAX_PARAM]))
    return out


def _params(d: dict[str, Any], prefix: str = "") -> list[Param]:
    """Every param of ``d`` by dotted path (see ``_flat``), values as text (JSON for non-strings)."""
    return _param_list(_flat(d, prefix))


def non_default(params: dict[str, Any], defaults: dict[str, Any] | None, keep: Sequence[str] = ()) -> dict[str, Any]:
    """The dotted-path params of ``params`` that differ from ``defaults`` (absent there or another value), plus
    the paths in ``keep`` (searched values: shown even when a draw equals the default). Without ``defaults``:
    every param."""
    flat = _flat(params)
    if defaults is None:
        return flat
    base = _flat(defaults)
    return {k: v for k, v in flat.items() if k in keep or k not in base or clean(base[k]) != clean(v)}


def _redacted(value: Any, key: str = "") -> Any:
    """``value`` with every secret-looking field masked (for params.json)."""
    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, key) for v in value]
    return redact_value(key, value)


def _metrics(d: dict[str, Any], step: int = 0, prefix: str = "", at: int | None = None) -> list[Metric]:
    at = int(time.time() * 1000) if at is None else at
    return [Metric(f"{prefix}{k}", float(v), at, step) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def view_key(study_name: str) -> str:
    """The shared view's key of a study (a tag key: letters, digits, ``_ - .``)."""
    return "clorch-" + re.sub(r"[^A-Za-z0-9_\-.]", "-", study_name)


def ui_path(experiment_id: str, study_name: str) -> str:
    """The part of an MLflow UI address after the host that opens the study: its experiment's runs table (as a
    training experiment, not the GenAI overview) in the study's shared view."""
    return (f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={view_key(study_name)}")


def ui_address(uri: str, path: str) -> str:
    """Where a person opens ``path`` (see ``ui_path``) of the store at ``uri``: an MLflow server's own address;
    for a SQLite file, the ``mlflow ui`` command that serves it and the local address it listens on."""
    from orchestrator.study.redact import redact_uri

    if uri.startswith(("http://", "https://")):
        return f"{redact_uri(uri).rstrip('/')}/{path}"
    return f"`mlflow ui --backend-store-uri {redact_uri(uri)}`, then http://127.0.0.1:5000/{path}"


def trial_slot(trial_id: str, order_index: int, seed: int) -> str:
    """``o<r> s<seed>`` (``f<r>`` for a fresh order of a best config's re-run), read off the trial id."""
    m = _TRIAL_SLOT.search(trial_id)
    return f"{m[1]}{m[2]} s{m[3]}" if m else f"o{order_index} s{seed}"


class _Files:
    """A run's artifacts gathered in a temporary folder and uploaded in one ``log_artifacts`` call."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="clorch-artifacts-")
        self.dir = Path(self._tmp.name)

    def json(self, name: str, data: Any) -> None:
        (self.dir / name).write_text(json.dumps(clean(data), indent=1, allow_nan=False))

    def text(self, name: str, text: str) -> None:
        (self.dir / name).write_text(text)

    def png(self, name: str, data: bytes | None) -> None:
        if data is not None:
            (self.dir / name).write_bytes(data)

    def upload(self, client: MlflowClient, run_id: str) -> None:
        try:
            client.log_artifacts(run_id, str(self.dir))
        finally:
            self._tmp.cleanup()


class StudyTracker:
    """The driver's MLflow writer. Runs are keyed by id tags, never by name.

    ``resume``: continue the latest study run of this study in the experiment
    (its config runs and trial runs are found by their ``clorch.*`` tags), so
    a resumed study adds to the same tree and a trial never gets two runs.
    ``defaults``: per method name, its params' defaults (only the params that differ are logged as MLflow
    params; params.json has all); ``study_defaults``: the same for the study run's params.
    ``description``: the experiment's description (markdown). ``trial_artifacts``: draw each trial's
    matrix.png and write matrix.csv (off: a trial run has trial.json and params.json only).
    """

    def __init__(self, uri: str, experiment: str, study_name: str, study_params: dict[str, Any],
                 configs: list[Config], resume: bool = False, *, defaults: dict[str, dict[str, Any]] | None = None,
                 study_defaults: dict[str, Any] | None = None, description: str | None = None,
                 trial_artifacts: bool = True):
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.study_name = study_name
        self.defaults = defaults
        self.trial_artifacts = trial_artifacts
        self.tags = {"clorch.study": study_name}
        self.config_runs: dict[str, str] = {}
        self.config_names: dict[str, str] = {}          # config id -> its run's name
        self.label_configs: dict[str, list[str]] = {}   # label -> its config ids, in the order their runs were made
        self.trial_runs: dict[str, tuple[str, str]] = {}  # trial id -> (run id, clorch.status)
        previous = self._latest_study_run() if resume else None
        if previous is not None:
            self.study_run = previous
            self.client.update_run(previous, status="RUNNING")
            found_configs = self._children(f"tags.`clorch.level` = 'config' and tags.`mlflow.parentRunId` = "
                                           f"'{previous}'")
            for run in sorted(found_configs, key=lambda r: r.info.start_time or 0):
                cid = run.data.tags["clorch.config_id"]
                self.config_runs[cid] = run.info.run_id
                self.config_names[cid] = run.info.run_name or cid
                self.label_configs.setdefault(run.data.tags.get("clorch.label", cid), []).append(cid)
            for run in self._children("tags.`clorch.level` = 'trial'"):
                if run.data.tags.get("mlflow.parentRunId") in self.config_runs.values():
                    # a run the driver died writing (tagged, never terminated) counts as not logged: redone
                    ended = run.info.status in ("FINISHED", "FAILED", "KILLED")
                    self.trial_runs[run.data.tags["clorch.trial_id"]] = (
                        run.info.run_id, run.data.tags.get("clorch.status", "") if ended else "")
        else:
            self.study_run = self._run(study_name, {**self.tags, "clorch.level": "study"})
            self.client.log_batch(self.study_run, params=_param_list(non_default(study_params, study_defaults)))
            files = _Files()
            files.json("params.json", _redacted(study_params))
            files.upload(self.client, self.study_run)
        self._describe_experiment(description)
        for c in configs:
            self.ensure_config(c)

    # ------------------------------------------------------------ the experiment page
    def _describe_experiment(self, description: str | None) -> None:
        self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        self.client.set_experiment_tag(self.experiment_id, PRIMARY_METRIC_TAG, "acc")
        if description:
            description += (f"\n\n[Open the runs table in the study's view]({self.ui_path()}) (a training experiment: "
                            "the sidebar's switch on Model training; runs by name, each config run followed by its "
                            "trial runs; key metric columns shown)")
            self.client.set_experiment_tag(self.experiment_id, NOTE_TAG, description)
            self.client.set_tag(self.study_run, NOTE_TAG, description)
        self._update_view()

    def view_state(self) -> dict[str, Any]:
        """The shared view of the runs table: runs sorted by name, so each config run comes with its trial runs
        right after it (``ewc``, ``ewc o0 s0``, ...); the key metrics (``acc``, ``bwt``, ``forgetting``, ``aopd``,
        ``mopd``, ...) and the trial's ``order`` and ``seed`` as columns.

        MLflow 3.17 nests child runs under their parent only when runs are sorted by start time, with every
        parent collapsed, and a shared view cannot expand them (it drops ``runsExpanded``): sorted by name, every
        run is one row, in an order that reads as the tree."""
        columns = [f"metrics.`{m}`" for m in VIEW_METRICS] + [f"params.`{p}`" for p in VIEW_PARAMS]
        return {"searchFilter": "", "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True,
                "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
                "selectedColumns": ["attributes.`Duration`"] + columns, "runsHiddenMode": "SHOW_ALL",
                "viewMaximized": False, "runListHidden": False}

    def _update_view(self) -> None:
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG_PREFIX + view_key(self.study_name),
                                       json.dumps(self.view_state()))

    def ui_path(self) -> str:
        return ui_path(self.experiment_id, self.study_name)

    # ------------------------------------------------------------ runs
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

    def _config_params(self, c: Config) -> dict[str, Any]:
        defaults = None if self.defaults is None else self.defaults.get(c.method)
        return non_default(c.params, defaults, keep=list(c.searched))

    def ensure_config(self, c: Config) -> str:
        """The config's run, created the first time a config is seen (searches find configs as they go).

        Named by its label while it is the label's only config; a label's second config renames the first
        ``<label> #1`` and is ``<label> #2`` (the report's names)."""
        if c.config_id not in self.config_runs:
            siblings = self.label_configs.setdefault(c.label, [])
            siblings.append(c.config_id)
            name = c.label if len(siblings) == 1 else f"{c.label} #{len(siblings)}"
            if len(siblings) == 2:  # the first config's run, and the trial runs already logged under it
                first = siblings[0]
                self.config_names[first] = f"{c.label} #1"
                self.client.update_run(self.config_runs[first], name=self.config_names[first])
                for run in self._children(f"tags.`clorch.level` = 'trial' and tags.`clorch.config_id` = '{first}'"):
                    slot = run.info.run_name.rsplit(" ", 2)[-2:]
                    self.client.update_run(run.info.run_id, name=" ".join([self.config_names[first], *slot]))
            note = "searched: " + ", ".join(f"{k} = {json.dumps(clean(v))}" for k, v in c.searched.items()) \
                if c.searched else f"{c.label}: {c.method}"
            run = self._run(name, {**self.tags, "clorch.level": "config", "clorch.config_id": c.config_id,
                                   "clorch.label": c.label, "clorch.method": c.method,
                                   "mlflow.parentRunId": self.study_run, NOTE_TAG: f"{note} (config {c.config_id})"})
            self.client.log_batch(run, params=_param_list(self._config_params(c)) + [Param("method", c.method)])
            files = _Files()
            files.json("params.json", _redacted(c.params))
            files.upload(self.client, run)
            self.config_runs[c.config_id] = run
            self.config_names[c.config_id] = name
        return self.config_runs[c.config_id]

    def has_finished_trial(self, trial_id: str) -> bool:
        return self.trial_runs.get(trial_id, ("", ""))[1] == "completed"

    def _run(self, name: str, tags: dict[str, str], start_time: int | None = None) -> str:
        return self.client.create_run(self.experiment_id, start_time=start_time, run_name=name,
                                      tags=tags).info.run_id

    def trial_name(self, record: TrialRecord) -> str:
        config = self.config_names.get(record.config_id, record.label)
        return f"{config} {trial_slot(record.trial_id, record.order_index, record.seed)}"

    def log_trial(self, record: TrialRecord, config: Config | None = None) -> str:
        """One run per trial id: a trial rerun after a failure replaces its earlier (failed) run.

        The run starts and ends when the trial did (``started_at``, ``started_at + wall_s``; a trial that never
        ran: now); each per-task metric is stamped when its task ended."""
        if config is not None:
            self.ensure_config(config)
        earlier = self.trial_runs.pop(record.trial_id, None)
        if earlier is not None:
            self.client.delete_run(earlier[0])
        now = time.time()
        start = record.started_at if record.started_at is not None else (record.ended_at or now)
        end = start + record.wall_s if record.wall_s is not None else max(start, record.ended_at or now)
        run = self._run(self.trial_name(record), {
            "clorch.study": self.study_name, "clorch.level": "trial", "clorch.trial_id": record.trial_id,
            "clorch.config_id": record.config_id, "clorch.label": record.label,
            "mlflow.parentRunId": self.config_runs[record.config_id]}, start_time=_ms(start))
        config = config or Config(record.config_id, record.label, record.method, record.params, record.searched)
        params = {"method": record.method, "order": list(record.order), "order_index": record.order_index,
                  "seed": record.seed, **self._config_params(config)}
        if record.max_tasks is not None:
            params["max_tasks"] = record.max_tasks
        metrics = [Metric(name, value, at, step) for name, value, step, at in self._trial_metrics(record, start)]
        tags = [RunTag("clorch.status", record.status)]
        if record.error:
            tags += [RunTag("clorch.error", record.error[:5000]),
                     RunTag(NOTE_TAG, f"{record.status}: {record.error[-2000:]}")]
        self.client.log_batch(run, metrics=metrics, params=_param_list(params), tags=tags)
        files = _Files()
        files.json("trial.json", record.to_json())
        files.json("params.json", _redacted(record.params))
        if self.trial_artifacts and record.ordered and record.tasks_done:
            from orchestrator.results import run_artifacts

            files.text("matrix.csv", run_artifacts.matrix_csv(record))
            files.png("matrix.png", run_artifacts.matrix_png(record, self.trial_name(record)))
        files.upload(self.client, run)
        self.client.set_terminated(run, {"completed": "FINISHED", "stopped": "KILLED"}.get(record.status, "FAILED"),
                                   end_time=_ms(end))
        self.trial_runs[record.trial_id] = (run, record.status)
        return run

    @staticmethod
    def _trial_metrics(record: TrialRecord, start: float) -> list[tuple[str, float, int, int]]:
        """(name, value, step, timestamp ms): the record's metrics, plus ``acc_seen`` per step (its learning
        curve); a metric of step p is stamped when task p ended (start + the train and eval seconds so far)."""
        ends, t = {}, start
        for timing in sorted(record.timings, key=lambda x: int(x["position"])):
            t += float(timing.get("train_s") or 0) + float(timing.get("eval_s") or 0)
            ends[int(timing["position"])] = t
        last = max(ends.values(), default=start)
        out = list(record.mlflow_metrics())
        if record.ordered and record.tasks_done:
            A, order = record.scored()
            curve = stats.learning_curve(A[:len(order)], order)
            out += [("acc_seen", float(v), i) for i, v in enumerate(curve) if v == v]
        steps: dict[str, int] = {}
        for name, _, _ in out:
            steps[name] = steps.get(name, 0) + 1
        # a per-task series at its task's end; a one-value metric (the trial's ACC, BWT, ...) at the trial's end
        return [(name, value, step, _ms(ends.get(step, last) if steps[name] > 1 else last))
                for name, value, step in out]

    def log_configs(self, entries: Sequence[dict[str, Any]],
                    records_of: Callable[[str], Sequence[TrialRecord]] = lambda _: ()) -> None:
        """Each summary entry on its config's run (log_config), the figures of all of them rendered first,
        together (orchestrator/results/png_render.py: the end of a study waits for them)."""
        from orchestrator.results import png_render, run_artifacts

        drawn: list[tuple[int, str, Any]] = []  # (entry's index, artifact name, Figure)
        for i, entry in enumerate(entries):
            records = records_of(entry["config_id"])
            if records:
                name = self.config_names.get(entry["config_id"], entry["config_id"])
                for artifact, draw in (("learning_curve.png", run_artifacts.learning_curve_figure),
                                       ("opd_per_task.png", run_artifacts.opd_per_task_figure)):
                    fig = draw(records, name)
                    if fig is not None:
                        drawn.append((i, artifact, fig))
        pngs: list[dict[str, bytes]] = [{} for _ in entries]
        for (i, artifact, _), data in zip(drawn, png_render.png_bytes([f for _, _, f in drawn], run_artifacts.DPI)):
            pngs[i][artifact] = data
        for entry, figures in zip(entries, pngs):
            self.log_config(entry["config_id"], entry, figures)

    def log_config(self, config_id: str, entry: dict[str, Any], figures: dict[str, bytes] | None = None) -> None:
        """The summary's entry of a config on its run: its statistics as metrics (``acc``, ``bwt``, ``forgetting``
        and ``task_acc``: the means, named like a trial's, so one column shows both; ``acc_seen`` per step: the
        mean learning curve; ``opd_task_<j>``), ``summary_entry.json`` and ``figures`` (artifact name -> PNG
        bytes: log_configs draws the learning curve and OPD-per-task figures from the config's records)."""
        run = self.config_runs[config_id]
        stats_ = {k: v for k, v in entry.items() if k not in ("opd_per_task", "window_mse_mean", "curve")}
        stats_.update({f"opd_task_{j}": v for j, v in enumerate(entry.get("opd_per_task") or [])})
        stats_.update({k: entry.get(f"{k}_mean") for k in ("acc", "bwt", "forgetting", "task_acc", "mse")
                       if entry.get(f"{k}_mean") is not None})
        curve = [m for i, v in enumerate(entry.get("curve") or []) for m in _metrics({"acc_seen": v}, step=i)]
        self.client.log_batch(run, metrics=_metrics(stats_) + curve)
        files = _Files()
        files.json("summary_entry.json", entry)
        for artifact, data in (figures or {}).items():
            files.png(artifact, data)
        files.upload(self.client, run)
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


def prune_artifacts(client: MlflowClient, run_id: str, folder: str, keep: set[str]) -> list[str]:
    """Delete the files directly under ``folder`` of a run's artifacts whose names are not in ``keep`` (what an
    earlier report had and this one does not). Returns their paths; a store that cannot delete is warned about
    (the files stay), never raised."""
    import sys

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    stale = [a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir and a.path.rsplit("/", 1)[-1]
             not in keep]
    if not stale:
        return []
    try:
        repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri, tracking_uri=client.tracking_uri)
        for path in stale:
            repo.delete_artifacts(path)
    except Exception as e:  # noqa: BLE001 - an artifact store without delete: the old figures stay
        print(f"clorch: warning: could not delete {len(stale)} stale artifacts of run {run_id} "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        return []
    return stale

