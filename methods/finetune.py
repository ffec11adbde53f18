"""Fine-tuning: train the same network on each task in turn, nothing else.

The lower bound every continual-learning method must beat: no replay, no
regulariser, no frozen parts. In the task-incremental setting each task still
gets its own head.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from datasets.benchmark import DeviceSplit
from methods.backbones import build_backbone
from methods.loop import fit
from methods.network import TaskNetwork
from methods.optimizers import build_optimizer
from methods.params import TrainingParams
from methods.protocol import MethodContext
from methods.registry import METHODS


class FinetuneParams(TrainingParams):
    pass


@METHODS.register("finetune", FinetuneParams)
class Finetune:
    """Sequential fine-tuning with sgd, adam or rmsprop (the lower bound)."""

    Params = FinetuneParams

    def __init__(self, params: FinetuneParams, ctx: MethodContext):
        self.p = params
        self.ctx = ctx
        self.net = TaskNetwork(build_backbone(params.backbone, ctx.input_shape, params), ctx).to(ctx.device)
        self.generator = torch.Generator(device="cpu").manual_seed(ctx.seed)
        self.optimizer: torch.optim.Optimizer | None = None

    def learn_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        if self.optimizer is None or self.p.reset_optimizer:
            self.optimizer = build_optimizer(self.net.parameters(), self.p)
        net, opt = self.net, self.optimizer
        net.train()

        def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            loss = F.cross_entropy(net(xb, task_id), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        return fit(step, data.x, data.y, epochs=self.p.epochs, batch_size=self.p.batch_size,
                   generator=self.generator)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        self.net.eval()
        return self.net(x, task_id)

    def state_dict(self) -> dict[str, Any]:
        # A snapshot: torch's state dicts alias live tensors (and Adam's state
        # would be shared after load_state_dict), so copy.
        return copy.deepcopy({
            "net": self.net.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.generator.set_state(state["generator"])
        self.optimizer = None
        if state["optimizer"] is not None:
            self.optimizer = build_optimizer(self.net.parameters(), self.p)
            self.optimizer.load_state_dict(state["optimizer"])
