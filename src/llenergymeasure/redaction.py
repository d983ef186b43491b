"""No secrets at rest: credential values never reach results, logs or failure files.

A value sits under a *credential key* when one of the key's words (split at ``_``, ``-``,
``.``, spaces and camelCase) is token, key, secret, password, passwd, auth, apikey,
credential(s), authorization or bearer: ``token``, ``hf_token``, ``api_key``,
``use_auth_token``, ``accessKey``. Plurals of other words are not matched, so
``max_input_tokens`` and ``kv_cache_dtype`` stay visible.

* :func:`redact` copies configuration data with those values replaced by ``***`` (the
  results' stored config, the study summary's key fields, the manifest's design).
* :func:`secret_values` collects the values themselves; :func:`register_secrets` keeps them
  for this process so :func:`scrub` (failure files, error messages),
  :class:`RedactingFormatter` (the CLI's log lines and tracebacks) and
  :class:`RedactingFilter` (for an application's own handlers) replace them wherever they
  show up in text.

Bottom layer: config hashing, the orchestrator, the study runner, logging and the CLI all
use it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "***"
CREDENTIAL_WORDS = frozenset(
    {
        "token",
        "key",
        "secret",
        "password",
        "passwd",
        "auth",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "bearer",
    }
)
MIN_SECRET_CHARS = 4  # shorter values are not scrubbed from free text (too many false hits)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")
_registered: set[str] = set()


def is_credential_key(key: object) -> bool:
    """Whether ``key`` names a credential (see the module docstring)."""
    words = _SPLIT.split(_CAMEL.sub("_", str(key)).lower())
    return any(word in CREDENTIAL_WORDS for word in words)


def redact(data: Any) -> Any:
    """A copy of ``data`` (dicts and lists, recursively) with every value under a
    credential key replaced by ``***`` (``None`` stays ``None``: nothing to hide)."""
    if isinstance(data, dict):
        return {
            k: (REDACTED if v is not None else None) if is_credential_key(k) else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def secret_values(data: Any) -> set[str]:
    """The text of every value under a credential key in ``data`` (recursively)."""
    found: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            if is_credential_key(k):
                found |= _texts(v)
            else:
                found |= secret_values(v)
    elif isinstance(data, list):
        for v in data:
            found |= secret_values(v)
    return found


def _texts(value: Any) -> set[str]:
    """Every scalar inside a credential value, as text."""
    if isinstance(value, dict):
        return set().union(*(_texts(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_texts(v) for v in value)) if value else set()
    return set() if value is None else {str(value)}


def register_secrets(values: Iterable[str]) -> None:
    """Remember credential values for :func:`scrub` and :class:`RedactingFilter`."""
    _registered.update(v for v in values if len(v) >= MIN_SECRET_CHARS)


def scrub(text: str, values: Iterable[str] | None = None) -> str:
    """``text`` with every registered (or given) credential value replaced by ``***``."""
    secrets = set(values) if values is not None else set(_registered)
    for value in sorted(secrets, key=len, reverse=True):  # longest first: no partial leaks
        if len(value) >= MIN_SECRET_CHARS and value in text:
            text = text.replace(value, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs registered credential values from each record's
    message (installed on the CLI's handler, so every package logger is covered)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _registered:
            message = record.getMessage()
            clean = scrub(message)
            if clean != message:
                record.msg, record.args = clean, None
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message and traceback) is scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))
