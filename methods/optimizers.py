"""Optimiser construction from a method's training parameters."""
from __future__ import annotations

from typing import Iterable

import torch

from methods.idbd import IDBD


def build_optimizer(params: Iterable[torch.nn.Parameter], p) -> torch.optim.Optimizer:
    """``p`` carries optimizer, lr, momentum, weight_decay, idbd_* (see TrainingParams).

    weight_decay applies to sgd, adam and rmsprop; IDBD has none (use a penalty).
    """
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if p.optimizer == "idbd":
        return IDBD(params, lr=p.lr, meta_lr=p.idbd_meta_lr, groups=p.idbd_groups,
                    curvature=p.idbd_curvature, normalized=p.idbd_normalized, max_step=p.idbd_max_step)
    raise ValueError(f"unknown optimizer {p.optimizer!r}; choose sgd, adam, rmsprop or idbd")
