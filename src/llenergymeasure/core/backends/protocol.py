"""The contract every inference backend implements, and the plain data it exchanges.

Pure Python (no torch import): the orchestrator, ``--dry-run`` and ``llem config`` read these
types without loading a framework.

Call order (the orchestrator owns it; docs/measurement.md §1)::

    backend.initialize(config, prompts)      # load model + tokenizer      (not measured)
    prepared = backend.tokenize(prompts)     # tokenise, pad, copy to device (not measured)
    backend.warmup_step(prepared)            # repeated by the warm-up logic (not measured)
    backend.synchronize(); window.begin()
    output = backend.run_inference(prepared) # generation only               (measured)
    backend.synchronize(); window.end()
    output.finalize()                        # deferred derivations         (not measured)
    backend.cleanup()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llenergymeasure.config.models import ExperimentConfig
    from llenergymeasure.core.metrics import RequestTiming
    from llenergymeasure.datasets.types import Prompt
    from llenergymeasure.domain.phases import StepTokens

#: ``direct``: the orchestrator runs the backend in its own process; ``processes``: it starts
#: ``n_processes`` worker processes, each running the backend on its shard of the prompts
#: (``orchestration/launcher.py``).
LaunchMode = Literal["direct", "processes"]
CudaManagement = Literal["orchestrator", "backend"]
TimingMethod = Literal["cuda_events", "host_clock", "e2e_only", "engine_metrics", "engine_steps"]
PeakMemorySource = Literal["backend", "device_telemetry"]


@dataclass(frozen=True)
class RuntimeCapabilities:
    """How a backend must be launched and what it can measure.

    ``cuda_management="backend"`` means the backend creates its own CUDA context/processes
    (vLLM, TensorRT-LLM workers): the orchestrator must not touch CUDA before
    ``initialize``. ``launch_mode="processes"`` asks the orchestrator for ``n_processes``
    data-parallel worker processes (see ``LaunchMode``). ``supports_streaming_timestamps`` is False when per-token times are not
    observable (then TTFT/ITL are not measured and ``InferenceOutput`` says why).
    """

    launch_mode: LaunchMode
    cuda_management: CudaManagement
    supports_streaming_timestamps: bool
    supports_random_weights: bool = True
    n_processes: int = 1
    notes: tuple[str, ...] = ()


@dataclass
class PreparedBatch:
    """One batch ready for generation: inputs already tokenised (and on the device).

    ``payload`` is backend-specific (tensors for pytorch, token-id lists for vLLM);
    ``input_tokens`` counts real prompt tokens per request, padding excluded.
    """

    request_ids: list[str]
    input_tokens: list[int]
    padded_length: int
    payload: Any = field(repr=False)

    @property
    def size(self) -> int:
        """Number of requests in the batch."""
        return len(self.request_ids)

    @property
    def shape_key(self) -> tuple[int, int]:
        """(batch size, padded input length): the shape a compiled graph is specialised on."""
        return (self.size, self.padded_length)


@dataclass
class PreparedBatches:
    """All batches of one experiment, prepared before the measurement window."""

    batches: list[PreparedBatch]
    max_new_tokens: int
    truncated_requests: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_requests(self) -> int:
        """Requests over all batches."""
        return sum(b.size for b in self.batches)

    @property
    def input_tokens(self) -> int:
        """Prompt tokens over all requests, padding excluded."""
        return sum(sum(b.input_tokens) for b in self.batches)

    @property
    def padded_input_tokens(self) -> int:
        """Prompt positions the model processes, padding included (prefill work)."""
        return sum(b.size * b.padded_length for b in self.batches)

    def distinct_shape_batches(self) -> list[PreparedBatch]:
        """The first batch of every distinct shape, in order (what warm-up must cover)."""
        seen: dict[tuple[int, int], PreparedBatch] = {}
        for batch in self.batches:
            seen.setdefault(batch.shape_key, batch)
        return list(seen.values())


@dataclass
class InferenceOutput:
    """What the measured part returns; the orchestrator turns it into metrics.

    Token counts exclude padding (prompt side) and tokens after a request's EOS (output side).
    ``ttft_not_measured_reason`` is set when ``timing_method`` is ``e2e_only``; then
    ``batch_durations_s`` (wall time of each batch's generate call, which is the E2E latency
    of every request in that batch) is the only latency information.

    Memory: ``peak_memory_bytes`` is what the backend measured itself (``peak_memory_method``
    says how); an engine whose memory lives in other processes sets ``peak_memory_source``
    to ``"device_telemetry"`` and the orchestrator takes the device-level peak from the
    sampled timeline. ``kv_cache_reserved_bytes`` is the KV cache an engine pre-allocated.
    ``steps`` (engine step loops) are per-step token records for phase/per-request energy;
    ``backend_details`` are engine facts recorded with the result (version, settings).
    """

    timings: list[RequestTiming]
    n_batches: int
    device: str
    timing_method: TimingMethod
    duration_s: float
    peak_memory_bytes: int | None = None
    peak_memory_method: str | None = None
    peak_memory_source: PeakMemorySource | None = None
    peak_memory_not_measured_reason: str | None = None
    kv_cache_reserved_bytes: int | None = None
    kv_cache_reserved_method: str | None = None
    padded_input_tokens: int | None = None
    ttft_not_measured_reason: str | None = None
    output_token_ids: list[list[int]] | None = field(default=None, repr=False)
    batch_durations_s: list[float] = field(default_factory=list)
    steps: list[StepTokens] = field(default_factory=list, repr=False)
    backend_details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _deferred: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def defer(self, fill: Callable[[], None]) -> None:
        """Run ``fill`` at :meth:`finalize` (after the window) instead of inside it: a
        backend that only stamps while generating derives its timings there."""
        self._deferred.append(fill)

    def finalize(self) -> InferenceOutput:
        """Run the deferred derivations (once); call after the window has closed."""
        while self._deferred:
            self._deferred.pop(0)()
        return self

    @property
    def n_requests(self) -> int:
        """Requests completed."""
        return len(self.timings)

    @property
    def input_tokens(self) -> int:
        """Prompt tokens over all requests, padding excluded."""
        return sum(t.input_tokens for t in self.timings)

    @property
    def output_tokens(self) -> int:
        """Generated tokens over all requests, padding/post-EOS excluded."""
        return sum(t.output_tokens for t in self.timings)


@runtime_checkable
class InferenceBackend(Protocol):
    """An inference engine measured by llenergymeasure (docs/ARCHITECTURE.md, Backends)."""

    name: str

    def get_runtime_capabilities(
        self, config: ExperimentConfig | None = None
    ) -> RuntimeCapabilities:
        """How to launch this backend for ``config`` (or as initialised) and what it can
        time; callable before initialize."""
        ...

    def validate_config(self, config: ExperimentConfig) -> list[str]:
        """Warnings about the config for this backend (errors raise ConfigError)."""
        ...

    def initialize(self, config: ExperimentConfig, prompts: list[Prompt]) -> None:
        """Load the model and tokenizer (not measured)."""
        ...

    def tokenize(self, prompts: list[Prompt]) -> PreparedBatches:
        """Tokenise, batch and move inputs to the device (before the window)."""
        ...

    def warmup_step(self, prepared: PreparedBatches) -> float:
        """One warm-up generation covering every compiled shape; returns its latency in s."""
        ...

    def run_inference(self, prepared: PreparedBatches) -> InferenceOutput:
        """Generate for all batches (the measured part) and return per-request timings."""
        ...

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on CPU); called at window edges."""
        ...

    def device_indices(self) -> list[int]:
        """CUDA device indices in use (empty on CPU)."""
        ...

    def cleanup(self, *, process_exits: bool = False) -> None:
        """Free the model and device memory; safe to call twice.

        ``process_exits``: this process ends right after (a study's experiment child): what
        its exit frees anyway (host objects, device memory) may be left to it; an engine
        and its worker processes are still stopped."""
        ...
