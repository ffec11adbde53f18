"""``--configs-from OTHER``: reuse the configs another study chose (Cha & Cho, arXiv 2403.09066: tune on one
benchmark, evaluate on another).

OTHER is another study's results directory (``results/<study>/``) or its ``summary.json``. Each method entry of
this study whose label is in OTHER's ``best`` gets the winner's full params (from OTHER's ``configs``): fixed
values, no search spaces, so the entry becomes one fixed config. Labels OTHER does not know stay as they are.
A label whose method differs is an error. This works on the raw study mapping, before validation, so
``clorch validate --configs-from`` checks exactly what ``clorch run --configs-from`` would run.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from orchestrator.study.base import _MISSING, StudyError

FIX = ("give the results directory of a finished `clorch run` (results/<study>/) or its summary.json")


def read_summary(other: str | Path) -> tuple[Path, dict[str, Any]]:
    """(path of the summary.json, its content); StudyError naming the path and the fix otherwise."""
    path = Path(other)
    if path.is_dir() or (not path.exists() and path.suffix != ".json"):  # results/<study>/
        path = path / "summary.json"
    where = "--configs-from"
    if not path.is_file():
        raise StudyError(str(other), [(where, _MISSING, f"{path}: no such file; {FIX}")])
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StudyError(str(other), [(where, _MISSING, f"{path}: not a readable summary.json ({e}); {FIX}")]) from None
    if not isinstance(summary, dict) or not isinstance(summary.get("best"), dict) or not summary["best"]:
        raise StudyError(str(other), [(where, _MISSING, f"{path}: has no `best` configs (did that study run any trial to "
                                                        f"completion?); {FIX}")])
    if not isinstance(summary.get("configs"), list):
        raise StudyError(str(other), [(where, _MISSING, f"{path}: has no `configs`; {FIX}")])
    return path, summary


def apply_configs_from(raw: dict[str, Any], other: str | Path, source: str = "<study>") -> tuple[dict, dict]:
    """(a copy of ``raw`` with the reused entries' params replaced, what was reused).

    What was reused: {path, study, benchmark, configs: {label: OTHER's config id}, absent: [labels kept as is]}.
    """
    path, summary = read_summary(other)
    configs = {c.get("config_id"): c for c in summary["configs"] if isinstance(c, dict)}
    out = copy.deepcopy(raw)
    entries = out.get("methods")
    if not isinstance(entries, list):
        return out, _info(path, summary, {}, [])
    reused: dict[str, str] = {}
    absent: list[str] = []
    problems = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry:
            continue  # validation will name the problem
        label = entry.get("label") or entry["name"]
        best = summary["best"].get(label)
        if best is None:
            absent.append(label)
            continue
        config = configs.get(best.get("config_id"))
        if config is None:
            problems.append((f"methods[{i}]", label, f"{path}: best[{label}] names config "
                             f"{best.get('config_id')!r}, which its configs lack; {FIX}"))
            continue
        if config.get("method") != entry["name"]:
            problems.append((f"methods[{i}].name", entry["name"], f"label {label!r} is method "
                             f"{config.get('method')!r} in {path}: give this entry another label, or the same method"))
            continue
        entry["params"] = copy.deepcopy(config.get("params") or {})
        reused[label] = config["config_id"]
    if problems:
        raise StudyError(source, problems)
    return out, _info(path, summary, reused, absent)


def _info(path: Path, summary: dict, reused: dict[str, str], absent: list[str]) -> dict[str, Any]:
    bench = summary.get("benchmark")
    return {"path": str(path), "study": summary.get("study"),
            "benchmark": bench.get("name") if isinstance(bench, dict) else bench,
            "configs": reused, "absent": absent}


def describe(info: dict[str, Any]) -> str:
    """The line printed by run and validate: what was reused, and which labels were not in OTHER."""
    reused = ", ".join(f"{label} ({cid})" for label, cid in info["configs"].items()) or "none"
    line = (f"configs from study {info['study']} (benchmark {info['benchmark']}, {info['path']}): "
            f"fixed {reused}")
    if info["absent"]:
        line += f"; not in {info['study']}, kept as they are: {', '.join(info['absent'])}"
    return line


