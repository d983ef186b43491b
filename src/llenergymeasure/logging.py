"""Logging setup for the command line: one handler on stderr for the package's logger.

Verbosity levels (``setup_logging(verbosity)``):

    -1  quiet    warnings and errors only
     0  normal   info and above, message text only
     1+ verbose  debug and above, with timestamps and logger names

The library itself only creates loggers (``logging.getLogger(__name__)``); it never adds
handlers, so applications embedding it keep control of their own logging.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from llenergymeasure.redaction import RedactingFormatter

PACKAGE_LOGGER = "llenergymeasure"
_HANDLER_MARK = "_llem_cli_handler"
_VERBOSITY_ATTR = "_llem_verbosity"

_FORMATS: dict[int, str] = {
    -1: "%(levelname)s: %(message)s",
    0: "%(message)s",
    1: "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it)."""

    @property
    def stream(self) -> Any:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: the stream is always the current stderr."""


def level_for(verbosity: int) -> int:
    """The logging level a verbosity maps to (clamped to -1..1)."""
    if verbosity < 0:
        return logging.WARNING
    return logging.DEBUG if verbosity > 0 else logging.INFO


def setup_logging(verbosity: int = 0) -> logging.Logger:
    """Send the package's log records to stderr at the level ``verbosity`` asks for.

    Idempotent: calling it again replaces the handler it installed before (so a test or a
    second CLI invocation in one process does not print each line twice).
    """
    clamped = max(-1, min(1, verbosity))
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    # credential values registered by the run never reach the terminal or a log file
    handler.setFormatter(RedactingFormatter(_FORMATS[clamped], datefmt="%H:%M:%S"))
    setattr(handler, _HANDLER_MARK, True)
    setattr(handler, _VERBOSITY_ATTR, clamped)
    logger.addHandler(handler)
    logger.setLevel(level_for(clamped))
    logger.propagate = False  # the CLI's handler prints; the root logger must not print again
    return logger


def current_verbosity() -> int | None:
    """The verbosity :func:`setup_logging` was last called with (clamped), or None when the
    package logger is not set up by it (library use: logging belongs to the application).

    Study children are told this so that they log at the parent's level.
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in logger.handlers:
        if getattr(handler, _HANDLER_MARK, False):
            return int(getattr(handler, _VERBOSITY_ATTR, 0))
    return None


def reset_logging() -> None:
    """Undo :func:`setup_logging` (for tests and embedding applications)."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
