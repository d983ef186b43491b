"""Inference metric models: tokens, throughput, latency, energy ratios, FLOPs, memory.

Plain pydantic v2 data (``extra="forbid"``), units in field names. The arithmetic that fills
them lives in :mod:`llenergymeasure.core.metrics`; nothing here computes anything.

Memory figures use decimal megabytes: 1 MB = 10**6 bytes
(:func:`llenergymeasure.core.metrics.bytes_to_mb`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

LATENCY_DEFINITIONS: dict[str, str] = {
    "ttft": "time to first token = first output token time - request start (ms), one sample per request",
    "itl": (
        "inter-token latency = gap between consecutive output tokens of one request (ms); "
        "gaps of all requests are pooled, one sample per gap; only requests with a timestamp "
        "for every output token contribute"
    ),
    "tpot": (
        "time per output token = (E2E - TTFT) / (output_tokens - 1) (ms), one sample per "
        "request with >= 2 output tokens"
    ),
    "e2e": "end-to-end latency = last output token time - request start (ms), one sample per request",
    "queue": (
        "queueing time = when the engine first scheduled the request - request start (ms), "
        "one sample per request; only engines that schedule requests themselves (vLLM: "
        "continuous batching) report it; it is part of TTFT"
    ),
    "request_start": (
        "when the request was handed to the engine; for static batches the batch start, so "
        "TTFT includes the prefill of the whole batch"
    ),
    "aggregation": (
        "late aggregation: statistics are computed over the pooled per-request (or per-gap) "
        "samples, never by averaging per-request averages; percentiles use linear interpolation"
    ),
}


class _Metric(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyStats(_Metric):
    """Summary statistics of one latency metric over pooled samples (all in ms)."""

    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    n_samples: int = Field(ge=1)


class LatencyMetrics(_Metric):
    """TTFT, ITL, TPOT and E2E statistics of one experiment.

    Definitions (also stored in ``definitions`` so that every result carries them):

    - TTFT = first output token time − request start.
    - ITL = gaps between consecutive output tokens of one request, pooled over requests.
    - TPOT = (E2E − TTFT) / (n_out − 1), one sample per request with n_out ≥ 2.
    - E2E = last output token time − request start.
    - queue = first scheduled by the engine − request start (vLLM only; part of TTFT).

    A metric is ``None`` when no request gave a sample for it (e.g. ITL when the backend
    reports only first/last token times, or when latency was not recorded at all).
    """

    ttft: LatencyStats | None = None
    itl: LatencyStats | None = None
    tpot: LatencyStats | None = None
    e2e: LatencyStats | None = None
    queue: LatencyStats | None = Field(
        default=None, description="queueing time (engine scheduling delay), part of TTFT"
    )
    n_requests_timed: int = Field(default=0, ge=0, description="requests with >= 1 token time")
    definitions: dict[str, str] = Field(default_factory=lambda: dict(LATENCY_DEFINITIONS))


class TokenCounts(_Metric):
    """Tokens processed in the measurement window (padding excluded)."""

    input_tokens: int = Field(ge=0, description="prompt tokens, padding excluded")
    output_tokens: int = Field(ge=0, description="generated tokens, padding excluded")
    total_tokens: int = Field(ge=0, description="input_tokens + output_tokens")
    n_requests: int = Field(ge=0)

    @model_validator(mode="after")
    def _total_is_sum(self) -> TokenCounts:
        if self.total_tokens != self.input_tokens + self.output_tokens:
            raise ValueError(
                f"total_tokens ({self.total_tokens}) must equal input_tokens + output_tokens "
                f"({self.input_tokens} + {self.output_tokens})"
            )
        return self


class Throughput(_Metric):
    """Rates over the measurement window."""

    output_tokens_per_s: float = Field(ge=0.0, description="generated tokens / duration")
    total_tokens_per_s: float = Field(ge=0.0, description="(input + output tokens) / duration")
    requests_per_s: float = Field(ge=0.0)
    duration_s: float = Field(gt=0.0, description="measurement window length")


class EnergyRatios(_Metric):
    """Energy divided by work. Each ratio names its denominator; ``None`` when it is zero."""

    energy_j: float = Field(ge=0.0, description="the numerator of every ratio")
    energy_basis: str = Field(
        description='which energy, e.g. "gpu gross counter", "gpu above idle"'
    )
    j_per_output_token: float | None = Field(default=None, description="energy_j / output_tokens")
    mj_per_output_token: float | None = Field(
        default=None, description="1000 × energy_j / output_tokens (millijoules)"
    )
    j_per_request: float | None = Field(default=None, description="energy_j / n_requests")
    j_per_total_token: float | None = Field(
        default=None, description="energy_j / (input_tokens + output_tokens)"
    )


FLOPS_METHOD = "analytic: 2·N_non_embedding per token + attention"


class FlopsEstimate(_Metric):
    """Analytic forward-pass FLOPs (see :func:`llenergymeasure.core.metrics.estimate_flops`).

    Not measured by a profiler. The LM head (unembedding) is included only when the
    architecture gave its size (``method`` then says so). Excludes embedding lookup,
    norms/activations/softmax, padding, beam search and tokens computed after a request ended.
    """

    prefill_flops: int = Field(ge=0)
    decode_flops: int = Field(ge=0)
    total_flops: int = Field(ge=0)
    method: str = FLOPS_METHOD
    flops_per_output_token: float | None = Field(
        default=None, description="total_flops / output_tokens (None when no output tokens)"
    )
    achieved_tflops_per_s: float | None = Field(
        default=None, description="total_flops / duration_s / 1e12 (None when duration unknown)"
    )


class MemoryMetrics(_Metric):
    """Device memory, in decimal MB (10**6 bytes); each figure says how it was obtained."""

    model_memory_mb: float | None = Field(default=None, ge=0.0, description="weights resident")
    model_memory_method: str | None = Field(default=None, description="how the weights were sized")
    peak_memory_mb: float | None = Field(default=None, ge=0.0, description="peak over the window")
    peak_memory_method: str | None = Field(
        default=None, description="what the peak counts (allocator vs device-level)"
    )
    peak_memory_not_measured: str | None = Field(
        default=None, description="why there is no peak (instead of a silent null)"
    )
    kv_cache_estimate_mb: float | None = Field(
        default=None, ge=0.0, description="analytic KV cache size at the largest batch × sequence"
    )
    kv_cache_reserved_mb: float | None = Field(
        default=None, ge=0.0, description="KV cache the engine pre-allocated (vLLM)"
    )
    kv_cache_reserved_method: str | None = None
    device: str | None = Field(default=None, description='e.g. "cuda:0", "cpu"')


class InferenceMetrics(_Metric):
    """Everything computed from one experiment's inference, apart from raw energy."""

    tokens: TokenCounts
    throughput: Throughput
    latency: LatencyMetrics = Field(default_factory=LatencyMetrics)
    energy_ratios: EnergyRatios | None = Field(
        default=None, description="from gross energy; None when energy was not measured"
    )
    energy_ratios_above_idle: EnergyRatios | None = Field(
        default=None, description="from energy above the idle baseline; None without a baseline"
    )
    flops: FlopsEstimate | None = Field(default=None, description="None when architecture unknown")
    memory: MemoryMetrics | None = None
