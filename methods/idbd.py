"""IDBD (Sutton 1992) as a torch optimiser for deep networks (specs/idbd.md, "Deep networks").

Each step-size is exp(beta) and beta follows the meta-gradient of the loss:
    beta  += meta_lr * (-g) * h
    alpha  = exp(beta)
    w     -= alpha * g
    h      = h * max(0, 1 - alpha * c) - alpha * g
with c a diagonal curvature proxy (``grad_sq``: g^2; ``none``: 0). h traces
dw/dbeta, so a step-size grows while successive gradients agree.

Step-size groups: ``parameter`` (one beta per weight), ``layer`` (one per
tensor) or ``scalar`` (one for the whole group). A shared beta gets the true
meta-gradient of its weights: the SUM of (-g * h) over them.

A step-size above ``max_step`` (or NaN) is divergence: ``check()`` raises
TrainingDiverged; the training loop calls it once per task.

``normalized`` is the Autostep-style variant (Mahmood et al. 2012), because plain
IDBD is unstable in deep nets: the meta-gradient is divided by a running
bound v of its magnitude (time scale ``tau``), and the step-sizes of a tensor
are scaled down when sum(alpha * c) exceeds 1.
"""
from __future__ import annotations

import math
from typing import Iterable, Literal

import torch

Groups = Literal["parameter", "layer", "scalar"]
Curvature = Literal["grad_sq", "none"]


class IDBD(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-2, meta_lr: float = 1e-3,
                 groups: Groups = "parameter", curvature: Curvature = "grad_sq", normalized: bool = False,
                 tau: float = 1e4, max_step: float = 100.0):
        if lr <= 0 or meta_lr < 0 or tau <= 0:
            raise ValueError(f"IDBD needs lr > 0, meta_lr >= 0, tau > 0 (got {lr}, {meta_lr}, {tau})")
        if groups not in ("parameter", "layer", "scalar") or curvature not in ("grad_sq", "none"):
            raise ValueError(f"unknown IDBD groups={groups!r} or curvature={curvature!r}")
        super().__init__(params, dict(lr=lr, meta_lr=meta_lr, groups=groups, curvature=curvature,
                                      normalized=normalized, tau=tau))
        self.max_step = max_step
        self._largest: torch.Tensor | None = None  # on the device: no sync per step
        # normalised: exp(beta) as the last step left it, reused as the next step's first exp(beta)
        # while the betas are the same tensors, unmodified (their version counters say so)
        self._alpha_memo: dict[int, tuple[list[torch.Tensor], list[int], list[torch.Tensor]]] = {}

    def _beta_state(self, group, p) -> dict:
        """The state holding the beta (and v) that governs ``p``."""
        owner = group["params"][0] if group["groups"] == "scalar" else p
        st = self.state[owner]
        if "beta" not in st:
            shape = p.shape if group["groups"] == "parameter" else ()
            st["beta"] = torch.full(shape, math.log(group["lr"]), dtype=p.dtype, device=p.device)
            if group["normalized"]:
                st["v"] = torch.zeros_like(st["beta"])
        return st

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        tops: list[torch.Tensor] = []
        for index, group in enumerate(self.param_groups):
            live = [p for p in group["params"] if p.grad is not None]
            if not live:
                continue
            states = [self.state[p] for p in live]
            for p, st in zip(live, states):  # state only, once: the arithmetic is foreach
                if "h" not in st:
                    st["h"] = torch.zeros_like(p)
            tops.append(self._step_group(group, live, [st["h"] for st in states], index))
        if tops:
            top = torch.stack(tops).max() if len(tops) > 1 else tops[0]
            self._largest = top if self._largest is None else torch.maximum(self._largest, top)
        return loss

    def _step_group(self, group, params: list[torch.nn.Parameter], hs: list[torch.Tensor], index: int) -> torch.Tensor:
        """One step of every live tensor of ``group`` with foreach ops; returns the largest step-size.

        Each elementwise operation of the per-tensor rule (the module docstring) is one
        foreach call over all tensors, in the same order and with the same rounding as
        applying the rule tensor by tensor; what cannot be batched are the reductions
        (the sums of a shared step-size's meta-gradient and of the step bound's load),
        one per tensor.
        """
        mode, meta_lr, tau = group["groups"], group["meta_lr"], group["tau"]
        grads = [p.grad for p in params]
        if mode == "scalar":
            st = self._beta_state(group, params[0])
            betas, vs = [st["beta"]], [st.get("v")]
        else:
            states = [self._beta_state(group, p) for p in params]
            betas, vs = [st["beta"] for st in states], [st.get("v") for st in states]
        curv = torch._foreach_mul(grads, grads) if group["curvature"] == "grad_sq" else None
        # the meta-gradient z = -g h, kept as gh = g h = -z (negation is exact, so each
        # expression below in gh gives the same bits as the rule's in z)
        gh = torch._foreach_mul(grads, hs)
        if mode != "parameter":  # a shared beta: the summed meta-gradient of its weights
            gh = _sums(gh, mode == "scalar")
        if group["normalized"]:
            # v <- max(|z|, v + alpha c (|z| - v) / tau)   (c = 0: v + 0 = v). Temporaries are
            # dropped as soon as they are dead: fewer live buffers, no heap growth per step.
            size = torch._foreach_abs(gh)
            if curv is not None:
                t = self._recall_alpha(index, betas)
                torch._foreach_mul_(t, curv if mode == "parameter" else _sums(curv, mode == "scalar"))
                diff = torch._foreach_sub(size, vs)
                torch._foreach_mul_(t, diff)
                del diff
                torch._foreach_div_(t, tau)
                torch._foreach_add_(vs, t)
                del t
            torch._foreach_maximum_(vs, size)
            del size
            # beta += mu z / v where v > 0 (v >= |z| >= 0: v is 0 only where z is, and then 0 / 1e-30 = 0)
            floor = torch._foreach_clamp_min(vs, 1e-30)
            torch._foreach_div_(gh, floor)
            del floor
            torch._foreach_mul_(gh, meta_lr)
            torch._foreach_sub_(betas, gh)
            del gh
            # bound the effective step: sum(alpha c) <= 1 over the weights each beta governs
            # (c = 0: the load is 0, clamped to 1, log 1 = 0: nothing to do)
            if curv is not None:
                alpha = torch._foreach_exp(betas)
                if mode == "parameter":
                    torch._foreach_mul_(alpha, curv)
                    load = _sums(alpha, False)
                else:
                    load = _sums(torch._foreach_mul(curv, alpha[0] if mode == "scalar" else alpha), mode == "scalar")
                del alpha
                torch._foreach_clamp_min_(load, 1.0)
                torch._foreach_log_(load)
                torch._foreach_sub_(betas, load)
        else:
            torch._foreach_mul_(gh, meta_lr)
            torch._foreach_sub_(betas, gh)
            del gh
        alpha = torch._foreach_exp(betas)
        top = _largest(alpha)
        step = torch._foreach_mul(grads, alpha[0]) if mode == "scalar" else torch._foreach_mul(alpha, grads)
        torch._foreach_sub_(params, step)
        if curv is not None:  # h <- h max(0, 1 - alpha c) - alpha g
            if mode == "scalar":
                torch._foreach_mul_(curv, alpha[0])
            else:
                torch._foreach_mul_(curv, alpha)
            torch._foreach_neg_(curv)
            torch._foreach_add_(curv, 1.0)
            torch._foreach_clamp_min_(curv, 0.0)
            torch._foreach_mul_(hs, curv)
        torch._foreach_sub_(hs, step)
        if group["normalized"] and curv is not None:
            self._alpha_memo[index] = (betas, [b._version for b in betas], alpha)
        return top

    def _recall_alpha(self, index: int, betas: list[torch.Tensor]) -> list[torch.Tensor]:
        """exp(betas): the previous step's, if these are the betas it left, else computed (same bits).

        "The betas it left": the same tensors at the same version counter, so an in-place change or a loaded
        state is seen; a write through ``.data`` bypasses the counter and is not (change betas in place or
        with load_state_dict)."""
        memo = self._alpha_memo.pop(index, None)
        if memo is not None:
            old, versions, alpha = memo
            if len(old) == len(betas) and all(a is b and b._version == v for a, b, v in zip(old, betas, versions)):
                return alpha
        return torch._foreach_exp(betas)

    def check(self) -> None:
        """Raise TrainingDiverged if a step-size ever exceeded ``max_step`` (one sync; call per task)."""
        if self._largest is not None and not float(self._largest) <= self.max_step:
            from methods.protocol import TrainingDiverged

            raise TrainingDiverged(f"IDBD step-sizes exploded: largest alpha {float(self._largest):.3g} > "
                                   f"optimizer max_step {self.max_step:g}; lower the optimizer's meta_lr or set normalized: true")

    def step_sizes(self) -> list[torch.Tensor]:
        """Current alpha = exp(beta) per tensor (for logging and tests)."""
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                owner = group["params"][0] if group["groups"] == "scalar" else p
                if "beta" in self.state[owner]:
                    out.append(self.state[owner]["beta"].exp())
        return out


def _sums(tensors: list[torch.Tensor], together: bool) -> list[torch.Tensor]:
    """Each tensor's sum (``together``: [the sum of those, added in order]) as 0-d tensors.

    One reduction per tensor: torch has no foreach sum. ``together`` adds the sums
    left to right, as the per-tensor rule did, so that a scalar group's step-size is
    bit for bit the same.
    """
    sums = [t.sum() for t in tensors]
    return [sum(sums)] if together else sums


def _largest(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The largest element of all ``tensors`` (NaN if any is NaN), a 0-d tensor on their device.

    CUDA: one fused foreach kernel; CPU: one amax per tensor, which is about
    twice as fast there as torch's full max reduction that _foreach_max runs.
    """
    if len(tensors) == 1:
        return tensors[0].amax()
    if tensors[0].is_cuda:
        return torch.stack(torch._foreach_max(tensors)).amax()
    return torch.stack([t.amax() for t in tensors]).amax()
