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

        The per-tensor rule (the module docstring) as few passes over the weights as torch's
        foreach ops allow, each call covering all tensors: products are fused into the sums
        they feed (addcmul, addcdiv: one rounding where the rule has two, so the result
        agrees with the rule to rounding, tests/test_idbd_foreach.py), and on the CPU the
        step bound's work is skipped when no load exceeds 1 (it would subtract log 1 = 0).
        What cannot be batched are the reductions (the sums of a shared step-size's
        meta-gradient and of the step bound's load), one per tensor. The normalised step
        makes 16 passes over the weights on the CPU when no load exceeds 1, 20 when the
        bound runs (always, on CUDA); it made 27. The plain per-weight step makes 10 (was 14).
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
        alpha = decay = None  # the normalised bound may leave exp(beta) and min(alpha c, 1) made
        # the meta-gradient z = -g h, kept as gh = g h = -z (negation is exact)
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
                torch._foreach_addcmul_(vs, t, diff, value=1.0 / tau)  # one pass: v + (alpha c) (|z| - v) / tau
                del diff, t
            torch._foreach_maximum_(vs, size)
            del size
            # beta += mu z / v where v > 0 (v >= |z| >= 0: v is 0 only where z is, and then 0 / 1e-30 = 0)
            floor = torch._foreach_clamp_min(vs, 1e-30)
            torch._foreach_addcdiv_(betas, gh, floor, value=-meta_lr)  # one pass: beta - mu (g h) / v
            del floor, gh
            # bound the effective step: sum(alpha c) <= 1 over the weights each beta governs
            # (c = 0: the load is 0, clamped to 1, log 1 = 0: nothing to do)
            if curv is not None:
                alpha = torch._foreach_exp(betas)
                load_terms = _alpha_curv(alpha, curv, mode)
                load = _sums(load_terms, mode == "scalar")
                if _may_bind(load):
                    torch._foreach_clamp_min_(load, 1.0)
                    torch._foreach_log_(load)
                    torch._foreach_sub_(betas, load)
                    alpha = load_terms = None
                else:  # every load <= 1: beta - log 1 = beta, so alpha and alpha c stand (the same bits),
                    # and each alpha c >= 0 of a sum <= 1 is itself <= 1: min(alpha c, 1) = alpha c
                    decay = load_terms
        else:
            torch._foreach_add_(betas, gh, alpha=-meta_lr)  # one pass: beta - theta (g h)
            del gh
        if alpha is None:
            alpha = torch._foreach_exp(betas)
        top = _largest(alpha)
        if curv is not None:  # h <- h max(0, 1 - alpha c) - alpha g = h - h min(alpha c, 1) - alpha g: the decay
            if decay is None:
                decay = _alpha_curv(alpha, curv, mode, in_place=True)
                torch._foreach_clamp_max_(decay, 1.0)
            torch._foreach_addcmul_(hs, hs, decay, value=-1.0)  # (an infinite h gives NaN here, -inf the rule)
        # then w and h both less alpha g
        if mode == "scalar":  # one shared step-size: a tensor-scalar product (one fused kernel on CUDA)
            step = torch._foreach_mul(grads, alpha[0])
            torch._foreach_sub_(params, step)
            torch._foreach_sub_(hs, step)
        else:
            torch._foreach_addcmul_(params, alpha, grads, value=-1.0)
            torch._foreach_addcmul_(hs, alpha, grads, value=-1.0)
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


def _alpha_curv(alpha: list[torch.Tensor], curv: list[torch.Tensor], mode: str,
                in_place: bool = False) -> list[torch.Tensor]:
    """alpha c per tensor (alpha: one tensor per weight tensor, or one shared step-size for ``scalar``);
    ``in_place``: written into ``curv``. alpha * c and c * alpha are the same bits (IEEE products commute)."""
    factor = alpha[0] if mode == "scalar" else alpha
    if in_place:
        torch._foreach_mul_(curv, factor)
        return curv
    return torch._foreach_mul(curv, factor)


def _may_bind(load: list[torch.Tensor]) -> bool:
    """Whether the step bound may change a beta: on the CPU, whether any load exceeds 1 (or is NaN), read
    there without a device sync; elsewhere always True (the bound's foreach ops run, no sync per step)."""
    if load[0].device.type != "cpu":
        return True
    return any(not float(x) <= 1.0 for x in load)


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
