"""Energy by phase and per request for one window: the backend's step records meet the
energy layer's counter trace (docs/measurement.md section 14).

Called by the orchestrator after the window has closed and ``output.finalize()`` has run
(never inside the window)::

    settings = phase_trace_settings(config)                 # for the EnergySession
    energy = attach_phase_energy(energy, session, output)   # EnergyReport with phases

Inputs per backend:

- **pytorch** (static batches): the per-request token times (``RequestTiming``; CUDA events
  on GPU) give each batch a prefill span (start -> first token) and a decode span (-> last
  token), and one engine step per decode step (``core/energy/step_records.py``);
- **vLLM** (continuous batching): ``InferenceOutput.steps`` (one ``StepTokens`` per engine
  step). A step that scheduled only prefill tokens is a ``prefill`` span, only decode tokens
  a ``decode`` span, both a ``mixed`` span (its own power; no J/token); a step that returned
  no token (a chunked prefill's earlier chunks) counts as prefill.

Clocks: the token clock is ``time.perf_counter`` and the energy layer's ``time.monotonic``.
On Linux both are CLOCK_MONOTONIC (:func:`token_clock_offset_s` checks with
``time.get_clock_info``); elsewhere the offset between them is read once and applied.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from llenergymeasure.core.energy.counter_trace import DeviceTrace, PhaseTraceSettings, WindowTrace
from llenergymeasure.domain.phases import (
    DECODE,
    MIXED,
    PREFILL,
    CounterTraceInfo,
    PerRequestEnergy,
    PhaseEnergyReport,
    PhaseSpan,
    Signal,
    StepTokens,
)

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.backends.protocol import InferenceOutput
    from llenergymeasure.core.energy.session import EnergySession
    from llenergymeasure.core.metrics import RequestTiming
    from llenergymeasure.domain.energy import EnergyReport

MAX_KEPT_REQUESTS = 2000  # per-request list in result.json up to this many requests
MULTI_PROCESS_REASON = "multi-process runs are not attributed yet"
WINDOW = "measure"


def phase_trace_settings(config: ExperimentConfig) -> PhaseTraceSettings:
    """The session's counter-trace settings from ``telemetry.phase_energy`` (None = auto)."""
    telemetry = config.telemetry
    chosen = telemetry.phase_energy
    if chosen is None and not telemetry.enabled:
        return PhaseTraceSettings("off", "telemetry.enabled: false (phase_energy: on overrides)")
    pytorch = getattr(config, "pytorch", None)
    if getattr(pytorch, "num_processes", None) is not None:
        return PhaseTraceSettings("off", MULTI_PROCESS_REASON)
    return PhaseTraceSettings(chosen or "auto")


def attach_phase_energy(
    energy: EnergyReport | None, session: EnergySession | None, output: InferenceOutput
) -> EnergyReport | None:
    """``energy`` with ``phases`` and ``per_request`` from the window's trace, if traced.

    Untraced windows keep what the session put there (not measured, with the reason).
    """
    if energy is None or session is None:
        return energy
    trace = session.window_trace(WINDOW)
    if trace is None:
        return energy
    phases, per_request = attribute_window(
        trace, output.timings, output.steps, timing_method=output.timing_method,
        edge_energy_j_by_device=_counter_by_device(energy),
    )  # fmt: skip
    return energy.model_copy(update={"phases": phases, "per_request": per_request})


def attribute_window(
    trace: WindowTrace,
    timings: Sequence[RequestTiming],
    steps: Sequence[StepTokens],
    *,
    timing_method: str | None = None,
    edge_energy_j_by_device: dict[str, float] | None = None,
    keep_requests: bool | None = None,
) -> tuple[PhaseEnergyReport, PerRequestEnergy]:
    """Phase report and per-request energy of one traced window (never raises)."""
    t0, t1 = trace.window
    window_s = t1 - t0
    try:
        spans, steps, source = spans_and_steps(timings, steps, timing_method)
    except ValueError as e:
        reason = f"no usable step times: {e}"
        return _not_measured(window_s, reason)
    if not spans:
        return _not_measured(window_s, source)
    try:
        return _attribute(trace, spans, steps, source, edge_energy_j_by_device, keep_requests,
                          n_requests=len(timings))  # fmt: skip
    except (ValueError, ArithmeticError) as e:  # a counter reset inside the window, etc.
        return _not_measured(window_s, f"attribution failed: {e}")


def spans_and_steps(
    timings: Sequence[RequestTiming], steps: Sequence[StepTokens], timing_method: str | None
) -> tuple[list[PhaseSpan], list[StepTokens], str]:
    """Phase spans and engine steps on the energy clock, and where they came from.

    Empty spans: the third item says why there are none.
    """
    from llenergymeasure.core.energy.step_records import static_batch_spans, static_batch_steps

    offset = token_clock_offset_s()
    if steps:
        moved = [_shift_step(s, offset) for s in steps]
        return engine_step_spans(moved), moved, "engine step loop (per-step token records)"
    if not timings:
        return [], [], "no requests in the window"
    if timing_method == "e2e_only" or not all(t.has_every_token_time for t in timings):
        return (
            [],
            [],
            (
                "no per-token times (timing method "
                f"{timing_method or 'unknown'}): prefill and decode cannot be told apart"
            ),
        )
    moved_t = [_shift_timing(t, offset) for t in timings]
    how = f"static batches from per-token times ({timing_method or 'unknown'})"
    return static_batch_spans(moved_t), static_batch_steps(moved_t), how


def engine_step_spans(steps: Sequence[StepTokens]) -> list[PhaseSpan]:
    """One span per engine step: prefill, decode or mixed (see the module docstring)."""
    spans = []
    for s in steps:
        n_pre, n_dec = sum(s.prefill_tokens.values()), sum(s.decode_tokens.values())
        if n_pre and n_dec:
            spans.append(PhaseSpan(MIXED, s.start_s, s.end_s, 0))
        elif n_dec:
            spans.append(PhaseSpan(DECODE, s.start_s, s.end_s, n_dec))
        else:
            spans.append(PhaseSpan(PREFILL, s.start_s, s.end_s, n_pre))
    return spans


def token_clock_offset_s() -> float:
    """Seconds to add to a ``perf_counter`` time to get ``monotonic`` (0 when the same clock)."""
    perf, mono = time.get_clock_info("perf_counter"), time.get_clock_info("monotonic")
    if perf.implementation == mono.implementation:
        return 0.0
    return time.monotonic() - time.perf_counter()


def _shift_step(s: StepTokens, dt: float) -> StepTokens:
    if dt == 0.0:
        return s
    return StepTokens(s.start_s + dt, s.end_s + dt, s.prefill_tokens, s.decode_tokens, s.resident)


def _shift_timing(t: RequestTiming, dt: float) -> RequestTiming:
    if dt == 0.0:
        return t
    from llenergymeasure.core.metrics import RequestTiming

    return RequestTiming(
        request_start_s=t.request_start_s + dt, token_times_s=[x + dt for x in t.token_times_s],
        input_tokens=t.input_tokens, output_tokens=t.output_tokens, queue_s=t.queue_s,
    )  # fmt: skip


def _attribute(
    trace: WindowTrace,
    spans: list[PhaseSpan],
    steps: list[StepTokens],
    source: str,
    edge_energy_j_by_device: dict[str, float] | None,
    keep_requests: bool | None,
    n_requests: int,
) -> tuple[PhaseEnergyReport, PerRequestEnergy]:
    from llenergymeasure.core.energy.intervals import counter_intervals
    from llenergymeasure.core.energy.per_request import per_request_energy
    from llenergymeasure.core.energy.phases import phase_energy_report

    window = trace.window
    (device, dev), *more = trace.devices.items()
    if more:
        return _not_measured(window[1] - window[0], "several GPUs traced: not attributed yet")
    choice = trace.choice
    delay = choice.counter_delay_s if choice is not None else 0.0
    avg = choice.counter_window_s if choice is not None else 0.0
    iv = counter_intervals(dev.t_s, dev.energy_mj, dev.read_s)
    report = phase_energy_report(iv, spans, window, delay_s=delay, averaging_window_s=avg,
                                 sensor_profile=choice.profile if choice else None)  # fmt: skip
    report.method_reason = choice.reason if choice is not None else None
    report.trace = _trace_info(device, dev, trace)
    report.edge_counter_energy_j = (edge_energy_j_by_device or {}).get(device)
    report.notes.append(f"phase times: {source}")
    if offset := token_clock_offset_s():
        report.notes.append(f"token clock moved onto the energy clock by {offset:+.6f} s")
    _add_fine_signal(report, dev, trace, spans)
    ids, n_in, n_out = _token_maps(steps)
    keep = n_requests <= MAX_KEPT_REQUESTS if keep_requests is None else keep_requests
    per = per_request_energy(
        iv, steps, window, input_tokens=n_in, output_tokens=n_out, delay_s=delay,
        averaging_window_s=avg, keep_requests=keep,
    )  # fmt: skip
    if not keep and per.not_measured is None:
        per.notes.append(f"per-request list left out ({len(ids)} > {MAX_KEPT_REQUESTS} requests)")
    return report, per


def _token_maps(steps: Sequence[StepTokens]) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """Per request: input tokens (its prefill) and output tokens (decode steps + the token
    its prefill step emitted)."""
    n_in: dict[str, int] = {}
    n_dec: dict[str, int] = {}
    for s in steps:
        for rid, n in s.prefill_tokens.items():
            n_in[rid] = n_in.get(rid, 0) + int(n)
        for rid, n in s.decode_tokens.items():
            n_dec[rid] = n_dec.get(rid, 0) + int(n)
    ids = list(dict.fromkeys([*n_in, *n_dec]))
    n_out = {rid: n_dec.get(rid, 0) + (1 if rid in n_in else 0) for rid in ids}
    return ids, n_in, n_out


def _trace_info(device: str, dev: DeviceTrace, trace: WindowTrace) -> CounterTraceInfo:
    return CounterTraceInfo(
        device=device, n_reads=dev.n_reads, n_kept=len(dev.t_s),
        target_interval_s=trace.interval_s, mean_interval_s=dev.mean_interval_s,
        mean_read_s=dev.mean_read_s, fine_signal=trace.fine_signal,
        fine_interval_s=trace.fine_interval_s, n_fine_reads=len(dev.fine_w),
    )  # fmt: skip


def _add_fine_signal(
    report: PhaseEnergyReport, dev: DeviceTrace, trace: WindowTrace, spans: list[PhaseSpan]
) -> None:
    """The second estimate, where the profile trusts a fine power field and it was read."""
    from llenergymeasure.core.energy.phases import fine_signal_estimate

    signal = trace.fine_signal
    if signal is None or not dev.fine_w:
        return
    mid = [t + d / 2.0 for t, d in zip(dev.fine_t_s, dev.fine_read_s, strict=True)]
    choice = trace.choice
    report.fine_signal = fine_signal_estimate(
        mid, dev.fine_w, spans, trace.window, signal=cast("Signal", signal),
        delay_s=choice.fine_delay_s if choice is not None else 0.0,
        counter_energy_j=report.counter_energy_j,
    )  # fmt: skip


def _counter_by_device(energy: EnergyReport) -> dict[str, float]:
    """GPU counter energy per device, as the meter read it at the window edges."""
    return {
        k: v
        for m in energy.measurements
        if m.scope == "gpu" and m.method == "counter"
        for k, v in m.energy_j_by_device.items()
    }


def _not_measured(window_s: float, reason: str) -> tuple[PhaseEnergyReport, PerRequestEnergy]:
    return (
        PhaseEnergyReport(window_s=window_s, not_measured=reason),
        PerRequestEnergy(window_s=window_s, not_measured=reason),
    )
