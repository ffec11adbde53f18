"""Never print or store credentials: redaction for what clorch prints or logs.

A tracking URI may carry a password (``http://user:pass@host:5000``) and a
``--set`` may carry a secret (``--set plugin.api_token=...``). Everything
clorch prints, logs to MLflow, or puts on a job's command line goes through
these helpers; the real values only travel where they are used (the MLflow
client in this process, a job's ``runtime_env.env_vars``).

Standard library only: every part of the layout may import it.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# a key is secret when one of its words (split on . _ - and camelCase) is one of these
_SECRET_WORDS = {"password", "passwd", "pwd", "pass", "passphrase", "token", "secret", "key", "apikey",
                 "credential", "credentials", "auth", "authorization", "cookie", "session", "private"}
_SECRET_JOINED = re.compile(r"(password|passwd|token|secret|apikey|api_key|credential)", re.IGNORECASE)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")
_QUERY_SECRET = re.compile(r"(?P<name>[?&][^=&\s]*(?:password|passwd|token|secret|key|signature|auth)[^=&\s]*=)"
                           r"(?P<value>[^&\s]+)", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """``tracking.password``, ``plugin.api_token``, ``aws_secret_access_key``, ``apiKey``: True."""
    words = re.split(r"[._\-\s/]+|(?<=[a-z0-9])(?=[A-Z])", str(key))
    return any(w.lower() in _SECRET_WORDS for w in words if w) or bool(_SECRET_JOINED.search(str(key)))


def redact_uri(uri: str) -> str:
    """``http://user:pass@host:5000/x`` -> ``http://user:***@host:5000/x`` (and secret query values masked)."""
    return redact_text(uri)


def redact_text(text: str) -> str:
    """Every URI password and secret-looking query value in free text masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(text))
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)


def redact_override(item: str) -> str:
    """A ``--set KEY=VALUE`` as it may be printed: the value masked when the key looks secret."""
    key, sep, value = item.partition("=")
    if sep and is_secret_key(key.strip()):
        return f"{key}={MASK}"
    return f"{key}{sep}{redact_text(value)}" if sep else redact_text(item)


def redact_value(key: str, value: Any) -> Any:
    """A (key, value) for a log: masked when the key looks secret, URIs in strings redacted."""
    if is_secret_key(key) and value not in (None, ""):
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``http://user:pass@host`` -> (``http://host``, user, pass); a URI without userinfo comes back as is."""
    parts = urlsplit(uri)
    if "://" not in uri or "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), user or None, password if sep else None
