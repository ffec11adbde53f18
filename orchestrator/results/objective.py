"""The one number a search optimises: a config's score over all its task orders.

A config is run on R orders (times the seeds); the searcher must be told a
single value, and which one is the study's choice (``search.objective``):

- ``mean_acc``: mean over trials of ACC.
- ``worst_acc``: the lowest ACC of any order (seeds of an order averaged first),
  for a method that must not fail on any order.
- ``mean_minus_std``: mean ACC - k * sample std of ACC over trials.
- ``acc_minus_aopd``: mean ACC - c * AOPD (order robustness traded against accuracy).
- ``task_acc``: mean Task.Acc, the accuracy on each task right after learning
  it (trainability, for loss-of-plasticity studies).

The same function scores a config in the searcher (orchestrator/searcher.py)
and picks the best config in the summary, so they cannot disagree. Higher is
better. For a regression stream the objective is -MSE (mean over seeds).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from orchestrator.results import stats
from orchestrator.study.schema import ObjectiveSpec
from orchestrator.results.records import matrix_array


def objective_value(spec: ObjectiveSpec, records: Sequence[dict[str, Any]]) -> float:
    """Score of one config from its completed trial records; NaN when there is nothing to score."""
    done = [r for r in records if r["status"] == "completed"]
    if not done:
        return float("nan")
    if done[0].get("kind") == "regression_stream":
        return -float(np.mean([r["mse"] for r in done]))
    matrices = [matrix_array(r) for r in done]
    orders = [r["order"] for r in done]
    accs = np.array([stats.acc(m) for m in matrices])
    if spec.kind == "mean_acc":
        return float(np.nanmean(accs))
    if spec.kind == "worst_acc":
        per_order: dict[tuple[int, ...], list[float]] = {}
        for order, a in zip(orders, accs):
            per_order.setdefault(tuple(order), []).append(a)
        return float(min(np.nanmean(v) for v in per_order.values()))
    if spec.kind == "task_acc":
        return float(np.nanmean([stats.task_acc(m, o) for m, o in zip(matrices, orders)]))
    if spec.kind == "mean_minus_std":
        std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
        return float(np.nanmean(accs)) - spec.k * std
    aopd = stats.config_stats(matrices, orders)["aopd"]
    return float(np.nanmean(accs)) - spec.c * (0.0 if aopd != aopd else aopd)


def describe(spec: ObjectiveSpec) -> str:
    return {"mean_acc": "mean ACC", "worst_acc": "worst-order ACC", "mean_minus_std": f"mean ACC - {spec.k:g}*std",
            "acc_minus_aopd": f"mean ACC - {spec.c:g}*AOPD", "task_acc": "mean Task.Acc"}[spec.kind]
