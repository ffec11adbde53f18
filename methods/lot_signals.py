"""Per-layer quantities of the loss-of-trainability threshold (specs/lot.md, the
section "Authors' research code", which supersedes the spec's older forms).

A *layer* is a module's own parameters (a Linear's weight and bias): what one
Adam param group holds and what gets one learning rate. On one minibatch of B
samples, for each layer L with parameters theta_L:

- signal G = ||mean_i g_i||^2 and noise sigma^2 = (1/B) sum_i ||g_i - mean g||^2,
  g_i the gradient of sample i's loss w.r.t. theta_L (torch.func: vmap over
  grad; for an nn.Linear layer through g_i = d_i a_i^T without forming the B
  per-sample weight gradients, for other layers in chunks so that theirs fit
  in memory: ``signal_and_noise_tensors``);
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
training uses is touched, so measuring does not change the training run. The
``*_tensors`` / ``rayleigh_quotient`` / ``adam_moments`` forms leave their
results on the device, so that the scheduler's control step reads the host once.
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
    """Per layer (G, sigma^2) from the per-sample gradients of ``loss`` on (x, y), as floats.

    ``mean_grad`` (parameter name -> mean minibatch gradient) saves one backward
    when the caller has it. See ``signal_and_noise_tensors`` (the same, on the
    device, without a sync) for how sigma^2 is computed.
    """
    out = signal_and_noise_tensors(net, loss, layers, x, y, mean_grad, chunk)
    return {layer: (float(signal), float(noise)) for layer, (signal, noise) in out.items()}


def signal_and_noise_tensors(net: nn.Module, loss: Loss, layers: Layers, x: torch.Tensor, y: torch.Tensor,
                             mean_grad: dict[str, torch.Tensor] | None = None,
                             chunk: int = 16) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (G, sigma^2) as 0-d float64 tensors on ``x``'s device (no host sync).

    sigma^2 = (1/B) sum_i ||g_i - mean g||^2, g_i the gradient of sample i's loss
    ``loss(x[i:i+1], y[i:i+1])`` (torch.func: vmap over grad, every sample its own
    batch of one). Two ways to the same sum, by layer:

    - an ``nn.Linear`` that runs once per sample on a vector (``_linear_probe``):
      its per-sample gradients are g_i(W) = d_i a_i^T and g_i(b) = d_i, with a_i
      the layer's input and d_i the gradient of sample i's loss w.r.t. its output
      (one vmap(grad) w.r.t. a zero added to the output gives every d_i). Then
      sum_i ||d_i a_i^T - M||^2 = sum_i ||d_i||^2 ||a_i||^2 - 2 <M, D^T A> + B ||M||^2
      (M the mean gradient): the B per-sample weight gradients are never formed.
      The bias's sum is the two-pass sum_i ||d_i - m||^2 itself.
    - any other parameter: its per-sample gradients, in chunks of ``chunk``
      samples, and the exact two-pass sum of ||g_i - mean g||^2.

    Both are sums in float64 of float terms; the identity trades the two-pass
    form's exactness for cost, and its cancellation is harmless where tau
    matters (its relative error is about eps * (1 + 4 G / sigma^2), and
    G / sigma^2 = tau / B). ``mean_grad`` as in ``signal_and_noise``.
    """
    names = [k for params in layers.values() for k, _ in params]
    live = {k: w for params in layers.values() for k, w in params}
    if mean_grad is None:
        g = torch.autograd.grad(loss(x, y), [live[k] for k in names])
        mean_grad = {k: gk.detach() for k, gk in zip(names, g)}
    linear = _linear_probe(net, loss, layers, x[:1], y[:1])
    by_identity = {k for module in linear.values() for k in module["params"].values()}
    rest = [k for k in names if k not in by_identity]
    wrapper = _LossOf(net, loss)
    detached = {f"net.{k}": live[k].detach() for k in rest}
    acts: dict[str, torch.Tensor] = {}
    eps_now: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module, inputs, output):
            acts[name] = inputs[0]
            return output + eps_now[name]
        return record

    def sample_loss(eps, p, xi, yi):
        eps_now.clear()
        eps_now.update(eps)
        acts.clear()
        out = functional_call(wrapper, p, (xi.unsqueeze(0), yi.unsqueeze(0)))
        return out, dict(acts)

    per_sample = vmap(grad(sample_loss, argnums=(0, 1), has_aux=True), in_dims=(0, None, 0, 0))
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    spread = {k: zero.clone() for k in names}
    step = chunk if rest else x.shape[0]  # the identity needs no per-sample weight gradients: one pass
    handles = [net.get_submodule(name).register_forward_hook(hook(name)) for name in linear]
    try:
        with torch.no_grad():  # grad() still differentiates its inputs; the net's own weights build no graph
            for start in range(0, x.shape[0], step):
                xs, ys = x[start:start + step], y[start:start + step]
                eps = {name: torch.zeros((xs.shape[0], 1, m["out"]), dtype=m["dtype"], device=x.device)
                       for name, m in linear.items()}
                (d_out, grads), inputs = per_sample(eps, detached, xs, ys)
                for k in rest:
                    d = grads[f"net.{k}"].sub_(mean_grad[k]).flatten(1)  # in place: these are ours
                    spread[k] += torch.linalg.vecdot(d, d).sum(dtype=torch.float64)
                for name, m in linear.items():
                    dz, a = d_out[name].flatten(1), inputs[name].flatten(1)  # (b, out), (b, in)
                    w, b = m["params"]["weight"], m["params"].get("bias")
                    mw = mean_grad[w]
                    spread[w] += ((dz.double().pow(2).sum(1) * a.double().pow(2).sum(1)).sum()
                                  - 2 * (dz.double().T @ a.double()).mul_(mw.double()).sum())  # float64: the terms cancel
                    if b is not None:
                        d = dz - mean_grad[b]
                        spread[b] += torch.linalg.vecdot(d, d).sum(dtype=torch.float64)
    finally:
        for h in handles:
            h.remove()
    for m in linear.values():  # the + B ||M||^2 of the identity, once for the whole batch
        w = m["params"]["weight"]
        spread[w] += x.shape[0] * mean_grad[w].double().pow(2).sum()
    out = {}
    for layer, params in layers.items():
        signal = sum(mean_grad[k].double().pow(2).sum() for k, _ in params)
        noise = sum(spread[k] for k, _ in params) / x.shape[0]
        out[layer] = (signal, noise)
    return out


def _linear_probe(net: nn.Module, loss: Loss, layers: Layers, x1: torch.Tensor, y1: torch.Tensor) -> dict[str, dict]:
    """The layers whose per-sample gradients follow from their inputs and output gradients:
    plain ``nn.Linear`` modules (not a subclass) with their own weight (and bias) as the layer,
    that run exactly once on a one-sample batch of vectors (checked on ``x1``, one sample)."""
    candidates = {}
    for name, params in layers.items():
        if name == "<root>":
            continue
        module = net.get_submodule(name)
        if type(module) is not nn.Linear:
            continue
        own = dict(params)
        wanted = {f"{name}.weight": "weight", **({f"{name}.bias": "bias"} if module.bias is not None else {})}
        if set(own) != set(wanted) or own[f"{name}.weight"] is not module.weight:
            continue
        candidates[name] = {"params": {role: k for k, role in wanted.items()}, "calls": [],
                            "out": module.out_features, "dtype": module.weight.dtype}
    if not candidates:
        return {}

    def watch(name: str):
        def record(module, inputs, output):
            candidates[name]["calls"].append((inputs[0].shape, output.shape))
        return record

    handles = [net.get_submodule(name).register_forward_hook(watch(name)) for name in candidates]
    was_training = net.training
    net.eval()  # no buffer update, no dropout draw: the probe only watches which layers run, on what
    try:
        with torch.no_grad():
            loss(x1, y1)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return {name: m for name, m in candidates.items()
            if len(m["calls"]) == 1 and len(m["calls"][0][0]) == 2 and m["calls"][0][0][0] == 1
            and tuple(m["calls"][0][1]) == (1, m["out"])}


def rayleigh_sharpness(grads: list[torch.Tensor], params: list[torch.Tensor], v: list[torch.Tensor],
                       iters: int = 1) -> tuple[float, list[torch.Tensor]]:
    """|v^T H v| after ``iters`` power-iteration steps from ``v``, and the new unit vector.

    ``grads`` are d loss / d ``params`` built with create_graph=True; H is the
    Hessian block of ``params`` alone (double backward of g . v w.r.t. params).
    v is normalised first; a step whose Hv is 0 keeps v (and reports 0).
    """
    quotient, v = rayleigh_quotient(grads, params, v, iters)
    return abs(float(quotient)), v


def rayleigh_quotient(grads: list[torch.Tensor], params: list[torch.Tensor], v: list[torch.Tensor],
                      iters: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``rayleigh_sharpness`` without the host sync: (v^T H v as a 0-d tensor, the new unit vector)."""
    norm = torch.sqrt(sum(t.pow(2).sum() for t in v))
    v = [t / norm for t in v]
    quotient = torch.zeros((), device=params[0].device)
    for _ in range(iters):
        dot = sum((g * t).sum() for g, t in zip(grads, v))
        if not dot.requires_grad:  # the loss is at most linear in these parameters: H = 0
            return torch.zeros((), device=params[0].device), v
        hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(w) if h is None else h for w, h in zip(params, hv)]
        quotient = sum((h * t).sum() for h, t in zip(hv, v))
        hv_norm = torch.sqrt(sum(h.pow(2).sum() for h in hv))
        positive = hv_norm > 0  # on the device: where() instead of a branch on the host
        v = [torch.where(positive, h.detach() / hv_norm, t) for h, t in zip(hv, v)]
    return quotient, v


def _adam_state(optimizer: torch.optim.Adam, w: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """(v, step) of one parameter of an Adam param group; None before its first step.

    torch's Adam keeps ``step`` on the CPU (unless capturable or fused): reading it is no device sync.
    """
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
    reads = adam_moments(optimizer, group, weights_only)
    if reads is None:
        return None
    return effective_step_from(group, reads, [(float(mean), float(total)) for _, mean, total, _, _ in reads])


Moments = list[tuple[float, torch.Tensor, torch.Tensor, int, bool]]  # per tensor: t, mean(v), sum(v), numel, counts


def adam_moments(optimizer: torch.optim.Adam, group: dict, weights_only: bool = True) -> Moments | None:
    """What ``adam_effective_step`` reads of each tensor of the group, left on the device: (t,
    mean(v) and sum(v) as 0-d float64 tensors, numel, whether it counts in eta_eff); None when
    that step is None (before the first step, or no tensor to read)."""
    reads: Moments = []
    for w in group["params"]:
        state = _adam_state(optimizer, w)
        if state is None:
            return None
        v, t = state
        v64 = v.double()
        reads.append((t, v64.mean(), v64.sum(), v.numel(), w.ndim >= 2 or not weights_only))
    if not any(r[4] for r in reads) or sum(r[3] for r in reads) == 0:
        return None
    return reads


def effective_step_from(group: dict, reads: Moments, values: list[tuple[float, float]]) -> tuple[float, float]:
    """(eta_eff, alpha_agg) from ``adam_moments``' reads, with ``values`` their (mean(v), sum(v)) as floats."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    steps: list[float] = []
    v_sum = 0.0
    count = 0
    for (t, _, _, numel, counts), (mean_v, total_v) in zip(reads, values):
        bc1, bc2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        if counts:
            steps.append(lr / (bc1 * (math.sqrt(mean_v / bc2) + eps)))
        v_sum += total_v / bc2
        count += numel
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
