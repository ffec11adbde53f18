"""The components every gradient-trained method takes (finetune, ewc, joint, update_magnitude).

``GradientParams`` composes them; a method's own ``Params`` extends it with
its own fields only:

    network:      NetworkParams   (methods/backbones.py)
    training:     LoopParams      (methods/loop.py)
    optimizer:    sgd | adam | rmsprop | idbd   (methods/optimizers.py)
    lr_scheduler: none | lot      (methods/lot_scheduler.py; lot needs adam)
    penalties:    [wasserstein | l2 ...]        (methods/penalties.py)

The loss-of-trainability switches (specs/lot.md) are components too, so that
any of these methods can turn them on: ``network: {activation: crelu}``,
``penalties: [{name: l2, lambda: 0.001}]``, ``lr_scheduler: {name: lot}``.
Every one defaults to off.

Old flat keys (``lr: 0.1``, ``epochs: 3``, ``lot_every: 20``...) still
validate for one release, with a FlatKeyDeprecation (methods/components.py).
A method that takes fewer components (HALRP) declares its own fields instead.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from methods.backbones import NetworkParams
from methods.components import migrate_flat_keys
from methods.loop import LoopParams
from methods.lot_scheduler import AnySchedule, LotSchedule, NoSchedule
from methods.optimizers import Adam, AnyOptimizer, Sgd
from methods.penalties import AnyPenalty


class GradientParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: NetworkParams = Field(default_factory=NetworkParams, description="the backbone")
    training: LoopParams = Field(default_factory=LoopParams, description="epochs, batches, optimiser resets")
    optimizer: AnyOptimizer = Field(default_factory=Sgd, description="optimiser")
    lr_scheduler: AnySchedule = Field(default_factory=NoSchedule, description="lot: per-layer lr cooled/warmed against the noise-curvature threshold eta_crit (needs optimizer: adam)")
    penalties: list[AnyPenalty] = Field(default_factory=list, description="weight penalties added to the loss")

    @model_validator(mode="before")
    @classmethod
    def _flat_keys(cls, data: Any) -> Any:
        return migrate_flat_keys(cls, data)

    @model_validator(mode="after")
    def _components_fit(self):
        if isinstance(self.lr_scheduler, LotSchedule) and not isinstance(self.optimizer, Adam):
            raise ValueError(f"lr_scheduler 'lot' reads Adam's state (its second moments and step count) but "
                             f"optimizer is {self.optimizer.name!r}; set optimizer: {{name: adam}}, or "
                             f"lr_scheduler: {{name: none}}")
        return self


TrainingParams = GradientParams
"""The old name of the shared base (a plugin's ``class MyParams(TrainingParams)`` keeps working)."""
