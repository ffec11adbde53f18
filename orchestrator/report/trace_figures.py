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
  over the config's trials against the position. As for traces, series named
  ``group/element`` are drawn together: one figure per group and config, a
  line per element (``n_lot_cools/backbone.1`` is the line ``backbone.1`` of
  ``series_n_lot_cools_<config>``).
- A table of counts: a series (group) whose name starts with ``n_`` declares
  itself a count per task (how often something happened in the task:
  ``n_lot_cools/backbone.1``); if its values are all non-negative integers the
  table gives, per config and element, its total over the tasks and the
  number of tasks where it was above 0 (mean over the trials), so a count
  that stays 0 reads "never".

Each config's trace figures come first, then its series figures, so what a
config counted per task sits beside what it traced per step.

Drawn without pyplot (as orchestrator.report.figures). ``draw`` is the
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
              "(series named ``group/element`` drawn together) and config, mean over the config's trials against "
              "the task's position; a line per element.",
    "counts": "Counts the methods reported per task (series named ``n_...``), mean "
              "over each config's trials: the total over the tasks, and in how many tasks it was above 0 "
              "(\"never\": 0 in every task).",
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
    """The series of a config as drawn: a ``group`` for every ``group/element`` name, else the name."""
    out: dict[str, None] = {}
    for rec in result.records:
        for name in getattr(rec, "series", None) or {}:
            out.setdefault(_split(name)[0])
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


def series_elements(records: list[TrialRecord], group: str) -> dict[str, np.ndarray]:
    """element label -> (trials x positions) of a drawn series: the ``group/element`` series of the
    records (scalars), or the elements ``0, 1, ...`` of a series named ``group`` (a scalar: one, ``group``)."""
    keys = sorted({k for rec in records for k in (getattr(rec, "series", None) or {}) if "/" in k
                   and _split(k)[0] == group})
    if keys:
        recs = [rec for rec in records if any(k in (getattr(rec, "series", None) or {}) for k in keys)]
        positions = max(len(rec.series.get(k) or []) for rec in recs for k in keys)
        out = {}
        for k in keys:
            values = np.full((len(recs), positions), np.nan)
            for i, rec in enumerate(recs):
                for p, v in enumerate(rec.series.get(k) or []):
                    if v is not None and not isinstance(v, list):
                        values[i, p] = v
            out[_split(k)[1]] = values
        return out
    values = series_values(records, group)
    width = values.shape[2]
    return {(str(e) if width > 1 else group): values[:, :, e] for e in range(width)}


def series_figure(result: ConfigResult, name: str) -> Figure:
    """A drawn series against the task position, mean over the config's trials; a line per element."""
    elements = series_elements(result.records, name)
    trials = max((v.shape[0] for v in elements.values()), default=0)
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, values in elements.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=0) if values.size else np.zeros(0)
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, "-", marker="o" if len(x) <= 30 else None, ms=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("position in the order (1 = learned first)")
    ax.set_ylabel(name)
    ax.set_title(f"{result.name}: {name} after each task ({trials} trial(s))")
    if len(elements) <= 20:
        ax.legend(fontsize=8, ncol=2, title="element" if len(elements) > 1 else None)
    ax.grid(alpha=0.3)
    return fig


COUNT_PREFIX = "n_"  # a series named n_<what> (or n_<what>/<element>) is a count per task


def _is_count(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return bool(v.size) and bool((v >= 0).all()) and bool((v == np.round(v)).all())


def count_rows(results: list[ConfigResult]) -> list[tuple[str, str, str, float, float, int]]:
    """(config, series group, element, total over the tasks, tasks above 0, tasks with a value), means over
    the config's trials, for every drawn series named ``n_...`` whose values are all non-negative integers."""
    out = []
    for r in results:
        for group in series_names(r):
            if not group.startswith(COUNT_PREFIX):
                continue
            elements = series_elements(r.records, group)
            if not elements or not all(_is_count(v) for v in elements.values()):
                continue
            for label, values in elements.items():
                present = np.isfinite(values)
                out.append((r.name, group, label, float(np.nansum(values, axis=1).mean()),
                            float((np.nan_to_num(values) > 0).sum(axis=1).mean()), int(present.sum(axis=1).max())))
    return out


def counts_table(results: list[ConfigResult]) -> list[str]:
    """The markdown table of ``count_rows`` (empty when no series is a count)."""
    rows = count_rows(results)
    if not rows:
        return []
    lines = ["| config | count | element | total over the tasks | tasks with any |", "|---|---|---|---:|---:|"]
    for config, group, label, total, nonzero, tasks in rows:
        lines.append(f"| {config} | {group} | {label} | {total:g} | {nonzero:g} of {tasks}"
                     + (" (never)" if total == 0 else "") + " |")
    return lines


# ---------------------------------------------------------------- the report's section


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def draw(results: list[ConfigResult], fig_dir: Path) -> tuple[dict[str, Figure], str]:
    """The trainability figure, the trace figures and the series figures (name -> Figure, not rendered: the caller
    saves them as ``fig_dir``/<name>.png, with every other figure of the report at once), and the report's
    markdown section; both empty when no record carries a trace or a series. Removes stale figures of ours."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    stale = [*fig_dir.glob("*_trajectories_*.png"), *fig_dir.glob("series_*.png"), fig_dir / "trainability.png"]
    written: dict[str, Path] = {}
    figures: dict[str, Figure] = {}
    per_config: list[list[str]] = []  # each config's figures: its traces, then its series
    kinds: set[str] = set()

    def save(name: str, fig: Figure) -> None:
        written[name] = fig_dir / f"{name}.png"
        figures[name] = fig

    for r in results:
        mine = []
        for group in trace_groups(r):
            name = f"{_file_safe(group)}_trajectories_{_file_safe(r.name)}"
            save(name, trajectories(r, group))
            mine.append(name)
            kinds.add("trajectories")
        for series in series_names(r):
            name = f"series_{_file_safe(series)}_{_file_safe(r.name)}"
            save(name, series_figure(r, series))
            mine.append(name)
            kinds.add("series")
        if mine:
            per_config.append(mine)
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
    for names in per_config:
        for n in names:
            lines += [f"![{n}]({fig_dir.name}/{written[n].name})", ""]
    for kind in ("trajectories", "series"):
        if kind in kinds:
            lines += [CAPTIONS[kind], ""]
    table = counts_table(results)
    if table:
        lines += [CAPTIONS["counts"], "", *table, ""]
    return figures, "\n".join(lines)
