"""Trial runs written to MLflow on a thread of their own, so a trial's end never holds up the next one.

The driver learns that a trial ended inside Tune's event loop (a callback). Writing its MLflow run there —
a dozen SQL round trips and a matplotlib heatmap, about 0.3-0.7 s on a small machine — kept a free slot
idle for that long after every trial, and a study of many short trials paid it once per trial
(bench/study_overhead.py). The trial's JSON record is still written at once, in the loop (it is the record
that must never be lost; ``clorch run --resume`` fills MLflow from it); only the MLflow run is queued.

Every other use of the tracker waits for the queue to drain first, so the driver's later writes (config runs,
the summary, an interrupt marking runs KILLED) see every trial run, and there is never more than one thread
talking to MLflow at a time. An MLflow error in the thread is raised at that next use, as it was raised
in the callback before.
"""
from __future__ import annotations

import queue
import threading
from typing import Any


class TrialRunWriter:
    """Wraps a results.tracking.StudyTracker: ``log_trial`` is queued, everything else waits for the queue."""

    def __init__(self, tracker: Any):
        self._tracker = tracker
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="clorch-mlflow-trials", daemon=True)
        self._thread.start()

    def log_trial(self, record: Any, config: Any = None) -> None:
        """Queue the trial's run; returns at once (the record must not change after this call)."""
        if not self._thread.is_alive():  # closed: write in the caller's thread
            self._raise()
            self._tracker.log_trial(record, config)
            return
        self._queue.put((record, config))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after a failure the rest waits for the raise; JSON records are kept
                    self._tracker.log_trial(*item)
            except BaseException as e:  # noqa: BLE001 - handed to the driver's thread at its next use
                self._error = e
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def flush(self) -> None:
        """Wait until every queued trial run is written; raise the first error the thread met."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Flush and stop the thread (later log_trial calls write synchronously)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def __getattr__(self, name: str) -> Any:
        # anything but log_trial reads or writes the tracker's state: the queue is drained first
        if name.startswith("_"):  # not set yet (unpickling): never the tracker's
            raise AttributeError(name)
        self.flush()
        return getattr(self._tracker, name)

    # Tune pickles its callbacks (and with them the recorder and this) when a Tuner is made; the copy is never
    # used to write (clorch resumes from its own records). Drained first, so no write is half-way; a copy
    # writes synchronously.
    def __getstate__(self) -> dict[str, Any]:
        self.flush()
        return {"tracker": self._tracker}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._tracker, self._queue, self._error = state["tracker"], queue.Queue(), None
        self._thread = threading.Thread(target=self._work, daemon=True)  # never started: log_trial writes inline
