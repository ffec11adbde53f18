"""methods.Learner: the shared loop with optional hooks, for a method that wants it.

The hook method below adds an L1 term through ``extra_loss`` and counts its
calls: the weights it trains must come out sparser than finetune's from the
same seed, and every hook must run once per task (extra_loss once per step).
"""
from __future__ import annotations

import pytest
import textwrap

import torch

import methods
from methods import MethodContext

pytestmark = pytest.mark.usefixtures("isolated_registries")

HOOKED = textwrap.dedent('''
    import torch
    from pydantic import Field

    import methods


    class L1Params(methods.GradientParams):
        l1: float = Field(1e-3, ge=0.0, description="weight of the L1 term on every weight")


    @methods.register("l1_finetune_hooked")
    class L1Finetune(methods.Learner):
        """Finetune plus an L1 term, written with the Learner hooks."""

        Params = L1Params

        def __init__(self, params, ctx):
            super().__init__(params, ctx)
            self.calls = {"begin": 0, "extra": 0, "end": 0}

        def begin_task(self, task_id, data):
            self.calls["begin"] += 1

        def extra_loss(self, task_id):
            self.calls["extra"] += 1
            return self.p.l1 * sum(w.abs().sum() for w in self.net.parameters())

        def end_task(self, task_id, data):
            self.calls["end"] += 1
            return {"l1_norm": float(sum(w.abs().sum() for w in self.net.parameters()))}
''')


def test_a_learner_subclass_changes_training_only_through_its_hooks(digits, tmp_path):
    from orchestrator.study.plugins import load

    (tmp_path / "hooked_plugin.py").write_text(HOOKED)
    load(["hooked_plugin.py"], tmp_path)
    cls = methods.METHODS.get("l1_finetune_hooked").target
    ctx = MethodContext(digits.input_shape, digits.classes_per_task, "task_incremental", torch.device("cpu"), 0)
    common = {"training": {"epochs": 2, "batch_size": 32}, "optimizer": {"name": "sgd", "lr": 0.05}}
    methods.seed_everything(0)
    hooked = cls(cls.Params(**common, l1=1e-2), ctx)
    methods.seed_everything(0)
    plain = methods.Learner(methods.Learner.Params(**common), ctx)
    for task_id in (0, 1):
        data = digits.tasks[task_id].on("cpu", "train")
        info = hooked.learn_task(task_id, data)
        plain.learn_task(task_id, data)
    steps_per_task = 2 * -(-digits.tasks[0].x_train.shape[0] // 32)
    assert hooked.calls["begin"] == 2 and hooked.calls["end"] == 2
    assert hooked.calls["extra"] >= 2 * steps_per_task - 2  # once per step (a one-sample tail joins a batch)
    l1 = sum(w.abs().sum() for w in hooked.net.backbone.parameters())
    l1_plain = sum(w.abs().sum() for w in plain.net.backbone.parameters())
    assert info["l1_norm"] > 0 and l1 < 0.95 * l1_plain  # the hook's term did shrink the weights
    methods.seed_everything(0)
    zero = cls(cls.Params(**common, l1=0.0), ctx)  # l1 = 0: the hooks change nothing, bit for bit
    methods.seed_everything(0)
    ref = methods.Learner(methods.Learner.Params(**common), ctx)
    zero.learn_task(0, digits.tasks[0].on("cpu", "train"))
    ref.learn_task(0, digits.tasks[0].on("cpu", "train"))
    assert all(torch.equal(a, b) for a, b in zip(zero.net.parameters(), ref.net.parameters()))
