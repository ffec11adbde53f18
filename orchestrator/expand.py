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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import methods
from orchestrator.spec import Choice, Grid, LogUniform, Study, Uniform, as_search_space


@dataclass(frozen=True)
class Config:
    config_id: str
    label: str
    method: str
    params: dict[str, Any]       # every parameter, defaults filled in
    searched: dict[str, Any]     # only those drawn from a search space


@dataclass(frozen=True)
class TrialSpec:
    trial_id: str
    config_id: str
    label: str
    method: str
    params: dict[str, Any]
    order: tuple[int, ...]
    order_index: int
    seed: int
    setting: str
    evaluate_unseen: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["order"] = list(self.order)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialSpec":
        return cls(**{**d, "order": tuple(d["order"])})


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


def expand_configs(study: Study) -> list[Config]:
    configs: list[Config] = []
    for index, m in enumerate(study.methods):
        params_model = methods.METHODS.get(m.name).params
        fixed, grids, randoms = {}, {}, {}
        for key, value in m.params.items():
            space = as_search_space(value)
            if space is None:
                fixed[key] = value
            elif isinstance(space, Grid):
                grids[key] = space.grid
            else:
                randoms[key] = _tune_domain(space)
        rng = np.random.default_rng([study.search.seed, index])
        draws = study.search.num_samples if randoms else 1
        seen: set[str] = set()
        for combo in itertools.product(*grids.values()):
            for _ in range(draws):
                searched = dict(zip(grids, combo))
                searched.update({k: _plain(d.sample(random_state=rng)) for k, d in randoms.items()})
                full = params_model.model_validate({**fixed, **searched}).model_dump(mode="json")
                cid = _config_id(m.display, full)
                if cid not in seen:  # a choice may draw the same config twice
                    seen.add(cid)
                    configs.append(Config(cid, m.display, m.name, full, searched))
    return configs


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def expand_trials(study: Study, default_setting: str) -> list[TrialSpec]:
    """``default_setting``: the benchmark's own, used unless the study names one."""
    setting = study.benchmark.setting or default_setting
    trials = []
    for config in expand_configs(study):
        for r, order in enumerate(study.task_orders()):
            for seed in study.seeds:
                trials.append(TrialSpec(
                    trial_id=f"{config.config_id}-o{r}-s{seed}", config_id=config.config_id,
                    label=config.label, method=config.method, params=config.params, order=order,
                    order_index=r, seed=seed, setting=setting, evaluate_unseen=study.evaluate_unseen))
    return trials

