"""README's "Writing a method" and "Adding a benchmark" examples, run as the plugins they claim to be.

The code is read out of README.md (the block after each ``<!-- example: NAME -->``
marker), so the README cannot drift from what works.
"""
from __future__ import annotations

import pytest
import re
from pathlib import Path

import numpy as np
import yaml

from orchestrator.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("isolated_registries")


def examples() -> dict[str, str]:
    text = README.read_text()
    found = re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", text, flags=re.S)
    return {name: code for name, code in found}


def test_the_readme_has_both_examples_and_they_are_short():
    code = examples()
    assert set(code) == {"nearest_mean.py", "blobs.py"}
    assert all(len(c.strip().splitlines()) <= 40 for c in code.values())


def test_the_readme_method_learns_the_readme_benchmark_through_the_cli_and_a_trial(tmp_path, capsys):
    for name, code in examples().items():
        (tmp_path / name).write_text(code)
    study = {"name": "readme_examples", "plugins": ["nearest_mean.py", "blobs.py"],
             "benchmark": {"name": "blobs", "params": {"num_tasks": 3}},
             "orders": {"kind": "latin_square"},
             "methods": [{"name": "nearest_mean", "params": {"shrink": {"grid": [0.0, 0.2]}}}]}
    path = tmp_path / "my_study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "ok (6 trials, 3 tasks per order)" in capsys.readouterr().out
    assert main(["list", str(path), "nearest_mean", "blobs"]) == 0
    listed = capsys.readouterr().out
    assert "method nearest_mean" in listed and "benchmark blobs" in listed and "shrink: float = 0.0" in listed

    import datasets
    from orchestrator.run.trial import run_trial
    from orchestrator.study.expand import expand_trials
    from orchestrator.study.loading import load_study

    loaded = load_study(path)
    bench = datasets.load_benchmark("blobs", loaded.benchmark_params())
    trial = expand_trials(loaded, bench.default_setting)[0]
    record = run_trial(trial, bench)
    final = np.array(record["matrix"][-1], dtype=float)
    assert record["status"] == "completed" and final.min() > 90.0  # well-separated blobs: near-perfect
