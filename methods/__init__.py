"""The method core: one protocol, one registry, one training loop.

Importing this package imports every module in this folder, so a new method
is one file here with ``@methods.register("name")`` on its class: no import
line to add anywhere (as Mammoth lists its models folder). Plugins register
into the same registry. Nothing here imports Ray or MLflow, so methods run and
test as plain PyTorch.

The contract (methods/protocol.py): a class with a pydantic ``Params`` model,
``learn_task``, ``predict``, ``state_dict`` and ``load_state_dict``. A plain
class with those is a valid method; ``methods.Learner`` is an optional base
that brings the shared loop with hooks.
"""
import importlib
import pkgutil

from methods.protocol import Method, MethodContext, TrainingDiverged, seed_everything
from methods.registry import METHODS

register = METHODS.register
"""``@methods.register("my_method")`` on a class with a ``Params`` model (or ``register(name, params=...)``)."""

for _module in pkgutil.iter_modules(__path__):  # discovery: every file of the folder, in name order
    importlib.import_module(f"{__name__}.{_module.name}")

from methods.finetune import Finetune as Learner  # noqa: E402 - the shared loop with hooks, for methods that want it
from methods.params import GradientParams  # noqa: E402 - the components a Learner takes

__all__ = ["GradientParams", "Learner", "METHODS", "Method", "MethodContext", "TrainingDiverged", "register",
           "seed_everything"]
