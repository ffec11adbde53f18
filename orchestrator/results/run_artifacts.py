"""What a person opens in MLflow: the files a trial run and a config run carry besides their JSON.

- a trial run: ``matrix.png`` (its test accuracy matrix as a heatmap) and
  ``matrix.csv`` (the same numbers, one row per task learned);
- a config run: ``learning_curve.png`` (accuracy on the tasks learned so far
  after each task, one thin line per trial and the mean) and
  ``opd_per_task.png`` (each task's final accuracy under every order: the
  spread is that task's OPD).

Figures are drawn with matplotlib's Agg canvas without pyplot (no display, no
global state), small and at a low resolution: a trial's heatmap is drawn in
the driver as the trial ends, so it must stay cheap (bench/mlflow_artifacts.py
measures it). numpy and matplotlib only (tests/test_layout.py).
"""
from __future__ import annotations

import io
import math
import threading
import warnings
from typing import Sequence

import numpy as np

from orchestrator.results import stats
from orchestrator.results.records import TrialRecord

DPI = 100


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _fmt(v: float) -> str:
    return "" if v != v else f"{v:.2f}"


def matrix_csv(rec: TrialRecord) -> str:
    """The test accuracy matrix as CSV: one row per task learned (``position``, ``task_learned``), one column per
    task identity (``task_<j>``), in percent, empty where the task was not evaluated (or not reached)."""
    A = rec.matrix()
    T = A.shape[1]
    lines = ["position,task_learned," + ",".join(f"task_{j}" for j in range(T))]
    for i, task in enumerate(rec.order[:A.shape[0]]):
        lines.append(f"{i},{task}," + ",".join(_fmt(v) for v in A[i]))
    return "\n".join(lines) + "\n"


def matrix_png(rec: TrialRecord, title: str) -> bytes:
    """Heatmap of one trial's test accuracy matrix: row i after learning the i-th task of its order, column j task
    identity j (the order is the row labels); values written in the cells up to 12 tasks.

    Drawn on a figure kept per number of tasks (``_MatrixFigure``), its data, texts and labels replaced: the
    driver draws one per trial, and building the axes, the colour bar and the cells' texts was a third of
    the cost (the PNG is byte-identical to a figure built afresh: tests/test_png_render.py)."""
    A = rec.matrix()
    with _MATRIX_LOCK:  # the figures are shared: one trial at a time (the writer thread, a --resume backfill)
        figure = _MATRIX_FIGURES.get(A.shape[0])
        if figure is None:
            figure = _MATRIX_FIGURES[A.shape[0]] = _MatrixFigure(A.shape[0])
        return figure.png(rec, A, title)


class _MatrixFigure:
    """matrix_png's figure for T tasks: fixed axes (a layout engine would double the drawing time)."""

    def __init__(self, T: int):
        side = min(0.42 * T, 5.0)  # the matrix, inches; margins for the labels and the colour bar around it
        left, bottom, top, right = 1.3, 0.65, 0.55, 1.05
        W, H = left + side + right, bottom + side + top
        self.fig = fig = _figure(W, H, layout=None)
        self.ax = ax = fig.add_axes((left / W, bottom / H, side / W, side / H))
        cax = fig.add_axes(((left + side + 0.15) / W, bottom / H, 0.15 / W, side / H))
        self.image = ax.imshow(np.ma.masked_invalid(np.full((T, T), np.nan)), vmin=0, vmax=100, cmap="viridis",
                               aspect="auto")
        self.texts = [[ax.text(j, i, "", ha="center", va="center", fontsize=8 if T <= 8 else 6) for j in range(T)]
                      for i in range(T)] if T <= 12 else []
        self.ticks = np.arange(T)
        self.step = max(1, math.ceil(T / 20))
        ax.set_xticks(self.ticks[::self.step], [str(j) for j in self.ticks[::self.step]])
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after learning (position: task)")
        fig.colorbar(self.image, cax=cax, label="test accuracy (%)")

    def png(self, rec: TrialRecord, A: np.ndarray, title: str) -> bytes:
        T, step = A.shape[0], self.step
        self.image.set_data(np.ma.masked_invalid(A))
        for i, row in enumerate(self.texts):
            for j, text in enumerate(row):
                v = A[i, j]
                text.set_text(f"{v:.0f}" if v == v else "")
                text.set_color("white" if v < 60 else "black")
        self.ax.set_yticks(self.ticks[::step], [f"{i + 1}: task {t}" for i, t in list(enumerate(rec.order))[:T:step]])
        done = (rec.stats() or {}).get("acc", float("nan"))
        self.ax.set_title(f"{title}\n{rec.status}" + (f", ACC {done:.1f}" if done == done else ""), fontsize=9)
        return _png(self.fig)


_MATRIX_LOCK = threading.Lock()
_MATRIX_FIGURES: dict[int, _MatrixFigure] = {}


def _ordered(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.ordered and r.completed]


def learning_curve_png(records: Sequence[TrialRecord], title: str) -> bytes | None:
    """Mean test accuracy on the tasks learned so far after each task: a thin line per completed trial, the mean
    over them thick. None without a completed trial of a task sequence."""
    fig = learning_curve_figure(records, title)
    return None if fig is None else _png(fig)


def learning_curve_figure(records: Sequence[TrialRecord], title: str):
    """learning_curve_png's Figure, not rendered yet."""
    done = _ordered(records)
    if not done:
        return None
    curves = [stats.learning_curve(*r.scored()) for r in done]
    T = max(len(c) for c in curves)
    fig = _figure(5.0, 3.4)
    ax = fig.subplots()
    x = np.arange(1, T + 1)
    for c in curves:
        ax.plot(x[:len(c)], c, color="0.6", lw=0.8, alpha=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(np.array([np.pad(c, (0, T - len(c)), constant_values=np.nan) for c in curves]), axis=0)
    ax.plot(x, mean, color="C0", lw=2.2, marker="o", label=f"mean of {len(curves)} trials")
    ax.set_xticks(x)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("accuracy on the tasks learned (%)")
    low = np.nanmin([np.nanmin(c) for c in curves if np.any(~np.isnan(c))] or [0.0])
    ax.set_ylim(max(0.0, min(low - 5.0, 90.0)), 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{title}: learning curve", fontsize=9)
    return fig


def opd_per_task_png(records: Sequence[TrialRecord], title: str) -> bytes | None:
    """Per task identity, its final test accuracy under each order (seeds of an order averaged) as points, the
    range between them as a bar: the bar's height is the task's OPD, written above it. None with no completed
    trial of a task sequence."""
    fig = opd_per_task_figure(records, title)
    return None if fig is None else _png(fig)


def opd_per_task_figure(records: Sequence[TrialRecord], title: str):
    """opd_per_task_png's Figure (not rendered)."""
    done = [r for r in _ordered(records) if not r.truncated]
    if not done:
        return None
    by_order: dict[tuple[int, ...], list[np.ndarray]] = {}
    for r in done:
        by_order.setdefault(r.order, []).append(r.matrix()[-1])
    finals = np.array([np.nanmean(v, axis=0) for v in by_order.values()])  # orders x tasks
    T = finals.shape[1]
    fig = _figure(min(2.5 + 0.55 * T, 12.0), 3.4)
    ax = fig.subplots()
    for j in range(T):
        col = finals[:, j][~np.isnan(finals[:, j])]
        if not col.size:
            continue
        lo, hi = float(col.min()), float(col.max())
        ax.bar(j, hi - lo, bottom=lo, width=0.5, color="C1", alpha=0.35)
        ax.scatter(np.full(col.size, j), col, s=12, color="C1", zorder=3)
        ax.text(j, min(hi + 1.5, 103), f"{hi - lo:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(T), [str(j) for j in range(T)])
    ax.set_xlabel("task")
    ax.set_ylabel("final accuracy (%)")
    ax.set_ylim(0, 110)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title}: final accuracy per task over {len(by_order)} orders (bar = OPD)", fontsize=9)
    return fig
