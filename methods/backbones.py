"""Feature extractors shared by every method. Each exposes ``out_features``."""
from __future__ import annotations

import math
from typing import Callable

from torch import nn


class MLP(nn.Sequential):
    """Flatten, then Linear+ReLU per hidden width."""

    def __init__(self, input_shape: tuple[int, ...], hidden: list[int]):
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        super().__init__(*layers)
        self.out_features = width


class SmallCNN(nn.Sequential):
    """3x3 conv+ReLU+2x2 max-pool per channel width, then global average pool."""

    def __init__(self, input_shape: tuple[int, ...], channels: list[int]):
        if len(input_shape) != 3:
            raise ValueError(f"small_cnn needs image inputs (C, H, W), got shape {input_shape}; use backbone: mlp")
        layers: list[nn.Module] = []
        c_in = input_shape[0]
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(*layers)
        self.out_features = c_in


# name -> builder(input_shape, training_params) -> nn.Module with ``out_features``.
# A module that defines more backbones registers them here on import.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda shape, p: MLP(shape, p.hidden),
    "small_cnn": lambda shape, p: SmallCNN(shape, p.channels),
}


def register_backbone(name: str, builder: Callable[..., nn.Module]) -> None:
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is registered twice")
    BACKBONES[name] = builder


def build_backbone(name: str, input_shape: tuple[int, ...], params) -> nn.Module:
    return BACKBONES[name](input_shape, params)
