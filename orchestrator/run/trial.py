"""One trial: a method learns the tasks of one order; every task is evaluated after each.

Plain Python, no Ray: ``run_trial`` is what a Tune worker calls, and what a
test or a notebook calls directly. Progress leaves through ``report`` once per
task boundary (the row of the accuracy matrix just filled, and timings).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

import methods
from datasets.benchmark import Benchmark
from methods import MethodContext, seed_everything
from methods.loop import accuracy
from orchestrator.run.checkpoint import TrialState, capture_rng, restore_rng
from orchestrator.results.records import ClassificationRecord, StreamRecord, to_json_row
from orchestrator.study.schema import TrialSpec

Report = Callable[[dict[str, Any]], None]


def pick_device(gpu: float = 0.0) -> torch.device:
    return torch.device("cuda") if gpu > 0 and torch.cuda.is_available() else torch.device("cpu")


def run_trial(spec: TrialSpec, benchmark: Benchmark, report: Report | None = None,
              device: torch.device | None = None, resume: TrialState | None = None,
              checkpoints: bool = False, checkpoint_every_s: float = 0.0) -> dict[str, Any]:
    """Train ``spec.order`` in sequence; return the trial record's JSON (matrix aligned by task identity).

    The record is built by orchestrator.results.records (``ClassificationRecord.from_rows``
    from the rows below, ``StreamRecord.from_stream`` for a stream) and crosses every
    boundary as ``to_json()``: it is what this returns (``record_from_json`` gives the
    typed record back), and it travels with the last row's report (key ``record``), so
    the driver stores exactly what the trial computed; the rows reported before it let
    the driver keep the finished tasks of a trial that dies midway.

    After each task a method's optional ``task_series()`` ({name: float or list of
    floats}) is called; the row carries it as ``series``, the record as
    ``series[name][position]``.

    ``checkpoints``: a reported row carries a ``checkpoint`` (a TrialState
    after that task) for the caller to store, when ``checkpoint_every_s``
    seconds passed since the trial's start or its last checkpoint (0: every
    row, the last included; otherwise never the last row, which carries the
    record: a finished trial has nothing to resume). Saving costs a copy of the method's state and a
    Tune storage sync; a few short tasks are cheaper to redo after a lost
    worker than to save. ``resume``: such a state; the
    trial goes on from the task after it, with the method, the RNGs and the
    matrix as they were, so the result equals an uninterrupted run's.
    """
    begun = time.time()
    device = device or torch.device("cpu")
    seed_everything(spec.seed)
    entry = methods.METHODS.get(spec.method)
    params = entry.params.model_validate(spec.params)
    if benchmark.kind == "regression_stream":
        return run_stream_trial(spec, benchmark, entry.target(params), report)
    ctx = MethodContext(benchmark.input_shape, benchmark.classes_per_task, spec.setting, device, spec.seed)
    method = entry.target(params, ctx)

    T = benchmark.num_tasks
    # search.protocol first_tasks: a search trial learns order[:max_tasks] and ends there, completed
    last = T if spec.max_tasks is None else min(T, max(1, spec.max_tasks))
    matrix = np.full((T, T), np.nan)
    val_matrix = np.full((T, T), np.nan)
    setting = spec.setting  # class_incremental: labels shifted to global classes (Benchmark.split)
    test = [benchmark.split(j, device, "test", setting) for j in range(T)]  # moved once, reused every row
    val = [benchmark.split(j, device, "val", setting) if _has_val(task) else None
           for j, task in enumerate(benchmark.tasks)]
    rows: list[dict[str, Any]] = []
    resumed_at: list[int] = []
    start = 0
    if resume is not None:
        method.load_state_dict(resume.method)
        rows = [dict(r) for r in resume.rows]
        for r in rows:
            matrix[r["position"]] = [np.nan if v is None else v for v in r["row"]]
            if r.get("val_row") is not None:
                val_matrix[r["position"]] = [np.nan if v is None else v for v in r["val_row"]]
        restore_rng(resume.rng)
        start = resume.tasks_done
        resumed_at = [*resume.resumed_at, start]
    first: dict[str, Any] = {"test_sizes": [int(t.x.shape[0]) for t in test]}  # rides on the row of position 0
    if spec.evaluate_unseen and start == 0:  # forward transfer's reference: the untrained network
        first["init_row"] = to_json_row(np.array([accuracy(lambda x, j=j: method.predict(x, j), test[j].x, test[j].y)
                                                  for j in range(T)], dtype=float))
    learn_all = getattr(method, "learn_all", None)  # offline methods (joint) see every task first
    saved = time.perf_counter()  # the last checkpoint (or the start): checkpoint_every_s counts from it
    for position, task_id in enumerate(spec.order[:last]):
        if position < start:
            continue
        started = time.perf_counter()
        info = {}
        if position == 0 and learn_all is not None:
            info = learn_all({j: benchmark.split(j, device, "train", setting) for j in range(T)})
        info.update(method.learn_task(task_id, benchmark.split(task_id, device, "train", setting),
                                      **_validation(method, benchmark, task_id, device, setting)))
        _sync(device)
        trained = time.perf_counter()
        targets = range(T) if spec.evaluate_unseen else spec.order[:position + 1]
        for j in targets:  # every task on test (what is reported) and on validation (what chooses)
            matrix[position, j] = accuracy(lambda x, j=j: method.predict(x, j), test[j].x, test[j].y)
            if val[j] is not None:
                val_matrix[position, j] = accuracy(lambda x, j=j: method.predict(x, j), val[j].x, val[j].y)
        evaluated = time.perf_counter()
        seen = list(spec.order[:position + 1])
        series = _task_series(method)
        row = {
            "position": position, "tasks_learned": position + 1, "task_id": task_id,
            "row": to_json_row(matrix[position]),
            "val_row": to_json_row(val_matrix[position]) if any(v is not None for v in val) else None,
            "acc_seen": float(np.nanmean(matrix[position, seen])),
            "val_acc_seen": _mean_or_nan(val_matrix[position, seen]),
            "train_s": trained - started, "eval_s": evaluated - trained,
            **{f"info_{k}": float(v) for k, v in info.items()},
            **({"series": series} if series else {}),
            **(first if position == 0 else {}),
        }
        rows.append(row)
        if report is not None:
            out = dict(row)
            if position == start:  # each attempt's first row: the rows it starts from (none from scratch), so a
                out["rows_before"] = rows[:-1]  # retry without a checkpoint replaces the rows a dead attempt sent
            if checkpoints and (checkpoint_every_s <= 0 or (position < last - 1 and
                                                            time.perf_counter() - saved >= checkpoint_every_s)):
                saved = time.perf_counter()
                out["checkpoint"] = TrialState(position + 1, [dict(r) for r in rows], method.state_dict(),
                                               capture_rng(), resumed_at)
            if position == last - 1:  # the record travels with the last row: a scheduler that stops
                out["record"] = _final_record(spec, rows, T, resumed_at, method, begun).to_json()  # nothing lost
            report(out)
    if report is not None and start < last:
        return out["record"]
    rec = _final_record(spec, rows, T, resumed_at, method, begun).to_json()
    if report is not None:  # resumed from a checkpoint taken after the last task
        report({"record": rec, "tasks_learned": last, "acc_seen": rows[-1]["acc_seen"],
                "val_acc_seen": rows[-1].get("val_acc_seen", float("nan")), "rows_before": rows})
    return rec


def _has_val(task) -> bool:
    return task.x_val is not None and len(task.x_val) > 0


def _mean_or_nan(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _final_record(spec: TrialSpec, rows: list[dict[str, Any]], T: int, resumed_at: list[int],
                  method: Any, begun: float) -> ClassificationRecord:
    trace = getattr(method, "trace", None)  # optional: a per-step series dict (methods/protocol.py), subsampled
    return ClassificationRecord.from_rows(
        spec, rows, T, status="completed",
        started_at=begun,                   # unix seconds; with wall_s, what the orchestration-overhead bench needs
        wall_s=time.time() - begun,         # this attempt: building the method, moving data, every task
        resumed_at=resumed_at,              # tasks done at each resume from a checkpoint (empty: ran in one go)
        trace=trace() if trace is not None else None)


def _task_series(method: Any) -> dict[str, Any]:
    """The method's optional per-task series after a task: {name: float or list of floats}, JSON-ready."""
    hook = getattr(method, "task_series", None)
    if hook is None:
        return {}
    out = {}
    for name, value in (hook() or {}).items():
        value = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float)
        out[str(name)] = value.ravel().tolist() if value.ndim else float(value)
    return out


def _validation(method, benchmark: Benchmark, task_id: int, device: torch.device, setting: str) -> dict[str, Any]:
    """``val=`` for methods that declare ``uses_validation = True`` (HALRP's Fisher uses it).

    Their ``learn_task(task_id, data, val=None)`` gets the task's held-out split,
    or None when the benchmark has none (val_fraction 0); other methods get nothing extra.
    """
    if not getattr(method, "uses_validation", False):
        return {}
    task = benchmark.tasks[task_id]
    return {"val": benchmark.split(task_id, device, "val", setting) if _has_val(task) else None}


def run_stream_trial(spec: TrialSpec, benchmark: Benchmark, learner, report: Report | None) -> dict[str, Any]:
    """One pass over the stream drawn from the trial's seed; squared error per time window (record JSON)."""
    begun = time.time()
    stream = benchmark.make_stream(spec.seed)
    started = time.perf_counter()
    out = learner.learn_stream(stream)
    seconds = time.perf_counter() - started
    rec = StreamRecord.from_stream(spec, out["sq_err"], out["step_trace"], int(out["trace_every"]), stream.truth,
                                   seconds, started_at=begun, wall_s=time.time() - begun).to_json()
    if report is not None:
        report({"record": rec, "mse": rec["mse"]})
    return rec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
