"""Experience replay (ER; Chaudhry et al. 2019, as Mammoth runs it).

Every step trains on the current minibatch and a minibatch drawn from the
memory, as one batch: the loss is the mean cross-entropy over the
concatenation, (B CE_current + B' CE_replay) / (B + B'). The current batch is
then offered to the memory (reservoir by default: every sample seen is kept
with the same probability). Defaults: Mammoth's best arguments for
seq-mnist with a 200-sample buffer (lr 0.01 and batch 10 set in the study:
they belong to the shared optimizer and training components). [ours] With
BatchNorm (or dropout) the replay batch has its own forward pass (same
weights, same loss), so the two halves are normalised separately; without,
both go through the backbone in one pass (methods/rehearsal.py), which is
the concatenated batch.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from methods.registry import METHODS
from methods.rehearsal import Rehearsal, RehearsalParams


class ERParams(RehearsalParams):
    search_space: ClassVar[dict] = {"optimizer": {"lr": {"grid": [0.01, 0.03, 0.1]}}}
    """Suggested search: Mammoth's lr grid for seq-mnist (`clorch list er` prints it)."""


@METHODS.register("er", ERParams)
class ER(Rehearsal):
    """Experience replay: each step mixes a buffer batch into the current batch."""

    Params = ERParams
    replay_draws = 1

    def batch_loss(self, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        drawn = self.next_replay()
        if drawn is None:
            return loss
        (_, by, *_), replay_logits = drawn
        n, m = yb.shape[0], by.shape[0]
        return (n * loss + m * F.cross_entropy(replay_logits, by)) / (n + m)

    def after_step(self, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor) -> None:
        self.buffer.add(xb, yb, self._task_id)
