"""The report's figures, one function each, drawn with matplotlib.

Each function takes the report's ``ConfigResult``s and returns a matplotlib
``Figure`` built without pyplot (no display, no global state; PNGs are
rendered by Agg on save), so tests inspect axes, labels and artists, and a
long study's report does not leak figures. Configs without a completed trial
are left out. A config keeps its color in every figure.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from matplotlib.figure import Figure

from orchestrator.report.config_result import ConfigResult, choice_point, chosen_on, config_colors
from orchestrator.results.objective import describe, objective_value
from orchestrator.results.records import TrialRecord
from orchestrator.results.stats import acc
from orchestrator.study.schema import ObjectiveSpec


def _shown(results: list[ConfigResult]) -> list[ConfigResult]:
    return [r for r in results if r.ok]


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def position_aligned(A: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """M[i, p] = accuracy on the task at position p after training position i (columns reordered)."""
    return np.asarray(A, dtype=float)[:, list(order)]


def color_range(matrices: list[np.ndarray]) -> tuple[float, float]:
    """(vmin, vmax) of the heatmaps: the range of the values shown, shared by every panel (0-100 if none)."""
    values = np.concatenate([np.ravel(m) for m in matrices]) if matrices else np.array([])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 100.0
    lo, hi = float(values.min()), float(values.max())
    return (lo - 0.5, hi + 0.5) if hi - lo < 1 else (lo, hi)


def accuracy_matrix(results: list[ConfigResult]) -> Figure:
    """Heatmap of the accuracy matrix, mean over trials, one panel per config.

    Columns are POSITIONS in the order, not task identities: averaged over
    orders, entry (i, p) is then always "the task learned p-th, after training
    the i-th", the same quantity in every order. The colour scale spans the
    range of the values shown (shared by the panels, so a colour means the
    same accuracy in each), not 0-100: close accuracies stay distinguishable.
    """
    shown = _shown(results)
    rows, cols = _grid(len(shown))
    fig = Figure(figsize=(4.2 * cols + 1, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    means = []
    for r in shown:
        with warnings.catch_warnings():  # entries no trial evaluated (above the diagonal) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            means.append(np.nanmean(np.stack([position_aligned(A, o) for A, o in zip(r.matrices, r.orders)]),
                                    axis=0))
    vmin, vmax = color_range(means)
    image = None
    for ax, r, mean in zip(axes, shown, means):
        T = mean.shape[0]
        image = ax.imshow(mean, vmin=vmin, vmax=vmax, cmap="viridis")
        if T <= 10:
            for i in range(T):
                for p in range(T):
                    if not np.isnan(mean[i, p]):
                        ax.text(p, i, f"{mean[i, p]:.0f}", ha="center", va="center", fontsize=8,
                                color="white" if mean[i, p] < (vmin + vmax) / 2 else "black")
        ticks = np.arange(T)
        ax.set_xticks(ticks, [str(p + 1) for p in ticks])
        ax.set_yticks(ticks, [str(i + 1) for i in ticks])
        ax.set_xlabel("task at position p (1 = learned first)")
        ax.set_ylabel("after training position i")
        ax.set_title(f"{r.name} (mean over {len(r.matrices)} trials)")
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:len(shown)].tolist(), label="accuracy (%)", shrink=0.8)
    fig.suptitle("Accuracy matrix, aligned by position in the order")
    return fig


def final_accuracy_per_task(results: list[ConfigResult]) -> Figure:
    """Each task's final accuracy across orders: one column per task, a box and the points per config.

    One point per order (seeds of an order averaged), so the spread of a box
    from bottom point to top point is that task's OPD.
    """
    shown = _shown(results)
    colors = config_colors(results)
    T = shown[0].matrices[0].shape[1] if shown else 1
    fig = Figure(figsize=(max(6.0, 1.6 * T + 0.4 * T * len(shown)), 4.2), layout="constrained")
    axes = fig.subplots(1, T, sharey=True, squeeze=False).ravel()
    jitter = np.random.default_rng(0)
    for j, ax in enumerate(axes):
        for k, r in enumerate(shown):
            finals = r.finals()[1][:, j]
            finals = finals[~np.isnan(finals)]
            if finals.size == 0:
                continue
            ax.boxplot(finals, positions=[k], widths=0.6, showfliers=False,
                       medianprops={"color": colors[r.name]})
            ax.scatter(k + jitter.uniform(-0.15, 0.15, finals.size), finals, s=14, color=colors[r.name],
                       alpha=0.8, zorder=3)
        ax.set_xticks(range(len(shown)), [r.name for r in shown], rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(shown) - 0.4)
        ax.set_title(f"task {j}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("final accuracy (%)")
    fig.suptitle("Final accuracy of each task across orders (one point per order)")
    return fig


def opd_per_task(results: list[ConfigResult]) -> Figure:
    """OPD_j per task, grouped bars, one bar per config."""
    shown = _shown(results)
    colors = config_colors(results)
    T = len(shown[0].entry["opd_per_task"]) if shown else 0
    fig = Figure(figsize=(max(6.0, 0.5 * T * max(1, len(shown)) + 2), 4.0), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(shown))
    for k, r in enumerate(shown):
        x = np.arange(T) - 0.4 + width * (k + 0.5)
        ax.bar(x, r.entry["opd_per_task"], width=width, color=colors[r.name],
               label=f"{r.name} (R={r.entry['R']})")
    ax.set_xticks(np.arange(T), [str(j) for j in range(T)])
    ax.set_xlabel("task")
    ax.set_ylabel("OPD (points)")
    ax.set_title("Order-normalized performance disparity per task (max − min final accuracy over orders)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def frontier(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (AOPD, ACC) points no other point beats on both (lower AOPD, higher ACC), by AOPD."""
    keep = []
    for i, (x, y) in enumerate(points):
        beaten = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2 in points)
        if not beaten:
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def acc_vs_aopd(results: list[ConfigResult]) -> Figure:
    """The robustness frontier: ACC against AOPD, bootstrap intervals as bars, the non-dominated configs joined."""
    shown = [r for r in _shown(results) if r.entry["aopd"] is not None and r.entry["acc_mean"] is not None]
    colors = config_colors(results)
    fig = Figure(figsize=(6.5, 5.0), layout="constrained")
    ax = fig.subplots()
    points = [(r.entry["aopd"], r.entry["acc_mean"]) for r in shown]  # drawn: test (what is reported)
    choosing = [choice_point(r) for r in shown]  # the frontier is chosen on validation when there is one
    for r, (x, y) in zip(shown, points):
        ax.plot(r.aopd_ci, [y, y], color=colors[r.name], lw=1.5, alpha=0.6)
        ax.plot([x, x], r.acc_ci, color=colors[r.name], lw=1.5, alpha=0.6)
        ax.scatter([x], [y], s=40, color=colors[r.name], zorder=3, label=f"{r.name} (R={r.entry['R']})")
        ax.annotate(r.name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    best = frontier(choosing) if all(None not in p for p in choosing) else frontier(points)
    split = "validation" if shown and chosen_on(shown[0]) == "val" else "test"
    if best:
        ax.scatter([points[i][0] for i in best], [points[i][1] for i in best], s=140, facecolors="none",
                   edgecolors="black", zorder=4, label=f"frontier, chosen on {split} (not beaten on both)")
    if len(best) > 1:
        ax.plot([points[i][0] for i in best], [points[i][1] for i in best], "k--", lw=1)
    ax.set_xlabel("test AOPD (points; lower = more robust to the order)")
    ax.set_ylabel("test ACC (%)")
    ax.set_title("Accuracy against order sensitivity (lines: bootstrap intervals over orders)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def position_effect(results: list[ConfigResult]) -> Figure:
    """e(p): final accuracy of the task at position p minus that task's mean over orders, per config."""
    shown = [r for r in _shown(results) if r.position and r.position["R"] >= 2]
    colors = config_colors(results)
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.subplots()
    for r in shown:
        e = r.position
        x = np.arange(1, len(e["curve"]) + 1)
        ax.plot(x, e["curve"], "o-", color=colors[r.name],
                label=f"{r.name}: slope {e['slope']:+.2f} [{e['slope_lo']:+.2f}, {e['slope_hi']:+.2f}] /position")
        ax.fill_between(x, e["curve_lo"], e["curve_hi"], color=colors[r.name], alpha=0.15)
    ax.axhline(0, color="gray", lw=1)
    if shown:
        T = len(shown[0].position["curve"])
        ax.set_xticks(np.arange(1, T + 1))
    ax.set_xlabel("position in the order (1 = learned first)")
    ax.set_ylabel("final accuracy − task's mean over orders (points)")
    ax.set_title("Position effect: does learning a task later help or hurt it?")
    if shown:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no config has a task at every position in 2+ orders", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    return fig


def trial_acc(record: TrialRecord) -> float:
    """One completed trial's ACC."""
    return acc(record.matrix())


def config_progress(results: list[ConfigResult], objective: ObjectiveSpec | None = None
                    ) -> list[tuple[float, float, str, str]]:
    """(time the config completed, its objective, its name, its label) per config, in completion order.

    A config counts once all its trials are in: its time is the latest
    ``ended_at`` of its trials (a config with a trial without one is left
    out); its objective is the study's own rule over its completed trials
    (orchestrator.results.objective.objective_value). As for the summary's
    ``best``, a config with a failed or stopped trial is not eligible and is
    left out, and so is one with no objective (NaN).
    """
    spec = objective or ObjectiveSpec()
    out = []
    for r in results:
        if not r.records or any(rec.ended_at is None or not rec.completed for rec in r.records):
            continue
        value = objective_value(spec, r.records, r.entry.get("objective_split", "val"))
        if value == value:
            out.append((max(rec.ended_at for rec in r.records), value, r.name, r.config.label))
    return sorted(out, key=lambda t: t[0])


def search_progress(results: list[ConfigResult], objective: ObjectiveSpec | None = None) -> Figure:
    """Each config's objective (the study's rule, ``objective``; default mean ACC) at the time it completed,
    colored by config; per searched label, the best config objective so far as a step line.

    Time is the latest ``ended_at`` of the config's trials (unix seconds, as the
    driver recorded them), shown relative to the first config to complete.
    """
    colors = config_colors(results)
    rerun = ("@fresh", "@full")  # re-runs of a winner on other orders are not part of the search
    done = [d for d in config_progress(results, objective) if not d[3].endswith(rerun)]
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    if done:
        t0 = done[0][0]
        for r in results:
            mine = [(t - t0, v) for t, v, name, _ in done if name == r.name]
            if mine:
                ax.scatter(*zip(*mine), s=24, color=colors[r.name], label=r.name)
        labels = [lab for lab in dict.fromkeys(lab for *_, lab in done)
                  if sum(lab == x for *_, x in done) > 1]
        for lab in labels:
            mine = [(t - t0, v) for t, v, _, x in done if x == lab]
            ax.step([t for t, _ in mine], np.fmax.accumulate([v for _, v in mine]), where="post",
                    color="black", lw=1, label=f"{lab}: best so far")
    what = describe(objective or ObjectiveSpec())
    split = "validation" if not results or results[0].entry.get("objective_split", "val") == "val" else "TEST"
    ax.set_xlabel("config completion time (s after the first config completed)")
    ax.set_ylabel(f"objective on {split}: {what}")
    ax.set_title("Search: each config's objective, and the best so far")
    if len(results) <= 12:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# name -> function, in the order the report shows them (search_progress only for searches)
FIGURES = {
    "accuracy_matrix": accuracy_matrix,
    "final_accuracy_per_task": final_accuracy_per_task,
    "opd_per_task": opd_per_task,
    "acc_vs_aopd": acc_vs_aopd,
    "position_effect": position_effect,
    "search_progress": search_progress,
}
