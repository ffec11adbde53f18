"""Weight penalties any gradient method can switch on (specs/lot.md companions).

Both are ``Penalty`` objects (methods/finetune.py): Finetune attaches them when
their lambda in TrainingParams is above 0, so finetune, ewc, update_magnitude
and every other Finetune subclass get them with no code of their own.

- ``WassersteinPenalty``: lambda * sum over tensors of sum_k
  (sorted(theta)_k - sorted(theta_init)_k)^2, the squared 1-D 2-Wasserstein
  distance (times the tensor's size) between the distribution of a tensor's
  current values and of its values at initialisation. It lets weights move
  and swap freely but keeps each layer's weight *distribution* near a
  trainable one (Lewandowski et al.); it is 0 at initialisation and for any
  permutation of the initial values.
- ``L2Penalty``: lambda * ||theta||^2 in the loss (not decoupled weight decay).

Scope [ours]: a penalty covers the backbone and the head of the task being
learned (all heads when no task was announced, e.g. joint training), and only
weights that require a gradient. In the task-incremental setting the other
heads are left alone: pulling the heads of past tasks towards 0 or their
initial distribution would change their predictions while they are not trained.
"""
from __future__ import annotations

from typing import Any

import torch

from datasets.benchmark import DeviceSplit
from methods.network import TaskNetwork


class WeightPenalty:
    """A penalty on the weights in scope; subclasses define ``term(name, w)``."""

    def __init__(self, lam: float):
        self.lam = lam
        self.scope: set[str] | None = None  # parameter names; None: every parameter

    def begin_task(self, net: TaskNetwork, task_id: int | None) -> None:
        """Limit the penalty to the backbone and this task's head (None: every head)."""
        if task_id is None:
            self.scope = None
            return
        head = {id(w) for w in net.head(task_id).parameters()}
        self.scope = {k for k, w in net.named_parameters() if k.startswith("backbone.") or id(w) in head}

    def term(self, name: str, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, net: TaskNetwork) -> torch.Tensor | None:
        terms = [self.term(k, w) for k, w in net.named_parameters()
                 if w.requires_grad and (self.scope is None or k in self.scope)]
        if not terms:
            return None
        return self.lam * torch.stack(terms).sum()

    def after_task(self, net: TaskNetwork, task_id: int, data: DeviceSplit) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class L2Penalty(WeightPenalty):
    """lambda * ||theta||^2 over the weights in scope."""

    def term(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return w.pow(2).sum()


class WassersteinPenalty(WeightPenalty):
    """lambda * sum_k (sorted(theta)_k - sorted(theta_init)_k)^2 per tensor, theta_init taken at construction."""

    def __init__(self, lam: float, net: TaskNetwork):
        super().__init__(lam)
        self.sorted_init = {k: torch.sort(w.detach().flatten()).values.clone() for k, w in net.named_parameters()}

    def term(self, name: str, w: torch.Tensor) -> torch.Tensor:
        # torch.sort is differentiable: the gradient 2 (theta_i - sorted_init[rank of theta_i]) flows back
        # through the permutation, so no custom backward is needed.
        return (torch.sort(w.flatten()).values - self.sorted_init[name]).pow(2).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"sorted_init": self.sorted_init}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sorted_init = dict(state["sorted_init"])


def weight_penalties(p, net: TaskNetwork) -> list[WeightPenalty]:
    """The penalties TrainingParams ``p`` switches on (none by default)."""
    out: list[WeightPenalty] = []
    if p.wasserstein_lambda > 0:
        out.append(WassersteinPenalty(p.wasserstein_lambda, net))
    if p.l2_lambda > 0:
        out.append(L2Penalty(p.l2_lambda))
    return out
