"""Learning and forgetting curves over the sequence: one line per config, mean and band over orders.

After training the i-th task of the order: the learning curve is the mean test
accuracy over the tasks seen so far (orchestrator.results.stats.learning_curve,
its last value is ACC), the forgetting curve the mean forgetting of the tasks
learned before it (stats.forgetting_curve, its last value is forgetting). Each
trial gives one curve; the curves of an order's seeds are averaged, and the
figure draws the mean over orders with the min–max band over orders (the
spread the order alone causes, as OPD). A searched method is drawn through its
selected config (summary ``best``, chosen on validation), so the figure has
one line per method entry, not one per proposal.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.report.config_result import ConfigResult, config_colors
from orchestrator.results.stats import forgetting_curve, learning_curve
from orchestrator.results.summary import best_per_label

CAPTIONS = {
    "learning_curves": "Learning curve: after each task of the order, the mean test accuracy over the tasks "
                       "learned so far (the last point is ACC). Line: mean over orders (seeds of an order "
                       "averaged first); band: min–max over orders. A searched method is shown through its "
                       "selected config.",
    "forgetting_curves": "Forgetting curve: after each task of the order (from the second), the mean over the "
                         "tasks learned before it of their drop from their best accuracy so far (the last "
                         "point is the table's forgetting). Line: mean over orders; band: min–max over orders.",
}


def shown(results: list[ConfigResult], summary: dict[str, Any] | None) -> list[ConfigResult]:
    """One config per label: its only config, or for a search the selected one (none if none is eligible)."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.config.label] = counts.get(r.config.label, 0) + 1
    best = (summary or {}).get("best") or best_per_label([r.entry for r in results])
    chosen = {label: b["config_id"] for label, b in best.items()}
    return [r for r in results if r.ok and (counts[r.config.label] == 1 or chosen.get(r.config.label) ==
                                            r.config.config_id)]


def order_curves(r: ConfigResult, curve: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]) -> np.ndarray:
    """(orders x positions): each distinct order's curve, its seeds averaged."""
    by_order: dict[tuple[int, ...], list[np.ndarray]] = {}
    for A, o in zip(r.matrices, r.orders):
        by_order.setdefault(tuple(o), []).append(curve(A, o))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array([np.nanmean(np.stack(v), axis=0) for v in by_order.values()])


def _figure(results: list[ConfigResult], summary: dict[str, Any] | None, curve, ylabel: str, title: str,
            first: int) -> Figure:
    colors = config_colors(results)
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    for r in shown(results, summary):
        values = order_curves(r, curve)[:, first:]
        x = np.arange(first + 1, first + 1 + values.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        ax.plot(x, mean, "-", marker="o" if len(x) <= 30 else None, ms=3, color=colors[r.name],
                label=f"{r.name} (R={values.shape[0]})")
        if values.shape[0] > 1:
            ax.fill_between(x, lo, hi, color=colors[r.name], alpha=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks learned (position in the order)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def learning_curves(results: list[ConfigResult], summary: dict[str, Any] | None = None) -> Figure:
    return _figure(results, summary, learning_curve, "mean test accuracy over the tasks seen (%)",
                   "Learning curve (mean over orders, band: min–max over orders)", 0)


def forgetting_curves(results: list[ConfigResult], summary: dict[str, Any] | None = None) -> Figure:
    return _figure(results, summary, forgetting_curve, "mean forgetting of the earlier tasks (points)",
                   "Forgetting curve (mean over orders, band: min–max over orders)", 1)


FIGURES = {"learning_curves": learning_curves, "forgetting_curves": forgetting_curves}
