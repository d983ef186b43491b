"""Per-token timestamps while ``transformers`` generates (the stopping-criteria seam).

How it works. ``generate()`` calls its stopping criteria once per decode step, right after the
step's token has been appended to ``input_ids`` (the first call carries the prefill's token,
i.e. time to first token). :class:`StepRecorder` is one such criterion that never stops
anything; it only notes *when* each step finished:

- **CUDA** (``timing_method="cuda_events"``): it records a CUDA event on the device's current
  stream, which is asynchronous (no host wait, no device-to-host copy). The event completes when
  the GPU has produced the step's token. After the batch the events are resolved against a start
  event recorded together with a host-clock reading (the device is idle at that moment), so each
  step gets a host-clock time with the GPU's own resolution.
- **CPU** (``timing_method="host_clock"``): computation is synchronous, so reading the host
  clock in the criterion is the token's arrival time. Other devices (Apple MPS) are synchronised
  before the clock is read (correct, but slower; not a supported measurement platform).

Cost. Per step: one event record (or clock read) and transformers' own ``is_done | criterion``
(one tiny kernel), all queued while the GPU is still busy with the step. Nothing is copied to the
host. An earlier streamer-based design (``tokens.cpu()`` every step) cost ~2 % of static-cache
batch-64 throughput on an H100; see docs/measurement.md.

Token counts. A request that emitted an EOS (only when EOS is allowed, i.e. ``decoder.ignore_eos``
is off) gets padding in later steps, not tokens. Counts per request come from the returned
sequences after the batch (cut after the first EOS, EOS included), and each request's tokens are
the first ``count`` step times: per-step work does not grow with the batch size.

Beam search does not decode one token per request per step (the final beams are chosen at the
end), so there is no per-token arrival time: see :data:`BEAM_SEARCH_NO_TTFT_REASON`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, cast

from llenergymeasure.core.latency_clock import TokenClock

if TYPE_CHECKING:
    import torch

BEAM_SEARCH_NO_TTFT_REASON = (
    "beam search: the final beams are chosen only at the end of generate, so there is no "
    "per-token arrival time; TTFT/ITL/TPOT not measured, only end-to-end time per batch"
)


class StepRecorder:
    """Records the time of every decode step of ``generate`` (a never-stopping criterion).

    One instance serves many batches: call :meth:`begin_batch` before each ``generate`` and
    :meth:`end_batch` after it, with the number of tokens each request got.
    """

    def __init__(self, clock: TokenClock, device: str = "cpu") -> None:
        self.clock = clock
        self.device = device
        self.uses_cuda_events = device.startswith("cuda")
        self.steps = 0
        self._request_ids: list[Hashable] = []
        self._host_times: list[float] = []
        self._events: list[torch.cuda.Event] = []  # reused across batches
        self._n_events = 0
        self._start_event: torch.cuda.Event | None = None
        self._start_s = 0.0
        self._not_done: Any = None  # cached all-False bool tensor returned every step

    @property
    def timing_method(self) -> Literal["cuda_events", "host_clock"]:
        """What the recorded times come from (stored in the result)."""
        return "cuda_events" if self.uses_cuda_events else "host_clock"

    def begin_batch(self, request_ids: Sequence[Hashable], input_tokens: Sequence[int]) -> float:
        """Start the batch's requests on the clock now; returns that start time (s)."""
        if self.uses_cuda_events:
            t = self._anchor_cuda()
        else:
            self._sync_other_device()
            t = self.clock.now()
        self.clock.start_batch(list(request_ids), t, input_tokens=list(input_tokens))
        self._request_ids = list(request_ids)
        self._host_times = []
        self._n_events = 0
        self._start_s = t
        return t

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        """Called by generate after every step: note the time, never stop."""
        if self.uses_cuda_events:
            self._record_event()
        else:
            self._sync_other_device()
            self._host_times.append(self.clock.now())
        self.steps += 1
        return self._all_false(input_ids)

    def end_batch(self, tokens_per_request: Sequence[int]) -> None:
        """After generate: give each request the times of its first ``count`` steps."""
        times = self._step_times()
        if len(tokens_per_request) != len(self._request_ids):
            raise ValueError("end_batch needs one token count per request of the batch")
        for rid, n_tokens in zip(self._request_ids, tokens_per_request, strict=True):
            if n_tokens > len(times):
                raise ValueError(
                    f"request {rid!r} has {n_tokens} tokens but only {len(times)} steps ran"
                )
            self.clock.add_tokens(rid, times[:n_tokens])
            self.clock.finish_request(rid)
        self._request_ids = []

    # ---- CUDA events ----------------------------------------------------------------------
    def _anchor_cuda(self) -> float:
        """Idle the device, read the host clock and record the start event right after it."""
        import torch

        torch.cuda.synchronize(self.device)
        if self._start_event is None:
            self._start_event = _timing_event()
        t = self.clock.now()
        self._start_event.record(torch.cuda.current_stream(self.device))
        return t

    def _record_event(self) -> None:
        import torch

        if self._n_events == len(self._events):
            self._events.append(_timing_event())
        self._events[self._n_events].record(torch.cuda.current_stream(self.device))
        self._n_events += 1

    def _step_times(self) -> list[float]:
        """Host-clock time of each step of the batch just generated."""
        if not self.uses_cuda_events:
            return list(self._host_times)
        if self._n_events == 0:
            return []
        events = self._events[: self._n_events]
        events[-1].synchronize()
        start = self._start_event
        assert start is not None, "begin_batch records the start event"
        return [self._start_s + start.elapsed_time(ev) / 1000.0 for ev in events]

    # ---- helpers --------------------------------------------------------------------------
    def _all_false(self, input_ids: Any) -> Any:
        not_done = self._not_done
        batch, device = input_ids.shape[0], input_ids.device
        if not_done is None or not_done.shape[0] != batch or not_done.device != device:
            import torch

            not_done = torch.zeros(batch, dtype=torch.bool, device=device)
            self._not_done = not_done
        return not_done

    def _sync_other_device(self) -> None:
        """Asynchronous non-CUDA devices (MPS) must finish before the host clock is read."""
        if self.device.startswith("mps"):
            import torch

            torch.mps.synchronize()


def _timing_event() -> torch.cuda.Event:
    """A new ``torch.cuda.Event(enable_timing=True)`` (torch leaves its constructor unannotated)."""
    import torch

    new_event = cast("Callable[..., torch.cuda.Event]", torch.cuda.Event)
    return new_event(enable_timing=True)


def _criteria_base() -> type:
    """transformers' StoppingCriteria (imported lazily so this module loads without torch)."""
    from transformers import StoppingCriteria

    return StoppingCriteria


@cache
def _recorder_class() -> type:
    """StepRecorder mixed with StoppingCriteria, built once on first use."""
    return type("TransformersStepRecorder", (StepRecorder, _criteria_base()), {})


def make_step_recorder(clock: TokenClock, device: str = "cpu") -> StepRecorder:
    """A :class:`StepRecorder` that is also a ``transformers`` ``StoppingCriteria``.

    The subclass is built lazily so that importing this module needs no transformers.
    """
    recorder: StepRecorder = _recorder_class()(clock, device)
    return recorder
