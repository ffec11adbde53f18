"""Training parameters every gradient-trained method shares.

A method's own ``Params`` extends this model, so the backbone, the loop and the
optimiser are configured the same way everywhere and ``clorch list`` shows them.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator


class TrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = Field("mlp", description="feature extractor: mlp | small_cnn | any registered backbone")
    hidden: list[PositiveInt] = Field([100, 100], min_length=1, description="mlp hidden widths")
    channels: list[PositiveInt] = Field([32, 64], min_length=1, description="small_cnn conv widths")
    epochs: int = Field(5, ge=1, le=100_000, description="epochs per task")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="minibatch size")
    optimizer: Literal["sgd", "adam", "rmsprop", "idbd"] = Field("sgd", description="optimiser")
    lr: float = Field(0.01, gt=0.0, le=10.0, description="learning rate (idbd: the initial step-size alpha_0)")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="momentum (sgd, rmsprop)")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 weight decay in the optimiser")
    idbd_meta_lr: float = Field(1e-3, ge=0.0, le=100.0, description="idbd: meta step-size theta (mu if normalized)")
    idbd_groups: Literal["parameter", "layer", "scalar"] = Field("parameter", description="idbd: one step-size per weight, per tensor or in all")
    idbd_curvature: Literal["grad_sq", "none"] = Field("grad_sq", description="idbd: curvature proxy c in the h decay")
    idbd_normalized: bool = Field(False, description="idbd: Autostep-style normalised meta-step and step bound")
    idbd_max_step: float = Field(100.0, gt=0.0, description="idbd: a step-size above this ends the trial as diverged")
    reset_optimizer: bool = Field(True, description="fresh optimiser state at every task")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        from methods.backbones import BACKBONES

        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; available: {', '.join(sorted(BACKBONES))}")
        return v
