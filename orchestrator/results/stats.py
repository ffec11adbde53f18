"""Order-robustness statistics: pure functions of accuracy matrices (specs/orders.md).

A[i, j] is the accuracy (percent) on task identity j after training the i-th
task of the order; NaN where a task was not (or could not be) evaluated.
NaN entries are skipped by every mean, max and min; a statistic with nothing
left to average is NaN. Standard deviations are sample (ddof=1) and NaN for
a single value.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

Order = Sequence[int]


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if values.size else float("nan")


def _nanstd(values) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def _positions(order: Order) -> np.ndarray:
    pos = np.empty(len(order), dtype=int)
    pos[list(order)] = np.arange(len(order))
    return pos


def final_accuracies(A: np.ndarray) -> np.ndarray:
    """Per task identity: accuracy after the last task of the order."""
    return np.asarray(A, dtype=float)[-1]


def acc(A: np.ndarray) -> float:
    """ACC: mean final accuracy over tasks."""
    return _nanmean(final_accuracies(A))


def plasticity(A: np.ndarray, order: Order) -> np.ndarray:
    """P_j = A[pos(j), j]: accuracy on j right after learning it."""
    A = np.asarray(A, dtype=float)
    return A[_positions(order), np.arange(A.shape[1])]


def task_acc(A: np.ndarray, order: Order) -> float:
    """Task.Acc: mean just-learned accuracy."""
    return _nanmean(plasticity(A, order))


def bwt(A: np.ndarray, order: Order) -> float:
    """BWT: mean over tasks not last in the order of A[T, j] - A[pos(j), j]."""
    A = np.asarray(A, dtype=float)
    earlier = list(order)[:-1]
    return _nanmean(A[-1, earlier] - plasticity(A, order)[earlier])


def forgetting(A: np.ndarray, order: Order) -> float:
    """Mean over tasks not last of max_{pos(j) <= i < T} A[i, j] - A[T, j]."""
    A = np.asarray(A, dtype=float)
    pos = _positions(order)
    drops = []
    for j in list(order)[:-1]:
        history = A[pos[j]:-1, j]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            best = np.nanmax(history) if np.any(~np.isnan(history)) else np.nan
        drops.append(best - A[-1, j])
    return _nanmean(drops)


def trial_stats(A: np.ndarray, order: Order) -> dict[str, float]:
    """Every per-trial statistic of one accuracy matrix."""
    return {"acc": acc(A), "bwt": bwt(A, order), "forgetting": forgetting(A, order),
            "task_acc": task_acc(A, order)}


def opd(final_by_order: np.ndarray) -> np.ndarray:
    """OPD_j = max_r - min_r of the final accuracy of task j; rows are orders."""
    F = np.atleast_2d(np.asarray(final_by_order, dtype=float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(F, axis=0) - np.nanmin(F, axis=0)


def config_stats(matrices: Sequence[np.ndarray], orders: Sequence[Order]) -> dict:
    """Statistics of one (method, config) over its trials.

    Trials may repeat an order with several seeds: ACC/BWT/forgetting/Task.Acc
    mean and std run over all trials; for OPD the final accuracies of trials
    sharing an order are averaged first, so OPD measures the spread between
    orders, not between seeds. R is the number of distinct orders.
    """
    if len(matrices) != len(orders) or not matrices:
        raise ValueError("need one order per matrix and at least one matrix")
    per_trial = [trial_stats(A, o) for A, o in zip(matrices, orders)]
    by_order: dict[tuple[int, ...], list[np.ndarray]] = {}
    for A, o in zip(matrices, orders):
        by_order.setdefault(tuple(o), []).append(final_accuracies(A))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        finals = np.array([np.nanmean(np.stack(v), axis=0) for v in by_order.values()])
    opd_j = opd(finals)
    out: dict = {"R": len(by_order), "trials": len(matrices)}
    for key in ("acc", "bwt", "forgetting", "task_acc"):
        values = [s[key] for s in per_trial]
        out[f"{key}_mean"] = _nanmean(values)
        out[f"{key}_std"] = _nanstd(values)
    out["aopd"] = _nanmean(opd_j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["mopd"] = float(np.nanmax(opd_j)) if np.any(~np.isnan(opd_j)) else float("nan")
    out["opd_per_task"] = [float(v) for v in opd_j]
    return out


def order_objective(matrices: Sequence[np.ndarray], orders: Sequence[Order], kind: str = "mean_acc",
                    k: float = 1.0, c: float = 1.0) -> float:
    """A config's search objective from its trials' matrices (orchestrator.results.objective names the kinds)."""
    accs = np.array([acc(A) for A in matrices])
    if kind == "mean_acc":
        return _nanmean(accs)
    if kind == "worst_acc":
        per_order: dict[tuple[int, ...], list[float]] = {}
        for order, a in zip(orders, accs):
            per_order.setdefault(tuple(order), []).append(a)
        return float(min(_nanmean(v) for v in per_order.values()))
    if kind == "task_acc":
        return _nanmean([task_acc(A, o) for A, o in zip(matrices, orders)])
    if kind == "mean_minus_std":
        std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
        return _nanmean(accs) - k * std
    if kind == "acc_minus_aopd":
        aopd = config_stats(matrices, orders)["aopd"]
        return _nanmean(accs) - c * (0.0 if aopd != aopd else aopd)
    raise ValueError(f"unknown objective kind {kind!r}")
