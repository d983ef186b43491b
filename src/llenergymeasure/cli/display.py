"""Plain-text rendering for the CLI: results go to stdout, progress and errors to stderr.

Only formatting lives here; no measurement, no persistence. Every function takes library
objects (results, study plans) and returns text, so it is testable without a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llenergymeasure.domain.metrics import LatencyStats
    from llenergymeasure.domain.results import ExperimentResult

MISSING = "-"


def fmt(value: float | int | None, digits: int = 2, unit: str = "") -> str:
    """A number with ``digits`` decimals and an optional unit; ``-`` for None."""
    if value is None:
        return MISSING
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def fmt_si(value: float | None, unit: str) -> str:
    """Large quantities with an SI prefix (``1.23 TFLOP``); ``-`` for None."""
    if value is None:
        return MISSING
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A left-aligned plain-text table with a dashed rule under the header."""
    body = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), rule, *(line(r) for r in body)])


def render_pairs(pairs: Iterable[tuple[str, str]], indent: str = "  ") -> str:
    """``label  value`` lines with the values aligned."""
    items = list(pairs)
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{indent}{k.ljust(width)}  {v}" for k, v in items)


# ---- one experiment ------------------------------------------------------------------------


def latency_text(stats: LatencyStats | None) -> str:
    """``mean / p50 / p99`` in ms, or ``not measured``."""
    if stats is None:
        return "not measured"
    return f"{stats.mean_ms:.2f} / {stats.p50_ms:.2f} / {stats.p99_ms:.2f} ms (mean/p50/p99)"


def energy_text(result: ExperimentResult) -> str:
    """Measured energy with how it was measured, e.g. ``123.40 J (counter, gpu, nvml)``."""
    energy = result.energy
    if energy is None or result.energy_j is None:
        reason = result.energy_not_measured_reason or "; ".join(
            (energy.not_measured if energy else {}).values()
        )
        return f"not measured: {reason or 'no energy meter available'}"
    parts = [
        f"{m.energy_j:,.2f} J ({', '.join(dict.fromkeys([m.method, m.scope, m.meter]))})"
        for m in energy.measurements
    ]
    return "; ".join(parts) or f"{result.energy_j:,.2f} J"


def not_measured_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """One ``<scope> energy: not measured: <reason>`` line per scope a meter could not cover."""
    if result.energy is None or result.energy_j is None:
        return []
    return [
        (f"{scope} energy", f"not measured: {why}")
        for scope, why in result.energy.not_measured.items()
    ]


def _baseline_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """Idle power and energy above idle, when an idle baseline was measured."""
    baseline = result.energy.baseline if result.energy else None
    if baseline is None:
        return []
    notes = [
        *(["cached"] if baseline.baseline.cached else []),
        *(["unsettled"] if baseline.baseline.settled is False else []),
    ]
    suffix = f" ({', '.join(notes)})" if notes else ""
    return [
        ("idle power", f"{baseline.idle_power_w:.1f} W{suffix}"),
        ("energy above idle", f"{baseline.energy_above_idle_j:,.2f} J"),
    ]


def _config_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """Model, backend, precision, batch and prompt counts from the effective config."""
    cfg = result.config
    section = cfg.get(cfg.get("backend", "pytorch")) or {}
    batch = next(
        (
            section.get(k)
            for k in ("batch_size", "max_num_seqs", "max_batch_size")
            if section.get(k)
        ),
        None,
    )
    tokens = result.metrics.tokens if result.metrics else None
    return [
        ("model", f"{cfg.get('model')} ({cfg.get('weights') or 'default'} weights)"),
        ("backend", str(cfg.get("backend"))),
        ("precision", str(cfg.get("precision"))),
        ("batch size", str(batch) if batch else "backend default"),
        ("prompts", fmt(tokens.n_requests if tokens else cfg.get("n"))),
        (
            "input / output tokens",
            f"{fmt(tokens.input_tokens if tokens else None)} / "
            f"{fmt(tokens.output_tokens if tokens else None)}",
        ),
    ]


def _metric_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """Throughput, latency, FLOPs and memory lines."""
    m = result.metrics
    if m is None:
        return [("metrics", "not available (the run failed before its window closed)")]
    t, lat = m.throughput, m.latency
    mem = m.memory
    return [
        ("window", fmt(t.duration_s, 3, "s")),
        (
            "throughput",
            f"{t.output_tokens_per_s:,.2f} output tok/s, "
            f"{t.total_tokens_per_s:,.2f} total tok/s, {t.requests_per_s:,.3f} req/s",
        ),
        ("TTFT", latency_text(lat.ttft)),
        *([("queueing", latency_text(lat.queue))] if lat.queue else []),
        ("ITL", latency_text(lat.itl)),
        ("TPOT", latency_text(lat.tpot)),
        (
            "FLOPs",
            fmt_si(m.flops.total_flops, "FLOP") + f" ({m.flops.method})" if m.flops else MISSING,
        ),
        ("peak memory", _peak_memory_text(mem)),
        *([("KV cache", kv)] if (kv := _kv_cache_text(mem)) else []),
    ]


def _peak_memory_text(mem: Any) -> str:
    """Peak memory with what it counts, or why it was not measured."""
    if mem is not None and mem.peak_memory_mb is not None:
        device_level = (mem.peak_memory_method or "").startswith("device-level")
        return fmt(mem.peak_memory_mb, 1, "MB") + (" (device-level)" if device_level else "")
    why = getattr(mem, "peak_memory_not_measured", None)
    return f"not measured: {why or 'the backend reported no peak memory'}"


def _kv_cache_text(mem: Any) -> str | None:
    """The KV cache the engine reserved (vLLM), when known."""
    if mem is None or getattr(mem, "kv_cache_reserved_mb", None) is None:
        return None
    return fmt(mem.kv_cache_reserved_mb, 1, "MB") + " reserved by the engine"


def _energy_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """Energy, J/token, baseline split and CO2."""
    ratios = result.metrics.energy_ratios if result.metrics else None
    per_token = (
        f"{ratios.j_per_output_token:.4f} J/output token ({ratios.energy_basis})"
        if ratios and ratios.j_per_output_token is not None
        else MISSING
    )
    co2 = result.co2
    co2_text = (
        f"{co2.co2_g:.4f} g CO2e (estimate: {co2.carbon_intensity_gco2_kwh:g} g/kWh, PUE {co2.pue:g})"
        if co2
        else MISSING
    )
    return [
        ("energy", energy_text(result)),
        *not_measured_pairs(result),
        ("energy / token", per_token),
        *_baseline_pairs(result),
        ("CO2", co2_text),
    ]


def _phase_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """Energy by phase (J, mJ/token, CIs, method) and per request, or why not measured."""
    if result.energy is None or result.failed:
        return []
    from llenergymeasure.reporting.phases import summary_pairs

    return summary_pairs(result)


def _process_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """Multi-process runs: each process's devices and throughput (or why it is missing)."""
    if not result.process_breakdown:
        return []
    parts = []
    for p in result.process_breakdown:
        if p.status == "missing":
            parts.append(f"{p.process_index}: missing")
            continue
        where = ",".join(p.gpu_devices) or p.device or "?"
        parts.append(f"{p.process_index}: {where} {fmt(p.output_tokens_per_s)} tok/s")
    return [("processes", f"{result.n_processes} ({'; '.join(parts)})")]


def _time_pairs(result: ExperimentResult) -> list[tuple[str, str]]:
    """Where the run's time went (docs/studies.md, "Where a study's time goes"): the window,
    the time outside it and the overhead against the goal, then the parts."""
    from llenergymeasure.domain.timing import OVERHEAD_GOAL_S, breakdown_of, parts_text

    if not result.phase_durations_s:
        return []
    b = breakdown_of(result)
    excluded = "load, engine start and baseline" if b.engine_start_s else "load and baseline"
    goal = f"; goal <= {OVERHEAD_GOAL_S:g} s" if result.config.get("backend") == "pytorch" else ""
    head = (
        f"window {fmt(b.window_s, 2, 's')}, outside it {b.outside_s:.2f} s; overhead "
        f"{b.overhead_s:.2f} s (outside minus {excluded}{goal})"
    )
    return [("time", head), ("time outside", parts_text(b))]


def format_experiment(result: ExperimentResult, result_dir: str | None = None) -> str:
    """The end-of-run summary of one experiment, with its warnings."""
    status = "FAILED" if result.failed else "completed"
    if result.partial:
        missing = sum(p.status == "missing" for p in result.process_breakdown)
        status += f", PARTIAL: {missing} of {result.n_processes} processes missing"
    pairs = _config_pairs(result) + _process_pairs(result) + _metric_pairs(result)
    pairs += _energy_pairs(result)
    pairs += _phase_pairs(result)
    pairs += _time_pairs(result)
    pairs.append(("results", result_dir or MISSING))
    lines = [
        f"Experiment {result.name} ({status}, config {result.config_hash[:8]})",
        render_pairs(pairs),
    ]
    if result.failed and result.error_type:
        lines.append(f"  error: {result.error_type}")
    lines.extend(warnings_block([f"[{w.severity}] {w.code}: {w.message}" for w in result.warnings]))
    return "\n".join(lines)


def warnings_block(items: Sequence[str]) -> list[str]:
    """``Warnings (n):`` followed by one indented line per warning; nothing when empty."""
    if not items:
        return []
    return [f"Warnings ({len(items)}):", *(f"  - {w}" for w in items)]


# ---- dry run -------------------------------------------------------------------------------


def format_memory(estimate: Any) -> str:
    """``weights + KV + overhead = total GB`` from a core.memory.MemoryEstimate."""
    if estimate is None:
        return "unknown"
    if isinstance(estimate, str):
        return estimate
    if estimate.total_gb is None:
        return "unknown: " + "; ".join(estimate.notes or [estimate.method])
    terms = (estimate.weights_gb, estimate.kv_cache_gb, estimate.activations_overhead_gb)
    return " + ".join(_gb(t) for t in terms) + f" = {_gb(estimate.total_gb)} GB"


def _gb(value: float | None) -> str:
    """GB with enough decimals to show small models (3 below 1 GB)."""
    if value is None:
        return "?"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def format_dry_run(
    plan: Any,
    estimate: Callable[[Any], Any],
    backend_status: Callable[[str], tuple[bool, str]] | None = None,
) -> str:
    """The expanded study in run order, skipped points and totals (nothing is run).

    ``backend_status(name) -> (installed, reason)`` (never importing the backend): rows
    whose backend is not installed get a ``backend`` column saying so, and a line per
    missing backend gives the install command.
    """
    status = {}
    if backend_status is not None:
        for p in plan.experiments:
            name = p.config.backend
            if name not in status:
                status[name] = backend_status(name)
    missing = {name: why for name, (ok, why) in status.items() if not ok}
    rows = []
    for p in plan.experiments:
        row = [p.position + 1, f"{p.cycle}/{plan.n_cycles}", p.label, p.config_hash[:8]]
        row.append(format_memory(estimate(p.config)))
        if missing:
            backend = p.config.backend
            row.append(f"{backend}: NOT INSTALLED" if backend in missing else "")
        rows.append(row)
    headers = ["#", "cycle", "experiment", "config", "est. GPU memory (weights + KV + overhead)"]
    if missing:
        headers.append("backend")
    seed = f", shuffle seed {plan.shuffle_seed}" if plan.shuffle_seed is not None else ""
    lines = [
        f"Dry run: order {plan.order}{seed}, design {str(plan.design_hash)[:8]}",
        render_table(headers, rows),
    ]
    for name, why in missing.items():
        which = [str(p.position + 1) for p in plan.experiments if p.config.backend == name]
        lines.append(
            f"Backend {name!r} is not installed ({why}): experiments {', '.join(which)} would "
            "fail pre-flight"
        )
    if plan.skipped:
        lines.append(f"Skipped grid points ({len(plan.skipped)}):")
        lines.extend(f"  - {_point_text(s.point)}: {s.reason}" for s in plan.skipped)
    n_configs = len(plan.unique_configs)
    lines.append(
        f"Total: {len(plan.experiments)} experiments = {n_configs} configs x "
        f"{plan.n_cycles} cycles; {len(plan.skipped)} skipped. Nothing was run."
    )
    return "\n".join(lines)


def _point_text(point: Any) -> str:
    """A grid point as ``key=value, ...``."""
    if isinstance(point, dict):
        return ", ".join(f"{k}={v}" for k, v in point.items())
    return str(point)


def format_slurm_dry_run(plan: Any) -> str:
    """What ``execution.executor: slurm`` would submit: the sbatch settings of each job."""
    from llenergymeasure.study.slurm import settings

    study = plan.study
    slurm = study.slurm
    limit = settings.time_limit_min(study)
    dir_name = f"{plan.study_name}_TIMESTAMP"
    folder = f"<results>/{dir_name}/{settings.JOB_FOLDER}/%j"
    sample = settings.job_name(dir_name, 0, 1) + "-a1"
    params = settings.executor_parameters(slurm, time_min=limit, name=sample, comment=dir_name)
    parallel = (
        "one at a time (run order and gaps as locally)"
        if slurm.max_parallel == 1
        else f"at most {slurm.max_parallel} at once, each on its own GPUs"
    )
    source = (
        "slurm.time_limit_min"
        if slurm.time_limit_min
        else (
            f"experiment_timeout_seconds {study.execution.experiment_timeout_seconds:g} s + "
            f"signal_delay_s {slurm.signal_delay_s} s"
        )
    )
    lines = [
        "",
        f"Slurm: {len(plan.experiments)} jobs, one per experiment, {parallel}; "
        f"--time={limit} min ({source}).",
        "sbatch settings of each job, as submitit writes them (the --job-name names the "
        "position, cycle and attempt):",
        *(f"  {line}" for line in settings.sbatch_lines(params, folder)),
    ]
    if slurm.setup:
        lines.append("  then, in the job before the experiment:")
        lines.extend(f"    {cmd}" for cmd in slurm.setup)
    lines.append("Jobs:")
    rows = [
        (
            p.position + 1,
            settings.job_name(dir_name, p.position, p.cycle) + "-a1",
            f"gpus={slurm.gpus_per_job} cpus={slurm.cpus_per_job} "
            f"mem={settings.mem_text(slurm.mem_gb) if slurm.mem_gb else 'default'} "
            f"time={limit}",
        )
        for p in plan.experiments
    ]
    lines.extend(
        "  " + line for line in render_table(("#", "--job-name", "resources"), rows).splitlines()
    )
    for text in settings.notes(study) + settings.plan_problems(plan, slurm):
        lines.append(f"note: {text}")
    return "\n".join(lines)
