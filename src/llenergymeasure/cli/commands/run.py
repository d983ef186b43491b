"""``llem run``: run (or, with ``--dry-run``, plan) an experiment or a study.

The command parses options into config overrides, loads the configuration through the
library, and either prints the expanded plan (``--dry-run``: nothing heavy is imported,
nothing runs) or calls ``run_experiment`` / ``run_study`` with a progress display on stderr
and prints a summary on stdout.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from llenergymeasure.config.loader import LoadedConfig

HELP = (
    "Run an experiment or a study (a YAML with sweep:/experiments: is a study). "
    "Options override the file. --dry-run validates, expands the grid and estimates memory "
    "without running anything."
)

USAGE_FIX = (
    "give a config file or a model, e.g. `llem run examples/quickstart.yaml` or "
    "`llem run --model tiny-llama -n 20`"
)


class Order(str, Enum):
    """Run order of a study's experiments across cycles."""

    interleaved = "interleaved"
    shuffled = "shuffled"
    grouped = "grouped"


def run(
    config: Annotated[
        Path | None,
        typer.Argument(help="Experiment or study YAML.", show_default=False, metavar="CONFIG"),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model: HF id, path or catalogue name.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", "-b", help="pytorch | vllm | tensorrt.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="builtin, a file path or hf:<name>.")
    ] = None,
    n: Annotated[int | None, typer.Option("-n", "--n", help="Number of prompts measured.")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", help="Batch size (vllm: max_num_seqs, tensorrt: max_batch_size)."
        ),
    ] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="fp32 | fp16 | bf16 | int8 | fp8 | int4.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Results directory.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, expand and estimate; run nothing.")
    ] = False,
    cycles: Annotated[
        int | None, typer.Option("--cycles", help="Repeat every configuration this many times.")
    ] = None,
    order: Annotated[
        Order | None, typer.Option("--order", help="Run order across cycles.", case_sensitive=False)
    ] = None,
    no_gaps: Annotated[
        bool, typer.Option("--no-gaps", help="Skip thermal-recovery gaps between experiments.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Resume the latest interrupted run of this study.")
    ] = False,
    resume_dir: Annotated[
        Path | None, typer.Option("--resume-dir", help="Study directory to resume.")
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Resume and re-run failed experiments too (Slurm studies keep them otherwise).",
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and results.")
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, show_default=False, help="Debug logs and tracebacks."
        ),
    ] = 0,
) -> None:
    """Run (or plan, with --dry-run) the experiment or study described by CONFIG/options."""
    from llenergymeasure.cli._common import set_verbosity
    from llenergymeasure.logging import setup_logging

    verbosity = set_verbosity(quiet, verbose)
    setup_logging(verbosity)
    if config is None and model is None:
        raise typer.BadParameter(f"no experiment given -> {USAGE_FIX}", param_hint="CONFIG")
    overrides = base_overrides(
        model=model,
        backend=backend,
        dataset=dataset,
        n=n,
        precision=precision,
        cycles=cycles,
        order=order.value if order else None,
    )
    loaded = load(config, overrides, batch_size)
    for note in loaded.notes:
        typer.echo(f"note: {note}", err=True)
    if dry_run:
        typer.echo(dry_run_text(loaded))
        return
    as_study = loaded.kind == "study" or cycles is not None or order is not None
    if (resume or resume_dir or retry_failed) and not as_study:
        hint = "--retry-failed" if retry_failed and not (resume or resume_dir) else "--resume"
        raise typer.BadParameter(f"{hint} applies to studies only", param_hint=hint)
    rerun = rerun_args(
        config,
        {"-m": model, "-b": backend, "-d": dataset, "-n": n, "--batch-size": batch_size},
        {"--precision": precision, "--cycles": cycles, "--order": order.value if order else None},
        no_gaps,
    )
    request = RunRequest(loaded, overrides, output, quiet, rerun)
    if as_study:
        _run_study(request, no_gaps, resume or retry_failed, resume_dir, retry_failed=retry_failed)
    else:
        _run_experiment(request)


@dataclass(frozen=True)
class RunRequest:
    """What the library is asked to run: the configuration, loaded once (with the option
    overrides, kept for display), where results go and how much to show."""

    loaded: LoadedConfig
    overrides: dict[str, Any]
    output: Path | None
    quiet: bool
    rerun: tuple[str, ...] = ()  # `llem run` arguments that give the same design again


def rerun_args(config: Path | None, *option_groups: dict[str, Any] | bool) -> tuple[str, ...]:
    """The ``llem run`` arguments that load this configuration again (for resume hints)."""
    args = [str(config)] if config is not None else []
    for group in option_groups:
        if isinstance(group, bool):
            args += ["--no-gaps"] if group else []
            continue
        for flag, value in group.items():
            if value is not None:
                args += [flag, str(value)]
    return tuple(args)


def resume_command(request: RunRequest, study_dir: Path | str) -> str:
    """``llem run <file> [options] --resume-dir <dir>``, quoted for a POSIX shell."""
    import shlex

    words = ["llem", "run", *request.rerun, "--resume-dir", str(study_dir)]
    return " ".join(shlex.quote(w) for w in words)


def base_overrides(**options: Any) -> dict[str, Any]:
    """Dotted config overrides for the options that were given (None = not given)."""
    mapping = {"cycles": "execution.n_cycles", "order": "execution.order"}
    return {mapping.get(k, k): v for k, v in options.items() if v is not None}


def load(
    config: Path | None, overrides: dict[str, Any], batch_size: int | None = None
) -> LoadedConfig:
    """Load and validate the configuration once (raises ConfigError with every problem)."""
    from llenergymeasure.config.loader import load_config

    return load_config(config, overrides, batch_size=batch_size)


def dry_run_text(loaded: LoadedConfig) -> str:
    """The plan of a dry run: experiments in run order with memory estimates, skipped points."""
    from llenergymeasure.cli.display import format_dry_run
    from llenergymeasure.core.backends.registry import is_backend_available
    from llenergymeasure.core.memory import estimate_memory
    from llenergymeasure.study.grid import plan_loaded

    plan = plan_loaded(loaded)
    cache: dict[str, Any] = {}

    def estimate(cfg: Any) -> Any:
        key = cfg.model_dump_json()
        if key not in cache:
            cache[key] = estimate_memory(cfg)
        return cache[key]

    text = format_dry_run(plan, estimate, is_backend_available)  # find_spec: no import
    notes = [f"note: {n}" for n in dict.fromkeys(plan.notes) if n not in loaded.notes]
    parts = [text, *runner_lines(plan, loaded), *notes]
    if (
        plan.study is not None
        and plan.study.execution.executor == "slurm"
        and loaded.kind == "study"
    ):
        from llenergymeasure.cli.display import format_slurm_dry_run

        parts.append(format_slurm_dry_run(plan))
    return "\n".join(parts)


def runner_lines(plan: Any, loaded: LoadedConfig) -> list[str]:
    """Where the plan's backends run, when any of them is not local (Docker is not asked:
    a real run checks it, the NVIDIA runtime and the images before it starts)."""
    uc = loaded.user_config
    backends = dict.fromkeys(p.config.backend for p in plan.experiments)
    specs = {b: uc.runner_for(b) if uc is not None else "local" for b in backends}
    if all(spec == "local" for spec in specs.values()):
        return []
    shown = ", ".join(f"{b} -> {spec}" for b, spec in specs.items())
    return [f"Runners: {shown} (one container per experiment; checked when the study starts)"]


def _run_experiment(request: RunRequest) -> None:
    """Run one experiment in this process and print its summary."""
    from llenergymeasure._api import run_loaded_experiment
    from llenergymeasure.cli.display import format_experiment
    from llenergymeasure.cli.progress_bars import CliProgress
    from llenergymeasure.clock import process_started_monotonic_s
    from llenergymeasure.exceptions import ResultNotSavedError

    progress = CliProgress(quiet=request.quiet)
    try:
        result = run_loaded_experiment(
            request.loaded,
            results_dir=request.output,
            progress=progress,
            process_started_s=process_started_monotonic_s(),  # llem's own start: imports too
        )
    except ResultNotSavedError as e:  # measured, not saved: the summary is all there is
        progress.close()
        typer.echo(format_experiment(e.result, "NOT SAVED (the write failed: see the error)"))
        raise
    finally:
        progress.close()
    typer.echo(format_experiment(result, result.run_dir))
    if result.failed:
        raise typer.Exit(1)


def _run_study(
    request: RunRequest,
    no_gaps: bool,
    resume: bool,
    resume_dir: Path | None,
    retry_failed: bool = False,
) -> None:
    """Run a study (each experiment in its own subprocess) and print its summary table."""
    from llenergymeasure._api import run_loaded_study
    from llenergymeasure.cli.progress_bars import CliProgress
    from llenergymeasure.study.signals import Interrupted
    from llenergymeasure.study.summary import format_study_table, format_study_timing

    progress = CliProgress(quiet=request.quiet)
    try:
        result = run_loaded_study(
            request.loaded,
            results_dir=request.output,
            progress=progress,
            resume=resume or resume_dir is not None,
            resume_dir=resume_dir,
            no_gaps=no_gaps,
            retry_failed=retry_failed,
        )
    except Interrupted as stop:  # a signal: show what finished, say how to go on
        progress.close()
        if stop.result is not None:
            typer.echo(format_study_table(stop.result))
            typer.echo(format_study_timing(stop.result))
        if stop.study_dir is not None:
            typer.echo(f"results: {stop.study_dir}")
            stop.resume_hint = resume_command(request, stop.study_dir)
        raise
    finally:
        progress.close()
    typer.echo(format_study_table(result))
    typer.echo(format_study_timing(result))
    typer.echo(f"results: {result.study_dir}")
    report = Path(result.study_dir) / "report.html"  # written at the end (report extra)
    if report.is_file():
        typer.echo(f"report: {report}")
    raise typer.Exit(study_exit_code(result.status, result.counts.failed))


def study_exit_code(status: str, n_failed: int) -> int:
    """0 when every experiment completed, 130 when interrupted (a signal raises instead:
    ``128 + signum``, see cli/_common.py), 1 otherwise."""
    if status == "interrupted":
        return 130
    return 0 if status == "completed" and n_failed == 0 else 1
