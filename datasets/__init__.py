"""Continual-learning benchmarks behind one registry.

Importing this package registers every built-in benchmark, so
``datasets.BENCHMARKS.names()`` lists what a study may ask for. Nothing here
imports Ray or MLflow: the core runs and tests without them.
"""
from datasets.benchmark import Benchmark, Task
from datasets.common import LoadContext, MissingData
from datasets.loading import load_benchmark
from datasets.registry import BENCHMARKS, Registry, RegistryError

# Registration side effects: one module per benchmark family.
from datasets import digits as _digits  # noqa: F401
from datasets import mnist as _mnist  # noqa: F401
from datasets import streams as _streams  # noqa: F401
from datasets import cifar as _cifar  # noqa: F401
from datasets import svhn as _svhn  # noqa: F401
from datasets import notmnist as _notmnist  # noqa: F401
from datasets import cub as _cub  # noqa: F401
from datasets import tinyimagenet as _tinyimagenet  # noqa: F401
from datasets import five_datasets as _five_datasets  # noqa: F401

__all__ = ["BENCHMARKS", "Benchmark", "LoadContext", "MissingData", "Registry", "RegistryError", "Task",
           "load_benchmark"]
