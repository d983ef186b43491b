"""Per-token timestamps while ``transformers`` generates (the streamer seam).

How it works. ``generate()`` hands the prompt to ``streamer.put(input_ids.cpu())`` once, then
after every decode step hands the new token of every sequence to ``streamer.put(tokens.cpu())``
(transformers' ``StopCheck``). The ``.cpu()`` copy waits for the device, so when ``put`` runs
the token exists on the host: that is the moment we read ``time.perf_counter()``. The first
``put`` after the prompt carries the prefill's token (time to first token).

Cost. On CUDA, ``generate`` already synchronises once per step to test whether every sequence
has finished (``unfinished_sequences.max() == 0``), so the streamer adds no extra device
synchronisation: only a ``batch``-element D2H copy and a few microseconds of Python per step.
On Apple MPS transformers defers its stop check by one step and streams tokens one step late;
timestamps there are late by one step (not a supported measurement platform).

A request stops being active after the step in which it emitted an EOS id (only when EOS is
allowed, i.e. ``decoder.ignore_eos`` is off); later steps carry padding for it, not tokens.

Beam search cannot stream in transformers (``generate`` rejects a streamer with beams), so
for beams only end-to-end time per batch is known: see :data:`BEAM_SEARCH_NO_TTFT_REASON`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from functools import cache
from typing import Any

from llenergymeasure.core.latency_clock import TokenClock

BEAM_SEARCH_NO_TTFT_REASON = (
    "beam search: transformers cannot stream tokens with num_beams > 1, and the final beams "
    "are chosen only at the end, so there is no per-token arrival time; TTFT/ITL/TPOT not "
    "measured, only end-to-end time per batch"
)


def _streamer_base() -> type:
    """transformers' BaseStreamer (imported lazily so this module loads without torch)."""
    from transformers.generation.streamers import BaseStreamer

    return BaseStreamer  # type: ignore[no-any-return]


class StepTimestamper:
    """Streamer that records the time of each decode step and when each request finished.

    One instance serves many batches: call :meth:`begin_batch` before each ``generate``.
    ``eos_token_ids`` empty means EOS cannot end a request (fixed output length).

    ``put`` does O(1) work per step (one clock read, one append) whatever the batch size,
    because it runs between decode steps while the device waits; per-request token times are
    expanded from the step times once, in :meth:`end`, after the batch has finished.
    """

    def __init__(self, clock: TokenClock, eos_token_ids: Iterable[int] = ()) -> None:
        self.clock = clock
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        self._request_ids: list[Hashable] = []
        self._tokens_at_finish: dict[int, int] = {}  # slot -> tokens it got (EOS included)
        self._step_times: list[float] = []
        self._prompt_seen = False
        self.steps = 0

    def begin_batch(
        self,
        request_ids: Sequence[Hashable],
        input_tokens: Sequence[int],
        start_s: float | None = None,
    ) -> float:
        """Start the batch's requests on the clock (default: now); returns the start time."""
        t = self.clock.now() if start_s is None else start_s
        self.clock.start_batch(list(request_ids), t, input_tokens=list(input_tokens))
        self._request_ids = list(request_ids)
        self._tokens_at_finish = {}
        self._step_times = []
        self._prompt_seen = False
        return t

    def put(self, value: Any) -> None:
        """Called by generate: first with the prompt, then with one token per sequence."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._step_times.append(self.clock.now())
        self.steps += 1
        if self.eos_token_ids:
            self._retire_finished(value.reshape(-1).tolist())

    def _retire_finished(self, tokens: list[int]) -> None:
        """Note, for requests that just emitted an EOS id, how many tokens they got."""
        n_steps = len(self._step_times)
        for slot, token in enumerate(tokens):
            if token in self.eos_token_ids and slot not in self._tokens_at_finish:
                self._tokens_at_finish[slot] = n_steps

    def end(self) -> None:
        """Called by generate when the batch is done: hand per-request times to the clock."""
        times = self._step_times
        for slot, rid in enumerate(self._request_ids):
            n_tokens = self._tokens_at_finish.get(slot, len(times))
            self.clock.add_tokens(rid, times[:n_tokens])
            if slot in self._tokens_at_finish:
                self.clock.finish_request(rid)
        self._request_ids = []
        self._step_times = []


@cache
def _streamer_class() -> type:
    """StepTimestamper mixed with BaseStreamer, built once on first use."""
    return type("TransformersStepTimestamper", (StepTimestamper, _streamer_base()), {})


def make_streamer(clock: TokenClock, eos_token_ids: Iterable[int] = ()) -> StepTimestamper:
    """A :class:`StepTimestamper` that is also a ``transformers`` ``BaseStreamer``.

    The subclass is built lazily so that importing this module needs no transformers.
    """
    streamer: StepTimestamper = _streamer_class()(clock, eos_token_ids)
    return streamer
