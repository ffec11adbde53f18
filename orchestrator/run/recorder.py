"""The driver's record of every trial: rows as they arrive, one file and one MLflow run when it ends.

Only the driver writes results (trials report through Tune), so an embedded
SQLite store never sees two writers. A trial that dies midway still gets a
record holding the tasks it finished; a trial stopped by the scheduler or the
time budget is ``stopped``, not ``failed``.
"""
from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from orchestrator.results.records import ClassificationRecord, TrialRecord, collapsed_positions, record_from_json, \
    record_type
from orchestrator.results.store import write_trial
from orchestrator.study.schema import Config, TrialSpec

_ROW_KEYS = ("position", "task_id", "row", "acc_seen", "train_s", "eval_s", "series")


def _keep(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k in _ROW_KEYS or k.startswith("info_")}


def _fmt(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class StudyRecorder:
    def __init__(self, out: Path, tracker, num_tasks: int, kind: str, previous: dict[str, TrialRecord],
                 chance: tuple[list[int], list[int]] | None = None):
        """``chance``: (classes, validation size) per task identity, to flag collapsed trials (None: exempt)."""
        self.chance, self.collapsed_configs = chance, set()
        self.out, self.tracker, self.num_tasks = out, tracker, num_tasks
        self.record_type = record_type(kind)  # builds the records of trials that ended without their own
        self.configs: dict[str, Config] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.final: dict[str, TrialRecord] = {}
        self.specs: dict[str, dict[str, Any]] = {}  # trial id -> its spec, for trials that reported a row
        self.interrupting = False
        self.failed: dict[str, str] = {}  # trial id -> the error its run_trial raised (run/trainable.failure_row)
        self.records: dict[str, TrialRecord] = {}   # this run's and earlier runs' finished trials
        self.previous = {tid: r for tid, r in previous.items() if r.completed}
        self.records.update(self.previous)
        self.expected = len(self.records)
        self.started = time.monotonic()
        self.ran = 0
        self.pending = self.running = self.slots = 0  # from Tune's loop (run/callbacks.py), for the progress line
        self.trial_seconds: list[float] = []  # wall time of each trial finished in this run (the ETA's unit)
        self.stop_reason = "stopped"

    def add_config(self, config: Config) -> None:
        self.configs.setdefault(config.config_id, config)

    def records_of(self, config_id: str) -> list[TrialRecord]:
        """The finished trials of one config (this run's and kept earlier ones), by trial id."""
        return [self.records[t] for t in sorted(self.records) if self.records[t].config_id == config_id]

    def expect(self, n: int) -> None:
        """``n`` more trials are about to be scheduled (for the progress line)."""
        self.expected += n

    def on_result(self, spec: dict[str, Any], result: dict[str, Any]) -> None:
        tid = spec["trial_id"]
        self.specs[tid] = spec
        if "rows_before" in result:  # a trial resumed from a checkpoint: its earlier rows, as it kept them
            self.rows[tid] = [_keep(r) for r in result["rows_before"]]
        if "position" in result:
            self.rows.setdefault(tid, []).append(_keep(result))
        if result.get("failed"):  # run_trial raised: not retried, recorded as failed with its finished rows
            self.failed[tid] = str(result.get("error") or "trial failed")
        if "record" in result:  # the trial's own record, as JSON across the Tune boundary
            self.final[tid] = record_from_json(result["record"])

    def on_end(self, spec: dict[str, Any], error: str | None) -> None:
        tid = spec["trial_id"]
        if tid in self.records:  # already recorded (this run), or finished in an earlier one
            return
        rows = self.rows.get(tid, [])
        if self.interrupting and error is None and not rows and tid not in self.final:
            return  # stopped by a signal before its first task: no record, --resume runs it
        if error is None and tid in self.failed:
            error = self.failed[tid]
        if error is None and tid in self.final:
            rec = self.final[tid]
        elif error is None:  # ended cleanly without its last task: the scheduler or the budget stopped it
            rec = self.record_type.from_rows(TrialSpec.from_dict(spec), rows, self.num_tasks, status="stopped",
                                             error=f"{self.stop_reason} after {len(rows)} of {self.num_tasks} tasks")
        else:
            rec = self.record_type.from_rows(TrialSpec.from_dict(spec), rows, self.num_tasks, status="failed",
                                             error=error)
        self._store(rec)

    def interrupted(self, why: str) -> int:
        """A signal stopped the study: every trial that finished a task and has no record yet gets one,
        ``stopped`` with its rows (``--resume`` goes on from its checkpoint). Returns the records written."""
        self.interrupting, self.stop_reason = True, why
        n = 0
        for tid, spec in self.specs.items():
            if tid in self.records:
                continue
            if tid in self.final:
                self._store(self.final[tid])
            elif self.rows.get(tid):
                rows = self.rows[tid]
                self._store(self.record_type.from_rows(TrialSpec.from_dict(spec), rows, self.num_tasks,
                                                       status="stopped",
                                                       error=f"{why} after {len(rows)} of {self.num_tasks} tasks"))
            else:
                continue
            n += 1
        return n

    def not_run(self, spec: TrialSpec, why: str) -> None:
        """A trial Tune never started (time budget spent, or the run was cut short)."""
        if spec.trial_id not in self.records:
            self._store(self.record_type.from_rows(spec, [], self.num_tasks,
                                                   status="stopped" if "budget" in why else "failed", error=why))

    def _store(self, rec: TrialRecord) -> None:
        rec.ended_at = time.time()  # when the driver saw it end: the report's search-over-time axis
        self._flag_collapse(rec)
        write_trial(self.out, rec)
        self.tracker.log_trial(rec, self.configs.get(rec.config_id))
        self.records[rec.trial_id] = rec
        self.ran += 1
        if rec.wall_s:
            self.trial_seconds.append(float(rec.wall_s))
        self._progress(rec)

    def set_counts(self, pending: int, running: int) -> None:
        """Trials waiting and running now (Tune's loop calls this every step); redraws the line on a terminal."""
        changed = (pending, running) != (self.pending, self.running)
        self.pending, self.running, self.slots = pending, running, max(self.slots, running)
        if changed and sys.stdout.isatty():
            self._progress(None)

    def _flag_collapse(self, rec: TrialRecord) -> None:
        """``collapsed_tasks`` on a classification record (a flag; the trial stays in every statistic)."""
        if self.chance is None or not isinstance(rec, ClassificationRecord) or rec.val_rows is None:
            return
        rec.collapsed_tasks = collapsed_positions(rec, *self.chance)
        if rec.collapsed_tasks and rec.config_id not in self.collapsed_configs:
            self.collapsed_configs.add(rec.config_id)
            print(f"  COLLAPSED {rec.label} ({rec.config_id}): validation accuracy at chance right after learning "
                  f"the task at position(s) {rec.collapsed_tasks} of {rec.trial_id} (lower lr?); kept, flagged",
                  flush=True)

    def backfill(self) -> int:
        """Earlier runs' finished trials that never reached MLflow (the driver died in between)."""
        n = 0
        for tid, rec in self.previous.items():
            if not self.tracker.has_finished_trial(tid):
                self.tracker.log_trial(rec, self.configs.get(rec.config_id))
                n += 1
        return n

    def _progress(self, rec: TrialRecord | None) -> None:
        """One progress line: done / running / pending / failed, elapsed, ETA. On a terminal it rewrites
        itself; in a log it is one line per finished trial. The ETA is the mean wall time of the trials
        finished in this run times those left, over the trials that ran at once: none until one finished."""
        done, total = len(self.records), max(self.expected, len(self.records))
        failed = sum(r.status == "failed" for r in self.records.values())
        elapsed = time.monotonic() - self.started
        left = max(0, total - done)
        if self.trial_seconds:
            eta = _fmt(sum(self.trial_seconds) / len(self.trial_seconds) * left / max(1, self.slots))
        else:
            eta = "--"
        counts = f"{done}/{total} done, {self.running} running, {self.pending} pending" + \
            (f", {failed} failed" if failed else "")
        line = f"[{counts}] elapsed {_fmt(elapsed)}, ETA {eta}"
        last = ((rec.error or "").splitlines()[-1:] or [""]) if rec is not None else [""]
        note = f"  {rec.status.upper()} {rec.trial_id}: {last[0]}" if rec is not None and not rec.completed else ""
        if sys.stdout.isatty():
            if note:
                print(f"\r\x1b[K{note.strip()}", flush=True)
            print(f"\r\x1b[K{line}", end="", flush=True)
        else:
            print(line + note, flush=True)
