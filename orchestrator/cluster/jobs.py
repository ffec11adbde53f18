"""A study as a Ray Job: ``clorch submit``, ``clorch status``, ``clorch logs``.

``clorch run --address`` keeps the driver on this machine: closing the laptop
or losing the SSH tunnel ends the study. ``clorch submit`` instead hands the
study to the cluster's job server, which starts the driver (``clorch run
--address auto``) on the head; this machine only uploads and can go away.

What is uploaded is a working directory built here: the study file and the
three packages this clorch runs from (orchestrator, methods, datasets), so the
code that validated the study is the code that runs it, on the head and on
every worker (Ray starts the job's workers in that directory, on sys.path).
The cluster only has to provide the dependencies: cluster.yaml installs the
project for them. Nothing else travels: no .venv, results, MLflow store,
datasets or .git. Datasets are read on the head (the driver loads the
benchmark once), from --data-root or the study's data_root there.

Ray 2.60 clusters require their token: the client switches to token mode
when one is at hand (orchestrator.cluster.connect.use_cluster_token, called before ray
is imported) and the job server checks it on every request. A missing or
wrong token, no head at the address, or no job of that id is a ``JobError``:
one message naming the fix, exit 2.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from orchestrator.cluster.connect import reachable, token_source, use_cluster_token
from orchestrator.study.redact import is_secret_key, redact_text, redact_uri, split_credentials

# Where the address comes from when --address is not given, first found wins.
ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
PACKAGES = ("orchestrator", "methods", "datasets")  # what the job imports from the working directory
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
FORWARD_HINT = "`ray dashboard cluster.yaml` forwards it to http://127.0.0.1:8265"


class JobError(RuntimeError):
    """The cluster or the job could not be used; the message says why and what to do."""


# ---------------------------------------------------------------- address and token
def resolve_address(given: str | None) -> str:
    """The job server's HTTP address: --address, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS."""
    source, address = "--address", given
    if not address:
        found = [(f"${name}", os.environ[name]) for name in ADDRESS_ENV if os.environ.get(name)]
        if not found:
            raise JobError("no cluster given: pass --address http://HEAD:8265 (the head's dashboard; "
                           f"{FORWARD_HINT}) or set RAY_API_SERVER_ADDRESS")
        source, address = found[0]
    parts = urlsplit(address)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise JobError(f"{source} {address!r} is not a job server address: use the head's dashboard URL, "
                       f"http://HEAD:8265 ({FORWARD_HINT}); a GCS address such as HEAD:6379 is for "
                       "`clorch run --address`")
    return address.rstrip("/")


def _auth_message(address: str, error: Exception) -> str:
    text = str(error)
    copy = ("copy the head's token here: `ray get-auth-token` on the head prints it; put it in "
            "~/.ray/auth_token (or set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it)")
    if "Forbidden" in text or "invalid or incorrect" in text:
        return (f"the Ray cluster at {address} rejected this machine's token (from {token_source()}): it is not "
                f"the cluster's; {copy}")
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return (f"the Ray cluster at {address} requires its token, and RAY_AUTH_MODE=disabled here sends none: "
                f"unset RAY_AUTH_MODE and {copy}")
    return f"the Ray cluster at {address} requires its token and none was found on this machine: {copy}"


@contextlib.contextmanager
def _address_env_cleared():
    """JobSubmissionClient lets $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS override its argument; the
    address resolved here must win, so they are hidden while the client is built."""
    saved = {name: os.environ.pop(name) for name in ADDRESS_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _probe(address: str) -> None:
    parts = urlsplit(address)
    try:
        reachable(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as e:
        raise JobError(f"no Ray job server answered at {address} ({e.strerror or e}): check that the head runs "
                       f"(`ray up cluster.yaml`, or `ray start --head` on it) and that the port is reachable; "
                       f"{FORWARD_HINT}") from None


def connect(address: str):
    """A JobSubmissionClient for ``address``, or a JobError naming the fix.

    The caller must have run ``use_cluster_token(address)`` before ray was imported.
    """
    _probe(address)
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    _quiet_ray_client_logs()  # after the import: importing ray reconfigures its loggers

    try:
        with _address_env_cleared():
            return JobSubmissionClient(address)
    except AuthenticationError as e:
        raise JobError(_auth_message(address, e)) from None
    except (ConnectionError, RuntimeError) as e:
        raise JobError(f"the server at {address} is not a Ray job server ({e}): give the head's dashboard "
                       f"address, http://HEAD:8265; {FORWARD_HINT}") from None


def _quiet_ray_client_logs() -> None:
    """Ray's SDK logs each package upload at INFO on stderr; keep warnings and errors only."""
    import logging

    logging.getLogger("ray.dashboard").setLevel(logging.WARNING)
    logging.getLogger("ray._private.runtime_env").setLevel(logging.WARNING)


# ---------------------------------------------------------------- what a job runs
def stage_working_dir(study_file: Path, into: Path, plugins: list | None = None) -> Path:
    """Copy the study file, the packages clorch runs from and the study's plugins into ``into``; return ``into``.

    File and package plugins keep their path relative to the study file, so the ``plugins:`` line that was
    validated here resolves the same way on the head. Module plugins and entry points must be installed on
    every node (cluster.yaml's setup commands).
    """
    for name in PACKAGES:
        spec = importlib_util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise JobError(f"cannot find the {name!r} package to upload: reinstall clorch (pip install -e .)")
        shutil.copytree(next(iter(spec.submodule_search_locations)), into / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(study_file, into / study_file.name)
    base = study_file.resolve().parent
    for ref in plugins or []:
        if ref.kind not in ("file", "package"):
            continue
        source = Path(ref.path)
        try:
            target = into / source.relative_to(base)
        except ValueError:
            raise JobError(f"plugin {source} is outside the study's folder {base}: only files beside or below the "
                           "study file are uploaded; move it there, or install it as a package on every node") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        if ref.kind == "file":
            shutil.copy2(source, target)
        else:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return into


def job_secrets(overrides: list[str]) -> tuple[list[str | tuple[str, str]], dict[str, str]]:
    """Keep credentials off the job's command line (the dashboard and ``ray job list`` show it).

    Returns the overrides for the command (a secret one as ``(key, ENV_VAR)``,
    expanded by the job's shell) and the env vars that carry the real values
    (``runtime_env.env_vars``): a ``tracking.uri`` with ``user:password@`` loses
    them to MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (MLflow's own
    basic-auth variables); a key that looks secret (password, token, secret,
    key) or a value with a URI password goes through CLORCH_SET_<i>.
    """
    items: list[str | tuple[str, str]] = []
    env: dict[str, str] = {}
    for i, item in enumerate(overrides):
        key, sep, value = item.partition("=")
        if sep and key.strip() == "tracking.uri":
            clean, user, password = split_credentials(value.strip())
            if password is not None:
                if user:
                    env["MLFLOW_TRACKING_USERNAME"] = user
                env["MLFLOW_TRACKING_PASSWORD"] = password
                items.append(f"{key}={clean}")
                continue
        if sep and (is_secret_key(key.strip()) or redact_text(value) != value):
            env[f"CLORCH_SET_{i}"] = value
            items.append((key, f"CLORCH_SET_{i}"))
            continue
        items.append(item)
    return items, env


def entrypoint(study_file_name: str, overrides: list[str], data_root: str | None, resume: bool) -> str:
    """The shell command the job server runs on the head, in the uploaded working directory.

    ``python -m`` (not the ``clorch`` script) so the uploaded packages, first on
    sys.path, are the ones that run; ``--address auto`` joins the cluster the
    job runs on (Ray sets RAY_ADDRESS for the job). Secret ``--set`` values are
    ``"${CLORCH_SET_<i>}"`` references (see ``job_secrets``), never the values.
    """
    argv = ["python", "-m", "orchestrator.cli", "run", study_file_name, "--address", "auto"]
    words = []
    for item in job_secrets(overrides)[0]:
        if isinstance(item, tuple):  # the shell expands the variable; the command line shows its name only
            words.append(f"--set {shlex.quote(item[0] + '=')}\"${{{item[1]}}}\"")
        else:
            words.append(shlex.join(["--set", item]))
    tail = []
    if data_root:
        tail += ["--data-root", data_root]
    if resume:
        tail.append("--resume")
    return " ".join([shlex.join(argv), *words, *([shlex.join(tail)] if tail else [])])


def _relative(path: str | None) -> bool:
    return bool(path) and "://" not in path and not Path(path).is_absolute()


def _local_tracking_path(uri: str) -> str | None:
    """The filesystem path an MLflow URI writes to, or None for a server or database."""
    if uri.startswith("sqlite:///"):
        return uri.removeprefix("sqlite:///")  # sqlite:////abs has an absolute path left over
    if uri.startswith("file:"):
        return urlsplit(uri).path or uri.removeprefix("file:")
    return None if "://" in uri else uri


def path_warnings(study, data_root: str | None) -> list[str]:
    """Relative paths in a submitted study resolve in the job's working directory on the head: a
    temporary directory of Ray's, cleaned when its package cache fills or the cluster goes down."""
    where = "resolves in the job's temporary working directory on the head"
    out = []
    local = _local_tracking_path(study.tracking.uri)
    if local is not None and not Path(local).is_absolute():
        out.append(f"tracking.uri {redact_uri(study.tracking.uri)!r} {where}: log to the head's MLflow server "
                   "(--set tracking.uri=http://127.0.0.1:5000, started by cluster.yaml) or an absolute path "
                   "on shared storage")
    if _relative(study.output_dir):
        out.append(f"output_dir {study.output_dir!r} {where}: --set output_dir=/mnt/shared/results "
                   "(shared storage of cluster.yaml) keeps results/<study>/ and lets `--resume` find it")
    if _relative(study.storage):
        out.append(f"storage {study.storage!r} {where}: use a path every node sees, or s3://...")
    if _relative(study.data_root) and not data_root:
        out.append(f"data_root {study.data_root!r} {where}: use --data-root with an absolute path on the head")
    if _relative(data_root):
        out.append(f"--data-root {data_root!r} {where}: give an absolute path on the head")
    return out


@dataclass
class Submitted:
    job_id: str
    entrypoint: str


def submit(client, study, study_file: Path, overrides: list[str], data_root: str | None = None,
           resume: bool = False, agent_wait_s: float = 60.0) -> Submitted:
    """Upload the working directory and start the job; its id is ``clorch-<study>-<time>-<random>``."""
    job_id = f"clorch-{study.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    command = entrypoint(study_file.name, overrides, data_root, resume)
    secret_env = job_secrets(overrides)[1]
    with tempfile.TemporaryDirectory(prefix="clorch-job-") as tmp:
        workdir = stage_working_dir(study_file, Path(tmp), study.plugin_refs)
        runtime_env = {"working_dir": str(workdir), "env_vars": {"PYTHONUNBUFFERED": "1", **secret_env}}
        deadline = time.monotonic() + agent_wait_s
        while True:
            try:
                client.submit_job(entrypoint=command, runtime_env=runtime_env, submission_id=job_id,
                                  metadata={"clorch.study": study.name, "clorch.study_file": study_file.name})
                return Submitted(job_id, command)
            except RuntimeError as e:
                # A head that has just started answers before its agent can take jobs.
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise JobError(f"the job server refused the job: {e}") from None
                time.sleep(2.0)


# ---------------------------------------------------------------- following a job
def job_info(client, job_id: str):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            raise JobError(f"no job {job_id!r} on this cluster: `clorch submit` prints the id; "
                           "`RAY_AUTH_MODE=token ray job list --address ADDRESS` lists them") from None
        raise JobError(f"cannot read job {job_id!r}: {e}") from None


def exit_code(info) -> int:
    """The job's result as `clorch run`'s exit code: 0 success, 1 trials failed, 2 bad input."""
    status = str(getattr(info.status, "value", info.status))
    if status == "SUCCEEDED":
        return 0
    code = getattr(info, "driver_exit_code", None)
    return code if code in (1, 2) else 1


def describe(info, job_id: str) -> str:
    status = str(getattr(info.status, "value", info.status))
    text = f"job {job_id}: {status}"
    code = getattr(info, "driver_exit_code", None)
    if status in TERMINAL and code is not None:
        text += f" (exit code {code})"
    study = (info.metadata or {}).get("clorch.study")
    if study:
        text += f"; study {study}"
    if info.message:
        text += f"\n  {info.message.strip()}"
    return text


def wait_terminal(client, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None):
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        info = job_info(client, job_id)
        if str(getattr(info.status, "value", info.status)) in TERMINAL:
            return info
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {job_id} did not finish within {timeout_s:g} s")
        time.sleep(poll_s)


def follow(client, job_id: str, out: TextIO = sys.stdout) -> int:
    """Print the job's log as it grows until the job ends; return its exit code (see ``exit_code``)."""
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    job_info(client, job_id)  # an unknown id is a JobError here, not a websocket error
    try:
        asyncio.run(tail())
    except Exception as e:  # noqa: BLE001 - the log stream broke; the job itself goes on
        print(f"clorch: the log stream ended early ({type(e).__name__}: {e}); waiting for the job to end",
              file=sys.stderr)
    info = wait_terminal(client, job_id)
    print(describe(info, job_id), file=out, flush=True)
    return exit_code(info)


# ---------------------------------------------------------------- the three commands
def _client_for(address_arg: str | None):
    address = resolve_address(address_arg)
    use_cluster_token(address)  # before ray is imported
    return address, connect(address)


def submit_command(args: Any) -> int:
    from orchestrator.study.schema import StudyError
    from orchestrator.study.loading import load_study

    try:
        address = resolve_address(args.address)
        use_cluster_token(address)  # before anything imports ray
        study = load_study(args.study, args.overrides)  # a bad file: exit 2, nothing submitted
    except StudyError as e:
        print(redact_text(str(e)), file=sys.stderr)
        return 2
    except JobError as e:
        print(f"clorch: {e}", file=sys.stderr)
        return 2
    from orchestrator.study.checks import NOTES, WARNINGS

    for warning in WARNINGS:
        print(f"clorch: warning: {warning}", file=sys.stderr)
    for note in NOTES:
        print(f"clorch: note: {note}", file=sys.stderr)
    for warning in path_warnings(study, args.data_root):
        print(f"clorch: warning: {warning}", file=sys.stderr)
    try:
        client = connect(address)
        job = submit(client, study, Path(args.study), args.overrides, args.data_root, args.resume)
    except JobError as e:
        print(f"clorch: {e}", file=sys.stderr)
        return 2
    print(f"submitted study {study.name} to {address} as job {job.job_id}\n"
          f"  runs: {job.entrypoint}\n"
          f"  follow: clorch logs {job.job_id} --address {address} --follow\n"
          f"  status: clorch status {job.job_id} --address {address}\n"
          f"  stop:   RAY_AUTH_MODE=token ray job stop {job.job_id} --address {address}", flush=True)
    if args.no_wait:
        return 0
    try:
        return follow(client, job.job_id)
    except KeyboardInterrupt:
        print(f"\nclorch: stopped following; job {job.job_id} keeps running on the cluster", file=sys.stderr)
        return 130
    except JobError as e:
        print(f"clorch: {e}", file=sys.stderr)
        return 2


def status_command(args: Any) -> int:
    try:
        _, client = _client_for(args.address)
        print(describe(job_info(client, args.job), args.job))
    except JobError as e:
        print(f"clorch: {e}", file=sys.stderr)
        return 2
    return 0


def logs_command(args: Any) -> int:
    try:
        _, client = _client_for(args.address)
        if args.follow:
            return follow(client, args.job)
        job_info(client, args.job)
        sys.stdout.write(client.get_job_logs(args.job))
    except KeyboardInterrupt:
        return 130
    except JobError as e:
        print(f"clorch: {e}", file=sys.stderr)
        return 2
    return 0
