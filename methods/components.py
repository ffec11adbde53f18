"""Typed parameter components, and the one-release bridge from the old flat keys.

A method's ``Params`` composes the components it accepts as fields (in the
spirit of torchtune's components: each config lives beside its code):

    network       methods/backbones.py      NetworkParams {backbone, hidden, channels, activation}
    training      methods/loop.py           LoopParams {epochs, batch_size, reset_optimizer}
    optimizer     methods/optimizers.py     sgd | adam | rmsprop | idbd (tagged by ``name``)
    lr_scheduler  methods/lot_scheduler.py  none | lot (tagged by ``name``)
    penalties     methods/penalties.py      a list of wasserstein | l2 entries (tagged by ``name``)

A component is a ``Component`` subclass: ``kind`` says which of the above it
is and ``tag`` its name within a tagged union (None for network, training).
``components_of(Params)`` reads a Params model's fields and says which
components each one accepts, so ``clorch list`` can print each shared
component once and every method with only its own fields.

Old flat keys (``lr``, ``epochs``, ``lot_every``, ``l2_lambda``...) keep
validating for one release: each component module registers a migration
(``register_flat_keys``), and ``migrate_flat_keys(Params, data)``, called from
a ``model_validator(mode="before")``, nests them, emitting a
``FlatKeyDeprecation`` per key.
"""
from __future__ import annotations

import typing
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class FlatKeyDeprecation(DeprecationWarning):
    """A method parameter was given as an old flat key (``lr: 0.1``) rather than in its component."""


class Component(BaseModel):
    """Base of every parameter component: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    kind: ClassVar[str] = ""
    """network | training | optimizer | lr_scheduler | penalty."""
    tag: ClassVar[str | None] = None
    """The ``name`` value of a tagged component (optimizer sgd, ...); None for network/training."""

    @classmethod
    def label(cls) -> str:
        """How a listing names it: ``network``, ``optimizer sgd``, ``penalty l2``."""
        return cls.kind if cls.tag is None else f"{cls.kind} {cls.tag}"

    @classmethod
    def shared(cls) -> type[Component]:
        """The shared component this one specialises: the nearest class that sets its own ``tag`` (or
        ``kind``, untagged). A method that narrows a default (HALRP's adam lr) subclasses without
        setting either, and a listing prints the shared one once and the method's changed defaults."""
        for klass in cls.__mro__:
            if "tag" in vars(klass) or ("kind" in vars(klass) and klass.tag is None):
                return klass
        return cls


# ---------------------------------------------------------------- reading a Params model
def component_classes(annotation: Any) -> list[type[Component]]:
    """Every Component class inside a field annotation (unions, Annotated, lists), in order."""
    if isinstance(annotation, type) and issubclass(annotation, Component):
        return [annotation]
    out: list[type[Component]] = []
    for arg in typing.get_args(annotation):
        for c in component_classes(arg):
            if c not in out:
                out.append(c)
    return out


def components_of(model: type[BaseModel]) -> dict[str, list[str]]:
    """``{field: [component labels]}`` for the fields of ``model`` that hold components.

    e.g. finetune: ``{"network": ["network"], "training": ["training"],
    "optimizer": ["optimizer sgd", "optimizer adam", ...], "lr_scheduler": [...], "penalties": [...]}``.
    """
    out = {}
    for name, field in model.model_fields.items():
        classes = component_classes(field.annotation)
        if classes:
            out[name] = [c.label() for c in classes]
    return out


def own_fields(model: type[BaseModel]) -> list[str]:
    """The fields of ``model`` that are not components: the method's own parameters."""
    return [name for name, field in model.model_fields.items() if not component_classes(field.annotation)]


# ---------------------------------------------------------------- flat keys (one release)
Migration = Callable[[type[BaseModel], dict], dict]
FLAT_MIGRATIONS: dict[str, Migration] = {}
"""component field name -> migration of its flat keys (registered by the component's module)."""


def register_flat_keys(field: str, migration: Migration) -> None:
    FLAT_MIGRATIONS[field] = migration


def migrate_flat_keys(model: type[BaseModel], data: Any) -> Any:
    """``data`` with the old flat keys of every component ``model`` has nested into it.

    Keys of components ``model`` does not take are left alone, so pydantic
    rejects them as unknown (extra=forbid).
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for field, migrate in FLAT_MIGRATIONS.items():
        if field in model.model_fields:
            out = migrate(model, out)
    return out


def render(value: Any) -> str:
    """A value the way a study file would spell it (flow-style YAML)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def deprecated(key: str, field: str, replacement: Any, note: str = "") -> None:
    warnings.warn(f"flat key {key!r} is deprecated (one release): write {field}: {render(replacement)}"
                  + (f" ({note})" if note else ""), FlatKeyDeprecation, stacklevel=4)


def as_dict(value: Any) -> dict | None:
    """A component given as a model, a dict or nothing, as a dict to merge flat keys into."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True)
    if isinstance(value, dict):
        return dict(value)
    return value  # something else: left for pydantic to reject


def _conflict(key: str, field: str, sub: str, old: Any, new: Any) -> ValueError:
    return ValueError(f"flat key {key!r}={render(new)} contradicts {field}.{sub}={render(old)}; "
                      f"keep one of them (write {field}: {{{sub}: ...}})")


def nest_keys(field: str, keys: dict[str, str]) -> Migration:
    """A migration moving flat ``keys`` (flat name -> component name) into the ``field`` dict."""

    def migrate(model: type[BaseModel], data: dict) -> dict:
        present = [k for k in keys if k in data]
        if not present:
            return data
        current = as_dict(data.get(field)) or {}
        if not isinstance(current, dict):
            return data
        for k in present:
            v, sub = data.pop(k), keys[k]
            if sub in current and current[sub] != v:
                raise _conflict(k, field, sub, current[sub], v)
            current[sub] = v
        for k in present:
            deprecated(k, field, current)
        data[field] = current
        return data

    return migrate


def default_tag(model: type[BaseModel], field: str) -> str | None:
    default = model.model_fields[field].get_default(call_default_factory=True)
    return getattr(default, "name", None)


def tagged_keys(field: str, keys: dict[str, str], tags: dict[str, set[str]],
                old_defaults: dict[str, Any]) -> Migration:
    """A migration for a tagged component (optimizer, lr_scheduler).

    ``field: "adam"`` (a string) becomes ``{name: adam}``; flat ``keys`` (flat
    name -> component field) join it. A key the chosen tag has no field for is
    dropped when it holds its old default, else an error naming the fix.
    ``tags``: tag -> its fields.
    """

    def migrate(model: type[BaseModel], data: dict) -> dict:
        selector = data.get(field)
        present = [k for k in keys if k in data]
        if not present and isinstance(selector, dict) and "name" not in selector:
            data[field] = {"name": default_tag(model, field), **selector}  # {lr: 0.1}: the default's tag
            return data
        if not present and not isinstance(selector, str):
            return data
        current = {"name": selector} if isinstance(selector, str) else as_dict(selector)
        if current is None:
            current = {}
        if not isinstance(current, dict):
            return data
        current.setdefault("name", default_tag(model, field))
        name = current["name"]
        dropped = []
        for k in present:
            v, sub = data.pop(k), keys[k]
            if name in tags and sub not in tags[name]:
                if _same(v, old_defaults.get(k)):
                    dropped.append(k)
                    continue
                owners = [t for t, fs in tags.items() if sub in fs]
                fix = f"{field}: {render({'name': owners[0], sub: v})}" if owners else "remove it"
                raise ValueError(f"flat key {k!r} does not belong to {field} {name!r} (its fields: "
                                 f"{', '.join(sorted(tags[name])) or 'none'}): remove it, or choose one that has "
                                 f"it, e.g. {fix}")
            if sub in current and not _same(current[sub], v):
                raise _conflict(k, field, sub, current[sub], v)
            current[sub] = v
        if isinstance(selector, str):
            deprecated(field, field, current, f"a bare {field} name is the old flat form")
        for k in present:
            note = f"{name!r} has no {keys[k]}: the default value is dropped" if k in dropped else ""
            deprecated(k, field, current, note)
        data[field] = current
        return data

    return migrate


def _same(a: Any, b: Any) -> bool:
    """Equal plain values (0 and 0.0 alike, True and 1 not); a search space or list never is."""
    plain = (int, float, bool, str)
    return isinstance(a, plain) and isinstance(b, plain) and isinstance(a, bool) == isinstance(b, bool) and a == b
