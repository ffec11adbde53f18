"""A study run's life in results/<study>/: one run at a time, a resume only of the same study, no silent loss.

- **Lock.** A run holds an exclusive ``fcntl.flock`` on ``results/<study>/.clorch.lock`` (its pid inside) from
  before it writes anything until it ends; the kernel drops it when the process dies, however it dies. A second
  ``clorch run`` of the study meanwhile is refused (exit 2), naming the pid that holds it.
- **No silent overwrite.** A plain run of a study whose trial records are there is refused: ``--resume``
  continues it, ``--overwrite`` starts over (its records are removed and its MLflow tree, found by the
  ``clorch.study`` tag, is moved to MLflow's deleted lifecycle stage: restorable, out of the default view).
- **Fingerprint.** ``results/<study>/study.json`` holds the fields that determine the study's trials (benchmark,
  orders, seeds, methods and params, evaluate_unseen, the search's choices, the record version). ``--resume`` of
  a changed study is refused with one message naming each change; ``--resume --allow-changes`` keeps only the
  earlier trials that still belong to the study (their trial id, which hashes all of that, is one the study has
  now) and runs the rest. The earlier trials that no longer belong are moved to ``results/<study>/stale/``.

Every refusal is a ``ValueError`` raised before anything is started or written (the CLI prints it, exit 2).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from orchestrator.results.records import RECORD_VERSION, TrialRecord
from orchestrator.study.expand import (expand_configs, is_adaptive, make_config, search_max_tasks, split_params,
                                       study_identity, trial_id)
from orchestrator.study.schema import Config, Study, value_at

LOCK_FILE = ".clorch.lock"
STUDY_FILE = "study.json"
STALE_DIR = "stale"
# search fields that only say how much to run, never what a trial is: a resume may raise them
_BUDGET_FIELDS = ("num_samples", "time_budget_s", "max_concurrent")
_MISSING = object()


class StudyBusy(ValueError):
    """Another process holds the study's lock."""


class StudyExists(ValueError):
    """A plain run of a study whose trial records are there."""


class StudyChanged(ValueError):
    """``--resume`` of a study that is not the one its results were run with."""


def trial_identity(study: Study) -> dict[str, Any]:
    """``study_identity`` with this code's record version: what every trial id of the study hashes."""
    return study_identity(study, RECORD_VERSION)


# ---------------------------------------------------------------- lock
class StudyLock:
    def __init__(self, out: Path):
        self.out = out
        self.path = out / LOCK_FILE
        self.fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _take(self, create: bool) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            who = self.holder()
            pid = who.split()[0] if who != "unknown" else "unknown"
            raise StudyBusy(f"{self.out} is in use by another clorch run (pid {pid}; lock {self.path}: {who}). "
                            f"Two runs of one study at once would overwrite each other's records: wait for pid "
                            f"{pid} to end (or stop it), then run again, with --resume to continue it") from None
        self.fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                 .encode())

    def peek(self) -> None:
        """Take the lock if its file is there (a study run before); raise StudyBusy if another process holds it.
        Creates nothing."""
        if self.fd is None and self.path.is_file():
            self._take(create=False)

    def acquire(self) -> None:
        if self.fd is None:
            self.out.mkdir(parents=True, exist_ok=True)
            self._take(create=True)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------- fingerprint
def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def fingerprint(study: Study) -> dict[str, Any]:
    """The fields of ``study`` that determine its trials (what a resume must not change unawares)."""
    search = study.search.model_dump(mode="json")
    for key in _BUDGET_FIELDS:
        search.pop(key, None)
    return _json({
        "record_version": RECORD_VERSION,
        "benchmark": {"name": study.benchmark.name, "params": study.benchmark_params().model_dump(mode="json"),
                      "setting": study.benchmark.setting},
        "orders": [list(o) for o in study.task_orders()],
        "final_orders": [list(o) for o in study.final_orders()],
        "seeds": list(study.seeds),
        "methods": [{"name": m.name, "label": m.display, "params": m.params} for m in study.methods],
        "evaluate_unseen": study.evaluate_unseen,
        "search": search,
    })


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _diff(old.get(key, _MISSING), new.get(key, _MISSING), f"{path}.{key}" if path else key)
        return out
    return [f"{path} {_show(old)} -> {_show(new)}"]


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one phrase each: ``orders changed``,
    ``benchmark.params.num_tasks 5 -> 3``, ``methods[0].params changed (lr 0.1 -> 0.01)``, ``seeds [0] -> [0, 1]``."""
    out: list[str] = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a == b:
            continue
        if key in ("orders", "final_orders"):
            n_a, n_b = len(a) if isinstance(a, list) else 0, len(b) if isinstance(b, list) else 0
            out.append(f"{key} changed" + (f" ({n_a} -> {n_b} orders)" if n_a != n_b else ""))
        elif key == "methods" and isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                out.append(f"methods: {len(a)} -> {len(b)} entries")
            for i, (ma, mb) in enumerate(zip(a, b)):
                for field in ("name", "label"):
                    if ma.get(field) != mb.get(field):
                        out.append(f"methods[{i}].{field} {_show(ma.get(field))} -> {_show(mb.get(field))}")
                if ma.get("params") != mb.get("params"):
                    detail = _diff(ma.get("params", {}), mb.get("params", {}), "")
                    out.append(f"methods[{i}].params changed" + (f" ({'; '.join(detail)})" if detail else ""))
        elif key == "record_version":
            out.append(f"record version {_show(a)} -> {_show(b)} (results written by another clorch)")
        else:
            out += _diff(a, b, key)
    return out


def read_fingerprint(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / STUDY_FILE).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_fingerprint(out: Path, study: Study) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STUDY_FILE + ".tmp")
    tmp.write_text(json.dumps({"study": study.name, "written_at": time.time(), "fingerprint": fingerprint(study)},
                              indent=1))
    os.replace(tmp, out / STUDY_FILE)


# ---------------------------------------------------------------- which earlier trials belong
_TAIL = re.compile(r"-([a-z])(\d+)-s(-?\d+)$")


def belongs(study: Study, rec: TrialRecord, setting: str, fixed_ids: set[str], suffixes: tuple[str, ...]) -> bool:
    """The earlier trial ``rec`` is one of ``study``'s trials: its config is one the study has, its order is the
    study's order at its index, its seed is one of the study's, and its id (hashing all that and the benchmark
    and record version) is the one the study gives it now."""
    suffix = next((s for s in suffixes if rec.label.endswith(s)), "")
    base_label = rec.label[:len(rec.label) - len(suffix)] if suffix else rec.label
    base_id = rec.config_id[:len(rec.config_id) - len(suffix)] if suffix and rec.config_id.endswith(suffix) \
        else rec.config_id
    index = next((i for i, m in enumerate(study.methods) if m.display == base_label and m.name == rec.method), None)
    tail = _TAIL.search(rec.trial_id)
    if index is None or tail is None:
        return False
    if is_adaptive(study, index):
        spaces = split_params(study.methods[index].params)[1]
        searched = {k: rec.searched[k] if k in rec.searched else value_at(rec.params, k, None) for k in spaces}
        try:
            if make_config(study, index, searched).config_id != base_id:
                return False
        except Exception:  # noqa: BLE001 - a value the entry no longer accepts: not its config
            return False
    elif base_id not in fixed_ids:
        return False
    tag = tail.group(1)
    orders = study.final_orders() if tag == "f" else study.task_orders()
    if not 0 <= rec.order_index < len(orders) or tuple(orders[rec.order_index]) != tuple(rec.order):
        return False
    max_tasks = None if suffix else search_max_tasks(study, base_label)
    if (rec.seed not in study.seeds or rec.setting != setting or rec.evaluate_unseen != study.evaluate_unseen
            or rec.max_tasks != max_tasks):
        return False
    config = Config(rec.config_id, rec.label, rec.method, rec.params, dict(rec.searched))
    return trial_id(config, tuple(rec.order), rec.order_index, rec.seed, setting, rec.evaluate_unseen, tag,
                    rec.max_tasks, trial_identity(study)) == rec.trial_id


# ---------------------------------------------------------------- one run
class StudyRun:
    """``with StudyRun(...) as life:`` around a study's run. The constructor only reads (and takes the lock if
    its file is there) and raises StudyBusy / StudyExists / StudyChanged; ``start`` takes the lock and writes
    study.json; the lock is released on exit (and by the kernel if the process dies)."""

    def __init__(self, study: Study, out: Path, resume: bool = False, overwrite: bool = False,
                 allow_changes: bool = False):
        if resume and overwrite:
            raise ValueError("--resume and --overwrite: choose one (--resume continues the study, --overwrite "
                             "starts it over)")
        if allow_changes and not resume:
            raise ValueError("--allow-changes goes with --resume (it keeps the earlier trials that still belong "
                             "to the changed study)")
        self.study, self.out, self.resume, self.overwrite, self.allow_changes = study, out, resume, overwrite, \
            allow_changes
        self.lock = StudyLock(out)
        self.dropped: list[str] = []
        self.lock.peek()
        try:
            self._check()
        except BaseException:
            self.lock.release()
            raise

    def _check(self) -> None:
        study, out = self.study, self.out
        records = sorted((out / "trials").glob("*.json")) if (out / "trials").is_dir() else []
        if records and not self.resume and not self.overwrite:
            raise StudyExists(
                f"{out} holds {len(records)} trial records of an earlier run of study {study.name}: "
                f"`clorch run --resume` continues it (its finished trials are kept), `clorch run --overwrite` "
                f"starts over (its records are removed and its MLflow runs moved to MLflow's deleted stage)")
        if not self.resume:
            return
        stored = read_fingerprint(out)
        if stored is None:
            return
        found = changes(stored, fingerprint(study))
        if found and not self.allow_changes:
            raise StudyChanged(
                f"--resume of study {study.name}, but it is not the study {out} was run with: {'; '.join(found)}. "
                f"Its earlier trials would mix into a wrong summary. `clorch run --resume --allow-changes` keeps "
                f"only the earlier trials that still belong to the study and runs the rest; `--overwrite` starts "
                f"over; or undo the change")
        if found:
            print(f"resuming a changed study ({'; '.join(found)}): keeping only the earlier trials that still "
                  "belong to it", flush=True)

    def __enter__(self) -> "StudyRun":
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()

    def start(self) -> None:
        """Before the first write of the run: take the lock (StudyBusy if taken meanwhile), write study.json."""
        self.lock.acquire()
        write_fingerprint(self.out, self.study)

    def keep(self, previous: dict[str, TrialRecord], setting: str, suffixes: tuple[str, ...]) -> dict[str, TrialRecord]:
        """The earlier records that belong to the study now; the others are moved to results/<study>/stale/."""
        if not previous:
            return previous
        fixed = {c.config_id for c in expand_configs(self.study)}
        kept = {tid: r for tid, r in previous.items() if belongs(self.study, r, setting, fixed, suffixes)}
        self.dropped = sorted(set(previous) - set(kept))
        if self.dropped:
            stale = self.out / STALE_DIR
            stale.mkdir(parents=True, exist_ok=True)
            for tid in self.dropped:
                src = self.out / "trials" / f"{tid}.json"
                if src.is_file():
                    shutil.move(str(src), str(stale / src.name))
            print(f"{len(self.dropped)} earlier trials no longer belong to the study (moved to {stale}); "
                  f"{len(kept)} are kept", flush=True)
        return kept

    def retire_mlflow(self, uri: str, experiment: str) -> None:
        """--overwrite: the earlier MLflow tree of the study goes to the deleted lifecycle stage."""
        if not self.overwrite:
            return
        from orchestrator.results.tracking import delete_study_tree

        n = delete_study_tree(uri, experiment, self.study.name)
        if n:
            print(f"--overwrite: moved the {n} MLflow runs of the earlier run of {self.study.name} to MLflow's "
                  f"deleted stage (restorable: `mlflow runs restore --run-id ...`)", flush=True)

    def retire_trial_runs(self, tracker) -> None:
        """The MLflow runs of the earlier trials that no longer belong go to the deleted stage."""
        for tid in self.dropped:
            found = tracker.trial_runs.pop(tid, None)
            if found is not None:
                tracker.client.delete_run(found[0])
