"""Loss-of-trainability scheduler (specs/lot.md): the threshold, its per-layer signals, the
cool/warm control on top of Adam, and the companions any method can switch on (CReLU,
Wasserstein-to-init and L2 penalties)."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from methods import METHODS, MethodContext, seed_everything
from methods.backbones import MLP, CReLU, SmallCNN
from methods.lot_scheduler import COOL, KEEP, WARM, LotScheduler, Volatility, lot_action
from methods.lot_signals import adam_effective_step, eta_crit, layer_groups, rayleigh_sharpness, signal_and_noise
from methods.network import TaskNetwork
from methods.penalties import L2Penalty, WassersteinPenalty
from orchestrator.study.schema import TrialSpec
from orchestrator.run.trial import run_trial

CPU = torch.device("cpu")
ADAM = dict(optimizer="adam", lr=0.01, epochs=2, batch_size=32)


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


# ---------------------------------------------------------------- the threshold
def test_threshold_check_values_of_the_spec():
    # B=4, G=2, sigma^2=4, V=3, rho=0.8: noise-only 0.8*4*2/4 = 1.6; combined 6.4/(4 + 1*2*3) = 0.64
    assert eta_crit(0.8, 4, 2.0, 4.0, 0.0, 3.0) == pytest.approx(1.6)
    assert eta_crit(0.8, 4, 2.0, 4.0, 1.0, 3.0) == pytest.approx(0.64)
    assert math.isnan(eta_crit(0.8, 4, 0.0, 0.0, 1.0, 3.0))  # no signal, no noise: no evidence
    assert eta_crit(0.8, 4, 0.0, 4.0, 1.0, 3.0) == 0.0


def test_action_cools_above_the_threshold_warms_early_far_below_and_keeps_otherwise():
    kw = dict(eta_floor=0.12, f_warm=0.3)
    assert lot_action(2.0, 1.0, 50, 100, **kw) == COOL
    assert lot_action(0.1, 0.05, 50, 100, **kw) == KEEP    # above eta_crit but at the floor
    assert lot_action(0.5, 1.0, 10, 100, **kw) == KEEP     # below eta_crit, not below 0.1 eta_crit
    assert lot_action(0.05, 1.0, 29, 100, **kw) == WARM    # far below, in the first 30% of the task
    assert lot_action(0.05, 1.0, 30, 100, **kw) == KEEP    # far below, but too late to warm
    assert lot_action(5.0, math.nan, 10, 100, **kw) == KEEP


def test_volatility_ema_and_window_by_hand():
    ema = Volatility("ema", 0.9, 10)
    assert ema.update(2.0) == 0.0
    # mean 2 + 0.1*2 = 2.2; var 0.9*(0 + 0.1*2*2) = 0.36
    assert ema.update(4.0) == pytest.approx(0.36 / (2.2 + 1e-8))
    window = Volatility("window", 0.9, 3)
    for s in (1.0, 2.0, 3.0, 5.0):
        v = window.update(s)
    assert v == pytest.approx(np.var([2.0, 3.0, 5.0]) / (10.0 / 3 + 1e-8))


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


def test_adam_effective_step_by_hand():
    w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = torch.optim.Adam([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    grads = [torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.1, 0.5, -1.0], dtype=torch.float64)]
    assert adam_effective_step(opt, opt.param_groups[0]) is None  # no state before the first step
    for g in grads:
        w.grad = g.clone()
        opt.step()
    v = 0.001 * (0.999 * grads[0] ** 2 + grads[1] ** 2)
    v_hat = v / (1 - 0.999 ** 2)
    eta = (0.1 / ((1 - 0.9 ** 2) * (v_hat.sqrt() + 1e-8))).mean()
    alpha = 0.1 / (math.sqrt(float(v_hat.mean())) + 1e-8)
    assert adam_effective_step(opt, opt.param_groups[0]) == pytest.approx((float(eta), alpha), rel=1e-12)


# ---------------------------------------------------------------- the scheduler on a method
def control_once(digits, **lot):
    """A finetune with the scheduler after one task, then one control step on a batch of task 0."""
    m = make(digits, lr_scheduler="lot", lot_every=10_000, epochs=1, **lot)
    data = digits.tasks[0].on(CPU, "train")
    m.learn_task(0, data)
    before = dict(m.scheduler.lrs)
    m.scheduler.begin(m.optimizer, lambda xb, yb: F.cross_entropy(m.net(xb, 0), yb), total_steps=100)
    m.optimizer.zero_grad()
    F.cross_entropy(m.net(data.x[:32], 0), data.y[:32]).backward()
    m.optimizer.step()
    measured = m.scheduler.control(data.x[:32], data.y[:32])
    return m, before, measured


def test_scheduler_cools_a_layer_whose_effective_step_exceeds_its_threshold_and_leaves_it_otherwise(digits):
    m, before, measured = control_once(digits, lot_rho=1e-9, lot_gamma_cool=0.5)  # eta_crit ~ 0: all above
    assert set(measured) == {"backbone.1", "backbone.3", "heads.0"}  # the other tasks' heads took no step
    for name, q in measured.items():
        assert q["eta_eff"] > q["eta_crit"] and q["action"] == COOL
        assert m.scheduler.lrs[name] == pytest.approx(0.5 * before[name])
        assert m.scheduler.groups[name]["lr"] == m.scheduler.lrs[name]  # Adam's group follows
    assert m.scheduler.lrs["heads.1"] == before["heads.1"] == 0.01

    m, before, measured = control_once(digits, lot_rho=1e9, lot_f_warm=0.0)  # far below eta_crit, too late to warm
    assert all(q["eta_eff"] < q["eta_crit"] and q["action"] == KEEP for q in measured.values())
    assert m.scheduler.lrs == before

    m, before, measured = control_once(digits, lot_rho=1e-9, lot_eta_floor=1e9)  # above eta_crit, below the floor
    assert all(q["action"] == KEEP for q in measured.values()) and m.scheduler.lrs == before

    m, before, measured = control_once(digits, lot_rho=1e9, lot_f_warm=1.0, lot_gamma_warm=2.0)
    assert all(q["action"] == WARM for q in measured.values())
    assert all(m.scheduler.lrs[n] == pytest.approx(2.0 * before[n]) for n in measured)


def test_one_layer_cools_while_another_keeps_by_its_own_threshold(digits):
    m, before, measured = control_once(digits, lot_f_warm=0.0)
    eff = {n: q["eta_eff"] for n, q in measured.items()}
    crit = {n: q["eta_crit"] for n, q in measured.items()}
    # a rho between two layers' eta_eff/eta_crit ratios cools exactly the layers above it
    ratio = {n: eff[n] / (crit[n] / 0.8) for n in measured}
    lo, hi = sorted(ratio.values())[:2]
    rho = math.sqrt(lo * hi)
    m2, before2, measured2 = control_once(digits, lot_f_warm=0.0, lot_rho=rho, lot_eta_floor=0.0)
    for n, q in measured2.items():
        assert q["action"] == (COOL if ratio[n] > rho else KEEP), n


def test_scheduler_that_never_acts_leaves_training_bit_identical_to_adam(digits):
    plain = make(digits, reset_optimizer=False)
    lot = make(digits, reset_optimizer=False, lr_scheduler="lot", lot_every=3, lot_rho=1e9, lot_f_warm=0.0)
    for m in (plain, lot):
        for t in (0, 1):
            m.learn_task(t, digits.tasks[t].on(CPU, "train"))
    assert all(torch.equal(a, b) for a, b in zip(weights(plain), weights(lot)))
    trace = lot.trace()
    assert len(trace["step"]) == 10 and trace["step"][:2] == [3, 6]  # it measured, every K = 3 steps
    assert all(a == 0.0 for a in trace["action/backbone.1"])


def test_per_layer_lrs_carry_over_a_fresh_optimiser_unless_told_not_to(digits):
    for keep in (True, False):
        m = make(digits, lr_scheduler="lot", lot_every=2, lot_rho=1e-9, reset_optimizer=True, lot_keep_lr=keep)
        m.learn_task(0, digits.tasks[0].on(CPU, "train"))
        cooled = m.scheduler.lrs["backbone.1"]
        assert cooled < 0.01
        m.learn_task(1, digits.tasks[1].on(CPU, "train"))
        first = m.scheduler.rows[[r["task_position"] for r in m.scheduler.rows].index(1)]
        # the first control step of task 1 starts from the carried lr (or from lr) and cools once
        start = cooled if keep else 0.01
        assert first["layers"]["backbone.1"]["lr"] == pytest.approx(start * 0.99)


def test_scheduler_state_round_trips_through_a_checkpoint(digits):
    kw = dict(lr_scheduler="lot", lot_every=4, reset_optimizer=False, lot_volatility="window", lot_window=3)
    a = make(digits, **kw)
    a.learn_task(0, digits.tasks[0].on(CPU, "train"))
    b = make(digits, seed=5, **kw)
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.learn_task(1, digits.tasks[1].on(CPU, "train"))
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    assert a.trace() == b.trace() and a.scheduler.lrs == b.scheduler.lrs


def test_trial_record_carries_a_small_json_trace_and_per_task_info(digits):
    p = METHODS.get("finetune").params(**{**ADAM, "lr_scheduler": "lot", "lot_every": 5}).model_dump()
    rec = run_trial(TrialSpec("t", "c", "finetune", "finetune", p, (1, 0), 0, 0, "task_incremental", False), digits)
    json.dumps(rec, allow_nan=False)  # no NaN/inf: they are None
    trace = rec["trace"]
    assert {"step", "task_position", "lr/backbone.1", "eta_crit/heads.1", "sigma2/backbone.3", "V/heads.0"} <= set(trace)
    assert trace["task_position"][0] == 0 and trace["task_position"][-1] == 1
    first_task_steps = 2 * math.ceil(digits.tasks[1].on(CPU, "train").x.shape[0] / 32)  # 2 epochs, batch 32
    assert trace["task_start_step"] == [0, first_task_steps]
    assert trace["lr/heads.0"][0] is None and trace["lr/heads.1"][0] is not None  # heads only while their task trains
    assert rec["task_info"][0]["info_lot_control_steps"] == len([t for t in trace["task_position"] if t == 0])
    plain = run_trial(TrialSpec("t", "c", "finetune", "finetune", METHODS.get("finetune").params(**ADAM).model_dump(),
                                (1, 0), 0, 0, "task_incremental", False), digits)
    assert "trace" not in plain


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
    for field, bad in [("gamma_cool", 1.0), ("gamma_warm", 0.9), ("f_warm", 1.5), ("every", 0), ("rho", 0.0),
                       ("window", 1)]:
        with pytest.raises(ValidationError, match=f"lr_scheduler.lot.{field}"):
            params(optimizer={"name": "adam"}, lr_scheduler={"name": "lot", field: bad})
    for name, bad in [("wasserstein", -1.0), ("l2", -0.1)]:
        with pytest.raises(ValidationError, match=f"penalties.0.{name}.lambda"):
            params(penalties=[{"name": name, "lambda": bad}])


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
    kw = dict(wasserstein_lambda=0.5, reset_optimizer=False)
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
        p = METHODS.get("finetune").params(**{**ADAM, "epochs": 1, **extra}).model_dump()
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
    assert {"trainability", "lr_trajectories_adam_lot"} <= set(report.figures)
    assert not any(k.startswith("lr_trajectories_adam") and k != "lr_trajectories_adam_lot" for k in report.figures)
    text = report.path.read_text()
    assert "](figures/trainability.png)" in text and "](figures/lr_trajectories_adam_lot.png)" in text
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
