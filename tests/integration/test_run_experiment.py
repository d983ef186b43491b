"""End to end through the library on CPU with the real tiny-llama (random weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure import run_experiment
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.exceptions import ConfigError, ExperimentError, PreflightError
from llenergymeasure.orchestration.orchestrator import ExperimentOrchestrator
from llenergymeasure.results.persistence import read_result
from llenergymeasure.state.machine import ExperimentState
from llenergymeasure.testing import FakeDevice, FakeNVML

pytestmark = pytest.mark.slow

FAST: dict[str, Any] = {
    "n": 4,
    "max_output_tokens": 6,
    "device": "cpu",
    "warmup.n_warmup": 1,
    "baseline.enabled": False,
}


class _Recorder:
    """Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.done: list[tuple[int, int]] = []

    def stage(self, name: str) -> None:
        self.stages.append(name)

    def prompts_done(self, done: int, total: int) -> None:
        self.done.append((done, total))

    def experiment_started(self, tick: Any) -> None: ...

    def experiment_finished(self, tick: Any, status: str, detail: str = "") -> None: ...

    def message(self, text: str) -> None: ...


def _only_run_dir(results: Path) -> Path:
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    return run_dir


def test_full_run_writes_a_complete_result(tmp_path: Path) -> None:
    progress = _Recorder()
    result = run_experiment(model="tiny-llama", results_dir=tmp_path, progress=progress, **FAST)
    m = result.metrics
    assert m is not None and not result.failed and result.state is ExperimentState.DONE
    assert m.tokens.n_requests == 4 and m.tokens.output_tokens == 4 * 6  # ignore_eos: exact
    assert result.output_tokens_per_s and result.output_tokens_per_s > 0
    assert result.ttft_ms_mean and result.itl_ms_mean
    assert m.latency.itl is not None and m.latency.itl.n_samples == 4 * 5  # pooled gaps
    assert m.flops is not None and m.flops.decode_flops > 0 and m.flops.prefill_flops > 0
    assert m.memory is not None and m.memory.kv_cache_estimate_mb
    assert [t.state for t in result.state_transitions] == list(ExperimentState)
    # the window holds inference only: set-up time is outside and recorded
    assert result.measurement_window_s == pytest.approx(m.throughput.duration_s)
    assert result.setup_s and result.setup_s > 0
    phases = list(result.phase_durations_s)
    assert {"load", "tokenise", "warmup", "measure"} <= set(phases)
    # baseline before warm-up, so that warm-up directly precedes the window
    assert phases.index("tokenise") < phases.index("baseline") < phases.index("warmup")
    assert phases.index("warmup") + 1 == phases.index("measure")
    assert phases[-2:] == ["metrics", "cleanup"]  # the backend's cleanup is timed too
    assert result.warmup is not None and result.warmup.runs == 1
    assert result.environment is not None and result.environment.python_version
    assert result.dataset_info is not None and result.dataset_info["n"] == 4
    # energy: measured with a labelled method, or None with a reason (never a silent zero)
    if result.energy is None:
        assert result.energy_not_measured_reason
    else:
        assert result.energy.measurements and all(
            x.method in ("counter", "estimate") for x in result.energy.measurements
        )
        assert result.energy.meter_selection.reason
    assert any(w.code == "short_window" for w in result.warnings)
    assert any(w.code == "low_request_count" for w in result.warnings)
    # written atomically in its own directory, and it reads back equal
    run_dir = _only_run_dir(tmp_path)
    assert run_dir.name.startswith("tiny-llama_pytorch_")
    assert result.run_dir is not None and Path(result.run_dir) == run_dir
    assert read_result(run_dir) == result
    assert ExperimentResult.model_validate_json(result.model_dump_json()) == result
    assert result.provenance["n"] == "cli" and result.provenance["precision"] == "default"
    assert "measuring" in progress.stages and progress.done[-1] == (4, 4)


def test_energy_from_the_counter_divided_by_output_tokens(tmp_path: Path) -> None:
    """Orchestrator wiring: fake GPU counter at 200 W -> gpu energy -> J/output token."""
    from llenergymeasure.core.energy import BaselineSettings, EnergySession

    def factory(config: ExperimentConfig, gpus: Any, timeline: Path | None) -> EnergySession:
        return EnergySession(
            "nvml",
            None,
            timeline_path=timeline,
            baseline=BaselineSettings(enabled=True, duration_s=0.3, cache_path=tmp_path / "b.json"),
            sampler_enabled=False,
        )

    config = ExperimentConfig.model_validate(
        {
            "model": "tiny-llama",
            "n": 8,
            "max_output_tokens": 8,
            "device": "cpu",
            "warmup": {"n_warmup": 1},
            "carbon_intensity_gco2_kwh": 400.0,
        }
    )
    fake = FakeNVML([FakeDevice("GPU-fake-0", power_w=200.0)])
    with fake.installed():
        result = ExperimentOrchestrator(
            config, results_dir=tmp_path, energy_session_factory=factory
        ).run()
    energy, m = result.energy, result.metrics
    assert energy is not None and m is not None and m.energy_ratios is not None
    window_s = result.measurement_window_s
    assert window_s is not None
    assert energy.gpu_energy_j == pytest.approx(200.0 * window_s, abs=200.0 * 0.25)
    assert result.energy_j == energy.gpu_energy_j
    assert result.j_per_output_token == pytest.approx(energy.gpu_energy_j / 64)
    assert m.energy_ratios.mj_per_output_token == pytest.approx(1000 * energy.gpu_energy_j / 64)
    assert m.energy_ratios.energy_basis == "gpu gross counter"
    assert energy.baseline is not None and energy.baseline.idle_power_w == pytest.approx(
        200, rel=0.5
    )
    assert result.co2 is not None and result.co2.method == "estimate"
    assert result.co2.energy_kwh == pytest.approx(energy.gpu_energy_j / 3.6e6)


def test_pretrained_model_saved_locally_runs_by_path(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from llenergymeasure.catalogue.architectures import get_architecture
    from llenergymeasure.catalogue.tokenizer import load_offline_tokenizer

    spec = get_architecture("tiny-llama")
    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(spec.model_type, **spec.hf_config_dict())
    )
    model_dir = tmp_path / "my-model"
    model.save_pretrained(model_dir)
    load_offline_tokenizer().save_pretrained(model_dir)
    result = run_experiment(
        model=str(model_dir), weights="pretrained", results_dir=tmp_path / "out", **FAST
    )
    assert result.metrics is not None and result.metrics.tokens.output_tokens == 24
    assert result.metrics.flops is not None  # shapes read from the local config.json
    assert result.config["model"] == str(model_dir)


def test_hub_offline_error_is_clear_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(PreflightError, match="cannot be reached"):
        run_experiment(model="some-org/uncached-model", results_dir=tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_failure_is_recorded_then_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llenergymeasure.core.backends.pytorch import PyTorchBackend

    def boom(self: Any, prepared: Any) -> Any:
        raise RuntimeError("generation blew up")

    monkeypatch.setattr(PyTorchBackend, "run_inference", boom)
    with pytest.raises(ExperimentError, match="generation blew up") as info:
        run_experiment(model="tiny-llama", results_dir=tmp_path, **FAST)
    assert isinstance(info.value.__cause__, RuntimeError)
    saved = json.loads((_only_run_dir(tmp_path) / "result.json").read_text())
    assert saved["failed"] is True and saved["state"] == "done"
    assert Path(saved["run_dir"]) == _only_run_dir(tmp_path)
    assert "Traceback" in saved["error"] and "generation blew up" in saved["error"]
    assert [t["state"] for t in saved["state_transitions"]] == [
        "initialising",
        "measuring",
        "done",
    ]


def test_config_error_inside_the_run_keeps_its_type(tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"unrelated": 1}\n')
    with pytest.raises(ConfigError):
        run_experiment(model="tiny-llama", dataset=str(data), results_dir=tmp_path / "o", **FAST)
    saved = read_result(_only_run_dir(tmp_path / "o"))
    assert saved.failed and saved.metrics is None and saved.error_type


class _RaplTree:
    """A powercap tree under tmp_path whose counters a thread advances at fixed power."""

    def __init__(self, root: Path, package_w: float, dram_w: float) -> None:
        import threading
        import time

        self.root, self.rates_w = root, {"pkg": package_w, "dram": dram_w}
        self.paths = {
            "pkg": root / "intel-rapl:0",
            "dram": root / "intel-rapl:0" / "intel-rapl:0:0",
        }
        for key, name in (("pkg", "package-0"), ("dram", "dram")):
            self.paths[key].mkdir(parents=True, exist_ok=True)
            (self.paths[key] / "name").write_text(name + "\n")
            (self.paths[key] / "max_energy_range_uj").write_text("262143328850\n")
        self._t0, self._clock = time.monotonic(), time.monotonic
        self._stop = threading.Event()
        self._write()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _write(self) -> None:
        import os

        elapsed = self._clock() - self._t0
        for key, path in self.paths.items():
            tmp = path / "energy_uj.tmp"
            tmp.write_text(f"{int(1e9 + self.rates_w[key] * elapsed * 1e6)}\n")
            os.replace(tmp, path / "energy_uj")  # readers never see a half-written number

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self._write()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_rapl_counters_give_cpu_energy_when_no_gpu(tmp_path: Path) -> None:
    from llenergymeasure.core.energy import EnergySession

    tree = _RaplTree(tmp_path / "powercap", package_w=30.0, dram_w=5.0)

    def factory(config: ExperimentConfig, gpus: Any, timeline: Path | None) -> EnergySession:
        return EnergySession("auto", gpus, rapl_root=tree.root, sampler_enabled=False)

    config = ExperimentConfig.model_validate(
        {
            "model": "tiny-llama",
            "n": 4,
            "max_output_tokens": 6,
            "device": "cpu",
            "warmup": {"n_warmup": 1},
            "baseline": {"enabled": False},
        }
    )
    try:
        with FakeNVML([]).installed():
            result = ExperimentOrchestrator(
                config, results_dir=tmp_path / "out", energy_session_factory=factory
            ).run()
    finally:
        tree.stop()
    energy = result.energy
    assert energy is not None and energy.gpu_energy_j is None and "gpu" in energy.not_measured
    assert energy.cpu_energy_j is not None and energy.dram_energy_j is not None
    window_s = energy.duration_s
    assert energy.cpu_energy_j == pytest.approx(30.0 * window_s, abs=30.0 * 0.05)
    assert energy.dram_energy_j == pytest.approx(5.0 * window_s, abs=5.0 * 0.05)
    total = energy.cpu_energy_j + energy.dram_energy_j
    assert result.energy_j == pytest.approx(total)  # no GPU: falls back to what was measured
    assert result.j_per_output_token == pytest.approx(total / 24)
    assert result.metrics is not None and result.metrics.energy_ratios is not None
    assert result.metrics.energy_ratios.energy_basis == "cpu_package+dram gross counter"


def test_backend_reports_reach_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beam search (e2e_only): batch wall times, truncation, notes and warnings are kept."""
    from llenergymeasure.core.backends.pytorch import PyTorchBackend

    real_tokenize, real_run = PyTorchBackend.tokenize, PyTorchBackend.run_inference

    def tokenize(self: Any, prompts: Any) -> Any:
        prepared = real_tokenize(self, prompts)
        prepared.notes.append("tokeniser note")
        return prepared

    def run_inference(self: Any, prepared: Any) -> Any:
        output = real_run(self, prepared)
        output.warnings.append("generation warning")
        return output

    monkeypatch.setattr(PyTorchBackend, "tokenize", tokenize)
    monkeypatch.setattr(PyTorchBackend, "run_inference", run_inference)
    settings = {**FAST, "max_output_tokens": 3, "max_input_tokens": 4}
    result = run_experiment(
        model="tiny-llama",
        results_dir=tmp_path,
        **settings,
        **{"decoder.strategy": "beam_search", "decoder.num_beams": 2, "pytorch.batch_size": 2},
    )
    assert result.timing_method == "e2e_only"
    assert len(result.batch_durations_s) == 2 and all(d > 0 for d in result.batch_durations_s)
    assert sum(result.batch_durations_s) <= result.measurement_window_s  # type: ignore[operator]
    flags = {w.code: w.message for w in result.warnings}
    assert flags["prompts_truncated"] == "4 prompt(s) were truncated to max_input_tokens"
    assert "tokeniser note" in flags["backend_note"]
    assert "generation warning" in flags["backend_note"]
    assert read_result(tmp_path / Path(result.run_dir or "").name) == result


# ---- bounded work on huge inputs (issue 11, case 8) ------------------------------------------
MEASURE_CHILD = """
import resource, subprocess, sys, time
t0 = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(done.returncode, round(time.monotonic() - t0, 1), round(peak_mb), flush=True)
sys.stderr.write(done.stdout + done.stderr)
"""


@pytest.mark.slow
def test_a_50mb_single_line_prompt_is_cut_before_tokenising(tmp_path: Path) -> None:
    import subprocess
    import sys

    from study_helpers import subprocess_env

    big = tmp_path / "huge.txt"
    with big.open("w") as f:  # one 50 MB line: one prompt
        word = "lorem ipsum dolor sit amet "
        f.write(word * (50 * 2**20 // len(word)) + "\n")
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"model: tiny-llama\ndevice: cpu\nprecision: fp32\ndataset: {big}\nn: 1\n"
        "max_input_tokens: 64\nmax_output_tokens: 2\nwarmup: {n_warmup: 0}\n"
        "baseline: {enabled: false}\ntelemetry: {enabled: false}\n"
    )
    llem = [sys.executable, "-m", "llenergymeasure", "run", str(config), "-o", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_CHILD, *llem],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    code, wall_s, peak_mb = done.stdout.split()
    print(f"50 MB prompt: {wall_s} s, peak RSS {peak_mb} MB")
    assert code == "0", done.stderr
    assert float(wall_s) < 180, done.stderr  # was 6 minutes
    assert int(peak_mb) < 2048, done.stderr  # was 7 GB
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    codes = {w["code"]: w["message"] for w in result["warnings"]}
    assert codes["prompts_truncated"] == "1 prompt(s) were truncated to max_input_tokens"
    assert result["metrics"]["tokens"]["input_tokens"] == 64
