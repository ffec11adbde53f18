"""A searcher that scores a config over all its task orders, not one order at a time.

Ray Tune's searchers see one trial per suggestion. An order-robust search
needs each suggested config to run on R orders (times the seeds) and the
searcher to learn one number for the lot. Tune's ``Repeater`` does the
repetition but only averages one reported metric; ``OrderAggregatingSearcher``
hands each inner suggestion out once per (order, seed), collects the finished
trial records, and tells the inner searcher the study's objective
(orchestrator/objective.py: mean ACC, worst-order ACC, mean - k*std,
ACC - c*AOPD) once every member has ended.

A group in which any member failed or was stopped early (ASHA) is reported to
the inner searcher as an error (Optuna records the trial as failed and does
not learn from it): a partial set of orders has no honest score.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ray.tune.search import Searcher

from orchestrator.results.records import TrialRecord, record_from_json

Members = Callable[[dict[str, Any]], list[dict[str, Any]]]
Score = Callable[[list[TrialRecord]], float]


@dataclass
class _Group:
    group_id: str
    size: int
    records: dict[str, TrialRecord | None] = field(default_factory=dict)  # trial id -> record or None


class OrderAggregatingSearcher(Searcher):
    """Wraps ``inner``: one inner suggestion -> ``members(suggestion)`` trial configs -> one score."""

    def __init__(self, inner: Searcher, members: Members, score: Score, metric: str = "objective",
                 known: Callable[[dict[str, Any]], float | None] | None = None, max_repeats: int = 100):
        # No metric of our own: Tune checks that every result carries the searcher's
        # metric, and ours exists only per group, computed here.
        super().__init__(metric=None, mode=None)
        self.inner = inner
        self.members = members
        self.score = score
        self.inner_metric = metric
        self._queue: list[dict[str, Any]] = []
        self._current: _Group | None = None
        self._group_of: dict[str, _Group] = {}
        self._groups = 0
        self.scores: dict[str, float | None] = {}  # group id -> objective (None: failed group)
        self.known = known or (lambda suggestion: None)
        self.max_repeats = max_repeats

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the inner searcher was built with its space, metric and mode

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        repeats = 0
        while not self._queue:
            group_id = f"group{self._groups}"
            suggestion = self.inner.suggest(group_id)
            if suggestion is None or suggestion == Searcher.FINISHED:
                return suggestion
            self._groups += 1
            self._queue = list(self.members(suggestion))
            if self._queue:
                self._current = _Group(group_id, len(self._queue))
                break
            # ``members`` gives nothing for a config that already ran (TPE re-proposes
            # categorical combinations, a resumed search its earlier configs): tell the
            # inner searcher what is known of it, run nothing, and ask again.
            value = self.known(suggestion)
            self.inner.on_trial_complete(group_id, None if value is None else {self.inner_metric: value},
                                         error=value is None)
            repeats += 1
            if repeats >= self.max_repeats:  # the space is (nearly) exhausted
                return Searcher.FINISHED
        self._group_of[trial_id] = self._current
        return self._queue.pop(0)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        pass  # intermediate rows mean nothing to the inner searcher: it scores whole groups

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        group = self._group_of.pop(trial_id, None)
        if group is None:
            return
        record = (result or {}).get("record")  # the trial's record as JSON (it crossed the Tune boundary)
        record = record_from_json(record) if record is not None else None
        ok = not error and record is not None and record.completed
        group.records[trial_id] = record if ok else None
        if len(group.records) < group.size:
            return
        records = list(group.records.values())
        if any(r is None for r in records):
            self.scores[group.group_id] = None
            self.inner.on_trial_complete(group.group_id, None, error=True)
            return
        value = self.score(records)
        self.scores[group.group_id] = value
        if value != value:  # NaN: nothing to learn from
            self.inner.on_trial_complete(group.group_id, None, error=True)
        else:
            self.inner.on_trial_complete(group.group_id, {self.inner_metric: value})
