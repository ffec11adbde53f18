"""What every rehearsal method shares: a ``buffer`` component and the memory it builds.

``RehearsalParams`` adds ``buffer: {size, policy, batch_size}``
(methods/buffer.py) to the gradient components; ``Rehearsal`` is Finetune
with a ``ReplayBuffer`` on the device, a replay-batch draw of its own seeded
generator, the memory in ``state_dict`` (so checkpoints, retries and resume
continue with the same samples) and, in the trial record, the memory's size
and per-class counts after every task (``task_series``: ``buffer_per_class``,
``buffer_per_task``;
info ``buffer_filled``). er, der, der_pp, agem and icarl are a few hooks each
on top of it (one file per method).
"""
from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from datasets.benchmark import DeviceSplit
from methods.backbones import CReLU
from methods.buffer import BufferParams, ReplayBuffer
from methods.finetune import Finetune
from methods.params import GradientParams
from methods.protocol import MethodContext


class RehearsalParams(GradientParams):
    buffer: BufferParams = Field(default_factory=BufferParams, description="the rehearsal memory")


# modules whose output for a sample depends on that sample alone (no batch statistics, no randomness)
_PER_SAMPLE = (nn.Linear, nn.Conv2d, nn.Flatten, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, CReLU)


def per_sample(module: nn.Module) -> bool:
    """Whether every module of ``module`` computes each sample on its own (so running two batches
    concatenated gives each its own outputs): the listed layers and plain nn.Sequential containers
    (MLP and SmallCNN). BatchNorm, dropout and any other module type say no."""
    return all(type(m) in _PER_SAMPLE or (isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward)
               for m in module.modules())


class Rehearsal(Finetune):
    """Finetune plus a replay buffer; subclasses decide when it is filled and how it is replayed.

    ``replay_draws`` > 0 (ER, DER: 1, DER++: 2): the step's replay batches are drawn before its
    forward pass and, when the backbone computes every sample on its own (``per_sample``: no
    BatchNorm, no dropout), run through the backbone in one pass with the current batch; each
    batch's logits then come from its own slice of the features (``next_replay``). The same
    batches, losses and gradients as separate passes (up to float rounding), at one backbone pass
    per step. With BatchNorm each batch keeps its own pass, normalised on its own.
    """

    replay_draws: ClassVar[int] = 0

    def __init__(self, params: RehearsalParams, ctx: MethodContext):
        super().__init__(params, ctx)
        b = params.buffer
        self.buffer = ReplayBuffer(b.size, b.policy, ctx.device, ctx.seed)
        self.replay_batch = b.batch_size or params.training.batch_size
        # replay draws: their own stream, so the training batches never move
        self.replay_generator = torch.Generator(device="cpu").manual_seed(ctx.seed + 1299709)
        self.num_classes = sum(ctx.classes_per_task) if ctx.setting == "class_incremental" \
            else max(ctx.classes_per_task)
        self.merged = per_sample(self.net.backbone)
        self._drawn: list[tuple[tuple[torch.Tensor, ...], torch.Tensor]] = []

    def replay(self, n: int | None = None) -> tuple[torch.Tensor, ...] | None:
        """A replay batch (x, y, task[, logits]) drawn uniformly from the memory; None while it is empty."""
        if len(self.buffer) == 0:
            return None
        return self.buffer.sample(n or self.replay_batch, self.replay_generator)

    def replay_loss(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of a replay batch, each sample through its own task's head."""
        return F.cross_entropy(self.net.forward_tasks(x, task), y)

    def batch_forward(self, forward, xb: torch.Tensor) -> torch.Tensor:
        """The current batch's raw logits; with ``replay_draws``, the step's replay batches are drawn here
        (in the order the loss takes them) and, when that is exact, share the backbone pass."""
        self._drawn = []
        merge = (self.replay_draws and self.merged and isinstance(forward, partial)
                 and forward.func == self.net.raw and forward.keywords.get("task_id") == self._task_id)
        if not merge or len(self.buffer) == 0:
            return forward(xb)
        # the draws replay() would make, in order; their inputs gathered straight into the one batch
        index = [self.buffer.sample_index(self.replay_batch, self.replay_generator) for _ in range(self.replay_draws)]
        sizes = [xb.shape[0], *(i.shape[0] for i in index)]
        inputs = torch.empty((sum(sizes), *xb.shape[1:]), dtype=xb.dtype, device=xb.device)
        parts = inputs.split(sizes)
        parts[0].copy_(xb)
        for idx, part in zip(index, parts[1:]):
            torch.index_select(self.buffer.x, 0, idx, out=part)
        features = self.net.backbone(inputs)
        if not self.net.task_incremental:  # one head for every sample: one head pass too (raw logits)
            out = self.net.heads[0](features).split(sizes)
        else:
            out = features.split(sizes)
        self._drawn = [(self.buffer.rows(idx, part), f) for idx, part, f in zip(index, parts[1:], out[1:])]
        return out[0] if not self.net.task_incremental else self.net.head(self._task_id)(out[0])

    def next_replay(self, raw: bool = False) -> tuple[tuple[torch.Tensor, ...], torch.Tensor] | None:
        """The step's next replay batch (x, y, task[, logits]) and the network's logits for it (each sample
        through its own task's head; ``raw``: unseen classes not masked): one batch_forward drew and ran
        through the backbone, or else one drawn and run now. None while the memory is empty."""
        if self._drawn:
            batch, out = self._drawn.pop(0)  # task heads: backbone features; one shared head: its raw logits
            if not self.net.task_incremental:
                return batch, out if raw else self.net.mask(out)
            return batch, self.net.head_logits(out, batch[2], raw)
        batch = self.replay()
        if batch is None:
            return None
        return batch, self.net.forward_tasks(batch[0], batch[2], raw)

    def learn_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        info = super().learn_task(task_id, data)
        info["buffer_filled"] = float(len(self.buffer))
        return info

    def task_series(self) -> dict[str, Any]:
        """The memory after the task: samples per label (global classes in class_incremental, a task's
        own labels otherwise) and per task identity."""
        return {**super().task_series(),  # the LoT scheduler's counts, when it is on
                "buffer_per_class": self.buffer.class_counts(self.num_classes),
                "buffer_per_task": self.buffer.task_counts(self.ctx.num_tasks)}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["rehearsal"] = {"buffer": self.buffer.state_dict(), "replay_generator": self.replay_generator.get_state()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        own = state["rehearsal"]
        self.buffer.load_state_dict(own["buffer"])
        self.replay_generator.set_state(own["replay_generator"])
