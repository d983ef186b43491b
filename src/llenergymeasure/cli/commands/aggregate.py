"""``llem aggregate DIR``: re-run the late aggregation of a launched run's directory.

Reads ``DIR/raw/process_<i>.json`` (those with their ``.done`` marker) and
``DIR/raw/launch.json``, writes ``DIR/result.json`` (a different one already there is kept
as ``result.replaced-<timestamp>.json``) and prints the summary. Problems with the
directory are input errors: exit code 2, with the path in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HELP = (
    "Re-run the late aggregation of a multi-process run directory: raw/process_<i>.json "
    "(+ raw/launch.json) -> result.json, and print its summary."
)


def aggregate(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory holding raw/.", show_default=False, metavar="DIR")
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the path.")] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Tracebacks on errors.")
    ] = 0,
) -> None:
    """Aggregate ``run_dir`` and print the result."""
    from pydantic import ValidationError

    from llenergymeasure.cli._common import set_verbosity
    from llenergymeasure.cli.display import format_experiment
    from llenergymeasure.exceptions import ConfigError, ExperimentError
    from llenergymeasure.results.aggregation import aggregate_run_dir

    set_verbosity(quiet, verbose)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    try:
        result, path = aggregate_run_dir(run_dir)
    except FileNotFoundError as e:
        raise ConfigError(
            f"{run_dir}: nothing to aggregate ({e}); only runs with pytorch.num_processes "
            "set write per-process raw results"
        ) from e
    except (ExperimentError, ValidationError) as e:
        raise ConfigError(f"{run_dir}: cannot aggregate: {e}") from e
    typer.echo(str(path) if quiet else format_experiment(result, str(path.parent)))
