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

import numpy as np
import torch
from pydantic import ConfigDict, Field

from datasets.benchmark import DeviceSplit
from methods.components import Component, as_dict, deprecated, register_flat_keys
from methods.network import TaskNetwork


class PenaltyTerm(torch.autograd.Function):
    """A penalty whose value and gradient its owner computes directly, with no autograd graph.

    ``PenaltyTerm.apply(owner, names, *ws)`` returns the value. The owner defines
    ``value_and_grad(names, ws)`` -> (value, one gradient per w, or None to make
    them in the backward with ``scaled_grad(names, ws, factor)``), and
    ``gradient(names, ws)``: the same gradients through differentiable ops. The
    backward hands out the gradients times the incoming gradient (skipped for a
    CPU 1.0: reading it costs no device sync there). Under ``create_graph`` (the
    LoT scheduler's Hessian-vector products, methods/lot_scheduler.py) it uses
    ``gradient`` instead, so second derivatives are those of the plain formula.
    The forward's gradients are handed out once; a second backward through a
    retained graph makes them again.
    """

    @staticmethod
    def forward(ctx, owner, names, *ws):
        value, grads = owner.value_and_grad(names, ws)
        ctx.owner, ctx.names, ctx.grads = owner, names, grads
        ctx.save_for_backward(*ws)
        return value

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph: a gradient that can itself be differentiated
            grads = ctx.owner.gradient(ctx.names, ctx.saved_tensors)
            return (None, None, *(g * grad_out for g in grads))
        grads, ctx.grads = ctx.grads, None
        factor = scalar(grad_out)
        if grads is None and not hasattr(ctx.owner, "scaled_grad"):  # a second backward through a kept graph
            grads = ctx.owner.value_and_grad(ctx.names, ctx.saved_tensors)[1]
        if grads is None:
            grads = ctx.owner.scaled_grad(ctx.names, ctx.saved_tensors, factor)
        elif not (isinstance(factor, float) and factor == 1.0):
            torch._foreach_mul_(grads, factor)
        return (None, None, *grads)


def scalar(t: torch.Tensor) -> float | torch.Tensor:
    """A 0-dim tensor as a Python float on the CPU (no device sync there); elsewhere the tensor itself."""
    return float(t) if t.device.type == "cpu" else t


class WeightPenalty:
    """A penalty on the weights in scope; subclasses define ``term(name, w)`` (the plain formula, through
    autograd), or ``value_and_grad`` and ``gradient`` (PenaltyTerm: the fast path L2 and Wasserstein take)."""

    fused = False  # True: loss() goes through PenaltyTerm

    def __init__(self, lam: float):
        self.lam = lam
        self.scope: set[str] | None = None  # parameter names; None: every parameter
        self._scoped: tuple[int, list[tuple[str, torch.Tensor]]] | None = None  # (id(net), params in scope)

    def begin_task(self, net: TaskNetwork, task_id: int | None) -> None:
        """Limit the penalty to the backbone and this task's head (None: every head)."""
        self._scoped = None
        if task_id is None:
            self.scope = None
            return
        head = {id(w) for w in net.head(task_id).parameters()}
        self.scope = {k for k, w in net.named_parameters() if k.startswith("backbone.") or id(w) in head}

    def term(self, name: str, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def in_scope(self, net: TaskNetwork) -> list[tuple[str, torch.Tensor]]:
        """(name, weight) of the weights the penalty covers now: in scope (kept from the walk over the
        named parameters, redone when the scope or the network changes) and requiring a gradient."""
        if self._scoped is None or self._scoped[0] != id(net):
            self._scoped = (id(net), [(k, w) for k, w in net.named_parameters()
                                      if self.scope is None or k in self.scope])
        return [(k, w) for k, w in self._scoped[1] if w.requires_grad]

    def loss(self, net: TaskNetwork) -> torch.Tensor | None:
        params = self.in_scope(net)
        if not params:
            return None
        if self.fused:
            return PenaltyTerm.apply(self, tuple(k for k, _ in params), *(w for _, w in params))
        return self.lam * torch.stack([self.term(k, w) for k, w in params]).sum()

    def after_task(self, net: TaskNetwork, task_id: int, data: DeviceSplit) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class L2Penalty(WeightPenalty):
    """lambda * ||theta||^2 over the weights in scope.

    Fast path (PenaltyTerm): the value from one fused norm per tensor, the gradient 2 lambda theta
    made in the backward, no graph of pow and sum nodes.
    """

    fused = True

    def term(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return w.pow(2).sum()

    def value_and_grad(self, names, ws):
        norms = torch._foreach_norm(ws)  # no graph: a Function's forward runs without grad
        return self.lam * torch.stack(norms).square().sum(), None  # the gradient: made in the backward

    def scaled_grad(self, names, ws, factor):
        return torch._foreach_mul(ws, 2.0 * self.lam * factor)

    def gradient(self, names, ws):
        return [2.0 * self.lam * w for w in ws]


class WassersteinPenalty(WeightPenalty):
    """lambda * sum_k (sorted(theta)_k - sorted(theta_init)_k)^2 per tensor, theta_init taken at construction.

    The gradient of sum_k (sorted(theta)_k - s0_k)^2 is 2 (theta_i - s0[rank of theta_i]): one argsort per
    tensor gives the value and the gradient, scattered back to the weights' places, with no autograd graph
    through the sort (PenaltyTerm). On the CPU a float32 tensor is argsorted by sorting 64-bit keys
    (the value's bits, made monotone, over its index: ties go to the lower index) with numpy's vectorised
    sort, several times faster than torch.sort there; elsewhere (CUDA, float64) torch.sort.
    """

    fused = True

    def __init__(self, lam: float, net: TaskNetwork):
        super().__init__(lam)
        self.sorted_init = {k: torch.sort(w.detach().flatten()).values.clone() for k, w in net.named_parameters()}

    def term(self, name: str, w: torch.Tensor) -> torch.Tensor:
        # the plain formula: torch.sort is differentiable, the gradient flows back through the permutation
        # (stable: equal weights take sorted_init's entries in the order they come, as the fast path does)
        return (torch.sort(w.flatten(), stable=True).values - self.sorted_init[name]).pow(2).sum()

    def value_and_grad(self, names, ws):
        values, grads = [], []
        for k, w in zip(names, ws):
            flat = w.detach().reshape(-1)
            order = argsort(flat)
            diff = flat.index_select(0, order).sub_(self.sorted_init[k])  # sorted(theta) - sorted(theta_init)
            values.append(torch.dot(diff, diff))
            grads.append(scatter(order, diff.mul_(2.0 * self.lam)).view_as(w))  # 2 (theta_i - s0[rank_i])
        return self.lam * torch.stack(values).sum(), grads

    def gradient(self, names, ws):
        out = []
        for k, w in zip(names, ws):
            with torch.no_grad():
                order = argsort(w.detach().reshape(-1))
                rank = torch.empty_like(order)
                rank[order] = torch.arange(order.numel(), device=order.device)
                target = self.sorted_init[k][rank].view_as(w)
            out.append(2.0 * self.lam * (w - target))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sorted_init": self.sorted_init}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sorted_init = dict(state["sorted_init"])


_INDICES: dict[int, np.ndarray] = {}


def scatter(index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """out with out[index[k]] = values[k], ``index`` a permutation (numpy's assignment on the CPU, faster there)."""
    if values.device.type == "cpu":
        out = np.empty(values.shape, dtype=values.numpy().dtype)
        out[index.numpy()] = values.numpy()
        return torch.from_numpy(out)
    return torch.empty_like(values).index_copy_(0, index, values)


def argsort(flat: torch.Tensor) -> torch.Tensor:
    """The permutation that sorts a 1-D tensor ascending; equal values (-0.0 and +0.0 included) keep their
    order, as torch.sort(stable=True) has it. NaNs: unspecified.

    CPU float32: sorts one int64 key per value, its order-preserving integer (the magnitude bits, negated
    for negative floats) in the high word and its index in the low word, with numpy's vectorised sort
    (several times faster than torch.sort on the CPU), and reads the indices from the low words.
    Elsewhere (CUDA, float64): torch.sort.
    """
    n = flat.numel()
    if flat.device.type != "cpu" or flat.dtype != torch.float32 or n >= 2**31:
        return torch.sort(flat, stable=True).indices
    bits = flat.detach().contiguous().numpy().view(np.int32)
    sign = bits >> 31                                  # 0 or -1
    key = np.empty((n, 2), dtype=np.int32)             # little-endian int64: (low word, high word)
    np.bitwise_xor(bits & 0x7FFFFFFF, sign, out=key[:, 1])
    key[:, 1] -= sign                                  # magnitude m -> m for +, -m for - (so -0.0 == +0.0)
    index = _INDICES.get(n)
    if index is None:
        index = _INDICES[n] = np.arange(n, dtype=np.int32)
    key[:, 0] = index
    if not np.little_endian:  # pragma: no cover - the words the other way round
        key = key[:, ::-1].copy()
    packed = key.view(np.int64).reshape(n)
    packed.sort()
    packed &= 0xFFFFFFFF
    return torch.from_numpy(packed)


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
