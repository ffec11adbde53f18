"""Dark experience replay, DER and DER++ (Buzzega et al. 2020).

The memory keeps each sample with the logits the network gave it when it
was trained on it (reservoir sampling during training). DER adds
alpha * MSE(f(x'), z') on a replay batch (x', z'): matching the stored logits
keeps the old function, not only the old labels. DER++ adds beta * CE(f(x''),
y'') on a second, independent replay batch. Logits are the head's raw outputs
(class_incremental: every class, seen or not, as the paper stores them;
task_incremental: the sample's own head, padded with zeros to the widest).
Defaults: Mammoth's best arguments for seq-mnist, buffer 200 (DER alpha 0.2;
DER++ alpha 0.2, beta 1.0; lr 0.03 and batch 10 go in the study).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from methods.registry import METHODS
from methods.rehearsal import Rehearsal, RehearsalParams


class DERParams(RehearsalParams):
    search_space: ClassVar[dict] = {"alpha": {"grid": [0.1, 0.2, 0.5, 1.0]}, "optimizer": {"lr": {"grid": [0.03, 0.1]}}}
    alpha: float = Field(0.2, ge=0.0, le=1e6, description="weight of the logit-matching (MSE) term")


class DERPPParams(DERParams):
    search_space: ClassVar[dict] = {"alpha": {"grid": [0.1, 0.2, 0.5, 1.0]}, "beta": {"grid": [0.5, 1.0]},
                                    "optimizer": {"lr": {"grid": [0.03, 0.1]}}}
    beta: float = Field(1.0, ge=0.0, le=1e6, description="weight of the replayed labels' cross-entropy")


@METHODS.register("der", DERParams)
class DER(Rehearsal):
    """Dark experience replay: match the logits stored with replayed samples."""

    Params = DERParams
    replay_draws = 1

    def _padded(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw logits of the current batch at the memory's width (task heads padded with zeros)."""
        width = max(h.out_features for h in self.net.heads)
        return F.pad(logits, (0, width - logits.shape[1])) if logits.shape[1] < width else logits

    def batch_loss(self, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        drawn = self.next_replay(raw=True)
        if drawn is None:
            return loss
        (_, _, _, bz), replay_logits = drawn
        loss = loss + self.p.alpha * F.mse_loss(replay_logits, bz)
        return loss + self.labels_term()

    def labels_term(self) -> torch.Tensor | float:
        return 0.0

    def after_step(self, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor) -> None:
        # the raw logits of this step's forward pass (before the update), as the paper's code stores them
        self.buffer.add(xb, yb, self._task_id, logits=self._padded(logits.detach()))


@METHODS.register("der_pp", DERPPParams)
class DERPP(DER):
    """DER++: DER plus the cross-entropy of a second replay batch's labels."""

    Params = DERPPParams
    replay_draws = 2

    def labels_term(self) -> torch.Tensor | float:
        (_, by, _, _), replay_logits = self.next_replay()
        return self.p.beta * F.cross_entropy(replay_logits, by)
