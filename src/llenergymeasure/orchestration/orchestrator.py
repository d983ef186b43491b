"""ExperimentOrchestrator: the life of one experiment (INTERNAL, no SemVer guarantee).

Sequence (docs/measurement.md §1, docs/ARCHITECTURE.md)::

    pre-flight -> environment snapshot -> load prompts -> backend.initialize (model+tokenizer)
    -> backend.tokenize -> energy session start + idle baseline (model resident, cached)
    -> warm-up -> synchronize | begin window | run_inference | synchronize | end window
    -> metrics, quality flags, CO2 -> backend.cleanup -> result.json (atomic) in a new run
    directory

A backend asking for ``launch_mode: processes`` (pytorch with ``num_processes`` set) runs in
worker processes instead (``launcher.py``): this process owns the energy session, writes
``raw/launch.json``, and ``result.json`` is the late aggregation of ``raw/``.

Only generation happens inside the window; the device is synchronised at both edges.
A failure marks the state DONE with ``failed=True``, writes the result with the traceback,
and is re-raised as ``ExperimentError`` (configuration/pre-flight errors keep their type).
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llenergymeasure._version import __version__
from llenergymeasure.clock import utc_now
from llenergymeasure.config.hashing import config_hash
from llenergymeasure.domain.energy import QualityFlag
from llenergymeasure.domain.results import ExperimentResult, RunnerContext, core_fields
from llenergymeasure.domain.timing import CLEANUP, ENERGY_START, ENGINE_START, IMPORTS, START
from llenergymeasure.exceptions import (
    BackendNotInstalledError,
    ConfigError,
    ExperimentError,
    MeterError,
    PreflightError,
    ResultNotSavedError,
    WriteError,
)
from llenergymeasure.orchestration.assemble import (
    PhaseTimer,
    RunRecord,
    Window,
    backend_flags,
    memory_metrics,
    raw_result,
)
from llenergymeasure.orchestration.preflight import run_preflight
from llenergymeasure.orchestration.warmup import run_warmup
from llenergymeasure.progress import SAVING_STAGE, NullProgress, Progress
from llenergymeasure.redaction import redact, register_secrets, scrub, secret_values
from llenergymeasure.results.aggregation import aggregate_process_results, build_run_result
from llenergymeasure.results.filenames import TIMESERIES_FILENAME, default_experiment_name
from llenergymeasure.results.persistence import new_run_dir, write_launch_record, write_result
from llenergymeasure.state.machine import ExperimentStateMachine

if TYPE_CHECKING:
    from llenergymeasure.catalogue.architectures import ArchitectureSpec
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.config.user_config import UserConfig
    from llenergymeasure.core.backends.protocol import (
        InferenceBackend,
        InferenceOutput,
        PreparedBatches,
        RuntimeCapabilities,
    )
    from llenergymeasure.core.energy.session import EnergySession
    from llenergymeasure.datasets.types import PromptList
    from llenergymeasure.domain.energy import EnergyReport
    from llenergymeasure.domain.environment import EnvironmentSnapshot, Placement
    from llenergymeasure.orchestration.launcher import WorkerTarget

#: Builds the energy session: (config, gpu indices or None for all visible, timeline path).
EnergySessionFactory = Callable[
    ["ExperimentConfig", "list[int] | None", "Path | None"], "EnergySession"
]
#: Phases summed into ``setup_s`` (imports and the energy start were inside prompts/load
#: and baseline before they were timed apart: kept in, so setup_s means what it did).
SETUP_PHASES = (
    IMPORTS,
    "prompts",
    "load",
    ENGINE_START,
    "tokenise",
    ENERGY_START,
    "baseline",
    "warmup",
)


def default_energy_session(
    config: ExperimentConfig, gpu_indices: list[int] | None, timeline_path: Path | None
) -> EnergySession:
    """The energy layer's EnergySession for ``config`` (meter choice is the layer's job)."""
    from llenergymeasure.core.energy import EnergySession
    from llenergymeasure.core.energy.baseline import BaselineSettings
    from llenergymeasure.orchestration.phase_energy import phase_trace_settings

    b = config.baseline
    return EnergySession(
        energy_backend=config.energy_backend,
        gpu_indices=gpu_indices,
        sample_interval_ms=config.telemetry.interval_ms,
        timeline_path=timeline_path,
        baseline=BaselineSettings(
            enabled=b.enabled, duration_s=b.duration_s, cache_ttl_s=b.cache_ttl_s
        ),
        phase_trace=phase_trace_settings(config),  # the counter trace for energy by phase
        probe_in_background=True,  # the counter's update probe overlaps baseline / warm-up
    )


class ExperimentOrchestrator:
    """Runs one experiment in this process and writes its result."""

    def __init__(
        self,
        config: ExperimentConfig,
        provenance: dict[str, str] | None = None,
        *,
        results_dir: Path,
        progress: Progress | None = None,
        user_config: UserConfig | None = None,
        energy_session_factory: EnergySessionFactory | None = None,
        run_dir: Path | None = None,
        worker_target: WorkerTarget | None = None,
        runner: RunnerContext | None = None,
        recorded_config: ExperimentConfig | None = None,
        process_started_s: float | None = None,
        cache_dir: Path | None = None,
        process_exits: bool = False,
    ) -> None:
        """``run_dir``: an existing, empty directory made for this run by the caller (a
        study records it before the run starts); None: a new one under ``results_dir``.

        ``worker_target``: the entry of launched worker processes (tests inject faults).
        ``runner``: how this run was started (default: local). ``recorded_config``: the
        configuration to record as measured when ``config`` is a translation of it for
        this process (a container sees its routed GPUs renumbered from 0, so it runs with
        ``gpus`` rewritten while its result keeps the study's config and config hash).
        ``process_started_s``: when this process was started (``time.monotonic``; a study
        child: the parent's spawn call): the time up to the first stage is recorded as the
        phase ``start`` (interpreter start, imports). ``cache_dir``: a study's cache
        (``<study dir>/cache``): synthetic prompts are built once per study there and read
        back by its later experiments (`datasets.cache`); None builds them every time.
        ``process_exits``: this process ends once the result is written (a study child), so
        the backend's cleanup may leave what the exit frees to it
        (:meth:`InferenceBackend.cleanup`).
        """
        self.config = _with_user_defaults(config, user_config)
        shown = _with_user_defaults(recorded_config, user_config) if recorded_config else None
        self.provenance = dict(provenance or {})
        self.results_dir = Path(results_dir)
        self.progress: Progress = progress or NullProgress()
        self.user_config = user_config
        self.energy_session_factory = energy_session_factory or default_energy_session
        self.worker_target = worker_target  # launched runs: the workers' entry (tests inject)
        self.name = config.name or default_experiment_name(config.model, config.backend)
        self.state = ExperimentStateMachine()
        self.timer = PhaseTimer()
        self._process_started_s = process_started_s
        self._process_exits = process_exits
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.run_dir: Path | None = None
        self._given_run_dir = Path(run_dir) if run_dir is not None else None
        register_secrets(secret_values(self.config.model_dump(mode="json")))
        self.record = RunRecord(
            experiment_id=uuid.uuid4().hex[:12],
            name=self.name,
            config=redact((shown or self.config).model_dump(mode="json")),  # no secrets at rest
            config_hash=config_hash(shown or self.config),
            provenance=self.provenance,
            runner=runner or RunnerContext(),
            started_at=self.state.started_at,
            placement=_placement(),
            carbon_intensity_gco2_kwh=_pick(config.carbon_intensity_gco2_kwh, user_config, "ci"),
            datacenter_pue=_pick(config.datacenter_pue, user_config, "pue"),
        )

    @property
    def result_path(self) -> Path | None:
        """Where result.json was (or will be) written."""
        return self.run_dir / "result.json" if self.run_dir else None

    def run(self) -> ExperimentResult:
        """Run the experiment; raises PreflightError/ConfigError or ExperimentError."""
        self._stage("pre-flight", "preflight")
        try:
            report = run_preflight(self.config)
        except PreflightError:
            self.state.finish(failed=True, error="pre-flight failed")
            raise
        self.record.warnings += backend_flags(report.warnings, "preflight_note")
        base = (
            self.results_dir / self.config.output_dir
            if self.config.output_dir
            else self.results_dir
        )
        self.run_dir = self._given_run_dir or new_run_dir(base, self.name)
        try:
            result = self._measure(self.run_dir)
        except BaseException as e:
            self._write_failure(e)
            if isinstance(e, (ConfigError, BackendNotInstalledError, KeyboardInterrupt)):
                raise  # keep their exit codes (2, 2, 130)
            raise ExperimentError(f"experiment {self.name!r} failed: {e}") from e
        self._stage(SAVING_STAGE, "save")
        result = result.model_copy(update={"run_dir": str(self.run_dir)})
        try:
            write_result(result, self.run_dir)
        except WriteError as e:  # a full disk must not lose what was measured
            raise ResultNotSavedError(
                f"experiment {self.name!r} was measured but its result was not saved: {e}",
                result,
            ) from e
        self.timer.stop()
        return result

    # ---- the lifecycle ------------------------------------------------------------------
    def _measure(self, run_dir: Path) -> ExperimentResult:
        """Everything from the environment snapshot to the aggregated result."""
        from llenergymeasure.core.backends.registry import get_backend, preload_backend

        self._stage("environment snapshot", "environment")
        self.record.environment = _collect_environment(self.record.warnings)
        backend = get_backend(self.config.backend)
        _share_study_cache(backend, self.cache_dir)
        capabilities = backend.get_runtime_capabilities(self.config)
        self.record.warnings += backend_flags(backend.validate_config(self.config))
        if capabilities.launch_mode == "processes":
            return self._measure_launched(capabilities.n_processes, run_dir)
        _check_launch(capabilities)
        self._stage(f"importing {self.config.backend}", IMPORTS)
        arch = _arch(self.config.model)
        preload_backend(self.config.backend, arch.model_type if arch is not None else None)
        try:
            cfg = self.config
            prompts = self._load_prompts()
            self._stage("loading model", "load")
            backend.initialize(cfg, prompts)
            self._stage("tokenising", "tokenise")
            self.timer.carve(ENGINE_START, "load", _engine_start_s(backend))
            prepared = backend.tokenize(prompts)
            self._record_prepared(prepared)
            result, timeline = self._measure_window(backend, prepared, run_dir)
        finally:
            self.timer.start(CLEANUP)
            backend.cleanup(process_exits=self._process_exits)
        return self._finalise(result, timeline)

    def _measure_window(
        self, backend: InferenceBackend, prepared: PreparedBatches, run_dir: Path
    ) -> tuple[ExperimentResult, Path | None]:
        """Energy session + idle baseline, warm-up, then the synchronised window; the
        result before :meth:`_finalise`, and the telemetry timeline's path.

        The baseline is taken with the model resident but idle, *before* warm-up, so that
        warm-up directly precedes the window (no cool-down gap between them) and the
        telemetry timeline covers warm-up too.
        """
        self._stage("starting energy meters", ENERGY_START)
        timeline = run_dir / TIMESERIES_FILENAME if self._save_timeline() else None
        session = self._start_energy(self._gpu_indices(backend), timeline)
        try:
            self._stage("idle baseline", "baseline")
            if session is not None and self.config.baseline.enabled:
                session.measure_baseline()
            self._stage("warm-up", "warmup")
            self.record.warmup = run_warmup(
                lambda: backend.warmup_step(prepared), self.config.warmup
            )
            self._stage("measuring", "measure")
            self.progress.prompts_done(0, prepared.n_requests)
            window = Window()
            backend.synchronize()
            self.state.start_measuring()
            if session is not None:
                session.begin_window("measure")
            window.begin()
            output = backend.run_inference(prepared)
            backend.synchronize()
            window.end()
            if session is not None:
                self.record.energy = session.end_window("measure")
        finally:
            if session is not None:
                self._stop_energy(session)
        output.finalize()  # what the backend derives from its stamps, after the window
        self.progress.prompts_done(output.n_requests, prepared.n_requests)
        self._stage("computing metrics", "metrics")
        self.record.energy = _with_phase_energy(self.record.energy, session, output)
        self.record.warnings += backend_flags(output.warnings)
        arch = _arch(self.config.model)
        memory = memory_metrics(self.config, arch, prepared, output, self.record.energy)
        raw = raw_result(self.record, output, window, memory, utc_now())
        result = aggregate_process_results([raw])
        self.state.finish()
        return result, timeline

    def _load_prompts(self) -> PromptList:
        """The experiment's prompts, over-long texts cut before tokenising (bounded work;
        the backends count them truncated), with the dataset's summary and notes recorded."""
        from llenergymeasure.datasets.loader import cap_prompt_chars, load_prompts

        self._stage("loading prompts", "prompts")
        cfg = self.config
        prompts = load_prompts(cfg.dataset, cfg.n, cfg.random_seed, cache_dir=self.cache_dir)
        prompts = cap_prompt_chars(prompts, cfg.max_input_tokens)
        self.record.dataset_info = prompts.summary()
        self.record.warnings += backend_flags(prompts.notes, "dataset_note")
        return prompts

    def _measure_launched(self, n_processes: int, run_dir: Path) -> ExperimentResult:
        """``launch_mode: processes``: workers measure, this process owns the energy session;
        ``raw/launch.json`` is written, then the late aggregation builds the result."""
        from llenergymeasure.core.energy.selection import probe_gpus
        from llenergymeasure.orchestration.launcher import Launcher, plan_processes

        cfg = self.config
        prompts = self._load_prompts()
        visible, _ = probe_gpus(None) if cfg.device != "cpu" else ([], None)
        plans = plan_processes(cfg, n_processes, visible, os.environ.get("CUDA_VISIBLE_DEVICES"))
        timeline = run_dir / TIMESERIES_FILENAME if self._save_timeline() else None
        outcome = Launcher(
            cfg,
            self.record,
            run_dir,
            plans,
            prompts,
            start_energy=lambda gpus: self._start_energy(gpus, timeline),
            stage=self._stage,
            on_measuring=self.state.start_measuring,
            progress=self.progress,
            worker_target=self.worker_target,
        ).run()
        self.state.finish()
        self.timer.stop()
        record = outcome.launch_record(
            self.record,
            self.state,
            durations_s=dict(self.timer.durations_s),
            setup_s=self.timer.total_s(*SETUP_PHASES),
            timeline=timeline,
        )
        write_launch_record(record, run_dir)
        return build_run_result(run_dir)

    def _finalise(self, result: ExperimentResult, timeline: Path | None) -> ExperimentResult:
        """Add what only the orchestrator knows: timings, states, timeline path."""
        self.timer.stop()
        durations = dict(self.timer.durations_s)
        return result.model_copy(
            update={
                "llem_version": __version__,
                "state": self.state.state,
                "state_transitions": list(self.state.transitions),
                "ended_at": self.state.transitions[-1].at,
                "timeseries_path": timeline.name if timeline and timeline.exists() else None,
                "setup_s": self.timer.total_s(*SETUP_PHASES),
                "phase_durations_s": durations,
            }
        )

    # ---- helpers ------------------------------------------------------------------------
    def _record_prepared(self, prepared: PreparedBatches) -> None:
        """What tokenisation reported (notes, truncated prompts), kept even if the run fails."""
        self.record.warnings += backend_flags(prepared.notes)
        if prepared.truncated_requests:
            self.record.warnings.append(_truncation_flag(prepared.truncated_requests))

    def _stage(self, label: str, phase: str) -> None:
        """Report a stage to the progress callback and time it as ``phase`` (the first
        stage also records how long the process took to get here, when known)."""
        if self._process_started_s is not None:
            self.timer.add(START, time.monotonic() - self._process_started_s)
            self._process_started_s = None
        self.timer.start(phase)
        self.progress.stage(label)

    def _save_timeline(self) -> bool:
        telemetry = self.config.telemetry
        return telemetry.enabled and telemetry.save_timeseries

    def _gpu_indices(self, backend: InferenceBackend) -> list[int] | None:
        """GPUs the model lives on; [] on CPU (GPU energy of an unused GPU is not this run's)."""
        indices = backend.device_indices()
        if indices:
            return indices
        return [] if self.config.device == "cpu" or not self.config.gpus else self.config.gpus

    def _start_energy(
        self, gpu_indices: list[int] | None, timeline: Path | None
    ) -> EnergySession | None:
        """Start the energy session; None (with the reason recorded) when it cannot start."""
        try:
            session = self.energy_session_factory(self.config, gpu_indices, timeline)
            session.start()
            return session
        except (MeterError, ImportError, OSError) as e:
            if self.config.energy_backend != "auto":
                raise  # an explicitly requested meter that cannot measure is an error
            self.record.energy_not_measured_reason = f"energy session could not start: {e}"
            return None

    def _stop_energy(self, session: EnergySession) -> None:
        """Stop the session; a timeline that cannot be written (a full disk) is flagged,
        not fatal: the energy figures are already in the report."""
        try:
            session.stop()
        except OSError as e:
            self.record.warnings.append(
                QualityFlag(code="timeseries_not_saved", message=f"timeline not saved: {e}")
            )

    def _write_failure(self, error: BaseException) -> None:
        """Mark DONE/failed and write a result carrying the traceback (never raises)."""
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        text = scrub(text)
        if self.state.state.value != "done":
            self.state.finish(failed=True, error=text)
        self.timer.stop()
        failed = ExperimentResult(
            **core_fields(self.record),
            llem_version=__version__,
            ended_at=self.state.transitions[-1].at,
            state=self.state.state,
            state_transitions=list(self.state.transitions),
            failed=True,
            error=text,
            error_type=type(error).__name__,
            phase_durations_s=dict(self.timer.durations_s),
            run_dir=str(self.run_dir) if self.run_dir is not None else None,
        )
        try:
            if self.run_dir is not None:
                write_result(failed, self.run_dir)
        except OSError as e:
            self.progress.message(f"could not write the failed result: {e}")


def run_single_experiment(
    config: ExperimentConfig,
    provenance: dict[str, str] | None,
    results_dir: Path,
    progress: Progress | None = None,
    run_dir: Path | None = None,
    process_started_s: float | None = None,
    cache_dir: Path | None = None,
    process_exits: bool = False,
) -> tuple[ExperimentResult, Path]:
    """Run one experiment in this process; returns (result, path of its result.json).

    Used by the study runner inside its per-experiment subprocess (``run_dir``: the
    directory the runner made for this attempt; ``process_started_s``: when it asked for
    the process, on the ``time.monotonic`` clock; ``cache_dir``: the study's cache;
    ``process_exits``: the process ends after this experiment).
    """
    from llenergymeasure.config.user_config import load_user_config

    orchestrator = ExperimentOrchestrator(
        config,
        provenance,
        results_dir=results_dir,
        progress=progress,
        user_config=load_user_config(),
        run_dir=run_dir,
        process_started_s=process_started_s,
        cache_dir=cache_dir,
        process_exits=process_exits,
    )
    result = orchestrator.run()
    assert orchestrator.result_path is not None
    return result, orchestrator.result_path


# ---- module helpers ---------------------------------------------------------------------
def _with_user_defaults(
    config: ExperimentConfig, user_config: UserConfig | None
) -> ExperimentConfig:
    """energy_backend from the user config when the experiment did not choose one.

    An explicit ``energy_backend: auto`` in the experiment is a choice and wins.
    """
    chosen = user_config.measurement.energy_backend if user_config is not None else None
    explicit = "energy_backend" in config.model_fields_set
    if chosen is None or explicit or config.energy_backend != "auto":
        return config
    return config.model_copy(update={"energy_backend": chosen})


def _pick(value: float | None, user_config: UserConfig | None, which: str) -> float | None:
    """Per-run value, else the user config's carbon intensity ("ci") or PUE ("pue")."""
    if value is not None or user_config is None:
        return value
    m = user_config.measurement
    return m.carbon_intensity_gco2_kwh if which == "ci" else m.datacenter_pue


def _placement() -> Placement | None:
    """Host, CUDA_VISIBLE_DEVICES and Slurm job of this process (None if unreadable)."""
    from llenergymeasure.core.environment import collect_placement

    try:
        return collect_placement()
    except (OSError, ValueError):
        return None


def _collect_environment(warnings: list[QualityFlag]) -> EnvironmentSnapshot | None:
    """The environment snapshot, or None with a flag when it cannot be collected."""
    try:
        from llenergymeasure.core.environment import collect_environment

        return collect_environment()
    except Exception as e:  # the snapshot is descriptive: never fail a run over it
        warnings.append(
            QualityFlag(code="environment_incomplete", message=f"environment not collected: {e}")
        )
        return None


def _arch(model: str) -> ArchitectureSpec | None:
    """Shapes for FLOPs/KV estimates, or None when unknown (e.g. an uncached Hub id)."""
    from llenergymeasure.results.aggregation import resolve_arch_quietly

    return resolve_arch_quietly(model)


def _share_study_cache(backend: InferenceBackend, cache_dir: Path | None) -> None:
    """Hand a study's cache directory to a backend that keeps something there (an engine's
    model directory and compile cache), before it imports its framework."""
    use = getattr(backend, "use_study_cache", None)
    if cache_dir is not None and callable(use):
        use(cache_dir)


def _engine_start_s(backend: InferenceBackend) -> float:
    """How long an engine backend's start took inside ``initialize`` (vLLM: ``LLM(...)``);
    0 for a backend without an engine."""
    value = getattr(backend, "engine_start_s", None)
    return float(value) if isinstance(value, (int, float)) else 0.0


def _with_phase_energy(
    energy: EnergyReport | None, session: EnergySession | None, output: InferenceOutput
) -> EnergyReport | None:
    """Energy by phase and per request from the window's counter trace (after the window)."""
    from llenergymeasure.orchestration.phase_energy import attach_phase_energy

    return attach_phase_energy(energy, session, output)


def _check_launch(capabilities: RuntimeCapabilities) -> None:
    """Launch modes other than ``processes`` (the launcher) run in this process: ``direct``."""
    if capabilities.launch_mode != "direct":
        raise ExperimentError(
            f"the backend asks for launch mode {capabilities.launch_mode!r}, which this "
            "orchestrator cannot start"
        )


def _truncation_flag(count: int) -> QualityFlag:
    """Prompts cut to max_input_tokens: the measured workload is shorter than the dataset."""
    return QualityFlag(
        code="prompts_truncated",
        message=f"{count} prompt(s) were truncated to max_input_tokens",
    )
