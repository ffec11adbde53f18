"""Where a study's trial checkpoints are, across its runs.

Every Tune run of a study is an experiment (a folder) under the study's
storage: ``<storage>/<study>-<phase>-<time>/<trial id>/checkpoint_*/``. The
names of the experiments of the current lineage (the first run and every
``--resume`` after it) are kept in ``results/<study>/lineage.json``, so a
resume looks only at its own study's checkpoints, never at a stale run that
happens to share the storage. Storage may be a local path, an NFS mount every
node sees, or a URI pyarrow knows (s3://, gs://).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from orchestrator.run.checkpoint import ROWS_FILE, STATE_FILE

LINEAGE_FILE = "lineage.json"


def _filesystem(storage: str):
    from pyarrow import fs

    if "://" in storage:
        filesystem, root = fs.FileSystem.from_uri(storage)
        return filesystem, root, storage.split("://", 1)[0] + "://"
    return fs.LocalFileSystem(), os.path.abspath(storage), ""


class Lineage:
    def __init__(self, out: Path, storage: str, resume: bool):
        self.out, self.storage = out, storage
        self.path = out / LINEAGE_FILE
        self.experiments: list[str] = []
        if resume and self.path.is_file():
            self.experiments = json.loads(self.path.read_text())["experiments"]
        elif not resume:
            self._forget_local_storage()
            self._save()

    def _forget_local_storage(self) -> None:
        """A fresh run: the default local storage of earlier runs only holds stale checkpoints."""
        default = self.out / "tune"
        if "://" not in self.storage and Path(self.storage).resolve() == default.resolve() and default.is_dir():
            shutil.rmtree(default, ignore_errors=True)

    def _save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"storage": self.storage, "experiments": self.experiments}))
        os.replace(tmp, self.path)

    def new_experiment(self, phase: str) -> str:
        name = f"{self.out.name}-{phase}-{time.strftime('%Y%m%d-%H%M%S')}-{len(self.experiments)}"
        self.experiments.append(name)
        self._save()
        return name

    def latest_checkpoints(self) -> dict[str, tuple[str, int]]:
        """trial id -> (checkpoint path or URI, tasks done) of the furthest checkpoint in the lineage."""
        return {tid: found[0] for tid, found in self.checkpoint_candidates().items()}

    def checkpoint_candidates(self) -> dict[str, list[tuple[str, int]]]:
        """trial id -> every complete checkpoint of it in the lineage, (path or URI, tasks done), the furthest
        first: a trial resumes from the first that loads (``load_newest``), not only from the newest."""
        if not self.experiments:
            return {}
        from pyarrow import fs

        filesystem, root, scheme = _filesystem(self.storage)
        found: dict[str, list[tuple[str, int]]] = {}
        for age, experiment in enumerate(self.experiments):
            base = f"{root.rstrip('/')}/{experiment}"
            infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
            complete = {i.path.rsplit("/", 1)[0] for i in infos if i.base_name == STATE_FILE}
            for info in infos:
                if info.base_name != ROWS_FILE:
                    continue
                checkpoint_dir = info.path.rsplit("/", 1)[0]
                if checkpoint_dir not in complete:  # a copy cut short when its worker died
                    continue
                trial_id = checkpoint_dir.rsplit("/", 2)[-2]
                try:
                    with filesystem.open_input_stream(info.path) as f:
                        done = int(json.loads(f.read())["tasks_done"])
                except (OSError, ValueError, KeyError):
                    continue
                found.setdefault(trial_id, []).append((scheme + checkpoint_dir, done, age))
        # furthest first; among equals the later run's, then the later checkpoint (its folder name sorts last)
        return {tid: [(path, done) for path, done, _ in sorted(c, key=lambda x: (x[1], x[2], x[0]), reverse=True)]
                for tid, c in found.items()}


def older_siblings(checkpoint) -> list:
    """The other ``checkpoint_*`` folders beside a Tune checkpoint (Tune keeps the last few of a trial), newest
    first: where a Tune retry falls back to when its newest checkpoint does not load."""
    from pyarrow import fs
    from ray import tune

    path = str(checkpoint.path).rstrip("/")
    parent, name = path.rsplit("/", 1)
    try:
        infos = checkpoint.filesystem.get_file_info(fs.FileSelector(parent, allow_not_found=True))
    except OSError:
        return []
    names = sorted((i.base_name for i in infos if i.type == fs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
    return [tune.Checkpoint(f"{parent}/{n}", filesystem=checkpoint.filesystem) for n in names]


def load_newest(candidates, load, say=print):
    """The state of the first of ``candidates`` (Tune checkpoints, newest first) that ``load`` reads; each one
    skipped is said, with why (a file cut short by a dying worker or a full disk, a missing file). None if
    none loads: the trial starts from its first task."""
    skipped = 0
    for checkpoint in candidates:
        try:
            with checkpoint.as_directory() as directory:
                state = load(directory)
        except Exception as e:  # noqa: BLE001 - any checkpoint that does not load is skipped, whatever the cause
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
            say(f"clorch: checkpoint {checkpoint.path} skipped, it does not load ({why})", flush=True)
            skipped += 1
            continue
        if skipped:
            say(f"clorch: resuming from the older checkpoint {checkpoint.path} ({state.tasks_done} tasks done)",
                flush=True)
        return state
    if skipped:
        say(f"clorch: none of the {skipped} checkpoints loads: the trial starts from its first task", flush=True)
    return None
