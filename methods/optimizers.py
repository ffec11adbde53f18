"""Optimiser construction from a method's training parameters."""
from __future__ import annotations

from typing import Iterable

import torch


def build_optimizer(params: Iterable[torch.nn.Parameter], p) -> torch.optim.Optimizer:
    """``p`` carries optimizer, lr, momentum, weight_decay (see TrainingParams)."""
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    raise ValueError(f"unknown optimizer {p.optimizer!r}; choose sgd, adam or rmsprop")
