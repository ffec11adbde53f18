"""Backbone plus output heads, for the three settings.

task_incremental: one head per task identity, sized to that task's classes;
the task id picks the head at train and test time.
domain_incremental: one head shared by all tasks (sized to the largest task).
class_incremental: one head over every task's classes (global labels, task k's
classes at ``class_offsets[k]``...), of which only the classes of tasks seen so
far are live: the others' logits are -inf, so the head "grows" as tasks arrive
(``activate``) and a prediction never needs the task id. Which classes are live
is a buffer, so it is saved and restored with the weights.
"""
from __future__ import annotations

import torch
from torch import nn

from datasets.benchmark import class_offsets
from methods.protocol import MethodContext


class TaskNetwork(nn.Module):
    def __init__(self, backbone: nn.Module, ctx: MethodContext):
        super().__init__()
        self.backbone = backbone
        self.setting = ctx.setting
        self.task_incremental = ctx.setting == "task_incremental"
        self.class_incremental = ctx.setting == "class_incremental"
        if self.task_incremental:
            sizes: tuple[int, ...] = ctx.classes_per_task
        elif self.class_incremental:
            sizes = (sum(ctx.classes_per_task),)
        else:
            sizes = (max(ctx.classes_per_task),)
        self.heads = nn.ModuleList(nn.Linear(backbone.out_features, c) for c in sizes)
        self.offsets = class_offsets(ctx.classes_per_task)
        self.classes_per_task = ctx.classes_per_task
        if self.class_incremental:  # only here: the other settings' state dicts stay as they were
            self.register_buffer("live", torch.zeros(sizes[0], dtype=torch.bool))
        else:
            self.live: torch.Tensor | None = None

    def head(self, task_id: int) -> nn.Linear:
        return self.heads[task_id if self.task_incremental else 0]

    def activate(self, task_id: int) -> None:
        """Class-incremental: task ``task_id``'s classes join the head (a no-op in the other settings)."""
        if self.live is not None:
            start = self.offsets[task_id]
            self.live[start:start + self.classes_per_task[task_id]] = True

    def classes_of(self, task_id: int) -> range:
        """The output indices task ``task_id``'s labels use (global in class_incremental, else 0..C-1)."""
        start = self.offsets[task_id] if self.class_incremental else 0
        return range(start, start + self.classes_per_task[task_id])

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Class-incremental: logits of classes not seen yet become -inf (every class, before any task:
        an untrained network's predictions stay defined for forward transfer's reference row)."""
        if self.live is None:
            return logits
        # the classes to hide, recomputed only when ``live`` changed (activate, a load, a move): its version
        # counter and storage say so, with tensor ops only (no device sync per forward)
        key = (self.live._version, self.live.data_ptr())
        if getattr(self, "_hidden_key", None) != key:
            self._hidden = ~(self.live | ~self.live.any())
            self._hidden_key = key
        return logits.masked_fill(self._hidden, float("-inf"))

    def raw(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """The head's logits, unseen classes included (what dark experience replay stores)."""
        return self.head(task_id)(self.backbone(x))

    def forward(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        return self.mask(self.raw(x, task_id))

    def forward_tasks(self, x: torch.Tensor, task_ids: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """Logits of samples from several tasks at once (a replay batch): each sample through its own
        task's head. Task-incremental heads are padded to the widest (-inf, or 0 when ``raw``), computed
        for every sample and gathered, so there is no per-task Python and no device sync."""
        return self.head_logits(self.backbone(x), task_ids, raw)

    def head_logits(self, features: torch.Tensor, task_ids: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """forward_tasks after the backbone: the heads' logits of backbone ``features``."""
        if not self.task_incremental:
            out = self.heads[0](features)
            return out if raw else self.mask(out)
        width = max(h.out_features for h in self.heads)
        fill = 0.0 if raw else float("-inf")
        logits = torch.stack([nn.functional.pad(h(features), (0, width - h.out_features), value=fill)
                              for h in self.heads])
        return logits[task_ids, torch.arange(features.shape[0], device=features.device)]
