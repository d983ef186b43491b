"""The ``llem`` command line: a thin Typer shell over the library.

Exit codes (README, Command line): 0 ok; 1 runtime failure (an LLEMError that is not a config problem,
or an unexpected exception); 2 bad configuration or input (ConfigError,
BackendNotInstalledError, usage errors); 130 interrupted. Errors print one clear message on
stderr; the traceback only with ``-v``.

Importing this module must stay cheap (``llem --help`` < 0.5 s): commands import the
library lazily, inside their functions.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from llenergymeasure._version import __version__
from llenergymeasure.cli._common import EXIT_OK, STATE, report_error


class LlemGroup(TyperGroup):
    """Typer group that turns library exceptions into exit codes and one-line messages."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command; map LLEMError, KeyboardInterrupt and surprises to exit codes."""
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:
            if _is_click_exception(exc):
                raise
            raise typer.Exit(report_error(exc)) from exc
        except KeyboardInterrupt as exc:
            raise typer.Exit(report_error(exc)) from exc


def _is_click_exception(exc: BaseException) -> bool:
    """Usage errors (click exceptions: ``show()`` + ``exit_code``) are rendered by click (exit 2)."""
    return hasattr(exc, "show") and hasattr(exc, "exit_code")


app = typer.Typer(
    name="llem",
    cls=LlemGroup,
    help="Measure what LLM inference costs: energy, J/token, throughput, latency, FLOPs, CO2.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"llem (llenergymeasure) {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, show_default=False, help="More output (tracebacks)."
        ),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and results.")
    ] = False,
) -> None:
    """llem: LLM inference energy measurement."""
    STATE["verbosity"] = -1 if quiet else verbose


def _register_commands() -> None:
    """Attach the subcommands (their modules import the library lazily)."""
    from llenergymeasure.cli.commands import aggregate as aggregate_cmd
    from llenergymeasure.cli.commands import config as config_cmd
    from llenergymeasure.cli.commands import results as results_cmd
    from llenergymeasure.cli.commands import run as run_cmd

    app.command(
        "run",
        help=run_cmd.HELP,
        context_settings={"help_option_names": ["-h", "--help"]},
    )(run_cmd.run)
    app.command(
        "config",
        help=config_cmd.HELP,
        context_settings={"help_option_names": ["-h", "--help"]},
    )(config_cmd.config)
    for name, function, text in (
        ("results", results_cmd.results, results_cmd.RESULTS_HELP),
        ("report", results_cmd.report, results_cmd.REPORT_HELP),
        ("export", results_cmd.export, results_cmd.EXPORT_HELP),
        ("compare", results_cmd.compare, results_cmd.COMPARE_HELP),
    ):
        app.command(name, help=text, context_settings={"help_option_names": ["-h", "--help"]})(
            function
        )
    app.command(
        "aggregate",
        help=aggregate_cmd.HELP,
        context_settings={"help_option_names": ["-h", "--help"]},
    )(aggregate_cmd.aggregate)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``llem`` and ``python -m llenergymeasure``); exits the process."""
    STATE["verbosity"] = 0
    try:
        app(args=argv, prog_name="llem")
    except KeyboardInterrupt as exc:  # outside a command, e.g. while parsing
        sys.exit(report_error(exc))
