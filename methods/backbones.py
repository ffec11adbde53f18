"""Feature extractors shared by every method. Each exposes ``out_features``.

``activation: crelu`` (TrainingParams) swaps every ReLU of mlp and small_cnn
for CReLU(x) = [relu(x), relu(-x)] (Abbas et al. 2023; specs/lot.md): each
unit keeps a live gradient on one side of zero, which is why it is used
against loss of plasticity. It doubles the width the next layer sees; the
widths in ``hidden``/``channels`` stay the number of linear units (nothing is
halved behind the user's back: to keep the parameter count near ReLU's, halve
them in the study).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn


class CReLU(nn.Module):
    """[relu(x), relu(-x)] concatenated along dim 1 (features, or channels of an image)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=1)


ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], int]] = {"relu": (nn.ReLU, 1), "crelu": (CReLU, 2)}
"""name -> (module factory, width multiplier of its output)."""


class MLP(nn.Sequential):
    """Flatten, then Linear+activation per hidden width."""

    def __init__(self, input_shape: tuple[int, ...], hidden: list[int], activation: str = "relu"):
        make, mult = ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), make()]
            width = h * mult
        super().__init__(*layers)
        self.out_features = width


class SmallCNN(nn.Sequential):
    """3x3 conv+activation+2x2 max-pool per channel width, then global average pool."""

    def __init__(self, input_shape: tuple[int, ...], channels: list[int], activation: str = "relu"):
        if len(input_shape) != 3:
            raise ValueError(f"small_cnn needs image inputs (C, H, W), got shape {input_shape}; use backbone: mlp")
        make, mult = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        c_in = input_shape[0]
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), make()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in = c * mult
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(*layers)
        self.out_features = c_in


# name -> builder(input_shape, training_params) -> nn.Module with ``out_features``.
# A module that defines more backbones registers them here on import.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda shape, p: MLP(shape, p.hidden, p.activation),
    "small_cnn": lambda shape, p: SmallCNN(shape, p.channels, p.activation),
}
# name -> the ``activation`` values its builder honours (TrainingParams rejects the others).
BACKBONE_ACTIVATIONS: dict[str, tuple[str, ...]] = {"mlp": ("relu", "crelu"), "small_cnn": ("relu", "crelu")}


def register_backbone(name: str, builder: Callable[..., nn.Module], activations: Iterable[str] = ("relu",)) -> None:
    """``activations``: the ``activation`` parameter values the builder honours (default: relu only)."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is registered twice")
    BACKBONES[name] = builder
    BACKBONE_ACTIVATIONS[name] = tuple(activations)


def build_backbone(name: str, input_shape: tuple[int, ...], params) -> nn.Module:
    return BACKBONES[name](input_shape, params)
