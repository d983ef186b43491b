"""Metric arithmetic against hand-computed values (latency, throughput, ratios, KV, CO2)."""

from __future__ import annotations

import pydantic
import pytest

from llenergymeasure.core.latency_clock import TokenClock
from llenergymeasure.core.metrics import (
    RequestTiming,
    bytes_to_mb,
    co2_estimate,
    energy_ratios,
    kv_cache_bytes,
    latency_from_timings,
    summarise,
    throughput,
    token_counts,
)
from llenergymeasure.domain.metrics import (
    LATENCY_DEFINITIONS,
    EnergyRatios,
    InferenceMetrics,
    LatencyMetrics,
    TokenCounts,
)


class Shape:
    """A hand-sized architecture (only what KV-cache arithmetic reads)."""

    n_params_non_embedding = 1000
    n_layers = 2
    n_heads = 2
    n_kv_heads = 2
    head_dim = 16


# ----------------------------------------------------------------------------- summarise


def test_summarise_percentiles_match_hand_linear_interpolation() -> None:
    stats = summarise([8.0, 1.0, 100.0, 2.0, 4.0])  # sorted: 1, 2, 4, 8, 100
    assert stats is not None
    # numpy "linear": rank = p/100 * (n - 1) over the sorted values
    assert stats.mean_ms == pytest.approx(23.0)  # 115 / 5
    assert stats.p50_ms == pytest.approx(4.0)  # rank 2.0 -> 4
    assert stats.p90_ms == pytest.approx(63.2)  # rank 3.6 -> 8 + 0.6 * (100 - 8)
    assert stats.p95_ms == pytest.approx(81.6)  # rank 3.8 -> 8 + 0.8 * 92
    assert stats.p99_ms == pytest.approx(96.32)  # rank 3.96 -> 8 + 0.96 * 92
    assert (stats.min_ms, stats.max_ms, stats.n_samples) == (1.0, 100.0, 5)


def test_summarise_single_value_and_empty() -> None:
    one = summarise([7.5])
    assert one is not None
    assert one.p50_ms == one.p99_ms == one.mean_ms == 7.5
    assert summarise([]) is None


# ----------------------------------------------------------------------------- latency


def _three_requests() -> list[RequestTiming]:
    return [
        # TTFT 100, E2E 190, gaps 20/30/40, TPOT (190 - 100) / 3 = 30
        RequestTiming(0.0, [0.100, 0.120, 0.150, 0.190], input_tokens=5, output_tokens=4),
        # TTFT 300, E2E 310, gap 10, TPOT (310 - 300) / 1 = 10
        RequestTiming(0.0, [0.300, 0.310], input_tokens=6, output_tokens=2),
        # one token: TTFT = E2E = 50, no gap, no TPOT
        RequestTiming(1.0, [1.050], input_tokens=7, output_tokens=1),
    ]


def test_latency_late_aggregation_pools_samples() -> None:
    lat = latency_from_timings(_three_requests())
    assert lat.ttft is not None and lat.e2e is not None
    assert lat.itl is not None and lat.tpot is not None
    assert lat.ttft.mean_ms == pytest.approx(150.0)  # (100 + 300 + 50) / 3
    assert lat.ttft.p50_ms == pytest.approx(100.0)
    assert lat.e2e.mean_ms == pytest.approx(550.0 / 3)  # (190 + 310 + 50) / 3
    # ITL pools 4 gaps: (20 + 30 + 40 + 10) / 4 = 25; averaging per-request means gives 20
    assert lat.itl.n_samples == 4
    assert lat.itl.mean_ms == pytest.approx(25.0)
    assert lat.itl.min_ms == pytest.approx(10.0) and lat.itl.max_ms == pytest.approx(40.0)
    # TPOT only for n_out >= 2: (30 + 10) / 2
    assert lat.tpot.n_samples == 2
    assert lat.tpot.mean_ms == pytest.approx(20.0)
    assert lat.n_requests_timed == 3


def test_latency_partial_token_times_give_tpot_but_no_itl() -> None:
    # a backend that knows only first and last token times of a 4-token request
    lat = latency_from_timings([RequestTiming(0.0, [0.2, 0.5], output_tokens=4)])
    assert lat.ttft is not None and lat.tpot is not None and lat.e2e is not None
    assert lat.ttft.mean_ms == pytest.approx(200.0)
    assert lat.e2e.mean_ms == pytest.approx(500.0)
    assert lat.tpot.mean_ms == pytest.approx(100.0)  # (500 - 200) / (4 - 1)
    assert lat.itl is None  # one 300 ms "gap" is not an inter-token latency


def test_latency_without_tokens_is_all_none_and_carries_definitions() -> None:
    lat = latency_from_timings([RequestTiming(0.0, [], output_tokens=0)])
    assert (lat.ttft, lat.itl, lat.tpot, lat.e2e) == (None, None, None, None)
    assert lat.n_requests_timed == 0
    assert "first output token time - request start" in lat.definitions["ttft"]
    assert lat.definitions == LATENCY_DEFINITIONS


@pytest.mark.parametrize(
    ("start", "times", "n_out"),
    [(0.0, [0.2, 0.1], 2), (1.0, [0.5], 1), (0.0, [0.1, 0.2], 1)],
    ids=["decreasing", "before-start", "more-times-than-tokens"],
)
def test_request_timing_rejects_inconsistent_times(
    start: float, times: list[float], n_out: int
) -> None:
    with pytest.raises(ValueError):
        RequestTiming(start, times, output_tokens=n_out)


# ----------------------------------------------------------------------------- token clock


class SteppingClock:
    """A deterministic time source: each call returns the next scripted time."""

    def __init__(self, times: list[float]) -> None:
        self._times = iter(times)

    def __call__(self) -> float:
        return next(self._times)


def test_token_clock_batched_generation_with_early_finish() -> None:
    clock = TokenClock(clock=SteppingClock([10.0, 10.1, 10.15, 10.3, 10.6]))
    clock.start_batch(["a", "b", "c"], clock.now(), input_tokens=[4, 5, 6])  # t = 10.0
    clock.on_step(clock.now(), ["a", "b", "c"])  # 10.1: first token for all
    clock.on_step(clock.now(), ["a", "b", "c"])  # 10.15
    clock.finish_request("b")  # b emitted EOS at 10.15
    clock.on_step(clock.now(), ["a", "c"])  # 10.3
    clock.finish_request("a")
    clock.on_step(clock.now(), ["c"])  # 10.6
    a, b, c = clock.finish()
    assert (a.output_tokens, b.output_tokens, c.output_tokens) == (3, 2, 4)
    assert (a.input_tokens, b.input_tokens, c.input_tokens) == (4, 5, 6)
    assert c.token_times_s == [10.1, 10.15, 10.3, 10.6]
    lat = latency_from_timings([a, b, c])
    assert lat.ttft is not None and lat.e2e is not None and lat.tpot is not None
    assert lat.ttft.mean_ms == pytest.approx(100.0)  # all first tokens at +100 ms
    assert lat.e2e.max_ms == pytest.approx(600.0)  # c: 10.6 - 10.0
    # TPOT: a (300-100)/2 = 100, b (150-100)/1 = 50, c (600-100)/3 = 166.67 -> mean 105.56
    assert lat.tpot.mean_ms == pytest.approx((100.0 + 50.0 + 500.0 / 3) / 3)


def test_token_clock_rejects_misuse() -> None:
    clock = TokenClock()
    clock.start_batch([0, 1], 5.0)
    with pytest.raises(ValueError, match="already started"):
        clock.start_batch([1], 6.0)
    with pytest.raises(ValueError, match="never started"):
        clock.on_step(6.0, [2])
    with pytest.raises(ValueError, match="backwards"):
        clock.on_step(4.0, [0])
    clock.finish_request(1)
    with pytest.raises(ValueError, match="after it finished"):
        clock.on_step(6.0, [1])
    with pytest.raises(ValueError, match="one entry per request"):
        clock.start_batch([7, 8], 6.0, input_tokens=[3])


def test_token_clock_default_time_source_is_monotonic() -> None:
    clock = TokenClock()
    clock.start_batch(["r"])  # start time taken from perf_counter
    clock.on_step(clock.now(), ["r"])
    (timing,) = clock.finish()
    assert timing.token_times_s[0] >= timing.request_start_s


# ----------------------------------------------------------------------------- tokens, rates


def test_token_counts_and_throughput() -> None:
    tokens = token_counts([100, 50, 90, 60], [30, 30, 40, 20])
    assert tokens == TokenCounts(
        input_tokens=300, output_tokens=120, total_tokens=420, n_requests=4
    )
    rates = throughput(tokens, duration_s=2.5)
    assert rates.output_tokens_per_s == pytest.approx(48.0)  # 120 / 2.5
    assert rates.total_tokens_per_s == pytest.approx(168.0)  # 420 / 2.5
    assert rates.requests_per_s == pytest.approx(1.6)  # 4 / 2.5
    with pytest.raises(ValueError):
        throughput(tokens, duration_s=0.0)


def test_token_counts_validate_total() -> None:
    with pytest.raises(pydantic.ValidationError, match="must equal"):
        TokenCounts(input_tokens=3, output_tokens=4, total_tokens=8, n_requests=1)
    with pytest.raises(pydantic.ValidationError):
        TokenCounts(input_tokens=3, output_tokens=4, total_tokens=7, n_requests=1, pad=2)  # type: ignore[call-arg]


def test_energy_ratios_hand_values() -> None:
    tokens = TokenCounts(input_tokens=300, output_tokens=120, total_tokens=420, n_requests=4)
    r = energy_ratios(60.0, tokens, "gpu gross counter")
    assert r is not None
    assert r.j_per_output_token == pytest.approx(0.5)  # 60 / 120
    assert r.mj_per_output_token == pytest.approx(500.0)
    assert r.j_per_request == pytest.approx(15.0)  # 60 / 4
    assert r.j_per_total_token == pytest.approx(60.0 / 420.0)
    assert r.energy_basis == "gpu gross counter"


def test_energy_ratios_missing_energy_or_zero_denominator() -> None:
    none_out = TokenCounts(input_tokens=10, output_tokens=0, total_tokens=10, n_requests=1)
    assert energy_ratios(None, none_out, "gpu gross counter") is None
    r = energy_ratios(5.0, none_out, "gpu above idle")
    assert r is not None
    assert r.j_per_output_token is None and r.mj_per_output_token is None
    assert r.j_per_total_token == pytest.approx(0.5)
    with pytest.raises(ValueError):
        energy_ratios(-1.0, none_out, "gpu gross counter")


def test_inference_metrics_round_trip_json() -> None:
    tokens = token_counts([5, 6], [4, 2])
    metrics = InferenceMetrics(
        tokens=tokens,
        throughput=throughput(tokens, 1.0),
        latency=latency_from_timings(_three_requests()[:2]),
        energy_ratios=energy_ratios(3.0, tokens, "gpu gross counter"),
    )
    again = InferenceMetrics.model_validate_json(metrics.model_dump_json())
    assert again == metrics
    assert isinstance(again.energy_ratios, EnergyRatios)
    assert isinstance(again.latency, LatencyMetrics)


# ----------------------------------------------------------------------------- memory, CO2


def test_kv_cache_bytes_hand_value() -> None:
    # 2 (K,V) * 2 layers * 2 kv heads * 16 head_dim * 100 seq * 3 batch * 2 bytes = 76800
    assert kv_cache_bytes(Shape(), batch=3, seq_len=100, bytes_per_elem=2) == 76800
    assert bytes_to_mb(76800) == pytest.approx(0.0768)


def test_co2_estimate_hand_value() -> None:
    est = co2_estimate(7.2e6, carbon_intensity_gco2_kwh=400.0, pue=1.5)
    assert est.energy_kwh == pytest.approx(2.0)  # 7.2e6 J / 3.6e6 J/kWh
    assert est.facility_energy_kwh == pytest.approx(3.0)  # 2 kWh * 1.5
    assert est.co2_g == pytest.approx(1200.0)  # 3 kWh * 400 g/kWh
    assert est.method == "estimate"
    assert (est.pue, est.carbon_intensity_gco2_kwh) == (1.5, 400.0)


def test_co2_estimate_rejects_impossible_inputs() -> None:
    with pytest.raises(ValueError):
        co2_estimate(1.0, carbon_intensity_gco2_kwh=400.0, pue=0.9)
    with pytest.raises(ValueError):
        co2_estimate(-1.0, carbon_intensity_gco2_kwh=400.0, pue=1.2)
