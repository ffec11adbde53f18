"""The checks that need the registries: parameters, orders against the task count, search combinations.

pydantic checks the file's structure (schema.py); these check what only the
method and benchmark registries know, with the same (field, value, message)
problem shape.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

import datasets
import methods
from orchestrator.study.base import _MISSING, field_path, pydantic_problem
from orchestrator.study.orders import ExplicitOrders, RandomOrders, check_permutation
from orchestrator.study.schema import (SearchSpace, Study, as_search_space, space_candidates, split_spaces, value_at,
                                       with_values)


def check_study(study: Study) -> list[tuple[str, Any, str]]:
    """Checks that need the registries. Returns problems; empty means runnable."""
    problems: list[tuple[str, Any, str]] = []
    NOTES.clear()
    WARNINGS.clear()
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
                        check_permutation(order, num_tasks)
                    except ValueError as bad:
                        problems.append((f"orders.orders[{k}]", order, str(bad)))
                        break
            else:
                problems.append((where, _MISSING, str(e)))
        problems += _check_orders(study, num_tasks)
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
        found = _check_params(f"methods[{i}].params", entry.params, m.params, allow_spaces=True)
        problems += found
        if not found and num_tasks is not None:
            _benchmark_notes(f"methods[{i}]", entry.params, m.params, bench)
            problems += _benchmark_problems(f"methods[{i}]", entry.params, m.params, bench)
        if m.display in labels:
            problems.append((f"methods[{i}].label", m.label, f"duplicates methods[{labels[m.display]}]; give each entry a distinct label"))
        labels[m.display] = i
    if study.baseline is not None and study.baseline not in {m.display for m in study.methods}:
        problems.append(("baseline", study.baseline, "names no method label; labels: "
                         + ", ".join(m.display for m in study.methods)))
    if num_tasks is not None and kind == "classification" and not problems:
        problems += _check_selection(study)
    if not problems:
        problems += _check_size(study)
    return problems


def _check_orders(study: Study, num_tasks: int) -> list[tuple[str, Any, str]]:
    """More random orders than permutations (silently fewer trials), or one explicit order listed twice."""
    import math

    spec = study.orders
    if isinstance(spec, RandomOrders):
        total = math.factorial(num_tasks) if num_tasks <= 20 else None
        if total is not None and spec.count > total:
            return [("orders.count", spec.count, f"{num_tasks} tasks have only {total} permutations; use count: "
                     f"{total} or fewer (or kind: explicit / latin_square to list them)")]
    if isinstance(spec, ExplicitOrders):
        seen: dict[tuple, int] = {}
        for k, order in enumerate(spec.orders):
            key = tuple(order)
            if key in seen:
                return [(f"orders.orders[{k}]", order, f"repeats orders.orders[{seen[key]}]; list each order once "
                         "(a repeated order adds no information on order spread)")]
            seen[key] = k
    return []


def planned_trials(study: Study) -> int:
    """Trials the study plans (configs x orders x seeds, plus final-order re-runs), counted, not listed."""
    import math

    from orchestrator.study.schema import Grid

    num_tasks = study.num_tasks if study.orders is not None else 1
    members = _order_count(study.orders, num_tasks) * len(study.seeds)
    total = 0
    searched = 0
    for m in study.methods:
        _, spaces = split_spaces(m.params)
        grids = [len(v.grid) for v in spaces.values() if isinstance(v, Grid)]
        others = len(spaces) - len(grids)
        if not spaces:
            configs = 1
        elif study.search.algorithm == "grid":
            configs = math.prod(grids) * (study.search.num_samples if others else 1)
        else:
            configs = study.search.num_samples
        searched += bool(spaces)
        total += configs * members
    if study.search.final_orders is not None and study.orders is not None:
        total += searched * _order_count(study.search.final_orders, num_tasks) * len(study.seeds)
    return total


def _order_count(spec, num_tasks: int) -> int:
    import math

    if spec is None:
        return 1
    if isinstance(spec, RandomOrders):
        return spec.count if num_tasks > 20 else min(spec.count, math.factorial(num_tasks))
    if isinstance(spec, ExplicitOrders):
        return len(spec.orders)
    return len(spec.generate(num_tasks)) if num_tasks <= 1000 else 2 * num_tasks


def _check_size(study: Study) -> list[tuple[str, Any, str]]:
    """A study too big to mean it: refused with the count before minutes of expanding and scheduling."""
    limit = study.search.max_trials
    try:
        n = planned_trials(study)
    except ValueError:
        return []
    if n <= limit:
        return []
    return [("search.max_trials", limit, f"the study plans {n} trials (configs x orders x seeds), more than "
             f"search.max_trials; shrink the grids, orders or seeds, or set search.max_trials: {n} to run it "
             "on purpose")]


def has_validation(params: BaseModel) -> bool:
    """A benchmark with a validation split: ``val_fraction`` > 0, or one that validates on its training set."""
    return bool(getattr(type(params), "validates_on_training_set", False)) or getattr(params, "val_fraction", 0) > 0


def chooses(study: Study) -> bool:
    """Whether anything in the study picks among configs or trials (a search space, Optuna, ASHA)."""
    return study.search.scheduler.kind == "asha" or any(split_spaces(m.params)[1] for m in study.methods)


def _check_selection(study: Study) -> list[tuple[str, Any, str]]:
    """Selection on validation needs a validation split; selection on test is allowed, loudly."""
    if not chooses(study):
        return []
    if study.search.selection == "test":
        WARNINGS.append("search.selection is test: configs are chosen on the test data their numbers are "
                        "reported on (optimistic); the report is marked 'selected on test'")
        return []
    params = study.benchmark_params()
    if has_validation(params):
        return []
    return [("benchmark.params.val_fraction", getattr(params, "val_fraction", _MISSING),
             "this study searches (selection on validation, search.selection: val) but the benchmark has no "
             "validation split; set benchmark.params.val_fraction > 0 (e.g. 0.1), or search.selection: test "
             "to choose on test (optimistic, for old comparisons)")]


def _benchmark_notes(where: str, model: type[BaseModel], given: dict, bench) -> None:
    """A method's own remarks on the benchmark it is given (``Params.benchmark_notes``, optional)."""
    hook = getattr(model, "benchmark_notes", None)
    if hook is None:
        return
    fixed, _ = split_spaces(given)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        params = model.model_validate(fixed)
    entry = datasets.BENCHMARKS.get(bench.name)
    for note in params.benchmark_notes(bench.name, entry.params.model_validate(bench.params)):
        text = f"{where}: {note}"
        if text not in NOTES:
            NOTES.append(text)


def _benchmark_problems(where: str, model: type[BaseModel], given: dict, bench) -> list[tuple[str, Any, str]]:
    """What a method cannot do on this benchmark (``Params.benchmark_problems``, optional): every trial would fail.

    The hook gets (benchmark name, benchmark params, setting); the setting is the study's, else the
    benchmark params' ``default_setting`` where they know it without loading, else None."""
    hook = getattr(model, "benchmark_problems", None)
    if hook is None:
        return []
    fixed, spaces = split_spaces(given)
    entry = datasets.BENCHMARKS.get(bench.name)
    bench_params = entry.params.model_validate(bench.params)
    setting = bench.setting or getattr(bench_params, "default_setting", None)
    out = []
    candidates = [fixed] + [with_values(fixed, {path: c}) for path, space in spaces.items()
                            for c in space_candidates(space)]
    for values in candidates:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                params = model.model_validate(values)
            except ValidationError:
                continue
        import inspect

        takes_setting = len(inspect.signature(params.benchmark_problems).parameters) >= 3
        found = (params.benchmark_problems(bench.name, bench_params, setting) if takes_setting
                 else params.benchmark_problems(bench.name, bench_params))
        for message in found:
            problem = (where, _MISSING, message)
            if problem not in out:
                out.append(problem)
    return out


def _check_params(where: str, model: type[BaseModel], given: dict, allow_spaces: bool) -> list:
    """Validate ``given`` against ``model``; every value of every search space (at any leaf) must be valid too."""
    problems = _malformed_spaces(where, given)
    if problems:
        return problems
    fixed, spaces = split_spaces(given)
    if spaces and not allow_spaces:
        return [(f"{where}.{path}", value_at(given, path), "benchmark parameters take one value, not a search space")
                for path in spaces]
    problems += _validate(where, model, fixed, "")
    if problems:
        return problems
    for path, space in spaces.items():
        for k, candidate in enumerate(space_candidates(space)):
            problems += _validate(where, model, with_values(fixed, {path: candidate}),
                                  f"{path}.{_space_kind(space)}[{k}]")
    return problems


def _malformed_spaces(where: str, value: Any, path: str = "") -> list:
    """A dict that names a search space kind but is not a valid one (``uniform: [2, 1]``), at any depth."""
    if path:
        try:
            if as_search_space(value) is not None:
                return []
        except ValidationError as e:
            return [(f"{where}.{path}", value, pydantic_problem(err)[2]) for err in e.errors()]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out = []
    for key, sub in items:
        out += _malformed_spaces(where, sub, f"{path}.{key}" if path else str(key))
    return out


def _space_kind(space: SearchSpace) -> str:
    return next(iter(type(space).model_fields))


def _validate(where: str, model: type[BaseModel], values: dict, at: str) -> list:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        try:
            model.model_validate(values)
            errors = []
        except ValidationError as e:
            errors = e.errors()
    for w in caught:  # a method's deprecated (flat) keys: a note, not a problem
        if issubclass(w.category, DeprecationWarning) and _from_methods(w.filename):
            note = f"{where}: {w.message}"
            if note not in NOTES:
                NOTES.append(note)
    out = []
    for err in errors:
        field = field_path(_without_tags(err["loc"]))
        path = f"{where}.{at}" if at else (f"{where}.{field}" if field else where)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            ctx = err.get("ctx", {})
            message = f"{ctx.get('discriminator', 'name')} must be one of {ctx.get('expected_tags', '?')}"
        if err["type"] == "extra_forbidden":
            fields = list(model.model_fields) if len(err["loc"]) == 1 else []
            message = "unknown parameter" + (f"; allowed: {', '.join(fields)}" if fields else "")
        out.append((path, err.get("input", _MISSING) if err["type"] not in ("missing", "extra_forbidden") else _MISSING,
                    message))
    return out


def _without_tags(loc: tuple) -> tuple:
    """Drop the union tag pydantic puts in an error's location (``optimizer.sgd.lr`` -> ``optimizer.lr``)."""
    from methods.components import Component

    def tags(klass) -> set[str]:
        out = {klass.tag} if klass.tag else set()
        for sub in klass.__subclasses__():
            out |= tags(sub)
        return out

    known = tags(Component)
    return tuple(part for i, part in enumerate(loc) if not (i > 0 and isinstance(part, str) and part in known
                                                            and isinstance(loc[i - 1], str)))


NOTES: list[str] = []
"""Notes of the last ``check_study`` (old flat method keys, a method's remarks on its benchmark), printed by
validate, run and submit."""
WARNINGS: list[str] = []
"""Warnings of the last ``check_study`` (selection on test), printed the same way."""


def _from_methods(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(Path(methods.__file__).resolve().parent)


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
    k = search.first_tasks
    if k is not None:
        if kind == "regression_stream":
            problems.append(("search.protocol.first_tasks", k, "a regression stream has no tasks to truncate; "
                             "use protocol: full"))
        elif num_tasks is not None and not 1 <= k < num_tasks:
            problems.append(("search.protocol.first_tasks", k, f"must be at least 1 and less than the number of "
                             f"tasks ({num_tasks}): the search learns the first k tasks of each order, the winner "
                             "then runs on all of them"))
    if search.final_orders is not None:
        if kind == "regression_stream":
            problems.append(("search.final_orders", _MISSING, "a regression stream has no task orders; remove it"))
        elif num_tasks is not None and kind == "classification" and study.orders is not None:
            try:
                used = set(study.task_orders())
                listed = search.final_orders.generate(num_tasks)
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
