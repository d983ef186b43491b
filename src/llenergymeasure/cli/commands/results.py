"""``llem results``, ``llem export``, ``llem report``, ``llem compare``: saved results.

All four read through ``reporting.collect`` (any run, study or results directory; unreadable
files are skipped with a warning on stderr; a directory without results exits 2 naming it).
``llem results`` prints exactly what ``llem run`` printed (``display.format_experiment``,
``study.summary.format_study_table``); ``llem export`` writes the rows of
``load_results``; ``llem report`` writes the HTML report; ``llem compare`` the ratios B/A.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from llenergymeasure.reporting.collect import Collection

RESULTS_HELP = (
    "Print a saved experiment's or study's summary, as `llem run` printed it. DIR: a run "
    "directory, a study directory or a results directory (every study and experiment in it)."
)
EXPORT_HELP = (
    "Export every result under DIR as one table, one row per experiment (study, cycle, "
    "config label and swept fields as columns): --csv OUT or --parquet OUT."
)
REPORT_HELP = (
    "Write a self-contained HTML report (works offline) of every result under DIR: summary, "
    "J/token with CIs, energy vs latency/throughput with the Pareto front, timelines, "
    "environment, quality flags. Default output: DIR/report.html. Needs the report extra."
)
COMPARE_HELP = (
    "Compare two runs of the same configurations (matched by config hash): ratio B/A of every "
    "metric with a bootstrap CI over cycles, and what differs between A and B (driver, "
    "libraries, machine, meter)."
)

DirArg = Annotated[
    Path, typer.Argument(help="Run, study or results directory.", show_default=False)
]


def _load(directory: Path) -> Collection:
    """The results under ``directory``; skipped files are logged (stderr) as they are met."""
    from llenergymeasure.reporting.collect import collect

    _log_to_stderr()
    return collect(directory)


def _log_to_stderr() -> None:
    """Library warnings (skipped files) to stderr, at the verbosity given before the command."""
    from llenergymeasure.cli._common import STATE
    from llenergymeasure.logging import setup_logging

    setup_logging(STATE["verbosity"])


def results(directory: DirArg) -> None:
    """Print the summaries of the studies and experiments saved under DIR."""
    from llenergymeasure.cli.display import format_experiment
    from llenergymeasure.study.summary import format_study_table, format_study_timing

    collection = _load(directory)
    blocks = []
    for study in collection.studies:
        if study.summary is None:
            n = len(collection.runs_of(study))
            blocks.append(
                f"Study {study.name}: no study_summary.json yet ({n} result(s) saved; "
                f"still running, or stopped hard) -> `llem run ... --resume-dir {study.study_dir}`"
            )
            continue
        table = format_study_table(study.summary)
        if study.summary.timing.breakdown is not None:  # summaries from before it lack it
            table += "\n" + format_study_timing(study.summary)
        blocks.append(f"{table}\nresults: {study.study_dir}")
    for run in collection.standalone():
        blocks.append(format_experiment(run.result, str(run.run_dir)))
    typer.echo("\n\n".join(blocks))


def export(
    directory: DirArg,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write CSV to this file.")] = None,
    parquet: Annotated[
        Path | None, typer.Option("--parquet", help="Write Parquet to this file.")
    ] = None,
) -> None:
    """Write the results under DIR as one CSV or Parquet table."""
    from llenergymeasure.reporting.frame import rows
    from llenergymeasure.results.export import write_rows

    if (csv is None) == (parquet is None):
        raise typer.BadParameter(
            "give exactly one of --csv OUT or --parquet OUT", param_hint="--csv/--parquet"
        )
    out = csv if csv is not None else parquet
    assert out is not None
    table = rows(_load(directory))
    target = out.with_suffix(".csv" if csv is not None else ".parquet") if not out.suffix else out
    if target.suffix not in (".csv", ".parquet"):
        target = Path(f"{target}.{'csv' if csv is not None else 'parquet'}")
    written = write_rows(table, target)
    typer.echo(f"wrote {len(table)} row(s), {len(table[0])} columns to {written}")


def report(
    directory: DirArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML file to write.")
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
) -> None:
    """Write the HTML report of the results under DIR."""
    from llenergymeasure.reporting.html import default_report_path, render_html
    from llenergymeasure.results.persistence import atomic_write_text

    collection = _load(directory)
    target = output if output is not None else default_report_path(collection.root)
    path = atomic_write_text(target, render_html(collection, title=title))
    typer.echo(f"report: {path}")


def compare(
    dir_a: Annotated[Path, typer.Argument(help="Baseline (A).", show_default=False)],
    dir_b: Annotated[Path, typer.Argument(help="Compared (B).", show_default=False)],
) -> None:
    """Print B/A ratios per matched configuration and metric, with CIs."""
    from llenergymeasure.reporting.compare import compare as run_compare
    from llenergymeasure.reporting.compare import format_comparison

    _log_to_stderr()
    typer.echo(format_comparison(run_compare(dir_a, dir_b)))
