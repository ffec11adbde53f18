"""Run a study on Ray Tune: embedded local Ray by default, a cluster with --address.

The driver validates, loads the benchmark once and puts it in the object
store, and runs up to three kinds of Tune runs, one after another:

1. the trials known up front (grid/random configs x orders x seeds);
2. per method entry searched by Optuna, an order-aggregating TPE search;
3. with ``search.final_orders``, each searched method's best config re-run on
   fresh orders (its unbiased estimate).

It is the only writer of results files and MLflow runs (through a Tune
callback, as trials finish). Every trial checkpoints after each task; a trial
whose worker dies is retried from its last finished task (``retries``), and
``resume=True`` continues an interrupted study: finished trials are kept,
unfinished ones start from their last checkpoint. A failing trial is recorded
as failed; the study goes on.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import datasets
from orchestrator.run import checkpoint_store, lifecycle
from orchestrator.cluster.connect import connect, probe
from orchestrator.study.schema import Config, TrialSpec
from orchestrator.study.expand import (expand_configs, is_adaptive, is_searched, make_config, method_defaults,
                                       search_max_tasks, setting_of, split_params, trials_for)
from orchestrator.results.objective import describe, objective_value
from orchestrator.results.records import TrialRecord
from orchestrator.run.callbacks import SchedulingWatch, Unschedulable, tune_callback, watch_callback
from orchestrator.run.interrupt import Interrupt, StudyInterrupted
from orchestrator.run.recorder import StudyRecorder
from orchestrator.run.trainable import trainable
from orchestrator.results.store import read_trials, study_dir, write_json
from orchestrator.study.schema import Study, value_at
from orchestrator.study.redact import redact_uri

_NONE = object()
from orchestrator.results.summary import best_per_label, build_summary, config_entry, format_table

# Tune's JSON logger is kept (its result.json is what Tune's analysis reads);
# CSV and TensorBoard would only duplicate our records, and TensorBoard warns
# on list-valued rows.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Every trial checkpoints after every task, so Tune snapshots its experiment
# state often, by design; it warns about that each time. The cost is measured
# (bench/orchestration_overhead.py), the warning is noise.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Ctrl-C / SIGTERM are the driver's (run/interrupt.py): Tune's own handler would print Tuner.restore advice
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

FRESH = "@fresh"  # suffix of the label and config id of a best config re-run on fresh orders
FULL = "@full"    # search.protocol first_tasks: suffix of a winner re-run on the full orders


def build_benchmark(study: Study, data_root: str | None = None) -> datasets.Benchmark:
    """Load (or reuse) the study's benchmark; raises MissingData naming the files and the fix."""
    ctx = datasets.LoadContext.resolve(study.data_root, data_root)
    return datasets.load_benchmark(study.benchmark.name, study.benchmark_params(), ctx)


def _trial_name(trial) -> str:
    return trial.config["unit"]["trial"]["trial_id"]


class TuneRuns:
    """Starts the study's Tune runs with one trainable, one storage and one recorder."""

    def __init__(self, study: Study, benchmark: datasets.Benchmark, recorder: StudyRecorder, storage: str,
                 lineage: checkpoint_store.Lineage):
        from ray import tune

        self.study, self.benchmark, self.recorder, self.storage, self.lineage = study, benchmark, recorder, storage, lineage
        self.trainable = tune.with_resources(tune.with_parameters(trainable, benchmark=benchmark,
                                                                   plugins=[r.to_dict() for r in study.plugin_refs]),
                                             {"cpu": study.resources.cpu, "gpu": study.resources.gpu})
        self.deadline = (time.monotonic() + study.search.time_budget_s) if study.search.time_budget_s else None
        self.checkpoints = lineage.checkpoint_candidates()  # trial id -> [(path, tasks done)], furthest first
        self.interrupt = None  # run/interrupt.Interrupt: a signal stops Tune, then StudyInterrupted is raised

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def unit(self, spec: TrialSpec) -> dict[str, Any]:
        found = self.checkpoints.get(spec.trial_id)  # the furthest first; the trial falls back to older ones
        return {"trial": spec.to_dict(), "resume_from": [path for path, _ in found] if found else None,
                "checkpoint_every_s": self.study.checkpoint_every_s}

    def _fit(self, phase: str, num_samples: int, param_space: dict[str, Any], search_alg=None,
             schedule: bool = True) -> None:
        from ray import tune
        from ray.tune.logger import JsonLoggerCallback

        from orchestrator.run.search import asha

        if self.interrupt is not None:
            self.interrupt.check()
        study = self.study
        # ASHA stops search trials; a re-run of one chosen config (or a fixed one) has nothing to choose among
        scheduler = asha(study, self.benchmark.num_tasks) if study.search.scheduler.kind == "asha" and schedule \
            else None
        concurrent = study.search.max_concurrent
        if search_alg is not None and concurrent is None:  # a searcher alone would keep one trial pending
            concurrent = trial_slots(study)
        name = self.lineage.new_experiment(phase)
        tuner = tune.Tuner(
            self.trainable,
            param_space={**param_space, "cpu": study.resources.cpu, "gpu": study.resources.gpu},
            tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                        max_concurrent_trials=concurrent,
                                        time_budget_s=self.remaining_s(), reuse_actors=True,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(name=name, storage_path=self.storage, verbose=0,
                                      stop=self.interrupt.stopper() if self.interrupt is not None else None,
                                      callbacks=[JsonLoggerCallback(), tune_callback(self.recorder),
                                                 watch_callback(SchedulingWatch(study.resources.schedule_timeout_s,
                                                                                study.resources.cpu,
                                                                                study.resources.gpu),
                                                                self.recorder)],
                                      failure_config=tune.FailureConfig(max_failures=study.retries),
                                      # two kept: a forced experiment snapshot every other task, not every task
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
        self.recorder.stop_reason = ("stopped early by ASHA" if scheduler is not None else "stopped") + \
            (" or by the time budget" if self.deadline is not None else "")
        tuner.fit()
        if self.interrupt is not None:
            self.interrupt.check()

    def budget_spent(self) -> bool:
        left = self.remaining_s()
        return left is not None and left <= 0

    def run_fixed(self, phase: str, trials: list[TrialSpec], schedule: bool = True) -> None:
        """A fixed list of trials (a grid of whole trial specs); ``schedule``: under ASHA when the study has it."""
        from ray import tune

        if not trials:
            return
        self.recorder.expect(len(trials))
        lost = None
        for attempt in range(self.study.retries + 1):  # Tune itself dies when Ray kills a worker (OOM)
            pending = [t for t in trials if t.trial_id not in self.recorder.records]
            if not pending or self.budget_spent():
                break
            try:
                self._fit(phase, 1, {"unit": tune.grid_search([self.unit(t) for t in pending])}, schedule=schedule)
                lost = None
                break
            except Exception as e:  # noqa: BLE001 - only a lost worker is retried; the rest is re-raised
                lost = worker_lost(e)
                if lost is None:
                    raise
                left = sum(t.trial_id not in self.recorder.records for t in trials)
                self.checkpoints = self.lineage.checkpoint_candidates()  # the lost trials go on from their last task
                print(f"clorch: warning: {lost}; Tune stopped with {left} trial(s) unfinished"
                      + (f": running them again ({attempt + 1} of {self.study.retries})"
                         if attempt < self.study.retries else ""), flush=True)
        for t in trials:  # a trial Tune never ran still gets a record
            self.recorder.not_run(t, "not run: the time budget was spent" if self.budget_spent()
                                  else f"not finished: {lost}" if lost else "trial did not run")

    def run_optuna(self, method_index: int, setting: str) -> None:
        """TPE over one method entry; each suggestion runs on every order and seed."""
        from orchestrator.run.search import order_searcher

        study = self.study
        _, spaces = split_params(study.methods[method_index].params)
        orders, seeds = study.task_orders(), study.seeds
        members = len(orders) * len(seeds)
        label = study.methods[method_index].display
        evaluated = self._finished_configs(label, spaces, members)
        todo = study.search.num_samples - len(evaluated)
        if todo <= 0 or self.budget_spent():
            return

        seen = {c.config_id for c in self.recorder.configs.values() if c.label == label}

        def expand(searched: dict[str, Any]) -> list[dict[str, Any]]:
            config = make_config(study, method_index, searched)
            if config.config_id in seen:  # proposed again: nothing new to learn by running it
                return []
            seen.add(config.config_id)
            self.recorder.add_config(config)
            return [{"unit": self.unit(t)} for t in trials_for(config, orders, seeds, setting, study.evaluate_unseen,
                                                               max_tasks=study.search.first_tasks,
                                                               identity=lifecycle.trial_identity(study))]

        def known(searched: dict[str, Any]) -> float | None:
            recs = self.recorder.records_of(make_config(study, method_index, searched).config_id)
            if len(recs) < members or any(not r.completed for r in recs):
                return None
            value = objective_value(study.search.objective, recs, study.search.selection)
            return value if value == value else None

        searcher = order_searcher(study, method_index, spaces, expand, evaluated, known)
        self.recorder.expect(todo * members)
        self._fit(f"optuna-{method_index}", todo * members, {}, search_alg=searcher)

    def _finished_configs(self, label: str, spaces: dict[str, Any], members: int) -> list[tuple[dict, float]]:
        """Configs of this entry that finished on every order in an earlier run: Optuna's warm start."""
        by_config: dict[str, list[TrialRecord]] = {}
        for rec in self.recorder.previous.values():
            if rec.label == label:  # the fresh re-runs carry the label + FRESH
                by_config.setdefault(rec.config_id, []).append(rec)
        out = []
        for recs in by_config.values():
            if len(recs) == members:
                value = objective_value(self.study.search.objective, recs, self.study.search.selection)
                if value == value:
                    out.append(({k: _searched_value(recs[0], k) for k in spaces}, value))
        return out


def _previous_records(out: Path, resume: bool) -> dict[str, TrialRecord]:
    """--resume: the trial records already written. A fresh run starts over: old records are removed."""
    if resume:
        return {r.trial_id: r for r in read_trials(out)}
    trials_dir = out / "trials"
    if trials_dir.is_dir() and any(trials_dir.glob("*.json")):
        n = len(list(trials_dir.glob("*.json")))
        shutil.rmtree(trials_dir)
        print(f"starting over: removed {n} trial records of an earlier run in {trials_dir} "
              "(clorch run --resume continues a study instead)", flush=True)
    return {}


def run_study(study: Study, address: str | None = None, data_root: str | None = None,
              resume: bool = False, overwrite: bool = False, allow_changes: bool = False) -> dict[str, Any]:
    """Run every trial of ``study``; return the summary (also in results/<study>/summary.json).

    One run of a study at a time (its results directory is locked); a study with trial records is continued
    (``resume``) or started over (``overwrite``: its MLflow tree goes to the deleted stage), never silently
    replaced; ``resume`` of a changed study needs ``allow_changes`` (orchestrator/run/lifecycle.py)."""
    with lifecycle.StudyRun(study, study_dir(study.output_dir, study.name), resume, overwrite, allow_changes) as life:
        return _run_study(study, address, data_root, resume, life)


def _run_study(study: Study, address: str | None, data_root: str | None, resume: bool,
               life: lifecycle.StudyRun) -> dict[str, Any]:
    from orchestrator.results.tracking_writer import TrialRunWriter

    benchmark = build_benchmark(study, data_root)  # a missing dataset fails here, before anything is written
    setting = setting_of(study, benchmark.default_setting)
    configs = expand_configs(study)
    orders = study.task_orders()
    trials = [t for c in configs for t in trials_for(c, orders, study.seeds, setting, study.evaluate_unseen,
                                                     max_tasks=search_max_tasks(study, c.label),
                                                     identity=lifecycle.trial_identity(study))]
    first_tasks = study.search.first_tasks
    searched = [i for i in range(len(study.methods)) if is_adaptive(study, i)]
    out = study_dir(study.output_dir, study.name)
    members = len(orders) * len(study.seeds)
    planned = len(trials) + len(searched) * study.search.num_samples * members
    print(f"study {study.name}: {planned} trials on {benchmark.name} ({benchmark.num_tasks} tasks): "
          f"{len(configs)} configs x {len(orders)} orders x {len(study.seeds)} seeds"
          + (f", plus Optuna TPE over {len(searched)} method(s), {study.search.num_samples} configs each"
             if searched else "")
          + (f"; protocol first_tasks: search trials learn the first {first_tasks} tasks of each order, each "
             f"searched method's winner then runs on the full orders" if first_tasks else ""), flush=True)

    probe(address)  # a cluster that does not answer fails before anything is written
    life.start()  # the lock and study.json: this run's first writes
    print(f"starting Ray ({'joining ' + address if address else 'embedded, on this machine'})...", flush=True)

    def open_tracker() -> StudyTracker:
        # imported here, not above: on an embedded Ray, MLflow's import (a second or more) then runs on the
        # warming thread while Ray starts, instead of before it
        from orchestrator.results.tracking import StudyTracker

        life.retire_mlflow(study.tracking.uri, study.experiment)  # --overwrite: the earlier tree to MLflow's deleted stage
        return StudyTracker(study.tracking.uri, study.experiment, study.name, _study_params(study), configs,
                            resume=resume, defaults={m.name: method_defaults(m.name) for m in study.methods},
                            study_defaults={"search": type(study.search)().model_dump(mode="json")},
                            description=_description(study, benchmark, orders),
                            trial_artifacts=study.tracking.trial_artifacts)

    if address is None:  # an embedded Ray's start is seconds of waiting: MLflow's import and tables load meanwhile
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="clorch-mlflow-warm") as pool:
            warming = pool.submit(_warm_mlflow, study.tracking.uri)
            owned_ray = connect(address, runtime_env=worker_environment(study, address))  # Ray's error first
            warming.result()  # then MLflow's: nothing retired, no study run made before both work
    else:
        owned_ray = connect(address, runtime_env=worker_environment(study, address))
    import ray

    if address:  # a trial that fits no node would wait forever: refuse before any trial
        from orchestrator.study.resources import check_resources

        check_resources(study, ray.cluster_resources(), f"the Ray cluster at {address}")
    cpus = ray.cluster_resources().get("CPU", 0)
    gpus = ray.cluster_resources().get("GPU", 0)
    where = f"joined the Ray cluster at {address}" if address else "embedded local Ray"
    print(f"{where}: {cpus:g} CPUs, {gpus:g} GPUs; {study.resources.cpu:g} CPU / "
          f"{study.resources.gpu:g} GPU per trial", flush=True)
    started = time.monotonic()
    previous = life.keep(_previous_records(out, resume), setting, (FRESH, FULL)) if resume else \
        _previous_records(out, resume)
    storage = study.storage or str(out / "tune")
    lineage = checkpoint_store.Lineage(out, storage, resume)
    tracker = TrialRunWriter(open_tracker())  # trial runs are written on a thread: a trial's end never holds Tune up
    life.retire_trial_runs(tracker)  # --resume --allow-changes: the runs of earlier trials that no longer belong
    recorder = StudyRecorder(out, tracker, benchmark.num_tasks, benchmark.kind, previous, chance=_chance(study, benchmark))
    for c in configs:
        recorder.add_config(c)
    for rec in previous.values():  # configs found by an earlier run's search
        recorder.add_config(_config_of_record(study, rec))
    if resume:
        filled = recorder.backfill()
        print(f"resuming: {len(recorder.previous)} trials finished earlier are kept"
              + (f" ({filled} added to MLflow)" if filled else ""), flush=True)
    runs = TuneRuns(study, benchmark, recorder, storage, lineage)
    todo = [t for t in trials if t.trial_id not in recorder.previous]
    try:
        _run_trials(study, runs, recorder, tracker, todo, searched, setting, first_tasks)
    except BaseException:
        with contextlib.suppress(Exception):  # the trial runs queued so far reach MLflow, whatever stopped the trials
            tracker.close()
        raise
    tracker.close()  # every trial run is in MLflow
    if owned_ray:  # this run started (or joined) Ray: let it go before the summary and report need the cores
        ray.shutdown()

    all_configs = list(recorder.configs.values())
    records = [r for c in all_configs for r in recorder.records_of(c.config_id)]
    meta = {"benchmark": study.benchmark.model_dump(), "kind": benchmark.kind,
            "validation": benchmark.validation_source, "num_tasks": benchmark.num_tasks, "setting": setting,
            "orders": [list(o) for o in orders], "final_orders": [list(o) for o in study.final_orders()],
            "seeds": study.seeds, "wall_s": time.monotonic() - started, "baseline": study.baseline_label,
            "search": {"algorithm": study.search.algorithm, "objective": study.search.objective.model_dump(),
                       "objective_text": describe(study.search.objective),
                       "scheduler": study.search.scheduler.kind,
                       "protocol": study.search.model_dump(mode="json")["protocol"]}}
    if first_tasks:
        meta["first_tasks"] = first_tasks
    summary = build_summary(study.name, meta, all_configs, records, study.search.objective, FRESH,
                            study.search.selection, full_suffix=FULL, first_tasks=first_tasks)
    if study.configs_from:  # --configs-from: where each reused entry's config was chosen
        summary["configs_from"] = study.configs_from["path"]
        summary["configs_from_study"] = {k: study.configs_from[k] for k in ("study", "benchmark", "configs", "absent")}
        for entry in summary["configs"]:
            source = study.configs_from["configs"].get(entry["label"].removesuffix(FULL).removesuffix(FRESH))
            if source:
                entry["source_config_id"] = source
    summary["mlflow_study_run"] = tracker.study_run  # where the report (written by the caller) is logged
    write_json(out / "summary.json", summary)
    tracker.log_configs(summary["configs"], recorder.records_of)
    tracker.log_paired(summary.get("paired"))
    tracker.finish(summary, failed=summary["trials_failed"] > 0)
    print(format_table(summary))
    print(f"results: {out}/summary.json   MLflow: {redact_uri(study.tracking.uri)} (experiment {study.experiment})",
          flush=True)
    from orchestrator.results.tracking import ui_address

    print(f"MLflow UI: {ui_address(study.tracking.uri, tracker.ui_path())}", flush=True)
    return summary


def _unschedulable(error: BaseException) -> Unschedulable | None:
    """The Unschedulable behind an exception Tune raised (it may wrap a callback's error)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, Unschedulable):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def worker_environment(study: Study, address: str | None) -> dict[str, Any]:
    """Ray's runtime environment for the trial workers: the driver's own clorch code and plugin packages.

    ``py_modules`` ships the orchestrator, methods and datasets packages the driver imported (and every
    package-directory plugin), so a worker can never import another checkout's code from its working
    directory, on this machine or on a cluster node. File plugins travel as source with the trainable; they
    are pickled by value so a benchmark or object they define unpickles in a worker that has no copy.
    """
    import methods
    from ray import cloudpickle

    orchestrator_dir = Path(__file__).resolve().parents[1]
    modules = [str(orchestrator_dir)] + [str(Path(m.__file__).parent) for m in (methods, datasets)]
    for ref in study.plugin_refs:
        if ref.kind == "package":
            modules.append(ref.path)
        if ref.kind == "file":
            import sys

            cloudpickle.register_pickle_by_value(sys.modules[ref.name])
    return {"py_modules": modules}


def _searched_value(rec: TrialRecord, path: str) -> Any:
    """A searched value of an earlier trial: from its record (``searched``), else read off its params."""
    if path in rec.searched:
        return rec.searched[path]
    return value_at(rec.params, path, _NONE)


def _config_of_record(study: Study, rec: TrialRecord) -> Config:
    """The Config of an earlier run's trial record, its searched values read off its params."""
    label = rec.label.removesuffix(FRESH).removesuffix(FULL)
    entry = next((m for m in study.methods if m.display == label), None)
    spaces = split_params(entry.params)[1] if entry is not None else {}
    return Config(rec.config_id, rec.label, rec.method, rec.params,
                  {k: _searched_value(rec, k) for k in spaces if _searched_value(rec, k) is not _NONE})


def _fresh_reruns(study: Study, recorder: StudyRecorder, setting: str) -> list[TrialSpec]:
    """The best config of every searched label (more than one config), on the fresh orders."""
    fresh_orders = study.final_orders()
    if not fresh_orders:
        return []
    by_label: dict[str, list[Config]] = {}
    for c in recorder.configs.values():
        if not c.label.endswith(FRESH):
            by_label.setdefault(c.label, []).append(c)
    # A label with one config chose nothing, so nothing is flattered. The winner is picked by the
    # summary's own rule (best_per_label), so the re-run is always the config the summary calls best.
    chosen = {label: configs for label, configs in by_label.items() if len(configs) >= 2}
    best = best_per_label([config_entry(c, recorder.records_of(c.config_id), study.search.objective,
                                       selection=study.search.selection)
                           for configs in chosen.values() for c in configs], FRESH)
    trials: list[TrialSpec] = []
    for label in chosen:
        if label not in best:
            print(f"{label}: no config completed every trial; nothing to re-run on fresh orders", flush=True)
            continue
        best_config = recorder.configs[best[label]["config_id"]]
        rerun = Config(best_config.config_id + FRESH, label + FRESH, best_config.method, best_config.params,
                       best_config.searched)
        recorder.add_config(rerun)
        trials += trials_for(rerun, fresh_orders, study.seeds, setting, study.evaluate_unseen, tag="f",
                             identity=lifecycle.trial_identity(study))
    if trials:
        print(f"re-running the best config of {len({t.label for t in trials})} searched method(s) on "
              f"{len(fresh_orders)} fresh orders", flush=True)
    return trials


def _full_reruns(study: Study, recorder: StudyRecorder, setting: str) -> list[TrialSpec]:
    """search.protocol first_tasks: the winner of every searched label (its search trials learned only the first
    k tasks), on the study's full orders, or on ``search.final_orders`` when given; label and id + FULL."""
    k = study.search.first_tasks
    labels = {m.display for i, m in enumerate(study.methods) if is_searched(study, i)}
    fresh = bool(study.final_orders())
    orders = study.final_orders() if fresh else study.task_orders()
    chosen = [c for c in recorder.configs.values() if c.label in labels]
    best = best_per_label([config_entry(c, recorder.records_of(c.config_id), study.search.objective,
                                        selection=study.search.selection) for c in chosen], FRESH)
    trials: list[TrialSpec] = []
    for label in sorted(labels):
        if label not in best:
            print(f"{label}: no config completed every search trial; nothing to run on the full orders", flush=True)
            continue
        winner = recorder.configs[best[label]["config_id"]]
        rerun = Config(winner.config_id + FULL, label + FULL, winner.method, winner.params, winner.searched)
        recorder.add_config(rerun)
        trials += trials_for(rerun, orders, study.seeds, setting, study.evaluate_unseen, tag="f" if fresh else "o",
                             identity=lifecycle.trial_identity(study))
    if trials:
        print(f"running the winner of {len({t.label for t in trials})} searched method(s), tuned on the first {k} "
              f"tasks, on {len(orders)} {'fresh' if fresh else 'full'} orders of all {study.num_tasks} tasks",
              flush=True)
    return trials


LOST_WORKER = ("OutOfMemoryError", "RayActorError", "ActorDiedError", "WorkerCrashedError", "ActorUnavailableError",
               "NodeDiedError")


def worker_lost(error: BaseException) -> str | None:
    """Why Tune stopped, when it stopped because Ray lost a trial's worker (Ray's OOM killer, a crashed
    node): Tune's controller raises then instead of failing the one trial. None for any other error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in LOST_WORKER or "killed due to the node running low on memory" in str(error):
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            return f"Ray lost a trial worker ({type(error).__name__}: {first[:200]})"
        error = error.__cause__ or error.__context__
    return None


def _chance(study: Study, benchmark: datasets.Benchmark) -> tuple[list[int], list[int]] | None:
    """(classes, validation size) per task, for flagging collapsed trials; None where validation is the training
    set (trainability benchmarks: random labels are meant to sit at chance) or there is none."""
    params = study.benchmark_params()
    if benchmark.kind != "classification" or benchmark.validation_source != "held_out" \
            or getattr(type(params), "validates_on_training_set", False):
        return None
    return list(benchmark.classes_per_task), [0 if t.x_val is None else len(t.x_val) for t in benchmark.tasks]


def _study_params(study: Study) -> dict[str, Any]:
    return {"benchmark": study.benchmark.name, "benchmark_params": study.benchmark.params,
            "orders": study.orders.model_dump() if study.orders else None, "seeds": study.seeds,
            "methods": [m.display for m in study.methods], "search": study.search.model_dump(mode="json")}


def _description(study: Study, benchmark: datasets.Benchmark, orders: list) -> str:
    """The MLflow experiment's description (markdown): what the study is and how its runs are laid out."""
    shape = (f"{benchmark.num_tasks} tasks, {len(orders)} task orders x {len(study.seeds)} seeds"
             if benchmark.kind == "classification" else "a regression stream")
    searched = [m.display for i, m in enumerate(study.methods) if is_searched(study, i)]
    return "\n".join([
        f"**clorch study `{study.name}`** on `{study.benchmark.name}` ({shape}); methods: "
        + ", ".join(f"`{m.display}`" for m in study.methods)
        + (f" (searched: {', '.join(searched)})" if searched else "") + ".",
        "",
        "Runs: the study run (`summary.json`, the report under `report/`) > one run per method config, named by "
        "its label (`label #k`: the k-th config of a label with several; metrics `acc`, `bwt`, `forgetting`, `aopd`, "
        "`mopd`, `R`; `learning_curve.png`, `opd_per_task.png`) > one run per trial, `<config> o<r> s<seed>` "
        "(`f<r>`: a fresh order of a best config's re-run), with `acc_task_<j>` per task as steps, `matrix.png`, "
        "`matrix.csv` and `trial.json`. Params: only those that differ from the method's defaults; `params.json` "
        "has all.",
    ])


def trial_slots(study: Study) -> int:
    """How many of the study's trials the Ray cluster holds at once now (at least 1).

    A search's trials are capped at this: without a cap Ray Tune keeps one trial pending at a time for a
    custom searcher, and with actors reused that ran a search one trial after another on a 2-slot machine
    (38 s against 67 s for studies/search_permuted_digits.yaml's trials, bench/study_overhead.py). With the
    cap (Tune's own ConcurrencyLimiter, what ``search.max_concurrent`` sets) TPE has about slots / R configs
    in flight at once. An autoscaling cluster counts what it has when the search starts."""
    import ray

    have = ray.cluster_resources()
    fits = [have.get(kind, 0.0) / need for kind, need in (("CPU", study.resources.cpu), ("GPU", study.resources.gpu))
            if need > 0]
    return max(1, int(min(fits))) if fits else 1


def _warm_mlflow(uri: str) -> None:
    """Import MLflow (with clorch's tracking module) and open its store (a new SQLite file gets its tables):
    seconds of work done while an embedded Ray starts. It writes no run: the earlier tree is retired and the
    study run made once Ray is up."""
    import orchestrator.results.tracking  # noqa: F401 - imported here, off the main thread
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def _run_trials(study: Study, runs: "TuneRuns", recorder: StudyRecorder, tracker: Any, todo: list, searched: list,
                setting: str, first_tasks: Any) -> None:
    """Every Tune run of the study in order: the fixed trials (and ASHA's), each searched entry, the re-runs."""
    with Interrupt() as runs.interrupt:
        try:
            if first_tasks and study.search.scheduler.kind == "asha":  # ASHA's max_t is k: full-order trials apart
                runs.run_fixed("search", [t for t in todo if t.max_tasks is not None])
                runs.run_fixed("fixed", [t for t in todo if t.max_tasks is None], schedule=False)
            else:
                runs.run_fixed("search", todo)
            for index in searched:
                runs.run_optuna(index, setting)
            final = _full_reruns(study, recorder, setting) if first_tasks else _fresh_reruns(study, recorder, setting)
            runs.run_fixed("final", [t for t in final if t.trial_id not in recorder.previous], schedule=False)
        except StudyInterrupted as e:  # keep every finished task, no summary, every MLflow run KILLED
            e.kept = recorder.interrupted(f"interrupted by {e.signame}")
            tracker.interrupt()
            raise
        except Exception as e:  # Tune raises what a callback raised, possibly wrapped
            cause = _unschedulable(e)
            if cause is None:
                raise
            recorder.interrupted("not scheduled: " + str(cause).split(":")[0])  # keep finished tasks, as Ctrl-C
            tracker.interrupt()
            raise cause from None
