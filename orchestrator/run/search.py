"""Ray Tune pieces of a search, built from the study file: Optuna TPE and ASHA.

Optuna proposes configs as the study runs (``search.algorithm: optuna``): each
method entry with search spaces gets its own TPE sampler, seeded from
``search.seed``, behind the OrderAggregatingSearcher, so TPE learns one
objective per config over all orders. Categorical values are passed to Optuna
as JSON text (Optuna's categories must be scalars; ours may be lists, e.g.
``hidden``), and decoded before the config is built.

ASHA (``search.scheduler.kind: asha``) stops single trials early, with "tasks
learned" as its time unit and the VALIDATION accuracy on the tasks seen so
far (``val_acc_seen``; ``acc_seen``, on test, only with ``search.selection:
test``) as its metric; check_study allows it only with the mean-ACC objective
(see there for why).
"""
from __future__ import annotations

import json
from typing import Any, Callable

from orchestrator.results.objective import objective_value
from orchestrator.study.schema import Choice, Grid, LogUniform, Study, Uniform
from orchestrator.run.searcher import OrderAggregatingSearcher

ASHA_METRICS = {"val": "val_acc_seen", "test": "acc_seen"}  # by search.selection
ASHA_TIME = "tasks_learned"


def optuna_space(spaces: dict[str, Any]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out = {}
    for key, space in spaces.items():
        if isinstance(space, (Grid, Choice)):
            values = space.grid if isinstance(space, Grid) else space.choice
            out[key] = CategoricalDistribution([json.dumps(v) for v in values])
        elif isinstance(space, Uniform):
            out[key] = FloatDistribution(*space.uniform)
        elif isinstance(space, LogUniform):
            out[key] = FloatDistribution(*space.loguniform, log=True)
        else:
            raise TypeError(space)
    return out


def decode(suggestion: dict[str, Any], spaces: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) if isinstance(spaces[k], (Grid, Choice)) else v for k, v in suggestion.items()}


def order_searcher(study: Study, method_index: int, spaces: dict[str, Any],
                   members: Callable[[dict[str, Any]], list[dict[str, Any]]],
                   evaluated: list[tuple[dict[str, Any], float]] = (),
                   known: Callable[[dict[str, Any]], float | None] | None = None) -> OrderAggregatingSearcher:
    """TPE over one method entry's spaces, scored over every order by the study's objective.

    ``members(searched)``: the trial configs of a proposed config, or [] when it
    already ran (then ``known(searched)`` gives its objective, if it has one).
    ``evaluated``: (searched values, objective) of configs finished in an earlier
    run of this study (``--resume``); TPE starts from them instead of from
    scratch, and its seed moves on so it does not replay the earlier proposals.
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    points = [{k: json.dumps(v) if isinstance(spaces[k], (Grid, Choice)) else v for k, v in searched.items()}
              for searched, _ in evaluated]
    inner = OptunaSearch(space=optuna_space(spaces), metric="objective", mode="max",
                         sampler=optuna.samplers.TPESampler(seed=study.search.seed + method_index
                                                            + 7919 * len(evaluated)),
                         points_to_evaluate=points or None,
                         evaluated_rewards=[value for _, value in evaluated] or None)
    return OrderAggregatingSearcher(inner, lambda s: members(decode(s, spaces)),
                                    lambda records: objective_value(study.search.objective, records, study.search.selection),
                                    known=None if known is None else (lambda s: known(decode(s, spaces))))


def asha(study: Study, num_tasks: int):
    from ray.tune.schedulers import ASHAScheduler

    spec = study.search.scheduler
    max_t = study.search.first_tasks or num_tasks  # first_tasks: a search trial ends after k tasks
    return ASHAScheduler(time_attr=ASHA_TIME, metric=ASHA_METRICS[study.search.selection], mode="max",
                         max_t=max_t,
                         grace_period=min(spec.grace_tasks, max_t), reduction_factor=spec.reduction_factor)
