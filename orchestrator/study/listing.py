"""``clorch list``: the shared parameter components once, the backbones, then every method
(its own fields and the components it takes) and benchmark; ``clorch list NAME``: one of them."""
from __future__ import annotations

import json
import typing
from typing import Iterable

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import datasets
import methods
from methods.backbones import BACKBONE_ACTIVATIONS, BACKBONES
from methods.components import Component, component_classes


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


def _field_line(name: str, field, indent: str) -> str:
    c = _constraints(field)
    desc = field.description or ""
    default = "required" if field.default is PydanticUndefined and field.default_factory is None \
        else repr(field.get_default(call_default_factory=True))
    return (f"{indent}{field.alias or name}: {_type_name(field.annotation)} = {default}"
            + (f"  [{c}]" if c else "") + (f"  # {desc}" if desc else ""))


def describe_params(model: type[BaseModel], indent: str = "    ") -> list[str]:
    """Every field of ``model``, one line each (a benchmark's params, a model without components)."""
    return [_field_line(name, field, indent) for name, field in model.model_fields.items()]


# ---------------------------------------------------------------- components
def _shared_of(model: type[BaseModel]) -> dict[str, list[type[Component]]]:
    """field -> the shared component classes it accepts (a method's narrowed variants mapped to theirs)."""
    out = {}
    for name, field in model.model_fields.items():
        classes = component_classes(field.annotation)
        if classes:
            out[name] = [c.shared() for c in classes]
    return out


def describe_kind(classes: list[type[Component]], indent: str = "  ", header: str | None = None) -> list[str]:
    """A component kind (network; or every optimizer) with its fields, each field once.

    In a tagged kind a field several tags share in the same form is one line
    followed by the tags that have it; one that differs gets a line per form.
    ``header``: the first line instead of the kind's own.
    """
    kind = classes[0].kind
    tagged = [c for c in classes if c.tag is not None]
    if not tagged:
        doc = (classes[0].__doc__ or "").strip().splitlines()
        lines = [header or f"{indent}{kind}" + (f" — {doc[0]}" if doc else "")]
        return lines + describe_params(classes[0], indent + "  ")
    lines = [header or f"{indent}{kind}: {{name: {' | '.join(c.tag for c in tagged)}, ...}}"]
    forms: dict[str, list[str]] = {}
    for c in tagged:
        for name, field in c.model_fields.items():
            if name != "name":
                forms.setdefault(_field_line(name, field, indent + "  "), []).append(c.tag)
    every = len(tagged)
    return lines + [line if len(tags) == every else f"{line}  ({', '.join(tags)})" for line, tags in forms.items()]


def _overrides(cls: type[Component]) -> list[str]:
    """``lr = 0.001``: defaults a method's variant of a shared component changes."""
    base = cls.shared()
    out = []
    for name, field in cls.model_fields.items():
        mine, theirs = field.get_default(call_default_factory=True), base.model_fields[name].get_default(
            call_default_factory=True)
        if mine != theirs:
            out.append(f"{name} = {mine!r}")
    return out


def _component_fields(model: type[BaseModel]) -> list[tuple[str, str, str | None, list[str]]]:
    """(field, what it accepts, its default's name, defaults this method changes) per component field."""
    out = []
    for name, field in model.model_fields.items():
        classes = component_classes(field.annotation)
        if not classes:
            continue
        tagged = [c.tag for c in classes if c.tag is not None]
        accepted = " | ".join(tagged) if tagged else classes[0].kind
        if typing.get_origin(field.annotation) is list:
            accepted = f"list[{accepted}]"
        default = field.get_default(call_default_factory=True)
        shown = getattr(default, "name", None) or ("[]" if default == [] else None)
        changed = sorted({o for c in classes if c is not c.shared() for o in _overrides(c)})
        out.append((name, accepted, shown, changed))
    return out


def component_lines(model: type[BaseModel], indent: str = "    ") -> list[str]:
    """One line per component field of ``model``: the components it accepts, its default, changed defaults."""
    return [f"{indent}{name}: {accepted}" + (f" = {shown}" if shown else "")
            + (f"  ({', '.join(changed)} here)" if changed else "")
            for name, accepted, shown, changed in _component_fields(model)]


def component_summary(model: type[BaseModel]) -> str:
    """The components ``model`` takes, on one line: ``network, training, optimizer (sgd | adam = sgd), ...``."""
    parts = []
    for name, accepted, shown, changed in _component_fields(model):
        detail = [] if accepted == name else [accepted + (f" = {shown}" if shown else "")]
        detail += [f"{', '.join(changed)} here"] if changed else []
        parts.append(name + (f" ({'; '.join(detail)})" if detail else ""))
    return ", ".join(parts)


def _own_lines(model: type[BaseModel], indent: str = "    ") -> list[str]:
    return [_field_line(n, f, indent) for n, f in model.model_fields.items() if not component_classes(f.annotation)]


def _kinds(models: Iterable[type[BaseModel]]) -> dict[str, list[type[Component]]]:
    """kind -> its shared component classes, in first-seen order, over the given Params models."""
    out: dict[str, list[type[Component]]] = {}
    for model in models:
        for classes in _shared_of(model).values():
            for c in classes:
                if c not in out.setdefault(c.kind, []):
                    out[c.kind].append(c)
    return out


def _backbone_lines(indent: str = "  ") -> list[str]:
    return [f"{indent}{name} (activation: {', '.join(BACKBONE_ACTIVATIONS.get(name, ('relu',)))})"
            for name in BACKBONES]


# ---------------------------------------------------------------- the listings
def describe_one(name: str) -> str:
    """One method (its own fields, then each component it takes with that component's fields) or benchmark."""
    if name in methods.METHODS.names():
        e = methods.METHODS.get(name)
        out = [f"method {name} — {e.summary}{_origin(e)}"]
        own = _own_lines(e.params, "  ")
        if own:
            out += ["own parameters:"] + own
        headers = component_lines(e.params, "")
        fields = [(n, f) for n, f in e.params.model_fields.items() if component_classes(f.annotation)]
        if fields:
            out.append("components (field: accepted = default), each with its fields:")
        for header, (field, info) in zip(headers, fields):
            out += describe_kind(component_classes(info.annotation), "  ", header=f"  {header}")
        space = getattr(e.params, "search_space", None)
        if space:  # a method's suggested search space: paste under the method's params in a study
            out.append(f"search space (suggested; merge into the method's params): {json.dumps(space)}")
        return "\n".join(out)
    if name in datasets.BENCHMARKS.names():
        e = datasets.BENCHMARKS.get(name)
        return "\n".join([f"benchmark {name} — {e.summary}{_origin(e)}"] + describe_params(e.params, "  "))
    raise datasets.RegistryError(f"no method or benchmark named {name!r}; methods: {', '.join(methods.METHODS.names())}; "
                   f"benchmarks: {', '.join(datasets.BENCHMARKS.names())}")


def describe_all(names: Iterable[str] | None = None) -> str:
    """Everything (``names`` None), or ``describe_one`` of each of ``names``."""
    if names is not None:
        return "\n\n".join(describe_one(n) for n in names)
    entries = [methods.METHODS.get(n) for n in methods.METHODS.names()]
    out = ["components (a method's params take them as fields; `clorch list NAME` shows one method's):"]
    for classes in _kinds(e.params for e in entries).values():
        out += describe_kind(classes)
    out.append("backbones (network.backbone):")
    out += _backbone_lines()
    out.append("methods:")
    for e in entries:
        out.append(f"  {e.name} — {e.summary}{_origin(e)}")
        takes = component_summary(e.params)
        if takes:
            out.append(f"    components: {takes}")
        out += _own_lines(e.params)
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
    """Only the named methods or benchmarks (``clorch list NAME ...``); an unknown name lists what exists."""
    return describe_all(names)
