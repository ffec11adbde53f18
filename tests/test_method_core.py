"""The shared method core on tiny data: loop, settings, optimisers, save/load."""
import math

import pytest
import torch

import datasets
import methods
from methods import METHODS, MethodContext, TrainingDiverged, seed_everything
from methods.loop import accuracy, epoch_batches, fit, num_batches
from methods.network import TaskNetwork
from methods.backbones import SmallCNN

CPU = torch.device("cpu")



def make(bench, setting="task_incremental", seed=0, **params):
    entry = METHODS.get("finetune")
    seed_everything(seed)
    ctx = MethodContext(bench.input_shape, bench.classes_per_task, setting, CPU, seed)
    return entry.target(entry.params(**params), ctx)


def test_fit_visits_every_sample_once_per_epoch_in_batches():
    x = torch.arange(10, dtype=torch.float32)
    seen = []

    def step(xb, yb):
        seen.append(xb.tolist())
        return xb.sum() * 0

    out = fit(step, x, x.long(), epochs=2, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert [len(b) for b in seen] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(seen[:3], [])) == list(range(10)) and sorted(sum(seen[3:], [])) == list(range(10))
    assert sum(seen[:3], []) != sum(seen[3:], [])  # reshuffled each epoch
    assert out == {"loss_first_epoch": 0.0, "loss_last_epoch": 0.0}


def test_fit_stops_a_diverging_run_with_a_clear_error():
    def step(xb, yb):
        return torch.tensor(math.nan)

    with pytest.raises(TrainingDiverged, match="loss became nan in epoch 1/3; lower lr"):
        fit(step, torch.zeros(4), torch.zeros(4), epochs=3, batch_size=2, generator=torch.Generator())


def test_accuracy_in_percent():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert accuracy(lambda x: x, logits, y, batch_size=3) == 75.0


def test_finetune_learns_a_task(digits):
    m = make(digits, optimizer="adam", lr=0.01, epochs=5)
    m.learn_task(2, digits.tasks[2].on(CPU, "train"))
    test = digits.tasks[2].on(CPU, "test")
    assert accuracy(lambda x: m.predict(x, 2), test.x, test.y) > 95.0


def test_task_incremental_has_a_head_per_task_domain_one_shared(digits):
    ti = make(digits, setting="task_incremental").net
    di = make(digits, setting="domain_incremental").net
    assert [h.out_features for h in ti.heads] == [2] * 5
    assert len(di.heads) == 1 and di.head(3) is di.head(0)
    x = digits.tasks[0].on(CPU, "test").x[:3]
    assert ti(x, 1).shape == (3, 2)


def test_learning_a_task_only_moves_its_own_head(digits):
    m = make(digits, epochs=1)
    before = [h.weight.clone() for h in m.net.heads]
    m.learn_task(3, digits.tasks[3].on(CPU, "train"))
    changed = [not torch.equal(b, h.weight) for b, h in zip(before, m.net.heads)]
    assert changed == [False, False, False, True, False]


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("rmsprop", torch.optim.RMSprop)])
def test_each_optimiser_is_used(digits, name, cls):
    m = make(digits, optimizer=name, lr=0.001, momentum=0.0 if name == "adam" else 0.5, epochs=1)
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    assert isinstance(m.optimizer, cls)
    assert m.optimizer.param_groups[0]["lr"] == 0.001


def test_same_seed_same_result_other_seed_differs(digits):
    def final_weights(seed):
        m = make(digits, seed=seed, epochs=2)
        m.learn_task(0, digits.tasks[0].on(CPU, "train"))
        return m.net.backbone[1].weight

    assert torch.equal(final_weights(0), final_weights(0))
    assert not torch.equal(final_weights(0), final_weights(1))


def test_save_and_load_reproduce_predictions_and_training(digits):
    """A per-task checkpoint resumes exactly: same predictions, same next task."""
    kw = dict(optimizer="adam", lr=0.005, epochs=2, reset_optimizer=False)
    a = make(digits, **kw)
    a.learn_task(0, digits.tasks[0].on(CPU, "train"))
    state = a.state_dict()
    b = make(digits, seed=123, **kw)  # different init, all of it overwritten by the state
    b.load_state_dict(state)
    x = digits.tasks[0].on(CPU, "test").x
    assert torch.equal(a.predict(x, 0), b.predict(x, 0))
    for m in (a, b):
        m.learn_task(1, digits.tasks[1].on(CPU, "train"))
    assert torch.equal(a.predict(x, 1), b.predict(x, 1))


def test_small_cnn_on_images_and_a_clear_error_on_flat_inputs(digits):
    m = make(digits, backbone="small_cnn", channels=[8, 16], epochs=1)
    m.learn_task(0, digits.tasks[0].on(CPU, "train"))
    assert m.predict(digits.tasks[0].on(CPU, "test").x, 0).shape[1] == 2
    with pytest.raises(ValueError, match="small_cnn needs image inputs"):
        SmallCNN((64,), [8])


def test_method_registry_lists_finetune_and_rejects_unknown_names():
    assert "finetune" in methods.METHODS.names()
    with pytest.raises(KeyError, match="unknown method 'ewc2'; available: agem, autostep, der, der_pp, er, ewc, finetune, halrp, icarl, joint"):
        methods.METHODS.get("ewc2")


def test_core_does_not_import_ray_or_mlflow():
    import subprocess
    import sys

    code = ("import sys, methods, datasets, methods.finetune;"
            "bad=[m for m in ('ray','mlflow') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_one_sample_last_batch_does_not_break_batchnorm_backbones():
    """LeNet has BatchNorm1d: a task of batch_size + 1 samples ends with a batch of one."""
    import torch

    from datasets.benchmark import DeviceSplit
    from methods import METHODS, MethodContext

    entry = METHODS.get("finetune")
    ctx = MethodContext((3, 32, 32), (2,), "task_incremental", torch.device("cpu"), 0)
    m = entry.target(entry.params(backbone="lenet", epochs=1, batch_size=4), ctx)
    before = {k: v.clone() for k, v in m.net.state_dict().items()}
    info = m.learn_task(0, DeviceSplit(torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 0, 1, 1])))
    assert info["loss_last_epoch"] == info["loss_last_epoch"]  # finite, no BatchNorm error
    assert any(not torch.equal(before[k], v) for k, v in m.net.state_dict().items())  # the full batch trained


@pytest.mark.parametrize("n, batch_size, sizes", [(9, 4, [4, 5]), (10, 4, [4, 4, 2]), (8, 4, [4, 4]),
                                                  (1, 4, [1]), (3, 4, [3]), (5, 1, [1, 1, 1, 1, 1])])
def test_an_epoch_covers_every_sample_once_and_never_ends_on_a_one_sample_batch(n, batch_size, sizes):
    perm = torch.randperm(n)
    batches = epoch_batches(perm, batch_size)
    assert [len(b) for b in batches] == sizes
    assert len(batches) == num_batches(n, batch_size)
    assert torch.equal(torch.cat(batches), perm)
