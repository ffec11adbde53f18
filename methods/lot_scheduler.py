"""The loss-of-trainability scheduler (specs/lot.md): per-layer lr control on top of Adam.

Configured by the ``lr_scheduler`` parameter component: ``{name: none}`` (the
default) or ``{name: lot, rho: ..., every: ...}`` (``LotSchedule`` below).

Every K optimiser steps (``every``), for each layer L (a module's weight
and bias, one Adam param group, one lr) on the minibatch just trained on:

    eta_crit = rho B G / (sigma^2 + beta_v G V)
    cool:  eta_eff > eta_crit and eta_eff > eta_floor         -> lr_L <- gamma_cool lr_L
    warm:  elif t < f_warm T and eta_eff < 0.1 eta_crit       -> lr_L <- gamma_warm lr_L

with G, sigma^2, the sharpness and eta_eff of methods/lot_signals.py, and V
the volatility Var(s) / (Mean(s) + 1e-8) of the normalised sharpness
s = alpha_agg * lambda over the layer's recent control steps (an EMA, or a
window). Between control steps it costs a counter: the step is Adam's.

[ours] where the spec is silent:
- T is the number of optimiser steps of the current task (epochs x batches
  per epoch) and t the steps taken in it, so every task may warm in its first
  f_warm of steps; K counts optimiser steps since the method started.
- The per-layer lrs carry over task boundaries (``keep_lr``), also when
  the optimiser is rebuilt (``reset_optimizer``): the schedule is the
  stream's, as in the paper's single long run.
- G, sigma^2 and the sharpness are of the task loss alone (penalties are
  deterministic and add no noise), measured in eval mode (BatchNorm on its
  running statistics, as EWC's Fisher), on the live weights after the step.
- Only layers that took part in the step (every parameter has a .grad:
  the current task's head, unfrozen blocks) are measured and controlled.
- A layer with G = sigma^2 = 0 has eta_crit = NaN and is left alone; with
  G = 0 < sigma^2, eta_crit = 0 and it cools down to the floor.
"""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Annotated, Any, Literal, Union

import numpy as np
import torch
from pydantic import Field
from torch import nn

from methods.components import Component, register_flat_keys, tagged_keys
from methods.lot_signals import Loss, adam_effective_step, eta_crit, layer_groups, rayleigh_sharpness, signal_and_noise

COOL, KEEP, WARM = -1, 0, 1
QUANTITIES = ("lr", "eta_eff", "eta_crit", "sigma2", "G", "V", "sharpness", "s", "action")
TRACE_POINTS = 2000  # control steps kept per series in a trial record (evenly subsampled beyond)


def lot_action(eta_eff: float, crit: float, t: int, total: int, *, eta_floor: float, f_warm: float) -> int:
    """COOL, WARM or KEEP for one layer (comparisons with a NaN threshold are false: KEEP)."""
    if eta_eff > crit and eta_eff > eta_floor:
        return COOL
    if t < f_warm * total and eta_eff < 0.1 * crit:
        return WARM
    return KEEP


class ScheduleParams(Component):
    kind = "lr_scheduler"


class NoSchedule(ScheduleParams):
    """The optimiser's own lr, unchanged."""

    tag = "none"
    name: Literal["none"] = "none"


class LotSchedule(ScheduleParams):
    """Per-layer lr cooled/warmed against the noise-curvature threshold eta_crit (needs optimizer adam)."""

    tag = "lot"
    name: Literal["lot"] = "lot"
    rho: float = Field(0.8, gt=0.0, le=1e9, description="rho in eta_crit = rho B G / (sigma^2 + beta_v G V)")
    beta_v: float = Field(1.0, ge=0.0, le=1e6, description="weight of the curvature-volatility term (0: noise-only bound)")
    gamma_cool: float = Field(0.99, gt=0.0, lt=1.0, description="lr factor when a layer's eta_eff exceeds eta_crit")
    gamma_warm: float = Field(1.01, ge=1.0, le=10.0, description="lr factor when eta_eff < 0.1 eta_crit early in a task (1: never warm)")
    f_warm: float = Field(0.3, ge=0.0, le=1.0, description="warming only in the first f_warm of each task's steps")
    eta_floor: float = Field(0.12, ge=0.0, le=1e9, description="no cooling once eta_eff is at or below this")
    every: int = Field(40, ge=1, le=1_000_000, description="K, optimiser steps between control steps")
    volatility: Literal["ema", "window"] = Field("ema", description="V = Var(s)/Mean(s) of the normalised sharpness s as an EMA or over the last window control steps")
    ema_decay: float = Field(0.9, ge=0.0, lt=1.0, description="decay of the EMA mean/variance of s (volatility: ema)")
    window: int = Field(10, ge=2, le=100_000, description="control steps in the volatility window (volatility: window)")
    power_iters: int = Field(1, ge=1, le=1000, description="power-iteration steps (Hessian-vector products) per layer per control step, warm-started")
    keep_lr: bool = Field(True, description="per-layer lrs carry over task boundaries (false: every task restarts at lr)")


AnySchedule = Annotated[Union[NoSchedule, LotSchedule], Field(discriminator="name")]
"""The lr_scheduler field of a gradient method: ``lr_scheduler: AnySchedule = NoSchedule()``."""

_LOT_KEYS = tuple(k for k in LotSchedule.model_fields if k != "name")
register_flat_keys("lr_scheduler", tagged_keys(
    "lr_scheduler", {f"lot_{k}": k for k in _LOT_KEYS}, {"none": set(), "lot": set(_LOT_KEYS)},
    {f"lot_{k}": LotSchedule.model_fields[k].default for k in _LOT_KEYS}))


class Volatility:
    """V = Var(s) / (Mean(s) + 1e-8) of the values seen: exponentially weighted, or over a window."""

    def __init__(self, kind: str, decay: float, window: int):
        self.kind, self.decay = kind, decay
        self.values: deque[float] = deque(maxlen=window)
        self.mean = self.var = math.nan

    def update(self, s: float) -> float:
        if self.kind == "window":
            self.values.append(s)
            mean, var = float(np.mean(self.values)), float(np.var(self.values))
        elif math.isnan(self.mean):
            mean, var = s, 0.0
        else:  # West's exponentially weighted mean and variance
            diff = s - self.mean
            mean = self.mean + (1.0 - self.decay) * diff
            var = self.decay * (self.var + (1.0 - self.decay) * diff * diff)
        self.mean, self.var = mean, var
        return var / (mean + 1e-8)

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values.clear()
        self.values.extend(state["values"])
        self.mean, self.var = state["mean"], state["var"]


class LotScheduler:
    """Per-layer Adam lrs kept under eta_crit; build the optimiser from ``param_groups()``.

    ``p``: the schedule's parameters; ``lr``: the optimiser's, every layer's starting lr.
    """

    def __init__(self, p: LotSchedule, lr: float, net: nn.Module, seed: int):
        self.p = p
        self.lr = lr
        self.net = net
        self.layers = layer_groups(net)
        self.lrs = {name: lr for name in self.layers}
        self.vectors: dict[str, list[torch.Tensor]] = {}  # warm-started power-iteration vectors
        self.volatility = {name: Volatility(p.volatility, p.ema_decay, p.window) for name in self.layers}
        self.generator = torch.Generator().manual_seed(seed + 15485863)  # its own: training's RNG stays put
        self.steps = 0           # optimiser steps since construction (K counts these)
        self.tasks = 0           # begin() calls: the position of the task being trained
        self.task_starts: list[int] = []  # optimiser steps done when each task began
        self.optimizer: torch.optim.Optimizer | None = None
        self.loss: Loss | None = None
        self.task_steps = self.task_total = 0
        self.rows: list[dict[str, Any]] = []  # one per control step
        self._task_counts = {"control_steps": 0, "cools": 0, "warms": 0, "control_s": 0.0}

    # ------------------------------------------------------------ wiring
    def param_groups(self) -> list[dict[str, Any]]:
        """One Adam param group per layer, at the layer's current lr."""
        return [{"params": [w for _, w in params], "layer": name, "lr": self.lrs[name]}
                for name, params in self.layers.items()]

    def begin(self, optimizer: torch.optim.Optimizer, loss: Loss, total_steps: int) -> None:
        """A task starts: ``loss(xb, yb)`` is its task loss, ``total_steps`` = T."""
        if not isinstance(optimizer, torch.optim.Adam):
            raise ValueError(f"lr_scheduler 'lot' needs Adam's state, got {type(optimizer).__name__}; "
                             "set optimizer: adam")
        if not self.p.keep_lr:
            self.lrs = {name: self.lr for name in self.layers}
        self.optimizer, self.loss = optimizer, loss
        self.groups = {}
        for group in optimizer.param_groups:
            if "layer" not in group:
                raise ValueError("lr_scheduler 'lot' needs one param group per layer: build the optimiser "
                                 "from LotScheduler.param_groups()")
            group["lr"] = self.lrs[group["layer"]]
            self.groups[group["layer"]] = group
        self.task_steps, self.task_total = 0, total_steps
        self._task_counts = {"control_steps": 0, "cools": 0, "warms": 0, "control_s": 0.0}
        self.tasks += 1
        self.task_starts.append(self.steps)

    def after_step(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Call after every optimiser step; every K-th does the per-layer work on (xb, yb)."""
        self.steps += 1
        self.task_steps += 1
        if self.steps % self.p.every == 0:
            self.control(xb, yb)

    # ------------------------------------------------------------ the control step
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
            grads = dict(zip(names, torch.autograd.grad(self.loss(xb, yb), weights, create_graph=True)))
            noise = signal_and_noise(self.net, self.loss, active, xb, yb,
                                     {k: g.detach() for k, g in grads.items()})
            for name, params in active.items():
                step = adam_effective_step(self.optimizer, self.groups[name])
                if step is None:
                    continue
                eta_eff, alpha_agg = step
                vector = self.vectors.get(name) or [
                    torch.randn(w.shape, generator=self.generator).to(w.device) for _, w in params]
                sharpness, self.vectors[name] = rayleigh_sharpness(
                    [grads[k] for k, _ in params], [w for _, w in params], vector, p.power_iters)
                signal, sigma2 = noise[name]
                s = alpha_agg * sharpness
                volatility = self.volatility[name].update(s)
                crit = eta_crit(p.rho, xb.shape[0], signal, sigma2, p.beta_v, volatility)
                action = lot_action(eta_eff, crit, self.task_steps, self.task_total,
                                    eta_floor=p.eta_floor, f_warm=p.f_warm)
                if action != KEEP:
                    self.lrs[name] *= p.gamma_cool if action == COOL else p.gamma_warm
                    self.groups[name]["lr"] = self.lrs[name]
                    self._task_counts["cools" if action == COOL else "warms"] += 1
                measured[name] = {"lr": self.lrs[name], "eta_eff": eta_eff, "eta_crit": crit, "sigma2": sigma2,
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
        """Scalars for the trial record (info_lot_*): this task's control work and the lrs it ended with."""
        c = self._task_counts
        info = {f"lot_{k}": float(v) for k, v in c.items()}
        touched = {name for row in self.rows if row["task_position"] == self.tasks - 1 for name in row["layers"]}
        if touched:
            info["lot_lr_min"] = min(self.lrs[n] for n in touched)
            info["lot_lr_max"] = max(self.lrs[n] for n in touched)
        return info

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
