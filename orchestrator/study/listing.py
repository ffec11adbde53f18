"""``clorch list``: every method and benchmark with its parameters, types and defaults."""
from __future__ import annotations

import typing

from pydantic import BaseModel

import datasets
import methods


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    text = getattr(annotation, "__name__", None) or str(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0]) + " (positive)"
    return text.replace("typing.", "")


def _constraints(field) -> str:
    parts = []
    for m in field.metadata:
        for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, key, None) is not None:
                parts.append(f"{sym}{getattr(m, key)}")
    return ", ".join(parts)


def describe_params(model: type[BaseModel], indent: str = "    ") -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        c = _constraints(field)
        desc = field.description or ""
        lines.append(f"{indent}{name}: {_type_name(field.annotation)} = {field.default!r}"
                     + (f"  [{c}]" if c else "") + (f"  # {desc}" if desc else ""))
    return lines


def describe_all() -> str:
    out = ["methods:"]
    for name in methods.METHODS.names():
        e = methods.METHODS.get(name)
        out.append(f"  {name} — {e.summary}{_origin(e)}")
        out += describe_params(e.params)
    out.append("benchmarks:")
    for name in datasets.BENCHMARKS.names():
        e = datasets.BENCHMARKS.get(name)
        out.append(f"  {name} — {e.summary}{_origin(e)}")
        out += describe_params(e.params)
    return "\n".join(out)


def _origin(entry) -> str:
    """`` (plugin: my_methods)`` for an entry registered outside clorch's own packages."""
    top = (entry.module or "").split(".")[0]
    return "" if top in ("methods", "datasets", "") else f"  (plugin: {entry.module})"


def describe_names(names: list[str]) -> str:
    """Only the named methods or benchmarks; an unknown name is a KeyError listing what exists."""
    out = []
    for name in names:
        if name in methods.METHODS:
            e = methods.METHODS.get(name)
            out += [f"method {name} — {e.summary}{_origin(e)}", *describe_params(e.params)]
        elif name in datasets.BENCHMARKS:
            e = datasets.BENCHMARKS.get(name)
            out += [f"benchmark {name} — {e.summary}{_origin(e)}", *describe_params(e.params)]
        else:
            raise datasets.RegistryError(f"no method or benchmark named {name!r}; methods: "
                                         f"{', '.join(methods.METHODS.names())}; benchmarks: "
                                         f"{', '.join(datasets.BENCHMARKS.names())}")
    return "\n".join(out)
