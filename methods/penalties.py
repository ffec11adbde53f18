"""Weight penalties any gradient method can switch on (specs/lot.md companions).

Both are ``Penalty`` objects (methods/finetune.py): Finetune attaches one per
entry of its ``penalties`` parameter component (a list, empty by default:
``penalties: [{name: l2, lambda: 0.001}]``), so finetune, ewc,
update_magnitude and every other Finetune subclass get them with no code of
their own.

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

from typing import Annotated, Any, Literal, Union

import torch
from pydantic import ConfigDict, Field

from datasets.benchmark import DeviceSplit
from methods.components import Component, as_dict, deprecated, register_flat_keys
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


class PenaltyParams(Component):
    kind = "penalty"
    # ``lambda`` is a Python keyword: the field is ``lam``, read and written as ``lambda``.
    model_config = ConfigDict(extra="forbid", validate_by_alias=True, validate_by_name=True, serialize_by_alias=True)

    def build(self, net: TaskNetwork) -> WeightPenalty:
        raise NotImplementedError


class Wasserstein(PenaltyParams):
    """Wasserstein-to-init: keeps each tensor's weight distribution near its initial one."""

    tag = "wasserstein"
    name: Literal["wasserstein"] = "wasserstein"
    lam: float = Field(alias="lambda", ge=0.0, le=1e6, description="lambda * sum_k (sorted(theta)_k - sorted(theta_init)_k)^2 per tensor in the loss (0: off)")

    def build(self, net: TaskNetwork) -> WeightPenalty:
        return WassersteinPenalty(self.lam, net)


class L2(PenaltyParams):
    """L2 in the loss."""

    tag = "l2"
    name: Literal["l2"] = "l2"
    lam: float = Field(alias="lambda", ge=0.0, le=1e6, description="lambda * ||theta||^2 in the loss (0: off; unlike weight_decay it is part of the loss)")

    def build(self, net: TaskNetwork) -> WeightPenalty:
        return L2Penalty(self.lam)


AnyPenalty = Annotated[Union[Wasserstein, L2], Field(discriminator="name")]
"""An entry of a gradient method's ``penalties: list[AnyPenalty] = []``."""


def weight_penalties(entries: list[PenaltyParams], net: TaskNetwork) -> list[WeightPenalty]:
    """The penalties a method's ``penalties`` entries switch on (an entry with lambda 0 is off)."""
    return [e.build(net) for e in entries if e.lam > 0]


_FLAT = {"wasserstein_lambda": "wasserstein", "l2_lambda": "l2"}


def _migrate(model, data: dict) -> dict:
    """``wasserstein_lambda`` / ``l2_lambda`` > 0 become entries of ``penalties`` (0: no entry)."""
    present = [k for k in _FLAT if k in data]
    if not present:
        return data
    given = data.get("penalties")
    entries = [] if given is None else list(given) if isinstance(given, (list, tuple)) else given
    if not isinstance(entries, list):
        return data
    entries = [as_dict(e) for e in entries]
    for k in present:
        v, name = data.pop(k), _FLAT[k]
        same = [e for e in entries if isinstance(e, dict) and e.get("name") == name]
        off = isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0
        if same:
            old = same[0].get("lambda", same[0].get("lam"))
            if (off and old != 0) or (not off and old != v):
                raise ValueError(f"flat key {k!r}={v} contradicts penalties entry {name} with lambda {old}; keep one")
        elif not off:
            entries.append({"name": name, "lambda": v})
    for k in present:
        deprecated(k, "penalties", entries, "0: no entry" if not entries else "")
    data["penalties"] = entries
    return data


register_flat_keys("penalties", _migrate)
