"""The ``optimizer`` parameter component: one model per optimiser, tagged by ``name``.

Each carries only its own fields and builds its torch optimiser:
``optimizer: {name: adam, lr: 0.001}``. weight_decay applies to sgd, adam and
rmsprop; IDBD has none (use a penalty).
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Iterable, Literal, Union

import torch
from pydantic import Field

from methods.components import Component, register_flat_keys, tagged_keys
from methods.idbd import IDBD

Params = Iterable[torch.nn.Parameter]


class OptimizerParams(Component):
    kind = "optimizer"

    def build(self, params: Params) -> torch.optim.Optimizer:
        raise NotImplementedError


class _TorchOptimizer(OptimizerParams):
    """A torch optimiser taking lr, momentum and weight_decay (SGD, RMSprop): one set of fields, one build."""

    torch_class: ClassVar[type[torch.optim.Optimizer]]
    foreach: ClassVar[bool | None] = None  # None: torch's default (per tensor on the CPU); see Adam
    lr: float = Field(0.01, gt=0.0, le=10.0, description="learning rate")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="momentum")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 weight decay in the optimiser")

    def build(self, params: Params) -> torch.optim.Optimizer:
        return self.torch_class(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                foreach=self.foreach)


class Sgd(_TorchOptimizer):
    """SGD with optional momentum."""

    tag = "sgd"
    torch_class = torch.optim.SGD
    name: Literal["sgd"] = "sgd"


class Adam(OptimizerParams):
    """Adam (torch defaults for betas and eps).

    Built with ``foreach=True``: torch's multi-tensor step, its default on CUDA already. On the CPU torch
    would step tensor by tensor; the multi-tensor step is the same arithmetic, bit for bit
    (tests/test_components.py), in fewer calls: 0.69-0.78x the step on HALRP's dozen small factor and scale
    tensors, 0.81-0.95x on an MLP's six (bench/optimizer_foreach.py). RMSprop is built the same way (0.81-0.96x);
    SGD keeps torch's default (plain SGD is slower with it: 1.08-1.29x).
    """

    tag = "adam"
    name: Literal["adam"] = "adam"
    lr: float = Field(0.01, gt=0.0, le=10.0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 weight decay in the optimiser")

    def build(self, params: Params) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, foreach=True)


class Rmsprop(_TorchOptimizer):
    """RMSprop with optional momentum."""

    tag = "rmsprop"
    torch_class = torch.optim.RMSprop
    foreach = True  # the multi-tensor step, as Adam's (bench/optimizer_foreach.py)
    name: Literal["rmsprop"] = "rmsprop"


class Idbd(OptimizerParams):
    """IDBD: a learned step-size per weight (methods/idbd.py)."""

    tag = "idbd"
    name: Literal["idbd"] = "idbd"
    lr: float = Field(0.01, gt=0.0, le=10.0, description="the initial step-size alpha_0")
    meta_lr: float = Field(1e-3, ge=0.0, le=100.0, description="meta step-size theta (mu if normalized)")
    groups: Literal["parameter", "layer", "scalar"] = Field("parameter", description="one step-size per weight, per tensor or in all")
    curvature: Literal["grad_sq", "none"] = Field("grad_sq", description="curvature proxy c in the h decay")
    normalized: bool = Field(False, description="Autostep-style normalised meta-step and step bound")
    max_step: float = Field(100.0, gt=0.0, description="a step-size above this ends the trial as diverged")

    def build(self, params: Params) -> torch.optim.Optimizer:
        return IDBD(params, lr=self.lr, meta_lr=self.meta_lr, groups=self.groups, curvature=self.curvature,
                    normalized=self.normalized, max_step=self.max_step)


OPTIMIZERS: tuple[type[OptimizerParams], ...] = (Sgd, Adam, Rmsprop, Idbd)
AnyOptimizer = Annotated[Union[Sgd, Adam, Rmsprop, Idbd], Field(discriminator="name")]
"""The optimizer field of a gradient method: ``optimizer: AnyOptimizer = Sgd()``."""


def build_optimizer(params: Params, opt: OptimizerParams) -> torch.optim.Optimizer:
    """The torch optimiser ``opt`` (an optimizer component) describes, over ``params``."""
    return opt.build(params)


_FLAT = {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay", "idbd_meta_lr": "meta_lr",
         "idbd_groups": "groups", "idbd_curvature": "curvature", "idbd_normalized": "normalized",
         "idbd_max_step": "max_step"}
_OLD_DEFAULTS = {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "idbd_meta_lr": 1e-3, "idbd_groups": "parameter",
                 "idbd_curvature": "grad_sq", "idbd_normalized": False, "idbd_max_step": 100.0}
register_flat_keys("optimizer", tagged_keys(
    "optimizer", _FLAT, {c.tag: set(c.model_fields) - {"name"} for c in OPTIMIZERS}, _OLD_DEFAULTS))
