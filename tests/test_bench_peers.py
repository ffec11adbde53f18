"""bench/peers.py and bench/benchmark_memory.py --study: the cheap parts (no training, no Ray started)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_torch_thread")
def test_the_bare_model_starts_from_the_clorch_trials_weights():
    peers = _load("peers")
    net = peers.initial_network()
    model = peers.bare_model(net)
    x = torch.randn(7, 784)
    net.eval()
    model.eval()
    torch.testing.assert_close(model(x), net(x, 0))


@pytest.mark.skipif(importlib.util.find_spec("avalanche") is not None, reason="avalanche is importable here")
def test_without_avalanche_the_bench_says_how_to_add_it_and_skips(tmp_path, capsys):
    peers = _load("peers")
    assert peers.load_avalanche(str(tmp_path)) is None
    out = capsys.readouterr().out
    assert "skipped" in out and "--no-deps avalanche-lib==0.6.0" in out and "--avalanche-path" in out


def test_the_memory_study_is_a_valid_study_of_trials_that_all_run_at_once(tmp_path):
    from orchestrator.study.loading import parse_study

    memory = _load("benchmark_memory")

    class Args:
        benchmark, num_tasks, protocol, trials = "permuted_mnist", 10, "standard", 4

    study = parse_study(memory.study_dict(tmp_path, tmp_path / "data", Args))
    assert len(study.task_orders()) * len(study.seeds) == 4
    assert study.resources.cpu * 4 <= (os.cpu_count() or 1)  # the embedded Ray has cpu_count CPUs
