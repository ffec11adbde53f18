"""Continual-learning benchmarks behind one registry.

Importing this package registers every built-in benchmark, so
``datasets.BENCHMARKS.names()`` lists what a study may ask for. Nothing here
imports Ray or MLflow: the core runs and tests without them.
"""
from datasets.benchmark import Benchmark, Task
from datasets.registry import BENCHMARKS, Registry, RegistryError

# Registration side effects: one module per benchmark family.
from datasets import digits as _digits  # noqa: F401

__all__ = ["BENCHMARKS", "Benchmark", "Registry", "RegistryError", "Task"]
