"""Loss-of-trainability scheduler (specs/lot.md): the threshold, its per-layer signals, the
cool/warm control on top of Adam, and the companions any method can switch on (CReLU,
Wasserstein-to-init and L2 penalties)."""
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from methods import METHODS, MethodContext, seed_everything
from methods.backbones import MLP, CReLU, SmallCNN
from methods.lot_scheduler import COOL, KEEP, WARM, LotScheduler, Volatility, lot_action
from methods.lot_signals import (
    adam_effective_step,
    dead_unit_fractions,
    elementwise_effective_step,
    layer_groups,
    rayleigh_sharpness,
    signal_and_noise,
    threshold,
)
from methods.network import TaskNetwork
from methods.penalties import L2Penalty, WassersteinPenalty
from orchestrator.run.trial import run_trial
from orchestrator.study.schema import TrialSpec

CPU = torch.device("cpu")
ADAM = {"optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def make(bench, method="finetune", setting="task_incremental", seed=0, **params):
    entry = METHODS.get(method)
    seed_everything(seed)
    ctx = MethodContext(bench.input_shape, bench.classes_per_task, setting, CPU, seed)
    return entry.target(entry.params(**{**ADAM, **params}), ctx)


def tiny_net(seed=0, hidden=(5,), classes=(3,), dtype=torch.float64):
    torch.manual_seed(seed)
    ctx = MethodContext((4,), classes, "task_incremental", CPU, seed)
    return TaskNetwork(MLP((4,), list(hidden)), ctx).to(dtype)


def weights(m):
    return [w.detach().clone() for w in m.net.parameters()]


# ---------------------------------------------------------------- the threshold and the rule
def test_threshold_noise_only_and_combined_by_hand():
    # B=4, G=2, sigma^2=4: noise-only B G / sigma^2 = 2; combined with c=1, V=3: 8 / (4 + 1*2*3) = 0.8
    assert threshold(4, 2.0, 4.0) == pytest.approx(2.0)
    assert threshold(4, 2.0, 4.0, "noise_only", 1.0, 3.0) == pytest.approx(2.0)  # V is not part of it
    assert threshold(4, 2.0, 4.0, "combined", 1.0, 3.0) == pytest.approx(0.8)
    assert threshold(4, 2.0, 4.0, "combined", 0.5, 3.0) == pytest.approx(8.0 / 7.0)
    assert math.isnan(threshold(4, 0.0, 0.0, "combined", 1.0, 3.0))  # no signal, no noise: no evidence
    assert threshold(4, 0.0, 4.0) == 0.0 and threshold(4, 2.0, 0.0) == math.inf
    with pytest.raises(ValueError, match="noise_only, combined"):
        threshold(4, 2.0, 4.0, "both")


def test_rule_cools_above_safety_tau_warms_only_early_and_far_below_and_keeps_otherwise():
    kw = {"safety": 0.8, "floor": 0.12, "warm_fraction": 0.1, "warm_margin": 0.3}
    # tau = 1: cooling above 0.8, warming below 0.3 * 0.8 = 0.24 in the first 10 of 100 steps
    assert lot_action(0.81, 1.0, 50, 100, **kw) == COOL
    assert lot_action(0.79, 1.0, 50, 100, **kw) == KEEP     # under safety * tau (but above tau * 0.24)
    assert lot_action(0.5, 0.1, 5, 100, **kw) == COOL       # early makes no difference to cooling
    assert lot_action(0.1, 0.05, 50, 100, **kw) == KEEP     # above safety * tau but under the floor
    assert lot_action(0.2, 1.0, 9, 100, **kw) == WARM       # far below, step 9: in the first 10%
    assert lot_action(0.2, 1.0, 10, 100, **kw) == KEEP      # far below, step 10: too late to warm
    assert lot_action(0.25, 1.0, 0, 100, **kw) == KEEP      # early, but not below 0.24
    assert lot_action(0.2, 1.0, 9, 100, **{**kw, "warm_fraction": 0.05}) == KEEP
    assert lot_action(0.2, 1.0, 9, 100, **{**kw, "warm_margin": 0.2}) == KEEP  # 0.2 * 0.8 = 0.16
    assert lot_action(5.0, math.nan, 1, 100, **kw) == KEEP
    assert lot_action(0.5, 1.0, 50, 100) == KEEP and lot_action(1.0, 1.0, 50, 100) == COOL  # the defaults


def test_volatility_over_a_window_by_hand():
    window = Volatility(3)
    assert window.update(2.0) == 0.0
    for s in (1.0, 2.0, 3.0, 5.0):
        v = window.update(s)
    assert v == pytest.approx(np.var([2.0, 3.0, 5.0]) / (10.0 / 3 + 1e-8))


def test_old_parameter_names_are_refused_naming_their_replacement():
    params = METHODS.get("finetune").params
    for old, new in [("rho", "safety"), ("gamma_cool", "cool"), ("gamma_warm", "warm"), ("f_warm", "warm_fraction"),
                     ("eta_floor", "floor"), ("beta_v", "threshold: combined with volatility_weight"),
                     ("volatility", "window"), ("ema_decay", "window")]:
        with pytest.raises(ValidationError, match=rf"lr_scheduler.lot\n.*{old!r} is gone .* write {new}"):
            params(optimizer={"name": "adam"}, lr_scheduler={"name": "lot", old: 0.5})
    with pytest.raises(ValidationError, match="'rho' is gone .* write safety"), pytest.warns(DeprecationWarning):
        params(optimizer="adam", lr_scheduler="lot", lot_rho=0.5)
    p = params(optimizer={"name": "adam"}, lr_scheduler={"name": "lot"}).lr_scheduler
    assert (p.safety, p.cool, p.warm, p.floor, p.warm_fraction, p.warm_margin, p.threshold, p.window, p.every,
            p.weights_only) == (0.8, 0.95, 1.005, 0.12, 0.1, 0.3, "noise_only", 30, 40, True)


# ---------------------------------------------------------------- signals
def test_per_sample_signal_and_noise_equal_a_loop_over_samples():
    net = tiny_net(hidden=(5, 6))
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randint(0, 3, (7,))

    def loss(xb, yb):
        return F.cross_entropy(net(xb, 0), yb)

    layers = layer_groups(net)
    got = signal_and_noise(net, loss, layers, x, y, chunk=3)  # chunks of 3, 3, 1
    for name, params in layers.items():
        ws = [w for _, w in params]
        per = [torch.cat([g.flatten() for g in torch.autograd.grad(loss(x[i:i + 1], y[i:i + 1]), ws)]) for i in range(7)]
        per = torch.stack(per)
        mean = per.mean(0)
        assert got[name][0] == pytest.approx(float(mean @ mean), rel=1e-9)
        assert got[name][1] == pytest.approx(float(((per - mean) ** 2).sum(1).mean()), rel=1e-9)
    assert set(got) == {"backbone.1", "backbone.3", "heads.0"}


def explicit_hessian(net, x, y, layer):
    """The Hessian block of the batch loss w.r.t. one layer's (weight, bias), flattened in that order."""
    (_, w), (_, b) = layer_groups(net)[layer]
    shapes = [w.shape, b.shape]

    def loss_of(flat):
        wf, bf = flat[:w.numel()].view(shapes[0]), flat[w.numel():].view(shapes[1])
        out = torch.func.functional_call(net, {f"{layer}.weight": wf, f"{layer}.bias": bf}, (x, 0))
        return F.cross_entropy(out, y)

    flat = torch.cat([w.detach().flatten(), b.detach().flatten()])
    return torch.autograd.functional.hessian(loss_of, flat)


@pytest.mark.parametrize("layer", ["backbone.1", "heads.0"])
def test_warm_started_power_iteration_finds_the_top_eigenvalue_of_the_explicit_hessian(layer):
    net = tiny_net(seed=1)
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 3, (9,))
    eig = torch.linalg.eigvalsh(explicit_hessian(net, x, y, layer))
    top = float(eig.abs().max())
    params = [w for _, w in layer_groups(net)[layer]]
    grads = torch.autograd.grad(F.cross_entropy(net(x, 0), y), params, create_graph=True)
    v = [torch.randn(w.shape, dtype=w.dtype, generator=torch.Generator().manual_seed(3)) for w in params]
    for _ in range(300):  # one HVP per control step, warm-started: the scheduler's use
        sharpness, v = rayleigh_sharpness(grads, params, v, iters=1)
    assert sharpness == pytest.approx(top, rel=1e-6)
    # and the vector is the eigenvector: one more step from it returns |lambda| exactly
    again, _ = rayleigh_sharpness(grads, params, v, iters=1)
    assert again == pytest.approx(top, rel=1e-9)


def adam_layer(weight_grads, bias_grads, lr=0.1):
    """An Adam param group of a weight (2 x 3) and a bias (3) after steps on the given gradients."""
    w = nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    b = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = torch.optim.Adam([w, b], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    assert adam_effective_step(opt, opt.param_groups[0]) is None  # no state before the first step
    for gw, gb in zip(weight_grads, bias_grads):
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
    return opt


def test_adam_effective_step_by_hand_mean_inside_the_root_biases_skipped():
    gen = torch.Generator().manual_seed(0)
    gw = [torch.randn(2, 3, generator=gen, dtype=torch.float64) for _ in range(2)]
    gb = [10 * torch.randn(3, generator=gen, dtype=torch.float64) for _ in range(2)]
    opt = adam_layer(gw, gb)
    bc1, bc2 = 1 - 0.9 ** 2, 1 - 0.999 ** 2
    v_w = 0.001 * (0.999 * gw[0] ** 2 + gw[1] ** 2)
    v_b = 0.001 * (0.999 * gb[0] ** 2 + gb[1] ** 2)
    eta_w = 0.1 / (bc1 * (math.sqrt(float(v_w.mean()) / bc2) + 1e-8))
    eta_b = 0.1 / (bc1 * (math.sqrt(float(v_b.mean()) / bc2) + 1e-8))
    alpha = 0.1 / (math.sqrt(float(torch.cat([v_w.flatten(), v_b]).mean()) / bc2) + 1e-8)
    group = opt.param_groups[0]
    assert adam_effective_step(opt, group) == pytest.approx((eta_w, alpha), rel=1e-12)  # the bias is skipped
    assert adam_effective_step(opt, group, weights_only=False) == pytest.approx(((eta_w + eta_b) / 2, alpha), rel=1e-12)
    # the mean is inside the root: not the mean of per-element steps (which is larger, by Jensen)
    per_element = float((0.1 / (bc1 * ((v_w / bc2).sqrt() + 1e-8))).mean())
    assert per_element > eta_w * 1.01
    # a layer of 1-D tensors only (a norm's scale and shift) has no weight to read
    s = nn.Parameter(torch.ones(3))
    opt1 = torch.optim.Adam([s])
    s.grad = torch.ones(3)
    opt1.step()
    assert adam_effective_step(opt1, opt1.param_groups[0]) is None
    assert adam_effective_step(opt1, opt1.param_groups[0], weights_only=False) is not None


def test_the_old_elementwise_form_blows_up_on_weights_with_near_zero_second_moments():
    # column 2 of the weight never gets a gradient (it reads a dead unit): v = 0 there
    gw = [torch.tensor([[0.3, -0.2, 0.0], [0.1, 0.4, 0.0]], dtype=torch.float64)] * 3
    gb = [torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64)] * 3
    opt = adam_layer(gw, gb, lr=1e-3)
    group = opt.param_groups[0]
    new, _ = adam_effective_step(opt, group)
    old = elementwise_effective_step(opt, group)
    bc1 = 1 - 0.9 ** 3
    # the old mean over 9 elements holds two terms lr / (bc1 * eps) = 1e5 / bc1 each
    assert old > 2 / 9 * 1e-3 / (bc1 * 1e-8) and old / new > 1e4
    # with every v well away from 0 the two forms agree within a factor of a few
    opt2 = adam_layer([torch.full((2, 3), 0.3, dtype=torch.float64)] * 3, gb, lr=1e-3)
    new2, _ = adam_effective_step(opt2, opt2.param_groups[0])
    assert 0.2 < elementwise_effective_step(opt2, opt2.param_groups[0]) / new2 < 5


# ---------------------------------------------------------------- the scheduler on a method
def control_once(digits, **lot):
    """A finetune with the scheduler after one task, then one control step on a batch of task 0,
    wired as in training: after the backward, before the optimiser step."""
    m = make(digits, lr_scheduler="lot", lot_every=10_000, epochs=1, **lot)
    data = digits.tasks[0].on(CPU, "train")
    m.learn_task(0, data)
    before = dict(m.scheduler.lrs)
    m.scheduler.begin(m.optimizer, lambda xb, yb: F.cross_entropy(m.net(xb, 0), yb), total_steps=100)
    m.optimizer.zero_grad()
    F.cross_entropy(m.net(data.x[:32], 0), data.y[:32]).backward()
    measured = m.scheduler.control(data.x[:32], data.y[:32])
    return m, before, measured


def test_scheduler_cools_a_layer_whose_effective_step_exceeds_its_threshold_and_leaves_it_otherwise(digits):
    m, before, measured = control_once(digits, lot_safety=1e-9, lot_floor=0.0, lot_cool=0.5)  # all above
    assert set(measured) == {"backbone.1", "backbone.3", "heads.0"}  # the other tasks' heads took no step
    for name, q in measured.items():
        assert q["eta_eff"] > 1e-9 * q["tau"] and q["action"] == COOL
        assert m.scheduler.lrs[name] == pytest.approx(0.5 * before[name])
        assert m.scheduler.groups[name]["lr"] == m.scheduler.lrs[name]  # Adam's group follows
    assert m.scheduler.lrs["heads.1"] == before["heads.1"] == 0.01
    assert m.scheduler.task_series() == {**{f"n_lot_cools/{n}": 1.0 for n in measured},
                                         **{f"n_lot_warms/{n}": 0.0 for n in measured}}

    m, before, measured = control_once(digits, lot_safety=1e9, lot_warm_fraction=0.0)  # far below, too late
    assert all(q["action"] == KEEP for q in measured.values()) and m.scheduler.lrs == before

    m, before, measured = control_once(digits, lot_safety=1e-9, lot_floor=1e9)  # above safety tau, below the floor
    assert all(q["action"] == KEEP for q in measured.values()) and m.scheduler.lrs == before

    m, before, measured = control_once(digits, lot_safety=1e9, lot_warm_fraction=1.0, lot_warm=2.0)
    assert all(q["action"] == WARM for q in measured.values())
    assert all(m.scheduler.lrs[n] == pytest.approx(2.0 * before[n]) for n in measured)
    assert all(m.scheduler.task_series()[f"n_lot_warms/{n}"] == 1.0 for n in measured)


def test_one_layer_cools_while_another_keeps_by_its_own_threshold(digits):
    _m, _before, measured = control_once(digits, lot_warm_fraction=0.0)
    ratio = {n: q["eta_eff"] / q["tau"] for n, q in measured.items()}
    lo, hi = sorted(ratio.values())[:2]
    safety = math.sqrt(lo * hi)  # between two layers' eta_eff / tau: cools exactly the layers above it
    _m2, _before2, measured2 = control_once(digits, lot_warm_fraction=0.0, lot_safety=safety, lot_floor=0.0)
    for n, q in measured2.items():
        assert q["action"] == (COOL if ratio[n] > safety else KEEP), n


def test_combined_threshold_is_below_the_noise_only_one_on_the_same_state(digits):
    _, _, noise = control_once(digits, lot_warm_fraction=0.0)
    _, _, both = control_once(digits, lot_warm_fraction=0.0, lot_threshold="combined", lot_volatility_weight=1.0)
    for n, q in noise.items():
        assert both[n]["G"] == q["G"] and both[n]["sigma2"] == q["sigma2"]
        assert both[n]["V"] == 0.0 and both[n]["tau"] == pytest.approx(q["tau"])  # one control step: V = 0
        assert q["tau"] == pytest.approx(32 * q["G"] / q["sigma2"])


def test_signals_are_measured_before_the_step_on_the_full_loss_with_its_penalty(digits, monkeypatch):
    """Every control step sees the gradient the optimiser step is about to apply (penalty included):
    its G per layer is the squared norm of the .grad the step's backward left, at the weights the step
    then updates; sigma^2 is of the task loss alone (a penalty is the same for every sample)."""
    m = make(digits, lr_scheduler="lot", lot_every=3, lot_safety=1e9, lot_warm_fraction=0.0,
             penalties=[{"name": "l2", "lambda": 0.5}], epochs=1)
    events = []
    control = m.scheduler.control

    def checked(xb, yb):
        active = {n: ps for n, ps in m.scheduler.layers.items() if all(w.grad is not None for _, w in ps)}
        grads = {n: [w.grad.clone() for _, w in ps] for n, ps in active.items()}
        data_only = {n: torch.autograd.grad(F.cross_entropy(m.net(xb, 0), yb), [w for _, w in ps])
                     for n, ps in active.items()}
        noise = signal_and_noise(m.net, lambda a, b: F.cross_entropy(m.net(a, 0), b), active, xb, yb)
        events.append(("control", [w.detach().clone() for w in m.net.parameters()],
                       (control(xb, yb), grads, data_only, noise)))

    step = torch.optim.Adam.step

    def stepped(opt, *a, **kw):
        events.append(("step", [w.detach().clone() for w in m.net.parameters()], None))
        return step(opt, *a, **kw)

    monkeypatch.setattr(m.scheduler, "control", checked)
    monkeypatch.setattr(torch.optim.Adam, "step", stepped)
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    controls = [i for i, e in enumerate(events) if e[0] == "control"]
    assert len(controls) == m.scheduler.steps // 3 > 0
    for i in controls:
        after = events[i + 1]
        assert after[0] == "step" and all(torch.equal(a, b) for a, b in zip(events[i][1], after[1]))
        out, grads, data_only, noise = events[i][2]
        for n, q in out.items():
            full = sum(float(g.double().pow(2).sum()) for g in grads[n])
            assert q["G"] == pytest.approx(full, rel=1e-5)   # the step's own gradient, at its weights
            data_g = sum(float(g.double().pow(2).sum()) for g in data_only[n])
            assert abs(full - data_g) > 1e-3 * full            # ... and the penalty's part counts in it
            assert q["sigma2"] == pytest.approx(noise[n][1], rel=1e-5)  # the task loss's noise


def test_scheduler_that_never_acts_leaves_training_bit_identical_to_adam(digits):
    plain = make(digits, reset_optimizer=False)
    lot = make(digits, reset_optimizer=False, lr_scheduler="lot", lot_every=3, lot_safety=1e9, lot_warm_fraction=0.0)
    for m in (plain, lot):
        for t in (0, 1):
            m.learn_task(t, digits.tasks[t].on(CPU, "train"))
    assert all(torch.equal(a, b) for a, b in zip(weights(plain), weights(lot)))
    trace = lot.trace()
    assert len(trace["step"]) == 10 and trace["step"][:2] == [3, 6]  # it measured, every K = 3 steps
    assert all(a == 0.0 for a in trace["action/backbone.1"])
    assert lot.task_series()["n_lot_cools/backbone.1"] == 0.0 and plain.task_series() == {}


def test_counts_per_layer_and_task_are_the_actions_of_the_trace(digits):
    m = make(digits, reset_optimizer=False, lr_scheduler="lot", lot_every=2, lot_floor=0.0, lot_warm_fraction=0.5,
             lot_warm=1.5)
    series = []
    for t in (0, 1):
        info = m.learn_task(t, digits.tasks[t].on(CPU, "train"))
        series.append(m.task_series())
        assert info["lot_cools"] == sum(v for k, v in series[-1].items() if k.startswith("n_lot_cools/"))
        assert info["lot_warms"] == sum(v for k, v in series[-1].items() if k.startswith("n_lot_warms/"))
    trace = m.trace()
    for t in (0, 1):
        at = [i for i, p in enumerate(trace["task_position"]) if p == t]
        for layer in ("backbone.1", "backbone.3", f"heads.{t}"):
            actions = [trace[f"action/{layer}"][i] for i in at]
            assert series[t][f"n_lot_cools/{layer}"] == actions.count(COOL)
            assert series[t][f"n_lot_warms/{layer}"] == actions.count(WARM)
        assert f"n_lot_cools/heads.{1 - t}" not in series[t]  # a head that took no step was not decided on
    assert sum(v for s in series for v in s.values()) > 0


def test_per_layer_lrs_carry_over_a_fresh_optimiser_unless_told_not_to(digits):
    for keep in (True, False):
        m = make(digits, lr_scheduler="lot", lot_every=2, lot_safety=1e-9, lot_floor=0.0, reset_optimizer=True,
                 lot_keep_lr=keep)
        m.learn_task(0, digits.tasks[0].on(CPU, "train"))
        cooled = m.scheduler.lrs["backbone.1"]
        assert cooled < 0.01
        m.learn_task(1, digits.tasks[1].on(CPU, "train"))
        first = m.scheduler.rows[[r["task_position"] for r in m.scheduler.rows].index(1)]
        # the first control step of task 1 starts from the carried lr (or from lr) and cools once
        start = cooled if keep else 0.01
        assert first["layers"]["backbone.1"]["lr"] == pytest.approx(start * 0.95)


def test_scheduler_state_round_trips_through_a_checkpoint(digits):
    kw = {"lr_scheduler": "lot", "lot_every": 4, "reset_optimizer": False, "lot_threshold": "combined", "lot_window": 3}
    a = make(digits, **kw)
    a.learn_task(0, digits.tasks[0].on(CPU, "train"))
    b = make(digits, seed=5, **kw)
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.learn_task(1, digits.tasks[1].on(CPU, "train"))
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    assert a.trace() == b.trace() and a.scheduler.lrs == b.scheduler.lrs


def test_trial_record_carries_a_small_json_trace_per_task_info_and_counts(digits):
    p = METHODS.get("finetune").params(**{**ADAM, "lr_scheduler": "lot", "lot_every": 5}).model_dump()
    rec = run_trial(TrialSpec("t", "c", "finetune", "finetune", p, (1, 0), 0, 0, "task_incremental", False), digits)
    json.dumps(rec, allow_nan=False)  # no NaN/inf: they are None
    trace = rec["trace"]
    assert {"step", "task_position", "lr/backbone.1", "tau/heads.1", "sigma2/backbone.3", "V/heads.0"} <= set(trace)
    assert trace["task_position"][0] == 0 and trace["task_position"][-1] == 1
    first_task_steps = 2 * math.ceil(digits.tasks[1].on(CPU, "train").x.shape[0] / 32)  # 2 epochs, batch 32
    assert trace["task_start_step"] == [0, first_task_steps]
    assert trace["lr/heads.0"][0] is None and trace["lr/heads.1"][0] is not None  # heads only while their task trains
    assert rec["task_info"][0]["info_lot_control_steps"] == len([t for t in trace["task_position"] if t == 0])
    assert rec["series"]["n_lot_cools/backbone.1"][1] is not None
    assert rec["series"]["n_lot_cools/heads.1"][1] is None  # task 0 (position 1) does not train head 1
    assert all(0.0 <= i["info_online_acc"] <= 100.0 for i in rec["task_info"])
    plain = run_trial(TrialSpec("t", "c", "finetune", "finetune", METHODS.get("finetune").params(**ADAM).model_dump(),
                                (1, 0), 0, 0, "task_incremental", False), digits)
    assert "trace" not in plain and not plain.get("series")


def test_trace_is_subsampled_evenly_keeping_first_and_last(digits):
    m = make(digits, lr_scheduler="lot", lot_every=1, epochs=1)
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    n = len(m.scheduler.rows)
    short = m.scheduler.trace(max_points=5)
    assert len(short["step"]) == 5 and short["step"][0] == 1 and short["step"][-1] == n


def test_scheduler_needs_adam_and_crelu_needs_a_backbone_that_honours_it():
    params = METHODS.get("finetune").params
    with pytest.raises(ValidationError, match=r"lr_scheduler 'lot' reads Adam's state .* set optimizer: \{name: adam\}"):
        params(optimizer={"name": "sgd"}, lr_scheduler={"name": "lot"})
    with pytest.raises(ValidationError, match="activation 'crelu' is not supported by backbone 'resnet9'"):
        params(network={"backbone": "resnet9", "activation": "crelu"})
    for field, bad in [("cool", 1.0), ("warm", 0.9), ("warm_fraction", 1.5), ("every", 0), ("safety", 0.0),
                       ("window", 1), ("warm_margin", 2.0), ("threshold", "both")]:
        with pytest.raises(ValidationError, match=f"lr_scheduler.lot.{field}"):
            params(optimizer={"name": "adam"}, lr_scheduler={"name": "lot", field: bad})
    for name, bad in [("wasserstein", -1.0), ("l2", -0.1)]:
        with pytest.raises(ValidationError, match=f"penalties.0.{name}.lambda"):
            params(penalties=[{"name": name, "lambda": bad}])


# ---------------------------------------------------------------- online accuracy, dead units
def test_online_accuracy_is_the_mean_of_the_predictions_made_before_each_update(digits):
    import copy

    data = digits.tasks[0].on(CPU, "train")
    n = data.x.shape[0]
    m = make(digits, epochs=3, batch_size=n)  # one step per epoch: epoch e predicts with the weights after e steps
    hits = []
    probe = copy.deepcopy(m)
    for _ in range(3):
        with torch.no_grad():
            probe.net.train()
            hits.append(100.0 * (probe.net(data.x, 0).argmax(1) == data.y).sum().item() / n)
        probe.p = probe.p.model_copy(update={"training": probe.p.training.model_copy(
            update={"epochs": 1, "reset_optimizer": False})})  # one epoch at a time, Adam's state kept
        probe.train(lambda xb: probe.net(xb, 0), F.cross_entropy, data.x, data.y)
        probe.p = m.p
    info = m.learn_task(0, data)
    assert info["online_acc"] == pytest.approx(np.mean(hits), abs=1e-9)
    assert info["online_acc_last_epoch"] == pytest.approx(hits[-1], abs=1e-9)
    assert len(set(hits)) > 1  # the weights moved: the test can tell a mean from one epoch's figure
    # several batches per epoch: the fraction of all training predictions that were right
    m2 = make(digits, epochs=2, batch_size=32)
    info2 = m2.learn_task(0, data)
    assert 0.0 < info2["online_acc_last_epoch"] <= 100.0 and info2["online_acc"] <= 100.0


def test_dead_unit_fraction_on_a_hand_built_net():
    net = MLP((2,), [3])
    lin = net[1]
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.0]]))
        lin.bias.copy_(torch.tensor([-10.0, 0.5, 0.0]))
    x = torch.tensor([[1.0, 2.0], [0.3, -1.0], [2.0, 0.5]])
    # unit 0: x1 + x2 - 10 < 0 on every input (dead); unit 1: 0.5 - x1 > 0 once (alive); unit 2: always 0 (dead)
    assert dead_unit_fractions(net, net, x) == {"2": pytest.approx(2 / 3)}
    crelu = MLP((2,), [3], activation="crelu")
    with torch.no_grad():
        crelu[1].weight.copy_(lin.weight)
        crelu[1].bias.copy_(lin.bias)
    # CReLU: unit 0 is negative everywhere, so relu(-z) fires: alive; only unit 2 (z = 0) is dead
    assert dead_unit_fractions(crelu, crelu, x) == {"2": pytest.approx(1 / 3)}
    assert net.training  # the mode is restored


def test_dead_units_reach_the_task_info_only_when_asked(digits):
    data = digits.tasks[0].on(CPU, "train")
    on = make(digits, hidden=[8, 8], training={"dead_units": True, "epochs": 2, "batch_size": 32})
    info = on.learn_task(0, data)
    assert {"dead_backbone.2", "dead_backbone.4"} <= set(info) and all(0 <= info[k] <= 1 for k in info if k.startswith("dead_"))
    off = make(digits, hidden=[8, 8])
    assert not any(k.startswith("dead_") for k in off.learn_task(0, data))
    assert "dead_units" not in off.p.model_dump()["training"]  # off, it leaves config ids as they were
    assert on.p.model_dump()["training"]["dead_units"] is True


# ---------------------------------------------------------------- companions
def test_crelu_doubles_width():
    x = torch.tensor([[1.0, -2.0, 0.0]])
    assert torch.equal(CReLU()(x), torch.tensor([[1.0, 0.0, 0.0, 0.0, 2.0, 0.0]]))
    mlp = MLP((8,), [5, 6], activation="crelu")
    assert [m.in_features for m in mlp if isinstance(m, nn.Linear)] == [8, 10]
    assert mlp.out_features == 12 and mlp(torch.randn(3, 8)).shape == (3, 12)
    cnn = SmallCNN((1, 8, 8), [4, 6], activation="crelu")
    assert [m.in_channels for m in cnn if isinstance(m, nn.Conv2d)] == [1, 8]
    assert cnn.out_features == 12 and cnn(torch.randn(2, 1, 8, 8)).shape == (2, 12)
    relu = MLP((8,), [5, 6])
    assert relu.out_features == 6 and not any(isinstance(m, CReLU) for m in relu)


def test_crelu_network_trains_through_finetune(digits):
    m = make(digits, activation="crelu", hidden=[16])
    assert m.net.heads[0].in_features == 32
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    test = digits.tasks[0].on(CPU, "test")
    assert (m.predict(test.x, 0).argmax(1) == test.y).float().mean() > 0.9


def test_wasserstein_penalty_is_zero_at_initialisation_and_for_any_permutation():
    net = tiny_net()
    pen = WassersteinPenalty(2.0, net)
    assert pen.loss(net).item() == 0.0
    with torch.no_grad():
        w = net.backbone[1].weight
        w.copy_(w.flatten()[torch.randperm(w.numel())].view_as(w))  # same values, other places
    assert pen.loss(net).item() == 0.0
    with torch.no_grad():
        net.heads[0].bias.copy_(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64))
    init = pen.sorted_init["heads.0.bias"]
    assert pen.loss(net).item() == pytest.approx(2.0 * float(((torch.tensor([1.0, 2.0, 3.0]) - init) ** 2).sum()))


def test_wasserstein_gradient_matches_autograd_and_the_closed_form():
    net = tiny_net(seed=2)
    pen = WassersteinPenalty(0.7, net)
    with torch.no_grad():
        for w in net.parameters():
            w.add_(0.3 * torch.randn_like(w))
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(pen.loss(net), list(params.values()))
    for (k, w), g in zip(params.items(), grads):
        # d/dtheta_i sum_k (sorted(theta)_k - sorted0_k)^2 = 2 (theta_i - sorted0[rank of theta_i])
        rank = torch.argsort(torch.argsort(w.detach().flatten()))
        closed = 2 * 0.7 * (w.detach().flatten() - pen.sorted_init[k][rank])
        assert torch.allclose(g.flatten(), closed, rtol=1e-12, atol=1e-12), k
    flat = {k: w.detach().clone().requires_grad_() for k, w in params.items()}

    def functional(p):
        return 0.7 * sum((torch.sort(p[k].flatten()).values - pen.sorted_init[k]).pow(2).sum() for k in p)

    assert torch.autograd.gradcheck(lambda *ws: functional(dict(zip(flat, ws))), tuple(flat.values()))


def test_l2_penalty_by_hand_on_the_backbone_and_the_current_head_only(digits):
    m = make(digits, l2_lambda=0.01, epochs=1)
    pens = [p for p in m.penalties if isinstance(p, L2Penalty)]
    assert len(pens) == 1
    pen = pens[0]
    pen.begin_task(m.net, 2)
    hand = sum(w.pow(2).sum() for w in m.net.backbone.parameters()) + sum(w.pow(2).sum() for w in m.net.heads[2].parameters())
    assert pen.loss(m.net).item() == pytest.approx(0.01 * hand.item(), rel=1e-6)
    other = [h.weight.clone() for h in m.net.heads]
    m.learn_task(3, digits.tasks[3].on(CPU, "train"))
    assert [torch.equal(a, h.weight) for a, h in zip(other, m.net.heads)] == [True, True, True, False, True]


@pytest.mark.parametrize("method", ["finetune", "ewc", "update_magnitude"])
def test_every_finetune_method_gets_the_penalties_and_the_scheduler(digits, method):
    m = make(digits, method=method, wasserstein_lambda=0.1, l2_lambda=0.01, lr_scheduler="lot", lot_every=5)
    kinds = [type(p) for p in m.penalties]
    assert WassersteinPenalty in kinds and L2Penalty in kinds and isinstance(m.scheduler, LotScheduler)
    info = m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    assert info["lot_control_steps"] > 0
    off = make(digits, method=method)
    assert not any(isinstance(p, (WassersteinPenalty, L2Penalty)) for p in off.penalties) and off.scheduler is None


def test_penalties_change_training_and_round_trip_through_a_checkpoint(digits):
    kw = {"wasserstein_lambda": 0.5, "reset_optimizer": False}
    a, plain = make(digits, **kw), make(digits)
    for m in (a, plain):
        m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    assert not all(torch.equal(x, y) for x, y in zip(weights(a), weights(plain)))
    b = make(digits, seed=9, **kw)  # another init: its own sorted_init is overwritten by the state
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.learn_task(1, digits.tasks[1].on(CPU, "train"))
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))


# ---------------------------------------------------------------- report figures
def lot_study_records(digits):
    """Real trials: plain Adam and Adam+lot, two orders each, 3 of the 5 digit tasks."""
    records = []
    for label, extra in (("adam", {}), ("adam_lot", {"lr_scheduler": "lot", "lot_every": 4})):
        p = METHODS.get("finetune").params(**{**ADAM, "epochs": 1, "reset_optimizer": False, **extra}).model_dump()
        for r, order in enumerate(((0, 1, 2, 3, 4), (4, 3, 2, 1, 0))):
            spec = TrialSpec(f"{label}-o{r}", f"{label}-cfg", label, "finetune", p, order, r, 0, "task_incremental", False)
            records.append(run_trial(spec, digits))
    return records


def test_report_draws_trainability_and_per_layer_lr_figures_for_traced_studies(digits, tmp_path):
    from orchestrator.report.render import write_report
    from orchestrator.report.sources import StudyData
    from orchestrator.report.trace_figures import own_task_accuracy
    from orchestrator.results.records import matrix_array

    records = lot_study_records(digits)
    out = tmp_path / "lot"
    report = write_report(StudyData("lot", records, None, "test records"), out, n_resamples=50)
    assert {"trainability", "lr_trajectories_adam_lot", "series_n_lot_cools_adam_lot",
            "series_n_lot_warms_adam_lot"} <= set(report.figures)
    assert not any(k.startswith("lr_trajectories_adam") and k != "lr_trajectories_adam_lot" for k in report.figures)
    assert not any(k.endswith("_adam") for k in report.figures)  # plain Adam traced and counted nothing
    text = report.path.read_text()
    assert "](figures/trainability.png)" in text and "](figures/lr_trajectories_adam_lot.png)" in text
    # the counts sit right after the config's per-step traces, and the table gives every layer's totals
    figs = re.findall(r"\]\(figures/(\S+)\.png\)", text)
    at = figs.index("series_n_lot_cools_adam_lot")
    assert figs[at - 1].endswith("_trajectories_adam_lot") and figs[at + 1] == "series_n_lot_warms_adam_lot"
    lot_recs = [rec for rec in records if rec["label"] == "adam_lot"]
    for layer in ("backbone.1", "heads.3"):
        total = np.mean([sum(v for v in rec["series"][f"n_lot_cools/{layer}"] if v is not None) for rec in lot_recs])
        row = re.search(rf"\| adam_lot \| n_lot_cools \| {re.escape(layer)} \| (\S+) \| (\S+) of (\d+)", text)
        assert row is not None and float(row.group(1)) == pytest.approx(total, abs=1e-6)
    warms = re.search(r"\| adam_lot \| n_lot_warms \| backbone\.1 \| (\S+) \|[^|]*\|", text)
    assert warms is not None and (warms.group(1) != "0" or "(never)" in warms.group(0))
    assert all(p.stat().st_size > 0 for p in report.figures.values())

    from orchestrator.report.analysis import analyse
    from orchestrator.report.trace_figures import lr_trajectories, trainability

    results = analyse(records, None, n_resamples=20)
    lines = {ln.get_label().split(" (")[0]: ln for ln in trainability(results).axes[0].get_lines()}
    for r in results:  # each curve is A[pos(j), j] by position, mean over the config's orders
        want = np.mean([own_task_accuracy(matrix_array(rec), tuple(rec["order"])) for rec in r.records], axis=0)
        assert np.allclose(lines[r.name].get_ydata(), want)
    lot = next(r for r in results if r.name == "adam_lot")
    ax = lr_trajectories(lot).axes[0]
    layers = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert {"backbone.1", "backbone.3", "heads.0", "heads.4"} <= set(layers)
    trace0, trace1 = (rec["trace"] for rec in lot.records)
    want = np.mean([trace0["lr/backbone.1"], trace1["lr/backbone.1"]], axis=0)  # same steps in both orders
    assert np.allclose(layers["backbone.1"].get_ydata(), want)
    boundaries = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert boundaries == trace0["task_start_step"][1:] and len(boundaries) == 4  # 5 tasks

    # a later report of the same directory without traces drops both figures
    plain = [r for r in records if r["label"] == "adam"]
    report = write_report(StudyData("lot", plain, None, "test records"), out, n_resamples=20)
    assert not any(k == "trainability" or k.startswith("lr_trajectories") for k in report.figures)
    assert not list((out / "figures").glob("lr_trajectories_*.png")) and not (out / "figures" / "trainability.png").exists()


@pytest.mark.parametrize("name", ["lot_random_label_mnist", "lot_random_label_mnist_search", "lot_permuted_mnist_long"])
def test_lot_studies_validate(name, capsys):
    from pathlib import Path

    from orchestrator.cli import main

    path = Path(__file__).resolve().parents[1] / "studies" / f"{name}.yaml"
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "ok (" in capsys.readouterr().out
