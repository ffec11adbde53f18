"""Joint training: one network trained on every task's data at once.

The order-independent upper bound. It implements the optional ``learn_all``
hook: the trial hands it all training splits, keyed by task identity, before
the first task; it trains on their union (concatenated in identity order, so
the order of the study cannot reach the result) and later task boundaries
train nothing. Every order therefore yields the same model, the same
evaluated accuracies and an OPD of exactly 0.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from datasets.benchmark import DeviceSplit
from methods.finetune import Finetune
from methods.params import GradientParams
from methods.registry import METHODS


class JointParams(GradientParams):
    pass


@METHODS.register("joint", JointParams)
class Joint(Finetune):
    """Joint training on all tasks at once (order-independent upper bound)."""

    Params = JointParams

    def learn_all(self, tasks: Mapping[int, DeviceSplit]) -> dict[str, float]:
        ids = sorted(tasks)
        for j in ids:
            self.net.activate(j)  # class_incremental: every class is live from the start
        x = torch.cat([tasks[j].x for j in ids])
        labels = torch.cat([tasks[j].y for j in ids])
        owner = torch.cat([torch.full_like(tasks[j].y, j) for j in ids])
        net = self.net

        def forward(xb: torch.Tensor) -> torch.Tensor:
            return net.backbone(xb)

        def criterion(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            label, task = target[:, 0], target[:, 1]
            if not net.task_incremental:
                return F.cross_entropy(net.heads[0](features), label)
            # every head on every sample, then each sample's own head: no per-batch sync
            width = max(h.out_features for h in net.heads)
            logits = torch.stack([F.pad(h(features), (0, width - h.out_features), value=float("-inf"))
                                  for h in net.heads])
            return F.cross_entropy(logits[task, torch.arange(len(task), device=task.device)], label)

        return self.train(forward, criterion, x, torch.stack([labels, owner], dim=1))

    def learn_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        return {}  # everything was learned in learn_all
