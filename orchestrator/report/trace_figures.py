"""Figures of studies whose trials carry an lr scheduler's trace (specs/lot.md).

- ``trainability``: accuracy on each task at the end of its own training,
  A[pos(j), j], against the task's position in the order (mean over the
  config's trials), one line per config: does the network still fit new
  tasks late in the stream? (On random_label_mnist a task is tested on its
  own training set, so this is how well it can still memorise.)
- ``lr_trajectories_<config>``: the per-layer learning rates the scheduler
  chose (``lr/<layer>`` of the record's ``trace``), one line per layer
  against the optimiser step, mean over the config's trials with their
  min-max band; dotted lines mark task boundaries.

Drawn from the trial records alone, without pyplot (as orchestrator.report.figures).
``write`` is the report's entry point: it draws nothing for studies without
a trace, and removes figures of an earlier report that no longer apply.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.report.analysis import ConfigResult
from orchestrator.report.figures import config_colors

CAPTIONS = {
    "trainability": "Trainability: accuracy on each task at the end of its own training (A[pos(j), j]) against "
                    "the task's position in the order, mean over each config's trials. A curve that falls with "
                    "the position is loss of trainability.",
    "lr_trajectories": "Per-layer learning rates chosen by the lot scheduler at its control steps (every K "
                       "optimiser steps), mean over the config's trials with the min-max band; dotted lines: "
                       "task boundaries.",
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


def traced(result: ConfigResult) -> list[dict[str, Any]]:
    return [rec for rec in result.records if rec.get("status") == "completed" and rec.get("trace")]


def lr_trajectories(result: ConfigResult) -> Figure:
    """One line per layer: lr against the optimiser step, mean (and min-max) over the config's traced trials."""
    recs = traced(result)
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    layers = sorted({k.split("/", 1)[1] for rec in recs for k in rec["trace"] if k.startswith("lr/")})
    for layer in layers:
        by_step: dict[int, list[float]] = {}
        for rec in recs:
            for step, v in zip(rec["trace"]["step"], rec["trace"].get(f"lr/{layer}", [])):
                if v is not None:
                    by_step.setdefault(step, []).append(v)
        if not by_step:
            continue
        steps = np.array(sorted(by_step))
        values = [np.array(by_step[s]) for s in steps]
        line, = ax.plot(steps, [v.mean() for v in values], label=layer)
        if len(recs) > 1:
            ax.fill_between(steps, [v.min() for v in values], [v.max() for v in values],
                            color=line.get_color(), alpha=0.15)
    for step in (recs[0]["trace"].get("task_start_step", []) if recs else [])[1:]:
        ax.axvline(step, color="gray", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{result.name}: per-layer lr (lot scheduler, {len(recs)} trial(s))")
    if layers:
        ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, which="both")
    return fig


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def write(results: list[ConfigResult], fig_dir: Path) -> tuple[dict[str, Path], str]:
    """Draw the trainability figure and one lr figure per traced config into ``fig_dir``.

    Returns (figure name -> path, the report's markdown section); both empty
    when no completed trial carries a trace.
    """
    fig_dir.mkdir(parents=True, exist_ok=True)
    stale = [*fig_dir.glob("lr_trajectories_*.png"), fig_dir / "trainability.png"]
    written: dict[str, Path] = {}
    configs = [r for r in results if traced(r)]
    if configs:
        written["trainability"] = fig_dir / "trainability.png"
        trainability(results).savefig(written["trainability"], dpi=110)
        for r in configs:
            name = f"lr_trajectories_{_file_safe(r.name)}"
            written[name] = fig_dir / f"{name}.png"
            lr_trajectories(r).savefig(written[name], dpi=110)
    for path in stale:
        if path not in written.values():
            path.unlink(missing_ok=True)
    if not written:
        return {}, ""
    lines = ["", "## Trainability and learning-rate schedules", "",
             f"![trainability]({fig_dir.name}/trainability.png)", "", CAPTIONS["trainability"], ""]
    for name, path in written.items():
        if name != "trainability":
            lines += [f"![{name}]({fig_dir.name}/{path.name})", ""]
    lines += [CAPTIONS["lr_trajectories"], ""]
    return written, "\n".join(lines)
