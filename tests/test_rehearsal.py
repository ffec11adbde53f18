"""Rehearsal and class-incremental learning: the buffer's invariants, each method's mechanism, the setting."""
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from methods import METHODS, MethodContext, seed_everything
from methods.agem import project
from methods.buffer import ReplayBuffer, _shares
from methods.icarl import herding
from orchestrator.cli import main
from orchestrator.run.trial import run_trial
from orchestrator.study.schema import TrialSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
FAST = {"training": {"epochs": 2, "batch_size": 16}, "optimizer": {"name": "sgd", "lr": 0.05}}


def make(method, bench, setting="class_incremental", seed=0, **params):
    entry = METHODS.get(method)
    seed_everything(seed)
    ctx = MethodContext(bench.input_shape, bench.classes_per_task, setting, CPU, seed)
    return entry.target(entry.params.model_validate({**FAST, **params}), ctx)


def spec(method, order, setting="class_incremental", **params):
    p = METHODS.get(method).params.model_validate({**FAST, **params}).model_dump()
    return TrialSpec("t", "c", method, method, p, tuple(order), 0, 0, setting, False)


def matrix(rec):
    return np.array([[np.nan if v is None else v for v in row] for row in rec["matrix"]])


# ---------------------------------------------------------------- the buffer
@pytest.mark.parametrize("policy", ["reservoir", "class_balanced"])
def test_the_budget_is_never_exceeded(policy):
    buf = ReplayBuffer(37, policy, CPU, seed=0)
    for step in range(60):
        n = 1 + step % 13
        buf.add(torch.randn(n, 3), torch.randint(0, 5, (n,)), task=step // 20)
        assert len(buf) <= 37
    assert len(buf) == 37 and buf.seen == sum(1 + s % 13 for s in range(60))


def test_reservoir_keeps_every_sample_seen_with_equal_probability():
    size, stream, batch, draws = 50, 500, 10, 300
    kept = np.zeros(stream)
    for seed in range(draws):
        buf = ReplayBuffer(size, "reservoir", CPU, seed=seed)
        for start in range(0, stream, batch):
            ids = torch.arange(start, start + batch)
            buf.add(ids.float().unsqueeze(1), ids, task=0)
        kept[buf.x[:len(buf), 0].long().numpy()] += 1
    p = kept / draws  # each should be size / stream = 0.1
    se_mean = np.sqrt(0.1 * 0.9 / draws / 100)  # the mean over 100 samples
    for chunk in (p[:100], p[200:300], p[-100:]):  # first, middle and last samples alike
        assert abs(chunk.mean() - 0.1) < 4 * se_mean
    assert np.abs(p - 0.1).max() < 6 * np.sqrt(0.1 * 0.9 / draws)
    assert kept.sum() == size * draws  # the buffer was full every time


def test_a_slot_drawn_twice_in_one_batch_goes_to_the_later_sample():
    """Sequential reservoir: within a batch, a later sample overwrites an earlier one's slot."""
    buf = ReplayBuffer(1, "reservoir", CPU, seed=3)
    buf.add(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), task=0)
    torch.manual_seed(0)
    for _ in range(50):
        ids = torch.arange(1, 6)
        before = buf.x[0, 0].item()
        buf.add(ids.float().unsqueeze(1), ids, task=0)
        assert buf.x[0, 0].item() in {before, *ids.tolist()}
    assert buf.y[0].item() == int(buf.x[0, 0].item())  # rows stay whole


def test_class_balanced_keeps_counts_within_one():
    buf = ReplayBuffer(50, "class_balanced", CPU, seed=0)
    for task in range(4):  # 3 classes per task, arriving in turn
        y = torch.arange(3 * task, 3 * task + 3).repeat(40)
        buf.add(torch.randn(len(y), 2), y, task=task)
        counts = [c for c in buf.class_counts(12) if c > 0]
        assert len(counts) == 3 * (task + 1) and max(counts) - min(counts) <= 1 and sum(counts) == 50


def test_class_balanced_gives_a_small_class_what_it_has_and_the_rest_to_others():
    assert _shares(10, torch.tensor([1, 50, 50])).tolist() == [1, 5, 4]


def test_buffer_state_round_trip_continues_identically():
    a = ReplayBuffer(20, "reservoir", CPU, seed=1)
    for i in range(5):
        a.add(torch.randn(8, 2), torch.randint(0, 3, (8,)), task=i)
    b = ReplayBuffer(20, "reservoir", CPU, seed=99)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    a.add(x, y, task=5)
    b.add(x, y, task=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.task, b.task) and a.seen == b.seen


# ---------------------------------------------------------------- methods, in isolation
def test_agem_projection_on_hand_built_gradients():
    g, ref = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
    (out,) = project(g, ref)
    assert torch.allclose(out, torch.tensor([0.5, 0.5]))  # g - (g.r / r.r) r = (1,0) - (-1/2)(-1,1)
    assert abs(float(out @ ref[0])) < 1e-7                 # no first-order increase of the replay loss
    (same,) = project([torch.tensor([1.0, 2.0])], [torch.tensor([1.0, 0.0])])
    assert torch.equal(same, torch.tensor([1.0, 2.0]))     # no conflict: unchanged


def test_der_stored_logits_survive_save_and_load_and_training_continues_identically(digits):
    a = make("der", digits, buffer={"size": 40})
    a.learn_task(0, digits.split(0, CPU, "train", "class_incremental"))
    state = a.state_dict()
    stored = a.buffer.logits[:len(a.buffer)].clone()
    assert stored.shape == (40, 10) and torch.isfinite(stored).all()
    b = make("der", digits, seed=5, buffer={"size": 40})
    b.load_state_dict(state)
    assert torch.equal(b.buffer.logits[:len(b.buffer)], stored)
    rng = torch.get_rng_state()
    data = digits.split(1, CPU, "train", "class_incremental")
    a.learn_task(1, data)
    torch.set_rng_state(rng)
    b.learn_task(1, data)
    for (k, wa), (_, wb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(wa, wb), k
    assert torch.equal(a.buffer.logits, b.buffer.logits)


def test_der_stores_the_logits_of_the_forward_pass_it_trained_on(digits):
    m = make("der", digits, buffer={"size": 500}, training={"epochs": 1, "batch_size": 500})
    data = digits.split(0, CPU, "train", "class_incremental")
    before = m.net.raw(data.x, 0).detach()  # one batch = the whole task: stored logits = pre-step outputs
    m.learn_task(0, data)
    order = m.buffer.x[:len(m.buffer)]
    idx = [int(torch.nonzero((data.x == row).all(dim=tuple(range(1, data.x.dim())))).squeeze()) for row in order]
    assert torch.allclose(m.buffer.logits[:len(m.buffer)], before[idx], atol=1e-6)


def test_herding_picks_the_sample_nearest_the_class_mean_first_and_prefixes_are_best():
    feats = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.1]]), dim=1)
    labels = torch.tensor([0, 0, 0, 1])
    picked = herding(feats, labels, torch.tensor([0, 1]), m=2)
    assert picked.tolist() == [2, 0, 3]  # class 0: (1,1)/sqrt2 is its mean's direction, then one more; class 1: its only
    assert herding(feats, labels, torch.tensor([0]), m=1).tolist() == [2]


def test_icarl_classifies_by_the_nearest_mean_of_exemplars(digits):
    m = make("icarl", digits)
    m.net.backbone = nn.Flatten()  # features = the normalised input itself
    m.means = torch.full((10, 2), float("nan"))
    m.means[3] = torch.tensor([1.0, 0.0])
    m.means[7] = torch.tensor([0.0, 1.0])
    x = torch.tensor([[2.0, 0.1], [0.1, 5.0], [1.0, 0.9]])
    logits = m.predict(x, task_id=0)  # the task id is not used
    assert logits.argmax(1).tolist() == [3, 7, 3]
    assert torch.isinf(logits[:, 0]).all()  # classes not seen cannot be predicted


def test_icarl_keeps_an_equal_herded_share_per_class(digits):
    m = make("icarl", digits, buffer={"size": 30})
    for position, task in enumerate((2, 0, 4)):
        m.learn_task(task, digits.split(task, CPU, "train", "class_incremental"))
        counts = [c for c in m.buffer.class_counts(10) if c]
        assert len(counts) == 2 * (position + 1) and max(counts) - min(counts) <= 1 and sum(counts) <= 30


# ---------------------------------------------------------------- the class-incremental setting
def test_class_incremental_labels_are_global_and_fixed_by_task_identity(digits):
    for task in range(5):
        y = digits.split(task, CPU, "test", "class_incremental").y
        assert set(y.unique().tolist()) == {2 * task, 2 * task + 1}
        assert set(digits.split(task, CPU, "test", "task_incremental").y.unique().tolist()) == {0, 1}


def test_class_incremental_predicts_without_the_task_id_over_the_classes_seen(digits):
    m = make("finetune", digits)
    for task in (3, 1):
        m.learn_task(task, digits.split(task, CPU, "train", "class_incremental"))
    x = digits.split(0, CPU, "test", "class_incremental").x
    a, b = m.predict(x, 0), m.predict(x, 4)
    assert torch.equal(a, b)  # no task id
    assert set(a.argmax(1).unique().tolist()) <= {2, 3, 6, 7}  # only the classes of tasks 1 and 3 are live
    assert torch.isinf(a[:, [0, 1, 4, 5, 8, 9]]).all()


def test_class_incremental_finetune_forgets_what_task_incremental_keeps(digits):
    order = (0, 1, 2, 3, 4)
    cil = matrix(run_trial(spec("finetune", order), digits))
    til = matrix(run_trial(spec("finetune", order, "task_incremental"), digits))
    # class-IL: the last task's classes take over the single head; earlier tasks fall towards 0
    assert np.nanmean(cil[-1, :4]) < 30 and cil[-1, 4] > 40  # chance over the 10 live classes: 10
    assert np.nanmean(til[-1, :4]) > 80


def test_replay_beats_finetune_in_class_incremental_learning(digits):
    order = (0, 1, 2, 3, 4)
    ft = np.nanmean(matrix(run_trial(spec("finetune", order), digits))[-1])
    er = np.nanmean(matrix(run_trial(spec("er", order, buffer={"size": 200}, training={"epochs": 3, "batch_size": 16}),
                                     digits))[-1])
    assert er > ft + 15


def test_buffer_counts_are_in_the_trial_record(digits):
    rec = run_trial(spec("er", (4, 2, 0), buffer={"size": 50}), digits)
    per_class, per_task = rec["series"]["buffer_per_class"], rec["series"]["buffer_per_task"]
    assert [sum(c) for c in per_class] == [50, 50, 50]
    assert per_task[0][4] == 50 and per_task[0][2] == 0 and per_task[-1][0] > 0
    assert [sum(per_class[-1][2 * t:2 * t + 2]) for t in (0, 2, 4)] == [per_task[-1][t] for t in (0, 2, 4)]


# ---------------------------------------------------------------- validation and one real study
def _study(tmp_path, setting, methods, **extra):
    study = {"name": "cil", "benchmark": {"name": "split_digits", "setting": setting},
             "orders": {"kind": "random", "count": 2, "seed": 0, "include_identity": True}, "seeds": [0],
             "methods": methods, "resources": {"cpu": 1}, "output_dir": str(tmp_path / "results"),
             "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize("setting,method,needs", [("class_incremental", "halrp", "task_incremental"),
                                                  ("task_incremental", "icarl", "class_incremental")])
def test_a_method_refuses_a_setting_it_cannot_run_in(tmp_path, capsys, setting, method, needs):
    path = _study(tmp_path, setting, [{"name": method}])
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert needs in err and method in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


def test_every_rehearsal_method_runs_in_one_real_class_incremental_study(ray_local, tmp_path):
    fast = {"training": {"epochs": 1, "batch_size": 16}, "optimizer": {"name": "sgd", "lr": 0.05}}
    names = ["finetune", "joint", "ewc", "er", "der", "der_pp", "agem", "lwf", "icarl"]
    path = _study(tmp_path, "class_incremental",
                  [{"name": n, "params": {**fast, **({"buffer": {"size": 40}} if n in ("er", "der", "der_pp", "agem",
                                                                                        "icarl") else {})}}
                   for n in names])
    assert main(["run", str(path)]) == 0
    summary = json.loads((tmp_path / "results" / "cil" / "summary.json").read_text())
    assert sorted(e["label"] for e in summary["configs"]) == sorted(names)
    assert all(e["trials_failed"] == 0 and e["R"] == 2 for e in summary["configs"])
    joint = next(e for e in summary["configs"] if e["label"] == "joint")
    ft = next(e for e in summary["configs"] if e["label"] == "finetune")
    assert joint["acc_mean"] > ft["acc_mean"]
