"""Figures of what methods recorded beside the accuracies: per-step traces and per-task series.

Nothing here knows a method: every figure is drawn from what the records
themselves label (methods/protocol.py describes both hooks).

- ``trainability``: accuracy on each task at the end of its own training,
  A[pos(j), j], against the task's position in the order (mean over the
  config's trials), one line per config: does the network still fit new
  tasks late in the stream? Drawn when any record has a trace or series.
- ``<group>_trajectories_<config>``: a record's ``trace`` is a per-step series
  dict: ``step`` (the x axis), optional ``task_start_step`` (task boundaries,
  dotted) and ``task_position``, and series aligned with ``step``; a key
  ``group/element`` is one line of the group's figure (``lr/backbone.1`` is
  the line ``backbone.1`` of ``lr_trajectories``), a key without ``/`` is a
  group of one. Mean over the config's trials with their min-max band.
- ``series_<name>_<config>``: a record's ``series[name]`` holds a value per
  task position (a float, or a list of floats: one line per element), mean
  over the config's trials against the position.

Drawn without pyplot (as orchestrator.report.figures). ``write`` is the
report's entry point: it draws nothing for records without either, and removes
figures of an earlier report that no longer apply.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.report.config_result import ConfigResult, config_colors
from orchestrator.results.records import TrialRecord

# the keys of a trace that place the steps, not series to draw
TRACE_AXES = ("step", "task_start_step", "task_position")

CAPTIONS = {
    "trainability": "Trainability: accuracy on each task at the end of its own training (A[pos(j), j]) against "
                    "the task's position in the order, mean over each config's trials. A curve that falls with "
                    "the position is loss of trainability.",
    "trajectories": "Per-step traces the method recorded (one figure per traced quantity and config, one line "
                    "per element), mean over the config's trials with the min-max band; dotted lines: task "
                    "boundaries.",
    "series": "Per-task series the method reported after each task (``task_series()``), one figure per series "
              "and config, mean over the config's trials against the task's position; a vector-valued series "
              "has a line per element.",
}


def own_task_accuracy(matrix: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """a[p] = A[p, order[p]]: the task learned p-th, tested right after its own training."""
    return np.array([matrix[p, j] for p, j in enumerate(order)], dtype=float)


def trainability(results: list[ConfigResult]) -> Figure:
    colors = config_colors(results)
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    for r in results:
        if not r.ok:
            continue
        curve = np.nanmean([own_task_accuracy(A, o) for A, o in zip(r.matrices, r.orders)], axis=0)
        ax.plot(np.arange(1, len(curve) + 1), curve, "-", marker="o" if len(curve) <= 30 else None, ms=3,
                color=colors[r.name], label=f"{r.name} (first {curve[0]:.1f}, last {curve[-1]:.1f})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("position in the order (1 = learned first)")
    ax.set_ylabel("accuracy at the end of its own training (%)")
    ax.set_title("Trainability: each task right after it was learned")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- per-step traces


def traced(result: ConfigResult) -> list[TrialRecord]:
    return [rec for rec in result.records if rec.completed and getattr(rec, "trace", None)]


def _split(key: str) -> tuple[str, str]:
    group, _, element = key.partition("/")
    return group, element or group


def trace_groups(result: ConfigResult) -> list[str]:
    """The traced quantities of a config: the ``group`` of every ``group/element`` key, in first-seen order."""
    out: dict[str, None] = {}
    for rec in traced(result):
        steps = len(rec.trace.get("step") or [])
        for key, values in rec.trace.items():
            if key not in TRACE_AXES and isinstance(values, list) and len(values) == steps and steps:
                out.setdefault(_split(key)[0])
    return list(out)


def _log_scale(values: list[float]) -> bool:
    v = np.array([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size) and bool((v > 0).all()) and v.max() / v.min() > 100


def trajectories(result: ConfigResult, group: str) -> Figure:
    """One line per element of ``group``: value against ``step``, mean (and min-max) over the traced trials."""
    recs = traced(result)
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    keys = sorted({k for rec in recs for k in rec.trace if k not in TRACE_AXES and _split(k)[0] == group})
    drawn: list[float] = []
    for key in keys:
        by_step: dict[Any, list[float]] = {}
        for rec in recs:
            for step, v in zip(rec.trace.get("step") or [], rec.trace.get(key) or []):
                if v is not None:
                    by_step.setdefault(step, []).append(v)
        if not by_step:
            continue
        steps = np.array(sorted(by_step))
        values = [np.array(by_step[s], dtype=float) for s in steps]
        drawn += [float(v.mean()) for v in values]
        line, = ax.plot(steps, [v.mean() for v in values], label=_split(key)[1])
        if len(recs) > 1:
            ax.fill_between(steps, [v.min() for v in values], [v.max() for v in values],
                            color=line.get_color(), alpha=0.15)
    for step in (recs[0].trace.get("task_start_step") or [] if recs else [])[1:]:
        ax.axvline(step, color="gray", ls=":", lw=0.8)
    if _log_scale(drawn):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(group)
    ax.set_title(f"{result.name}: {group} per step ({len(recs)} trial(s))")
    if keys and len(keys) <= 20:
        ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, which="both")
    return fig


def lr_trajectories(result: ConfigResult) -> Figure:
    """The ``lr`` group of the traces (an lr scheduler's per-layer learning rates)."""
    return trajectories(result, "lr")


# ---------------------------------------------------------------- per-task series


def series_names(result: ConfigResult) -> list[str]:
    out: dict[str, None] = {}
    for rec in result.records:
        for name in getattr(rec, "series", None) or {}:
            out.setdefault(name)
    return list(out)


def series_values(records: list[TrialRecord], name: str) -> np.ndarray:
    """(trials x positions x elements), NaN where a trial has no value; a scalar series has one element."""
    rows = [rec.series.get(name) or [] for rec in records if name in (getattr(rec, "series", None) or {})]
    positions = max((len(r) for r in rows), default=0)
    width = max((len(v) if isinstance(v, list) else 1 for r in rows for v in r if v is not None), default=1)
    out = np.full((len(rows), positions, width), np.nan)
    for i, r in enumerate(rows):
        for p, v in enumerate(r):
            if v is None:
                continue
            v = [np.nan if x is None else x for x in (v if isinstance(v, list) else [v])]
            out[i, p, :len(v)] = v
    return out


def series_figure(result: ConfigResult, name: str) -> Figure:
    """``series[name]`` against the task position, mean over the config's trials; a line per element."""
    values = series_values(result.records, name)
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0) if values.size else np.zeros((0, 1))
    x = np.arange(1, mean.shape[0] + 1)
    width = mean.shape[1]
    for e in range(width):
        ax.plot(x, mean[:, e], "-", marker="o" if len(x) <= 30 else None, ms=3,
                label=str(e) if width > 1 else name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("position in the order (1 = learned first)")
    ax.set_ylabel(name)
    ax.set_title(f"{result.name}: {name} after each task ({values.shape[0]} trial(s))")
    if width <= 20:
        ax.legend(fontsize=8, ncol=2, title="element" if width > 1 else None)
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- the report's section


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def write(results: list[ConfigResult], fig_dir: Path) -> tuple[dict[str, Path], str]:
    """Draw the trainability figure, the trace figures and the series figures into ``fig_dir``.

    Returns (figure name -> path, the report's markdown section); both empty
    when no record carries a trace or a series.
    """
    fig_dir.mkdir(parents=True, exist_ok=True)
    stale = [*fig_dir.glob("*_trajectories_*.png"), *fig_dir.glob("series_*.png"), fig_dir / "trainability.png"]
    written: dict[str, Path] = {}
    drawn_traces, drawn_series = [], []

    def save(name: str, fig: Figure) -> None:
        written[name] = fig_dir / f"{name}.png"
        fig.savefig(written[name], dpi=110)

    for r in results:
        for group in trace_groups(r):
            name = f"{_file_safe(group)}_trajectories_{_file_safe(r.name)}"
            save(name, trajectories(r, group))
            drawn_traces.append(name)
        for series in series_names(r):
            name = f"series_{_file_safe(series)}_{_file_safe(r.name)}"
            save(name, series_figure(r, series))
            drawn_series.append(name)
    if written and any(r.ok for r in results):
        save("trainability", trainability(results))
    for path in stale:
        if path not in written.values():
            path.unlink(missing_ok=True)
    if not written:
        return {}, ""
    lines = ["", "## Trainability and what the methods recorded", ""]
    if "trainability" in written:
        lines += [f"![trainability]({fig_dir.name}/trainability.png)", "", CAPTIONS["trainability"], ""]
    for names, caption in ((drawn_traces, "trajectories"), (drawn_series, "series")):
        if names:
            for n in names:
                lines += [f"![{n}]({fig_dir.name}/{written[n].name})", ""]
            lines += [CAPTIONS[caption], ""]
    return written, "\n".join(lines)
