"""The one training loop and the one evaluation, shared by every method.

Data is already on the device; batches are drawn by index from a seeded
permutation, so there is no DataLoader and no Python work per sample. The loss
is checked for NaN/inf once per epoch (one device sync), not per step.
A trailing batch of one sample (batch_size > 1) joins the batch before it:
BatchNorm cannot train on one sample, and every method gets the same batches.

``LoopParams`` is the ``training`` parameter component: epochs, batch size,
whether the optimiser starts fresh at every task, and the dead-unit count
after each task (a diagnostic, off by default).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import Field, model_serializer

from methods.components import Component, nest_keys, register_flat_keys
from methods.protocol import TrainingDiverged

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LoopParams(Component):
    """How the shared loop trains each task."""

    kind = "training"

    epochs: int = Field(5, ge=1, le=100_000, description="epochs per task")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="minibatch size")
    reset_optimizer: bool = Field(True, description="fresh optimiser state at every task")
    dead_units: bool = Field(False, description="after each task, info dead_<activation>: the fraction of each ReLU/CReLU layer's units that output 0 on every training image of the task (one forward pass over it)")

    @model_serializer(mode="wrap")
    def _omit_when_off(self, handler):
        # off (the default), the switch is left out of the dump, so the config ids (hashes of
        # the dumped params) of studies that never set it are what they were before it existed
        out = handler(self)
        if not self.dead_units and isinstance(out, dict):
            out.pop("dead_units", None)
        return out


register_flat_keys("training", nest_keys("training", {k: k for k in ("epochs", "batch_size", "reset_optimizer")}))


def num_batches(n: int, batch_size: int) -> int:
    """Steps per epoch over ``n`` samples (what ``fit`` takes, a one-sample remainder folded in)."""
    full, rest = divmod(n, batch_size)
    return full + (rest > 1 or (rest == 1 and full == 0))


def epoch_batches(perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """One epoch's index batches; a one-sample remainder (of a batch_size > 1) joins the last full batch."""
    batches = list(perm.split(batch_size))
    if batch_size > 1 and len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def fit(step: Step, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
        generator: torch.Generator) -> dict[str, float]:
    """Run ``step(xb, yb) -> loss`` over ``epochs`` shuffled passes; return loss figures."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("cannot train on an empty task")
    first = last = math.nan
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        total = torch.zeros((), device=x.device)
        batches = 0
        for idx in epoch_batches(perm, batch_size):
            total += step(x[idx], y[idx]).detach()
            batches += 1
        last = (total / batches).item()
        if not math.isfinite(last):
            raise TrainingDiverged(
                f"training loss became {last} in epoch {epoch + 1}/{epochs}; "
                "lower lr (or the method's step-size parameters) and rerun")
        if epoch == 0:
            first = last
    return {"loss_first_epoch": first, "loss_last_epoch": last}


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 4096) -> float:
    """Top-1 accuracy in percent of ``predict`` (inputs -> logits)."""
    if x.shape[0] == 0:
        return math.nan
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        logits = predict(x[start:start + batch_size])
        correct += (logits.argmax(dim=1) == y[start:start + batch_size]).sum()
    return 100.0 * correct.item() / x.shape[0]
