"""A researcher's own method, brought without forking clorch: plugin files, entry points, discovery.

The method below is a plain class (no clorch base class): a nearest-class-mean
classifier, so its accuracy is real and checkable, not a constant.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

import datasets
import methods
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("isolated_registries")

PLAIN_METHOD = '''
"""A plugin: a plain class implementing the Method contract, registered under {name!r}."""
import torch
from pydantic import BaseModel, Field

import methods


class NearestMeanParams(BaseModel):
    shrink: float = Field(0.0, ge=0.0, le=1.0, description="pull each class mean toward the task mean")


@methods.register("{name}")
class NearestMean:
    """Nearest class mean per task (no gradient, no forgetting)."""

    Params = NearestMeanParams

    def __init__(self, params, ctx):
        self.p, self.ctx, self.means = params, ctx, {{}}

    def learn_task(self, task_id, data):
        x = data.x.flatten(1).float()
        classes = self.ctx.classes_per_task[task_id]
        means = torch.stack([x[data.y == c].mean(0) for c in range(classes)])
        self.means[task_id] = (1 - self.p.shrink) * means + self.p.shrink * x.mean(0)
        return {{"classes": float(classes)}}

    def predict(self, x, task_id):
        return -torch.cdist(x.flatten(1).float(), self.means[task_id])

    def state_dict(self):
        return {{"means": {{k: v.clone() for k, v in self.means.items()}}}}

    def load_state_dict(self, state):
        self.means = dict(state["means"])
'''


def _study(tmp: Path, name: str, plugins: list[str], method: str, **extra) -> Path:
    study = {"name": name, "plugins": plugins,
             "benchmark": {"name": "split_digits", "params": {"classes_per_task": 2}},
             "orders": {"kind": "latin_square"}, "methods": [{"name": method, "params": {"shrink": {"grid": [0.0, 0.5]}}}],
             "output_dir": str(tmp / "results"), "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}, **extra}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_plugin_method_runs_through_real_ray_and_mlflow(ray_local, tmp_path):
    (tmp_path / "my_methods.py").write_text(PLAIN_METHOD.format(name="plugin_mean"))
    path = _study(tmp_path, "plug", ["my_methods.py"], "plugin_mean", seeds=[0])
    assert main(["run", str(path)]) == 0
    files = sorted((tmp_path / "results" / "plug" / "trials").glob("*.json"))
    records = [json.loads(f.read_text()) for f in files]
    assert len(records) == 2 * 5  # two configs x the 5 latin-square orders
    assert {r["status"] for r in records} == {"completed"}
    final = [v for r in records for v in r["matrix"][-1]]
    assert min(final) > 80.0  # nearest class mean on 2-class digit tasks: real accuracy, not chance
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("plug")
    trials = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'trial'", max_results=100)
    configs = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'config'", max_results=100)
    assert len(trials) == 10 and all(r.info.status == "FINISHED" for r in trials)
    assert len(configs) == 2 and {r.data.tags["clorch.method"] for r in configs} == {"plugin_mean"}


def test_a_broken_plugin_is_one_message_exit_2_and_nothing_written(tmp_path, capsys):
    (tmp_path / "broken_plugin.py").write_text("import torch\nraise RuntimeError('my plugin is broken')\n")
    path = _study(tmp_path, "broken", ["broken_plugin.py"], "finetune")
    for command in ("validate", "run"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "plugins[0] (broken_plugin.py): importing it failed: RuntimeError: my plugin is broken" in err
        assert "broken_plugin.py, line 2" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_missing_plugin_and_a_name_registered_twice_are_clear_errors(tmp_path, capsys):
    assert main(["validate", str(_study(tmp_path, "missing", ["nowhere.py"], "finetune"))]) == 2
    assert "no plugin file at" in capsys.readouterr().err
    assert main(["validate", str(_study(tmp_path, "nomod", ["no_such_module_xyz"], "finetune"))]) == 2
    assert "no module named 'no_such_module_xyz'" in capsys.readouterr().err
    (tmp_path / "clash_plugin.py").write_text(PLAIN_METHOD.format(name="finetune"))
    assert main(["validate", str(_study(tmp_path, "clash", ["clash_plugin.py"], "finetune"))]) == 2
    err = capsys.readouterr().err
    assert "method 'finetune' is registered twice: by methods.finetune and again by clash_plugin" in err


def test_validate_and_list_see_the_plugin(tmp_path, capsys, monkeypatch):
    (tmp_path / "listed_methods.py").write_text(PLAIN_METHOD.format(name="listed_mean"))
    path = _study(tmp_path, "listed", ["listed_methods.py"], "listed_mean")
    assert main(["validate", str(path)]) == 0
    assert "ok (10 trials" in capsys.readouterr().out
    assert main(["list", str(path), "listed_mean"]) == 0
    out = capsys.readouterr().out
    assert "method listed_mean — Nearest class mean per task" in out and "(plugin: listed_methods)" in out
    assert "shrink: float = 0.0" in out
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other_methods.py").write_text(PLAIN_METHOD.format(name="other_mean"))
    assert main(["list", "--plugin", "other_methods.py"]) == 0
    out = capsys.readouterr().out
    assert "  other_mean — Nearest class mean per task" in out and "(plugin: other_methods)" in out
    assert "  finetune — " in out


def test_an_installed_entry_point_adds_a_method_without_a_plugins_line(tmp_path, capsys, monkeypatch):
    site = tmp_path / "site"
    (site / "clorch_ep_demo").mkdir(parents=True)
    (site / "clorch_ep_demo" / "__init__.py").write_text(PLAIN_METHOD.format(name="ep_mean"))
    dist = site / "clorch_ep_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clorch-ep-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clorch.plugins]\ndemo = clorch_ep_demo\n")
    monkeypatch.syspath_prepend(str(site))
    path = _study(tmp_path, "ep", [], "ep_mean")
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "ep_mean" in methods.METHODS and methods.METHODS.get("ep_mean").module == "clorch_ep_demo"


def test_a_new_built_in_is_one_file_with_zero_edits(tmp_path):
    """Copy the two packages, drop one file into each, import: both are registered."""
    for package in ("methods", "datasets"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "methods" / "zz_new_method.py").write_text(PLAIN_METHOD.format(name="zz_new_method"))
    (tmp_path / "datasets" / "zz_new_benchmark.py").write_text(textwrap.dedent('''
        from pydantic import BaseModel

        import datasets


        class Params(BaseModel):
            num_tasks: int = 2


        @datasets.register("zz_new_benchmark", Params)
        def build(params, ctx=None):
            """A benchmark added by one file."""
            raise NotImplementedError
        '''))
    code = ("import methods, datasets\n"
            "assert methods.__file__.startswith(%r), methods.__file__\n"
            "print('zz_new_method' in methods.METHODS, 'zz_new_benchmark' in datasets.BENCHMARKS)\n" % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_workers_get_the_drivers_code_and_plugin_packages(tmp_path):
    from orchestrator.run.driver import worker_environment
    from orchestrator.study.loading import parse_study

    pkg = tmp_path / "lab_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PLAIN_METHOD.format(name="lab_mean"))
    raw = yaml.safe_load(_study(tmp_path, "pkg", ["lab_pkg"], "lab_mean").read_text())
    study = parse_study(raw, "pkg.yaml", tmp_path)
    env = worker_environment(study, None)
    shipped = {Path(p).resolve() for p in env["py_modules"]}
    assert shipped == {Path(m.__file__).resolve().parent for m in (methods, datasets)} | \
        {(ROOT / "orchestrator").resolve(), pkg.resolve()}
