"""The fast per-step computations (issue 21) equal the formulas they replace.

Each fast path computes a penalty's value and gradient directly (PenaltyTerm,
methods/penalties.py) or shares a forward pass; the previous formula is kept
here (or in the class, as ``term``/``plain``) and both are compared: values,
gradients, second derivatives (the LoT scheduler differentiates the
gradient), and whole training runs where the change is in the loop.
"""
import pytest
import torch
from torch import nn

import methods.fisher as fisher_module
from datasets.benchmark import DeviceSplit
from methods import METHODS, MethodContext, seed_everything
from methods.backbones import MLP
from methods.buffer import ReplayBuffer
from methods.fisher import diagonal_fisher, fisher_chunk
from methods.halrp import LowRankPenalty
from methods.halrp_layers import PerturbedConv2d, PerturbedLinear
from methods.network import TaskNetwork
from methods.penalties import L2Penalty, WassersteinPenalty, argsort
from methods.rehearsal import per_sample

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def net_of(dtype, seed=0, hidden=(30, 12), classes=(3, 4)):
    torch.manual_seed(seed)
    ctx = MethodContext((7,), classes, "task_incremental", CPU, seed)
    return TaskNetwork(MLP((7,), list(hidden)), ctx).to(dtype)


def old_weight_penalty(pen, net, stable=True):
    """The previous WeightPenalty.loss: the plain formula per tensor, through autograd (Wasserstein:
    through torch.sort, stable or not: they differ only in which of equal weights gets which target)."""
    def term(k, w):
        if isinstance(pen, WassersteinPenalty):
            return (torch.sort(w.flatten(), stable=stable).values - pen.sorted_init[k]).pow(2).sum()
        return w.pow(2).sum()
    terms = [term(k, w) for k, w in net.named_parameters()
             if w.requires_grad and (pen.scope is None or k in pen.scope)]
    return pen.lam * torch.stack(terms).sum()


def grads_and_hvp(loss_fn, ws, v):
    """(value, gradient, Hessian-vector product with v) of loss_fn() w.r.t. ws, the gradient twice: from a plain
    backward (the path training takes: a PenaltyTerm's value_and_grad) and under create_graph (its ``gradient``,
    which the Hessian-vector product differentiates)."""
    plain = torch.autograd.grad(loss_fn(), ws)
    value = loss_fn()
    g = torch.autograd.grad(value, ws, create_graph=True)
    hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, v)), ws)
    return value.detach(), list(plain) + [x.detach() for x in g], hv


def assert_same(fast, old, rtol):
    (v1, g1, h1), (v2, g2, h2) = fast, old
    assert torch.allclose(v1, v2, rtol=rtol, atol=0), (v1, v2)
    for a, b in zip(g1 + list(h1), g2 + list(h2)):
        assert torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max())), (a - b).abs().max()


def shaken(net, scale=0.2, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in net.parameters():
            w.add_(scale * torch.randn(w.shape, generator=g, dtype=w.dtype))
    return net


# ---------------------------------------------------------------- argsort
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 70_000])
def test_argsort_is_the_stable_sort_also_with_ties_and_signed_zeros(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g)
    x[::5] = 0.0
    x[::7] = -0.0
    x[::11] = 1.25
    x[::13] = float("-inf")
    assert torch.equal(argsort(x), torch.sort(x, stable=True).indices)
    assert torch.equal(argsort(x.double()), torch.sort(x.double(), stable=True).indices)


# ---------------------------------------------------------------- L2 and Wasserstein
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["l2", "wasserstein"])
def test_weight_penalty_value_gradient_and_hessian_equal_the_plain_formula(dtype, kind):
    net = net_of(dtype)
    pen = L2Penalty(0.3) if kind == "l2" else WassersteinPenalty(0.3, net)
    shaken(net)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    for ties in (False, True):
        if ties:  # equal weights inside a tensor, both zeros among them: the stable formula is the reference
            with torch.no_grad():
                net.backbone[1].weight.view(-1)[:6] = torch.tensor([0.5, 0.5, 0.0, -0.0, 0.5, -0.0], dtype=dtype)
        for task in (None, 1):
            pen.begin_task(net, task)
            ws = [w for k, w in net.named_parameters() if pen.scope is None or k in pen.scope]
            v = [torch.randn_like(w) for w in ws]
            assert_same(grads_and_hvp(lambda: pen.loss(net), ws, v),
                        grads_and_hvp(lambda: old_weight_penalty(pen, net, stable=ties), ws, v), rtol)


def test_wasserstein_value_and_gradient_by_hand():
    net = net_of(torch.float32, hidden=(2,), classes=(2,))
    pen = WassersteinPenalty(0.5, net)
    pen.scope = {"heads.0.bias"}
    pen.sorted_init["heads.0.bias"] = torch.tensor([-1.0, 2.0])
    b = net.heads[0].bias
    with torch.no_grad():
        b.copy_(torch.tensor([3.0, 0.5]))  # sorted: [0.5, 3.0]; 3.0 has rank 1 (target 2.0), 0.5 rank 0 (-1.0)
    loss = pen.loss(net)
    (grad,) = torch.autograd.grad(loss, [b])
    assert loss.item() == pytest.approx(0.5 * ((0.5 + 1.0) ** 2 + (3.0 - 2.0) ** 2))
    assert grad.tolist() == [2 * 0.5 * (3.0 - 2.0), 2 * 0.5 * (0.5 + 1.0)]


def test_weight_penalty_scales_with_the_incoming_gradient_and_skips_frozen_weights():
    net = shaken(net_of(torch.float32))
    net.backbone[1].weight.requires_grad_(False)
    for pen in (L2Penalty(0.1), WassersteinPenalty(0.1, net)):
        pen.begin_task(net, 0)
        assert all(w.requires_grad for _, w in pen.in_scope(net))
        ws = [w for _, w in pen.in_scope(net)]
        fast = torch.autograd.grad(2.5 * pen.loss(net), ws)
        old = torch.autograd.grad(2.5 * old_weight_penalty(pen, net), ws)
        for a, b in zip(fast, old):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- EWC
@pytest.mark.parametrize("kind", ["l2", "wasserstein", "ewc"])
def test_a_second_backward_through_a_retained_graph_adds_the_same_penalty_gradient(kind, digits):
    if kind == "ewc":
        entry = METHODS.get("ewc")
        seed_everything(0)
        ctx = MethodContext(digits.input_shape, digits.classes_per_task, "task_incremental", CPU, 0)
        m = entry.target(entry.params(ewc_lambda=50.0, training={"epochs": 1}), ctx)
        m.learn_task(0, digits.split(0, CPU, "train", "task_incremental"))
        pen, net = m.fisher_penalty, shaken(m.net, 0.05)
    else:
        net = shaken(net_of(torch.float32))
        pen = L2Penalty(0.1) if kind == "l2" else WassersteinPenalty(0.1, net_of(torch.float32))
    net.zero_grad(set_to_none=True)  # training left its last gradients
    once = pen.loss(net)
    once.backward()
    single = [w.grad.clone() for w in net.parameters() if w.grad is not None]
    net.zero_grad(set_to_none=True)
    twice = pen.loss(net) * 3.0  # an incoming gradient other than 1
    twice.backward(retain_graph=True)
    twice.backward()
    double = [w.grad for w in net.parameters() if w.grad is not None]
    assert len(single) == len(double) > 0
    for a, b in zip(single, double):
        assert torch.allclose(b, 6.0 * a, rtol=1e-5, atol=1e-7)


def ewc_old_loss(pen, net):
    """The previous FisherPenalty.loss, walking the named parameters."""
    total = sum((pen.importance[k] * (w - pen.anchor[k]).pow(2)).sum()
                for k, w in net.named_parameters() if k in pen.importance)
    return 0.5 * pen.p.ewc_lambda * total


@pytest.mark.parametrize("online", [False, True])
def test_ewc_value_gradient_and_hessian_equal_the_named_parameter_formula(digits, online):
    entry = METHODS.get("ewc")
    seed_everything(0)
    ctx = MethodContext(digits.input_shape, digits.classes_per_task, "task_incremental", CPU, 0)
    m = entry.target(entry.params(ewc_lambda=30.0, online=online, gamma=0.7, epochs=1), ctx)
    for t in (0, 1):
        m.learn_task(t, digits.tasks[t].on(CPU, "train"))
        pen = m.fisher_penalty
        shaken(m.net, 0.05, seed=t)
        ws = list(m.net.parameters())
        v = [torch.randn_like(w) for w in ws]
        assert_same(grads_and_hvp(lambda: pen.loss(m.net), ws, v),
                    grads_and_hvp(lambda: ewc_old_loss(pen, m.net), ws, v), 1e-5)
    # a loaded state (other importances) is what the next loss uses, not the cached one
    state = m.state_dict()
    state["penalties"][0]["importance"] = {k: 2 * a for k, a in state["penalties"][0]["importance"].items()}
    m.load_state_dict(state)
    assert m.fisher_penalty.loss(m.net).item() == pytest.approx(ewc_old_loss(m.fisher_penalty, m.net).item(),
                                                              rel=1e-5)


# ---------------------------------------------------------------- HALRP
def test_halrp_low_rank_penalty_equals_its_plain_formula():
    torch.manual_seed(0)
    lin, conv = nn.Linear(30, 20), nn.Conv2d(3, 5, 3)
    layers = [PerturbedLinear(lin.weight, lin.bias, 4), PerturbedConv2d(conv, conv.bias, 2)]
    with torch.no_grad():
        for layer in layers:
            for w in layer.parameters():
                w.add_(torch.randn_like(w))
            layer.factor_in[0, :3] = 0.0  # pruned entries: |.| has the subgradient 0 there, as autograd's
    for target in (0.0, 1.0):
        pen = LowRankPenalty(layers, 1e-2, 3e-2, target)
        ws = pen.factors + pen.scales
        v = [torch.randn_like(w) for w in ws]
        assert_same(grads_and_hvp(pen.loss, ws, v), grads_and_hvp(pen.plain, ws, v), 1e-5)


# ---------------------------------------------------------------- Fisher memory
def test_fisher_chunk_follows_the_memory_budget():
    assert fisher_chunk(3_000_000, 4) == 22  # the HALRP LeNet: 12 MB of gradients per sample
    assert fisher_chunk(100_000, 4) == 256  # small nets keep the old chunk
    assert fisher_chunk(10**9, 4) == 1
    assert fisher_chunk(1000, 4, budget=40_000) == 10


@pytest.mark.parametrize("kind", ["empirical", "expected"])
def test_fisher_under_a_small_budget_holds_few_gradients_and_gives_the_same_values(kind, monkeypatch):
    torch.manual_seed(0)
    ctx = MethodContext((4,), (3,), "task_incremental", CPU, 0)
    net = TaskNetwork(MLP((4,), [5]), ctx)
    x, y = torch.randn(37, 4), torch.randint(0, 3, (37,))
    n_params = sum(w.numel() for w in net.parameters())
    seen = []
    vmap = fisher_module.vmap

    def spy(fn, **kw):
        mapped = vmap(fn, **kw)

        def call(p, xb, yb):
            seen.append(xb.shape[0])
            return mapped(p, xb, yb)
        return call

    monkeypatch.setattr(fisher_module, "vmap", spy)
    budget = 5 * n_params * 4  # five samples' gradients
    small = diagonal_fisher(net, 0, x, y, kind, memory=budget)
    assert max(seen) == 5 and sum(seen) == 37 * (1 if kind == "empirical" else 3)
    whole = diagonal_fisher(net, 0, x, y, kind, chunk=256)
    for k in whole:
        assert torch.allclose(small[k], whole[k], rtol=1e-5, atol=1e-8), k


# ---------------------------------------------------------------- rehearsal: one backbone pass
def rehearsal_run(name, setting, merged, backbone=None):
    entry = METHODS.get(name)
    seed_everything(0)
    ctx = MethodContext((20,), (2, 2, 2), setting, CPU, 0)
    m = entry.target(entry.params.model_validate({
        "network": backbone or {"backbone": "mlp", "hidden": [32]}, "training": {"epochs": 2, "batch_size": 16},
        "optimizer": {"name": "sgd", "lr": 0.05}, "buffer": {"size": 50, "batch_size": 8}}), ctx)
    assert m.merged  # an MLP computes every sample on its own
    m.merged = merged
    m.backbone_calls = 0

    def count(*_):
        m.backbone_calls += 1
    m.net.backbone.register_forward_hook(count)
    for k in range(3):
        g = torch.Generator().manual_seed(k)
        low = 2 * k if setting == "class_incremental" else 0
        m.learn_task(k, DeviceSplit(torch.randn(100, 20, generator=g), torch.randint(low, low + 2, (100,), generator=g)))
    return m


@pytest.mark.parametrize("setting", ["class_incremental", "task_incremental"])
@pytest.mark.parametrize("name", ["er", "der", "der_pp"])
def test_replay_through_one_backbone_pass_trains_as_separate_passes(name, setting):
    one, separate = rehearsal_run(name, setting, True), rehearsal_run(name, setting, False)
    # 3 tasks x 2 epochs x 7 batches, one backbone pass each; the buffer fills from the first step on, so every
    # later step replays: separately that is 1 (ER, DER) or 2 (DER++) more passes a step
    steps = 3 * 2 * 7
    assert one.backbone_calls == steps
    assert separate.backbone_calls == steps + (steps - 1) * (2 if name == "der_pp" else 1)
    for a, b in zip(one.net.parameters(), separate.net.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    assert torch.equal(one.buffer.y, separate.buffer.y) and torch.equal(one.buffer.x, separate.buffer.x)


def test_batch_statistics_or_dropout_keep_their_own_passes():
    assert per_sample(MLP((4,), [5, 5])) and per_sample(MLP((4,), [5], activation="crelu"))
    assert not per_sample(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    assert not per_sample(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))

    class Custom(nn.Sequential):
        def forward(self, x):
            return super().forward(x - x.mean(0))  # mixes the samples of a batch
    assert not per_sample(Custom(nn.Linear(4, 4)))


class OldReservoir(ReplayBuffer):
    """The previous reservoir insertion, kept as the reference."""

    def add(self, x, y, task, logits=None):
        n = x.shape[0]
        if n == 0:
            return
        x, y = x.detach(), y.detach()
        tasks = task.detach() if isinstance(task, torch.Tensor) else torch.full((n,), int(task), device=x.device)
        self._allocate(x, logits)
        self._old_reservoir(x, y, tasks, logits)
        self.seen += n

    def _old_write(self, slots, rows, x, y, tasks, logits):
        self.x[slots] = x[rows].to(self.device)
        self.y[slots] = y[rows].to(self.device)
        self.task[slots] = tasks[rows].to(self.device)
        if logits is not None:
            self.logits[slots] = logits.detach()[rows].to(self.device)

    def _old_reservoir(self, x, y, tasks, logits):
        n = x.shape[0]
        free = min(self.size - self.filled, n)
        if free > 0:
            slots = torch.arange(self.filled, self.filled + free, device=self.device)
            self._old_write(slots, torch.arange(free, device=self.device), x, y, tasks, logits)
            self.filled += free
        if free == n:
            return
        rest = torch.arange(free, n)
        counts = (self.seen + rest + 1).double()
        draws = (torch.rand(len(rest), generator=self.generator, dtype=torch.float64) * counts).long()
        taken = draws < self.size
        slots, rows = draws[taken], rest[taken]
        if slots.numel() == 0:
            return
        winner = torch.full((self.size,), -1, dtype=torch.long).scatter_reduce_(0, slots, rows, "amax")
        won = torch.nonzero(winner >= 0).squeeze(1)
        self._old_write(won.to(self.device), winner[won].to(x.device), x, y, tasks, logits)


@pytest.mark.parametrize("tensor_tasks", [False, True])
def test_reservoir_insertion_keeps_exactly_what_the_previous_code_kept(tensor_tasks):
    new, old = ReplayBuffer(37, "reservoir", CPU, 3), OldReservoir(37, "reservoir", CPU, 3)
    g = torch.Generator().manual_seed(0)
    for step in range(60):
        n = int(torch.randint(1, 20, (1,), generator=g))
        x, y, z = torch.randn(n, 3, generator=g), torch.randint(0, 9, (n,), generator=g), torch.randn(n, 4, generator=g)
        task = torch.randint(0, 5, (n,), generator=g) if tensor_tasks else step % 5
        for b in (new, old):
            b.add(x, y, task, logits=z)
        for field in ("x", "y", "task", "logits"):
            assert torch.equal(getattr(new, field), getattr(old, field)), (step, field)
        assert (new.filled, new.seen) == (old.filled, old.seen)
    assert torch.equal(new.generator.get_state(), old.generator.get_state())
