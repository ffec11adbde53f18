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


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, params: type[BaseModel]) -> Callable[[T], T]:
        def wrap(target: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = (getattr(target, "__doc__", None) or "").strip()
            self._entries[name] = Entry(name, params, target, doc.splitlines()[0] if doc else "")
            return target

        return wrap

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
