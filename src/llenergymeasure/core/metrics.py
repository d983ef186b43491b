"""Pure metric arithmetic: latency statistics, throughput, energy ratios, FLOPs, KV cache, CO2.

No torch here (numpy only); every function takes plain numbers and returns a model from
:mod:`llenergymeasure.domain.metrics` or :mod:`llenergymeasure.domain.co2`. Time stamps come
in seconds (``time.perf_counter``); latencies go out in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Protocol

import numpy as np

from llenergymeasure.domain.co2 import JOULES_PER_KWH, CO2Estimate
from llenergymeasure.domain.metrics import (
    FLOPS_METHOD,
    EnergyRatios,
    FlopsEstimate,
    LatencyMetrics,
    LatencyStats,
    Throughput,
    TokenCounts,
)

BYTES_PER_MB = 1_000_000
MS_PER_S = 1000.0

# --------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class RequestTiming:
    """Timestamps of one request, in seconds on one monotonic clock (``time.perf_counter``).

    ``token_times_s`` holds the arrival time of each output token. A backend that knows only
    some of them (e.g. first and last) passes those and the true ``output_tokens``; such a
    request then contributes TTFT, TPOT and E2E but no ITL gaps. The first and last entries
    must be the first and last token's times. ``queue_s`` (engines that schedule requests
    themselves: vLLM) is the time from the request start until the engine first scheduled
    it, a part of TTFT; None when the backend does not know it.
    """

    request_start_s: float
    token_times_s: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    queue_s: float | None = None

    def __post_init__(self) -> None:
        times = self.token_times_s
        if self.input_tokens < 0 or self.output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        if len(times) > self.output_tokens:
            raise ValueError(
                f"{len(times)} token times for {self.output_tokens} output tokens: "
                "output_tokens must count every token that has a time"
            )
        if times and times[0] < self.request_start_s:
            raise ValueError("first token time is before the request start")
        if any(b < a for a, b in pairwise(times)):
            raise ValueError("token times must be non-decreasing")
        if self.queue_s is not None and self.queue_s < 0:
            raise ValueError("queue_s must be >= 0")

    @property
    def has_every_token_time(self) -> bool:
        """True when there is one timestamp per output token (ITL is then defined)."""
        return len(self.token_times_s) == self.output_tokens


def summarise(values_ms: Iterable[float]) -> LatencyStats | None:
    """Mean, min, max and p50/p90/p95/p99 (numpy linear interpolation) of pooled samples.

    Returns ``None`` for no samples.
    """
    arr = np.asarray(list(values_ms), dtype=float)
    if arr.size == 0:
        return None
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99], method="linear")
    return LatencyStats(
        mean_ms=float(arr.mean()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        min_ms=float(arr.min()),
        max_ms=float(arr.max()),
        n_samples=int(arr.size),
    )


def _ttft_ms(t: RequestTiming) -> float:
    return (t.token_times_s[0] - t.request_start_s) * MS_PER_S


def _e2e_ms(t: RequestTiming) -> float:
    return (t.token_times_s[-1] - t.request_start_s) * MS_PER_S


def _tpot_ms(t: RequestTiming) -> float:
    """(E2E − TTFT) / (n_out − 1); caller guarantees n_out >= 2."""
    return (_e2e_ms(t) - _ttft_ms(t)) / (t.output_tokens - 1)


def _itl_gaps_ms(t: RequestTiming) -> list[float]:
    return [(b - a) * MS_PER_S for a, b in pairwise(t.token_times_s)]


def latency_from_timings(timings: Sequence[RequestTiming]) -> LatencyMetrics:
    """Latency statistics by late aggregation over all requests.

    TTFT and E2E: one sample per request with at least one token time. TPOT: one sample per
    request with >= 2 output tokens and a distinct last-token time. ITL: every gap between
    consecutive tokens of every request that has a time for each token, pooled into one
    sample set — per-request means are never averaged. Queueing: one sample per request
    whose backend reported it.
    """
    timed = [t for t in timings if t.token_times_s]
    # TPOT needs the last token's own time: with a single known time it is undefined.
    tpot_ok = [t for t in timed if t.output_tokens >= 2 and len(t.token_times_s) >= 2]
    full = [t for t in timed if t.has_every_token_time]
    return LatencyMetrics(
        ttft=summarise(_ttft_ms(t) for t in timed),
        itl=summarise(g for t in full for g in _itl_gaps_ms(t)),
        tpot=summarise(_tpot_ms(t) for t in tpot_ok),
        e2e=summarise(_e2e_ms(t) for t in timed),
        queue=summarise(t.queue_s * MS_PER_S for t in timings if t.queue_s is not None),
        n_requests_timed=len(timed),
    )


# --------------------------------------------------------------------------- tokens, rates


def token_counts(input_lens: Sequence[int], output_lens: Sequence[int]) -> TokenCounts:
    """Token totals from per-request lengths (padding must already be excluded)."""
    if len(input_lens) != len(output_lens):
        raise ValueError("input_lens and output_lens must have one entry per request")
    n_in, n_out = int(sum(input_lens)), int(sum(output_lens))
    return TokenCounts(
        input_tokens=n_in,
        output_tokens=n_out,
        total_tokens=n_in + n_out,
        n_requests=len(input_lens),
    )


def throughput(tokens: TokenCounts, duration_s: float) -> Throughput:
    """Output tokens/s, total tokens/s and requests/s over a window of ``duration_s``."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    return Throughput(
        output_tokens_per_s=tokens.output_tokens / duration_s,
        total_tokens_per_s=tokens.total_tokens / duration_s,
        requests_per_s=tokens.n_requests / duration_s,
        duration_s=duration_s,
    )


def _ratio(numerator: float, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def energy_ratios(energy_j: float | None, tokens: TokenCounts, basis: str) -> EnergyRatios | None:
    """Energy per output token / request / total token; ``None`` when energy was not measured.

    ``basis`` names the energy used (e.g. ``"gpu gross counter"``, ``"gpu above idle"``).
    A ratio whose denominator is zero is ``None``.
    """
    if energy_j is None:
        return None
    if energy_j < 0:
        raise ValueError(f"energy_j must be >= 0, got {energy_j}")
    j_per_out = _ratio(energy_j, tokens.output_tokens)
    return EnergyRatios(
        energy_j=energy_j,
        energy_basis=basis,
        j_per_output_token=j_per_out,
        mj_per_output_token=None if j_per_out is None else j_per_out * 1000.0,
        j_per_request=_ratio(energy_j, tokens.n_requests),
        j_per_total_token=_ratio(energy_j, tokens.total_tokens),
    )


# --------------------------------------------------------------------------- FLOPs


class TransformerShape(Protocol):
    """What the FLOPs and KV-cache arithmetic needs from an architecture.

    ``catalogue.architectures.ArchitectureSpec`` satisfies it. An object that also has
    ``n_params_lm_head`` gets the LM-head matmul counted (see :func:`estimate_flops`).
    """

    @property
    def n_params_non_embedding(self) -> int: ...
    @property
    def n_layers(self) -> int: ...
    @property
    def n_heads(self) -> int: ...
    @property
    def n_kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...


def attention_flops_per_token(arch: TransformerShape, context_len: int) -> int:
    """Score and value FLOPs of one query token attending to ``context_len`` keys, all layers.

    Per layer and query head: ``q·Kᵀ`` is ``context_len × head_dim`` multiply-adds and
    ``softmax(scores)·V`` another ``context_len × head_dim``; a multiply-add is 2 FLOPs, so
    ``2 · 2 · context_len · n_heads · head_dim`` per layer. Grouped-query attention shares K/V
    between heads but every query head still does its own dot products, so ``n_kv_heads``
    does not appear. Softmax, scaling and masking are not counted.
    """
    return 4 * context_len * arch.n_heads * arch.head_dim * arch.n_layers


def _attention_span_flops(arch: TransformerShape, first_context: int, n_tokens: int) -> int:
    """Attention FLOPs of ``n_tokens`` query tokens whose contexts are
    ``first_context, first_context + 1, …`` (closed form of the arithmetic series)."""
    if n_tokens <= 0:
        return 0
    contexts_sum = n_tokens * first_context + n_tokens * (n_tokens - 1) // 2
    return attention_flops_per_token(arch, 1) * contexts_sum


def _lm_head_params(arch: TransformerShape) -> int:
    return int(getattr(arch, "n_params_lm_head", 0) or 0)


def prefill_flops(arch: TransformerShape, input_len: int) -> int:
    """FLOPs of one prefill forward over ``input_len`` prompt tokens (causal).

    ``2·N·L`` for the weight matmuls plus causal attention: token ``i`` (0-based) attends to
    ``i + 1`` keys, so contexts sum to ``L(L+1)/2``. Plus the LM head once (only the last
    position's logits are computed to sample the first output token).
    """
    if input_len <= 0:
        return 0
    linear = 2 * arch.n_params_non_embedding * input_len
    return linear + _attention_span_flops(arch, 1, input_len) + 2 * _lm_head_params(arch)


def decode_flops(arch: TransformerShape, input_len: int, output_len: int) -> int:
    """FLOPs of the decode steps of one request that generated ``output_len`` tokens.

    The prefill already produced output token 1, so there are ``output_len − 1`` decode
    forwards, each over one token (the previous output). The step that produces output
    token ``k`` (k = 2…n) attends to ``input_len + k − 1`` keys (itself included). Each
    step: ``2·N`` + attention + LM head.
    """
    steps = max(output_len - 1, 0)
    linear = 2 * arch.n_params_non_embedding * steps
    attention = _attention_span_flops(arch, input_len + 1, steps)
    return linear + attention + 2 * _lm_head_params(arch) * steps


def estimate_flops(
    arch: TransformerShape,
    prompts_input_lens: Sequence[int],
    output_lens: Sequence[int],
    *,
    duration_s: float | None = None,
) -> FlopsEstimate:
    """Analytic forward FLOPs of a set of requests (inference: 2·N per token, not 6·N).

    Per request (lengths without padding), N = ``n_params_non_embedding``:

    - prefill = ``2·N·L_in + 4·n_layers·n_heads·head_dim · L_in(L_in+1)/2``
      (causal attention: only the unmasked query–key pairs)
    - decode  = ``Σ_{k=2..n_out} [2·N + 4·n_layers·n_heads·head_dim · (L_in + k − 1)]``
    - if ``arch`` has ``n_params_lm_head``: ``+ 2·n_params_lm_head`` per output token
      (one logits row per forward: the last prefill position, then each decode step).

    Assumes a KV cache (no recomputation). Not counted: embedding lookup, norms,
    activations, softmax, rotary embeddings, padding tokens, tokens computed for a request
    after it finished (static batches), beam search (extra beams), speculative decoding,
    and kernels that compute masked attention blocks anyway.
    """
    if len(prompts_input_lens) != len(output_lens):
        raise ValueError("prompts_input_lens and output_lens must have one entry per request")
    pre = sum(prefill_flops(arch, int(n_in)) for n_in in prompts_input_lens)
    dec = sum(
        decode_flops(arch, int(n_in), int(n_out))
        for n_in, n_out in zip(prompts_input_lens, output_lens, strict=True)
    )
    total, n_out_total = pre + dec, int(sum(output_lens))
    has_head = _lm_head_params(arch) > 0
    return FlopsEstimate(
        prefill_flops=pre,
        decode_flops=dec,
        total_flops=total,
        method=FLOPS_METHOD + (" + 2·N_lm_head per output token" if has_head else ""),
        flops_per_output_token=total / n_out_total if n_out_total > 0 else None,
        achieved_tflops_per_s=total / duration_s / 1e12 if duration_s else None,
    )


# --------------------------------------------------------------------------- memory, CO2


def kv_cache_bytes(
    arch: TransformerShape, batch: int, seq_len: int, bytes_per_elem: float
) -> float:
    """KV cache size: ``2 (K and V) · n_layers · n_kv_heads · head_dim · seq_len · batch · bytes``."""
    elems = 2 * arch.n_layers * arch.n_kv_heads * arch.head_dim * seq_len * batch
    return elems * bytes_per_elem


def bytes_to_mb(n_bytes: float) -> float:
    """Bytes to decimal megabytes (10**6 bytes), the unit of every ``*_mb`` field."""
    return n_bytes / BYTES_PER_MB


def co2_estimate(energy_j: float, carbon_intensity_gco2_kwh: float, pue: float) -> CO2Estimate:
    """CO2 estimate: ``energy_kwh × pue × carbon_intensity_gco2_kwh`` (grams), inputs recorded."""
    if energy_j < 0:
        raise ValueError(f"energy_j must be >= 0, got {energy_j}")
    energy_kwh = energy_j / JOULES_PER_KWH
    facility_kwh = energy_kwh * pue
    return CO2Estimate(
        co2_g=facility_kwh * carbon_intensity_gco2_kwh,
        energy_kwh=energy_kwh,
        facility_energy_kwh=facility_kwh,
        pue=pue,
        carbon_intensity_gco2_kwh=carbon_intensity_gco2_kwh,
    )
