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
        data = Path(path).read_bytes()
    except OSError as e:
        raise StudyError(source, [("", _MISSING, f"cannot read the study file: {e.strerror}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise StudyError(source, [("", _MISSING, f"the study file is {len(data):,} bytes, more than "
                                                 f"{MAX_FILE_BYTES:,}: a study lists methods, orders and seeds, not "
                                                 "data (a million seeds? use a few, or orders.count)")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StudyError(source, [("", _MISSING, f"not UTF-8 text (byte {e.start} is {data[e.start]:#04x}): a "
                                                 "study file is a YAML text file saved as UTF-8")]) from None
    raw = _safe_yaml(text, source, "")
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


MAX_FILE_BYTES = 1_000_000  # the biggest real studies (1000 explicit orders of 20 tasks) are ~100 kB
MAX_NODES = 2_000_000
"""A study (or a --set value) expands to at most this many YAML nodes: aliases (``&a``/``*a``) share nodes
when loaded, so a few hundred bytes can stand for billions of them (an alias bomb) that formatting or
validating would then walk one by one."""


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: the same YAML, ~4x faster


def _safe_yaml(text: str, source: str, where: str) -> Any:
    """``yaml.safe_load`` with one StudyError for bad YAML and for more than MAX_NODES expanded nodes."""
    try:
        value = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        shown = text if len(text) <= 60 else text[:57] + "..."
        what = f"not valid YAML ({shown!r}): " if where else "not valid YAML: "
        fix = "; quote the value or complete it, e.g. --set 'seeds=[0, 1]'" if where else ""
        raise StudyError(source, [(where, _MISSING, f"{what}{at}{getattr(e, 'problem', e)}{fix}")]) from None
    except RecursionError:
        raise StudyError(source, [(where, _MISSING, "YAML nested too deeply")]) from None
    count = expanded_nodes(value, MAX_NODES)
    if count > MAX_NODES:
        raise StudyError(source, [(where, _MISSING, f"the YAML expands to more than {MAX_NODES:,} nodes (aliases "
                                                    "*name repeat whole subtrees); write the values out, or "
                                                    "shorten them")])
    return value


def expanded_nodes(value: Any, limit: int) -> int:
    """Nodes of ``value`` with every shared (aliased) subtree counted each time it appears; stops past ``limit``."""
    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > 200:
            return limit + 1
        sizes[key] = limit + 1  # a cycle (``&a [*a]``) counts as too big
        total = 1
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        for child in children:
            total += size(child, depth + 1)
            if total > limit:
                break
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(value, 0)


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
    parsed = _safe_yaml(value, source, f"--set {key}") if value else None
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = parsed
    elif isinstance(node, dict):
        node[last] = parsed
    else:
        raise StudyError(source, [(f"--set {key}", value, f"{last!r} does not name a key or list index")])
