"""Select on validation, report on test.

The fixture benchmark's test labels are flipped on purpose, so the config
that learns (perfect on validation) is the worst on test, and a config that
learns nothing (chance on both) is "best on test". Selection on validation
must pick the learner; only ``search.selection: test`` picks the other, and
says so.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import yaml

from orchestrator.cli import main

pytestmark = pytest.mark.usefixtures("isolated_registries")

PLUGIN = textwrap.dedent('''
    """Blobs whose TEST labels are flipped, and a nearest-mean method whose shrink=1 learns nothing."""
    import numpy as np
    import torch
    from pydantic import BaseModel, Field

    import datasets
    import methods


    class FlippedParams(BaseModel):
        num_tasks: int = 2
        val_fraction: float = 0.25


    @datasets.register("flipped_blobs", FlippedParams)
    def flipped_blobs(p, ctx=None):
        """Two blobs per task; the test split's labels are swapped."""
        rng = np.random.default_rng(0)
        tasks = []
        for k in range(p.num_tasks):
            centres = 4.0 * rng.standard_normal((2, 4))
            y = np.repeat([0, 1], 100)
            x = (centres[y] + rng.standard_normal((200, 4))).astype(np.float32)
            held = rng.permutation(200)[:int(200 * p.val_fraction)]
            train = np.setdiff1d(np.arange(200), held)
            yt = np.repeat([0, 1], 50)
            xt = (centres[yt] + rng.standard_normal((100, 4))).astype(np.float32)
            tasks.append(datasets.Task(f"flipped {k}", x[train], y[train], xt, 1 - yt, n_classes=2,
                                       x_val=x[held], y_val=y[held]))
        return datasets.Benchmark("flipped_blobs", tuple(tasks), input_shape=(4,))


    class ShrinkParams(BaseModel):
        shrink: float = Field(0.0, ge=0.0, le=1.0)


    @methods.register("shrunk_mean")
    class ShrunkMean:
        """Nearest class mean; shrink=1 puts every class mean on the task mean (always class 0)."""

        Params = ShrinkParams

        def __init__(self, params, ctx):
            self.p, self.ctx, self.means = params, ctx, {}

        def learn_task(self, task_id, data):
            x = data.x.float()
            means = torch.stack([x[data.y == c].mean(0) for c in range(2)])
            self.means[task_id] = (1 - self.p.shrink) * means + self.p.shrink * x.mean(0)
            return {}

        def predict(self, x, task_id):
            return -torch.cdist(x.float(), self.means[task_id])

        def state_dict(self):
            return {"means": dict(self.means)}

        def load_state_dict(self, state):
            self.means = dict(state["means"])
''')


def _study(tmp_path, name, selection, **extra):
    (tmp_path / "flipped_plugin.py").write_text(PLUGIN)
    study = {"name": name, "plugins": ["flipped_plugin.py"], "benchmark": {"name": "flipped_blobs"},
             "orders": {"kind": "latin_square"},
             "methods": [{"name": "shrunk_mean", "label": "nm", "params": {"shrink": {"grid": [0.0, 1.0]}}}],
             "search": {"selection": selection}, "output_dir": str(tmp_path / "results"),
             "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_the_config_best_on_test_is_not_selected_on_validation(ray_local, tmp_path, capsys):
    assert main(["run", str(_study(tmp_path, "sel_val", "val"))]) == 0
    summary = json.loads((tmp_path / "results" / "sel_val" / "summary.json").read_text())
    by_shrink = {e["searched"]["shrink"]: e for e in summary["configs"]}
    learner, blind = by_shrink[0.0], by_shrink[1.0]
    assert learner["val"]["acc_mean"] > 95 and learner["acc_mean"] < 5  # perfect on val, flipped on test
    assert blind["acc_mean"] == pytest.approx(50.0) and blind["val"]["acc_mean"] == pytest.approx(50.0, abs=10)
    assert summary["selection"] == "val" and summary["best"]["nm"]["searched"] == {"shrink": 0.0}
    assert summary["best"]["nm"]["objective"] == pytest.approx(learner["val"]["acc_mean"])
    report = (tmp_path / "results" / "sel_val" / "report.md").read_text()
    assert "selection on validation" in report and "best nm by mean ACC on validation" in report
    record = json.loads(next((tmp_path / "results" / "sel_val" / "trials").glob("*.json")).read_text())
    assert np.array(record["val_matrix"], dtype=float).shape == (2, 2)


def test_selection_on_test_picks_the_other_config_and_says_so(ray_local, tmp_path, capsys):
    assert main(["run", str(_study(tmp_path, "sel_test", "test"))]) == 0
    assert "clorch: warning: search.selection is test" in capsys.readouterr().err
    summary = json.loads((tmp_path / "results" / "sel_test" / "summary.json").read_text())
    assert summary["selection"] == "test" and summary["best"]["nm"]["searched"] == {"shrink": 1.0}
    assert "SELECTED ON TEST" in (tmp_path / "results" / "sel_test" / "report.md").read_text()


def test_a_search_without_a_validation_split_is_refused_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "noval.yaml"
    path.write_text(yaml.safe_dump({
        "name": "noval", "benchmark": {"name": "split_digits", "params": {"val_fraction": 0.0}},
        "orders": {"kind": "latin_square"}, "output_dir": str(tmp_path / "results"),
        "methods": [{"name": "finetune", "params": {"optimizer": {"name": "sgd", "lr": {"grid": [0.01, 0.1]}}}}]}))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "benchmark.params.val_fraction (got 0.0)" in err and "search.selection: test" in err
    assert not (tmp_path / "results").exists()
    without_search = yaml.safe_load(path.read_text())
    without_search["methods"][0]["params"] = {}
    path.write_text(yaml.safe_dump(without_search))
    assert main(["validate", str(path)]) == 0  # nothing chooses: no validation needed


def test_every_trial_evaluates_validation_and_test(digits):
    import datasets
    from orchestrator.results.records import record_from_json
    from orchestrator.run.trial import run_trial
    from orchestrator.study.schema import TrialSpec

    bench = datasets.load_benchmark("split_digits", {})  # the default val_fraction (0.1)
    assert bench.validation_source == "held_out" and all(len(t.x_val) > 0 for t in bench.tasks)
    params = {"training": {"epochs": 1}}
    spec = TrialSpec("t", "c", "finetune", "finetune", params, (2, 0, 1, 3, 4), 0, 0, "task_incremental", False)
    rec = record_from_json(run_trial(spec, bench))
    test, val = rec.matrix(), rec.matrix("val")
    assert np.isnan(test).sum() == np.isnan(val).sum() == 10  # the same entries, lower triangle by position
    assert not np.array_equal(test, val)  # different images
    assert rec.stats("val")["acc"] == pytest.approx(np.nanmean(val[-1]))


def test_a_trainability_benchmark_validates_on_its_training_set(tmp_path):
    from orchestrator.study.checks import has_validation
    import datasets

    params = datasets.BENCHMARKS.get("random_label_mnist").params(val_fraction=0.0)
    assert has_validation(params)  # the training set is its validation, whatever val_fraction says
