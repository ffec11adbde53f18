"""Baselines every comparison needs: EWC (and online EWC), joint training, finetune with IDBD."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import datasets
import methods
from methods import METHODS, MethodContext, seed_everything
from methods.fisher import diagonal_fisher
from methods.idbd import IDBD
from methods.network import TaskNetwork
from methods.backbones import MLP
from orchestrator.results import stats
from orchestrator.study.schema import TrialSpec
from orchestrator.results.records import matrix_array
from orchestrator.run.trial import run_trial

CPU = torch.device("cpu")



def spec(method, order, **params):
    p = METHODS.get(method).params(**{"epochs": 2, **params}).model_dump()
    return TrialSpec("t", "c", method, method, p, tuple(order), 0, 0, "task_incremental", False)


def make(method, bench, seed=0, **params):
    entry = METHODS.get(method)
    seed_everything(seed)
    ctx = MethodContext(bench.input_shape, bench.classes_per_task, "task_incremental", CPU, seed)
    return entry.target(entry.params(**params), ctx)


# ---------------------------------------------------------------- EWC
def test_ewc_with_lambda_zero_equals_finetune_exactly(digits):
    order = (2, 0, 4, 1, 3)
    kw = dict(optimizer="sgd", lr=0.05, momentum=0.9)
    ft = run_trial(spec("finetune", order, **kw), digits)
    ewc = run_trial(spec("ewc", order, ewc_lambda=0.0, **kw), digits)
    assert ft["matrix"] == ewc["matrix"]


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_as_the_fisher_says(digits):
    m = make("ewc", digits, ewc_lambda=7.0, epochs=1)
    assert m.fisher_penalty.loss(m.net) is None  # nothing to protect before the first task
    m.learn_task(1, digits.tasks[1].on(CPU, "train"))
    assert m.fisher_penalty.loss(m.net).item() == 0.0
    fisher = m.fisher_penalty.importance
    torch.manual_seed(0)
    shifts = {k: 0.01 * torch.randn_like(w) for k, w in m.net.named_parameters()}
    with torch.no_grad():
        for k, w in m.net.named_parameters():
            w.add_(shifts[k])
    expected = 0.5 * 7.0 * sum((fisher[k] * shifts[k] ** 2).sum() for k in fisher)
    assert m.fisher_penalty.loss(m.net).item() == pytest.approx(expected.item(), rel=1e-5)
    # the weights that matter for the task weigh more: the Fisher is not flat
    head = fisher["heads.1.weight"]
    assert head.max() > 10 * head.mean() > 0
    assert fisher["heads.0.weight"].abs().sum() == 0  # another task's head: no information


def _tiny_net(task_sizes=(3,)):
    ctx = MethodContext((4,), task_sizes, "task_incremental", CPU, 0)
    torch.manual_seed(0)
    return TaskNetwork(MLP((4,), [5]), ctx)


@pytest.mark.parametrize("kind", ["empirical", "expected"])
def test_fisher_equals_a_loop_over_single_samples(kind):
    net = _tiny_net()
    x, y = torch.randn(9, 4), torch.randint(0, 3, (9,))
    got = diagonal_fisher(net, 0, x, y, kind, chunk=4)
    want = {k: torch.zeros_like(v) for k, v in net.named_parameters()}
    for n in range(9):
        logp = torch.log_softmax(net(x[n:n + 1], 0), dim=1)[0]
        labels = [(int(y[n]), 1.0)] if kind == "empirical" else [(c, logp[c].exp().item()) for c in range(3)]
        for c, weight in labels:
            grads = torch.autograd.grad(logp[c], list(net.parameters()), retain_graph=True)
            for (k, _), g in zip(net.named_parameters(), grads):
                want[k] += weight * g ** 2 / 9
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-7), k


def test_ewc_keeps_one_term_whose_gradient_equals_the_sum_over_tasks(digits):
    """(A, m) bookkeeping: grad of A(theta-m)^2 == grad of sum_t F_t (theta-theta_t)^2."""
    m = make("ewc", digits, ewc_lambda=3.0, epochs=1)
    anchors = []
    for t in (0, 1, 2):
        m.learn_task(t, digits.tasks[t].on(CPU, "train"))
        split = digits.tasks[t].on(CPU, "train")
        # the same samples the penalty used: the whole task (fisher_samples >= its size)
        f = diagonal_fisher(m.net, t, split.x, split.y)
        anchors.append((f, {k: w.detach().clone() for k, w in m.net.named_parameters()}))
    params = dict(m.net.named_parameters())
    explicit = 0.5 * 3.0 * sum((f[k] * (params[k] - th[k]) ** 2).sum() for f, th in anchors for k in f)
    g_explicit = torch.autograd.grad(explicit, list(params.values()), allow_unused=True)
    g_ours = torch.autograd.grad(m.fisher_penalty.loss(m.net), list(params.values()), allow_unused=True)
    for a, b in zip(g_explicit, g_ours):
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6)


def test_online_ewc_decays_the_running_fisher_and_moves_the_anchor(digits):
    m = make("ewc", digits, ewc_lambda=1.0, online=True, gamma=0.5, epochs=1)
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    a0 = {k: v.clone() for k, v in m.fisher_penalty.importance.items()}
    m.learn_task(1, digits.tasks[1].on(CPU, "train"))
    split = digits.tasks[1].on(CPU, "train")
    f1 = diagonal_fisher(m.net, 1, split.x, split.y)
    for k in a0:
        assert torch.allclose(m.fisher_penalty.importance[k], 0.5 * a0[k] + f1[k], atol=1e-7)
        assert torch.equal(m.fisher_penalty.anchor[k], dict(m.net.named_parameters())[k].detach())


def test_ewc_forgets_less_than_finetune_on_split_digits(digits):
    order = (0, 1, 2, 3, 4)
    kw = dict(optimizer="sgd", lr=0.05, momentum=0.9, epochs=5)
    ft = stats.trial_stats(matrix_array(run_trial(spec("finetune", order, **kw), digits)), order)
    ewc = stats.trial_stats(matrix_array(run_trial(spec("ewc", order, ewc_lambda=1000.0, **kw), digits)), order)
    assert ewc["forgetting"] < ft["forgetting"] - 2


def test_ewc_save_and_load_carries_the_penalty(digits):
    a = make("ewc", digits, ewc_lambda=5.0, epochs=1)
    a.learn_task(0, digits.tasks[0].on(CPU, "train"))
    b = make("ewc", digits, seed=9, ewc_lambda=5.0, epochs=1)
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.learn_task(1, digits.tasks[1].on(CPU, "train"))
    x = digits.tasks[0].on(CPU, "test").x
    assert torch.equal(a.predict(x, 0), b.predict(x, 0))


# ---------------------------------------------------------------- joint
def test_joint_accuracy_matrix_is_the_same_for_every_order(digits):
    orders = [(0, 1, 2, 3, 4), (4, 3, 2, 1, 0), (2, 0, 4, 1, 3)]
    mats = [matrix_array(run_trial(spec("joint", o, optimizer="adam", lr=0.005), digits)) for o in orders]
    reference = mats[0][-1]
    for A in mats:
        assert np.array_equal(A[-1], reference)
        for j in range(5):  # every evaluated entry of column j is the joint model's accuracy on j
            column = A[:, j][~np.isnan(A[:, j])]
            assert np.all(column == reference[j])
    out = stats.config_stats(mats, orders)
    assert out["aopd"] == 0.0 and out["mopd"] == 0.0 and out["opd_per_task"] == [0.0] * 5
    assert out["bwt_mean"] == 0.0 and out["forgetting_mean"] == 0.0
    assert out["acc_mean"] > 95


def test_joint_learns_every_task_before_the_first_boundary(digits):
    m = make("joint", digits, optimizer="adam", lr=0.005, epochs=3)
    m.learn_all({j: t.on(CPU, "train") for j, t in enumerate(digits.tasks)})
    from methods.loop import accuracy

    for j, t in enumerate(digits.tasks):
        test = t.on(CPU, "test")
        assert accuracy(lambda x: m.predict(x, j), test.x, test.y) > 90


def test_joint_domain_incremental_uses_one_head():
    e = datasets.BENCHMARKS.get("permuted_digits")
    bench = e.target(e.params(num_tasks=3))
    entry = METHODS.get("joint")
    ctx = MethodContext(bench.input_shape, bench.classes_per_task, "domain_incremental", CPU, 0)
    m = entry.target(entry.params(epochs=2, optimizer="adam", lr=0.005), ctx)
    m.learn_all({j: t.on(CPU, "train") for j, t in enumerate(bench.tasks)})
    assert len(m.net.heads) == 1


# ---------------------------------------------------------------- IDBD in finetune
def _linear_idbd(**kw):
    w = nn.Parameter(torch.zeros(3))
    return w, IDBD([w], lr=0.1, meta_lr=0.5, **kw)


def _step(w, opt, x, y):
    opt.zero_grad()
    (0.5 * (y - w @ x) ** 2).backward()
    opt.step()


def test_idbd_two_steps_by_hand():
    """specs/idbd.md with g = -delta * x: the deep rule reduces to linear IDBD."""
    w, opt = _linear_idbd()
    x, y = torch.tensor([1.0, 2.0, -1.0]), torch.tensor(1.0)
    _step(w, opt, x, y)
    # h = 0: beta stays log 0.1; g = -x; w = 0.1 x; c = g^2 = [1,4,1]; h = -alpha g = 0.1 x
    assert w.tolist() == pytest.approx([0.1, 0.2, -0.1])
    _step(w, opt, x, y)
    # yhat = 0.6, delta = 0.4, g = -0.4 x = [-0.4, -0.8, 0.4]; z = -g h = [0.04, 0.16, 0.04]
    # alpha = 0.1 exp(0.5 z) = [0.10202013, 0.10832871, 0.10202013]
    alpha = [0.1 * math.exp(0.02), 0.1 * math.exp(0.08), 0.1 * math.exp(0.02)]
    assert [a.item() for a in opt.step_sizes()[0]] == pytest.approx(alpha, rel=1e-6)
    # w -= alpha g
    assert w.tolist() == pytest.approx([0.1 + 0.4 * alpha[0], 0.2 + 0.8 * alpha[1], -0.1 - 0.4 * alpha[2]], rel=1e-6)
    # h = h * max(0, 1 - alpha c) - alpha g, c = [0.16, 0.64, 0.16]
    h = opt.state[w]["h"]
    want = [0.1 * (1 - alpha[0] * 0.16) + 0.4 * alpha[0], 0.2 * (1 - alpha[1] * 0.64) + 0.8 * alpha[1],
            -0.1 * (1 - alpha[2] * 0.16) - 0.4 * alpha[2]]
    assert h.tolist() == pytest.approx(want, rel=1e-6)


def test_idbd_shared_step_size_follows_the_summed_meta_gradient():
    w, opt = _linear_idbd(groups="scalar")
    x, y = torch.tensor([1.0, 2.0, -1.0]), torch.tensor(1.0)
    _step(w, opt, x, y)
    _step(w, opt, x, y)
    # sum z = 0.24 -> alpha = 0.1 exp(0.5 * 0.24) for every weight
    assert opt.step_sizes()[0].item() == pytest.approx(0.1 * math.exp(0.12), rel=1e-6)


def test_normalized_idbd_bounds_the_effective_step():
    w, opt = _linear_idbd(normalized=True, curvature="grad_sq")
    x, y = torch.tensor([30.0, -20.0, 10.0]), torch.tensor(50.0)
    for _ in range(5):
        _step(w, opt, x, y)
        g2 = (w.grad ** 2)
        assert (opt.step_sizes()[0] * g2).sum().item() <= 1.0 + 1e-5


def test_finetune_runs_with_idbd_and_every_optimiser_is_selectable(digits):
    for name in ("sgd", "adam", "rmsprop", "idbd"):
        rec = run_trial(spec("finetune", (0, 1), optimizer=name, lr=0.01, epochs=1), digits)
        assert rec["status"] == "completed"
    m = make("finetune", digits, optimizer="idbd", lr=0.05, idbd_meta_lr=0.01, idbd_normalized=True, epochs=2)
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    assert isinstance(m.optimizer, IDBD)
    sizes = torch.cat([s.flatten() for s in m.optimizer.step_sizes()])
    assert not torch.allclose(sizes, torch.full_like(sizes, 0.05))  # the step-sizes adapted


def test_exploding_idbd_step_sizes_end_the_task_with_a_clear_error(digits):
    m = make("finetune", digits, optimizer="idbd", lr=0.05, idbd_meta_lr=100.0, idbd_groups="scalar",
             idbd_max_step=1.0, epochs=1)
    with pytest.raises(methods.TrainingDiverged, match="IDBD step-sizes exploded: largest alpha .* > optimizer max_step 1"):
        m.learn_task(0, digits.tasks[0].on(CPU, "train"))
