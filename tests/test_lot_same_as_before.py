"""The LoT control step after issue 21 (fast per-sample noise, one host sync) decides as before.

The functions below are verbatim copies of methods/lot_signals.py's
``signal_and_noise``, ``rayleigh_sharpness``, ``_adam_state`` and
``adam_effective_step`` and of ``LotScheduler.control`` as they were before
(clorch 2026-12): per-sample gradients materialised by vmap(grad) in chunks of
16, a float() per quantity. The new control step must take the same actions and
reach the same lrs on a fixed seed, with the same G, eta_eff, sharpness and
alpha_agg bit for bit, and sigma^2 (now from the per-sample identity for linear
layers) and tau equal to float precision.
"""
from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from methods import METHODS, MethodContext, seed_everything
from methods.backbones import MLP, SmallCNN
from methods.lot_scheduler import COOL, KEEP, WARM, lot_action
from methods.lot_signals import Layers, Loss, _LossOf, layer_groups, signal_and_noise, threshold
from methods.network import TaskNetwork

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- the old code, verbatim
def old_signal_and_noise(net: nn.Module, loss: Loss, layers: Layers, x: torch.Tensor, y: torch.Tensor,
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


def old_rayleigh_sharpness(grads: list[torch.Tensor], params: list[torch.Tensor], v: list[torch.Tensor],
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


def old_adam_effective_step(optimizer: torch.optim.Adam, group: dict,
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


def old_control(self, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, dict[str, float]]:
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
        noise = old_signal_and_noise(self.net, self.loss, active, xb, yb, {k: g.detach() for k, g in data.items()})
        for name, params in active.items():
            step = old_adam_effective_step(self.optimizer, self.groups[name], p.weights_only)
            if step is None:
                continue
            eta_eff, alpha_agg = step
            vector = self.vectors.get(name) or [
                torch.randn(w.shape, generator=self.generator).to(w.device) for _, w in params]
            sharpness, self.vectors[name] = old_rayleigh_sharpness(
                [full[k] for k, _ in params], [w for _, w in params], vector, p.power_iters)
            signal = float(sum(full[k].detach().double().pow(2).sum() for k, _ in params))  # G of the full loss
            sigma2 = noise[name][1]
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


# ---------------------------------------------------------------- the new against the old
class Tied(nn.Module):
    """One Linear applied twice (its per-sample gradient is a sum of two outer products)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3, bias=False)

    def forward(self, x, task=0):
        return self.out(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


def _nets():
    torch.manual_seed(0)
    mlp = TaskNetwork(MLP((6,), [8, 7]), MethodContext((6,), (3, 3), "task_incremental", CPU, 0))
    crelu = TaskNetwork(MLP((6,), [8, 7], activation="crelu"), MethodContext((6,), (3,), "domain_incremental", CPU, 0))
    cnn = TaskNetwork(SmallCNN((2, 6, 6), [3, 4]), MethodContext((2, 6, 6), (3,), "domain_incremental", CPU, 0))
    return {"mlp": (mlp, (6,)), "crelu": (crelu, (6,)), "small_cnn": (cnn, (2, 6, 6)), "tied": (Tied(), (6,))}


@pytest.mark.parametrize("name", ["mlp", "crelu", "small_cnn", "tied"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signal_and_noise_equal_the_old_materialised_per_sample_gradients(name, dtype):
    net, shape = _nets()[name]
    net = net.to(dtype).eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn((37, *shape), generator=gen, dtype=dtype), torch.randint(0, 3, (37,), generator=gen)

    def loss(xb, yb):
        return F.cross_entropy(net(xb, 0), yb)

    layers = {k: v for k, v in layer_groups(net).items() if k != "heads.1"}  # heads.1 takes no part
    new, old = signal_and_noise(net, loss, layers, x, y), old_signal_and_noise(net, loss, layers, x, y)
    assert new.keys() == old.keys() == layers.keys()
    for layer in layers:
        assert new[layer][0] == old[layer][0]  # G: the same computation
        assert new[layer][1] == pytest.approx(old[layer][1], rel=1e-5 if dtype == torch.float32 else 1e-12), layer
    assert not any(p.grad is not None for p in net.parameters())  # it only reads


def test_signal_and_noise_stay_exact_when_the_signal_dwarfs_the_noise():
    """Nearly identical samples: G / sigma^2 ~ 1e6. The identity's terms cancel to 1e-6 of their size, so they
    are summed in float64 (a float32 cross term D^T A was off by ~10% here); the old two-pass sum is the truth."""
    net = TaskNetwork(MLP((6,), [8]), MethodContext((6,), (3,), "domain_incremental", CPU, 0)).eval()
    gen = torch.Generator().manual_seed(2)
    base = torch.randn((1, 6), generator=gen)
    x = base + 1e-4 * torch.randn((64, 6), generator=gen)
    y = torch.zeros(64, dtype=torch.long)

    def loss(xb, yb):
        return F.cross_entropy(net(xb, 0), yb)

    layers = layer_groups(net)
    new, old = signal_and_noise(net, loss, layers, x, y), old_signal_and_noise(net, loss, layers, x, y)
    for layer in layers:
        signal, noise = old[layer]
        assert signal / noise > 1e5, layer  # the regime this is about
        assert new[layer][1] == pytest.approx(noise, rel=1e-2), layer


def _finetune(digits, **lot):
    entry = METHODS.get("finetune")
    seed_everything(0)
    ctx = MethodContext(digits.input_shape, digits.classes_per_task, "task_incremental", CPU, 0)
    return entry.target(entry.params(
        optimizer={"name": "adam", "lr": 0.01}, training={"epochs": 2, "batch_size": 32, "reset_optimizer": False},
        lr_scheduler={"name": "lot", **lot}, penalties=[{"name": "l2", "lambda": 1e-3}]), ctx)


EXACT = ("lr", "eta_eff", "G", "sharpness", "s", "V", "action")


@pytest.mark.parametrize("threshold_form", ["noise_only", "combined"])
def test_control_decides_as_before_on_a_fixed_seed(digits, threshold_form):
    """Two tasks of finetune + l2 with a control step at every step, tuned so that it cools and
    warms often: the old control step and the new take the same actions at the same steps and
    leave the same lrs and the same weights."""
    lot = dict(every=1, floor=0.0, warm_fraction=0.5, warm=1.5, safety=0.9, threshold=threshold_form)
    new, old = _finetune(digits, **lot), _finetune(digits, **lot)
    old.scheduler.control = old_control.__get__(old.scheduler)
    for t in (0, 1):
        for m in (new, old):
            m.learn_task(t, digits.tasks[t].on(CPU, "train"))
    rows_new, rows_old = new.scheduler.rows, old.scheduler.rows
    assert [r["step"] for r in rows_new] == [r["step"] for r in rows_old] and len(rows_new) > 20
    actions = []
    for a, b in zip(rows_new, rows_old):
        assert a["layers"].keys() == b["layers"].keys()
        for layer, q in a["layers"].items():
            for k in EXACT:
                assert q[k] == b["layers"][layer][k], (a["step"], layer, k)
            for k in ("sigma2", "tau"):
                assert q[k] == pytest.approx(b["layers"][layer][k], rel=1e-5), (a["step"], layer, k)
            actions.append(q["action"])
    assert actions.count(COOL) > 5 and actions.count(WARM) > 5 and actions.count(KEEP) > 5
    assert new.scheduler.lrs == old.scheduler.lrs
    assert all(torch.equal(p, q) for p, q in zip(new.net.parameters(), old.net.parameters()))


def test_control_reads_the_device_once(digits, monkeypatch):
    """GPU safety: one control step moves its numbers to the host in ONE read (a tolist of a stacked
    tensor); no float(), .item() or bool() of a tensor, except Adam's step counters (CPU tensors)."""
    m = _finetune(digits, every=10_000)
    data = digits.tasks[0].on(CPU, "train")
    m.learn_task(0, data)
    s = m.scheduler
    s.begin(m.optimizer, lambda xb, yb: F.cross_entropy(m.net(xb, 0), yb), total_steps=100)
    m.optimizer.zero_grad()
    F.cross_entropy(m.net(data.x[:32], 0), data.y[:32]).backward()
    counters = {id(st["step"]) for st in m.optimizer.state.values()}
    reads = []
    for method in ("__float__", "__bool__", "item", "tolist", "__int__", "numpy"):
        original = getattr(torch.Tensor, method)

        def spy(self, *a, _name=method, _original=original, **kw):
            if not (_name == "__float__" and id(self) in counters):
                reads.append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, method, spy)
    s.control(data.x[:32], data.y[:32])  # the first: draws the power-iteration vectors
    reads.clear()
    s.control(data.x[:32], data.y[:32])
    assert reads == ["tolist"]
