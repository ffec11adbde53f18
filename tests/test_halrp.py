"""HALRP (specs/halrp.md): perturbed layers, least squares, SVD, rank selection, pruning, the method, presets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

import datasets
from methods import METHODS, MethodContext, seed_everything
from methods.halrp_layers import (
    PerturbedConv2d,
    PerturbedLinear,
    kernel_positions,
    perturbable_layers,
)
from methods.halrp_math import (
    factor_init,
    least_squares_scales,
    prune_threshold,
    pruning_rate,
    residual_matrix,
    select_ranks,
    svd,
)
from orchestrator.results.records import matrix_array
from orchestrator.run.trial import run_trial
from orchestrator.study.schema import TrialSpec

CPU = torch.device("cpu")
SMALL = {"backbone": "mlp", "hidden": [32, 32], "epochs": 3, "batch_size": 32, "lr": 3e-3, "upper_rank": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    e = datasets.BENCHMARKS.get("split_digits")
    return e.target(e.params(val_fraction=0.2))


def make(bench, seed=0, **params):
    entry = METHODS.get("halrp")
    seed_everything(seed)
    ctx = MethodContext(bench.input_shape, bench.classes_per_task, "task_incremental", CPU, seed)
    return entry.target(entry.params(**{**SMALL, **params}), ctx)


def split(bench, task, part="train"):
    return bench.tasks[task].on(CPU, part)


def learn(m, bench, task):
    return m.learn_task(task, split(bench, task), val=split(bench, task, "val"))


def _randomise(layer, rank_scale=1.0):
    with torch.no_grad():
        for w in (layer.scale_in, layer.scale_out):
            w.copy_(1 + 0.5 * torch.randn_like(w))
        for w in (layer.factor_in, layer.factor_out):
            w.copy_(rank_scale * torch.randn_like(w))
        if layer.bias is not None:
            layer.bias.copy_(torch.randn_like(layer.bias))
    return layer


# ---------------------------------------------------------------- perturbed layers
@pytest.mark.parametrize("kernel,stride,padding", [
    (3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 2), (5, 1, 0), (4, 1, 0), (2, 2, 0), (3, 3, 1), (1, 1, 0), (1, 2, 0),
    ((3, 5), (2, 1), (1, 2)), ((2, 3), 1, (1, 0)),
])
def test_efficient_conv_perturbation_equals_a_dense_conv_with_the_composed_weight(kernel, stride, padding):
    torch.manual_seed(0)
    base = nn.Conv2d(5, 7, kernel, stride=stride, padding=padding)
    layer = _randomise(PerturbedConv2d(base, base.bias, rank=3), 0.3)
    assert layer.pooled  # the sum-pool path is possible here, not only the dense fallback
    x = torch.randn(4, 5, 13, 11)
    dense = F.conv2d(x, layer.composed_weight(), layer.bias, base.stride, base.padding)
    outs, grads = [], []
    for compose in (True, False):  # the default (one conv with W_t) and the pooled rank-r path
        layer.compose = compose
        out = layer(x)
        assert out.shape == dense.shape
        assert torch.allclose(out, dense, atol=1e-5, rtol=1e-5)
        outs.append(out)
        grads.append(torch.autograd.grad((out * torch.cos(out)).sum(), list(layer.parameters())))
    for a, b in zip(*grads):  # and the same gradients for the scales, factors and bias (float32 sums)
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_the_composed_conv_weight_is_the_spec_formula_entry_by_entry():
    torch.manual_seed(1)
    base = nn.Conv2d(2, 3, 3, bias=False)
    layer = _randomise(PerturbedConv2d(base, None, rank=2))
    w0, m_r, m_s = base.weight.detach(), layer.scale_out.detach(), layer.scale_in.detach()
    rs = layer.factor_out.detach() @ layer.factor_in.detach()
    w = layer.composed_weight().detach()
    for o in range(3):
        for i in range(2):
            want = m_r[o] * m_s[i] * w0[o, i] + rs[o, i] * torch.ones(3, 3)
            assert torch.allclose(w[o, i], want, atol=1e-6)


def test_dilated_conv_falls_back_to_the_dense_weight_and_linear_matches_its_formula():
    torch.manual_seed(2)
    base = nn.Conv2d(3, 4, 3, padding=2, dilation=2)
    layer = _randomise(PerturbedConv2d(base, base.bias, rank=2))
    assert not layer.pooled
    x = torch.randn(2, 3, 9, 9)
    assert torch.allclose(layer(x), F.conv2d(x, layer.composed_weight(), layer.bias, 1, 2, 2), atol=1e-5)
    lin = nn.Linear(6, 4)
    p = _randomise(PerturbedLinear(lin.weight, lin.bias, rank=2))
    want = p.scale_out[:, None] * lin.weight * p.scale_in[None, :] + p.factor_out @ p.factor_in
    x = torch.randn(5, 6)
    assert torch.allclose(p(x), x @ want.T + p.bias, atol=1e-5)
    assert set(dict(p.named_parameters())) == {"bias", "scale_out", "scale_in", "factor_out", "factor_in"}  # W0 not owned


def test_perturbable_layers_cover_every_conv_and_linear_of_resnet9_shortcuts_included():
    from methods.resnet import ResNet9

    net = ResNet9((3, 16, 16), [4, 8, 8, 8])
    names = [n for n, _ in perturbable_layers(net)]
    assert len(names) == 1 + 16 + 3  # stem, two convs per block, three 1x1 shortcuts
    assert sum("shortcut" in n for n in names) == 3
    assert kernel_positions(net.get_submodule(names[0])) == 9 and kernel_positions(nn.Linear(2, 2)) == 1
    with pytest.raises(ValueError, match="LayerNorm"):
        perturbable_layers(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)))


# ---------------------------------------------------------------- least squares, SVD, ranks
def test_least_squares_scales_and_residual_by_hand():
    w0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    wf = torch.tensor([[2.0, 2.0], [3.0, 8.0]], dtype=torch.float64)
    m_r, m_s = least_squares_scales(wf, w0)
    assert m_r.tolist() == pytest.approx([6 / 5, 41 / 25])
    s0 = (1.2 * 1 * 2 + 1.64 * 3 * 3) / (1.2 ** 2 + (1.64 * 3) ** 2)
    s1 = (1.2 * 2 * 2 + 1.64 * 4 * 8) / ((1.2 * 2) ** 2 + (1.64 * 4) ** 2)
    assert m_s.tolist() == pytest.approx([s0, s1])
    d = residual_matrix(wf, w0, m_r, m_s)
    assert d[1, 0].item() == pytest.approx(3.0 - 1.64 * 3.0 * s0)
    two = torch.ones(2, dtype=torch.float64)
    assert residual_matrix(wf, w0, two, two).tolist() == [[1.0, 0.0], [0.0, 4.0]]  # W~ - W0
    # conv: sums run over kernel positions; exact row scaling is recovered; a zero filter gets scale 0
    torch.manual_seed(0)
    c0 = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    c0[2] = 0
    a = torch.tensor([0.5, -2.0, 7.0], dtype=torch.float64)
    m_r, m_s = least_squares_scales(a[:, None, None, None] * c0, c0)
    assert m_r.tolist() == pytest.approx([0.5, -2.0, 0.0]) and m_s.tolist() == pytest.approx([1.0, 1.0])
    # the conv residual is the mean of D over the kh*kw positions
    cf = c0 + torch.arange(4, dtype=torch.float64).view(1, 1, 2, 2).expand(3, 2, 2, 2)
    ones = torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    assert torch.allclose(residual_matrix(cf, c0, *ones), torch.full((3, 2), 1.5, dtype=torch.float64))


def test_rank_selection_by_hand():
    # layer A linear (c=1), s = [3, 1], F = 1 -> scores 9, 1; layer B conv 2x2 (c=4), s = [1, .5], F = .5 -> 2, .5
    # sorted: 9 A, 2 B, 1 A, .5 B; cumulative shares .72 .88 .96 1
    spectra = [torch.tensor([3.0, 1.0]), torch.tensor([1.0, 0.5])]
    ranks = lambda rate, upper=100, method="importance": select_ranks(spectra, [1.0, 0.5], [1, 4], rate, upper, method)
    assert ranks(0.5) == [1, 1]    # one score kept; B's zero is clamped up to 1
    assert ranks(0.72) == [1, 1]   # share must exceed: .72 is not > .72, so 2 kept (9 A, 2 B)
    assert ranks(0.9) == [2, 1]
    assert ranks(0.97) == [2, 2]
    assert ranks(1.0) == [2, 2]    # no prefix exceeds 1: all kept
    assert ranks(0.97, upper=1) == [1, 1]
    assert ranks(0.1, upper=5, method="flat") == [2, 2] and ranks(0.1, upper=1, method="flat") == [1, 1]
    # the importance decides: give B a large Fisher and B is ranked first
    assert select_ranks(spectra, [1.0, 100.0], [1, 4], 0.9, 100) == [1, 2]
    assert select_ranks(spectra, [0.0, 0.0], [1, 4], 0.9, 100) == [1, 1]  # no signal: minimum rank


def test_svd_and_factors_reproduce_known_singular_values_and_the_best_rank_r_approximation():
    torch.manual_seed(3)
    s_true = torch.tensor([5.0, 3.0, 2.0, 0.5, 0.1], dtype=torch.float64)
    for shape in [(7, 40), (40, 7)]:
        u, _ = torch.linalg.qr(torch.randn(shape[0], 5, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(shape[1], 5, dtype=torch.float64))
        d = u @ torch.diag(s_true) @ v.T
        uu, s, vh = svd(d)
        assert s[:5].tolist() == pytest.approx(s_true.tolist(), abs=1e-9) and s[5:].abs().max() < 1e-6
        r_, s_ = factor_init(uu, s, vh, 2)
        assert r_.shape == (shape[0], 2) and s_.shape == (2, shape[1])
        best = u[:, :2] @ torch.diag(s_true[:2]) @ v[:, :2].T
        assert torch.allclose(r_ @ s_, best, atol=1e-9)
        # F = 1, c = 1: scores 25, 9, 4, .25, .01 of 38.26; shares .653 .889 .993 -> three kept at .9
        assert select_ranks([s], [1.0], [1], 0.9, 100) == [3]
        assert select_ranks([s], [1.0], [1], 0.85, 100) == [2]


# ---------------------------------------------------------------- pruning arithmetic
def test_pruning_rate_by_hand():
    assert pruning_rate("paper", 0.4, base=1000, fixed=100, factors=900) == pytest.approx(0.4)  # 1 - .6 / 1.0
    assert pruning_rate("strict", 0.4, base=1000, fixed=100, factors=900) == pytest.approx(1 - 500 / 900)
    assert pruning_rate("strict", 0.4, base=1000, fixed=100, factors=500) == 0.0  # I = .6: within the bound
    assert pruning_rate("paper", 0.4, base=1000, fixed=100, factors=499) == 0.0
    assert pruning_rate("strict", 0.4, base=1000, fixed=700, factors=100) == 1.0  # never-pruned alone exceed .6


def test_prune_threshold_by_hand():
    v = np.arange(1.0, 11.0)  # 1..10, rho = .55: (1 - rho) n = 4.5 may survive
    paper = prune_threshold(v, 0.55, 0.0, "paper")
    assert paper == pytest.approx(5.95)  # numpy's linear quantile: 5 + .95; keeps 6..10 (five entries)
    strict = prune_threshold(v, 0.55, 0.0, "strict")
    assert strict == 6.0 and (v > strict).sum() == 4  # at most floor(4.5) survive
    assert prune_threshold(v, 0.55, 6.5, "strict") == 6.5 and prune_threshold(v, 0.55, 6.5, "paper") == 6.5
    assert prune_threshold(v, 0.0, 1e-5, "strict") == 1e-5 and prune_threshold(v, 1.0, 0.0, "strict") == 10.0


# ---------------------------------------------------------------- the method
def test_first_task_of_the_order_is_the_frozen_base_and_ranks_are_logged(digits):
    m = make(digits, prune_bound=None)
    first = learn(m, digits, 3)
    assert m.base_task == 3 and first["is_base"] == 1.0 and first["capacity_increment"] == 0.0
    base = {k: v.clone() for k, v in m.net.backbone.state_dict().items()}
    info = learn(m, digits, 1)
    assert info["is_base"] == 0.0
    assert all(torch.equal(v, base[k]) for k, v in m.net.backbone.state_dict().items())  # W0, BN: untouched
    for name, layer in [("1", nn.Linear(64, 32)), ("3", nn.Linear(32, 32))]:
        r = info[f"rank_{name}"]
        assert 1 <= r <= min(8, *layer.weight.shape) and m.tasks["1"].get_submodule(name).rank == r
    assert all(info[f"time_{p}_s"] > 0 for p in ("free_finetune", "importance", "svd_rank", "lowrank", "prune"))
    assert info["time_base_s"] == 0.0 and first["time_base_s"] > 0 and first["time_lowrank_s"] == 0.0
    assert all(info[f"importance_{n}"] > 0 for n in ("1", "3"))


def test_without_pruning_earlier_tasks_never_change(digits):
    m = make(digits, prune_bound=None)
    seen = {}
    for t in (2, 0, 4, 1):
        learn(m, digits, t)
        seen[t] = m.predict(split(digits, t, "test").x, t)
        for s, logits in seen.items():
            assert torch.equal(m.predict(split(digits, s, "test").x, s), logits)
    assert m.learned == [2, 0, 4, 1]


def test_trial_accuracies_of_earlier_tasks_are_constant_without_pruning(digits):
    p = METHODS.get("halrp").params(**SMALL, prune_bound=None).model_dump()
    order = (4, 2, 0, 3, 1)
    rec = run_trial(TrialSpec("t", "c", "halrp", "halrp", p, order, 0, 0, "task_incremental", False), digits)
    a = matrix_array(rec)
    for pos, task in enumerate(order):
        assert np.all(a[pos:, task] == a[pos, task])
    assert np.nanmean(a[-1]) > 80
    assert [row["info_is_base"] for row in rec["task_info"]] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert {"info_rank_1", "info_capacity_increment", "info_time_prune_s"} <= set(rec["task_info"][-1])


def _hand_capacity(m):
    """(base + every later task's head, BN, scales, biases, nonzero factors) / base - 1, from the tensors."""
    base = sum(w.numel() for w in m.net.backbone.parameters()) + sum(w.numel() for w in m.net.head(m.base_task).parameters())
    added = 0
    for key, net in m.tasks.items():
        added += sum(w.numel() for w in m.net.head(int(key)).parameters())
        for name, w in net.named_parameters():
            added += int(torch.count_nonzero(w)) if "factor" in name else w.numel()
    return added / base


@pytest.mark.parametrize("rule", ["strict", "paper"])
def test_pruning_keeps_the_capacity_within_the_bound_and_reprunes_earlier_tasks(digits, rule):
    q = 0.4
    m = make(digits, prune_bound=q, prune_rule=rule)
    infos = [learn(m, digits, t) for t in range(5)]
    caps = [i["capacity_increment"] for i in infos]
    assert caps[-1] == pytest.approx(_hand_capacity(m))
    assert infos[1]["prune_rate"] == 0.0 and infos[1]["capacity_increment"] < 1 - q  # task 2 alone fits
    pruned = [i for i in infos if i["prune_rate"] > 0]
    assert pruned, "the bound should bind by the last task"
    if rule == "strict":
        assert all(c <= 1 - q + 1e-12 for c in caps)
        assert pruned[-1]["capacity_increment"] > 1 - q - 0.05  # pruned to the bound, not far below
    else:  # the paper's rate counts the never-pruned parameters but removes only factors: it overshoots
        over = [i["capacity_increment"] - (1 - q) for i in pruned]
        assert all(o > 0 for o in over)
    # re-pruning: task 1's factors lose entries when later tasks push the model over the bound
    m2 = make(digits, prune_bound=q, prune_rule=rule)
    for t in range(2):
        learn(m2, digits, t)
    kept = sum(int(torch.count_nonzero(w)) for n, w in m2.tasks["1"].named_parameters() if "factor" in n)
    for t in range(2, 5):
        learn(m2, digits, t)
    assert sum(int(torch.count_nonzero(w)) for n, w in m2.tasks["1"].named_parameters() if "factor" in n) < kept


def test_save_and_load_reproduce_predictions_exactly_and_continue_identically(digits):
    a = make(digits, backbone="small_cnn", channels=[8, 8], prune_bound=0.8)
    for t in (1, 3, 0):
        learn(a, digits, t)
    b = make(digits, seed=5, backbone="small_cnn", channels=[8, 8], prune_bound=0.8)
    b.load_state_dict(a.state_dict())
    for t in range(5):
        x = split(digits, t, "test").x
        assert torch.equal(a.predict(x, t), b.predict(x, t))
    ia, ib = learn(a, digits, 4), learn(b, digits, 4)
    strip = lambda info: {k: v for k, v in info.items() if not k.startswith("time_")}
    assert strip(ia) == strip(ib)
    for t in (1, 3, 0, 4):
        x = split(digits, t, "test").x
        assert torch.equal(a.predict(x, t), b.predict(x, t))


def test_validation_split_is_required_unless_importance_uses_training_data(digits):
    e = datasets.BENCHMARKS.get("split_digits")
    no_val = e.target(e.params(val_fraction=0.0))  # explicitly none: this test is about a benchmark without validation
    m = make(no_val)
    with pytest.raises(ValueError, match="benchmark.params.val_fraction"):
        m.learn_task(0, split(no_val, 0), val=None)
    with pytest.raises(ValueError, match="val_fraction"):
        m.learn_task(0, split(no_val, 0), val=split(no_val, 0, "val"))  # val_fraction 0: an empty split
    m = make(no_val, importance_split="train", epochs=2)
    m.learn_task(0, split(no_val, 0))
    assert m.learn_task(1, split(no_val, 1))["rank_1"] >= 1


def test_quirk_switches_change_what_they_say(digits):
    # scale_l2_target 0 pulls the scales toward 0: they end smaller than under the default target 1
    mean_scale = {}
    for target in (0, 1):
        m = make(digits, scale_l2_target=target, wd_rate=5.0, prune_bound=None, epochs=4)
        learn(m, digits, 0)
        learn(m, digits, 1)
        layer = m.tasks["1"].get_submodule("1")
        mean_scale[target] = float(layer.scale_in.abs().mean())
    assert mean_scale[0] < mean_scale[1]
    # count_task_biases false leaves the biases (32 + 32) out of the capacity
    counts = {}
    for flag in (True, False):
        m = make(digits, count_task_biases=flag, prune_bound=None)
        learn(m, digits, 0)
        counts[flag] = learn(m, digits, 1)["capacity_increment"]
    base = 64 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2
    assert counts[True] - counts[False] == pytest.approx(64 / base)


def test_domain_incremental_is_refused(digits):
    entry = METHODS.get("halrp")
    ctx = MethodContext(digits.input_shape, digits.classes_per_task, "domain_incremental", CPU, 0)
    with pytest.raises(ValueError, match="task_incremental"):
        entry.target(entry.params(**SMALL), ctx)


# ---------------------------------------------------------------- params and presets
# The authors' runs, read off lijiaqi/HALRP scripts/*_HALRP.sh, their run_*.py (the lr decay) and loader_*.py
# (the training-set sizes the decay is sized by). f_epoch = gamma ** steps, gamma = 0.95 ** (B / (50000/T x
# (1 - valid))), steps = N // B (drop_last) or ceil(N / B); the exponents are written out by hand here.
#  preset: (backbone, epochs, batch, lr, wd_rate, l1_hyp, approx_rate, upper_rank, est_rank_epochs, prune_bound,
#           val_fraction, f_epoch)
OFFICIAL = {
    "pmnist": ("lenet", 12, 128, 1e-3, 1e-3, 1e-6, 0.9, 100, 1, 0.4, 0.2,
               0.95 ** (375 * 128 / 4000)),  # N 48,000, drop_last: 375 steps; 0.95 ** 12 = 0.540
    "cifar100_split": ("lenet", 20, 128, 1e-3, 1e-4, 1e-4, 0.9, 100, 1, 0.8, 0.2,
                       0.95 ** (32 * 128 / 4000)),  # N 4,000: ceil -> 32 steps
    "cifar100_superclass": ("lenet", 20, 128, 1e-3, 1e-4, 1e-4, 0.9, 100, 1, 0.8, 0.2,
                            0.95 ** (16 * 128 / 2000)),  # T 20, N 2,000: 16 steps
    "five_datasets_alexnet": ("alexnet_batch_stats", 12, 128, 1e-3, 1e-4, 1e-6, 0.9, 100, 1, 0.4, 0.2,
                              [0.95 ** (s * 128 / 8000) for s in (312, 375, 457, 375, 105)]),
    "five_datasets_resnet": ("resnet18_halrp", 12, 128, 1e-3, 1e-4, 1e-6, 0.95, 120, 3, 0.4, 0.2,
                             [0.95 ** (s * 128 / 8000) for s in (312, 375, 457, 375, 105)]),
    "tinyimagenet20_alexnet": ("alexnet_batch_stats", 50, 32, 1e-3, 5e-4, 1e-5, 0.9, 100, 25, 0.4, 0.1,
                               0.95 ** (141 * 32 / 2250)),  # N 4,500, ceil -> 141 steps
    "tinyimagenet40_alexnet": ("alexnet_batch_stats", 50, 32, 1e-3, 1e-4, 5e-4, 0.9, 100, 20, 0.4, 0.1,
                               0.95 ** (71 * 32 / 1125)),  # N 2,250, ceil -> 71 steps
    "tinyimagenet20_resnet": ("resnet18_halrp", 50, 32, 5e-4, 1e-4, 5e-4, 0.9, 100, 25, 0.4, 0.1,
                              0.95 ** (141 * 32 / 2250)),
    "tinyimagenet40_resnet": ("resnet18_halrp", 50, 32, 5e-4, 1e-4, 5e-4, 0.9, 100, 25, 0.4, 0.1,
                              0.95 ** (71 * 32 / 1125)),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_every_preset_is_the_authors_run(name):
    from methods.halrp_presets import OFFICIAL_RUNS

    backbone, epochs, batch, lr, wd, l1, approx, upper, est, q, val, f_epoch = OFFICIAL[name]
    p = METHODS.get("halrp").params(preset=name)
    assert (p.network.backbone, p.training.epochs, p.training.batch_size, p.optimizer.name, p.optimizer.lr,
            p.wd_rate, p.l1_hyp, p.approx_rate, p.upper_rank, p.est_rank_epochs, p.prune_bound) == (
        backbone, epochs, batch, "adam", lr, wd, l1, approx, upper, est, q)
    # every quirk of the code
    assert (p.variant, p.scale_l2_target, p.prune_rule, p.count_task_biases, p.grad_multiplier, p.lr_schedule) == (
        "official", 0, "paper", False, 10.0, "batch")
    assert p.lr_decay == pytest.approx(f_epoch, rel=1e-12)
    assert OFFICIAL_RUNS[name].val_fraction == val
    assert set(OFFICIAL) == set(OFFICIAL_RUNS)


def test_the_pmnist_decay_is_about_x054_per_epoch_and_cifar_x095():
    P = METHODS.get("halrp").params
    assert P(preset="pmnist").lr_decay == pytest.approx(0.95 ** 12) and round(P(preset="pmnist").lr_decay, 3) == 0.540
    assert P(preset="cifar100_split").lr_decay == pytest.approx(0.95, abs=0.002)


def test_the_per_batch_decay_compounds_to_the_official_per_epoch_factor():
    from methods.halrp import lr_factors
    from methods.loop import num_batches

    f = METHODS.get("halrp").params(preset="pmnist").lr_decay
    official_gamma = 0.95 ** (128 / (50000 / 10 * 0.8))  # the code's ExponentialLR gamma on PMNIST
    assert official_gamma ** 375 == pytest.approx(f, rel=1e-12)  # 48,000 // 128 batches per official epoch
    for n in (48_000, 2_400, 2_401, 130):  # the full task, a 5% study, a ragged last batch, two batches
        per_epoch, per_batch = lr_factors("batch", f, 0, n, 128, 5)
        assert per_epoch == 1.0 and per_batch ** num_batches(n, 128) == pytest.approx(f, rel=1e-12)
    assert lr_factors("epoch", 0.5, 0, 100, 10, 5) == (0.5, 1.0)
    assert lr_factors("batch", [0.5, 0.25], 1, 100, 10, 2)[1] ** 10 == pytest.approx(0.25)  # per task identity
    assert lr_factors("batch_cifar", 0.95, 0, 100, 128, 10)[1] == pytest.approx(official_gamma)  # the formula


def test_a_trained_phase_ends_each_epoch_at_lr0_times_the_factor(digits, monkeypatch):
    from methods import optimizers

    built = []
    original = optimizers.Adam.build

    def spy(self, params):
        opt = original(self, params)
        built.append(opt)
        return opt

    monkeypatch.setattr(optimizers.Adam, "build", spy)
    for schedule in ("batch", "epoch"):
        built.clear()
        m = make(digits, lr_schedule=schedule, lr_decay=0.5, epochs=3, prune_bound=None)
        learn(m, digits, 0)  # the base: 3 epochs
        learn(m, digits, 1)  # free fine-tune 1 epoch, low-rank 2 epochs
        lrs = [opt.param_groups[0]["lr"] for opt in built]
        assert lrs == pytest.approx([3e-3 * 0.5 ** 3, 3e-3 * 0.5, 3e-3 * 0.5 ** 2], rel=1e-9)


def test_precedence_is_explicit_then_variant_then_preset():
    P = METHODS.get("halrp").params
    ours = P(preset="pmnist", variant="clorch")
    assert (ours.scale_l2_target, ours.prune_rule, ours.count_task_biases, ours.grad_multiplier, ours.lr_schedule,
            ours.lr_decay) == (1, "strict", True, 1.0, "epoch", 0.95)  # the variant over the preset
    assert (ours.wd_rate, ours.training.epochs, ours.network.backbone) == (1e-3, 12, "lenet")  # the preset's run
    mine = P(preset="pmnist", variant="clorch", scale_l2_target=0, training={"epochs": 4}, wd_rate=0.5)
    assert (mine.scale_l2_target, mine.prune_rule, mine.training.epochs, mine.training.batch_size, mine.wd_rate,
            mine.l1_hyp) == (0, "strict", 4, 128, 0.5, 1e-6)  # explicit over both
    assert P(preset="pmnist", lr_schedule="epoch").lr_decay == pytest.approx(0.95 ** 12)  # explicit, rest official
    assert P(preset="pmnist", optimizer={"name": "sgd"}).optimizer.lr == 1e-3  # the preset's lr, the user's sgd
    # our backbones under variant clorch, the code's under the preset
    res = P(preset="five_datasets_resnet", variant="clorch")
    assert (res.network.backbone, res.network.channels, res.approx_rate, res.upper_rank, res.est_rank_epochs) == (
        "resnet9", [32, 64, 128, 256], 0.95, 120, 3)
    assert P(preset="five_datasets_alexnet", variant="clorch").network.backbone == "alexnet"
    assert P(preset="five_datasets_alexnet", network={"backbone": "lenet"}).network.backbone == "lenet"
    # no preset: variant official is the code's own formula; nothing at all is our defaults
    alone = P(variant="official")
    assert (alone.lr_schedule, alone.lr_decay, alone.scale_l2_target, alone.prune_rule) == (
        "batch_cifar", 0.95, 0, "paper")
    plain = P()
    assert (plain.variant, plain.scale_l2_target, plain.prune_rule, plain.lr_schedule, plain.lr_decay) == (
        None, 1, "strict", "epoch", 0.95)
    assert P().optimizer.lr == 1e-3 and P(optimizer={"name": "sgd"}).optimizer.lr == 1e-3  # HALRP's default lr
    for p in (ours, mine, res, alone, P(preset="five_datasets_alexnet")):
        assert P(**p.model_dump()) == p  # a dumped config re-validates to itself
        assert P.model_validate(p.model_dump(mode="json")) == p


def test_a_per_task_decay_list_must_match_the_task_count(digits):
    with pytest.raises(ValueError, match="list of 2 per-task factors but the benchmark has 5 tasks"):
        make(digits, lr_decay=[0.5, 0.5])
    with pytest.raises(ValidationError, match="batch_cifar takes one lr_decay"):
        METHODS.get("halrp").params(lr_decay=[0.5] * 5, lr_schedule="batch_cifar")
    m = make(digits, lr_decay=[0.9, 0.8, 0.7, 0.6, 0.5], lr_schedule="batch", epochs=2)
    learn(m, digits, 4)


def test_the_preset_notes_name_the_official_split_and_input():
    from datasets import BENCHMARKS

    p = METHODS.get("halrp").params(preset="pmnist")
    params = BENCHMARKS.get("permuted_mnist").params
    assert p.benchmark_notes("permuted_mnist", params(protocol="halrp", val_fraction=0.2)) == []
    notes = p.benchmark_notes("permuted_mnist", params(protocol="halrp", pmnist_input="pad", val_fraction=0.1))
    assert len(notes) == 2 and "val_fraction 0.2" in notes[0] and "pmnist_input: official" in notes[1]
    tiny = METHODS.get("halrp").params(preset="tinyimagenet20_alexnet")
    assert tiny.benchmark_notes("split_tinyimagenet", params(val_fraction=0.1)) == []


# ---------------------------------------------------------------- the official ResNet-18
def test_the_official_resnet18_has_conv_biases_avgpool2_and_a_1024_input_head():
    from methods.backbones import build_backbone

    net = build_backbone("resnet18_halrp", (3, 32, 32), None)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 16 + 3 and all(c.bias is not None for c in convs)  # stem, 8 blocks x 2, 3 shortcuts
    assert [c.out_channels for c in convs if c.kernel_size == (3, 3)] == [32] * 5 + [64] * 4 + [128] * 4 + [256] * 4
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs if c.kernel_size == (1, 1)] == [
        (32, 64, (2, 2)), (64, 128, (2, 2)), (128, 256, (2, 2))]
    assert all(m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    seen = {}
    net.pool.register_forward_hook(lambda mod, inp, out: seen.update(before=tuple(inp[0].shape)))
    out = net.eval()(torch.randn(2, 3, 32, 32))
    assert seen["before"] == (2, 256, 4, 4) and out.shape == (2, 1024) and net.out_features == 1024
    # = F.avg_pool2d(., 2) of the last block, flattened
    x = torch.randn(2, 3, 32, 32)
    features = x
    for block in net.blocks:
        features = block(features)
    assert torch.allclose(net(x), F.avg_pool2d(features, 2).flatten(1))
    # the parameter count of the code's ResNet_flat_18 (nf 32) without its head, by hand
    conv = lambda i, o, k: i * o * k * k + o
    bn = lambda c: 2 * c
    expected = conv(3, 32, 3) + bn(32)
    for c_in, c_out in [(32, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)]:
        expected += conv(c_in, c_out, 3) + bn(c_out) + conv(c_out, c_out, 3) + bn(c_out)
        if c_in != c_out:
            expected += conv(c_in, c_out, 1) + bn(c_out)
    assert sum(w.numel() for w in net.parameters()) == expected
    assert build_backbone("resnet18_halrp", (3, 64, 64), None).out_features == 4096  # Tiny-ImageNet
    with pytest.raises(ValueError, match="resnet18_halrp needs images of at least 16x16"):
        build_backbone("resnet18_halrp", (3, 8, 8), None)


def test_halrp_perturbs_every_conv_of_the_official_resnet18_biases_included(digits):
    from methods.backbones import build_backbone
    from methods.halrp_layers import make_perturbed

    net = build_backbone("resnet18_halrp", (3, 16, 16), None).eval()
    names = [n for n, _ in perturbable_layers(net)]
    assert len(names) == 20
    x = torch.randn(2, 3, 16, 16)
    want = net(x)
    for name in names:  # identity perturbations (scales 1, factors 0) with the base's biases: the same network
        layer = net.get_submodule(name)
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, make_perturbed(layer, layer.bias, 1))
    assert torch.allclose(net(x), want, atol=1e-5)


@pytest.mark.parametrize("bad,match", [
    ({"preset": "cifar"}, "unknown preset 'cifar'; available: pmnist"),
    ({"preset": "pmnist", "variant": "ours"}, "unknown variant 'ours'; available: official | clorch"),
    ({"lr_decay": 1.5}, "lr_decay"), ({"lr_schedule": "step"}, "lr_schedule"),
    ({"training": {"epochs": 2}, "est_rank_epochs": 2}, "est_rank_epochs=2 must be < training.epochs=2"),
    ({"training": {"reset_optimizer": False}}, "reset_optimizer: true"),
    ({"approx_rate": 0.0}, "approx_rate"), ({"approx_rate": 1.5}, "approx_rate"),
    ({"upper_rank": 0}, "upper_rank"), ({"prune_bound": 1.0}, "prune_bound"), ({"prune_bound": -0.1}, "prune_bound"),
    ({"wd_rate": -1.0}, "wd_rate"), ({"l1_hyp": -1e-6}, "l1_hyp"), ({"optimizer": {"name": "idbd"}}, "optimizer"),
    ({"lr_scheduler": {"name": "lot"}}, "lr_scheduler\n  Extra inputs are not permitted"),
    ({"penalties": []}, "penalties\n  Extra inputs are not permitted"), ({"scale_l2_target": 0.5}, "scale_l2_target"),
])
def test_bad_params_are_refused_naming_the_field(bad, match):
    with pytest.raises(ValidationError, match=match):
        METHODS.get("halrp").params(**bad)


def test_study_file_validates_with_its_search_spaces():
    from pathlib import Path

    from orchestrator.study.loading import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "halrp_pmnist_orders.yaml")
    names = {m.name for m in study.methods}
    assert {"halrp", "finetune", "ewc"} <= names and study.num_tasks == 10 and len(study.task_orders()) == 5
    searched = next(m for m in study.methods if m.label == "halrp_search").params
    assert {"wd_rate", "l1_hyp", "approx_rate", "upper_rank", "prune_bound"} <= set(searched)
    assert study.search.selection == "val"  # the search chooses on validation
    # "the paper's setting": the preset unchanged, on the authors' input and split
    paper = next(m for m in study.methods if m.display == "halrp")
    assert paper.params == {"preset": "pmnist"}
    bench = study.benchmark_params()
    assert (bench.protocol, bench.pmnist_input, bench.val_fraction) == ("halrp", "official", 0.2)


def test_the_reproduction_study_is_the_cpu_sized_paper_setting():
    from pathlib import Path

    from orchestrator.study.loading import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "halrp_pmnist_reproduction.yaml")
    bench = study.benchmark_params()
    assert (bench.protocol, bench.pmnist_input, bench.num_tasks, bench.val_fraction) == ("halrp", "official", 5, 0.2)
    assert 0.04 <= bench.train_fraction <= 0.06 and bench.max_test_per_task >= 2000
    orders = study.task_orders()
    assert sorted(o[0] for o in orders) == list(range(5))  # every task is the base once (Latin square)
    assert all(sorted(o[p] for o in orders) == list(range(5)) for p in range(5))
    methods = {m.display: m.params for m in study.methods}
    assert methods["halrp"] == {"preset": "pmnist", "training": {"epochs": 3}}  # the preset but for epochs
    assert methods["ewc"]["ewc_lambda"] == {"grid": [10.0, 100.0, 1000.0]} and "finetune" in methods
    assert study.search.selection == "val" and study.search.algorithm == "grid"
