"""Shared fixtures. Servers a test needs are started here and stopped after."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the session (what `clorch run` starts by default)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits():
    """split_digits with its defaults (the bundled scikit-learn digits: no files, no network)."""
    import datasets

    entry = datasets.BENCHMARKS.get("split_digits")
    return entry.target(entry.params())


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny nets (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): one
    intra-op thread is faster, and much faster on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty working directory, so default outputs land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    # Nothing in the suite may download; MLflow and Ray must not phone home.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture
def isolated_registries():
    """Plugins a test loads are unregistered after it, so later tests see the built-ins only."""
    import sys

    import datasets
    import methods
    from orchestrator.study import plugins

    before = (dict(methods.METHODS._entries), dict(datasets.BENCHMARKS._entries), dict(plugins._LOADED))
    yield
    for name in set(plugins._LOADED) - set(before[2]):
        sys.modules.pop(name, None)
    methods.METHODS._entries.clear()
    methods.METHODS._entries.update(before[0])
    datasets.BENCHMARKS._entries.clear()
    datasets.BENCHMARKS._entries.update(before[1])
    plugins._LOADED.clear()
    plugins._LOADED.update(before[2])
