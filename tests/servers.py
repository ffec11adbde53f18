"""Real servers for tests, on loopback: a Ray head and an MLflow server.

Each runs in its own process group and is stopped by killing that group:
`ray stop` would also kill the embedded Ray other tests of the session use.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # the head's children outlive a TERM under --block
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start(what: str, argv: list[str], log: Path, ready: Callable[[], bool], env: dict | None = None,
          timeout_s: float = 120) -> subprocess.Popen:
    """Start ``argv`` in its own process group, logging to ``log``; return once ``ready()`` holds."""
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {log.read_text()[-2000:]}")
        if ready():
            return proc
        time.sleep(0.5)
    stop_group(proc)
    pytest.fail(f"{what} did not start in {timeout_s:g} s: {log.read_text()[-2000:]}")


def start_ray_head(log: Path, dashboard_port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`ray start --head` on loopback with 2 CPUs; with ``dashboard_port`` also its job server.

    The venv is first on PATH, as cluster.yaml arranges on real nodes, so a job's `python` is the project's.
    Returns the process and the GCS address HOST:PORT.
    """
    port = free_port()
    argv = [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
            "--num-cpus=2", "--disable-usage-stats"]
    argv += (["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
             if dashboard_port else ["--include-dashboard=false"])
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = start("ray start --head", argv, log, env=env,
                 ready=lambda: "Ray runtime started" in log.read_text()
                 and (dashboard_port is None or listens(dashboard_port)))
    return proc, f"127.0.0.1:{port}"


def start_mlflow_server(root: Path, timeout_s: float = 120) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on loopback with a SQLite store under ``root``; returns the process and its URI."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    proc = start("mlflow server", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                                   "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                                   "--artifacts-destination", str(root / "artifacts"),
                                   "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}", "--workers", "1"],
                 root / "mlflow.log", ready=lambda: answers(f"{uri}/health"), timeout_s=timeout_s)
    return proc, uri
