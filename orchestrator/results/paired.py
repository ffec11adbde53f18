"""Paired comparisons of configs against a baseline, over the task orders they share (numpy only).

Every config of a study runs on the same orders and seeds, so a config and the
baseline are compared order by order: the unit is the ORDER (as in the
bootstrap intervals of orchestrator.report.bootstrap), the seeds of one order
are averaged first (per trial ACC and forgetting, then their mean over the
order's completed seeds). The numbers are the TEST accuracies (``matrix()``)
of configs already chosen: reported numbers, not a selection.

For a config c and the baseline b, with d_r = x_c(r) - x_b(r) on the R orders
both have (x = ACC or forgetting; an order that either config lacks, or where
either value is NaN, is left out: configs missing some orders are paired on
the common orders only):

- ``mean``: the mean paired difference (1/R) sum_r d_r (config minus baseline);
- ``lo``, ``hi``: percentile bootstrap interval of that mean, resampling the R
  differences with replacement (``n_resamples``, seeded);
- ``p``: two-sided sign-flip permutation test of "no difference": under the
  null each d_r is as likely to be -d_r, so p = share of sign vectors s with
  |sum_r s_r d_r| >= |sum_r d_r|. Exact over all 2^R sign vectors when
  R <= 16 (the smallest p is 2 / 2^R: with 3 orders it is 0.25, never below),
  else a seeded Monte Carlo of 20,000 sign vectors with p = (1 + hits) / (1 + n).
- ``holm``: Holm's step-down adjustment of a family of p-values (all the
  comparisons against the baseline count as one family).
"""
from __future__ import annotations

import itertools
import warnings
from typing import Sequence

import numpy as np

from orchestrator.results import stats

EXACT_MAX_R = 16
MC_SIGN_FLIPS = 20_000
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0


def order_values(matrices: Sequence[np.ndarray], orders: Sequence[Sequence[int]]) -> dict[tuple[int, ...], dict[str, float]]:
    """Per distinct order: ``acc`` and ``forgetting``, each the mean over that order's trials (seeds)."""
    groups: dict[tuple[int, ...], list[dict[str, float]]] = {}
    for A, o in zip(matrices, orders):
        A = np.asarray(A, dtype=float)
        groups.setdefault(tuple(int(t) for t in o), []).append(
            {"acc": stats.acc(A), "forgetting": stats.forgetting(A, o)})
    out = {}
    for o, trials in groups.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[o] = {k: float(np.nanmean([t[k] for t in trials])) for k in ("acc", "forgetting")}
    return out


def paired_differences(config: dict[tuple[int, ...], float], baseline: dict[tuple[int, ...], float]
                       ) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """(common orders, config minus baseline on each): orders in the baseline's order, NaN values left out."""
    common = [o for o in baseline if o in config and config[o] == config[o] and baseline[o] == baseline[o]]
    return common, np.array([config[o] - baseline[o] for o in common], dtype=float)


def sign_flip_p(d: Sequence[float], n_mc: int = MC_SIGN_FLIPS, seed: int = DEFAULT_SEED) -> tuple[float, bool]:
    """(two-sided sign-flip p-value of mean(d) = 0, whether it is exact); NaN for no differences.

    Exact (all 2^R sign vectors) when R <= 16; else ``n_mc`` seeded random sign
    vectors, p = (1 + hits) / (1 + n_mc). Ties count as hits (a relative
    tolerance of 1e-9 absorbs rounding), so all-zero differences give p = 1.
    """
    d = np.asarray(d, dtype=float)
    R = d.size
    if R == 0:
        return float("nan"), True
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if R <= EXACT_MAX_R:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=R)))
        return float(np.mean(np.abs(signs @ d) >= observed - tol)), True
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(n_mc, R))
    hits = int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_mc), False


def bootstrap_mean_ci(d: Sequence[float], n_resamples: int = DEFAULT_RESAMPLES,
                      confidence: float = DEFAULT_CONFIDENCE, seed: int = DEFAULT_SEED) -> tuple[float, float]:
    """Percentile interval of mean(d) over resamples of the differences (orders) with replacement; NaN if empty.

    The same draw as orchestrator.report.bootstrap.resample_orders (numpy's
    default_rng(seed).integers, resamples x units).
    """
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan")
    picks = np.random.default_rng(seed).integers(0, d.size, size=(n_resamples, d.size))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(d[picks].mean(axis=1), [alpha, 1 - alpha])
    return float(lo), float(hi)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the given order; NaN stays NaN and is not counted in the family.

    With the m finite p-values sorted ascending p_(1) <= ... <= p_(m):
    adj_(k) = min(1, max_{i <= k} (m - i + 1) p_(i)).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = finite.size
    running = 0.0
    for rank, idx in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return [float(v) for v in out]


def compare(matrices: Sequence[np.ndarray], orders: Sequence[Sequence[int]],
            base_matrices: Sequence[np.ndarray], base_orders: Sequence[Sequence[int]],
            n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
            seed: int = DEFAULT_SEED) -> dict[str, float | int | bool]:
    """One config against the baseline (completed trials' test matrices): differences in ACC and forgetting.

    Keys: ``R`` (orders paired for ACC), ``orders_left_out`` (orders of either
    config not in the pairing), ``dacc``, ``dacc_lo``, ``dacc_hi``, ``p``,
    ``p_exact``, and ``dforgetting``, ``dforgetting_lo``, ``dforgetting_hi``,
    ``p_forgetting`` (forgetting is paired on the orders where both have it).
    """
    mine, base = order_values(matrices, orders), order_values(base_matrices, base_orders)
    out: dict[str, float | int | bool] = {}
    for key, name in (("acc", "dacc"), ("forgetting", "dforgetting")):
        common, d = paired_differences({o: v[key] for o, v in mine.items()}, {o: v[key] for o, v in base.items()})
        p, exact = sign_flip_p(d, seed=seed)
        lo, hi = bootstrap_mean_ci(d, n_resamples, confidence, seed)
        out[name] = float(d.mean()) if d.size else float("nan")
        out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        if key == "acc":
            out["R"] = len(common)
            out["orders_left_out"] = len(set(mine) | set(base)) - len(common)
            out["p"], out["p_exact"] = p, exact
        else:
            out["p_forgetting"] = p
    return out
