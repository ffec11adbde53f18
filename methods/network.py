"""Backbone plus output heads, for the two settings.

task_incremental: one head per task identity, sized to that task's classes;
the task id picks the head at train and test time.
domain_incremental: one head shared by all tasks (sized to the largest task).
"""
from __future__ import annotations

import torch
from torch import nn

from methods.protocol import MethodContext


class TaskNetwork(nn.Module):
    def __init__(self, backbone: nn.Module, ctx: MethodContext):
        super().__init__()
        self.backbone = backbone
        self.task_incremental = ctx.setting == "task_incremental"
        sizes = ctx.classes_per_task if self.task_incremental else (max(ctx.classes_per_task),)
        self.heads = nn.ModuleList(nn.Linear(backbone.out_features, c) for c in sizes)

    def head(self, task_id: int) -> nn.Linear:
        return self.heads[task_id if self.task_incremental else 0]

    def forward(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        return self.head(task_id)(self.backbone(x))
