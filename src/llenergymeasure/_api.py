"""Implementation of the public API: ``run_experiment`` and ``run_study``.

Both go through one internal ``_run(StudyConfig) -> StudyResult``. A single experiment runs
in this process (no subprocess: the process starts with clean device state); a study is
handed to ``llenergymeasure.study.runner.StudyRunner``, which runs each experiment in a fresh
``spawn`` subprocess. Imports are lazy so that ``import llenergymeasure`` stays light.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.exceptions import ConfigError

if TYPE_CHECKING:
    from llenergymeasure.config.loader import LoadedConfig
    from llenergymeasure.config.models import ExperimentConfig, StudyConfig
    from llenergymeasure.config.user_config import UserConfig
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.domain.study import StudyResult
    from llenergymeasure.progress import Progress


def run_experiment(
    config: str | Path | ExperimentConfig | None = None,
    *,
    results_dir: str | Path | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> ExperimentResult:
    """Run one experiment and return its result (also written to ``results_dir``).

    ``config`` is a YAML path, an ``ExperimentConfig``, or None with keywords
    (``run_experiment(model="tiny-llama", n=20)``); keywords override the config (dotted
    keys allowed: ``**{"pytorch.batch_size": 8}``). A study file is refused: use
    ``run_study``. Raises ConfigError (bad input), PreflightError, or ExperimentError.
    """
    return run_loaded_experiment(
        _load(config, overrides), results_dir=results_dir, progress=progress
    )


def run_loaded_experiment(
    loaded: LoadedConfig,
    *,
    results_dir: str | Path | None = None,
    progress: Progress | None = None,
    process_started_s: float | None = None,
) -> ExperimentResult:
    """:func:`run_experiment` for a configuration the caller has already loaded (the CLI
    loads once, prints its notes, then runs it). ``process_started_s``: when this process
    started (``time.monotonic``; the CLI's own start), to time what came before the first
    stage as the phase ``start``."""
    if loaded.kind != "experiment" or loaded.experiment is None:
        where = loaded.source_path or "this configuration"
        raise ConfigError(
            f"{where} is a study (sweep:/experiments:) -> use run_study() or `llem run`"
        )
    study = _run(
        loaded.study,
        results_dir=results_dir,
        progress=progress,
        user_config=loaded.user_config,
        experiment=loaded.experiment,
        provenance=loaded.provenance,
        process_started_s=process_started_s,
    )
    return study.experiments[0]


def run_study(
    config: str | Path | StudyConfig | ExperimentConfig | None = None,
    *,
    results_dir: str | Path | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    resume_dir: str | Path | None = None,
    no_gaps: bool = False,
    retry_failed: bool = False,
    **overrides: Any,
) -> StudyResult:
    """Run a study (a sweep over repeated cycles), each experiment in its own subprocess.

    ``resume`` continues the latest interrupted run of this study (``resume_dir``: a given
    study directory), skipping completed (config, cycle) pairs; ``no_gaps`` skips the
    thermal-recovery gaps; ``retry_failed`` (implies ``resume``) re-runs failed entries of a
    Slurm study (a local resume re-runs them anyway). An experiment file (or None with keywords) runs as a
    one-experiment study.
    """
    return run_loaded_study(
        _load(config, overrides),
        results_dir=results_dir,
        progress=progress,
        resume=resume,
        resume_dir=resume_dir,
        no_gaps=no_gaps,
        retry_failed=retry_failed,
    )


def run_loaded_study(
    loaded: LoadedConfig,
    *,
    results_dir: str | Path | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    resume_dir: str | Path | None = None,
    no_gaps: bool = False,
    retry_failed: bool = False,
) -> StudyResult:
    """:func:`run_study` for a configuration the caller has already loaded."""
    return _run(
        loaded.study,
        results_dir=results_dir,
        progress=progress,
        user_config=loaded.user_config,
        resume=resume or retry_failed,
        resume_dir=resume_dir,
        no_gaps=no_gaps,
        retry_failed=retry_failed,
        cli_overrides=loaded.cli_overrides,
    )


def _load(config: Any, overrides: dict[str, Any]) -> LoadedConfig:
    """A LoadedConfig from a path, a config object, or keywords alone."""
    from llenergymeasure.config.loader import LoadedConfig, load_config
    from llenergymeasure.config.models import ExperimentConfig, StudyConfig
    from llenergymeasure.config.user_config import load_user_config

    if config is None or isinstance(config, (str, Path)):
        return load_config(config, overrides or None)
    if isinstance(config, ExperimentConfig):
        given = config.model_dump(mode="json", exclude_unset=True)
        return load_config(None, {**given, **overrides})
    if isinstance(config, StudyConfig):
        if overrides:
            raise ConfigError("keyword overrides with a StudyConfig object: put them in base:")
        return LoadedConfig(
            kind="study",
            experiment=None,
            study=config,
            provenance={},
            source_path=None,
            user_config=load_user_config(),
        )
    raise ConfigError(
        f"config: expected a YAML path, ExperimentConfig or StudyConfig, got {type(config).__name__}"
    )


def _run(
    study: StudyConfig,
    *,
    results_dir: str | Path | None = None,
    progress: Progress | None = None,
    user_config: UserConfig | None = None,
    experiment: ExperimentConfig | None = None,
    provenance: dict[str, str] | None = None,
    resume: bool = False,
    resume_dir: str | Path | None = None,
    no_gaps: bool = False,
    cli_overrides: dict[str, Any] | None = None,
    process_started_s: float | None = None,
    retry_failed: bool = False,
) -> StudyResult:
    """The one internal entry point: a single experiment in-process, or a study runner."""
    from llenergymeasure.config.user_config import load_user_config

    uc = user_config if user_config is not None else load_user_config()
    out = Path(results_dir) if results_dir is not None else Path(uc.output.results_dir)
    check_results_dir(out)
    if experiment is not None:
        return _run_single(
            study, experiment, provenance or {}, out, progress, uc, process_started_s
        )
    from llenergymeasure.logging import current_verbosity
    from llenergymeasure.study.runner import StudyRunner

    runner = StudyRunner(
        study,
        verbosity=current_verbosity(),  # children log at the CLI's level (None: library use)
        user_config=uc,
        results_dir=out,
        progress=progress,
        resume=resume,
        resume_dir=Path(resume_dir) if resume_dir is not None else None,
        no_gaps=no_gaps,
        cli_overrides=cli_overrides,
        retry_failed=retry_failed,
    )
    result = runner.run()
    from llenergymeasure.reporting.html import write_study_report

    write_study_report(Path(result.study_dir), progress)  # never raises
    return result


def check_results_dir(path: Path) -> None:
    """The results directory is a writable directory, or can be made in one; else a
    ConfigError (exit 2) naming it and the fix, before anything runs."""
    import os

    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    fix = "give a writable directory with -o DIR (or set output.results_dir)"
    if probe.exists() and not probe.is_dir():
        where = "" if probe == Path(path) else f" (so {path} cannot be created)"
        raise ConfigError(f"output: {probe} is a file, not a directory{where} -> {fix}")
    if not os.access(probe, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        why = "a read-only file system" if read_only else "permission denied"
        raise ConfigError(f"output: {probe} is not writable ({why}) -> {fix}")


def _run_single(
    study: StudyConfig,
    experiment: ExperimentConfig,
    provenance: dict[str, str],
    results_dir: Path,
    progress: Progress | None,
    user_config: UserConfig,
    process_started_s: float | None = None,
) -> StudyResult:
    """Run one experiment in this process and wrap it as a one-experiment StudyResult.

    A backend whose runner is ``docker:<image>`` (user config ``runners:``) runs in a
    container of that image instead (`_run_single_in_runner`).
    """
    from llenergymeasure.orchestration.orchestrator import ExperimentOrchestrator
    from llenergymeasure.study.signals import StopSignals

    if user_config.runner_for(experiment.backend) != "local":
        return _run_single_in_runner(
            study, experiment, provenance, results_dir, progress, user_config
        )
    t0 = time.perf_counter()
    orchestrator = ExperimentOrchestrator(
        experiment,
        provenance,
        results_dir=results_dir,
        progress=progress,
        user_config=user_config,
        process_started_s=process_started_s,
    )
    with StopSignals():  # SIGTERM/SIGHUP stop it like Ctrl-C (failed result, exit 128+sig)
        result = orchestrator.run()
    assert orchestrator.run_dir is not None
    return wrap_single_result(study, result, orchestrator.run_dir, time.perf_counter() - t0)


def _run_single_in_runner(
    study: StudyConfig,
    experiment: ExperimentConfig,
    provenance: dict[str, str],
    results_dir: Path,
    progress: Progress | None,
    user_config: UserConfig,
) -> StudyResult:
    """One experiment through its backend's runner (a container), within the study
    execution's ``experiment_timeout_seconds``; ExperimentError naming the reason and the
    container log when it fails."""
    from llenergymeasure.exceptions import ExperimentError
    from llenergymeasure.logging import current_verbosity
    from llenergymeasure.results.filenames import default_experiment_name
    from llenergymeasure.results.persistence import new_run_dir, read_result
    from llenergymeasure.study.exchange import LOG_FILENAME, exchange_dir
    from llenergymeasure.study.runners import RunnerSet
    from llenergymeasure.study.worker import (
        ProgressMessage,
        StageMessage,
        WorkerRequest,
        experiment_worker,
    )

    shown = progress

    def forward(message: ProgressMessage) -> None:
        if shown is None:
            return
        if isinstance(message, StageMessage):
            shown.stage(message.name)
        else:
            shown.prompts_done(message.done, message.total)

    runners = RunnerSet(user_config, experiment_worker)
    runners.preflight([experiment])
    name = experiment.name or default_experiment_name(experiment.model, experiment.backend)
    base = results_dir / experiment.output_dir if experiment.output_dir else results_dir
    run_dir = new_run_dir(base, name)
    request = WorkerRequest(
        config=experiment,
        provenance=provenance,
        results_dir=results_dir,
        label=name,
        verbosity=current_verbosity(),
        run_dir=run_dir,
    )
    runner = runners.for_config(experiment)
    t0 = time.perf_counter()
    outcome = runner.run(request, study.execution.experiment_timeout_seconds, forward)
    if not outcome.ok or outcome.result_path is None:
        raise ExperimentError(
            f"experiment {name!r} failed in {runner.spec}: {outcome.reason} "
            f"(details: {exchange_dir(run_dir) / LOG_FILENAME})"
        )
    result = read_result(outcome.result_path)
    return wrap_single_result(study, result, run_dir, time.perf_counter() - t0)


def wrap_single_result(
    study: StudyConfig, result: ExperimentResult, run_dir: Path, wall_s: float
) -> StudyResult:
    """A completed one-experiment, one-cycle StudyResult around ``result``."""
    from llenergymeasure.config.hashing import study_design_hash
    from llenergymeasure.domain.study import (
        STUDY_METRICS,
        ConfigSummary,
        ExperimentTiming,
        MetricStats,
        StudyCounts,
        StudyResult,
        StudyTiming,
    )
    from llenergymeasure.study.stats import summarise_cycles
    from llenergymeasure.study.summary import energy_basis, flag_counts

    metrics = {}
    for prop, (_heading, unit) in STUDY_METRICS.items():
        stats = summarise_cycles([getattr(result, prop)])
        reason = None if stats is not None else "not measured in this run"
        metrics[prop] = MetricStats(unit=unit, stats=stats, not_measured_reason=reason)
    window = result.measurement_window_s or 0.0
    summary = ConfigSummary(
        config_hash=result.config_hash,
        label=result.name,
        key_fields={k: result.config.get(k) for k in ("model", "backend", "precision")},
        cycles_planned=1,
        cycles_completed=1,
        result_paths=["result.json"],
        metrics=metrics,
        best=False,
        energy_basis=energy_basis([result]),
        flagged=1 if flag_counts([result]) else 0,
        flag_codes=flag_counts([result]),
    )
    timing = ExperimentTiming(
        position=0,
        cycle=1,
        label=result.name,
        status="completed",
        subprocess_wall_s=wall_s,
        measurement_s=result.measurement_window_s,
        outside_measurement_s=wall_s - window,
    )
    return StudyResult(
        study_name=result.name,
        study_dir=str(run_dir),
        status="completed",
        design_hash=study_design_hash(study),
        order=study.execution.order,
        shuffle_seed=study.execution.shuffle_seed,
        n_cycles=1,
        counts=StudyCounts(planned=1, completed=1, failed=0, skipped=0, not_run=0),
        configs=[summary],
        best_note="a single experiment: nothing to compare",
        timing=StudyTiming(
            wall_time_s=wall_s,
            experiments_wall_s=wall_s,
            measurement_s=window,
            outside_measurement_s=wall_s - window,
            gap_s=0.0,
            experiments=[timing],
        ),
        experiments=[result],
    )
