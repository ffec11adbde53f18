"""Feature extractors shared by every method, and the ``network`` parameter component.

Each backbone exposes ``out_features``. ``NetworkParams`` (a method's
``network:`` field) names the backbone and its widths and activation;
a builder receives it: ``BACKBONES[name](input_shape, network)``.

``activation: crelu`` (NetworkParams) swaps every ReLU of mlp and small_cnn
for CReLU(x) = [relu(x), relu(-x)] (Abbas et al. 2023; specs/lot.md): each
unit keeps a live gradient on one side of zero, which is why it is used
against loss of plasticity. It doubles the width the next layer sees; the
widths in ``hidden``/``channels`` stay the number of linear units (nothing is
halved behind the user's back: to keep the parameter count near ReLU's, halve
them in the study).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Literal

import torch
from pydantic import Field, PositiveInt, field_validator, model_validator
from torch import nn

from methods.components import Component, nest_keys, register_flat_keys


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


# name -> builder(input_shape, network: NetworkParams) -> nn.Module with ``out_features``.
# A module that defines more backbones registers them here on import.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda shape, p: MLP(shape, p.hidden, p.activation),
    "small_cnn": lambda shape, p: SmallCNN(shape, p.channels, p.activation),
}
# name -> the ``activation`` values its builder honours (NetworkParams rejects the others).
BACKBONE_ACTIVATIONS: dict[str, tuple[str, ...]] = {"mlp": ("relu", "crelu"), "small_cnn": ("relu", "crelu")}


def register_backbone(name: str, builder: Callable[..., nn.Module], activations: Iterable[str] = ("relu",)) -> None:
    """``activations``: the ``activation`` parameter values the builder honours (default: relu only)."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is registered twice")
    BACKBONES[name] = builder
    BACKBONE_ACTIVATIONS[name] = tuple(activations)


def build_backbone(name: str, input_shape: tuple[int, ...], network: "NetworkParams | None") -> nn.Module:
    return BACKBONES[name](input_shape, network)


class NetworkParams(Component):
    """The feature extractor: which backbone, its widths, its activation."""

    kind = "network"

    backbone: str = Field("mlp", description="feature extractor: mlp | small_cnn | any registered backbone")
    hidden: list[PositiveInt] = Field([100, 100], min_length=1, description="mlp hidden widths")
    channels: list[PositiveInt] = Field([32, 64], min_length=1, description="small_cnn conv widths")
    activation: Literal["relu", "crelu"] = Field("relu", description="mlp, small_cnn: relu | crelu ([relu(x), relu(-x)]: doubles the width the next layer sees; widths are not halved)")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; available: {', '.join(sorted(BACKBONES))}")
        return v

    @model_validator(mode="after")
    def _activation_honoured(self):
        honoured = BACKBONE_ACTIVATIONS.get(self.backbone, ("relu",))
        if self.activation not in honoured:
            raise ValueError(f"activation {self.activation!r} is not supported by backbone {self.backbone!r} "
                             f"(it honours {', '.join(honoured)}); use backbone mlp or small_cnn, or activation relu")
        return self

    def build(self, input_shape: tuple[int, ...]) -> nn.Module:
        return build_backbone(self.backbone, input_shape, self)


register_flat_keys("network", nest_keys("network", {k: k for k in ("backbone", "hidden", "channels", "activation")}))
