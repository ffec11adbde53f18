"""Training parameters every gradient-trained method shares.

A method's own ``Params`` extends this model, so the backbone, the loop and the
optimiser are configured the same way everywhere and ``clorch list`` shows them.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class TrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: Literal["mlp", "small_cnn"] = Field("mlp", description="feature extractor")
    hidden: list[PositiveInt] = Field([100, 100], min_length=1, description="mlp hidden widths")
    channels: list[PositiveInt] = Field([32, 64], min_length=1, description="small_cnn conv widths")
    epochs: int = Field(5, ge=1, le=100_000, description="epochs per task")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="minibatch size")
    optimizer: Literal["sgd", "adam", "rmsprop"] = Field("sgd", description="optimiser")
    lr: float = Field(0.01, gt=0.0, le=10.0, description="learning rate")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="momentum (sgd, rmsprop)")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 weight decay in the optimiser")
    reset_optimizer: bool = Field(True, description="fresh optimiser state at every task")
