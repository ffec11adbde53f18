"""Reading a study file: YAML, ``--set key.path=value`` overrides, then validation.

``load_study`` raises StudyError and nothing else, so the CLI prints one
message and exits 2 before anything is started or written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.study.base import _MISSING, StudyError, pydantic_problem
from orchestrator.study import plugins
from orchestrator.study.checks import check_study
from orchestrator.study.schema import Study


def load_study(path: str | Path, overrides: list[str] = (), configs_from: str | Path | None = None) -> Study:
    """Read, override (``key.sub=value``), reuse another study's configs (``configs_from``, see
    orchestrator/study/configs_from.py), validate. Raises StudyError, nothing else."""
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
    info = None
    if configs_from is not None:
        from orchestrator.study.configs_from import apply_configs_from

        raw, info = apply_configs_from(raw, configs_from, source)
    study = parse_study(raw, source, Path(path).resolve().parent)
    study._configs_from = info
    return study


def parse_study(raw: dict, source: str = "<study>", base_dir: Path | None = None) -> Study:
    """Validate a study mapping; its plugins (relative to ``base_dir``, default the current folder) load first."""
    refs = _load_plugins(raw, source, base_dir or Path.cwd())
    try:
        study = Study.model_validate(raw)
    except ValidationError as e:
        raise StudyError(source, [pydantic_problem(err) for err in e.errors()]) from None
    study._plugin_refs = refs
    problems = check_study(study)
    if problems:
        raise StudyError(source, problems)
    return study


def _load_plugins(raw: dict, source: str, base_dir: Path) -> list:
    """Import the study's plugins before anything reads the registries; one StudyError if one cannot load."""
    entries = raw.get("plugins", [])
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise StudyError(source, [("plugins", entries, "a list of paths (my_methods.py, relative to the study file) "
                                                      "or module names (my_pkg.methods)")])
    try:
        return plugins.load(entries, base_dir)
    except plugins.PluginError as e:
        raise StudyError(source, [("plugins", _MISSING, str(e))]) from None


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
