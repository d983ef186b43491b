"""Phase spans and engine steps from the per-request token times the backends already record.

The pytorch backend runs static batches and its ``StepRecorder`` gives every decode step a
time (CUDA events on GPU; docs/measurement.md section 9); each request's token times are
the first *count* step times of its batch, and its ``request_start_s`` is the batch's start.
From the ``RequestTiming`` list alone, then:

- a batch = the requests sharing a ``request_start_s``; its step end times = the token times
  of its longest request;
- step 0 (start -> first token) is the prefill: every request's input tokens, and it emits
  each request's first output token;
- step j >= 1 is a decode step: one decode token for each request that has more than j
  tokens; every request of the batch stays resident (a finished one still holds its slot).

Clocks: the token clock is ``time.perf_counter`` and the energy layer's is ``time.monotonic``;
both are CLOCK_MONOTONIC on Linux (``time.get_clock_info``), which the caller must check.
"""

from __future__ import annotations

from collections.abc import Sequence

from llenergymeasure.core.metrics import RequestTiming
from llenergymeasure.domain.phases import DECODE, PREFILL, PhaseSpan, StepTokens


def _batches(
    timings: Sequence[RequestTiming], ids: Sequence[str] | None
) -> list[tuple[float, list[tuple[str, RequestTiming]]]]:
    """Requests grouped by start time (static batches), in start order."""
    names = list(ids) if ids is not None else [f"r{i}" for i in range(len(timings))]
    if len(names) != len(timings):
        raise ValueError("ids must have one entry per timing")
    groups: dict[float, list[tuple[str, RequestTiming]]] = {}
    for rid, t in zip(names, timings, strict=True):
        groups.setdefault(t.request_start_s, []).append((rid, t))
    return sorted(groups.items())


def static_batch_steps(
    timings: Sequence[RequestTiming], ids: Sequence[str] | None = None
) -> list[StepTokens]:
    """Engine steps of static batches (see the module docstring); ids default to r0, r1, ..."""
    steps: list[StepTokens] = []
    for start, members in _batches(timings, ids):
        times = max((t.token_times_s for _, t in members), key=len)
        if not times:
            continue
        resident = tuple(rid for rid, _ in members)
        prefill = {rid: t.input_tokens for rid, t in members}
        steps.append(StepTokens(start, times[0], prefill_tokens=prefill, resident=resident))
        for j in range(1, len(times)):
            decode = {rid: 1 for rid, t in members if t.output_tokens > j}
            steps.append(StepTokens(times[j - 1], times[j], decode_tokens=decode,
                                    resident=resident))  # fmt: skip
    return steps


def static_batch_spans(timings: Sequence[RequestTiming]) -> list[PhaseSpan]:
    """A prefill span (start -> first token) and a decode span (-> last token) per batch."""
    spans: list[PhaseSpan] = []
    for start, members in _batches(timings, None):
        times = max((t.token_times_s for _, t in members), key=len)
        if not times:
            continue
        n_in = sum(t.input_tokens for _, t in members)
        n_dec = sum(max(0, t.output_tokens - 1) for _, t in members)
        spans.append(PhaseSpan(PREFILL, start, times[0], n_in))
        if len(times) > 1:
            spans.append(PhaseSpan(DECODE, times[0], times[-1], n_dec))
    return spans
