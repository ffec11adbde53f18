"""The method core: one protocol, one registry, one training loop.

Importing this package registers every built-in method. Nothing here imports
Ray or MLflow, so methods run and test as plain PyTorch.
"""
from methods.protocol import Method, MethodContext, TrainingDiverged, seed_everything
from methods.registry import METHODS

# Registration side effects: one module per method.
from methods import finetune as _finetune  # noqa: F401
from methods import ewc as _ewc  # noqa: F401
from methods import joint as _joint  # noqa: F401
from methods import stream_learners as _stream_learners  # noqa: F401
from methods import resnet as _resnet  # noqa: F401
from methods import update_magnitude as _update_magnitude  # noqa: F401
from methods import lenet as _lenet  # noqa: F401
from methods import alexnet as _alexnet  # noqa: F401
from methods import halrp as _halrp  # noqa: F401

__all__ = ["METHODS", "Method", "MethodContext", "TrainingDiverged", "seed_everything"]
