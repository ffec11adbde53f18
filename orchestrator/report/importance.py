"""For a search: which searched parameter mattered (Optuna's importances) and each one against the objective.

Per searched label, the configs that count are those of the search-progress
figure (orchestrator.report.figures.config_progress: every trial completed,
a finite objective, the study's own rule on the selection split). Their
searched values and objectives become the trials of an in-memory Optuna
study, and ``optuna.importance.get_param_importances`` (fANOVA, seeded) gives
each parameter's share of the objective's variance. The search space is not
in the results, so each parameter's distribution is rebuilt from the values
tried: numbers over their range (log scale when all are positive and span a
factor of 10 or more, integers as integers), anything else (a list of
widths, a name) as categories. Importances need 3 configs or more with an
objective and a parameter that took 2 values or more; otherwise "n/a".
"""
from __future__ import annotations

import math
import warnings
from typing import Any

from matplotlib.figure import Figure

from orchestrator.report.config_result import ConfigResult
from orchestrator.report.figures import config_progress
from orchestrator.report.fmt import num
from orchestrator.report.tables import Table
from orchestrator.study.schema import ObjectiveSpec

MIN_CONFIGS = 3

CAPTION = ("Each searched parameter against the objective (the study's rule on the selection split), one "
           "point per config of the search whose every trial completed; the ringed point is the selected "
           "config. A log axis where the values tried span a factor of 10 or more.")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def scale(values: list[Any]) -> str:
    """How a parameter's values are placed: "log", "linear", "int" or "categorical"."""
    if not values or not all(_is_number(v) for v in values):
        return "categorical"
    if all(isinstance(v, int) for v in values):
        return "int"
    positive = all(v > 0 for v in values)
    return "log" if positive and max(values) / min(values) >= 10 else "linear"


def search_points(results: list[ConfigResult], label: str, objective: ObjectiveSpec | None
                  ) -> tuple[list[ConfigResult], list[float], list[str]]:
    """(eligible configs of ``label``, their objectives, the searched parameters every one of them has)."""
    values = {name: v for _, v, name, lab in config_progress(results, objective) if lab == label}
    configs = [r for r in results if r.config.label == label and r.name in values]
    params = [k for k in dict.fromkeys(k for r in configs for k in r.config.searched)
              if all(k in r.config.searched for r in configs)]
    return configs, [values[r.name] for r in configs], params


def _distribution(values: list[Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = scale(values)
    if kind == "categorical":
        return CategoricalDistribution(sorted({str(v) for v in values})), [str(v) for v in values]
    if kind == "int":
        return IntDistribution(min(values), max(values)), list(values)
    return FloatDistribution(float(min(values)), float(max(values)), log=kind == "log"), [float(v) for v in values]


def importances(configs: list[ConfigResult], objectives: list[float], params: list[str]
                ) -> tuple[dict[str, float] | None, str]:
    """(parameter -> importance, summing to 1; "") or (None, why not)."""
    if len(configs) < MIN_CONFIGS:
        return None, f"n/a: {len(configs)} config(s) with an objective (importances need {MIN_CONFIGS})"
    varied = [k for k in params if len({repr(r.config.searched[k]) for r in configs}) > 1]
    if not varied:
        return None, "n/a: no searched parameter took two values"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import optuna
        from optuna.trial import create_trial

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize")
        columns = {k: _distribution([r.config.searched[k] for r in configs]) for k in varied}
        for i, value in enumerate(objectives):
            study.add_trial(create_trial(params={k: columns[k][1][i] for k in varied},
                                         distributions={k: columns[k][0] for k in varied}, value=float(value)))
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except (ValueError, RuntimeError) as e:  # e.g. every objective equal
            return None, f"n/a: Optuna could not compute them ({e})"
    return {k: float(v) for k, v in found.items()}, ""


def scatter(label: str, configs: list[ConfigResult], objectives: list[float], params: list[str],
            chosen_id: str | None, found: dict[str, float] | None, split: str) -> Figure:
    """One panel per searched parameter: its value against the objective, the selected config ringed."""
    cols = min(3, max(1, len(params)))
    rows = math.ceil(max(1, len(params)) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, k in zip(axes, params):
        values = [r.config.searched[k] for r in configs]
        kind = scale(values)
        if kind == "categorical":
            cats = sorted({str(v) for v in values})
            x = [cats.index(str(v)) for v in values]
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize=8)
        else:
            x = values
            if kind == "log":
                ax.set_xscale("log")
        ax.scatter(x, objectives, s=28, color="tab:blue", zorder=3)
        for xi, r, y in zip(x, configs, objectives):
            if r.config.config_id == chosen_id:
                ax.scatter([xi], [y], s=150, facecolors="none", edgecolors="black", zorder=4)
        share = f", importance {found[k]:.2f}" if found and k in found else ""
        ax.set_title(f"{k}{share}", fontsize=9)
        ax.set_xlabel(k)
        ax.set_ylabel(f"objective ({split})")
        ax.grid(alpha=0.3)
    for ax in axes[len(params):]:
        ax.set_visible(False)
    fig.suptitle(f"{label}: each searched parameter against the objective ({len(configs)} configs)")
    return fig


def analyse_searches(results: list[ConfigResult], labels: list[str], objective: ObjectiveSpec | None,
                     best: dict[str, Any]) -> list[dict[str, Any]]:
    """Per searched label: its eligible configs, objectives, parameters, importances (or why not), the chosen id."""
    out = []
    for label in labels:
        configs, objectives, params = search_points(results, label, objective)
        found, why = importances(configs, objectives, params) if params else (None, "n/a: no searched parameter")
        out.append({"label": label, "configs": configs, "objectives": objectives, "params": params,
                    "importances": found, "why": why, "chosen": (best.get(label) or {}).get("config_id")})
    return out


def table(analysed: list[dict[str, Any]]) -> Table:
    header = ["method", "parameter", "importance", "values tried", "configs"]
    cells, values = [], []
    for a in analysed:
        for k in a["params"]:
            tried = [r.config.searched[k] for r in a["configs"]]
            kind = scale(tried)
            if kind == "categorical":
                span = ", ".join(sorted({str(v) for v in tried}))
            else:
                span = f"{min(tried):.3g} – {max(tried):.3g}" + (" (log)" if kind == "log" else "")
            share = a["importances"].get(k) if a["importances"] else None
            cells.append([a["label"], k, num(share) if a["importances"] else a["why"], span, str(len(a["configs"]))])
            values.append([a["label"], k, share, kind, len(a["configs"])])
    return Table("importance", "Searched parameters: Optuna fANOVA importance (share of the objective's variance) "
                 "over the configs of each search.", header, cells,
                 ["label", "parameter", "importance", "scale", "configs"], values)

