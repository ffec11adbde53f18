"""Learning without forgetting (LwF; Li & Hoiem 2016).

Before a task the model is copied; every step adds alpha times the
distillation loss between the copy's and the current model's outputs on the
current batch, at temperature T: -sum_c softmax(z_old/T)_c log softmax(z/T)_c
over the outputs the copy knew (class_incremental: the classes of earlier
tasks; task_incremental: each earlier task's head, summed; domain_incremental:
the shared head). No memory of past data. Defaults: the paper's lambda_o = 1,
T = 2 (Mammoth's seq-mnist best arguments agree: alpha 1, softmax_temp 2).
[ours] no warm-up of the new head before joint training (the paper's
optional first stage).
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from datasets.benchmark import DeviceSplit
from methods.finetune import Finetune
from methods.params import GradientParams
from methods.protocol import MethodContext
from methods.registry import METHODS


class LwFParams(GradientParams):
    search_space: ClassVar[dict] = {"alpha": {"grid": [0.3, 1.0, 3.0]}, "temperature": {"grid": [1.0, 2.0, 4.0]}}
    alpha: float = Field(1.0, ge=0.0, le=1e6, description="weight of the distillation term (lambda_o)")
    temperature: float = Field(2.0, gt=0.0, le=1e3, description="softmax temperature T of the distillation")


def distillation(old: torch.Tensor, new: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over samples of the cross-entropy between softened old and new outputs."""
    target = F.softmax(old / temperature, dim=1)
    return -(target * F.log_softmax(new / temperature, dim=1)).sum(dim=1).mean()


@METHODS.register("lwf", LwFParams)
class LwF(Finetune):
    """Learning without forgetting: distil the model from before the task on the new data."""

    Params = LwFParams

    def __init__(self, params: LwFParams, ctx: MethodContext):
        super().__init__(params, ctx)
        self.old = None
        self.seen_tasks: list[int] = []

    def begin_task(self, task_id: int, data: DeviceSplit) -> None:
        self.old = None
        if self.seen_tasks:
            self.old = copy.deepcopy(self.net).eval().requires_grad_(False)
            self.past = torch.tensor([c for t in self.seen_tasks for c in self.net.classes_of(t)],
                                     device=data.x.device)

    def batch_loss(self, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        if self.old is None:
            return loss
        net, T = self.net, self.p.temperature
        with torch.no_grad():
            features = self.old.backbone(xb)
        if net.class_incremental:
            past = self.past
            term = distillation(self.old.heads[0](features)[:, past], logits[:, past], T)
        elif net.task_incremental:
            now = net.backbone(xb)  # a second forward: the loop's logits are the current head's only
            term = sum(distillation(self.old.heads[t](features), net.heads[t](now), T) for t in self.seen_tasks)
        else:
            term = distillation(self.old.heads[0](features), logits, T)
        return loss + self.p.alpha * term

    def end_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        if task_id not in self.seen_tasks:
            self.seen_tasks.append(task_id)
        self.old = None
        return {}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lwf"] = {"seen_tasks": list(self.seen_tasks)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.seen_tasks = list(state["lwf"]["seen_tasks"])
