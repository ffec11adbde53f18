"""The deep IDBD optimiser's foreach step is the per-tensor rule.

``ReferenceIDBD`` below is a verbatim copy of the per-tensor ``step`` that
methods/idbd.py had before it moved to torch._foreach_* ops (clorch 2026-12,
issue 21). Every variant (per weight, per layer, scalar; plain and normalised;
curvature grad_sq and none) runs several steps of real training next to it from
the same weights and batches, in float64, and every tensor the two keep
(weights, h, beta, v, the largest step-size) must agree within 1e-10 of the
reference's norm. Not bit for bit: the foreach step fuses products into its sums
(addcmul, addcdiv: one rounding where the rule has two) to make fewer passes over
the weights. In float64 that rounding is ~1e-15 (float32's would be ~1e-7, too
close to what a dropped small term changes), so any real difference stands out.
Where training is chaotic (lr 1 or 10, inputs x30) rounding grows ~10x a step,
so those tests allow 1e-8.
"""
from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods.idbd import IDBD


class ReferenceIDBD(IDBD):
    """IDBD with the pre-foreach per-tensor step (kept here as the reference; do not edit)."""

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

    def _step_shared(self, group, params):
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


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.Tanh(),
                         nn.Linear(12, 5)).double()


def _batches(n: int, scale: float = 1.0):
    gen = torch.Generator().manual_seed(1)
    return [(scale * torch.randn(32, 20, generator=gen, dtype=torch.float64), torch.randint(0, 5, (32,), generator=gen))
            for _ in range(n)]


def _train(opt_class, kw, batches, groups_of=None, frozen=()):
    net = _net()
    params = list(net.parameters())
    for i in frozen:
        params[i].requires_grad_(False)
    spec = ([{"params": [params[i] for i in ids], **extra} for ids, extra in groups_of] if groups_of else params)
    opt = opt_class(spec, **kw)
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net, opt


def _relative(x: torch.Tensor, y: torch.Tensor) -> float:
    """||x - y|| / ||y|| (0 when both are 0)."""
    x, y = x.detach().double(), y.detach().double()
    scale = float(y.norm())
    return float((x - y).norm()) / scale if scale > 0 else float((x - y).norm())


def _assert_same(a, b, tol: float = 1e-10):
    (net_a, opt_a), (net_b, opt_b) = a, b
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        assert _relative(pa, pb) <= tol
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert _relative(sa[k], sb[k]) <= tol, k
    assert _relative(opt_a._largest, opt_b._largest) <= tol
    for x, y in zip(opt_a.step_sizes(), opt_b.step_sizes()):
        assert _relative(x, y) <= tol


VARIANTS = list(itertools.product(("parameter", "layer", "scalar"), (False, True), ("grad_sq", "none")))


@pytest.mark.parametrize("groups,normalized,curvature", VARIANTS)
def test_foreach_step_equals_the_per_tensor_rule(groups, normalized, curvature):
    kw = dict(lr=0.05, meta_lr=0.05 if normalized else 0.5, groups=groups, normalized=normalized, curvature=curvature)
    batches = _batches(8)
    new, ref = _train(IDBD, kw, batches), _train(ReferenceIDBD, kw, batches)
    _assert_same(new, ref)
    # the step-sizes moved (the comparison is not of an idle optimiser)
    assert not torch.equal(new[1].step_sizes()[0], torch.full_like(new[1].step_sizes()[0], 0.05))


@pytest.mark.parametrize("groups", ("parameter", "layer", "scalar"))
def test_normalized_step_bound_active_equals_the_per_tensor_rule(groups):
    """Large inputs and step-sizes: sum(alpha c) > 1, so the bound's log-load subtraction runs."""
    kw = dict(lr=1.0, meta_lr=0.1, groups=groups, normalized=True)
    batches = _batches(6, scale=30.0)
    new, ref = _train(IDBD, kw, batches), _train(ReferenceIDBD, kw, batches)
    _assert_same(new, ref, tol=1e-8)  # chaotic training: rounding grows ~10x a step (see the module docstring)
    # the bound binds at the first step (h = 0, alpha = 1, large g): sum(alpha g^2) over what a beta governs is 1
    net, opt = _train(IDBD, kw, batches[:1])
    loads = [(alpha * p.grad ** 2).sum() for p, alpha in zip(net.parameters(), opt.step_sizes())]
    if groups == "scalar":
        loads = [sum((opt.step_sizes()[0] * p.grad ** 2).sum() for p in net.parameters())]
    assert max(float(x) for x in loads) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("groups", ("parameter", "layer", "scalar"))
def test_trace_decay_clamped_at_zero_equals_the_per_tensor_rule(groups):
    """Plain IDBD with alpha c > 1 somewhere: h's decay max(0, 1 - alpha c) is clamped at 0 there."""
    kw = dict(lr=10.0, meta_lr=0.01, groups=groups)
    batches = _batches(2, scale=30.0)
    new, ref = _train(IDBD, kw, batches), _train(ReferenceIDBD, kw, batches)
    _assert_same(new, ref, tol=1e-8)
    # the second step (h != 0 there) meets alpha c > 1: its step-sizes times its squared gradients
    net, opt = _train(IDBD, kw, batches[:1])
    h_before = [opt.state[p]["h"].clone() for p in net.parameters()]
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(batches[1][0]), batches[1][1]).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    opt.step()
    alphas = opt.step_sizes() if groups != "scalar" else opt.step_sizes() * len(grads)
    assert max(float((a * g.square()).max()) for a, g in zip(alphas, grads)) > 1.0
    assert any(bool(h.abs().max() > 0) for h in h_before)


@pytest.mark.parametrize("groups", ("parameter", "layer", "scalar"))
def test_param_groups_and_parameters_without_gradients_equal_the_per_tensor_rule(groups):
    groups_of = [((0, 1, 2), {"meta_lr": 0.2}), ((3, 4, 5), {"lr": 0.01, "normalized": True})]
    kw = dict(lr=0.05, meta_lr=0.5, groups=groups)
    batches = _batches(5)
    new = _train(IDBD, kw, batches, groups_of, frozen=(1, 4))
    ref = _train(ReferenceIDBD, kw, batches, groups_of, frozen=(1, 4))
    _assert_same(new, ref)
    assert "h" not in new[1].state[list(new[0].parameters())[1]]


def test_state_dict_round_trip_continues_identically():
    """A loaded state continues bit for bit as the optimiser it was saved from (which reuses its last
    exp(beta) where the loaded one computes it afresh)."""
    kw = dict(lr=0.05, meta_lr=0.05, normalized=True)
    batches = _batches(6)
    net, opt = _train(IDBD, kw, batches[:3])
    net2, opt2 = _train(IDBD, kw, batches[:3])
    fresh = IDBD(net.parameters(), **kw)
    fresh.load_state_dict(opt.state_dict())
    for x, y in batches[3:]:
        for n, o in ((net, fresh), (net2, opt2)):
            o.zero_grad(set_to_none=True)
            F.cross_entropy(n(x), y).backward()
            o.step()
    for pa, pb in zip(net.parameters(), net2.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("groups", ("parameter", "layer", "scalar"))
def test_betas_changed_between_steps_are_read_afresh(groups):
    """The normalised step reuses the last exp(beta) only while beta is untouched: an in-place
    change, or a state loaded into the same optimiser, is seen. A short tau: the step-size's part in the
    bound v's update is not lost below |z|, so a stale exp(beta) would change bits."""
    kw = dict(lr=0.05, meta_lr=0.05, groups=groups, normalized=True, tau=1.0)
    batches = _batches(6)
    runs = []
    for cls in (IDBD, ReferenceIDBD):
        net, opt = _train(cls, kw, batches[:2])
        for i, (x, y) in enumerate(batches[2:]):
            if i == 1:
                for st in opt.state.values():
                    if "beta" in st:
                        st["beta"].add_(0.25)
            if i == 2:
                state = copy.deepcopy(opt.state_dict())  # new tensors, other values: the memo must not match
                for st in state["state"].values():
                    if "beta" in st:
                        st["beta"].sub_(0.5)
                opt.load_state_dict(state)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        runs.append((net, opt))
    _assert_same(*runs)


@pytest.mark.parametrize("groups", ("parameter", "layer"))
def test_normalized_bound_binding_a_later_tensor_only_equals_the_per_tensor_rule(groups):
    """The bound runs when any load exceeds 1, not just the first tensor's: the parameters in reverse, so that
    the first tensor (the last layer's bias) stays under 1 while the weights above it bind."""
    kw = dict(lr=1.0, meta_lr=0.1, groups=groups, normalized=True)
    batches = _batches(3, scale=30.0)
    runs = []
    for cls in (IDBD, ReferenceIDBD):
        net = _net()
        opt = cls(list(net.parameters())[::-1], **kw)
        for i, (x, y) in enumerate(batches):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            if i == 0 and cls is IDBD:  # the first step: alpha = lr, so each load is lr sum(g^2)
                loads = [kw["lr"] * float(p.grad.square().sum()) for p in list(net.parameters())[::-1]]
                assert loads[0] <= 1.0 < max(loads[1:])
            opt.step()
        runs.append((net, opt))
    _assert_same(*runs, tol=1e-8)


@pytest.mark.parametrize("groups,normalized,curvature", VARIANTS)
def test_the_step_cuda_takes_equals_the_per_tensor_rule(groups, normalized, curvature, monkeypatch):
    """On CUDA the step bound always runs (no device read to skip it): the same path, forced here on the CPU."""
    import methods.idbd as idbd

    monkeypatch.setattr(idbd, "_may_bind", lambda load: True)
    kw = dict(lr=0.05, meta_lr=0.05 if normalized else 0.5, groups=groups, normalized=normalized, curvature=curvature)
    batches = _batches(8)
    _assert_same(_train(IDBD, kw, batches), _train(ReferenceIDBD, kw, batches))
