"""Per-request token timestamps while generating (pure Python, no torch).

A backend records when each request started and when each of its output tokens arrived;
:func:`llenergymeasure.core.metrics.latency_from_timings` turns that into TTFT/ITL/TPOT/E2E.

Batched generation: every decode step yields one token for each request still running,
so the backend calls ``on_step`` with the ids of those requests. A request that has hit
its EOS (or its token limit) is left out of later steps, or marked with
``finish_request`` so that a later step naming it is caught as a bug::

    clock = TokenClock()
    clock.start_batch(["r0", "r1"], clock.now(), input_tokens=[12, 7])
    for step in generation:                      # device synchronised before reading time
        clock.on_step(clock.now(), still_running_ids)
    timings = clock.finish()                     # list[RequestTiming], in start order
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from llenergymeasure.core.metrics import RequestTiming


@dataclass
class _Request:
    start_s: float
    input_tokens: int
    token_times_s: list[float] = field(default_factory=list)
    finished: bool = False


class TokenClock:
    """Collects request start and per-token arrival times (seconds, one monotonic clock)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._requests: dict[Hashable, _Request] = {}

    def now(self) -> float:
        """Current time from the clock this instance was built with (``perf_counter``)."""
        return self._clock()

    def start_batch(
        self,
        request_ids: Sequence[Hashable],
        t_s: float | None = None,
        input_tokens: Sequence[int] | None = None,
    ) -> None:
        """Register requests that start together at ``t_s`` (default: now).

        ``input_tokens`` gives each request's prompt length (padding excluded), aligned with
        ``request_ids``. Ids must be unique over the clock's life.
        """
        t = self.now() if t_s is None else t_s
        lens = list(input_tokens) if input_tokens is not None else [0] * len(request_ids)
        if len(lens) != len(request_ids):
            raise ValueError("input_tokens must have one entry per request id")
        for rid, n_in in zip(request_ids, lens, strict=True):
            if rid in self._requests:
                raise ValueError(f"request id {rid!r} already started")
            self._requests[rid] = _Request(start_s=t, input_tokens=int(n_in))

    def on_step(self, t_s: float, active_request_ids: Iterable[Hashable]) -> None:
        """Record one output token at ``t_s`` for each request in ``active_request_ids``."""
        for rid in active_request_ids:
            req = self._get(rid)
            if req.finished:
                raise ValueError(f"request {rid!r} got a token after it finished")
            last = req.token_times_s[-1] if req.token_times_s else req.start_s
            if t_s < last:
                raise ValueError(f"time went backwards for request {rid!r}: {t_s} < {last}")
            req.token_times_s.append(t_s)

    def add_tokens(self, request_id: Hashable, times_s: Sequence[float]) -> None:
        """Record several output tokens of one request at once (same checks as ``on_step``).

        Lets a step recorder keep one timestamp per decode step while generating and expand it to
        per-request token times after the batch, so per-step work does not grow with batch size.
        """
        req = self._get(request_id)
        if not times_s:
            return
        if req.finished:
            raise ValueError(f"request {request_id!r} got a token after it finished")
        last = req.token_times_s[-1] if req.token_times_s else req.start_s
        if times_s[0] < last or any(b < a for a, b in itertools.pairwise(times_s)):
            raise ValueError(f"time went backwards for request {request_id!r}")
        req.token_times_s.extend(times_s)

    def finish_request(self, request_id: Hashable) -> None:
        """Mark a request finished (EOS or limit); later tokens for it are an error."""
        self._get(request_id).finished = True

    def finish(self) -> list[RequestTiming]:
        """Timings of every registered request, in the order they were started."""
        return [
            RequestTiming(
                request_start_s=r.start_s,
                token_times_s=list(r.token_times_s),
                input_tokens=r.input_tokens,
                output_tokens=len(r.token_times_s),
            )
            for r in self._requests.values()
        ]

    def _get(self, rid: Hashable) -> _Request:
        try:
            return self._requests[rid]
        except KeyError:
            raise ValueError(
                f"request {rid!r} was never started (call start_batch first)"
            ) from None
