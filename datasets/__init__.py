"""Continual-learning benchmarks behind one registry.

Importing this package imports every module in this folder, so a new
benchmark family is one file here with a ``@datasets.register("name")``
builder: no import line to add anywhere. ``datasets.BENCHMARKS.names()`` lists
what a study may ask for; plugins add to the same registry. Nothing here
imports Ray or MLflow: the core runs and tests without them.

A builder is ``builder(params, ctx: LoadContext) -> Benchmark``; its pydantic
``Params`` model (a ``Params`` attribute of the builder, or ``params=``) must
expose ``num_tasks`` so orders are validated before anything is loaded.
"""
import importlib
import pkgutil

from datasets.benchmark import Benchmark, Task
from datasets.common import LoadContext, MissingData
from datasets.loading import load_benchmark
from datasets.registry import BENCHMARKS, DuplicateName, Registry, RegistryError

register = BENCHMARKS.register
"""``@datasets.register("my_benchmark", MyParams)`` on a builder ``(params, ctx) -> Benchmark``."""

for _module in pkgutil.iter_modules(__path__):  # discovery: every file of the folder, in name order
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BENCHMARKS", "Benchmark", "DuplicateName", "LoadContext", "MissingData", "Registry", "RegistryError",
           "Task", "load_benchmark", "register"]
