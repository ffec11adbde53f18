"""A small name -> (Params model, builder) registry, in the spirit of timm's.

Both benchmarks and methods are looked up by the name a study file uses; each
entry carries a pydantic ``Params`` model so a study is validated (and
``clorch list`` documents itself) without building anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class DuplicateName(ValueError):
    """A second registration under a name already taken (a plugin clashing with a built-in, say)."""


class RegistryError(KeyError):
    """An unknown name; the message lists the names that exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    params: type[BaseModel]
    target: T
    summary: str
    module: str = ""  # where it was registered: a built-in module or a plugin's


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, params: type[BaseModel] | None = None) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` on a target with a ``Params`` model, or pass ``params``."""

        def wrap(target: T) -> T:
            model = params if params is not None else getattr(target, "Params", None)
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise TypeError(f"{self.kind} {name!r}: give a pydantic Params model, as a `Params` class attribute "
                                f"of {getattr(target, '__name__', target)!r} or as register({name!r}, params=...)")
            module = getattr(target, "__module__", "") or ""
            if name in self._entries:
                first = self._entries[name].module
                raise DuplicateName(f"{self.kind} {name!r} is registered twice: by {first or '?'} and again by "
                                    f"{module or '?'}; rename one of them")
            doc = (getattr(target, "__doc__", None) or "").strip()
            self._entries[name] = Entry(name, model, target, doc.splitlines()[0] if doc else "", module)
            return target

        return wrap

    def unregister(self, name: str) -> None:
        """For tests and for reloading a plugin file in one process."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: Any) -> bool:
        return name in self._entries


# Benchmarks: name -> builder(Params) -> Benchmark. Every Params model exposes
# ``num_tasks`` (a field or a property) so orders are validated before loading.
BENCHMARKS: Registry = Registry("benchmark")
