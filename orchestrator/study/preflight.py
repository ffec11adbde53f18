"""Checks of what a study points at outside itself, before Ray starts or anything is written.

- ``tracking.uri``: sqlite (its folder exists and is writable; an existing file is a database), http(s)
  (something answers at host:port: a short TCP probe), a local folder; any other scheme is refused.
- ``storage``: a path, or a URI scheme pyarrow / Ray Tune can write (only the scheme is checked).
- the benchmark's files under the data root (``Params.check_files(ctx)`` where the benchmark reads files):
  present (or downloadable) and not corrupt, without loading them.

Each returns problems in the study's (field, value, message) shape; nothing here imports Ray or MLflow.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from orchestrator.study.base import _MISSING
from orchestrator.study.schema import Study

TRACKING_SCHEMES = ("sqlite", "http", "https", "file")
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az", "mock", "memory")
PROBE_TIMEOUT_S = 3.0


def check(study: Study, data_root: str | None = None, tracking: bool = True, data: bool = True) -> list:
    problems = check_storage(study.storage)
    if tracking:
        problems += check_tracking(study.tracking.uri)
    if data:
        problems += check_data(study, data_root)
    return problems


def check_tracking(uri: str) -> list[tuple[str, Any, str]]:
    field = "tracking.uri"
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if len(scheme) <= 1:  # a plain path (or a Windows drive letter): MLflow's file store
        return _writable_dir(field, uri, Path(uri), "the MLflow file store")
    if scheme == "sqlite":
        return _sqlite(field, uri)
    if scheme in ("http", "https"):
        return _probe(field, uri, parsed)
    if scheme == "file":
        return _writable_dir(field, uri, Path(parsed.path), "the MLflow file store")
    return [(field, uri, f"unsupported scheme {scheme!r}; use one of {', '.join(s + '://' for s in TRACKING_SCHEMES)}"
             " (e.g. sqlite:///mlflow.db, or http://HOST:5000 for an MLflow server)")]


def _sqlite(field: str, uri: str) -> list:
    import sqlite3

    rest = uri[len("sqlite:"):]
    if not rest.startswith("///"):
        return [(field, uri, "a sqlite URI has three slashes before a relative path (sqlite:///mlflow.db) and "
                             "four before an absolute one (sqlite:////abs/mlflow.db)")]
    path = Path(rest[3:].split("?")[0]) if rest[3:] else None
    if path is None or str(path) == ":memory:":
        return [(field, uri, "an in-memory sqlite store keeps nothing; name a file, e.g. sqlite:///mlflow.db")]
    problems = _writable_dir(field, uri, path.parent if str(path.parent) else Path("."), "the sqlite file")
    if problems:
        return problems
    if path.exists():
        if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
            return [(field, uri, f"{path} is not a file this user can read and write; fix its permissions or "
                                 "name another file")]
        try:
            con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=2)
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()
        except sqlite3.Error as e:
            return [(field, uri, f"{path} is not a usable sqlite database ({e}); move it away or name another "
                                 "file")]
    return []


def _writable_dir(field: str, uri: str, folder: Path, what: str) -> list:
    folder = folder.expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:  # MLflow's file store creates missing folders
        probe = probe.parent
    if what == "the sqlite file" and probe != folder:
        return [(field, uri, f"the folder {folder} of {what} does not exist (sqlite creates no directories); "
                             "create it, or use sqlite:///mlflow.db in the current directory")]
    if not probe.is_dir():
        return [(field, uri, f"{probe} is not a directory, so {what} cannot be created under it; name another path")]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [(field, uri, f"the directory {probe} is not writable by this user; name a writable place for {what}, "
                             "e.g. sqlite:///mlflow.db in the current directory")]
    return []


def _probe(field: str, uri: str, parsed) -> list:
    host = parsed.hostname
    if not host:
        return [(field, uri, "an http(s) tracking URI needs a host, e.g. http://127.0.0.1:5000")]
    try:
        port = parsed.port or (443 if parsed.scheme.lower() == "https" else 80)
    except ValueError:
        return [(field, uri, "the port is not a number 0..65535; e.g. http://127.0.0.1:5000")]
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return []
    except OSError as e:
        why = type(e).__name__ if isinstance(e, (socket.timeout, TimeoutError)) else (e.strerror or type(e).__name__)
        return [(field, uri, f"nothing answers at {host}:{port} ({why}); start the MLflow server there "
                             f"(mlflow server --host 0.0.0.0 --port {port}) or use sqlite:///mlflow.db")]


def check_storage(storage: str | None) -> list[tuple[str, Any, str]]:
    if storage is None:
        return []
    scheme = urlparse(storage).scheme.lower()
    if len(scheme) <= 1 or scheme in STORAGE_SCHEMES:
        return []
    return [("storage", storage, f"unsupported scheme {scheme!r}; use a path every node sees (NFS), or one of "
                                 f"{', '.join(s + '://' for s in STORAGE_SCHEMES if s not in ('mock', 'memory'))}")]


def check_data(study: Study, data_root: str | None) -> list[tuple[str, Any, str]]:
    """The benchmark's own ``check_files`` (absent where the benchmark reads no files)."""
    from datasets.common import LoadContext

    params = study.benchmark_params()
    hook = getattr(params, "check_files", None)
    if hook is None:
        return []
    ctx = LoadContext.resolve(study.data_root, data_root)
    return [("data_root", str(ctx.root), message) for message in hook(ctx)]
