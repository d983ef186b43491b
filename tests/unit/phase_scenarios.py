"""Synthetic workloads for the phase / per-request energy tests, driven through the fake NVML.

A scenario is a list of phase spans (or engine steps) on the fake's clock; the fake GPU draws
a known power in each (plus seeded noise), and its counter steps every 100.2 ms with a phase
offset and jitter; the trace is read at dithered 2-6 ms gaps, as the real trace sampler
should (see core/energy/intervals.py).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np

from llenergymeasure.core.energy.intervals import CounterIntervals, counter_intervals
from llenergymeasure.domain.phases import DECODE, PREFILL, PhaseSpan, StepTokens
from llenergymeasure.testing import FakeDevice, power_schedule_from_spans

POWER_W = {PREFILL: 600.0, DECODE: 400.0}
OTHER_W = 150.0
PERIOD_S = 0.1002
T_START_S = 1.0


def static_batches(seed: int, duration_s: float = 20.0, gap_s: tuple[float, float] = (0.005, 0.03)) -> list[PhaseSpan]:  # fmt: skip
    """Static batches: a host gap (other), a 20-60 ms prefill, a 0.3-1.2 s decode, repeated."""
    rng = random.Random(seed)
    t, spans = T_START_S, []
    while t < T_START_S + duration_s:
        t += rng.uniform(*gap_s)
        pf = rng.uniform(0.02, 0.06)
        spans.append(PhaseSpan(PREFILL, t, t + pf, tokens=8 * 256))
        t += pf
        dc = rng.uniform(0.3, 1.2)
        spans.append(PhaseSpan(DECODE, t, t + dc, tokens=8 * 128))
        t += dc
    return spans


def device_for(
    spans: list[Any],
    seed: int,
    *,
    power: Any = None,
    noise_w: float = 30.0,
    jitter_s: float = 0.002,
    delay_s: float = 0.0,
) -> FakeDevice:
    """A fake GPU drawing the scenario's power (10 ms noisy segments), counter with jitter."""
    sched = power_schedule_from_spans(
        spans, POWER_W if power is None else power, OTHER_W, noise_w=noise_w, segment_s=0.01,
        seed=seed,
    )  # fmt: skip
    return FakeDevice(
        "GPU-fake", power_w=sched, counter_period_s=PERIOD_S, counter_phase_s=0.037,
        counter_jitter_s=jitter_s, counter_delay_s=delay_s, counter_seed=seed,
    )  # fmt: skip


def read_times(seed: int, t0_s: float, t1_s: float) -> np.ndarray:
    """Dithered read times covering [t0 - 0.5, t1 + 0.5]."""
    rng = np.random.default_rng(seed)
    n = int((t1_s - t0_s + 1.0) / 0.002) + 10
    t = t0_s - 0.5 + np.cumsum(rng.uniform(0.002, 0.006, n))
    return t[t < t1_s + 0.5]


def trace_intervals(device: FakeDevice, seed: int, window: tuple[float, float]) -> CounterIntervals:
    """Counter intervals from a dithered fast-read trace of ``device`` around ``window``."""
    t = read_times(seed, *window)
    return counter_intervals(t, device.energy_trace_mj(t))


def window_of(items: list[Any]) -> tuple[float, float]:
    """The measurement window bracketing the spans / steps."""
    return items[0].start_s, items[-1].end_s


# --- continuous batching ------------------------------------------------------------------
A_J_PER_PREFILL, B_J_PER_DECODE, C_STEP_W, GAP_W = 0.002, 0.05, 300.0, OTHER_W


def continuous_batching(seed: int, duration_s: float = 20.0, max_seqs: int = 32) -> list[StepTokens]:  # fmt: skip
    """A vLLM-like step loop: arrivals, chunked admission, one decode token per running request."""
    rng = random.Random(seed)
    t, steps, running, waiting, nid = T_START_S, [], {}, [], 0
    while t < T_START_S + duration_s:
        if rng.random() < 0.3:
            waiting.append((f"q{nid}", rng.randint(50, 600), rng.randint(10, 300)))
            nid += 1
        pre: dict[str, int] = {}
        while waiting and len(running) < max_seqs and sum(pre.values()) < 2048:
            rid, n_in, n_out = waiting.pop(0)
            pre[rid], running[rid] = n_in, n_out
        dec = {rid: 1 for rid in running if rid not in pre}
        length = 0.008 + 1e-5 * sum(pre.values()) + 1e-4 * len(dec)
        steps.append(StepTokens(t, t + length, pre, dec))
        for rid in list(running):
            running[rid] -= 1
            if running[rid] <= 0:
                del running[rid]
        t += length + (0.002 if rng.random() < 0.1 else 0.0)
    return steps


@dataclasses.dataclass(frozen=True)
class StepSpan:
    """A step as a span the power schedule understands."""

    step: StepTokens
    phase: str = "step"

    @property
    def start_s(self) -> float:
        return self.step.start_s

    @property
    def end_s(self) -> float:
        return self.step.end_s


def step_power_w(span: StepSpan) -> float:
    """Known power of a step: C + (a * prefill + b * decode tokens) / duration."""
    s = span.step
    tokens_j = A_J_PER_PREFILL * sum(s.prefill_tokens.values())
    tokens_j += B_J_PER_DECODE * sum(s.decode_tokens.values())
    return C_STEP_W + tokens_j / (s.end_s - s.start_s)


# --- a window as the session traces it (decode-heavy, H200-like) ---------------------------
H200_W = {PREFILL: 580.0, DECODE: 138.0}
H200_IDLE_W = 138.0


@dataclasses.dataclass(frozen=True)
class TracedWindow:
    """A window as ``EnergySession`` traces it, with the true energy of each labelled phase."""

    spans: list[PhaseSpan]
    steps: list[StepTokens]
    window: tuple[float, float]
    intervals: CounterIntervals
    true_j: dict[str, float]  # energy drawn in each phase's spans inside the window (+ other)


def traced_window(
    seed: int = 0,
    *,
    head_idle_s: float = 0.0,
    batches: int = 2,
    new_tokens: int = 128,
    step_s: float = 0.061,
    prefill_s: float = 0.165,
) -> TracedWindow:
    """Static batches of 16 opened right after a counter step, as the session does it.

    The tracer starts reading before the window, which opens ~10 ms after the counter step
    it waited for (``begin``), and stops at the first step after the window closes (``end``),
    so the trace holds one interval across each edge. The first batch starts as the window
    opens; ``head_idle_s``: its prefill span starts with that long at idle power, like the
    first ~80 ms of the H200's decode-heavy window (its first counter interval held ~14 J).
    """
    from llenergymeasure.core.energy.step_records import static_batch_spans, static_batch_steps
    from llenergymeasure.core.metrics import RequestTiming
    from llenergymeasure.testing import integral_j

    rng = np.random.default_rng(seed)
    phase_s = float(rng.uniform(0.0, PERIOD_S))
    t0 = phase_s + 20 * PERIOD_S + float(rng.uniform(0.006, 0.014))
    t, points, timings = t0 + 0.0015, [(0.0, H200_IDLE_W)], []
    for b in range(batches):
        start, pre = t, prefill_s * float(rng.uniform(0.9, 1.1))
        if b == 0 and head_idle_s:
            points.append((start + head_idle_s, H200_W[PREFILL]))
        else:
            points.append((start, H200_W[PREFILL]))
        times = [start + pre + k * step_s for k in range(new_tokens)]
        points.append((times[0], H200_W[DECODE] + float(rng.normal(0.0, 3.0))))
        points.append((times[-1], H200_IDLE_W))
        n_in = int(rng.integers(256, 1537))
        timings += [RequestTiming(start, times, n_in, new_tokens) for _ in range(16)]
        t = times[-1] + 0.007
    t1 = t + 0.002
    schedule = tuple(sorted(dict(points).items()))
    dev = FakeDevice("GPU-fake", power_w=schedule, counter_period_s=PERIOD_S,
                     counter_phase_s=phase_s, counter_seed=seed)  # fmt: skip
    reads = t0 - 0.06 + np.cumsum(rng.uniform(0.002, 0.006, int((t1 - t0 + 1.0) / 0.002)))
    values = np.array(dev.energy_trace_mj(reads))
    after = np.flatnonzero((reads > t1) & (np.diff(values, prepend=values[0]) > 0))
    keep = slice(0, int(after[0]) + 1)  # the tracer stops at the first step after the window
    iv = counter_intervals(reads[keep], values[keep])
    spans = static_batch_spans(timings)
    true_j = {p: 0.0 for p in (PREFILL, DECODE)}
    for sp in spans:
        true_j[sp.phase] += integral_j(schedule, max(sp.start_s, t0), min(sp.end_s, t1))
    true_j["other"] = integral_j(schedule, t0, t1) - sum(true_j.values())
    return TracedWindow(spans, static_batch_steps(timings), (t0, t1), iv, true_j)
