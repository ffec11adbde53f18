"""What every part of the study file shares: strict models and one error shape.

A bad file yields one StudyError listing each problem as
``field (got value): what is allowed``, and nothing runs.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


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


def field_path(loc: tuple) -> str:
    from orchestrator.study.orders import ORDER_KINDS  # a call-time import: orders.py builds on Strict

    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ORDER_KINDS and out == "orders":
            continue  # discriminated-union tag, not a user-visible key
        else:
            out += f".{part}" if out else str(part)
    return out


def pydantic_problem(err: dict) -> tuple[str, Any, str]:
    from orchestrator.study.orders import ORDER_KINDS

    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required but missing"
    if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        msg = f"orders.kind must be one of {', '.join(ORDER_KINDS)}"
    value = err.get("input", _MISSING)
    if err["type"] in ("missing", "model_type") or isinstance(value, dict):
        value = _MISSING
    return field_path(err["loc"]), value, msg
