"""Run a study on Ray Tune: embedded local Ray by default, a cluster with --address.

The driver validates, loads the benchmark once and puts it in the object
store, hands Tune the fixed list of (config x order x seed) trials, and is
the only writer of results files and MLflow runs (through a Tune callback, as
trials finish). A failing trial is recorded as failed; the study goes on.
"""
from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import datasets
from orchestrator.cluster import connect
from orchestrator.expand import TrialSpec, expand_configs, expand_trials
from orchestrator.results import study_dir, write_json, write_trial
from orchestrator.spec import Study
from orchestrator.summary import build_summary, format_table, trial_stats
from orchestrator.trial import record


# Tune's JSON logger is kept (its result.json is what Tune's analysis reads);
# CSV and TensorBoard would only duplicate our records, and TensorBoard warns
# on list-valued rows.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def build_benchmark(study: Study, data_root: str | None = None) -> datasets.Benchmark:
    """Load (or reuse) the study's benchmark; raises MissingData naming the files and the fix."""
    ctx = datasets.LoadContext.resolve(study.data_root, data_root)
    return datasets.load_benchmark(study.benchmark.name, study.benchmark_params(), ctx)


def _trainable(config: dict[str, Any], benchmark: datasets.Benchmark) -> None:
    """Runs inside a Tune worker process."""
    import torch
    from ray import tune

    from orchestrator.trial import pick_device, run_trial

    torch.set_num_threads(max(1, int(config["cpu"])))
    spec = TrialSpec.from_dict(config["trial"])
    run_trial(spec, benchmark, report=tune.report, device=pick_device(config["gpu"]))


def _fmt(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class StudyRecorder:
    """Collects each trial's rows and writes its record once it ends (driver side)."""

    def __init__(self, trials: list[TrialSpec], num_tasks: int, out: Path, tracker, kind: str = "classification"):
        self.specs = {t.trial_id: t for t in trials}
        self.rows: dict[str, list[dict[str, Any]]] = {t.trial_id: [] for t in trials}
        self.records: dict[str, dict[str, Any]] = {}
        self.final: dict[str, dict[str, Any]] = {}
        self.num_tasks, self.out, self.tracker, self.kind = num_tasks, out, tracker, kind
        self.started = time.monotonic()

    def on_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "record" in result:  # the trial's own final record
            self.final[trial_id] = result["record"]
            return
        keep = ("position", "task_id", "row", "acc_seen", "train_s", "eval_s")
        self.rows[trial_id].append({k: v for k, v in result.items() if k in keep or k.startswith("info_")})

    def on_end(self, trial_id: str, error: str | None) -> None:
        if trial_id in self.records:
            return
        rows = self.rows[trial_id]
        if error is None and trial_id in self.final:
            rec = self.final[trial_id]
        else:
            if error is None:
                error = f"trial ended after {len(rows)} of {self.num_tasks} tasks"
            rec = record(self.specs[trial_id], rows, self.num_tasks, status="failed", error=error)
            rec["kind"] = self.kind
        rec["ended_at"] = time.time()  # when the driver saw it end: the report's search-over-time axis
        write_trial(self.out, rec)
        self.tracker.log_trial(rec, trial_stats(rec))
        self.records[trial_id] = rec
        self._progress(rec)

    def _progress(self, rec: dict[str, Any]) -> None:
        done, total = len(self.records), len(self.specs)
        failed = sum(r["status"] != "completed" for r in self.records.values())
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (total - done)
        note = f"  FAILED {rec['trial_id']}: {rec['error'].splitlines()[-1]}" if rec["status"] != "completed" else ""
        print(f"[{done}/{total} trials{f', {failed} failed' if failed else ''}] elapsed {_fmt(elapsed)}, "
              f"ETA {_fmt(eta)}{note}", flush=True)


def _tune_callback(recorder: StudyRecorder):
    from ray import tune

    class Callback(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            recorder.on_result(trial.config["trial"]["trial_id"], result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            recorder.on_end(trial.config["trial"]["trial_id"], None)

        def on_trial_error(self, iteration, trials, trial, **info):
            recorder.on_end(trial.config["trial"]["trial_id"], _error_text(trial))

    return Callback()


def _error_text(trial) -> str:
    """The trial's exception as ``Type: message``.

    Read from the local error files Tune writes before calling on_trial_error
    (``trial.get_error()`` reads the storage copy, which is synced later).
    """
    from ray import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as f:
            err = cloudpickle.load(f)
        cause = getattr(err, "cause", None) or err
        return f"{type(cause).__name__}: {cause}".strip()
    except Exception:  # noqa: BLE001 - fall back to the text trace, then to a plain note
        try:
            with open(trial.error_file) as f:
                lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
            return lines[-1] if lines else "trial failed (empty error file)"
        except OSError:
            return "trial failed (no error recorded by Ray)"


def run_study(study: Study, address: str | None = None, data_root: str | None = None) -> dict[str, Any]:
    """Run every trial of ``study``; return the summary (also in results/<study>/summary.json)."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from orchestrator.report import report_after_run
    from orchestrator.tracking import StudyTracker

    benchmark = build_benchmark(study, data_root)  # a missing dataset fails here, before anything is written
    configs = expand_configs(study)
    trials = expand_trials(study, benchmark.default_setting)
    out = study_dir(study.output_dir, study.name)
    print(f"study {study.name}: {len(configs)} configs x {len(study.task_orders())} orders x "
          f"{len(study.seeds)} seeds = {len(trials)} trials on {benchmark.name} "
          f"({benchmark.num_tasks} tasks)", flush=True)

    connect(address)
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    gpus = ray.cluster_resources().get("GPU", 0)
    where = f"joined the Ray cluster at {address}" if address else "embedded local Ray"
    print(f"{where}: {cpus:g} CPUs, {gpus:g} GPUs; {study.resources.cpu:g} CPU / "
          f"{study.resources.gpu:g} GPU per trial", flush=True)
    started = time.monotonic()
    tracker = StudyTracker(study.tracking.uri, study.experiment, study.name, _study_params(study), configs)
    recorder = StudyRecorder(trials, benchmark.num_tasks, out, tracker, benchmark.kind)
    trainable = tune.with_resources(tune.with_parameters(_trainable, benchmark=benchmark),
                                    {"cpu": study.resources.cpu, "gpu": study.resources.gpu})
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.to_dict() for t in trials]),
                     "cpu": study.resources.cpu, "gpu": study.resources.gpu},
        tune_config=tune.TuneConfig(reuse_actors=True, trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(name=study.name, storage_path=str(out / "tune"), verbose=0,
                                  callbacks=[JsonLoggerCallback(), _tune_callback(recorder)]),
    )
    tuner.fit()
    for t in trials:  # a trial Tune never ran still gets a record
        recorder.on_end(t.trial_id, "trial did not run")
    meta = {"benchmark": study.benchmark.model_dump(), "num_tasks": benchmark.num_tasks,
            "setting": trials[0].setting, "orders": [list(o) for o in study.task_orders()],
            "seeds": study.seeds, "wall_s": time.monotonic() - started}
    summary = build_summary(study.name, meta, configs, [recorder.records[t.trial_id] for t in trials])
    write_json(out / "summary.json", summary)
    for entry in summary["configs"]:
        tracker.log_config(entry["config_id"], entry)
    tracker.finish(summary, failed=summary["trials_failed"] > 0)
    print(format_table(summary))
    print(f"results: {out}/summary.json   MLflow: {study.tracking.uri} (experiment {study.experiment})",
          flush=True)
    report_after_run(out, study.name, tracker)  # warns, never raises: the results above are already written
    return summary


def _trial_name(trial) -> str:
    return trial.config["trial"]["trial_id"]


def _study_params(study: Study) -> dict[str, Any]:
    return {"benchmark": study.benchmark.name, "benchmark_params": study.benchmark.params,
            "orders": study.orders.model_dump() if study.orders else None, "seeds": study.seeds, "methods": [m.display for m in study.methods]}
