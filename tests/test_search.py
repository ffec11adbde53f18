"""Order-robust search: the objective over orders, the order-aggregating searcher, the search section."""
import math

import numpy as np
import pytest
from ray.tune.search import Searcher

from orchestrator.study.expand import expand_configs
from orchestrator.results.objective import objective_value
from orchestrator.run.searcher import OrderAggregatingSearcher
from orchestrator.study.schema import ObjectiveSpec, StudyError
from orchestrator.study.loading import parse_study
from orchestrator.results.summary import best_per_label, build_summary


def rec(order, final, status="completed", seed=0):
    """A completed 3-task trial whose final row is ``final`` (earlier rows: 100 on the task just learned).

    Its validation matrix equals its test matrix, so a hand computation holds on either split (the
    objective reads validation)."""
    T = len(order)
    matrix = [[None] * T for _ in range(T)]
    for i in range(T - 1):
        for j in order[: i + 1]:
            matrix[i][j] = 100.0
    matrix[T - 1] = list(final)
    return {"trial_id": f"t{order}{seed}", "config_id": "c", "label": "m", "order": list(order), "seed": seed,
            "status": status, "matrix": matrix, "val_matrix": [list(r) for r in matrix], "kind": "classification"}


# Three orders; ACCs 80, 60, 70 (hand computed from the final rows).
RECORDS = [rec((0, 1, 2), [90, 80, 70]), rec((2, 1, 0), [50, 60, 70]), rec((1, 0, 2), [70, 70, 70])]


def test_objectives_by_hand():
    assert objective_value(ObjectiveSpec(kind="mean_acc"), RECORDS) == pytest.approx(70.0)
    assert objective_value(ObjectiveSpec(kind="worst_acc"), RECORDS) == pytest.approx(60.0)
    assert objective_value(ObjectiveSpec(kind="mean_minus_std", k=2), RECORDS) == pytest.approx(70 - 2 * 10.0)
    # OPD per task: task0 90-50=40, task1 80-60=20, task2 0 -> AOPD 20
    assert objective_value(ObjectiveSpec(kind="acc_minus_aopd", c=0.5), RECORDS) == pytest.approx(70 - 10.0)
    # Task.Acc: 100 on every task just learned, but the last task's just-learned value is its final one
    assert objective_value(ObjectiveSpec(kind="task_acc"), RECORDS) == pytest.approx(((100 + 100 + 70)
                                                                                   + (100 + 100 + 50)
                                                                                   + (100 + 100 + 70)) / 9)


def test_worst_order_averages_the_seeds_of_an_order_first():
    records = [rec((0, 1, 2), [90, 90, 90], seed=0), rec((0, 1, 2), [30, 30, 30], seed=1),
               rec((2, 1, 0), [70, 70, 70])]
    assert objective_value(ObjectiveSpec(kind="worst_acc"), records) == pytest.approx(60.0)


def test_failed_trials_do_not_score_and_nothing_scores_nan():
    assert objective_value(ObjectiveSpec(), RECORDS + [rec((0, 2, 1), [0, 0, 0], status="failed")]) == 70.0
    assert math.isnan(objective_value(ObjectiveSpec(), [rec((0, 1, 2), [1, 1, 1], status="failed")]))


class FakeInner(Searcher):
    """Suggests lr = 0.1, 0.2, ... and remembers what it was told."""

    def __init__(self):
        super().__init__(metric="objective", mode="max")
        self.n = 0
        self.told: dict[str, object] = {}

    def suggest(self, trial_id):
        self.n += 1
        return {"lr": self.n / 10}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told[trial_id] = "error" if error else result["objective"]


def members(searched):
    return [{"lr": searched["lr"], "order": o} for o in range(3)]


def test_the_searcher_runs_each_suggestion_on_every_order_and_reports_one_objective():
    inner = FakeInner()
    s = OrderAggregatingSearcher(inner, members, lambda recs: objective_value(ObjectiveSpec(kind="worst_acc"), recs))
    configs = [s.suggest(f"trial{i}") for i in range(6)]
    assert [c["order"] for c in configs] == [0, 1, 2, 0, 1, 2]
    assert [c["lr"] for c in configs] == [0.1] * 3 + [0.2] * 3  # one inner suggestion per group of orders
    assert inner.n == 2
    for i, r in enumerate(RECORDS):  # group0 ends out of order with group1's trials interleaved
        s.on_trial_complete(f"trial{i}", {"record": r})
        if i < 2:
            assert inner.told == {}  # nothing until every order of the config has ended
    assert inner.told == {"group0": pytest.approx(60.0)}
    s.on_trial_complete("trial3", {"record": RECORDS[0]})
    s.on_trial_complete("trial4", None, error=True)  # one order failed
    s.on_trial_complete("trial5", {"record": RECORDS[2]})
    assert inner.told["group1"] == "error" and s.scores == {"group0": pytest.approx(60.0), "group1": None}


def test_a_trial_stopped_early_makes_its_group_unscored():
    inner = FakeInner()
    s = OrderAggregatingSearcher(inner, members, lambda recs: objective_value(ObjectiveSpec(), recs))
    for i in range(3):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", {"record": RECORDS[0]})
    s.on_trial_complete("t1", {"acc_seen": 99.0, "tasks_learned": 1})  # ASHA stopped it: no record
    s.on_trial_complete("t2", {"record": RECORDS[1]})
    assert inner.told == {"group0": "error"}


def test_the_searcher_passes_on_finished_and_waiting():
    class Done(FakeInner):
        def suggest(self, trial_id):
            return Searcher.FINISHED

    s = OrderAggregatingSearcher(Done(), members, lambda recs: 0.0)
    assert s.suggest("x") == Searcher.FINISHED


# ---------------------------------------------------------------- the study file
BASE = {"name": "s", "benchmark": {"name": "split_digits"}, "orders": {"kind": "random", "count": 3, "seed": 0},
        "methods": [{"name": "finetune", "params": {"lr": {"loguniform": [1e-3, 1e-1]},
                                                    "momentum": {"grid": [0.0, 0.9]}}}]}


def study(**search):
    return parse_study({**BASE, "search": search})


def test_grid_crosses_grids_random_samples_them_optuna_defers():
    grid = expand_configs(study(algorithm="grid", num_samples=2))
    assert len(grid) == 4 and sorted({c.searched["momentum"] for c in grid}) == [0.0, 0.9]
    rnd = expand_configs(study(algorithm="random", num_samples=5, seed=3))
    assert len(rnd) == 5 and all(c.searched["momentum"] in (0.0, 0.9) for c in rnd)
    assert [c.config_id for c in rnd] == [c.config_id for c in expand_configs(study(algorithm="random", num_samples=5, seed=3))]
    assert expand_configs(study(algorithm="optuna", num_samples=5)) == []  # Optuna proposes them as it runs


@pytest.mark.parametrize("search,field,words", [
    ({"scheduler": {"kind": "asha"}, "objective": {"kind": "worst_acc"}}, "search.scheduler.kind", "mean_acc"),
    ({"final_orders": {"kind": "explicit", "orders": [[2, 4, 3, 0, 1]]}}, "search.final_orders", "search order"),
    ({"algorithm": "tpe"}, "search.algorithm", "grid"),
    ({"objective": {"kind": "mean_acc", "k": -1}}, "search.objective.k", "greater than or equal"),
    ({"time_budget_s": 0}, "search.time_budget_s", "greater than"),
])
def test_bad_search_sections_name_the_field(search, field, words):
    with pytest.raises(StudyError) as e:
        study(**search)
    assert field in str(e.value) and words in str(e.value)


def test_fresh_orders_are_never_search_orders():
    s = study(final_orders={"kind": "random", "count": 4, "seed": 0})  # the same seed as the search orders
    fresh = s.final_orders()
    assert len(fresh) == 4 and not set(fresh) & set(s.task_orders())


def test_best_config_uses_the_objective_and_carries_the_fresh_estimate():
    from orchestrator.study.schema import Config

    a = Config("a", "m", "finetune", {}, {"lr": 0.1})
    b = Config("b", "m", "finetune", {}, {"lr": 0.2})
    fresh = Config("b@fresh", "m@fresh", "finetune", {}, {"lr": 0.2})
    steady = [dict(r, config_id="a") for r in (rec((0, 1, 2), [71, 71, 71]), rec((2, 1, 0), [69, 69, 69]))]
    shaky = [dict(r, config_id="b") for r in (rec((0, 1, 2), [95, 95, 95]), rec((2, 1, 0), [55, 55, 55]))]
    again = [dict(r, config_id="b@fresh") for r in (rec((1, 0, 2), [60, 60, 60]), rec((1, 2, 0), [70, 70, 70]))]
    mean = build_summary("s", {}, [a, b, fresh], steady + shaky + again, ObjectiveSpec(kind="mean_acc"))
    assert mean["best"]["m"]["config_id"] == "b" and mean["best"]["m"]["objective"] == pytest.approx(75.0)
    assert mean["best"]["m"]["fresh"]["objective"] == pytest.approx(65.0)  # the honest estimate is lower
    assert "m@fresh" not in mean["best"]
    worst = build_summary("s", {}, [a, b], steady + shaky, ObjectiveSpec(kind="worst_acc"))
    assert worst["best"]["m"]["config_id"] == "a" and worst["best"]["m"]["objective"] == pytest.approx(69.0)
    entries = worst["configs"]
    entries[0]["trials_stopped"] = 1  # a config stopped early on some order is not eligible
    assert best_per_label(entries)["m"]["config_id"] == "b"


def test_summary_counts_stopped_apart_from_failed():
    from orchestrator.study.schema import Config

    s = build_summary("s", {}, [Config("c", "m", "finetune", {}, {})],
                      [rec((0, 1, 2), [1, 2, 3]), rec((2, 1, 0), [0, 0, 0], status="stopped")])
    assert s["trials_failed"] == 0 and s["trials_stopped"] == 1 and s["configs"][0]["R"] == 1
    assert np.isclose(s["configs"][0]["acc_mean"], 2.0)


def test_a_config_proposed_again_is_not_rerun_and_the_inner_searcher_hears_its_score():
    class Repeats(FakeInner):
        def suggest(self, trial_id):
            self.n += 1
            return {"lr": 0.1 if self.n < 3 else 0.3}  # proposes lr 0.1 twice, then 0.3

    inner = Repeats()
    ran = set()

    def once(searched):
        if searched["lr"] in ran:
            return []
        ran.add(searched["lr"])
        return members(searched)

    s = OrderAggregatingSearcher(inner, once, lambda recs: 0.0, known=lambda sug: 42.0)
    first = [s.suggest(f"t{i}") for i in range(3)]
    second = s.suggest("t3")  # group1 = lr 0.1 again: scored from what is known, not run
    assert {c["lr"] for c in first} == {0.1} and second["lr"] == 0.3
    assert inner.told == {"group1": 42.0}

    class Stuck(FakeInner):
        def suggest(self, trial_id):
            return {"lr": 0.1}

    stuck = OrderAggregatingSearcher(Stuck(), lambda sug: [], lambda recs: 0.0, max_repeats=5)
    assert stuck.suggest("x") == Searcher.FINISHED  # an exhausted space ends the search
