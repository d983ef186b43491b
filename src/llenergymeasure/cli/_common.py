"""State and error handling shared by the ``llem`` app and its commands.

The app (``cli/app.py``) registers the commands (``cli/commands/``); both read the verbosity
and map exceptions to exit codes here, so neither imports the other's module at run time.
Exit codes: 0 ok; 1 runtime failure; 2 bad configuration or input; ``128 + signal`` when
stopped by a signal (130 SIGINT / Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import sys
import traceback

import typer

from llenergymeasure.exceptions import ConfigError, LLEMError

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

STATE: dict[str, int] = {"verbosity": 0}


def set_verbosity(quiet: bool = False, verbose: int = 0) -> int:
    """Record the verbosity a command asked for (-1 quiet, 0 normal, >0 verbose) and
    return it; a global ``-v`` given before the command is kept."""
    level = -1 if quiet else max(verbose, STATE["verbosity"])
    STATE["verbosity"] = level
    return level


def exit_code_for(exc: BaseException) -> int:
    """The exit code an exception maps to (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", None)  # study.signals.Interrupted
        return 128 + signum if isinstance(signum, int) else EXIT_INTERRUPTED
    if isinstance(exc, LLEMError):
        return EXIT_CONFIG if isinstance(exc, ConfigError) else int(exc.exit_code or 1)
    return EXIT_RUNTIME


def error_message(exc: BaseException) -> str:
    """The one message a user sees for an exception."""
    if isinstance(exc, KeyboardInterrupt):
        return interrupted_message(exc)
    if isinstance(exc, LLEMError):
        return f"Error: {exc}"
    detail = f"{type(exc).__name__}: {exc}"
    return f"Unexpected error: {detail}\n(run again with -v for the traceback)"


def interrupted_message(exc: KeyboardInterrupt) -> str:
    """One line: which signal, and for a study how to resume it."""
    signum = getattr(exc, "signum", None)
    what = "Interrupted"
    if isinstance(signum, int):
        import signal

        try:
            what += f" by {signal.Signals(signum).name}"
        except ValueError:
            what += f" by signal {signum}"
    study_dir = getattr(exc, "study_dir", None)
    if study_dir is None:
        return f"{what}."
    hint = getattr(exc, "resume_hint", None) or f"llem run <file> --resume-dir {study_dir}"
    return f"{what}: study marked interrupted, summary of what finished written; resume: {hint}"


def report_error(exc: BaseException) -> int:
    """Print the message (and the traceback when verbose) on stderr; return the exit code."""
    from llenergymeasure.redaction import scrub

    if STATE["verbosity"] > 0:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(scrub(text))
    typer.echo(scrub(error_message(exc)), err=True)
    return exit_code_for(exc)
