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
    monkeypatch.setenv(png_render.ENV, " ")  # set but empty: as unset
    assert png_render.env_problem() is None and png_render.processes(40) == (png_render.MAX_PROCESSES if linux else 1)
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


@pytest.mark.parametrize("value", ["0", "two", "-1", "2.5"])
def test_a_bad_figure_processes_value_is_refused_before_anything_starts(monkeypatch, tmp_path, capsys, value):
    from orchestrator import cli

    monkeypatch.setenv(png_render.ENV, value)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "nothing-here"]) == 2
    err = capsys.readouterr().err
    assert png_render.ENV in err and repr(value) in err and "positive integer" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


# ---------------------------------------------------------------- a trial's heatmap on a kept figure
def _fresh_matrix_png(rec, title):
    """matrix_png as it was before the figure was kept (a new figure per call): the reference."""
    import math

    import numpy as np

    from orchestrator.results.run_artifacts import _figure, _png

    A = rec.matrix()
    T = A.shape[0]
    side = min(0.42 * T, 5.0)
    left, bottom, top, right = 1.3, 0.65, 0.55, 1.05
    W, H = left + side + right, bottom + side + top
    fig = _figure(W, H, layout=None)
    ax = fig.add_axes((left / W, bottom / H, side / W, side / H))
    cax = fig.add_axes(((left + side + 0.15) / W, bottom / H, 0.15 / W, side / H))
    image = ax.imshow(np.ma.masked_invalid(A), vmin=0, vmax=100, cmap="viridis", aspect="auto")
    if T <= 12:
        for i in range(T):
            for j in range(T):
                if A[i, j] == A[i, j]:
                    ax.text(j, i, f"{A[i, j]:.0f}", ha="center", va="center", fontsize=8 if T <= 8 else 6,
                            color="white" if A[i, j] < 60 else "black")
    ticks = np.arange(T)
    step = max(1, math.ceil(T / 20))
    ax.set_xticks(ticks[::step], [str(j) for j in ticks[::step]])
    ax.set_yticks(ticks[::step], [f"{i + 1}: task {t}" for i, t in list(enumerate(rec.order))[:T:step]])
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after learning (position: task)")
    done = (rec.stats() or {}).get("acc", float("nan"))
    ax.set_title(f"{title}\n{rec.status}" + (f", ACC {done:.1f}" if done == done else ""), fontsize=9)
    fig.colorbar(image, cax=cax, label="test accuracy (%)")
    return _png(fig)


def _record(T, seed, learned=None):
    import numpy as np

    rng = np.random.default_rng(seed)
    A = rng.uniform(20, 100, (T, T))
    learned = T if learned is None else learned
    A[learned:] = np.nan  # a stopped trial: rows it never learned
    A[np.triu_indices(T, 1)] = np.nan if seed % 2 else A[np.triu_indices(T, 1)]  # unseen tasks not evaluated
    order = tuple(int(t) for t in rng.permutation(T))
    acc = float(np.nanmean(A[learned - 1])) if learned == T else None
    return types.SimpleNamespace(matrix=lambda: A, order=order, status="completed" if learned == T else "stopped",
                                 stats=lambda: {"acc": acc} if acc is not None else {})


def test_the_kept_heatmap_figure_draws_the_bytes_of_a_new_one():
    from orchestrator.results.run_artifacts import matrix_png

    cases = [(5, 0, None), (5, 1, 3), (5, 2, None), (10, 3, None), (5, 4, 1), (14, 5, 9), (25, 6, None), (10, 7, 10)]
    for T, seed, learned in cases:  # the same T again and again (the kept figure reused), others between
        rec = _record(T, seed, learned)
        assert matrix_png(rec, f"cfg #{seed} o{seed} s0") == _fresh_matrix_png(rec, f"cfg #{seed} o{seed} s0"), \
            (T, seed, learned)
