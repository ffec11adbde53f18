"""orchestrator/results/png_render.py: figures rendered in forked helpers are the same files, and a helper
that fails or hangs never loses a figure."""
from __future__ import annotations

import os
import sys
import time
import types

import pytest

from orchestrator.results import png_render

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="helpers are forked on Linux only")


def _figures(n: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = []
    for k in range(n):
        fig = Figure(figsize=(3, 2), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(range(10), [(i * (k + 1)) % 7 for i in range(10)], label=f"figure {k}")
        ax.set_title(f"figure {k}")
        ax.legend()
        out.append(fig)
    return out


class _Fake:
    """A 'figure' that writes its name, and misbehaves (raises, or sleeps) in any process but ``home``."""

    def __init__(self, name: str, home: int, misbehave: str | None = None):
        self.name, self.home, self.misbehave = name, home, misbehave
        self.rendered_in: list[int] = []

    def savefig(self, path, format="png", dpi=100):
        if os.getpid() != self.home and self.misbehave == "raise":
            raise RuntimeError("a helper that breaks")
        if os.getpid() != self.home and self.misbehave == "hang":
            time.sleep(60)
        with open(path, "w") as f:
            f.write(f"{self.name} by {'parent' if os.getpid() == self.home else 'helper'}")


@linux_only
def test_pngs_from_helpers_are_the_bytes_this_process_renders(monkeypatch):
    figs = _figures(6)
    monkeypatch.setenv(png_render.ENV, "1")
    assert png_render.processes(len(figs)) == 1
    serial = png_render.png_bytes(figs, 100)
    monkeypatch.setenv(png_render.ENV, "2")
    monkeypatch.setattr(png_render, "_cores", lambda: 2)
    monkeypatch.setattr(png_render, "_alone", lambda: True)  # another test module's Ray (its threads) may be up
    assert png_render.processes(len(figs)) == 2
    forked = png_render.png_bytes(figs, 100)
    assert forked == serial and all(b.startswith(b"\x89PNG") for b in forked)


@linux_only
@pytest.mark.parametrize("misbehave", ["raise", "hang"])
def test_a_failing_or_hanging_helper_has_its_share_rendered_here(monkeypatch, tmp_path, misbehave):
    monkeypatch.setenv(png_render.ENV, "2")
    monkeypatch.setattr(png_render, "_cores", lambda: 2)
    monkeypatch.setattr(png_render, "_alone", lambda: True)  # another test module's Ray (its threads) may be up
    monkeypatch.setattr(png_render, "DEADLINE_S", 1.0)
    monkeypatch.setattr(png_render, "PER_FIGURE_S", 0.0)
    me = os.getpid()
    jobs = [(_Fake(f"f{k}", me, misbehave), tmp_path / f"f{k}.png") for k in range(4)]
    start = time.monotonic()
    png_render.save(jobs, 100)
    assert time.monotonic() - start < 20  # the hung helper was stopped at its deadline, not waited for
    # every file is there, whole, written by this process (the helper's share again)
    assert [p.read_text() for _, p in jobs] == [f"f{k} by parent" for k in range(4)]


@linux_only
def test_helpers_share_the_work(monkeypatch, tmp_path):
    monkeypatch.setenv(png_render.ENV, "2")
    monkeypatch.setattr(png_render, "_cores", lambda: 2)
    monkeypatch.setattr(png_render, "_alone", lambda: True)  # another test module's Ray (its threads) may be up
    me = os.getpid()
    jobs = [(_Fake(f"f{k}", me), tmp_path / f"f{k}.png") for k in range(4)]
    png_render.save(jobs, 100)
    assert [p.read_text() for _, p in jobs] == ["f0 by parent", "f1 by helper", "f2 by parent", "f3 by helper"]


def test_no_helpers_beside_other_threads_or_for_few_figures(monkeypatch):
    monkeypatch.setattr(png_render, "_cores", lambda: 8)
    monkeypatch.delenv(png_render.ENV, raising=False)
    monkeypatch.setattr(png_render, "_alone", lambda: True)
    linux = sys.platform.startswith("linux")
    assert png_render.processes(1) == 1  # one figure: no fork
    assert png_render.processes(40) == (png_render.MAX_PROCESSES if linux else 1)
    monkeypatch.setenv(png_render.ENV, "3")
    assert png_render.processes(40) == (3 if linux else 1)
    monkeypatch.setattr(png_render, "_alone", lambda: False)
    assert png_render.processes(40) == 1  # another Python thread (a Ray connection's, a writer's): in process


def test_other_python_threads_are_seen():
    import threading

    assert png_render._alone() == (threading.active_count() == 1)
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert not png_render._alone()
    finally:
        stop.set()
        helper.join()


@pytest.mark.parametrize("value", ["0", "two", "-1", ""])
def test_a_bad_figure_processes_value_is_refused_before_anything_starts(monkeypatch, tmp_path, capsys, value):
    from orchestrator import cli

    monkeypatch.setenv(png_render.ENV, value)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "nothing-here"]) == 2
    err = capsys.readouterr().err
    assert png_render.ENV in err and repr(value) in err and "positive integer" in err
    assert list(tmp_path.iterdir()) == []  # nothing written
