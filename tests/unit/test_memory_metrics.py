"""Memory figures with their methods: the backend's own peak, the device-level peak from the
telemetry timeline (engines whose memory lives in other processes), the KV cache reserved."""

from __future__ import annotations

from llenergymeasure.catalogue.architectures import get_architecture
from llenergymeasure.cli.display import _kv_cache_text, _peak_memory_text
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.core.backends.protocol import InferenceOutput, PreparedBatch, PreparedBatches
from llenergymeasure.core.energy.timeline import Timeline
from llenergymeasure.domain.energy import EnergyReport, MeterSelection
from llenergymeasure.orchestration.assemble import memory_metrics

CONFIG = ExperimentConfig(model="tiny-llama-hd64", backend="vllm")
ARCH = get_architecture("tiny-llama-hd64")
PREPARED = PreparedBatches([PreparedBatch(["a"], [10], 10, [[1] * 10])], max_new_tokens=6)


def _output(**kw: object) -> InferenceOutput:
    return InferenceOutput(
        timings=[],
        n_batches=1,
        device=str(kw.pop("device", "cuda")),
        timing_method="engine_steps",
        duration_s=1.0,
        **kw,  # type: ignore[arg-type]
    )


def _report(rows: list[dict[str, object]]) -> EnergyReport:
    thermal = Timeline(rows).summarise(0.0, 10.0, 0.1)
    selection = MeterSelection(requested="auto", meters=["nvml"], reason="test")
    return EnergyReport(
        window="measure", duration_s=10.0, thermal=thermal, meter_selection=selection
    )


def _row(t: float, device: str, used_mib: float | None) -> dict[str, object]:
    return {
        "t_s": t,
        "device": device,
        "memory_used_mb": used_mib,
        "power_w": 100.0,
        "temperature_c": None,
        "sm_clock_mhz": None,
        "throttle_mask": 0,
    }


def test_engine_peak_is_the_device_level_telemetry_maximum_over_the_window() -> None:
    rows = [
        _row(1, "gpu:0", 1000),
        _row(2, "gpu:0", 3000),
        _row(2, "gpu:1", 500),
        _row(11, "gpu:0", 9000),
    ]  # after the window: not counted
    output = _output(
        peak_memory_source="device_telemetry",
        kv_cache_reserved_bytes=2_000_000,
        kv_cache_reserved_method="vLLM cache_config: ...",
    )
    mem = memory_metrics(CONFIG, ARCH, PREPARED, output, _report(rows))
    assert mem.peak_memory_mb is not None
    assert abs(mem.peak_memory_mb - 3500 * 2**20 / 1e6) < 1e-6  # MiB -> MB, summed over GPUs
    assert (mem.peak_memory_method or "").startswith("device-level") and "gpu:0, gpu:1" in (
        mem.peak_memory_method or ""
    )
    assert mem.kv_cache_reserved_mb == 2.0 and mem.model_memory_method
    assert _peak_memory_text(mem).endswith("MB (device-level)")
    assert _kv_cache_text(mem) == "2.0 MB reserved by the engine"


def test_no_peak_says_why_instead_of_blaming_the_device() -> None:
    cpu = _output(device="cpu", peak_memory_not_measured_reason="vLLM on CPU: host RAM")
    mem = memory_metrics(CONFIG, ARCH, PREPARED, cpu, None)
    assert (
        mem.peak_memory_mb is None
        and _peak_memory_text(mem) == "not measured: vLLM on CPU: host RAM"
    )
    no_samples = memory_metrics(
        CONFIG, ARCH, PREPARED, _output(peak_memory_source="device_telemetry"), None
    )
    assert "no telemetry sample" in (no_samples.peak_memory_not_measured or "")
    assert "ran on" not in _peak_memory_text(no_samples)


def test_backend_peak_keeps_its_method() -> None:
    out = _output(peak_memory_bytes=5_000_000, peak_memory_method="torch.cuda.max_memory_allocated")
    mem = memory_metrics(CONFIG, ARCH, PREPARED, out, None)
    assert mem.peak_memory_mb == 5.0 and mem.peak_memory_method == "torch.cuda.max_memory_allocated"
    assert _peak_memory_text(mem) == "5.0 MB"
