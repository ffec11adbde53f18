"""Averaged gradient episodic memory (A-GEM; Chaudhry et al. 2019).

After a task, its training samples are offered to the memory (reservoir:
every sample seen so far equally likely kept, so tasks share the budget by
size). At every later step the gradient g of the current batch is compared
with the gradient g_ref of a replay batch; if they conflict (g . g_ref < 0),
g is projected onto the half-space where the replay loss does not increase
to first order: g <- g - (g . g_ref / g_ref . g_ref) g_ref. The projection
is tensor arithmetic over all trainable weights at once (no branch on the
device value, no sync). Defaults: Mammoth's seq-mnist best arguments (replay
batch 128; lr 0.1, batch 10 in the study).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from datasets.benchmark import DeviceSplit
from methods.buffer import BufferParams
from methods.registry import METHODS
from methods.rehearsal import Rehearsal, RehearsalParams


class AGEMParams(RehearsalParams):
    search_space: ClassVar[dict] = {"optimizer": {"lr": {"grid": [0.03, 0.1, 0.3]}}}
    buffer: BufferParams = Field(default_factory=lambda: BufferParams(batch_size=128), description="the episodic memory")


def project(grads: list[torch.Tensor], ref: list[torch.Tensor]) -> list[torch.Tensor]:
    """A-GEM's projection of ``grads`` against ``ref`` (new tensors; unchanged when they do not conflict)."""
    dot = sum((g * r).sum() for g, r in zip(grads, ref))
    ref_sq = sum((r * r).sum() for r in ref)
    factor = torch.clamp(dot, max=0.0) / ref_sq.clamp_min(1e-30)
    return [g - factor * r for g, r in zip(grads, ref)]


@METHODS.register("agem", AGEMParams)
class AGEM(Rehearsal):
    """A-GEM: project the gradient when it would raise the loss on a replay batch."""

    Params = AGEMParams

    def before_step(self) -> None:
        batch = self.replay()
        if batch is None:
            return
        params = [w for w in self.net.parameters() if w.grad is not None]
        bx, by, bt = batch[:3]
        ref = torch.autograd.grad(self.replay_loss(bx, by, bt), params, allow_unused=True)
        ref = [torch.zeros_like(w) if r is None else r for w, r in zip(params, ref)]
        for w, g in zip(params, project([w.grad for w in params], ref)):
            w.grad.copy_(g)

    def end_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        self.buffer.add(data.x, data.y, task_id)
        return {}
