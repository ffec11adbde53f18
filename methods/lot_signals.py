"""Per-layer quantities of the loss-of-trainability threshold (specs/lot.md).

A *layer* is a module's own parameters (a Linear's weight and bias): what one
Adam param group holds and what gets one learning rate. On one minibatch of B
samples, for each layer L with parameters theta_L:

- signal G = ||mean_i g_i||^2 and noise sigma^2 = (1/B) sum_i ||g_i - mean g||^2,
  g_i the gradient of sample i's loss w.r.t. theta_L (torch.func: vmap over
  grad, in chunks so the per-sample gradients of a wide layer fit in memory);
- sharpness lambda = |v^T H_LL v| for the unit vector v of warm-started power
  iteration on the layer's diagonal Hessian block H_LL (Hessian-vector
  products by double backward; v is kept per layer between control steps,
  so one iteration per control step tracks the top eigenvector);
- Adam's effective step eta_eff = mean_i lr / ((1 - beta1^t)(sqrt(v_hat_i) + eps))
  and alpha_agg = lr / (RMS(sqrt(v_hat)) + eps), read from Adam's own state.

Everything here only reads: no .grad, no parameter, no buffer and no RNG that
training uses is touched, so measuring does not change the training run.
``eta_crit`` is the threshold itself.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (xb, yb) -> mean loss over the batch
Layers = dict[str, list[tuple[str, nn.Parameter]]]           # layer name -> its (parameter name, parameter)


def layer_groups(net: nn.Module) -> Layers:
    """Every module that owns parameters directly, with those parameters (weight and bias)."""
    out: Layers = {}
    for module_name, module in net.named_modules():
        own = [(f"{module_name}.{k}" if module_name else k, w) for k, w in module.named_parameters(recurse=False)]
        if own:
            out[module_name or "<root>"] = own
    return out


def eta_crit(rho: float, batch: int, signal: float, noise: float, beta_v: float, volatility: float) -> float:
    """rho B G / (sigma^2 + beta_v G V); NaN when both signal and noise are 0 (no evidence either way)."""
    denom = noise + beta_v * signal * volatility
    if denom == 0:
        return math.nan if signal == 0 else math.inf
    return rho * batch * signal / denom


class _LossOf(nn.Module):
    """Wraps a loss closure over ``net`` so functional_call can swap ``net``'s parameters under it."""

    def __init__(self, net: nn.Module, loss: Loss):
        super().__init__()
        self.net = net
        self.loss = loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(x, y)


def signal_and_noise(net: nn.Module, loss: Loss, layers: Layers, x: torch.Tensor, y: torch.Tensor,
                     mean_grad: dict[str, torch.Tensor] | None = None,
                     chunk: int = 16) -> dict[str, tuple[float, float]]:
    """Per layer (G, sigma^2) from the per-sample gradients of ``loss`` on (x, y).

    ``mean_grad`` (parameter name -> mean minibatch gradient) saves one backward
    when the caller has it; sigma^2 is then the exact two-pass sum of
    ||g_i - mean g||^2, not the cancellation-prone E||g||^2 - ||E g||^2.
    """
    names = [k for params in layers.values() for k, _ in params]
    live = {k: w for params in layers.values() for k, w in params}
    if mean_grad is None:
        g = torch.autograd.grad(loss(x, y), [live[k] for k in names])
        mean_grad = {k: gk.detach() for k, gk in zip(names, g)}
    wrapper = _LossOf(net, loss)
    detached = {f"net.{k}": live[k].detach() for k in names}

    def sample_loss(p, xi, yi):
        return functional_call(wrapper, p, (xi.unsqueeze(0), yi.unsqueeze(0)))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    spread = {k: torch.zeros((), dtype=torch.float64, device=x.device) for k in names}
    with torch.no_grad():  # grad() still differentiates the dict; the net's own weights build no graph
        for start in range(0, x.shape[0], chunk):
            grads = per_sample(detached, x[start:start + chunk], y[start:start + chunk])
            for k in names:
                d = grads[f"net.{k}"].sub_(mean_grad[k]).flatten(1)  # in place: these are ours
                spread[k] += torch.linalg.vecdot(d, d).sum(dtype=torch.float64)
    out = {}
    for layer, params in layers.items():
        signal = sum(mean_grad[k].double().pow(2).sum() for k, _ in params)
        noise = sum(spread[k] for k, _ in params) / x.shape[0]
        out[layer] = (float(signal), float(noise))
    return out


def rayleigh_sharpness(grads: list[torch.Tensor], params: list[torch.Tensor], v: list[torch.Tensor],
                       iters: int = 1) -> tuple[float, list[torch.Tensor]]:
    """|v^T H v| after ``iters`` power-iteration steps from ``v``, and the new unit vector.

    ``grads`` are d loss / d ``params`` built with create_graph=True; H is the
    Hessian block of ``params`` alone (double backward of g . v w.r.t. params).
    v is normalised first; a step whose Hv is 0 keeps v (and reports 0).
    """
    norm = torch.sqrt(sum(t.pow(2).sum() for t in v))
    v = [t / norm for t in v]
    quotient = torch.zeros(())
    for _ in range(iters):
        dot = sum((g * t).sum() for g, t in zip(grads, v))
        if not dot.requires_grad:  # the loss is at most linear in these parameters: H = 0
            return 0.0, v
        hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(w) if h is None else h for w, h in zip(params, hv)]
        quotient = sum((h * t).sum() for h, t in zip(hv, v))
        hv_norm = torch.sqrt(sum(h.pow(2).sum() for h in hv))
        if hv_norm > 0:
            v = [h.detach() / hv_norm for h in hv]
    return abs(float(quotient)), v


def adam_effective_step(optimizer: torch.optim.Adam, group: dict) -> tuple[float, float] | None:
    """(eta_eff, alpha_agg) of one Adam param group from its state; None before its first step.

    eta_eff = mean over the group's elements of lr / ((1 - beta1^t)(sqrt(v_hat) + eps)),
    alpha_agg = lr / (RMS(sqrt(v_hat)) + eps) = lr / (sqrt(mean(v_hat)) + eps),
    with v_hat = v / (1 - beta2^t) and t Adam's own step count (which restarts
    with a fresh optimiser).
    """
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    total = 0.0
    v_sum = 0.0
    count = 0
    for w in group["params"]:
        state = optimizer.state.get(w)
        if not state or "exp_avg_sq" not in state:
            return None
        t = float(state["step"])
        v_hat = state["exp_avg_sq"].double() / (1.0 - beta2 ** t)
        total += float((lr / ((1.0 - beta1 ** t) * (v_hat.sqrt() + eps))).sum())
        v_sum += float(v_hat.sum())
        count += v_hat.numel()
    if count == 0:
        return None
    return total / count, lr / (math.sqrt(v_sum / count) + eps)
