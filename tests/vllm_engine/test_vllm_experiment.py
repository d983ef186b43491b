"""A whole experiment on a real vLLM engine (CPU): TTFT/ITL/TPOT present and consistent."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from vllm_helpers import engine_processes

from llenergymeasure import run_experiment
from llenergymeasure.exceptions import ConfigError, PreflightError
from llenergymeasure.results.persistence import read_result

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/ci_vllm.sh builds a venv)")


def test_experiment_on_a_real_engine(
    tmp_path: Path, tiny_vllm: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llenergymeasure.core.backends.vllm import VLLMBackend

    outputs: list[Any] = []
    measured = VLLMBackend.run_inference

    def keep(self: VLLMBackend, prepared: Any) -> Any:
        outputs.append(measured(self, prepared))
        return outputs[-1]

    monkeypatch.setattr(VLLMBackend, "run_inference", keep)
    result = run_experiment(results_dir=tmp_path, **tiny_vllm)
    assert not result.failed and result.timing_method == "engine_steps"
    m = result.metrics
    assert m is not None
    assert m.tokens.n_requests == 24 and m.tokens.output_tokens == 24 * 16  # ignore_eos
    lat = m.latency
    assert lat.ttft and lat.itl and lat.tpot and lat.e2e and lat.queue
    assert lat.itl.n_samples == 24 * 15  # one gap per later token, pooled
    assert lat.ttft.min_ms > 0 and lat.itl.min_ms >= 0
    # max_num_seqs 8 with 24 requests: later requests wait for a slot, and that is in TTFT
    assert lat.queue.max_ms > lat.queue.min_ms and lat.queue.max_ms <= lat.ttft.max_ms
    saved = read_result(Path(str(result.run_dir)) / "result.json")
    assert saved.metrics is not None and saved.metrics.latency.itl == lat.itl
    assert saved.backend_details == result.backend_details
    # what the step loop produced: every request's gaps add up to its E2E - TTFT
    (output,) = outputs
    for t in output.timings:
        gaps = [b - a for a, b in pairwise(t.token_times_s)]
        e2e = t.token_times_s[-1] - t.request_start_s
        ttft = t.token_times_s[0] - t.request_start_s
        assert abs(sum(gaps) - (e2e - ttft)) < 1e-9 and len(t.token_times_s) == 16
        assert t.queue_s is not None and 0 <= t.queue_s <= ttft
    steps = output.steps
    assert len(steps) == details_steps(result)
    assert sum(sum(s.prefill_tokens.values()) for s in steps) == m.tokens.input_tokens
    assert sum(sum(s.decode_tokens.values()) for s in steps) == 24 * 15
    assert all(a.end_s <= b.start_s for a, b in pairwise(steps))
    details = result.backend_details
    assert details["vllm_version"] and details["engine_core_client"]
    assert details["max_num_seqs"] == 8 and details["prefix_cache_reset_after_warmup"] is True
    assert details["n_steps"] >= 16 * 3  # three waves of 8 requests, 16 steps each at least
    mem = m.memory
    assert mem is not None and mem.kv_cache_reserved_mb and mem.kv_cache_reserved_method
    assert mem.peak_memory_mb is None and "CPU" in (mem.peak_memory_not_measured or "")
    assert engine_processes() == []  # cleanup left no EngineCore or worker behind


def details_steps(result: Any) -> int:
    return int(result.backend_details["n_steps"])


def test_a_setting_the_installed_vllm_lacks_is_rejected_before_the_engine_starts(
    tmp_path: Path, tiny_vllm: dict[str, Any]
) -> None:
    import vllm

    tiny_vllm["vllm"] |= {"swap_space_gb": 4}
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        run_experiment(results_dir=tmp_path, **tiny_vllm)
    assert f"vLLM {vllm.__version__}" in str(err.value) and "swap_space" in str(err.value)
    assert time.perf_counter() - start < 30  # no engine start (20-40 s here)
    assert engine_processes() == []


def test_head_dim_16_is_rejected_by_preflight(tmp_path: Path, tiny_vllm: dict[str, Any]) -> None:
    tiny_vllm["model"] = "tiny-llama"
    with pytest.raises(PreflightError, match="head_dim 16 is not supported by vLLM's CPU"):
        run_experiment(results_dir=tmp_path, **tiny_vllm)
