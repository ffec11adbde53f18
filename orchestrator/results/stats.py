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


def learning_curve(A: np.ndarray, order: Order) -> np.ndarray:
    """Within-sequence learning curve: c_i = mean_{j in order[:i+1]} A[i, j], i = 0..T-1.

    After each task of the order, the mean accuracy over the tasks seen so far
    (unseen tasks are left out even when evaluated); the last value is ACC.
    """
    A = np.asarray(A, dtype=float)
    order = list(order)
    return np.array([_nanmean(A[i, order[:i + 1]]) for i in range(len(order))])


def forgetting_curve(A: np.ndarray, order: Order) -> np.ndarray:
    """Forgetting after each task: f_i = mean over j in order[:i] of max_{pos(j) <= l < i} A[l, j] - A[i, j].

    After training position i, how far each task learned before it has fallen
    from its best so far (the task just learned is left out); f_0 is NaN (no
    earlier task) and the last value is ``forgetting``.
    """
    A = np.asarray(A, dtype=float)
    order = list(order)
    out = [float("nan")]
    for i in range(1, len(order)):
        drops = []
        for p, j in enumerate(order[:i]):
            history = A[p:i, j]
            best = np.nanmax(history) if np.any(~np.isnan(history)) else np.nan
            drops.append(best - A[i, j])
        out.append(_nanmean(drops))
    return np.array(out)


def min_accuracies(A: np.ndarray, order: Order) -> np.ndarray:
    """Per task identity j: min_{pos(j) < i <= T-1} A[i, j]; NaN for the last task (no boundary after it).

    De Lange, van de Ven & Tuytelaars, "Continual evaluation for lifelong
    learning" (arXiv 2205.13452): the minimal accuracy of a task over every
    evaluation after it has been learned. The paper evaluates every few
    iterations; here the evaluations are the task boundaries only (the rows of
    A), so a dip inside a task's training that recovers by its end is not seen:
    this min is an upper bound on the paper's.
    """
    A = np.asarray(A, dtype=float)
    pos = _positions(order)
    out = np.full(A.shape[1], np.nan)
    for j in list(order)[:-1]:
        later = A[pos[j] + 1:, j]
        if np.any(~np.isnan(later)):
            out[j] = np.nanmin(later)
    return out


def min_acc(A: np.ndarray, order: Order) -> float:
    """min-ACC_T = (1/(T-1)) sum over tasks j not last of min_{pos(j) < i <= T-1} A[i, j] (see min_accuracies).

    At the final boundary T, over the T-1 tasks learned before the last one;
    NaN for a single task.
    """
    return _nanmean(min_accuracies(A, order)[list(order)[:-1]])


def wc_acc(A: np.ndarray, order: Order) -> float:
    """WC-ACC_T = (1/T) a_T + (1 - 1/T) min-ACC_T (De Lange et al., arXiv 2205.13452, worst-case accuracy).

    a_T = A[T-1, order[-1]], the accuracy on the task just learned at the final
    boundary; min-ACC_T as in min_acc. The paper defines WC-ACC_k after the k-th
    task, from a continual evaluation; here only at the final task boundary
    (k = T) from the boundary evaluations. A single task: WC-ACC = a_1.
    """
    A = np.asarray(A, dtype=float)
    T = len(order)
    current = float(A[-1, list(order)[-1]])
    if T == 1:
        return current
    return current / T + (1 - 1 / T) * min_acc(A, order)


def fwt(A: np.ndarray, order: Order, init_row: Sequence[float | None] | None) -> float:
    """FWT = mean over tasks j not first in the order of A[pos(j) - 1, j] - b_j.

    A[pos(j) - 1, j]: accuracy on j after training the task just before it (j
    not yet trained; needs the study's ``evaluate_unseen``). b_j = ``init_row[j]``,
    the same network's accuracy on j at initialisation, before any training
    (the record's ``init_row``). NaN without init_row or unseen evaluations.
    """
    if init_row is None:
        return float("nan")
    A = np.asarray(A, dtype=float)
    b = np.array([np.nan if v is None else v for v in init_row], dtype=float)
    pos = _positions(order)
    later = list(order)[1:]
    return _nanmean([A[pos[j] - 1, j] - b[j] for j in later])


def binomial_se(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Standard error (in points) of accuracies p (in %) measured on n examples: 100 sqrt(q (1 - q) / n), q = p/100."""
    q = np.asarray(p, dtype=float) / 100.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * np.sqrt(q * (1 - q) / np.asarray(n, dtype=float))


def acc_binomial_se(A: np.ndarray, test_sizes: Sequence[int] | None) -> float:
    """Binomial SE (points) of one trial's ACC from the test-set sizes n_j of its T tasks.

    ACC = (1/T) sum_j p_j with independent test sets, so SE = 100 sqrt(sum_j q_j (1 - q_j) / n_j) / T,
    q_j = A[T-1, j] / 100: the noise of measuring each accuracy on a finite test set, not the run-to-run
    spread. NaN without test sizes or with a missing final accuracy.
    """
    if test_sizes is None:
        return float("nan")
    finals = final_accuracies(A)
    q = finals / 100.0
    n = np.asarray(test_sizes, dtype=float)
    return float(100.0 * np.sqrt(np.sum(q * (1 - q) / n)) / len(finals))


def trial_stats(A: np.ndarray, order: Order, init_row: Sequence[float | None] | None = None) -> dict[str, float]:
    """Every per-trial statistic of one accuracy matrix (fwt NaN without ``init_row``)."""
    return {"acc": acc(A), "bwt": bwt(A, order), "forgetting": forgetting(A, order),
            "task_acc": task_acc(A, order), "min_acc": min_acc(A, order), "wc_acc": wc_acc(A, order),
            "fwt": fwt(A, order, init_row)}


def opd(final_by_order: np.ndarray) -> np.ndarray:
    """OPD_j = max_r - min_r of the final accuracy of task j; rows are orders."""
    F = np.atleast_2d(np.asarray(final_by_order, dtype=float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(F, axis=0) - np.nanmin(F, axis=0)


def config_stats(matrices: Sequence[np.ndarray], orders: Sequence[Order],
                 init_rows: Sequence[Sequence[float | None] | None] | None = None,
                 test_sizes: Sequence[Sequence[int] | None] | None = None) -> dict:
    """Statistics of one (method, config) over its trials.

    Trials may repeat an order with several seeds: ACC/BWT/forgetting/Task.Acc
    mean and std run over all trials; for OPD the final accuracies of trials
    sharing an order are averaged first, so OPD measures the spread between
    orders, not between seeds. R is the number of distinct orders.

    min_acc_mean, wc_acc_mean, fwt_mean: means over trials of min_acc, wc_acc
    and fwt (fwt NaN unless the trials have ``init_rows`` and unseen
    evaluations). ``curve``: the mean over trials of learning_curve, per
    position. ``acc_binomial_se``: sqrt(mean over trials of acc_binomial_se^2),
    the typical test-set noise of one trial's ACC (NaN without ``test_sizes``);
    every trial is measured on the same test sets, so averaging trials does not
    average this noise away, and it is not divided by the number of trials.
    """
    if len(matrices) != len(orders) or not matrices:
        raise ValueError("need one order per matrix and at least one matrix")
    init_rows = list(init_rows) if init_rows is not None else [None] * len(matrices)
    test_sizes = list(test_sizes) if test_sizes is not None else [None] * len(matrices)
    per_trial = [trial_stats(A, o, b) for A, o, b in zip(matrices, orders, init_rows)]
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
    for key in ("min_acc", "wc_acc", "fwt"):
        out[f"{key}_mean"] = _nanmean([s[key] for s in per_trial])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        curve = np.nanmean(np.stack([learning_curve(A, o) for A, o in zip(matrices, orders)]), axis=0)
    out["curve"] = [float(v) for v in curve]
    ses = np.array([acc_binomial_se(A, n) for A, n in zip(matrices, test_sizes)])
    out["acc_binomial_se"] = float(np.sqrt(_nanmean(ses ** 2)))
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
