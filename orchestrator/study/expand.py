"""Study -> configs -> trials (config x order x seed), fixed before anything runs.

Grid parameters are crossed; choice/uniform/loguniform parameters are drawn
``search.num_samples`` times with Ray Tune's own samplers from a seeded RNG, so
the trial list (and every trial id) is the same each time a study is expanded.
Each config runs on every order and seed: its robustness statistics need that.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import numpy as np

import methods
from orchestrator.study.schema import (Choice, Config, Grid, LogUniform, Study, TrialSpec, Uniform, split_spaces,
                                       with_values)


def _tune_domain(space):
    from ray import tune

    if isinstance(space, Choice):
        return tune.choice(space.choice)
    if isinstance(space, Uniform):
        return tune.uniform(*space.uniform)
    if isinstance(space, LogUniform):
        return tune.loguniform(*space.loguniform)
    raise TypeError(space)


def _config_id(label: str, params: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{label}-{digest}"


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A method entry's params -> (fixed values, search spaces by dotted path)."""
    return split_spaces(params)


def make_config(study: Study, method_index: int, searched: dict[str, Any]) -> Config:
    """The config of method entry ``method_index`` with ``searched`` values for its spaces."""
    m = study.methods[method_index]
    fixed, _ = split_params(m.params)
    full = methods.METHODS.get(m.name).params.model_validate(with_values(fixed, searched)).model_dump(mode="json")
    return Config(_config_id(m.display, full), m.display, m.name, full, dict(searched))


def method_defaults(name: str) -> dict[str, Any] | None:
    """The params a method gets when a study gives none (its ``Params`` model's defaults, as JSON); None when some
    param has no default. What MLflow shows of a config are the params that differ from these."""
    try:
        return methods.METHODS.get(name).params.model_validate({}).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a required param, an unknown method: every param is shown
        return None


def is_adaptive(study: Study, method_index: int) -> bool:
    """Searched by Optuna as the study runs (its configs are not known up front)."""
    return study.search.algorithm == "optuna" and bool(split_params(study.methods[method_index].params)[1])


def expand_configs(study: Study) -> list[Config]:
    """Every config known before the study runs.

    grid: grid params crossed, other spaces drawn ``num_samples`` times per grid
    point. random: ``num_samples`` configs, every space (grids too) sampled.
    optuna: only the entries without spaces (Optuna proposes the others as it goes).
    """
    configs: list[Config] = []
    seen: set[str] = set()
    for index, m in enumerate(study.methods):
        if is_adaptive(study, index):
            continue
        _, spaces = split_params(m.params)
        grids = {k: v.grid for k, v in spaces.items() if isinstance(v, Grid)}
        randoms = {k: _tune_domain(v) for k, v in spaces.items() if not isinstance(v, Grid)}
        if study.search.algorithm != "grid":  # random search samples grid values too
            randoms.update({k: _tune_domain(Choice(choice=v)) for k, v in grids.items()})
            grids = {}
        rng = np.random.default_rng([study.search.seed, index])
        draws = study.search.num_samples if randoms else 1
        for combo in itertools.product(*grids.values()):
            for _ in range(draws):
                searched = dict(zip(grids, combo))
                searched.update({k: _plain(d.sample(random_state=rng)) for k, d in randoms.items()})
                config = make_config(study, index, searched)
                if config.config_id not in seen:  # a choice may draw the same config twice
                    seen.add(config.config_id)
                    configs.append(config)
    return configs


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def study_identity(study: Study, record_version: int) -> dict[str, Any]:
    """What every trial of ``study`` shares and its id must cover: the benchmark (name and every param, defaults
    filled in) and the version of the record the trial writes (results.records.RECORD_VERSION, passed in by
    the run layer: study/ does not import results/)."""
    return {"benchmark": study.benchmark.name,
            "benchmark_params": study.benchmark_params().model_dump(mode="json"),
            "record_version": record_version}


def trial_id(config: Config, order: tuple[int, ...], order_index: int, seed: int, setting: str,
             evaluate_unseen: bool, tag: str = "o", max_tasks: int | None = None,
             identity: dict[str, Any] | None = None) -> str:
    """``<label>-<hash>-<tag><r>-s<seed>``, the hash over everything that determines the trial: ``identity``
    (benchmark, record version), the method and its params, the order itself, seed, setting, evaluate_unseen and
    max_tasks. A label's rerun suffix (``@fresh``) follows the hash, as in its config id: ``ft-1a2b3c4d@fresh-f0-s0``.
    A study changed in any of these gives the trial another id, so an earlier run's record never passes for it."""
    key = {"identity": identity or {}, "label": config.label, "method": config.method, "params": config.params,
           "order": list(order), "seed": seed, "setting": setting, "evaluate_unseen": evaluate_unseen,
           "max_tasks": max_tasks, "tag": tag}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    label, suffix = config.label, ""
    if "@" in label and config.config_id.endswith(label[label.rindex("@"):]):
        label, suffix = label[:label.rindex("@")], label[label.rindex("@"):]
    return f"{label}-{digest}{suffix}-{tag}{order_index}-s{seed}"


def trials_for(config: Config, orders: list[tuple[int, ...]], seeds: list[int], setting: str,
               evaluate_unseen: bool, tag: str = "o", max_tasks: int | None = None,
               identity: dict[str, Any] | None = None) -> list[TrialSpec]:
    """One trial per (order, seed). ``tag`` "o" for the study's orders, "f" for the fresh re-run orders.
    ``max_tasks``: each trial learns only the first that many tasks of its order (search.protocol first_tasks).
    ``identity``: ``study_identity`` of the study (what its trial ids hash besides the trial's own fields)."""
    return [TrialSpec(trial_id=trial_id(config, order, r, seed, setting, evaluate_unseen, tag, max_tasks, identity),
                      config_id=config.config_id,
                      label=config.label, method=config.method, params=config.params, order=order,
                      order_index=r, seed=seed, setting=setting, evaluate_unseen=evaluate_unseen,
                      searched=dict(config.searched), max_tasks=max_tasks)
            for r, order in enumerate(orders) for seed in seeds]


def is_searched(study: Study, method_index: int) -> bool:
    """The method entry has search spaces: its configs are chosen among (by the grid, random draws or Optuna)."""
    return bool(split_params(study.methods[method_index].params)[1])


def search_max_tasks(study: Study, label: str) -> int | None:
    """``max_tasks`` of a trial of ``label``'s configs: k under ``search.protocol: {first_tasks: k}`` when the
    label's entry is searched, else None (every task of the order)."""
    k = study.search.first_tasks
    if k is None:
        return None
    return k if any(m.display == label and is_searched(study, i) for i, m in enumerate(study.methods)) else None


def setting_of(study: Study, default_setting: str) -> str:
    return study.benchmark.setting or default_setting


def expand_trials(study: Study, default_setting: str, identity: dict[str, Any] | None = None) -> list[TrialSpec]:
    """The trials known up front; ``default_setting``: the benchmark's own, unless the study names one;
    ``identity``: ``study_identity`` (the driver's trial ids have it)."""
    setting = setting_of(study, default_setting)
    return [t for config in expand_configs(study)
            for t in trials_for(config, study.task_orders(), study.seeds, setting, study.evaluate_unseen,
                                max_tasks=search_max_tasks(study, config.label), identity=identity)]
