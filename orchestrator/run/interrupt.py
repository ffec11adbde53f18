"""Ctrl-C (SIGINT) and SIGTERM during ``clorch run``: stop Tune cleanly, keep every finished task.

The driver installs ``Interrupt`` around its Tune runs (Tune's own SIGINT handler is off, see driver.py):
the first signal asks Tune to stop every trial (a Stopper Tune checks every step), the driver then records
each trial that finished a task as ``stopped`` with its rows, marks its MLflow runs KILLED and raises
``StudyInterrupted``; no summary or report is written, and ``clorch run STUDY --resume`` goes on. A second
signal stops at once (KeyboardInterrupt).
"""
from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StudyInterrupted(Exception):
    """The study was stopped by a signal; what finished is kept. ``kept``: the trial records written."""

    def __init__(self, signame: str, kept: int = 0):
        super().__init__(signame)
        self.signame, self.kept = signame, kept


class Interrupt:
    def __init__(self):
        self.signum: int | None = None
        self._before: dict[int, object] = {}

    @property
    def set(self) -> bool:
        return self.signum is not None

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._before[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._before.items():
            signal.signal(s, handler)
        self._before.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nclorch: {signal.Signals(signum).name} received: stopping the running trials (their finished "
              "tasks are kept); send it again to stop at once", file=sys.stderr, flush=True)

    def check(self) -> None:
        """Between phases: raise StudyInterrupted once a signal came."""
        if self.set:
            raise StudyInterrupted(self.signame)

    def stopper(self):
        """A Tune Stopper that stops the whole experiment once a signal came (Tune asks it every step)."""
        from ray import tune

        interrupt = self

        class _Stop(tune.Stopper):
            def __call__(self, trial_id, result):
                return False

            def stop_all(self):
                return interrupt.set

        return _Stop()
