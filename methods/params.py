"""Training parameters every gradient-trained method shares.

A method's own ``Params`` extends this model, so the backbone, the loop and the
optimiser are configured the same way everywhere and ``clorch list`` shows them.
The loss-of-trainability switches (specs/lot.md) live here too, so that any
method can turn them on: ``activation: crelu``, the ``wasserstein_lambda`` and
``l2_lambda`` penalties, and ``lr_scheduler: lot`` (per-layer lr control on top
of Adam, methods/lot_scheduler.py). Every one defaults to off.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator


class TrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = Field("mlp", description="feature extractor: mlp | small_cnn | any registered backbone")
    hidden: list[PositiveInt] = Field([100, 100], min_length=1, description="mlp hidden widths")
    channels: list[PositiveInt] = Field([32, 64], min_length=1, description="small_cnn conv widths")
    activation: Literal["relu", "crelu"] = Field("relu", description="mlp, small_cnn: relu | crelu ([relu(x), relu(-x)]: doubles the width the next layer sees; widths are not halved)")
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
    wasserstein_lambda: float = Field(0.0, ge=0.0, le=1e6, description="lambda * sum_k (sorted(theta)_k - sorted(theta_init)_k)^2 per tensor in the loss (0: off)")
    l2_lambda: float = Field(0.0, ge=0.0, le=1e6, description="lambda * ||theta||^2 in the loss (0: off; unlike weight_decay it is part of the loss)")
    lr_scheduler: Literal["none", "lot"] = Field("none", description="lot: per-layer lr cooled/warmed against the noise-curvature threshold eta_crit (needs optimizer: adam)")
    lot_rho: float = Field(0.8, gt=0.0, le=1e9, description="lot: rho in eta_crit = rho B G / (sigma^2 + beta_v G V)")
    lot_beta_v: float = Field(1.0, ge=0.0, le=1e6, description="lot: weight of the curvature-volatility term (0: noise-only bound)")
    lot_gamma_cool: float = Field(0.99, gt=0.0, lt=1.0, description="lot: lr factor when a layer's eta_eff exceeds eta_crit")
    lot_gamma_warm: float = Field(1.01, ge=1.0, le=10.0, description="lot: lr factor when eta_eff < 0.1 eta_crit early in a task (1: never warm)")
    lot_f_warm: float = Field(0.3, ge=0.0, le=1.0, description="lot: warming only in the first f_warm of each task's steps")
    lot_eta_floor: float = Field(0.12, ge=0.0, le=1e9, description="lot: no cooling once eta_eff is at or below this")
    lot_every: int = Field(40, ge=1, le=1_000_000, description="lot: K, optimiser steps between control steps")
    lot_volatility: Literal["ema", "window"] = Field("ema", description="lot: V = Var(s)/Mean(s) of the normalised sharpness s as an EMA or over the last lot_window control steps")
    lot_ema_decay: float = Field(0.9, ge=0.0, lt=1.0, description="lot: decay of the EMA mean/variance of s (lot_volatility: ema)")
    lot_window: int = Field(10, ge=2, le=100_000, description="lot: control steps in the volatility window (lot_volatility: window)")
    lot_power_iters: int = Field(1, ge=1, le=1000, description="lot: power-iteration steps (Hessian-vector products) per layer per control step, warm-started")
    lot_keep_lr: bool = Field(True, description="lot: per-layer lrs carry over task boundaries (false: every task restarts at lr)")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        from methods.backbones import BACKBONES

        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; available: {', '.join(sorted(BACKBONES))}")
        return v

    @model_validator(mode="after")
    def _switches_fit(self):
        from methods.backbones import BACKBONE_ACTIVATIONS

        honoured = BACKBONE_ACTIVATIONS.get(self.backbone, ("relu",))
        if self.activation not in honoured:
            raise ValueError(f"activation {self.activation!r} is not supported by backbone {self.backbone!r} "
                             f"(it honours {', '.join(honoured)}); use backbone mlp or small_cnn, or activation relu")
        if self.lr_scheduler == "lot" and self.optimizer != "adam":
            raise ValueError(f"lr_scheduler 'lot' reads Adam's state (its second moments and step count) but "
                             f"optimizer is {self.optimizer!r}; set optimizer: adam, or lr_scheduler: none")
        return self
