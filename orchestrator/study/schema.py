"""The study file: a pydantic model loaded from YAML, checked before anything runs.

Structure is checked by pydantic; what depends on the registries (a method's or
benchmark's parameters, orders against the number of tasks) is checked after,
with the same error shape, so a bad file yields one message listing each
problem as ``field: bad value -> what is allowed``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import Field, PrivateAttr, field_validator

from orchestrator.study.base import Strict, StudyError  # noqa: F401 - StudyError is part of the schema's API
from orchestrator.study.orders import OrdersSpec, RandomOrders

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")
MAX_NAME = 100
MAX_SEED = 2 ** 32 - 1  # numpy and torch seeds
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


# ---------------------------------------------------------------- search spaces
class Grid(Strict):
    grid: list[Any] = Field(min_length=1)


class Choice(Strict):
    choice: list[Any] = Field(min_length=1)


class Uniform(Strict):
    uniform: tuple[float, float]

    @field_validator("uniform")
    @classmethod
    def _ordered(cls, v):
        if not v[0] < v[1]:
            raise ValueError(f"uniform needs [low, high] with low < high, got {list(v)}")
        return v


class LogUniform(Strict):
    loguniform: tuple[float, float]

    @field_validator("loguniform")
    @classmethod
    def _ordered(cls, v):
        if not 0 < v[0] < v[1]:
            raise ValueError(f"loguniform needs [low, high] with 0 < low < high, got {list(v)}")
        return v


SearchSpace = Union[Grid, Choice, Uniform, LogUniform]


def as_search_space(value: Any) -> SearchSpace | None:
    """A dict with exactly one of grid/choice/uniform/loguniform is a search space."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACE_KINDS:
        kind = next(iter(value))
        return {"grid": Grid, "choice": Choice, "uniform": Uniform, "loguniform": LogUniform}[kind](**value)
    return None


def space_candidates(space: SearchSpace) -> list[Any]:
    """Values that must each be valid for the parameter: every listed value, or both bounds."""
    if isinstance(space, Grid):
        return list(space.grid)
    if isinstance(space, Choice):
        return list(space.choice)
    return list(space.uniform if isinstance(space, Uniform) else space.loguniform)


def split_spaces(params: Any, prefix: str = "") -> tuple[Any, dict[str, SearchSpace]]:
    """Params -> (fixed values, search spaces by dotted path), a space allowed at any leaf.

    ``{optimizer: {name: sgd, lr: {loguniform: [1e-3, 0.1]}}}`` gives the fixed
    ``{optimizer: {name: sgd}}`` and the space ``optimizer.lr``; list items are
    numbered (``penalties.0.lambda``). A flat key (``lr: {grid: [...]}``) is a path of one.
    """
    space = as_search_space(params) if prefix else None
    if space is not None:
        return _SPACE, {prefix: space}
    spaces: dict[str, SearchSpace] = {}
    if isinstance(params, dict):
        fixed: Any = {}
        for key, value in params.items():
            sub, found = split_spaces(value, f"{prefix}.{key}" if prefix else str(key))
            spaces.update(found)
            if sub is not _SPACE:
                fixed[key] = sub
        return fixed, spaces
    if isinstance(params, list):
        items = []
        for index, value in enumerate(params):
            sub, found = split_spaces(value, f"{prefix}.{index}")
            spaces.update(found)
            items.append(None if sub is _SPACE else sub)  # a list keeps its length; the value is set per config
        return items, spaces
    return params, spaces


_SPACE = object()


def with_values(fixed: Any, values: dict[str, Any]) -> Any:
    """A copy of ``fixed`` with each dotted path of ``values`` set (dicts created where missing)."""
    import copy

    out = copy.deepcopy(fixed)
    for path, value in values.items():
        node, parts = out, path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return out


def value_at(params: Any, path: str, default: Any = None) -> Any:
    """The value at a dotted path of (nested) params, or ``default``."""
    node = params
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return default
    return node


# ---------------------------------------------------------------- sections
class BenchmarkSpec(Strict):
    name: str
    params: dict[str, Any] = {}
    setting: Literal["task_incremental", "domain_incremental", "class_incremental"] | None = Field(
        None, description="default: the benchmark's own (split: task_incremental, permuted: domain_incremental); "
                          "class_incremental: one head growing by each task's classes, global labels, no task id")


class MethodSpec(Strict):
    name: str
    label: str | None = Field(None, description="name in tables and MLflow; default: the method name")
    params: dict[str, Any] = {}

    @field_validator("label")
    @classmethod
    def _safe_label(cls, v: str | None) -> str | None:
        if v is not None:
            safe_name(v, "label")
        return v

    @property
    def display(self) -> str:
        return self.label or self.name


class ObjectiveSpec(Strict):
    """The one number a config scores over its orders (and seeds); higher is better."""

    kind: Literal["mean_acc", "worst_acc", "mean_minus_std", "acc_minus_aopd", "task_acc"] = Field(
        "mean_acc", description="mean ACC | worst-order ACC | mean ACC - k*std | mean ACC - c*AOPD | "
                                "mean Task.Acc (trainability: accuracy on each task right after learning it)")
    k: float = Field(1.0, ge=0, le=100, description="mean_minus_std: weight of the std over trials")
    c: float = Field(1.0, ge=0, le=100, description="acc_minus_aopd: weight of AOPD")


class SchedulerSpec(Strict):
    kind: Literal["none", "asha"] = Field("none", description="asha: stop poor trials early, time unit = tasks learned")
    grace_tasks: int = Field(1, ge=1, le=100_000, description="asha: tasks every trial learns before it may be stopped")
    reduction_factor: float = Field(3.0, gt=1, le=100, description="asha: keep the top 1/reduction_factor at each rung")


class FirstTasks(Strict):
    """Tune on the first k tasks of every order (A-GEM, arXiv 1812.00420; Mai et al.), then run the winner on
    the full orders: the tasks k+1..T were never seen while tuning."""

    first_tasks: int = Field(ge=1, le=100_000, description="tasks every search trial learns (1 <= k < the number of tasks)")


class SearchSpec(Strict):
    algorithm: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid: grid params crossed, other spaces drawn num_samples times per grid point | "
                            "random: num_samples configs, every space sampled | optuna: TPE, num_samples configs")
    num_samples: int = Field(1, ge=1, le=100_000, description="grid: draws per grid point; random/optuna: configs per method")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    max_trials: int = Field(10_000, ge=1, description="refuse a study that plans more trials than this (configs x "
                                                      "orders x seeds); raise it to run a bigger one on purpose")
    selection: Literal["val", "test"] = Field(
        "val", description="the split whose accuracies choose (objective, ASHA, Optuna, best config, frontier); "
                           "tables always report test. test: only to reproduce old, optimistic comparisons")
    objective: ObjectiveSpec = ObjectiveSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")
    max_concurrent: int | None = Field(None, ge=1, le=100_000, description="trials at once (default: as resources allow)")
    final_orders: OrdersSpec | None = Field(
        None, description="re-run each searched method's best config on these fresh orders (never the search's)")
    protocol: Union[Literal["full"], FirstTasks] = Field(
        "full", description="full: a config is scored over all tasks of its orders | {first_tasks: k}: search "
                            "trials learn only the first k tasks of each order; each searched method's winner then "
                            "runs on the full orders (or final_orders), label suffix @full")

    @property
    def first_tasks(self) -> int | None:
        """k of ``protocol: {first_tasks: k}``; None for the full protocol."""
        return self.protocol.first_tasks if isinstance(self.protocol, FirstTasks) else None


class Resources(Strict):
    cpu: float = Field(1.0, gt=0, le=1024)
    gpu: float = Field(0.0, ge=0, le=64)
    schedule_timeout_s: float = Field(600.0, gt=0, le=1e6, description="trials waiting this long with none "
                                      "running end the study with an error (resources no node can give)")


class Tracking(Strict):
    uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI")
    experiment: str | None = Field(None, description="default: the study name")
    trial_artifacts: bool = Field(True, description="each trial run's matrix.png heatmap and matrix.csv (off: "
                                                    "trial.json and params.json only; bench/mlflow_artifacts.py "
                                                    "measures the cost)")




def safe_name(v: str, what: str = "name") -> str:
    """A study name or method label: it names folders, files and MLflow runs, so safe characters and a cap."""
    if len(v) > MAX_NAME:
        raise ValueError(f"{len(v)} characters; a {what} has at most {MAX_NAME} (it names folders and files)")
    if not _NAME.match(v):
        raise ValueError(f"use letters, digits, '_', '-', '.', '@' or '+', starting with a letter or digit "
                         f"(a {what} names folders and files)")
    return v


class Study(Strict):
    name: str
    benchmark: BenchmarkSpec
    orders: OrdersSpec | None = Field(None, description="required for classification benchmarks; streams have none")
    methods: list[MethodSpec] = Field(min_length=1)
    seeds: list[Seed] = Field([0], min_length=1, description=f"trial seeds, 0..{MAX_SEED}")
    search: SearchSpec = SearchSpec()
    resources: Resources = Resources()
    tracking: Tracking = Tracking()
    output_dir: str = "results"
    data_root: str | None = Field(None, description="dataset root; else --data-root, else $CLORCH_DATA_ROOT, else ./data")
    evaluate_unseen: bool = Field(False, description="also evaluate tasks not yet learned (forward transfer)")
    baseline: str | None = Field(None, description="the method label every other method is compared with, order "
                                                   "by order (paired differences); default: the first method's label")
    storage: str | None = Field(None, description="Ray Tune storage for trial checkpoints: a path every node "
                                                  "sees (NFS) or s3://...; default <output_dir>/<name>/tune")
    retries: int = Field(2, ge=0, le=1000, description="times a trial whose worker dies is retried from its last "
                                                       "checkpoint")
    checkpoint_every_s: float = Field(10.0, ge=0.0, description="a trial checkpoints after a task only when at least "
                                      "this many seconds of training passed since its last checkpoint (or its "
                                      "start): a few short tasks are cheaper to redo than to save; 0: after every "
                                      "task")
    plugins: list[str] = Field([], description="your own methods/benchmarks: .py files or package folders relative "
                                               "to the study file, or importable module names")
    _plugin_refs: list = PrivateAttr(default_factory=list)  # what loading resolved; shipped to every trial worker
    _configs_from: dict | None = PrivateAttr(default=None)  # --configs-from: where the fixed configs came from

    @property
    def configs_from(self) -> dict | None:
        """--configs-from OTHER: {path, study, benchmark, configs: {label: source config id}, absent: [labels]}."""
        return self._configs_from

    @property
    def plugin_refs(self) -> list:
        """The plugins the driver loaded (orchestrator.study.plugins.PluginRef), entry points included."""
        return list(self._plugin_refs)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return safe_name(v, "study name")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    # Derived, valid once check_study passed.
    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def baseline_label(self) -> str:
        """The paired comparisons' baseline: ``baseline``, else the first method entry's label."""
        return self.baseline or self.methods[0].display

    # The registry-derived views below import the benchmark registry when called, not when this
    # module is imported: results/ and report/ read the schema without loading torch or a method.
    def benchmark_params(self):
        from datasets.registry import BENCHMARKS

        entry = BENCHMARKS.get(self.benchmark.name)
        return entry.params.model_validate(self.benchmark.params)

    @property
    def num_tasks(self) -> int:
        return self.benchmark_params().num_tasks

    @property
    def kind(self) -> str:
        """classification | regression_stream, known from the benchmark's Params without loading."""
        from datasets.registry import BENCHMARKS

        return getattr(BENCHMARKS.get(self.benchmark.name).params, "kind", "classification")

    def task_orders(self) -> list[tuple[int, ...]]:
        if self.orders is None:
            return [tuple(range(self.num_tasks))]  # a stream: one "order"
        return self.orders.generate(self.num_tasks)

    def final_orders(self) -> list[tuple[int, ...]]:
        """The fresh orders of the re-run: ``search.final_orders`` minus every order the search used.

        Random ones are drawn until ``count`` fresh ones are found (or every
        permutation is used); listed ones must already be fresh (check_study).
        """
        spec, t = self.search.final_orders, self.num_tasks
        if spec is None:
            return []
        used = set(self.task_orders())
        if isinstance(spec, RandomOrders):
            import math

            wanted = min(spec.count, math.factorial(t) - len(used))
            pool = spec.model_copy(update={"count": min(spec.count + len(used), math.factorial(t))}).generate(t)
            return [o for o in pool if o not in used][:wanted]
        return [o for o in spec.generate(t) if o not in used]


# ---------------------------------------------------------------- what a study expands into
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
    searched: dict[str, Any] = field(default_factory=dict)  # the config's values drawn from a search space, by path
    max_tasks: int | None = None  # learn only the first max_tasks tasks of the order (search.protocol first_tasks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["order"] = list(self.order)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialSpec":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{**{k: v for k, v in d.items() if k in known}, "order": tuple(d["order"])})
