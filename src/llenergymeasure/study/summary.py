"""Turn a finished (or stopped) study's manifest and results into a `StudyResult`, and render
it as a plain-text table.

Statistics: for each unique configuration and each metric of `STUDY_METRICS`, the values of
the completed cycles are summarised by `study.stats.summarise_cycles` (mean, spread and a
seeded percentile-bootstrap CI of the mean). A metric no cycle measured gets a reason instead.
The best configuration follows `BEST_CRITERION` (lowest mean J per output token among
configurations with every planned cycle completed and J/token measured in each).
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llenergymeasure.config.provenance import flatten
from llenergymeasure.domain.study import (
    STUDY_METRICS,
    ConfigSummary,
    ExperimentTiming,
    MetricStats,
    SkippedConfig,
    StudyCounts,
    StudyFailure,
    StudyResult,
    StudyTiming,
)
from llenergymeasure.domain.timing import (
    COLUMNS,
    TimeBreakdown,
    breakdown_of,
    seconds_text,
    sum_breakdowns,
)
from llenergymeasure.redaction import redact
from llenergymeasure.study.stats import summarise_cycles

if TYPE_CHECKING:
    from llenergymeasure.domain.results import ExperimentResult
    from llenergymeasure.study.grid import StudyPlan, UniqueConfig
    from llenergymeasure.study.manifest import ManifestEntry, StudyManifest

CONFIDENCE = 0.95
N_RESAMPLES = 2000
CI_SEED = 0  # fixed: the same per-cycle values always give the same CI
FEW_CYCLES = 3
ALWAYS_SHOWN_FIELDS = ("model", "backend", "precision")
NOT_KEY_FIELDS = frozenset({"name", "output_dir"})


def build_study_result(
    *,
    plan: StudyPlan,
    manifest: StudyManifest,
    study_dir: Path,
    results: Mapping[tuple[str, int], ExperimentResult],
    gap_s: float,
    wall_time_s: float,
    warnings: Sequence[str] = (),
) -> StudyResult:
    """Assemble the StudyResult; ``results`` maps (config_hash, cycle) -> loaded result."""
    fields = key_fields(plan.unique_configs)  # over all configs: the swept ones differ
    configs = [
        _config_summary(u, f, manifest.entries, results, plan.n_cycles)
        for u, f in zip(plan.unique_configs, fields, strict=True)
    ]
    best_note = _mark_best(configs)
    all_warnings = list(warnings)
    if plan.n_cycles < FEW_CYCLES:
        all_warnings.append(
            f"only {plan.n_cycles} cycle(s): confidence intervals need >= {FEW_CYCLES} "
            "cycles to mean much (set execution.n_cycles)"
        )
    counts = manifest.counts()
    return StudyResult(
        study_name=manifest.study_name,
        study_dir=str(study_dir),
        status=manifest.status,
        design_hash=manifest.design_hash,
        order=plan.order,
        shuffle_seed=plan.shuffle_seed,
        n_cycles=plan.n_cycles,
        counts=StudyCounts(
            planned=len(manifest.entries),
            completed=counts["completed"],
            failed=counts["failed"],
            skipped=len(plan.skipped),
            not_run=counts["pending"] + counts["running"],
        ),
        failures=[_failure(e) for e in manifest.entries if e.status == "failed"],
        skipped=[SkippedConfig(point=dict(s.point), reason=s.reason) for s in plan.skipped],
        configs=configs,
        best_config_hash=next((c.config_hash for c in configs if c.best), None),
        best_note=best_note,
        confidence=CONFIDENCE,
        timing=study_timing(manifest.entries, gap_s, wall_time_s, results),
        warnings=all_warnings,
        stopped_reason=manifest.stopped_reason,
        experiments=[results[e.key] for e in manifest.entries if e.key in results],
    )


def key_fields(unique: Sequence[UniqueConfig]) -> list[dict[str, Any]]:
    """Per config: model/backend/precision plus every field whose value differs between configs."""
    flat = [flatten(redact(u.config.model_dump(mode="json", exclude_none=True))) for u in unique]
    keys = sorted({k for f in flat for k in f} - NOT_KEY_FIELDS)
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    chosen = [*ALWAYS_SHOWN_FIELDS, *(k for k in varying if k not in ALWAYS_SHOWN_FIELDS)]
    return [{k: f.get(k) for k in chosen} for f in flat]


def _config_summary(
    unique: UniqueConfig,
    fields: dict[str, Any],
    entries: Sequence[ManifestEntry],
    results: Mapping[tuple[str, int], ExperimentResult],
    n_cycles: int,
) -> ConfigSummary:
    """Statistics of one configuration over its completed cycles."""
    done = [e for e in entries if e.config_hash == unique.config_hash and e.status == "completed"]
    done.sort(key=lambda e: e.cycle)
    loaded = [results[e.key] for e in done if e.key in results]
    codes = flag_counts(loaded)
    return ConfigSummary(
        config_hash=unique.config_hash,
        label=unique.label or unique.config.name or unique.config_hash[:8],
        key_fields=fields,
        cycles_planned=n_cycles,
        cycles_completed=len(loaded),
        result_paths=[e.result_path for e in done if e.result_path and e.key in results],
        metrics={name: _metric(name, loaded) for name in STUDY_METRICS},
        energy_basis=energy_basis(loaded),
        flagged=sum(1 for r in loaded if _flags(r)),
        flag_codes=codes,
    )


def energy_basis(results: Sequence[ExperimentResult]) -> str | None:
    """How ``energy_j`` was obtained: ``counter (gpu)``, ``estimate (cpu_package)``, ...
    (several joined by `` / `` when cycles differ); None when no cycle measured energy."""
    seen: dict[str, None] = {}
    for r in results:
        e = r.energy
        if e is None or r.energy_j is None:
            continue
        gpu = e.gpu_energy_j is not None
        used = [m for m in e.measurements if m.scope == "gpu"] if gpu else e.measurements
        methods = sorted({f"{m.method} ({m.scope})" for m in used})
        if methods:
            seen[" + ".join(methods)] = None
    return " / ".join(seen) or None


def _flags(result: ExperimentResult) -> set[str]:
    """Codes of the result's quality flags that lower trust (warning or critical)."""
    return {w.code for w in result.warnings if w.severity != "info"}


def flag_counts(results: Sequence[ExperimentResult]) -> dict[str, int]:
    """Flag code -> how many of ``results`` carry it (warning or critical)."""
    counts: dict[str, int] = {}
    for r in results:
        for code in sorted(_flags(r)):
            counts[code] = counts.get(code, 0) + 1
    return counts


def _metric(name: str, loaded: Sequence[ExperimentResult]) -> MetricStats:
    """One metric over cycles, or the reason it is missing."""
    unit = STUDY_METRICS[name][1]
    values = [getattr(r, name) for r in loaded]
    stats = summarise_cycles(values, n_resamples=N_RESAMPLES, confidence=CONFIDENCE, seed=CI_SEED)
    reason = None if stats is not None else _missing_reason(name, loaded)
    return MetricStats(unit=unit, stats=stats, not_measured_reason=reason)


def _missing_reason(name: str, loaded: Sequence[ExperimentResult]) -> str:
    """Why no cycle has a value for ``name``."""
    if not loaded:
        return "no completed cycle"
    if name in ("energy_j", "j_per_output_token"):
        for r in loaded:
            if r.energy_not_measured_reason:
                return r.energy_not_measured_reason
            if r.energy is not None and r.energy.not_measured:
                return next(iter(r.energy.not_measured.values()))
        return "no energy meter measured"
    return "not measured by this backend/run"


def _mark_best(configs: list[ConfigSummary]) -> str | None:
    """Flag the config with the lowest mean J/token among fully completed ones."""
    eligible = [
        c
        for c in configs
        if c.cycles_completed == c.cycles_planned
        and (s := c.metrics["j_per_output_token"].stats) is not None
        and s.n == c.cycles_planned
        and math.isfinite(s.mean)
    ]
    if not eligible:
        return "no configuration completed every cycle with J/token measured"
    best = min(eligible, key=lambda c: c.metrics["j_per_output_token"].stats.mean)  # type: ignore[union-attr]
    best.best = True
    return None


def _failure(entry: ManifestEntry) -> StudyFailure:
    """A failed manifest entry as a StudyFailure."""
    return StudyFailure(
        position=entry.position,
        cycle=entry.cycle,
        label=entry.label,
        config_hash=entry.config_hash,
        reason=entry.error or "failed",
        failure_path=entry.failure_path,
    )


def study_timing(
    entries: Sequence[ManifestEntry],
    gap_s: float,
    wall_time_s: float,
    results: Mapping[tuple[str, int], ExperimentResult] | None = None,
) -> StudyTiming:
    """Where time went, over every experiment that ran (this session and earlier ones):
    per experiment its wall time by part (`domain.timing`), and their sum."""
    rows = []
    for e in entries:
        if e.duration_s is None or e.status not in ("completed", "failed"):
            continue
        outside = e.duration_s - e.measurement_s if e.measurement_s is not None else None
        result = (results or {}).get(e.key) if e.status == "completed" else None
        rows.append(
            ExperimentTiming(
                position=e.position,
                cycle=e.cycle,
                label=e.label,
                status=e.status,
                subprocess_wall_s=e.duration_s,
                measurement_s=e.measurement_s,
                outside_measurement_s=outside,
                backend=str(result.config.get("backend")) if result is not None else None,
                gap_before_s=e.gap_before_s,
                breakdown=breakdown_of(
                    result, wall_s=e.duration_s, save_s=e.save_s, exit_s=e.exit_s
                )
                if result is not None
                else None,
            )
        )
    total = sum(r.subprocess_wall_s for r in rows)
    measured = sum(r.measurement_s or 0.0 for r in rows)
    return StudyTiming(
        wall_time_s=wall_time_s,
        experiments_wall_s=total,
        measurement_s=measured,
        outside_measurement_s=total - measured,
        gap_s=gap_s,
        experiments=rows,
        breakdown=sum_breakdowns(r.breakdown for r in rows if r.breakdown is not None),
    )


# ---- the table ----------------------------------------------------------------------------
#: (heading, StudyResult metric, display scale): J/token is shown in mJ to keep cells short.
_COLUMNS = (
    ("energy J", "energy_j", 1.0),
    ("mJ/token", "j_per_output_token", 1000.0),
    ("tok/s", "output_tokens_per_s", 1.0),
    ("TTFT ms", "ttft_ms_mean", 1.0),
    ("ITL ms", "itl_ms_mean", 1.0),
)
_MIN_LABEL_WIDTH = 16
_WIDTH = 120


def format_study_table(result: StudyResult) -> str:
    """Plain-text table, two lines per config: the means, then their CIs ``[low,high]``.

    The best configuration is marked ``*``. A metric no cycle measured is shown as
    ``n/a[k]`` with footnote k naming the reason. Fits 120 columns for usual magnitudes.
    """
    pct = round(result.confidence * 100)
    bases = {c.energy_basis for c in result.configs if c.energy_basis}
    mixed = len(bases) > 1  # then each config says its own basis
    flags = any(c.flag_codes for c in result.configs)
    header = ["config", "cycles", *(h for h, _, _ in _COLUMNS)]
    header += ["flagged"] * flags + ["energy basis"] * mixed
    table: list[list[str]] = [header]
    reasons: dict[str, int] = {}
    for c in result.configs:
        means = [_label_cell(c), f"{c.cycles_completed}/{c.cycles_planned}"]
        cis = ["", ""]
        for _, name, scale in _COLUMNS:
            mean, ci = _metric_cells(c.metrics[name], scale, reasons)
            means.append(mean)
            cis.append(ci)
        if flags:
            means.append(f"{c.flagged}/{c.cycles_completed}")
            cis.append("")
        if mixed:
            means.append(_short_basis(c.energy_basis))
            cis.append("")
        table += [means, cis] if any(cis) else [means]
    lines = _align(table)
    lines.insert(1, f"  (second line of each config: {pct}% CI of the mean over cycles)")
    if bases and not mixed:
        lines.insert(2, f"  energy: {_basis_text(next(iter(bases)))}")
    notes = [f"n/a[{n}]: not measured: {text}" for text, n in reasons.items()]
    if mixed:
        notes.append("energy basis differs between configs: compare energy figures with care")
    if flags:
        codes: dict[str, int] = {}
        for c in result.configs:
            for code, n in c.flag_codes.items():
                codes[code] = codes.get(code, 0) + n
        listed = ", ".join(f"{code} ({n})" for code, n in sorted(codes.items()))
        notes.append(f"flagged: completed cycles with quality warnings: {listed}")
    if any(c.best for c in result.configs):
        notes.append(f"* best: {result.best_criterion}")
    elif result.best_note:
        notes.append(f"no best config: {result.best_note}")
    notes += _outcome_notes(result)
    lines += [
        textwrap.fill(n, _WIDTH, initial_indent="  ", subsequent_indent="    ") for n in notes
    ]
    return "\n".join(lines)


def _outcome_notes(result: StudyResult) -> list[str]:
    """Lines on failures, skipped points, an early stop and warnings."""
    notes = [
        f"FAILED {f.label} (cycle {f.cycle}): {f.reason}"
        + (f" -> {f.failure_path}" if f.failure_path else "")
        for f in result.failures
    ]
    notes += [f"skipped {s.point}: {s.reason}" for s in result.skipped]
    if result.stopped_reason:
        notes.append(f"STOPPED: {result.stopped_reason}")
    if result.counts.not_run:
        notes.append(f"{result.counts.not_run} experiment(s) not run: resume with --resume")
    return notes + [f"warning: {w}" for w in result.warnings]


def _basis_text(basis: str) -> str:
    """The energy basis for the table's header, saying when it is not a measurement."""
    if "estimate" in basis:
        return f"{basis}: an ESTIMATE (not a measurement) -> see each result's flags"
    return f"{basis}, measured"


def _short_basis(basis: str | None) -> str:
    """A basis short enough for a column: ``counter/gpu``, ``estimate/cpu_package``."""
    if basis is None:
        return "-"
    return basis.replace(" (", "/").replace(")", "")


def _label_cell(c: ConfigSummary) -> str:
    """Config label with the best marker (shortened later by `_align` if too wide)."""
    return f"{'*' if c.best else ' '} {c.label}"


def _metric_cells(m: MetricStats, scale: float, reasons: dict[str, int]) -> tuple[str, str]:
    """(mean, ``[low,high]``) or (``n/a[k]``, "") with k pointing to a footnote reason."""
    if m.stats is None:
        reason = m.not_measured_reason or "unknown"
        number = reasons.setdefault(reason, len(reasons) + 1)
        return f"n/a[{number}]", ""
    ci = m.stats.ci
    return _num(m.stats.mean * scale), f"[{_num(ci.low * scale)},{_num(ci.high * scale)}]"


def _num(x: float) -> str:
    """Compact number: 3 significant digits; integers from 1000; scientific below 1e-3."""
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def _align(table: list[list[str]]) -> list[str]:
    """Left-align the first column (shortened to fit `_WIDTH`), right-align the others."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    room = max(_MIN_LABEL_WIDTH, _WIDTH - sum(widths[1:]) - 2 * (len(widths) - 1))
    widths[0] = min(widths[0], room)
    out = []
    for row in table:
        label = row[0] if len(row[0]) <= room else row[0][: room - 3] + "..."
        cells = [label.ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
    return out


# ---- where the time went -------------------------------------------------------------------
#: Above this many experiments the time table shows one row per configuration (means).
MAX_TIME_ROWS = 24


def format_study_timing(result: StudyResult) -> str:
    """Where the study's time went: per experiment (or, for long studies, per configuration,
    mean over its cycles) every part of its process's wall time, the window, the overhead
    (outside the window minus load, engine start and baseline) against the goal; totals;
    the gaps. Columns no experiment has (e.g. ``engine`` for pytorch) are left out."""
    timing = result.timing
    rows = [t for t in timing.experiments if t.breakdown is not None]
    if not rows:
        return "Where the time went: no experiment left a result to break down"
    per_config = len(rows) > MAX_TIME_ROWS
    table_rows: list[tuple[str, str, TimeBreakdown]] = []
    if per_config:
        for label in dict.fromkeys(t.label for t in rows):
            mine = [t.breakdown for t in rows if t.label == label and t.breakdown]
            table_rows.append((label, f"x{len(mine)}", _mean_breakdown(mine)))
    else:
        table_rows = [(t.label, str(t.cycle), t.breakdown) for t in rows if t.breakdown]
    total = timing.breakdown
    assert total is not None
    mean = _mean_breakdown([t.breakdown for t in rows if t.breakdown])
    columns = _time_columns([b for _, _, b in table_rows])
    header = ["experiment", "cycles" if per_config else "cycle", "wall", *columns.values()]
    header.append("overhead")
    table = [header]
    for label, cycle, b in table_rows:
        table.append([label, cycle, *_time_cells(b, columns)])
    table.append([f"total ({len(rows)})", "", *_time_cells(total, columns)])
    table.append(["mean", "", *_time_cells(mean, columns)])
    lines = ["Where the time went (seconds; `llem results` shows it again):", *_align(table)]
    notes = [
        "overhead = outside the window minus load, engine start and baseline: what llem "
        f"itself costs; goal <= {timing.overhead_goal_s:g} s per experiment (pytorch)",
        "start: process start and imports; meters: energy session start; close: window "
        "edges, sampler stop, timeline file, per-request derivation; exit: teardown after "
        "the report; warm-up (first call) holds the one-time costs",
    ]
    if any(b.start_derived for _, _, b in table_rows):
        notes.append("start*: derived (wall minus the parts recorded; older results)")
    torch_rows = [t.breakdown for t in rows if t.breakdown and t.backend == "pytorch"]
    if torch_rows:
        notes.append(_overhead_verdict(torch_rows, timing.overhead_goal_s))
    study_rest = timing.wall_time_s - timing.experiments_wall_s - timing.gap_s
    notes.append(
        f"study wall {timing.wall_time_s:.1f} s = experiments {timing.experiments_wall_s:.1f} "
        f"s + gaps {timing.gap_s:.1f} s + study process {max(0.0, study_rest):.1f} s"
    )
    lines += [
        textwrap.fill(n, _WIDTH, initial_indent="  ", subsequent_indent="    ") for n in notes
    ]
    return "\n".join(lines)


def _overhead_verdict(rows: Sequence[TimeBreakdown], goal_s: float) -> str:
    """The pytorch overhead against the goal, and how much of it is warm-up (the first call:
    the framework's one-time costs, paid again in each experiment's own process)."""
    worst = max(b.overhead_s for b in rows)
    verdict = "met" if worst <= goal_s else "NOT met"
    text = (
        f"pytorch overhead: mean {statistics.fmean(b.overhead_s for b in rows):.2f} s, "
        f"max {worst:.2f} s per experiment -> goal {verdict}"
    )
    firsts = [b.warmup_first_call_s for b in rows if b.warmup_first_call_s is not None]
    if any(b.warmup_s > 0 for b in rows):
        text += f"; warm-up is {statistics.fmean(b.warmup_s for b in rows):.2f} s of the mean"
        if firsts:
            text += f" (first call {statistics.fmean(firsts):.2f} s)"
    return text


def _time_columns(rows: Sequence[TimeBreakdown]) -> dict[str, str]:
    """The breakdown columns some row has a value for: field -> heading."""
    shown: dict[str, str] = {}
    for name, heading in COLUMNS:
        values = [getattr(b, name) for b in rows]
        if name == "other_s" or any(v is not None and v != 0 for v in values):
            shown[name] = "warm-up (1st)" if name == "warmup_s" else heading
    return shown


def _time_cells(b: TimeBreakdown, columns: Mapping[str, str]) -> list[str]:
    """wall, every shown part, overhead; warm-up with its first call in brackets."""
    cells = [seconds_text(b.wall_s)]
    for name in columns:
        text = seconds_text(getattr(b, name))
        if name == "start_s" and b.start_derived:
            text += "*"
        if name == "warmup_s" and b.warmup_first_call_s is not None:
            text += f" ({seconds_text(b.warmup_first_call_s)})"
        cells.append(text)
    return [*cells, seconds_text(b.overhead_s)]


def _mean_breakdown(parts: Sequence[TimeBreakdown]) -> TimeBreakdown:
    """Field by field mean (fields None everywhere stay None)."""
    total = sum_breakdowns(parts)
    assert total is not None
    n = len(parts)
    data = total.model_dump()
    for key, value in data.items():
        if isinstance(value, float):
            data[key] = value / n
    return TimeBreakdown.model_validate(data)
