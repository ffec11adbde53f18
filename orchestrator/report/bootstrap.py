"""Bootstrap intervals over task orders: how much a config's numbers depend on which orders were drawn.

The unit of resampling is the ORDER, not the trial: the orders are what a
study samples, and the question is "would another draw of R orders tell the
same story". Trials sharing an order (several seeds) travel together. Each
resample draws R orders with replacement, the statistic is recomputed from
the resampled orders with the functions of orchestrator.results.stats, and the
interval is the percentile interval of the resampled values. The RNG is
seeded, so a report is the same each time it is built.

A caveat the report repeats: OPD is a range (max - min over orders), and a
resample can only narrow a range, so the AOPD interval sits at or below the
point estimate and may exclude it (it shows how much AOPD moves with the
orders drawn, and how optimistic an AOPD from few orders is).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np

from orchestrator.results import stats

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0


def group_by_order(matrices: Sequence[np.ndarray], orders: Sequence[Sequence[int]]
                   ) -> list[tuple[tuple[int, ...], list[np.ndarray]]]:
    """(order, the matrices of the trials run on it), in order of first appearance."""
    groups: dict[tuple[int, ...], list[np.ndarray]] = {}
    for A, o in zip(matrices, orders):
        groups.setdefault(tuple(int(t) for t in o), []).append(np.asarray(A, dtype=float))
    return list(groups.items())


def order_finals(matrices: Sequence[np.ndarray], orders: Sequence[Sequence[int]]
                 ) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Distinct orders and their final accuracies (rows), seeds of one order averaged (as config_stats does)."""
    groups = group_by_order(matrices, orders)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        finals = np.array([np.nanmean(np.stack([stats.final_accuracies(A) for A in ms]), axis=0)
                           for _, ms in groups])
    return [o for o, _ in groups], finals


def resample_orders(n_units: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_units) indices: each row one resample of the units, drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_units, size=(n_resamples, n_units))


def bootstrap_batched(n_units: int, statistic: Callable[[np.ndarray], np.ndarray],
                      n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                      seed: int = DEFAULT_SEED) -> tuple[Any, Any]:
    """Percentile interval of a statistic computed on many resamples at once.

    ``statistic`` takes an index array (resamples x units) and returns one
    value per resample (shape (resamples,)) or one row per resample (one
    interval per column). Resamples where it is NaN are left out; an interval
    with no finite resample is NaN. Resamples go through in chunks so memory
    stays bounded for many orders.
    """
    if n_units < 1:
        raise ValueError("need at least one unit to resample")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError("n_resamples must be >= 1 and confidence in (0, 1)")
    picks = resample_orders(n_units, n_resamples, seed)
    chunk = max(1, 200_000 // n_units)
    values = np.concatenate([np.asarray(statistic(picks[i:i + chunk]), dtype=float)
                             for i in range(0, n_resamples, chunk)])
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(values, [alpha, 1 - alpha], axis=0)
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi


def bootstrap_ci(units: Sequence[Any], statistic: Callable[[list[Any]], Any],
                 n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                 seed: int = DEFAULT_SEED) -> tuple[Any, Any]:
    """Percentile interval of ``statistic`` (a function of a list of units) over resamples of ``units``.

    The plain form of bootstrap_batched, one call per resample: same resamples
    for the same seed, so a batched statistic can be checked against it.
    """
    def each(picks: np.ndarray) -> np.ndarray:
        return np.array([np.asarray(statistic([units[i] for i in row]), dtype=float) for row in picks])

    return bootstrap_batched(len(units), each, n_resamples=n_resamples, confidence=confidence, seed=seed)


# ------------------------------------------------------------ ACC and AOPD
# Batched forms of the statistics of orchestrator.results.stats over resampled orders:
# ``picks`` is (resamples x orders); the identity resample gives config_stats'
# acc_mean and aopd exactly (tests check this).


def acc_statistic(matrices, orders) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """(number of orders, batched ACC mean): the mean over all trials of the resampled orders."""
    groups = group_by_order(matrices, orders)
    accs = [np.array([stats.acc(A) for A in ms]) for _, ms in groups]
    sums = np.array([np.nansum(a) for a in accs])
    counts = np.array([np.sum(~np.isnan(a)) for a in accs])

    def mean_acc(picks: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)

    return len(groups), mean_acc


def aopd_statistic(matrices, orders) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """(number of orders, batched AOPD): stats.opd of the resampled orders' final accuracies, averaged."""
    _, finals = order_finals(matrices, orders)

    def aopd(picks: np.ndarray) -> np.ndarray:
        F = finals[picks]  # resamples x orders x tasks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(np.nanmax(F, axis=1) - np.nanmin(F, axis=1), axis=1)

    return len(finals), aopd


def acc_ci(matrices, orders, **kw) -> tuple[float, float]:
    """Interval for ACC mean (over trials), resampling orders."""
    return bootstrap_batched(*acc_statistic(matrices, orders), **kw)


def aopd_ci(matrices, orders, **kw) -> tuple[float, float]:
    """Interval for AOPD, resampling orders (see the caveat above)."""
    return bootstrap_batched(*aopd_statistic(matrices, orders), **kw)
