"""PNG rendering of many matplotlib figures at once, in helper processes: the end of a study waits for it.

A study's end draws every config run's two figures and the report's figures (38 for the quickstart),
0.3-1 s each on a small machine, one after another: a large part of the quickstart's fixed cost
(bench/study_overhead.py). Building a Figure is cheap; rendering it (``savefig``) is the cost, and it holds the
GIL, so threads do not help. A Figure pickles (matplotlib supports it; the PNG bytes are identical), so the
caller builds them and helper processes render them: with W helpers the figures take about 1/W of the time plus
one interpreter start. Few figures, or one CPU, render in this process, as before.

The helpers are plain ``python -c`` subprocesses fed through files, not multiprocessing: spawn and forkserver
re-import the caller's main script (a user's script without a ``__main__`` guard would run again), and fork is
unsafe in a driver that has had Ray's and MLflow's threads. Should a helper fail, its figures are rendered here.
"""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# below this many figures an interpreter start (about 1-2 s) costs more than it saves
MIN_FIGURES = 6

_HELPER = "import sys; from orchestrator.results.figure_pool import _serve; _serve(sys.argv[1:])"


def _render(fig: Any, dpi: float) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()


def _serve(paths: list[str]) -> None:
    """In a helper: each ``<k>.pkl`` (a pickled (Figure, dpi)) becomes ``<k>.png`` beside it."""
    for path in paths:
        with open(path, "rb") as f:
            fig, dpi = pickle.load(f)
        Path(path).with_suffix(".png").write_bytes(_render(fig, dpi))


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def render_all(figures: list[tuple[Any, float]], workers: int | None = None) -> list[bytes]:
    """PNG bytes of each (Figure, dpi), in order: rendered by up to ``workers`` helper processes (default: the
    CPUs this process may use) when there are at least MIN_FIGURES, this process taking one share itself."""
    workers = min(_workers() if workers is None else workers, len(figures))
    if len(figures) < MIN_FIGURES or workers < 2:
        return [_render(fig, dpi) for fig, dpi in figures]
    with tempfile.TemporaryDirectory(prefix="clorch-figures-") as tmp:
        paths = [Path(tmp) / f"{k}.pkl" for k in range(len(figures))]
        shares = [list(range(len(figures)))[w::workers] for w in range(workers)]
        helpers = []
        root = str(Path(__file__).resolve().parents[2])  # the checkout this module runs from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        for share in shares[1:]:
            for k in share:
                with open(paths[k], "wb") as f:
                    pickle.dump(figures[k], f)
            helpers.append(subprocess.Popen([sys.executable, "-c", _HELPER, *(str(paths[k]) for k in share)],
                                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        out: dict[int, bytes] = {k: _render(*figures[k]) for k in shares[0]}  # this process's share
        for share, helper in zip(shares[1:], helpers):
            helper.wait()
            for k in share:
                png = paths[k].with_suffix(".png")
                out[k] = png.read_bytes() if helper.returncode == 0 and png.is_file() else _render(*figures[k])
        return [out[k] for k in range(len(figures))]
