"""One trial: a method learns the tasks of one order; every task is evaluated after each.

Plain Python, no Ray: ``run_trial`` is what a Tune worker calls, and what a
test or a notebook calls directly. Progress leaves through ``report`` once per
task boundary (the row of the accuracy matrix just filled, and timings).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch

import methods
from datasets.benchmark import Benchmark
from methods import MethodContext, seed_everything
from methods.loop import accuracy
from orchestrator.run.checkpoint import TrialState, capture_rng, restore_rng
from orchestrator.results.records import record, to_json_row
from orchestrator.study.schema import TrialSpec

Report = Callable[[dict[str, Any]], None]


def pick_device(gpu: float = 0.0) -> torch.device:
    return torch.device("cuda") if gpu > 0 and torch.cuda.is_available() else torch.device("cpu")


def run_trial(spec: TrialSpec, benchmark: Benchmark, report: Report | None = None,
              device: torch.device | None = None, resume: TrialState | None = None,
              checkpoints: bool = False) -> dict[str, Any]:
    """Train ``spec.order`` in sequence; return the trial record (matrix aligned by task identity).

    The record also travels with the last row's report (key ``record``), so
    the driver stores exactly what the trial computed; the rows reported
    before it let the driver keep the finished tasks of a trial that dies midway.

    ``checkpoints``: every reported row carries a ``checkpoint`` (a TrialState
    after that task) for the caller to store. ``resume``: such a state; the
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
    matrix = np.full((T, T), np.nan)
    test = [task.on(device, "test") for task in benchmark.tasks]  # moved once, reused every row
    rows: list[dict[str, Any]] = []
    resumed_at: list[int] = []
    start = 0
    if resume is not None:
        method.load_state_dict(resume.method)
        rows = [dict(r) for r in resume.rows]
        for r in rows:
            matrix[r["position"]] = [np.nan if v is None else v for v in r["row"]]
        restore_rng(resume.rng)
        start = resume.tasks_done
        resumed_at = [*resume.resumed_at, start]
    learn_all = getattr(method, "learn_all", None)  # offline methods (joint) see every task first
    for position, task_id in enumerate(spec.order):
        if position < start:
            continue
        started = time.perf_counter()
        info = {}
        if position == 0 and learn_all is not None:
            info = learn_all({j: task.on(device, "train") for j, task in enumerate(benchmark.tasks)})
        info.update(method.learn_task(task_id, benchmark.tasks[task_id].on(device, "train"),
                                      **_validation(method, benchmark.tasks[task_id], device)))
        _sync(device)
        trained = time.perf_counter()
        targets = range(T) if spec.evaluate_unseen else spec.order[:position + 1]
        for j in targets:
            matrix[position, j] = accuracy(lambda x, j=j: method.predict(x, j), test[j].x, test[j].y)
        evaluated = time.perf_counter()
        row = {
            "position": position, "tasks_learned": position + 1, "task_id": task_id,
            "row": to_json_row(matrix[position]),
            "acc_seen": float(np.nanmean(matrix[position, list(spec.order[:position + 1])])),
            "train_s": trained - started, "eval_s": evaluated - trained,
            **{f"info_{k}": float(v) for k, v in info.items()},
        }
        rows.append(row)
        if report is not None:
            out = dict(row)
            if position == start and start > 0:
                out["rows_before"] = rows[:-1]  # a resumed trial: the driver may not have seen them
            if checkpoints:
                out["checkpoint"] = TrialState(position + 1, [dict(r) for r in rows], method.state_dict(),
                                               capture_rng(), resumed_at)
            if position == T - 1:  # the record travels with the last row: a scheduler that stops
                out["record"] = _final_record(spec, rows, T, resumed_at, method, begun)  # the trial loses nothing
            report(out)
    if report is not None and start < T:
        return out["record"]
    rec = _final_record(spec, rows, T, resumed_at, method, begun)
    if report is not None:  # resumed from a checkpoint taken after the last task
        report({"record": rec, "tasks_learned": T, "acc_seen": rows[-1]["acc_seen"], "rows_before": rows})
    return rec


def _final_record(spec: TrialSpec, rows: list[dict[str, Any]], T: int, resumed_at: list[int],
                  method: Any, begun: float) -> dict[str, Any]:
    rec = record(spec, rows, T, status="completed")
    rec["started_at"] = begun  # unix seconds; with wall_s, what the orchestration-overhead bench needs
    rec["wall_s"] = time.time() - begun  # this attempt: building the method, moving data, every task
    trace = getattr(method, "trace", None)  # optional: an lr scheduler's per-layer series (lot), subsampled
    if trace is not None and (series := trace()) is not None:
        rec["trace"] = series
    rec["resumed_at"] = resumed_at  # tasks done at each resume from a checkpoint (empty: ran in one go)
    return rec


def _validation(method, task, device: torch.device) -> dict[str, Any]:
    """``val=`` for methods that declare ``uses_validation = True`` (HALRP's Fisher uses it).

    Their ``learn_task(task_id, data, val=None)`` gets the task's held-out split,
    or None when the benchmark has none (val_fraction 0); other methods get nothing extra.
    """
    if not getattr(method, "uses_validation", False):
        return {}
    return {"val": task.on(device, "val") if task.x_val is not None else None}


STREAM_WINDOWS = 100


def run_stream_trial(spec: TrialSpec, benchmark: Benchmark, learner, report: Report | None) -> dict[str, Any]:
    """One pass over the stream drawn from the trial's seed; squared error per time window."""
    stream = benchmark.make_stream(spec.seed)
    started = time.perf_counter()
    out = learner.learn_stream(stream)
    seconds = time.perf_counter() - started
    sq = out["sq_err"]
    window = max(1, len(sq) // STREAM_WINDOWS)
    usable = len(sq) // window * window
    rec = {
        **spec.to_dict(), "kind": "regression_stream", "status": "completed", "error": None,
        "steps": int(len(sq)), "mse": float(sq.mean()), "window": window,
        "window_mse": [float(v) for v in sq[:usable].reshape(-1, window).mean(axis=1)],
        "step_trace": out["step_trace"].tolist(), "trace_every": int(out["trace_every"]),
        "truth": _truth_at_trace(stream.truth, len(sq), int(out["trace_every"])),
        "timings": [{"position": 0, "task_id": 0, "train_s": seconds, "eval_s": 0.0}],
        "tasks_done": 1, "num_tasks": 1, "matrix": None, "task_info": [],
    }
    if report is not None:
        report({"record": rec, "mse": rec["mse"]})
    return rec


def _truth_at_trace(truth: dict[str, np.ndarray], steps: int, every: int) -> dict[str, list]:
    """The stream's truth for plots: per-step series sampled where the step-size trace is."""
    out = {}
    for key, value in truth.items():
        value = np.asarray(value)
        if value.ndim == 1 and len(value) == steps:
            out[key] = value[::every].tolist()
        elif value.ndim == 1 and value.size <= 1000:
            out[key] = value.tolist()
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
