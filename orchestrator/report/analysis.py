"""Trial records -> one ``ConfigResult`` per method config: what the report's table and figures show.

The point statistics are orchestrator.results.summary.config_entry's (the same numbers
as summary.json and the config runs in MLflow); this module only groups the
records by config, gives each config a short unique name, and adds what the
summary does not have: bootstrap intervals over orders for ACC and AOPD, and
the position effect.
"""
from __future__ import annotations

from typing import Any


from orchestrator.report import bootstrap
from orchestrator.study.schema import Config
from orchestrator.report.config_result import ConfigResult
from orchestrator.report.position import position_effect
from orchestrator.results.summary import config_entry
from orchestrator.results.records import TrialRecord, as_records


def configs_from_records(records: list[TrialRecord], summary: dict[str, Any] | None = None) -> list[Config]:
    """The configs the records belong to, in the study's order when a summary gives it.

    ``searched`` (the parameters a search varied) comes from the summary; without
    one it is the parameters that differ between configs of the same label.
    """
    first: dict[str, TrialRecord] = {}
    for r in records:
        first.setdefault(r.config_id, r)
    known = {e["config_id"]: e for e in (summary or {}).get("configs", [])}
    ids = [cid for cid in known if cid in first]
    ids += sorted((cid for cid in first if cid not in known), key=lambda c: (first[c].label, c))
    by_label: dict[str, list[dict[str, Any]]] = {}
    for cid in ids:
        by_label.setdefault(first[cid].label, []).append(first[cid].params)
    configs = []
    for cid in ids:
        r = first[cid]
        if cid in known:
            searched = dict(known[cid].get("searched") or {})
        else:
            siblings = by_label[r.label]
            searched = {k: v for k, v in r.params.items() if any(p.get(k) != v for p in siblings)}
        configs.append(Config(cid, r.label, r.method, r.params, searched))
    return configs


def display_names(configs: list[Config]) -> list[str]:
    """The label when it has one config; "label #k" (k from 1) for the configs of a search."""
    counts: dict[str, int] = {}
    for c in configs:
        counts[c.label] = counts.get(c.label, 0) + 1
    seen: dict[str, int] = {}
    names = []
    for c in configs:
        seen[c.label] = seen.get(c.label, 0) + 1
        names.append(c.label if counts[c.label] == 1 else f"{c.label} #{seen[c.label]}")
    return names


def analyse(records: list[TrialRecord | dict[str, Any]], summary: dict[str, Any] | None = None,
            n_resamples: int = bootstrap.DEFAULT_RESAMPLES, confidence: float = bootstrap.DEFAULT_CONFIDENCE,
            seed: int = bootstrap.DEFAULT_SEED) -> list[ConfigResult]:
    """One ConfigResult per config, in the study's order."""
    records = as_records(records)
    configs = configs_from_records(records, summary)
    kw = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    selection = (summary or {}).get("selection", "val")
    out = []
    for config, name in zip(configs, display_names(configs)):
        mine = [r for r in records if r.config_id == config.config_id]
        done = [r for r in mine if r.completed]
        matrices = [r.matrix() for r in done]
        orders = [r.order for r in done]
        nan = (float("nan"), float("nan"))
        out.append(ConfigResult(
            config=config, name=name, entry=config_entry(config, mine, selection=selection), records=mine,
            matrices=matrices, orders=orders,
            acc_ci=bootstrap.acc_ci(matrices, orders, **kw) if done else nan,
            aopd_ci=bootstrap.aopd_ci(matrices, orders, **kw) if done else nan,
            position=position_effect(matrices, orders, **kw) if done else None))
    return out


def searches(results: list[ConfigResult]) -> list[str]:
    """Labels (methods as the study names them) that have more than one config: the searches."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.config.label] = counts.get(r.config.label, 0) + 1
    return [label for label, n in counts.items() if n > 1]
