"""The study file: a pydantic model loaded from YAML, checked before anything runs.

Structure is checked by pydantic; what depends on the registries (a method's or
benchmark's parameters, orders against the number of tasks) is checked after,
with the same error shape, so a bad file yields one message listing each
problem as ``field: bad value -> what is allowed``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import datasets
import methods
from orchestrator import orders as orders_mod

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform")


class StudyError(ValueError):
    """A study file that cannot run. ``problems`` are (field path, value, message)."""

    def __init__(self, source: str, problems: list[tuple[str, Any, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''}; nothing was run"]
        for path, value, message in problems:
            shown = "" if value is _MISSING else f" (got {_short(value)})"
            lines.append(f"  {path or '<top level>'}{shown}: {message}")
        super().__init__("\n".join(lines))


_MISSING = object()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Strict(BaseModel):
    """Unknown keys are errors that list the keys allowed at that place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r}; allowed keys: {', '.join(cls.model_fields)}")
        return data


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


# ---------------------------------------------------------------- sections
class BenchmarkSpec(Strict):
    name: str
    params: dict[str, Any] = {}
    setting: Literal["task_incremental", "domain_incremental"] | None = Field(
        None, description="default: the benchmark's own (split: task_incremental, permuted: domain_incremental)")


class RandomOrders(Strict):
    kind: Literal["random"]
    count: int = Field(ge=1, le=100_000)
    seed: int = 0
    include_identity: bool = False


class ExplicitOrders(Strict):
    kind: Literal["explicit"]
    orders: list[list[int]] = Field(min_length=1)


class ApdOrders(Strict):
    kind: Literal["apd"]
    set: Literal[tuple(orders_mod.APD_ORDERS)]  # type: ignore[valid-type]


class LatinSquareOrders(Strict):
    kind: Literal["latin_square"]


class WilliamsOrders(Strict):
    kind: Literal["williams"]


OrdersSpec = Annotated[
    Union[RandomOrders, ExplicitOrders, ApdOrders, LatinSquareOrders, WilliamsOrders],
    Field(discriminator="kind"),
]


class MethodSpec(Strict):
    name: str
    label: str | None = Field(None, description="name in tables and MLflow; default: the method name")
    params: dict[str, Any] = {}

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


class SearchSpec(Strict):
    algorithm: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid: grid params crossed, other spaces drawn num_samples times per grid point | "
                            "random: num_samples configs, every space sampled | optuna: TPE, num_samples configs")
    num_samples: int = Field(1, ge=1, le=100_000, description="grid: draws per grid point; random/optuna: configs per method")
    seed: int = 0
    objective: ObjectiveSpec = ObjectiveSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")
    max_concurrent: int | None = Field(None, ge=1, le=100_000, description="trials at once (default: as resources allow)")
    final_orders: OrdersSpec | None = Field(
        None, description="re-run each searched method's best config on these fresh orders (never the search's)")


class Resources(Strict):
    cpu: float = Field(1.0, gt=0, le=1024)
    gpu: float = Field(0.0, ge=0, le=64)


class Tracking(Strict):
    uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI")
    experiment: str | None = Field(None, description="default: the study name")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Study(Strict):
    name: str
    benchmark: BenchmarkSpec
    orders: OrdersSpec | None = Field(None, description="required for classification benchmarks; streams have none")
    methods: list[MethodSpec] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    search: SearchSpec = SearchSpec()
    resources: Resources = Resources()
    tracking: Tracking = Tracking()
    output_dir: str = "results"
    data_root: str | None = Field(None, description="dataset root; else --data-root, else $CLORCH_DATA_ROOT, else ./data")
    evaluate_unseen: bool = Field(False, description="also evaluate tasks not yet learned (forward transfer)")
    storage: str | None = Field(None, description="Ray Tune storage for trial checkpoints: a path every node "
                                                  "sees (NFS) or s3://...; default <output_dir>/<name>/tune")
    retries: int = Field(2, ge=0, le=1000, description="times a trial whose worker dies is retried from its last task")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '_', '-' or '.', starting with a letter or digit")
        return v

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

    def benchmark_params(self):
        entry = datasets.BENCHMARKS.get(self.benchmark.name)
        return entry.params.model_validate(self.benchmark.params)

    @property
    def num_tasks(self) -> int:
        return self.benchmark_params().num_tasks

    @property
    def kind(self) -> str:
        """classification | regression_stream, known from the benchmark's Params without loading."""
        return getattr(datasets.BENCHMARKS.get(self.benchmark.name).params, "kind", "classification")

    def task_orders(self) -> list[tuple[int, ...]]:
        if self.orders is None:
            return [tuple(range(self.num_tasks))]  # a stream: one "order"
        return _orders_of(self.orders, self.num_tasks)

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
            pool = orders_mod.random_orders(t, min(spec.count + len(used), math.factorial(t)), spec.seed,
                                            spec.include_identity)
            return [o for o in pool if o not in used][:wanted]
        return [o for o in _orders_of(spec, t) if o not in used]


def _orders_of(o, t: int) -> list[tuple[int, ...]]:
    if isinstance(o, RandomOrders):
        return orders_mod.random_orders(t, o.count, o.seed, o.include_identity)
    if isinstance(o, ExplicitOrders):
        return [orders_mod.check_permutation(x, t) for x in o.orders]
    if isinstance(o, ApdOrders):
        return orders_mod.apd_orders(o.set, t)
    if isinstance(o, LatinSquareOrders):
        return orders_mod.latin_square(t)
    return orders_mod.williams_design(t)


# ---------------------------------------------------------------- loading
def load_study(path: str | Path, overrides: list[str] = ()) -> Study:
    """Read, override (``key.sub=value``), validate. Raises StudyError, nothing else."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise StudyError(source, [("", _MISSING, f"cannot read the study file: {e.strerror}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise StudyError(source, [("", _MISSING, f"not valid YAML: {where}{getattr(e, 'problem', e)}")]) from None
    if not isinstance(raw, dict):
        raise StudyError(source, [("", raw, "a study file is a YAML mapping with name, benchmark, orders, methods")])
    for item in overrides:
        _apply_override(raw, item, source)
    return parse_study(raw, source)


def parse_study(raw: dict, source: str = "<study>") -> Study:
    try:
        study = Study.model_validate(raw)
    except ValidationError as e:
        raise StudyError(source, [_pydantic_problem(err) for err in e.errors()]) from None
    problems = check_study(study)
    if problems:
        raise StudyError(source, problems)
    return study


def _apply_override(raw: dict, item: str, source: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise StudyError(source, [("--set", item, "use --set key.path=value, e.g. --set orders.count=3")])
    node: Any = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise StudyError(source, [(f"--set {key}", value, f"{part!r} does not name a key or list index")])
    last = parts[-1]
    parsed = yaml.safe_load(value) if value else None
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = parsed
    elif isinstance(node, dict):
        node[last] = parsed
    else:
        raise StudyError(source, [(f"--set {key}", value, f"{last!r} does not name a key or list index")])


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"random", "explicit", "apd", "latin_square", "williams"} and out == "orders":
            continue  # discriminated-union tag, not a user-visible key
        else:
            out += f".{part}" if out else str(part)
    return out


def _pydantic_problem(err: dict) -> tuple[str, Any, str]:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required but missing"
    if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        msg = "orders.kind must be one of random, explicit, apd, latin_square, williams"
    value = err.get("input", _MISSING)
    if err["type"] in ("missing", "model_type") or isinstance(value, dict):
        value = _MISSING
    return _path(err["loc"]), value, msg


def check_study(study: Study) -> list[tuple[str, Any, str]]:
    """Checks that need the registries. Returns problems; empty means runnable."""
    problems: list[tuple[str, Any, str]] = []
    bench = study.benchmark
    num_tasks = None
    if bench.name not in datasets.BENCHMARKS:
        problems.append(("benchmark.name", bench.name, f"unknown benchmark; available: {', '.join(datasets.BENCHMARKS.names())}"))
    else:
        entry = datasets.BENCHMARKS.get(bench.name)
        problems += _check_params("benchmark.params", entry.params, bench.params, allow_spaces=False)
        if not problems:
            num_tasks = entry.params.model_validate(bench.params).num_tasks
    kind = getattr(datasets.BENCHMARKS.get(bench.name).params, "kind", "classification") if num_tasks else None
    if kind == "classification" and study.orders is None:
        problems.append(("orders", _MISSING, "required for a classification benchmark: e.g. "
                         "{kind: random, count: 6, seed: 0}; or explicit, apd, latin_square, williams"))
        num_tasks = None
    elif kind == "regression_stream" and study.orders is not None:
        problems.append(("orders", _MISSING, f"{bench.name} is a regression stream: it has no tasks to order; remove orders"))
        num_tasks = None
    if num_tasks is not None:
        try:
            study.task_orders()
        except ValueError as e:
            where = "orders"
            if isinstance(study.orders, ExplicitOrders):
                for k, order in enumerate(study.orders.orders):
                    try:
                        orders_mod.check_permutation(order, num_tasks)
                    except ValueError as bad:
                        problems.append((f"orders.orders[{k}]", order, str(bad)))
                        break
            else:
                problems.append((where, _MISSING, str(e)))
    problems += _check_search(study, kind, num_tasks)
    labels: dict[str, int] = {}
    for i, m in enumerate(study.methods):
        if m.name not in methods.METHODS:
            problems.append((f"methods[{i}].name", m.name, f"unknown method; available: {', '.join(methods.METHODS.names())}"))
            continue
        entry = methods.METHODS.get(m.name)
        method_kinds = getattr(entry.target, "kinds", ("classification",))
        if kind is not None and kind not in method_kinds:
            fitting = [n for n in methods.METHODS.names()
                       if kind in getattr(methods.METHODS.get(n).target, "kinds", ("classification",))]
            problems.append((f"methods[{i}].name", m.name, f"learns {method_kinds[0]} benchmarks but {bench.name} "
                             f"is a {kind}; methods for it: {', '.join(fitting)}"))
            continue
        problems += _check_params(f"methods[{i}].params", entry.params, m.params, allow_spaces=True)
        if m.display in labels:
            problems.append((f"methods[{i}].label", m.label, f"duplicates methods[{labels[m.display]}]; give each entry a distinct label"))
        labels[m.display] = i
    return problems


def _check_params(where: str, model: type[BaseModel], given: dict, allow_spaces: bool) -> list:
    problems = []
    allowed = list(model.model_fields)
    fixed: dict[str, Any] = {}
    spaces: dict[str, SearchSpace] = {}
    for key, value in given.items():
        if key not in model.model_fields:
            problems.append((f"{where}.{key}", _MISSING, f"unknown parameter; allowed: {', '.join(allowed)}"))
            continue
        try:
            space = as_search_space(value)
        except ValidationError as e:
            problems += [(f"{where}.{key}", value, _pydantic_problem(err)[2]) for err in e.errors()]
            continue
        if space is None:
            fixed[key] = value
        elif not allow_spaces:
            problems.append((f"{where}.{key}", value, "benchmark parameters take one value, not a search space"))
        else:
            spaces[key] = space
    if problems:
        return problems
    problems += _validate(where, model, fixed, "")
    if problems:
        return problems
    for key, space in spaces.items():
        for k, candidate in enumerate(space_candidates(space)):
            problems += _validate(where, model, {**fixed, key: candidate}, f"{key}.{_space_kind(space)}[{k}]")
    return problems


def _space_kind(space: SearchSpace) -> str:
    return next(iter(type(space).model_fields))


def _validate(where: str, model: type[BaseModel], values: dict, at: str) -> list:
    try:
        model.model_validate(values)
        return []
    except ValidationError as e:
        out = []
        for err in e.errors():
            field = _path(err["loc"])
            path = f"{where}.{at}" if at else (f"{where}.{field}" if field else where)
            out.append((path, err.get("input", _MISSING) if err["type"] != "missing" else _MISSING,
                        err["msg"].removeprefix("Value error, ")))
        return out


def _check_search(study: Study, kind: str | None, num_tasks: int | None) -> list[tuple[str, Any, str]]:
    """Combinations the search section cannot honour."""
    problems: list[tuple[str, Any, str]] = []
    search = study.search
    if search.scheduler.kind == "asha":
        if kind == "regression_stream":
            problems.append(("search.scheduler.kind", "asha", "a regression stream reports once, at its end: "
                             "nothing to stop early; use kind: none"))
        elif search.objective.kind != "mean_acc":
            problems.append(("search.scheduler.kind", "asha",
                             f"ASHA compares single trials by their accuracy on the tasks seen so far, a per-order "
                             f"proxy for mean ACC; objective {search.objective.kind} needs every order's final row, "
                             "which no early rung approximates: use objective kind mean_acc, or scheduler kind none"))
    if search.final_orders is not None:
        if kind == "regression_stream":
            problems.append(("search.final_orders", _MISSING, "a regression stream has no task orders; remove it"))
        elif num_tasks is not None and kind == "classification" and study.orders is not None:
            try:
                used = set(study.task_orders())
                listed = _orders_of(search.final_orders, num_tasks)
            except ValueError as e:
                problems.append(("search.final_orders", _MISSING, str(e)))
            else:
                if not isinstance(search.final_orders, RandomOrders):
                    stale = [list(o) for o in listed if o in used]
                    if stale:
                        problems.append(("search.final_orders", stale[0], "this order is also a search order; the "
                                         "re-run must use orders the search never saw (searching and reporting on "
                                         "the same orders flatters the winner)"))
                elif not study.final_orders():
                    problems.append(("search.final_orders", _MISSING, "every permutation is already a search order; "
                                     "use fewer search orders"))
    return problems
