"""Where an experiment's wall time went (docs/studies.md, "Where a study's time goes"):
computed here, once.

The orchestrator times its phases (``ExperimentResult.phase_durations_s``: ``start``,
``preflight``, ``environment``, ``imports``, ``prompts``, ``load``, ``engine_start``, ``tokenise``,
``energy_start``, ``baseline``, ``warmup``, ``measure``, ``metrics``, ``cleanup``); a study also knows,
per experiment, the process's wall time (spawn to exit), how long saving took in the child
and how long the process took to exit after reporting. :func:`time_breakdown` turns those
into one :class:`TimeBreakdown`, which the study summary, the study's time table and
``llem run``'s time line all show.

**Overhead** is the figure the tool answers for: the time outside the measurement window
minus what the user asked for or what the model itself costs — model load, the engine's
start (vLLM), and the idle baseline (gaps lie between experiments, outside the process).
Target for the pytorch backend: at most :data:`OVERHEAD_GOAL_S` per experiment.

Results written before these phases existed have no ``start`` (the process's start and
imports), ``energy_start`` (then inside ``baseline``) or ``engine_start`` (then inside
``load``); with a wall time, ``start`` is derived as the wall minus everything recorded
(``start_derived``: it then also holds saving and exit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from llenergymeasure.domain.results import ExperimentResult

#: Per experiment, time outside the window minus load, engine start and baseline (pytorch).
OVERHEAD_GOAL_S = 5.0

#: Phase keys of ``phase_durations_s`` (in the order they run).
START = "start"  # the process's start and imports, up to the first stage
IMPORTS = "imports"  # the backend's framework (torch, transformers, vllm), before prompts
ENGINE_START = "engine_start"  # an engine backend's start (vLLM ``LLM(...)``), out of load
ENERGY_START = "energy_start"  # meters chosen; NVML counter probe and sampler launched
CLEANUP = "cleanup"  # the backend's cleanup after the metrics (in ``other``)

#: Breakdown fields in display order: (field, short heading).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("start_s", "start"),
    ("imports_s", "imports"),
    ("prompts_s", "prompts"),
    ("load_s", "load"),
    ("engine_start_s", "engine"),
    ("tokenise_s", "tokenise"),
    ("energy_start_s", "meters"),
    ("baseline_s", "baseline"),
    ("warmup_s", "warm-up"),
    ("window_s", "window"),
    ("close_s", "close"),
    ("metrics_s", "metrics"),
    ("save_s", "save"),
    ("exit_s", "exit"),
    ("other_s", "other"),
)


class TimeBreakdown(BaseModel):
    """One experiment's wall time by part, in seconds (None: not known for this run)."""

    model_config = ConfigDict(extra="forbid")

    wall_s: float | None = Field(
        None, description="the experiment process's wall time, spawn to exit (a study child)"
    )
    start_s: float | None = Field(
        None,
        description="process start to the first stage: interpreter start, imports, reading "
        "the request (a study child: from the parent's spawn call)",
    )
    start_derived: bool = Field(
        False,
        description="start_s is the wall minus every recorded part (a result from before "
        "start was recorded): it then also holds saving and exit",
    )
    imports_s: float | None = Field(
        None, description="importing the backend's framework (torch, transformers, vllm)"
    )
    prompts_s: float = Field(0.0, description="loading or generating the prompts")
    load_s: float = Field(0.0, description="model load (an engine backend: minus its start)")
    engine_start_s: float | None = Field(None, description="vLLM: LLM(...) construction")
    tokenise_s: float = 0.0
    energy_start_s: float | None = Field(
        None, description="energy session start (None: inside baseline_s, older results)"
    )
    baseline_s: float = Field(0.0, description="idle baseline (≈ 0 when cached)")
    warmup_s: float = 0.0
    warmup_first_call_s: float | None = Field(
        None, description="the first warm-up call: one-time costs (kernels, caches, compile)"
    )
    window_s: float | None = Field(None, description="the measurement window")
    close_s: float = Field(
        0.0,
        description="measure phase minus window: device sync, meter reads at the edges, "
        "sampler stop and timeline file, the backend's per-request derivation",
    )
    metrics_s: float = 0.0
    save_s: float | None = Field(None, description="writing result.json (study children)")
    exit_s: float | None = Field(
        None, description="from the child's report to its exit: teardown (study children)"
    )
    other_s: float = Field(
        0.0,
        description="pre-flight, environment snapshot and the backend's cleanup, plus what "
        "no phase covers (with a wall time: the wall minus every other part)",
    )
    outside_s: float = Field(description="every part except the window")
    overhead_s: float = Field(
        description="outside minus load, engine start and baseline: what the tool costs"
    )

    def cells(self) -> dict[str, float | None]:
        """Field -> seconds, for the columns of :data:`COLUMNS`."""
        values: dict[str, float | None] = {name: getattr(self, name) for name, _ in COLUMNS}
        return values


def time_breakdown(
    phases: Mapping[str, float],
    window_s: float | None,
    *,
    warmup_first_call_s: float | None = None,
    wall_s: float | None = None,
    save_s: float | None = None,
    exit_s: float | None = None,
) -> TimeBreakdown:
    """The breakdown of one experiment from its phase durations (see module docstring).

    ``wall_s``: the process's wall time when known (a study); the parts then add up to it,
    the remainder in ``other_s`` (or, without a recorded ``start``, in a derived start).
    """
    p = dict(phases)
    window = window_s if window_s is not None and window_s >= 0 else None
    measure = p.get("measure", 0.0)
    close = max(0.0, measure - window) if window is not None else measure
    known = {
        "imports_s": p.get(IMPORTS),
        "prompts_s": p.get("prompts", 0.0),
        "load_s": p.get("load", 0.0),
        "engine_start_s": p.get(ENGINE_START),
        "tokenise_s": p.get("tokenise", 0.0),
        "energy_start_s": p.get(ENERGY_START),
        "baseline_s": p.get("baseline", 0.0),
        "warmup_s": p.get("warmup", 0.0),
        "window_s": window,
        "close_s": close,
        "metrics_s": p.get("metrics", 0.0),
        "save_s": save_s,
        "exit_s": exit_s,
    }
    listed = {"start", "measure", *(k.removesuffix("_s") for k in known)}
    other = p.get("preflight", 0.0) + p.get("environment", 0.0)
    other += sum(v for k, v in p.items() if k not in listed | {"preflight", "environment"})
    start, derived = p.get(START), False
    recorded = sum(v for v in known.values() if v is not None) + other
    if wall_s is not None:
        if start is None:
            start, derived = max(0.0, wall_s - recorded), True
        else:
            other += max(0.0, wall_s - recorded - start)
    total = wall_s if wall_s is not None else recorded + (start or 0.0)
    outside = total - (window or 0.0)
    excluded = sum(known[k] or 0.0 for k in ("load_s", "engine_start_s", "baseline_s"))
    return TimeBreakdown(
        wall_s=wall_s,
        start_s=start,
        start_derived=derived,
        warmup_first_call_s=warmup_first_call_s,
        other_s=other,
        outside_s=outside,
        overhead_s=outside - excluded,
        **known,
    )


def sum_breakdowns(parts: Iterable[TimeBreakdown]) -> TimeBreakdown | None:
    """Field by field sum of ``parts`` (a field None in every part stays None); None for
    no parts."""
    items = list(parts)
    if not items:
        return None
    totals: dict[str, object] = {}
    for name, info in TimeBreakdown.model_fields.items():
        values = [getattr(b, name) for b in items]
        if info.annotation is bool or name == "start_derived":
            totals[name] = any(values)
            continue
        present = [v for v in values if v is not None]
        totals[name] = sum(present) if present else None
    return TimeBreakdown.model_validate(totals)


def breakdown_of(
    result: ExperimentResult,
    *,
    wall_s: float | None = None,
    save_s: float | None = None,
    exit_s: float | None = None,
) -> TimeBreakdown:
    """:func:`time_breakdown` of a result (a study adds the process's wall, save and exit)."""
    warmup = result.warmup
    first = None
    if warmup is not None:
        first = warmup.first_call_s
        if first is None and warmup.latencies_s:  # results from before first_call_s
            first = warmup.latencies_s[0]
    return time_breakdown(
        result.phase_durations_s,
        result.measurement_window_s,
        warmup_first_call_s=first,
        wall_s=wall_s,
        save_s=save_s,
        exit_s=exit_s,
    )


def seconds_text(value: float | None) -> str:
    """Seconds in at most 5 characters: ``0.05``, ``12.3``, ``134``; ``-`` for None."""
    if value is None:
        return "-"
    if abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def parts_text(b: TimeBreakdown) -> str:
    """The parts outside the window on one line: ``start 1.20 | prompts 0.05 | ...``
    (parts not known for this run left out; warm-up with its first call)."""
    items = []
    for name, heading in COLUMNS:
        value = getattr(b, name)
        if name == "window_s" or value is None:
            continue
        text = f"{heading} {seconds_text(value)}"
        if name == "start_s" and b.start_derived:
            text += "*"
        if name == "warmup_s" and b.warmup_first_call_s is not None:
            text += f" (first call {seconds_text(b.warmup_first_call_s)})"
        items.append(text)
    return " | ".join(items)
