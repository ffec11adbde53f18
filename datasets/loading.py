"""Build a benchmark once per process: validated params + load context -> Benchmark.

The driver calls this once and ships the result to trials through the Ray
object store; a process that asks again for the same benchmark gets the cached
one instead of re-reading files.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pydantic import BaseModel

from datasets.benchmark import Benchmark
from datasets.common import LoadContext
from datasets.registry import BENCHMARKS

_CACHE: "OrderedDict[tuple, Benchmark]" = OrderedDict()
_CACHE_SIZE = 4


def load_benchmark(name: str, params: dict[str, Any] | BaseModel | None = None,
                   ctx: LoadContext | None = None) -> Benchmark:
    entry = BENCHMARKS.get(name)
    p = params if isinstance(params, entry.params) else entry.params.model_validate(params or {})
    ctx = ctx or LoadContext.resolve()
    key = (name, p.model_dump_json(), str(ctx.root))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    bench = entry.target(p, ctx)
    _CACHE[key] = bench
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return bench
