"""EWC: elastic weight consolidation (Kirkpatrick et al. 2017), and online EWC (Schwarz et al. 2018).

After each task the diagonal Fisher F_t of that task is computed at the
learned weights theta*_t; later tasks pay (lambda / 2) * sum_t F_t (theta - theta*_t)^2.
That sum over tasks equals A (theta - m)^2 plus a constant, with A = sum_t F_t
and m the F-weighted mean of the anchors, so we keep just (A, m): same
gradients, constant memory and cost per step however many tasks have passed.
Online EWC keeps A = gamma * A + F_t and m = theta*_t instead.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from datasets.benchmark import DeviceSplit
from methods.finetune import Finetune
from methods.fisher import diagonal_fisher
from methods.network import TaskNetwork
from methods.params import GradientParams
from methods.penalties import PenaltyTerm
from methods.protocol import MethodContext
from methods.registry import METHODS


class EWCParams(GradientParams):
    ewc_lambda: float = Field(100.0, ge=0.0, le=1e9, description="penalty strength lambda")
    online: bool = Field(False, description="online EWC: decayed running Fisher, anchor at the last task")
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="online EWC: decay of the running Fisher")
    fisher: Literal["empirical", "expected"] = Field("empirical", description="Fisher with true labels or the model's predictive distribution")
    fisher_samples: int = Field(1024, ge=1, description="training samples (seeded subset) used for the Fisher")


class FisherPenalty:
    def __init__(self, p: EWCParams, seed: int):
        self.p = p
        self.importance: dict[str, torch.Tensor] = {}  # A
        self.anchor: dict[str, torch.Tensor] = {}      # m
        # its own RNG: choosing the Fisher subset must not move the training batches
        self.generator = torch.Generator().manual_seed(seed + 7919)
        self._cache: tuple | None = None  # (A, m) aligned with the parameters for loss(), see _aligned

    def loss(self, net: TaskNetwork) -> torch.Tensor | None:
        if not self.importance or self.p.ewc_lambda == 0:
            return None
        params = self._aligned(net)[1]
        return PenaltyTerm.apply(self, None, *params)

    def _aligned(self, net: TaskNetwork):
        """(id(net), the parameters that have a Fisher, sqrt(lambda A) and m for each, in the same order):
        built once per task (after_task and load_state_dict drop it), so a step walks no names."""
        if self._cache is None or self._cache[0] != id(net):
            pairs = [(k, w) for k, w in net.named_parameters() if k in self.importance]
            root = [(self.p.ewc_lambda * self.importance[k]).sqrt() for k, _ in pairs]
            self._cache = (id(net), [w for _, w in pairs], root, [self.anchor[k] for k, _ in pairs])
        return self._cache

    def value_and_grad(self, names, ws):
        """lambda/2 sum A (theta - m)^2 = 1/2 sum u^2 with u = sqrt(lambda A) (theta - m), and its gradient
        lambda A (theta - m) = sqrt(lambda A) u: a few _foreach ops over all the tensors, no graph."""
        _, _, root, anchor = self._cache
        u = torch._foreach_sub(ws, anchor)  # theta - m first: exact where theta is near its anchor
        torch._foreach_mul_(u, root)
        value = torch.stack(torch._foreach_norm(u)).square().sum().mul_(0.5)
        torch._foreach_mul_(u, root)
        return value, u

    def gradient(self, names, ws):
        """The same gradient through differentiable ops (double backward)."""
        _, _, root, anchor = self._cache
        return [r * (r * (w - m)) for w, r, m in zip(ws, root, anchor)]

    def after_task(self, net: TaskNetwork, task_id: int, data: DeviceSplit) -> dict[str, float]:
        n = data.x.shape[0]
        idx = torch.randperm(n, generator=self.generator)[: self.p.fisher_samples].to(data.x.device)
        fisher = diagonal_fisher(net, task_id, data.x[idx], data.y[idx], self.p.fisher)
        self._cache = None
        theta = {k: w.detach().clone() for k, w in net.named_parameters() if k in fisher}
        for k, f in fisher.items():
            if k not in self.importance:
                self.importance[k], self.anchor[k] = f, theta[k]
            elif self.p.online:
                self.importance[k] = self.p.gamma * self.importance[k] + f
                self.anchor[k] = theta[k]
            else:
                total = self.importance[k] + f
                mixed = (self.importance[k] * self.anchor[k] + f * theta[k]) / total.clamp_min(1e-30)
                self.anchor[k] = torch.where(total > 0, mixed, theta[k])
                self.importance[k] = total
        return {"fisher_mean": float(torch.cat([f.flatten() for f in fisher.values()]).mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance, "anchor": self.anchor, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance, self.anchor = dict(state["importance"]), dict(state["anchor"])
        self._cache = None
        self.generator.set_state(state["generator"])


@METHODS.register("ewc", EWCParams)
class EWC(Finetune):
    """Elastic weight consolidation: a diagonal-Fisher penalty to past solutions (online variant optional)."""

    Params = EWCParams

    def __init__(self, params: EWCParams, ctx: MethodContext):
        self.fisher_penalty = FisherPenalty(params, ctx.seed)
        super().__init__(params, ctx, penalties=[self.fisher_penalty])
