"""Update magnitude (specs/hybrid.md): the k-from-cosine rule, block freezing, ResNet9, the three strategies."""
import math

import pytest
import torch
from pydantic import ValidationError

import datasets
from datasets.benchmark import DeviceSplit
from methods import METHODS, MethodContext, seed_everything
from methods.backbones import MLP, SmallCNN, build_backbone
from methods.resnet import ResNet9
from methods.update_magnitude import backbone_blocks, blocks_to_train, cosine
from orchestrator.study.schema import TrialSpec
from orchestrator.run.trial import run_trial

CPU = torch.device("cpu")
SGD = dict(optimizer="sgd", lr=0.05, momentum=0.9, epochs=2, batch_size=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def spec(order, **params):
    p = METHODS.get("update_magnitude").params(**{**SGD, **params}).model_dump()
    return TrialSpec("t", "c", "update_magnitude", "update_magnitude", p, tuple(order), 0, 0, "task_incremental", False)


def make(bench_shape, classes, seed=0, **params):
    entry = METHODS.get("update_magnitude")
    seed_everything(seed)
    ctx = MethodContext(bench_shape, classes, "task_incremental", CPU, seed)
    return entry.target(entry.params(**{**SGD, **params}), ctx)


def make_digits(bench, seed=0, **params):
    return make(bench.input_shape, bench.classes_per_task, seed, **params)


def probe_without_consuming(m, task_id, data):
    """The g_t the method will compute when task_id arrives (its probe RNG left where it was)."""
    from methods.update_magnitude import mean_backbone_gradient

    state = m.probe_generator.get_state()
    g = mean_backbone_gradient(m.net, task_id, data.x, data.y, m.p.grad_batches, m.p.training.batch_size, m.probe_generator)
    m.probe_generator.set_state(state)
    return g


# ---------------------------------------------------------------- the rule
def test_identical_gradients_give_k_min_opposite_give_k_max_graded_in_between():
    g = torch.randn(1000)
    assert cosine(g, g.clone()) == pytest.approx(1.0)
    assert cosine(g, -g) == pytest.approx(-1.0)
    for rule in ("threshold", "graded"):
        assert blocks_to_train(cosine(g, g.clone()), rule, 0.0, 1, 9) == 1
        assert blocks_to_train(cosine(g, -g), rule, 0.0, 1, 9) == 9
    # graded: k_min + ceil((1 - s)/2 (k_max - k_min))
    assert [blocks_to_train(s, "graded", 0.0, 1, 9) for s in (0.75, 0.5, 0.4, 0.0, -0.5)] == [2, 3, 4, 5, 7]
    ks = [blocks_to_train(s / 50, "graded", 0.0, 1, 9) for s in range(50, -51, -1)]
    assert ks == sorted(ks) and set(ks) == set(range(1, 10))  # every level, monotone in s
    # threshold at tau
    assert blocks_to_train(0.3, "threshold", 0.3, 2, 7) == 2 and blocks_to_train(0.29, "threshold", 0.3, 2, 7) == 7
    assert blocks_to_train(math.nan, "threshold", 0.0, 1, 9) == 9  # a zero gradient: no evidence of relatedness
    assert math.isnan(cosine(torch.zeros(3), torch.ones(3)))


@pytest.mark.parametrize("sign,rule,want_s,want_k", [(1, "threshold", 1.0, 1), (-1, "threshold", -1.0, 3),
                                                     (1, "graded", 1.0, 1), (-1, "graded", -1.0, 3)])
def test_the_method_gates_on_the_stored_gradient(digits, sign, rule, want_s, want_k):
    m = make_digits(digits, strategy="adaptive", rule=rule, hidden=[16, 16, 16], k_min=1)
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    data = digits.tasks[1].on(CPU, "train")
    m.stored_grad = sign * probe_without_consuming(m, 1, data)  # a hand-made g_{t-1}
    info = m.learn_task(1, data)
    assert info["s_t"] == pytest.approx(want_s, abs=1e-6) and info["k_t"] == want_k


def test_graded_rule_in_between_through_the_method(digits):
    m = make_digits(digits, strategy="adaptive", rule="graded", hidden=[16, 16, 16], k_min=1)
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    data = digits.tasks[1].on(CPU, "train")
    g = probe_without_consuming(m, 1, data)
    u = g / g.norm()
    v = torch.randn_like(u)
    v -= (v @ u) * u
    m.stored_grad = 0.5 * u + math.sqrt(0.75) * v / v.norm()  # cos = 0.5 -> 1 + ceil(0.25 * 2) = 2
    info = m.learn_task(1, data)
    assert info["s_t"] == pytest.approx(0.5, abs=1e-5) and info["k_t"] == 2


# ---------------------------------------------------------------- freezing
def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_blocks_do_not_change_weights_or_bn_statistics_trainable_ones_do():
    torch.manual_seed(0)
    x = torch.randn(96, 3, 16, 16)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()
    data = DeviceSplit(x, y)
    m = make((3, 16, 16), (2, 2), strategy="frozen", k_min=2, backbone="resnet9", channels=[4, 8, 8, 8],
             epochs=1, batch_size=16, grad_batches=2)
    first = m.learn_task(0, data)
    assert first["k_t"] == 9  # the first task trains everything
    blocks = backbone_blocks(m.net.backbone)
    before = [_snapshot(b) for b in blocks]
    head0 = _snapshot(m.net.heads[0])
    info = m.learn_task(1, data)
    assert info["k_t"] == 2
    for i, (b, old) in enumerate(zip(blocks, before)):
        new = _snapshot(b)
        frozen = i < 7
        for k in old:
            if k.endswith("num_batches_tracked"):
                assert torch.equal(new[k], old[k]) == frozen, (i, k)
            elif frozen:
                assert torch.equal(new[k], old[k]), (i, k)  # weights and BN running mean/var untouched
        if not frozen:
            assert any(not torch.equal(new[k], old[k]) for k in old if "running_mean" in k)
            assert any(not torch.equal(new[k], old[k]) for k in old if k.endswith("weight"))
    assert all(torch.equal(v, head0[k]) for k, v in _snapshot(m.net.heads[0]).items())  # another task's head
    trainable = sum(p.numel() for b in blocks[7:] for p in b.parameters()) + sum(
        p.numel() for p in m.net.heads[1].parameters())
    assert info["trainable_params"] == trainable
    assert all(p.requires_grad for p in m.net.parameters())  # the freeze lasts one task


def test_frozen_with_k_all_equals_initialized_and_the_probe_changes_nothing(digits):
    order = (2, 0, 4, 1, 3)
    init = run_trial(spec(order, strategy="initialized"), digits)
    frozen = run_trial(spec(order, strategy="frozen", k_min=2), digits)  # mlp [100, 100]: 2 blocks
    adaptive = run_trial(spec(order, strategy="adaptive", k_min=2), digits)
    finetune = run_trial(TrialSpec("t", "c", "finetune", "finetune",
                                   METHODS.get("finetune").params(**SGD).model_dump(), order, 0, 0,
                                   "task_incremental", False), digits)
    assert init["matrix"] == frozen["matrix"] == adaptive["matrix"] == finetune["matrix"]


def test_per_task_log_and_frozen_trains_fewer_parameters(digits):
    order = (0, 1, 2, 3, 4)
    rec = run_trial(spec(order, strategy="frozen", k_min=1), digits)
    info = rec["task_info"]
    assert all({"info_s_t", "info_k_t", "info_trainable_params"} <= set(row) for row in info)
    assert math.isnan(info[0]["info_s_t"]) and all(-1 <= row["info_s_t"] <= 1 for row in info[1:])
    assert [row["info_k_t"] for row in info] == [2, 1, 1, 1, 1]
    head = 100 * 2 + 2
    assert info[0]["info_trainable_params"] == 64 * 100 + 100 + 100 * 100 + 100 + head
    assert info[1]["info_trainable_params"] == 100 * 100 + 100 + head


def test_adaptive_on_a_small_cnn_runs_and_gates(digits):
    rec = run_trial(spec((0, 1, 2), strategy="adaptive", backbone="small_cnn", channels=[8, 8, 8], tau=1.0,
                         epochs=1), digits)
    assert rec["status"] == "completed"
    assert [row["info_k_t"] for row in rec["task_info"]][:3] == [3, 3, 3]  # tau = 1: nothing is related


def test_save_and_load_carries_the_stored_gradient(digits):
    a = make_digits(digits, strategy="adaptive", rule="graded", epochs=1)
    a.learn_task(0, digits.tasks[0].on(CPU, "train"))
    b = make_digits(digits, seed=9, strategy="adaptive", rule="graded", epochs=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.stored_grad, b.stored_grad)
    ia, ib = (m.learn_task(1, digits.tasks[1].on(CPU, "train")) for m in (a, b))
    assert ia == ib and not math.isnan(ia["s_t"])
    x = digits.tasks[0].on(CPU, "test").x
    assert torch.equal(a.predict(x, 0), b.predict(x, 0))


def test_params_are_validated_with_clear_messages(digits):
    P = METHODS.get("update_magnitude").params
    with pytest.raises(ValidationError, match="k_min=3 > k_max=2"):
        P(k_min=3, k_max=2)
    with pytest.raises(ValidationError, match="strategy"):
        P(strategy="hybrid")
    with pytest.raises(ValueError, match="k_min=3 but backbone mlp has 2 blocks"):
        make_digits(digits, k_min=3)
    with pytest.raises(ValueError, match="k_max=5 but backbone mlp has 2 blocks"):
        make_digits(digits, k_max=5)


# ---------------------------------------------------------------- ResNet9 and blocks
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_resnet9_shapes_and_blocks(shape):
    net = ResNet9(shape, [4, 8, 16, 32])
    assert len(net.blocks) == 9 and net.out_features == 32
    assert net(torch.randn(2, *shape)).shape == (2, 32)
    p = METHODS.get("update_magnitude").params(network={"backbone": "resnet9", "channels": [4, 8]})
    two_stage = build_backbone("resnet9", shape, p.network)
    assert len(two_stage.blocks) == 9 and two_stage(torch.randn(2, *shape)).shape == (2, 8)


def test_resnet9_refuses_flat_inputs_naming_the_fix():
    with pytest.raises(ValueError, match="protocol: halrp.*backbone: mlp"):
        ResNet9((784,))


def test_blocks_of_the_sequential_backbones():
    mlp = backbone_blocks(MLP((1, 8, 8), [5, 6, 7]))
    assert [type(b[-2]).__name__ for b in mlp] == ["Linear"] * 3
    cnn = backbone_blocks(SmallCNN((1, 8, 8), [4, 4]))
    assert len(cnn) == 2 and sum(p.numel() for b in cnn for p in b.parameters()) == sum(
        p.numel() for p in SmallCNN((1, 8, 8), [4, 4]).parameters())
