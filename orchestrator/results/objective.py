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

from orchestrator.results.records import TrialRecord, as_records, completed
from orchestrator.study.schema import ObjectiveSpec


def objective_value(spec: ObjectiveSpec, records: Sequence[TrialRecord | dict[str, Any]], split: str = "val") -> float:
    """Score of one config from its completed trial records on ``split``; NaN when there is nothing to score.

    ``split`` is the study's ``search.selection``: validation by default, so what chooses a config is never
    the test data its numbers are reported on.

    The records' own type computes it (``TrialRecord.objective``): for
    classification the study's objective over the accuracy matrices
    (orchestrator.results.stats.order_objective), for a stream -MSE.
    """
    done = completed(as_records(records))
    if not done:
        return float("nan")
    return type(done[0]).objective(spec, done, split)


def describe(spec: ObjectiveSpec) -> str:
    return {"mean_acc": "mean ACC", "worst_acc": "worst-order ACC", "mean_minus_std": f"mean ACC - {spec.k:g}*std",
            "acc_minus_aopd": f"mean ACC - {spec.c:g}*AOPD", "task_acc": "mean Task.Acc"}[spec.kind]
