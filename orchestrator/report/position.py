"""Position effect: does learning a task later in the order help or hurt its final accuracy?

OPD says how much a task's final accuracy moves with the order; this says
which way, as a function of the task's position. For one config, with
Abar_j^r the final accuracy of task j under order r (seeds of an order
averaged, as for OPD) and pos_r(j) its position (0 = learned first):

    d_j^r = Abar_j^r - mean_r' Abar_j^r'       (task j's own mean removed, so
                                                easy and hard tasks compare)
    e(p)  = mean over orders r of d_j^r for the task j at position p
    slope = least-squares slope of d_j^r against pos_r(j) - mean_r' pos_r'(j),
            over every (r, j): the within-task regression, so neither task
            difficulty nor unbalanced orders leak into it

e(p) > 0: a task learned at position p ends above its average over orders.
slope > 0: learning a task later helps it (in points per position), < 0 hurts.
Intervals: the percentile bootstrap over orders of orchestrator.report.bootstrap,
recomputing the task means inside each resample. With one order there is no
variation to explain and everything is NaN.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from orchestrator.report.bootstrap import (DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_batched,
                                    order_finals)
from orchestrator.results.stats import _positions


def curve_and_slope(positions: np.ndarray, finals: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """[e(0), ..., e(T-1), slope] for each resample of orders.

    ``positions``, ``finals``: (orders x tasks), position and final accuracy of
    each task identity under each order; ``picks``: (resamples x orders)
    indices. Returns (resamples x (T + 1)).
    """
    P, F = positions[picks], finals[picks]                   # resamples x orders x tasks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        D = F - np.nanmean(F, axis=1, keepdims=True)         # each task's own mean over the orders removed
        by_position = np.full(D.shape, np.nan)
        np.put_along_axis(by_position, P, D, axis=2)         # column p: the task learned at position p
        curve = np.nanmean(by_position, axis=1)
        ok = ~np.isnan(D)
        Pc = np.where(ok, P - np.nanmean(np.where(ok, P, np.nan), axis=1, keepdims=True), 0.0)
        sxx = np.sum(Pc ** 2, axis=(1, 2))
        sxy = np.sum(Pc * np.where(ok, D, 0.0), axis=(1, 2))
        slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), np.nan)
    return np.column_stack([curve, slope])


def position_effect(matrices: Sequence[np.ndarray], orders: Sequence[Sequence[int]],
                    n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                    seed: int = DEFAULT_SEED) -> dict:
    """Position effect of one config: curve e(p), slope, and their bootstrap intervals over orders.

    Returns plain lists/floats (JSON-ready): ``curve``, ``curve_lo``, ``curve_hi``
    indexed by position (0 = first), ``slope``, ``slope_lo``, ``slope_hi``, ``R``.
    """
    distinct, finals = order_finals(matrices, orders)
    T = finals.shape[1]
    R = len(distinct)
    if R < 2:
        nan = [float("nan")] * T
        return {"R": R, "curve": nan, "curve_lo": nan, "curve_hi": nan,
                "slope": float("nan"), "slope_lo": float("nan"), "slope_hi": float("nan")}
    positions = np.stack([_positions(o) for o in distinct])
    point = curve_and_slope(positions, finals, np.arange(R)[None, :])[0]
    lo, hi = bootstrap_batched(R, lambda picks: curve_and_slope(positions, finals, picks),
                               n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {"R": R, "curve": [float(v) for v in point[:T]], "curve_lo": [float(v) for v in lo[:T]],
            "curve_hi": [float(v) for v in hi[:T]], "slope": float(point[T]),
            "slope_lo": float(lo[T]), "slope_hi": float(hi[T])}


def verdict(effect: dict) -> str:
    """One phrase answering "does learning a task later help or hurt it" from the slope's interval."""
    lo, hi, slope = effect["slope_lo"], effect["slope_hi"], effect["slope"]
    if slope != slope:
        return "not estimable (needs at least 2 orders)"
    if lo > 0:
        return "later helps"
    if hi < 0:
        return "later hurts"
    return "no clear effect (interval includes 0)"
