"""iCaRL: incremental classifier and representation learning (Rebuffi et al. 2017). Class-incremental only.

- Training on a task: the task's data plus the exemplars kept so far, with
  a binary cross-entropy per class over the classes seen so far; targets are
  one-hot for the new classes and the model-before-the-task's sigmoid outputs
  for the old ones (distillation), computed once at the task's start.
- After the task: exemplars by herding, m = buffer size / classes seen per
  class: for each class, greedily pick the samples whose running mean of
  L2-normalised features stays closest to the class mean; old classes keep
  the first m of theirs (herding order makes that the best prefix).
- Prediction: nearest mean of exemplars on L2-normalised features (the
  logits returned are minus the distance; classes not seen are -inf).
Herding runs m rounds, each over all classes at once (padded tensors), so its
Python cost is per exemplar slot, not per sample or per class. Defaults:
Mammoth's seq-mnist best arguments (lr 0.1, batch 10, weight decay 0 in the
study); buffer policy is herding, so ``buffer.policy`` is not used.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from datasets.benchmark import DeviceSplit
from methods.protocol import MethodContext
from methods.registry import METHODS
from methods.rehearsal import Rehearsal, RehearsalParams


class ICaRLParams(RehearsalParams):
    search_space: ClassVar[dict] = {"optimizer": {"lr": {"grid": [0.03, 0.1, 0.3]}}}

    def benchmark_problems(self, benchmark: str, params: Any, setting: str | None = None) -> list[str]:
        if setting is not None and setting != "class_incremental":
            return [f"icarl classifies by the nearest mean of exemplars over every class seen, without task ids: "
                    f"it needs benchmark.setting: class_incremental, got {setting!r}"]
        return []


def herding(features: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor, m: int) -> torch.Tensor:
    """Indices into ``features`` of up to ``m`` exemplars per class of ``classes``, in herding order.

    ``features`` are L2-normalised. Round k picks, per class, the unpicked sample that brings the mean of the
    k+1 picked closest to the class mean.
    """
    k = classes.shape[0]
    members = [torch.nonzero(labels == c).squeeze(1) for c in classes.tolist()]
    width = max(len(ix) for ix in members)
    index = torch.full((k, width), -1, dtype=torch.long, device=features.device)
    for i, ix in enumerate(members):  # one row per class (a loop per class, not per sample)
        index[i, :len(ix)] = ix
    valid = index >= 0
    feats = features[index.clamp_min(0)] * valid.unsqueeze(-1)           # (k, width, d)
    mean = feats.sum(1) / valid.sum(1, keepdim=True).clamp_min(1)        # (k, d)
    picked_sum = torch.zeros_like(mean)
    available = valid.clone()
    chosen = []
    for step in range(min(m, width)):
        candidate = (picked_sum.unsqueeze(1) + feats) / (step + 1)       # (k, width, d)
        dist = (candidate - mean.unsqueeze(1)).norm(dim=-1).masked_fill(~available, float("inf"))
        best = dist.argmin(dim=1)
        ok = available[torch.arange(k), best]
        picked_sum = picked_sum + feats[torch.arange(k), best] * ok.unsqueeze(-1)
        available[torch.arange(k), best] = False
        chosen.append(torch.where(ok, index[torch.arange(k), best], -1))
    if not chosen:
        return torch.zeros(0, dtype=torch.long, device=features.device)
    out = torch.stack(chosen, dim=1)  # (k, rounds): class-major, herding order within a class
    return out[out >= 0]


@METHODS.register("icarl", ICaRLParams)
class ICaRL(Rehearsal):
    """iCaRL: exemplars by herding, distillation, nearest-mean-of-exemplars classification."""

    Params = ICaRLParams

    def __init__(self, params: ICaRLParams, ctx: MethodContext):
        if ctx.setting != "class_incremental":
            raise ValueError(f"icarl needs setting class_incremental (no task ids at test time), got {ctx.setting!r}")
        super().__init__(params, ctx)
        self.means: torch.Tensor | None = None  # (classes, d) exemplar means, NaN rows for classes not seen
        self.seen_classes: list[int] = []

    def features(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            out = torch.cat([F.normalize(self.net.backbone(x[i:i + batch]), dim=1) for i in range(0, len(x), batch)])
        self.net.train(was)
        return out

    def learn_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        net = self.net
        net.activate(task_id)
        self._task_id = task_id
        x, y = data.x, data.y
        if len(self.buffer):
            x = torch.cat([x, self.buffer.x[:len(self.buffer)]])
            y = torch.cat([y, self.buffer.y[:len(self.buffer)]])
        targets = F.one_hot(y, net.heads[0].out_features).float()
        if self.seen_classes:  # distillation targets for the old classes, from the model before this task
            old = copy.deepcopy(net).eval()
            past = torch.tensor(self.seen_classes, device=x.device)
            with torch.no_grad():
                soft = torch.cat([torch.sigmoid(old.raw(x[i:i + 4096], task_id)[:, past])
                                  for i in range(0, len(x), 4096)])
            targets[:, past] = soft
        live = net.live

        def criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits[:, live], target[:, live])

        info = self.train(lambda xb: net.raw(xb, task_id), criterion, x, targets)
        new = [c for c in net.classes_of(task_id) if c not in self.seen_classes]
        self.seen_classes += new
        self._update_exemplars(data)
        info["buffer_filled"] = float(len(self.buffer))
        return info

    def _update_exemplars(self, data: DeviceSplit) -> None:
        m = self.buffer.size // max(1, len(self.seen_classes))
        kept_x, kept_y = self.buffer.x[:len(self.buffer)] if len(self.buffer) else data.x[:0], \
            self.buffer.y[:len(self.buffer)] if len(self.buffer) else data.y[:0]
        # old classes: the first m of their herding-ordered exemplars; new classes: herding on the task's data
        old_keep = torch.cat([torch.nonzero(kept_y == c).squeeze(1)[:m] for c in kept_y.unique().tolist()]) \
            if len(kept_y) else torch.zeros(0, dtype=torch.long, device=data.x.device)
        new_classes = data.y.unique()
        picked = herding(self.features(data.x), data.y, new_classes, m)
        x = torch.cat([kept_x[old_keep], data.x[picked]])
        y = torch.cat([kept_y[old_keep], data.y[picked]])
        self.buffer.replace(x, y, torch.full_like(y, self._task_id))
        self._class_means()

    def _class_means(self) -> None:
        n = len(self.buffer)
        feats, labels = self.features(self.buffer.x[:n]), self.buffer.y[:n]
        total = self.net.heads[0].out_features
        sums = torch.zeros(total, feats.shape[1], device=feats.device).index_add_(0, labels, feats)
        counts = torch.bincount(labels, minlength=total).unsqueeze(1)
        means = sums / counts.clamp_min(1)
        self.means = torch.where(counts > 0, F.normalize(means, dim=1), torch.full_like(means, float("nan")))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        if self.means is None:  # nothing learned yet: the network's own outputs
            return super().predict(x, task_id)
        dist = torch.cdist(self.features(x), self.means.nan_to_num(0.0))
        return (-dist).masked_fill(torch.isnan(self.means[:, 0]).unsqueeze(0), float("-inf"))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["icarl"] = {"means": None if self.means is None else self.means.clone(),
                          "seen_classes": list(self.seen_classes)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        own = state["icarl"]
        self.means = None if own["means"] is None else own["means"].clone()
        self.seen_classes = list(own["seen_classes"])
