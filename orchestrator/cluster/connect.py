"""Where a study's trials run: an embedded local Ray, or a cluster joined by address.

Ray 2.60 clusters require a token. Ray reads RAY_AUTH_MODE when it is first
imported, so ``use_cluster_token`` must run before anything imports ray; the
CLI calls it first thing.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path


class ClusterUnreachable(RuntimeError):
    """``--address`` named a cluster we could not join; the message says why and what to do."""


def token_source() -> str | None:
    """Where Ray will read this machine's token from, in Ray's order of precedence (None: nowhere)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"$RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def reachable(host: str, port: int, timeout_s: float = 5.0) -> None:
    """Raise OSError in seconds when nothing listens at host:port (Ray and requests retry for long)."""
    with socket.create_connection((host.strip("[]"), port), timeout=timeout_s):
        pass


def use_cluster_token(address: str | None) -> None:
    """Joining a cluster with a token at hand: switch the client to token mode."""
    if address and "RAY_AUTH_MODE" not in os.environ and token_source() is not None:
        if "ray" in sys.modules:
            raise RuntimeError("use_cluster_token must run before ray is imported")
        os.environ["RAY_AUTH_MODE"] = "token"


def connect(address: str | None, runtime_env: dict | None = None) -> bool:
    """Start an embedded local Ray (address None), or join the cluster at ``address``; True when this call
    started or joined it (the caller then shuts it down when done), False for one already initialised.

    ``runtime_env`` applies to every worker of this driver (the driver's code and plugins, see
    run/driver.worker_environment). An already initialised Ray (a test's, a notebook's) is kept as it is.
    """
    if "ray" not in sys.modules:
        use_cluster_token(address)
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        # "local" forces a fresh embedded instance even if a cluster is reachable.
        with _loopback_only():
            ray.init(address="local", include_dashboard=False, logging_level=_ray_log_level(), configure_logging=True,
                     runtime_env=runtime_env, _node_ip_address=LOOPBACK)
        return True
    _probe(address)
    try:
        ray.init(address=address, logging_level=_ray_log_level(), configure_logging=True, runtime_env=runtime_env)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, AuthenticationError, RuntimeError
        raise ClusterUnreachable(_explain(address, e)) from None
    return True


LOOPBACK = "127.0.0.1"
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch for "this node is a cluster of one"


@contextlib.contextmanager
def _loopback_only():
    """Make the embedded Ray listen on 127.0.0.1 only (GCS, raylet, object manager, workers, agents).

    Ray 2.60's ``ray.init(_node_ip_address="127.0.0.1")`` alone does not do it: Ray resolves a
    loopback address back to the machine's routable IP (services.resolve_ip_for_localhost), and its
    gRPC servers bind every interface unless the node's IP is 127.0.0.1. With Ray's single-node
    switch off (ENABLE_RAY_CLUSTER, read from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER; what Ray does on
    macOS and Windows) the node IP stays 127.0.0.1 and every server binds loopback. Both the
    imported constant (this process) and the variable (the processes ray.init starts, which inherit
    it) are set for the start only and restored after, so a later ``connect(ADDRESS)`` is unaffected.
    """
    from ray._private import ray_constants

    before_env = os.environ.get(_SINGLE_NODE_ENV)
    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if before is not None:
            ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(_SINGLE_NODE_ENV, None)
        else:
            os.environ[_SINGLE_NODE_ENV] = before_env


def probe(address: str | None) -> None:
    """Raise ClusterUnreachable in seconds when nothing answers at ``address`` (None: the embedded Ray, nothing to probe)."""
    if address is not None:
        _probe(address)


def _ray_log_level() -> str:
    """Ray's own warnings and tips stay out of a normal run; ``clorch run --verbose`` shows them."""
    return "warning" if os.environ.get("CLORCH_VERBOSE") else "error"


def _probe(address: str) -> None:
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: let Ray resolve it
    try:
        reachable(host, int(port))
    except OSError as e:
        raise ClusterUnreachable(_explain(address, e)) from None


def _explain(address: str, error: Exception) -> str:
    chain = []
    while error is not None and len(chain) < 5:
        chain.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    text = "\n".join(chain)
    if "auth" in text.lower():
        hint = ("the cluster requires its token: copy the head's ~/.ray/auth_token to this machine "
                "(or set RAY_AUTH_TOKEN) and set RAY_AUTH_MODE=token")
    else:
        hint = ("no Ray head answered there: check that `ray start --head` runs at that address and the port "
                "is reachable (for a remote cluster, forward the port over SSH or use `ray job submit`)")
    return f"cannot join the Ray cluster at {address}: {hint}"
