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

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from datasets.benchmark import DeviceSplit
from methods.buffer import BufferParams, ReplayBuffer
from methods.finetune import Finetune
from methods.params import GradientParams
from methods.protocol import MethodContext


class RehearsalParams(GradientParams):
    buffer: BufferParams = Field(default_factory=BufferParams, description="the rehearsal memory")


class Rehearsal(Finetune):
    """Finetune plus a replay buffer; subclasses decide when it is filled and how it is replayed."""

    def __init__(self, params: RehearsalParams, ctx: MethodContext):
        super().__init__(params, ctx)
        b = params.buffer
        self.buffer = ReplayBuffer(b.size, b.policy, ctx.device, ctx.seed)
        self.replay_batch = b.batch_size or params.training.batch_size
        # replay draws: their own stream, so the training batches never move
        self.replay_generator = torch.Generator(device="cpu").manual_seed(ctx.seed + 1299709)
        self.num_classes = sum(ctx.classes_per_task) if ctx.setting == "class_incremental" \
            else max(ctx.classes_per_task)

    def replay(self, n: int | None = None) -> tuple[torch.Tensor, ...] | None:
        """A replay batch (x, y, task[, logits]) drawn uniformly from the memory; None while it is empty."""
        if len(self.buffer) == 0:
            return None
        return self.buffer.sample(n or self.replay_batch, self.replay_generator)

    def replay_loss(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of a replay batch, each sample through its own task's head."""
        return F.cross_entropy(self.net.forward_tasks(x, task), y)

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
