"""Per-layer quantities of the loss-of-trainability threshold (specs/lot.md, the
section "Authors' research code", which supersedes the spec's older forms).

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
- Adam's effective step, per WEIGHT tensor (ndim >= 2; biases and other 1-D
  tensors skipped by default) with the mean over its elements INSIDE the root:
  eta_eff(W) = lr / ((1 - beta1^t) (sqrt(mean(v_W) / (1 - beta2^t)) + eps)),
  the layer's eta_eff the mean over its weight tensors; and
  alpha_agg = lr / (sqrt(mean(v_hat) over all the layer's tensors) + eps),
  read from Adam's own state (``adam_effective_step``).
  ``elementwise_effective_step`` is the superseded reading (clorch 2026-11:
  mean_i lr / ((1 - beta1^t)(sqrt(v_hat_i) + eps)) over every element), kept
  only to measure how far it was off: weights whose v is ~0 (those reading
  dead units) dominate it.
- ``threshold``: tau = B G / sigma^2 (noise-only), or B G / (sigma^2 + c G V)
  (combined, V the curvature volatility).

Everything here only reads: no .grad, no parameter, no buffer and no RNG that
training uses is touched, so measuring does not change the training run.
``dead_unit_fractions`` (a diagnostic, not a signal) counts the hidden units
that output 0 on every image given.
"""
from __future__ import annotations

import math
from collections.abc import Callable

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


THRESHOLDS = ("noise_only", "combined")


def threshold(batch: int, signal: float, noise: float, form: str = "noise_only", c: float = 1.0,
              volatility: float = 0.0) -> float:
    """tau = B G / sigma^2 (``noise_only``) or B G / (sigma^2 + c G V) (``combined``).

    NaN when both signal and noise are 0 (no evidence either way); inf when the
    denominator is 0 with a signal (a noise-free gradient: any step is safe).
    """
    if form not in THRESHOLDS:
        raise ValueError(f"threshold form {form!r}: one of {', '.join(THRESHOLDS)}")
    denom = noise + (c * signal * volatility if form == "combined" else 0.0)
    if denom == 0:
        return math.nan if signal == 0 else math.inf
    return batch * signal / denom


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


def _adam_state(optimizer: torch.optim.Adam, w: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """(v, step) of one parameter of an Adam param group; None before its first step."""
    state = optimizer.state.get(w)
    if not state or "exp_avg_sq" not in state:
        return None
    return state["exp_avg_sq"], float(state["step"])


def adam_effective_step(optimizer: torch.optim.Adam, group: dict,
                        weights_only: bool = True) -> tuple[float, float] | None:
    """(eta_eff, alpha_agg) of one Adam param group (a layer) from its state, the authors' forms.

    eta_eff: for each weight tensor W of the group (ndim >= 2; every tensor when
    ``weights_only`` is false), lr / ((1 - beta1^t)(sqrt(mean(v_W) / (1 - beta2^t)) + eps)),
    the mean taken over W's elements inside the square root; the group's
    eta_eff is the mean over those tensors. alpha_agg = lr / (sqrt(mean(v_hat)) + eps),
    the mean over every element of every tensor of the group, v_hat = v / (1 - beta2^t).
    t is Adam's own step count (which restarts with a fresh optimiser). None
    before the group's first step, or when it has no tensor to read (a layer of
    1-D tensors only, e.g. a norm's scale and shift, with ``weights_only``).
    """
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    steps: list[float] = []
    v_sum = 0.0
    count = 0
    for w in group["params"]:
        state = _adam_state(optimizer, w)
        if state is None:
            return None
        v, t = state
        bc1, bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        mean_v = float(v.double().mean())
        if w.ndim >= 2 or not weights_only:
            steps.append(lr / (bc1 * (math.sqrt(mean_v / bc2) + eps)))
        v_sum += float(v.double().sum()) / bc2
        count += v.numel()
    if not steps or count == 0:
        return None
    return sum(steps) / len(steps), lr / (math.sqrt(v_sum / count) + eps)


def elementwise_effective_step(optimizer: torch.optim.Adam, group: dict) -> float | None:
    """The superseded reading (clorch 2026-11): mean over every element of every tensor of the
    group of lr / ((1 - beta1^t)(sqrt(v_hat_i) + eps)). Not used by the scheduler; kept to show
    how an element whose v is ~0 (a weight reading a dead unit) blows it up (bench/lot_eta_eff.py)."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    total, count = 0.0, 0
    for w in group["params"]:
        state = _adam_state(optimizer, w)
        if state is None:
            return None
        v, t = state
        v_hat = v.double() / (1.0 - beta2 ** t)
        total += float((lr / ((1.0 - beta1 ** t) * (v_hat.sqrt() + eps))).sum())
        count += v.numel()
    return total / count if count else None


# ---------------------------------------------------------------- a diagnostic: dead units
UNIT_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU,)


@torch.no_grad()
def dead_unit_fractions(net: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                        batch_size: int = 4096) -> dict[str, float]:
    """Per activation module of ``net`` (nn.ReLU, CReLU): the fraction of its units that output 0 on
    every input of ``x`` (``forward(xb)`` runs the network; eval mode for the pass).

    A unit is a feature (a channel of an image: zero at every position); a CReLU
    unit, whose two outputs are relu(z) and relu(-z), is dead when both are 0 on
    every input (z = 0). Keys are the activation modules' names (``backbone.2``).
    """
    from methods.backbones import CReLU

    alive: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str, pair: bool):
        def record(module, inputs, out):
            fired = (out != 0).transpose(0, 1).reshape(out.shape[1], -1).any(dim=1)
            if pair:  # CReLU: [relu(z), relu(-z)] along dim 1
                half = out.shape[1] // 2
                fired = fired[:half] | fired[half:]
            alive[name] = fired if name not in alive else alive[name] | fired
        return record

    for name, module in net.named_modules():
        if isinstance(module, (*UNIT_ACTIVATIONS, CReLU)):
            handles.append(module.register_forward_hook(hook(name, isinstance(module, CReLU))))
    was_training = net.training
    net.eval()
    try:
        for start in range(0, x.shape[0], batch_size):
            forward(x[start:start + batch_size])
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return {name: 1.0 - float(a.float().mean()) for name, a in alive.items()}
