"""The loss-of-trainability scheduler (specs/lot.md): per-layer lr control on top of Adam.

Configured by the ``lr_scheduler`` parameter component: ``{name: none}`` (the
default) or ``{name: lot, safety: ..., every: ...}`` (``LotSchedule`` below).
The forms and defaults are the authors' research code's (specs/lot.md,
"Authors' research code", which supersedes the spec's older sections).

Every K optimiser steps (``every``), BEFORE the optimiser step, on the
minibatch about to be stepped on, for each layer L (a module's weight and
bias, one Adam param group, one lr):

    tau   = B G / sigma^2                               (threshold: noise_only, the default)
          = B G / (sigma^2 + c G V)                     (threshold: combined, c = volatility_weight)
    cool: eta_eff > floor and eta_eff > safety tau                     -> lr_L <- cool lr_L
    warm: elif t < warm_fraction T and eta_eff < warm_margin safety tau -> lr_L <- warm lr_L

with G, sigma^2, the sharpness and eta_eff of methods/lot_signals.py (eta_eff
per weight tensor, the mean inside the square root, biases skipped), and V the
volatility Var(s) / (Mean(s) + 1e-8) of the normalised sharpness
s = alpha_agg * lambda over the layer's last ``window`` control steps. The new
lr applies to the step that follows. Between control steps the scheduler costs
a counter: the step is Adam's.

What is measured, and on what:
- on the weights and Adam state before the step (what the step will act on);
- G is of the full loss the step minimises: the task loss plus every penalty
  and extra loss term (L2, Wasserstein, a method's regulariser); so is the
  sharpness (a penalty adds its own curvature, 2 lambda for L2);
- sigma^2 is of the task loss's per-sample gradients: a penalty is the same
  for every sample of the batch, so it adds nothing to g_i - mean g (the
  noise of the full per-sample loss equals the data term's).

[ours] where the spec is silent:
- T is the number of optimiser steps of the current task (epochs x batches
  per epoch) and t the steps taken in it before this one; K counts optimiser
  steps since the method started, so a task shorter than K / warm_fraction
  steps may have no control step in its warm window (then it cannot warm).
- The per-layer lrs carry over task boundaries (``keep_lr``), also when
  the optimiser is rebuilt (``reset_optimizer``): the schedule is the
  stream's, as in the paper's single long run.
- G, sigma^2 and the sharpness are measured in eval mode (BatchNorm on its
  running statistics, as EWC's Fisher).
- Only layers that take part in the step (every parameter has a .grad:
  the current task's head, unfrozen blocks) are measured and controlled; so
  is a layer with a weight tensor to read eta_eff from (``weights_only``:
  a layer of 1-D tensors only, e.g. BatchNorm, keeps its lr).
- tau is NaN (no action) when G = sigma^2 = 0, and inf (never cool) when
  sigma^2 = 0 < G.
- alpha_agg uses Adam's bias-corrected v_hat.

The superseded forms (clorch 2026-11: eta_eff a per-element mean of
lr / (sqrt(v_hat_i) + eps), the threshold rho B G / (sigma^2 + beta_v G V)
with rho inside it, warm below 0.1 eta_crit in the first 30%, cool 0.99,
warm 1.01, volatility as an EMA) are gone: the old parameter names are
refused with the name of the field that replaces them.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from methods.components import Component, register_flat_keys, tagged_keys
from methods.lot_signals import (
    Loss,
    adam_moments,
    effective_step_from,
    layer_groups,
    rayleigh_quotient,
    signal_and_noise_tensors,
    threshold,
)

COOL, KEEP, WARM = -1, 0, 1
QUANTITIES = ("lr", "eta_eff", "tau", "sigma2", "G", "V", "sharpness", "s", "action")
TRACE_POINTS = 2000  # control steps kept per series in a trial record (evenly subsampled beyond)
Extra = Callable[[], list[torch.Tensor]]  # the loss terms added to the task loss at a step (penalties)


def lot_action(eta_eff: float, tau: float, t: int, total: int, *, safety: float = 0.8, floor: float = 0.12,
               warm_fraction: float = 0.1, warm_margin: float = 0.3) -> int:
    """COOL, WARM or KEEP for one layer; ``t`` steps of the task's ``total`` done before this one.

    Comparisons with a NaN threshold are false: KEEP.
    """
    if eta_eff > floor and eta_eff > safety * tau:
        return COOL
    if t < warm_fraction * total and eta_eff < warm_margin * safety * tau:
        return WARM
    return KEEP


class ScheduleParams(Component):
    kind = "lr_scheduler"


class NoSchedule(ScheduleParams):
    """The optimiser's own lr, unchanged."""

    tag = "none"
    name: Literal["none"] = "none"


# the clorch 2026-11 names, refused with what replaced them (their meaning changed with the forms)
RENAMED = {
    "rho": "safety (default 0.8; now a factor on tau in the rule: cool if eta_eff > safety * tau)",
    "gamma_cool": "cool (default 0.95)",
    "gamma_warm": "warm (default 1.005)",
    "f_warm": "warm_fraction (default 0.1)",
    "eta_floor": "floor (default 0.12)",
    "beta_v": "threshold: combined with volatility_weight (the default threshold is noise_only, B G / sigma^2)",
    "volatility": "window (V is over the last `window` control steps, default 30; the EMA form is gone)",
    "ema_decay": "window (V is over the last `window` control steps, default 30; the EMA form is gone)",
}


class LotSchedule(ScheduleParams):
    """Per-layer lr cooled/warmed against the noise(-curvature) threshold tau (needs optimizer adam)."""

    tag = "lot"
    name: Literal["lot"] = "lot"
    safety: float = Field(0.8, gt=0.0, le=1e9, description="cool if eta_eff > safety * tau (and > floor)")
    cool: float = Field(0.95, gt=0.0, lt=1.0, description="lr factor when a layer cools")
    warm: float = Field(1.005, ge=1.0, le=10.0, description="lr factor when a layer warms (1: never warm)")
    floor: float = Field(0.12, ge=0.0, le=1e9, description="no cooling once eta_eff is at or below this (an SGD-regime constant)")
    warm_fraction: float = Field(0.1, ge=0.0, le=1.0, description="warming only in the first warm_fraction of each task's steps")
    warm_margin: float = Field(0.3, ge=0.0, le=1.0, description="warm only if eta_eff < warm_margin * safety * tau")
    threshold: Literal["noise_only", "combined"] = Field("noise_only", description="tau = B G / sigma^2, or combined: B G / (sigma^2 + volatility_weight G V)")
    volatility_weight: float = Field(1.0, ge=0.0, le=1e6, description="c, weight of the curvature volatility V in the combined threshold")
    window: int = Field(30, ge=2, le=100_000, description="control steps over which V = Var(s)/Mean(s) of the normalised sharpness is taken")
    every: int = Field(40, ge=1, le=1_000_000, description="K, optimiser steps between control steps")
    power_iters: int = Field(1, ge=1, le=1000, description="power-iteration steps (Hessian-vector products) per layer per control step, warm-started")
    weights_only: bool = Field(True, description="eta_eff over the layer's tensors of ndim >= 2 (biases skipped); false: every tensor")
    keep_lr: bool = Field(True, description="per-layer lrs carry over task boundaries (false: every task restarts at lr)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [k for k in RENAMED if k in data]
            if old:
                raise ValueError("; ".join(f"{k!r} is gone with the clorch 2026-11 forms: write {RENAMED[k]}"
                                           for k in old) + " (specs/lot.md, authors' research code)")
        return data


AnySchedule = Annotated[NoSchedule | LotSchedule, Field(discriminator="name")]
"""The lr_scheduler field of a gradient method: ``lr_scheduler: AnySchedule = NoSchedule()``."""

_LOT_KEYS = tuple(k for k in LotSchedule.model_fields if k != "name")
_OLD_DEFAULTS = {"rho": 0.8, "gamma_cool": 0.99, "gamma_warm": 1.01, "f_warm": 0.3, "eta_floor": 0.12,
                 "beta_v": 1.0, "volatility": "ema", "ema_decay": 0.9}
# old flat keys (lot_rho...) land in lr_scheduler too, where they are refused with their replacement
register_flat_keys("lr_scheduler", tagged_keys(
    "lr_scheduler", {f"lot_{k}": k for k in (*_LOT_KEYS, *RENAMED)}, {"none": set(), "lot": {*_LOT_KEYS, *RENAMED}},
    {**{f"lot_{k}": LotSchedule.model_fields[k].default for k in _LOT_KEYS},
     **{f"lot_{k}": v for k, v in _OLD_DEFAULTS.items()}}))


class Volatility:
    """V = Var(s) / (Mean(s) + 1e-8) of the last ``window`` values seen (population variance)."""

    def __init__(self, window: int):
        self.values: deque[float] = deque(maxlen=window)

    def update(self, s: float) -> float:
        self.values.append(s)
        return float(np.var(self.values)) / (float(np.mean(self.values)) + 1e-8)

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values.clear()
        self.values.extend(state["values"])


class LotScheduler:
    """Per-layer Adam lrs kept under safety * tau; build the optimiser from ``param_groups()``.

    ``p``: the schedule's parameters; ``lr``: the optimiser's, every layer's starting lr.
    Wiring: ``begin`` when a task starts, ``before_step(xb, yb)`` after the
    backward and before every ``optimizer.step()``.
    """

    def __init__(self, p: LotSchedule, lr: float, net: nn.Module, seed: int):
        self.p = p
        self.lr = lr
        self.net = net
        self.layers = layer_groups(net)
        self.lrs = {name: lr for name in self.layers}
        self.vectors: dict[str, list[torch.Tensor]] = {}  # warm-started power-iteration vectors
        self.volatility = {name: Volatility(p.window) for name in self.layers}
        self.generator = torch.Generator().manual_seed(seed + 15485863)  # its own: training's RNG stays put
        self.steps = 0           # optimiser steps since construction (K counts these)
        self.tasks = 0           # begin() calls: the position of the task being trained
        self.task_starts: list[int] = []  # optimiser steps done when each task began
        self.optimizer: torch.optim.Optimizer | None = None
        self.loss: Loss | None = None
        self.extra: Extra | None = None
        self.task_steps = self.task_total = 0
        self.rows: list[dict[str, Any]] = []  # one per control step
        self._task_counts = {"control_steps": 0, "cools": 0, "warms": 0, "control_s": 0.0}
        self._layer_counts: dict[str, dict[str, int]] = {}  # this task: layer -> {cools, warms, decisions}

    # ------------------------------------------------------------ wiring
    def param_groups(self) -> list[dict[str, Any]]:
        """One Adam param group per layer, at the layer's current lr."""
        return [{"params": [w for _, w in params], "layer": name, "lr": self.lrs[name]}
                for name, params in self.layers.items()]

    def begin(self, optimizer: torch.optim.Optimizer, loss: Loss, total_steps: int,
              extra: Extra | None = None) -> None:
        """A task starts: ``loss(xb, yb)`` is its task loss, ``extra()`` the terms the step adds to
        it (penalties; None: none), ``total_steps`` = T."""
        if not isinstance(optimizer, torch.optim.Adam):
            raise TypeError(f"lr_scheduler 'lot' needs Adam's state, got {type(optimizer).__name__}; "
                             "set optimizer: adam")
        if not self.p.keep_lr:
            self.lrs = {name: self.lr for name in self.layers}
        self.optimizer, self.loss, self.extra = optimizer, loss, extra
        self.groups = {}
        for group in optimizer.param_groups:
            if "layer" not in group:
                raise ValueError("lr_scheduler 'lot' needs one param group per layer: build the optimiser "
                                 "from LotScheduler.param_groups()")
            group["lr"] = self.lrs[group["layer"]]
            self.groups[group["layer"]] = group
        self.task_steps, self.task_total = 0, total_steps
        self._task_counts = {"control_steps": 0, "cools": 0, "warms": 0, "control_s": 0.0}
        self._layer_counts = {}
        self.tasks += 1
        self.task_starts.append(self.steps)

    def before_step(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Call after the backward and before every optimiser step; every K-th does the per-layer
        work on (xb, yb), the minibatch being stepped on, and sets the lrs this step uses."""
        self.steps += 1
        self.task_steps += 1
        if self.steps % self.p.every == 0:
            self.control(xb, yb)

    # ------------------------------------------------------------ the control step
    def _gradients(self, weights: list[torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(gradients of the task loss, of the full loss) w.r.t. ``weights``, both with create_graph."""
        data = torch.autograd.grad(self.loss(xb, yb), weights, create_graph=True)
        terms = self.extra() if self.extra is not None else []
        if not terms:
            return list(data), list(data)
        extra = torch.autograd.grad(sum(terms[1:], terms[0]), weights, create_graph=True, allow_unused=True)
        return list(data), [d if e is None else d + e for d, e in zip(data, extra)]

    def control(self, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, dict[str, float]]:
        started = time.perf_counter()
        p = self.p
        active = {name: params for name, params in self.layers.items()
                  if all(w.grad is not None for _, w in params)}
        measured: dict[str, dict[str, float]] = {}
        was_training = self.net.training
        self.net.eval()
        try:
            names = [k for params in active.values() for k, _ in params]
            weights = [w for params in active.values() for _, w in params]
            data, full = self._gradients(weights, xb, yb)
            data = dict(zip(names, data))
            full = dict(zip(names, full))
            # sigma^2 of the task loss's per-sample gradients around their own mean
            noise = signal_and_noise_tensors(self.net, self.loss, active, xb, yb,
                                             {k: g.detach() for k, g in data.items()})
            # every layer's quantities stay on the device until one read: a single host sync per control step
            pending = []
            for name, params in active.items():
                reads = adam_moments(self.optimizer, self.groups[name], p.weights_only)
                if reads is None:
                    continue
                vector = self.vectors.get(name) or [
                    torch.randn(w.shape, generator=self.generator).to(w.device) for _, w in params]
                quotient, self.vectors[name] = rayleigh_quotient(
                    [full[k] for k, _ in params], [w for _, w in params], vector, p.power_iters)
                signal = sum(full[k].detach().double().pow(2).sum() for k, _ in params)  # G of the full loss
                pending.append((name, reads, [quotient.double(), signal, noise[name][1]]))
            flat = torch.stack([t for _, reads, rest in pending
                                for t in (*(x for r in reads for x in r[1:3]), *rest)]).tolist() if pending else []
            at = 0
            for name, reads, _ in pending:
                n = 2 * len(reads)
                values = list(zip(flat[at:at + n:2], flat[at + 1:at + n:2]))
                quotient, signal, sigma2 = flat[at + n:at + n + 3]
                at += n + 3
                eta_eff, alpha_agg = effective_step_from(self.groups[name], reads, values)
                sharpness = abs(quotient)
                s = alpha_agg * sharpness
                volatility = self.volatility[name].update(s)
                tau = threshold(xb.shape[0], signal, sigma2, p.threshold, p.volatility_weight, volatility)
                action = lot_action(eta_eff, tau, max(self.task_steps - 1, 0), self.task_total, safety=p.safety,
                                    floor=p.floor, warm_fraction=p.warm_fraction, warm_margin=p.warm_margin)
                counts = self._layer_counts.setdefault(name, {"cools": 0, "warms": 0, "decisions": 0})
                counts["decisions"] += 1
                if action != KEEP:
                    self.lrs[name] *= p.cool if action == COOL else p.warm
                    self.groups[name]["lr"] = self.lrs[name]
                    self._task_counts["cools" if action == COOL else "warms"] += 1
                    counts["cools" if action == COOL else "warms"] += 1
                measured[name] = {"lr": self.lrs[name], "eta_eff": eta_eff, "tau": tau, "sigma2": sigma2,
                                  "G": signal, "V": volatility, "sharpness": sharpness, "s": s,
                                  "action": float(action)}
        finally:
            self.net.train(was_training)
        self.rows.append({"step": self.steps, "task_position": self.tasks - 1, "layers": measured})
        self._task_counts["control_steps"] += 1
        self._task_counts["control_s"] += time.perf_counter() - started
        return measured

    # ------------------------------------------------------------ reading out
    def task_info(self) -> dict[str, float]:
        """Scalars for the trial record (info_lot_*): this task's control work, its cools and warms
        over all layers, and the lrs it ended with."""
        c = self._task_counts
        info = {f"lot_{k}": float(v) for k, v in c.items()}
        touched = {name for row in self.rows if row["task_position"] == self.tasks - 1 for name in row["layers"]}
        if touched:
            info["lot_lr_min"] = min(self.lrs[n] for n in touched)
            info["lot_lr_max"] = max(self.lrs[n] for n in touched)
        return info

    def task_series(self) -> dict[str, float]:
        """Per layer decided on in this task: ``n_lot_cools/<layer>`` and ``n_lot_warms/<layer>``, how
        often the controller cooled and warmed it (0: it decided, every time, to keep the lr; the
        ``n_`` tells the report they are counts)."""
        out: dict[str, float] = {}
        for kind in ("cools", "warms"):
            for name, counts in self._layer_counts.items():
                out[f"n_lot_{kind}/{name}"] = float(counts[kind])
        return out

    def trace(self, max_points: int = TRACE_POINTS) -> dict[str, list]:
        """Per-layer time series at the control steps: ``step``, ``task_position`` and
        ``<quantity>/<layer>`` for each of QUANTITIES (None where the layer was not
        measured, or not finite); ``task_start_step``: the step count at which each
        task began. More than ``max_points`` control steps are subsampled evenly
        (first and last kept), so a trial record stays small."""
        rows = self.rows
        if len(rows) > max_points:
            keep = np.unique(np.linspace(0, len(rows) - 1, max_points).round().astype(int))
            rows = [rows[i] for i in keep]
        layers = [name for name in self.layers if any(name in r["layers"] for r in rows)]
        out: dict[str, list] = {"step": [r["step"] for r in rows], "task_position": [r["task_position"] for r in rows],
                                "task_start_step": list(self.task_starts)}
        for q in QUANTITIES:
            for name in layers:
                out[f"{q}/{name}"] = [_finite(r["layers"].get(name, {}).get(q)) for r in rows]
        return out

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"lrs": dict(self.lrs), "vectors": {k: [t.clone() for t in v] for k, v in self.vectors.items()},
                "volatility": {k: v.state_dict() for k, v in self.volatility.items()},
                "generator": self.generator.get_state(), "steps": self.steps, "tasks": self.tasks,
                "task_starts": list(self.task_starts), "rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lrs = dict(state["lrs"])
        self.vectors = {k: [t.clone() for t in v] for k, v in state["vectors"].items()}
        for k, v in state["volatility"].items():
            self.volatility[k].load_state_dict(v)
        self.generator.set_state(state["generator"])
        self.steps, self.tasks, self.rows = state["steps"], state["tasks"], list(state["rows"])
        self.task_starts = list(state["task_starts"])


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)
