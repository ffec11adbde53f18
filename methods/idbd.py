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
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            for p in live:
                if "h" not in self.state[p]:
                    self.state[p]["h"] = torch.zeros_like(p)
            if group["groups"] == "scalar":
                self._step_shared(group, live)
            else:
                for p in live:
                    self._step_shared(group, [p])
        return loss

    def _step_shared(self, group, params: list[torch.nn.Parameter]) -> None:
        """Update the beta shared by ``params`` (one tensor, or all of a scalar group), then them."""
        if not params:
            return
        st = self._beta_state(group, params[0])
        per_weight = group["groups"] == "parameter"
        grads = [p.grad for p in params]
        curv = [g * g if group["curvature"] == "grad_sq" else torch.zeros_like(g) for g in grads]
        z = [-g * self.state[p]["h"] for p, g in zip(params, grads)]  # meta-gradient samples
        meta = z[0] if per_weight else sum(t.sum() for t in z)
        beta = st["beta"]
        if group["normalized"]:
            alpha = beta.exp()
            c_sum = curv[0] if per_weight else sum(c.sum() for c in curv)
            v = st["v"]
            v.copy_(torch.maximum(meta.abs(), v + alpha * c_sum * (meta.abs() - v) / group["tau"]))
            beta.add_(group["meta_lr"] * torch.where(v > 0, meta / v.clamp_min(1e-30), torch.zeros_like(meta)))
            # bound the effective step: sum(alpha * c) <= 1 over the weights this beta governs
            alpha = beta.exp()
            load = sum((alpha * c).sum() for c in curv) if not per_weight else (alpha * curv[0]).sum()
            beta.sub_(torch.log(torch.clamp(load, min=1.0)))
        else:
            beta.add_(group["meta_lr"] * meta)
        alpha = beta.exp()
        top = alpha.max()
        self._largest = top if self._largest is None else torch.maximum(self._largest, top)
        for p, g, c in zip(params, grads, curv):
            h = self.state[p]["h"]
            p.sub_(alpha * g)
            h.mul_(torch.clamp(1 - alpha * c, min=0)).sub_(alpha * g)

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
