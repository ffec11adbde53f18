"""PNG files of many matplotlib figures at once, on every core this process may use.

Why: the end of a study renders each config run's figures and the report's (about 50 for the
quickstart, 0.1-1.5 s each on a small machine), one after another on one core while the others idle:
after the trials, the largest part of the study's fixed cost (bench/study_overhead.py). Building a Figure
is cheap; rendering it (``savefig``) is the cost, and it holds the GIL, so threads do not help.

How: the caller builds every Figure first; ``save`` forks helpers (copies of this process: the figures,
matplotlib and numpy are already in memory, nothing is pickled or imported again) that each render a share
and exit, while this process renders its own share. The PNGs are byte-identical to rendering here.
An earlier version started fresh interpreters and pickled the figures to them: their start cost more than
it saved on 2 cores.

Fork is only used where it is safe: Linux, and this thread the only Python thread of the process. A fork
copies only the thread that forks; what a copy could wait on forever is a lock another thread held at that
moment. No other Python thread: none can be holding a Python-level lock, and with the GIL here none is inside
Python; glibc's malloc and Python's import and logging locks are reset in the copy. The native threads that
Ray and gRPC leave behind (they outlive ``ray.shutdown``, embedded or joined) are never called by a helper,
which touches nothing but matplotlib and the files it writes, and leaves with ``os._exit`` (no atexit
handlers, no inherited buffers flushed twice). A study's driver reaches its summary with one Python thread
(the MLflow writer is closed, Ray shut down); a test process with Ray up, or a notebook, renders in process.
A helper that fails, or is not done by its deadline, is stopped and its share is rendered here: a helper
never loses a figure, at worst it costs the time it took.

``CLORCH_FIGURE_PROCESSES=1`` renders everything in this process (``N``: at most N processes in all); the
commands refuse any other value before they start (``env_problem``).
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

ENV = "CLORCH_FIGURE_PROCESSES"
MAX_PROCESSES = 4      # more copies than this save little: figure building stays in this process
MIN_PER_PROCESS = 2    # a helper for a single figure is not worth its fork
DEADLINE_S = 60.0      # a helper's deadline: this plus PER_FIGURE_S per figure of its share
PER_FIGURE_S = 10.0


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _alone() -> bool:
    """True when this is the process's only Python thread (see the module docstring)."""
    return threading.active_count() == 1


def env_problem() -> str | None:
    """What is wrong with $CLORCH_FIGURE_PROCESSES (None: unset or a positive integer)."""
    wanted = os.environ.get(ENV)
    if wanted is None or not wanted.strip() or (wanted.strip().isdigit() and int(wanted) > 0):  # empty: unset
        return None
    return f"{ENV}={wanted!r} is not a positive integer: set it to 1 (render in this process) or N (at most N processes), or unset it"


def processes(n_figures: int) -> int:
    """How many processes (this one included) render ``n_figures``: 1 unless forking is safe and pays."""
    wanted = os.environ.get(ENV, "").strip()
    limit = int(wanted) if wanted and env_problem() is None else MAX_PROCESSES
    if not sys.platform.startswith("linux") or not hasattr(os, "fork") or not _alone():
        return 1
    return max(1, min(limit, _cores(), n_figures // MIN_PER_PROCESS))


def save(jobs: Sequence[tuple[Any, Path]], dpi: float) -> None:
    """Render each (Figure, path) to a PNG at ``path`` (``dpi``), spread over ``processes(len(jobs))``."""
    jobs = list(jobs)
    n = processes(len(jobs))
    if n < 2:
        _render(jobs, dpi)
        return
    shares = [jobs[i::n] for i in range(n)]  # alternate: neighbours are often alike in cost
    helpers = []
    try:
        for share in shares[1:]:
            helpers.append((_fork(share, dpi), share, time.monotonic() + DEADLINE_S + PER_FIGURE_S * len(share)))
        _render(shares[0], dpi)
    finally:
        redo = [share for pid, share, deadline in helpers if not _joined(pid, deadline)]
    for share in redo:
        _render(share, dpi)


def png_bytes(figures: Sequence[Any], dpi: float) -> list[bytes]:
    """The PNG bytes of each figure, in order, rendered as ``save`` does (through files in a temporary folder)."""
    figures = list(figures)
    if processes(len(figures)) < 2:
        out = []
        for fig in figures:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi)
            out.append(buf.getvalue())
        return out
    with tempfile.TemporaryDirectory(prefix="clorch-png-") as tmp:
        paths = [Path(tmp) / f"{i}.png" for i in range(len(figures))]
        save(list(zip(figures, paths)), dpi)
        return [p.read_bytes() for p in paths]


def _render(jobs: Sequence[tuple[Any, Path]], dpi: float) -> None:
    for fig, path in jobs:
        fig.savefig(path, format="png", dpi=dpi)


def _fork(share: list[tuple[Any, Path]], dpi: float) -> int:
    with warnings.catch_warnings():  # Python >= 3.12 warns of the native threads too; the docstring says why not here
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the helper: render, then leave without running anything of the parent's
        code = 1
        try:
            _render(share, dpi)
            code = 0
        except BaseException:  # noqa: BLE001 - the parent renders this share again and raises what it meets
            pass
        finally:
            os._exit(code)
    return pid


def _joined(pid: int, deadline: float) -> bool:
    """Wait for helper ``pid`` until ``deadline``; True when it rendered its whole share."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return False
        time.sleep(0.01)
