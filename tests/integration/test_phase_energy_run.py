"""Energy by phase and per request through the orchestrator, with a fake GPU whose power
follows a planned workload (``testing.PlannedBackend``): the counter tracer, the session,
the attribution after the window, result.json, the summary and the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.domain.phases import DECODE, MIXED, OTHER, PREFILL
from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.orchestration.orchestrator import (
    ExperimentOrchestrator,
    default_energy_session,
)
from llenergymeasure.results.persistence import read_result
from llenergymeasure.testing import (
    FakeDevice,
    FakeNVML,
    PlannedBackend,
    PlannedEngineBackend,
    plan_engine_steps,
    plan_static_batches,
    planned_spans,
    power_schedule_from_spans,
)

pytestmark = pytest.mark.slow

POWER_W = {PREFILL: 620.0, DECODE: 380.0}
OTHER_W = 140.0
WINDOW_S = 7.0
Z_999 = 3.3  # one run: the truth within 3.3 se (99.9 %); 95 % coverage: tests/unit/test_phases.py


def _config(**extra: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "model": "tiny-llama",
        "n": 8,
        "warmup": {"n_warmup": 1},
        "baseline": {"enabled": False},
        "telemetry": {"phase_energy": "on", "save_timeseries": False},
    }
    data.update(extra)
    return ExperimentConfig.model_validate(data)


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Any, fake: FakeNVML, **extra: Any
) -> ExperimentResult:
    from llenergymeasure.core.backends import registry

    monkeypatch.setattr(registry, "get_backend", lambda name: engine)
    with fake.installed():
        return ExperimentOrchestrator(
            _config(**extra), results_dir=tmp_path, energy_session_factory=default_energy_session
        ).run()


def _device(power: Any, seed: int) -> FakeDevice:
    return FakeDevice(
        "GPU-fake-0", name="Fake H200", power_w=power, counter_period_s=0.1002,
        counter_phase_s=0.031, counter_jitter_s=0.002, counter_seed=seed,
    )  # fmt: skip


def test_static_batches_recover_the_phase_powers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    origin = time.monotonic()
    plan = plan_static_batches(origin + 0.5, 90.0, seed=3)
    power = power_schedule_from_spans(planned_spans(plan), POWER_W, OTHER_W, origin,
                                      noise_w=20.0, segment_s=0.01, seed=3)  # fmt: skip
    fake = FakeNVML([_device(power, 3)])
    fake.t0_s = origin
    n_batches = int(WINDOW_S / ((plan[-1].end_s - plan[0].start_s) / len(plan)))
    result = _run(tmp_path, monkeypatch, PlannedBackend(plan, n_batches), fake)

    energy = result.energy
    assert energy is not None and energy.phases is not None and energy.per_request is not None
    rep, per = energy.phases, energy.per_request
    assert rep.not_measured is None, rep.not_measured
    assert rep.method == "counter_regression" and rep.signal == "energy_counter"
    assert rep.resolution_s == pytest.approx(0.1002, abs=0.002)
    assert rep.trace is not None and rep.trace.n_reads > 10 * rep.n_intervals
    assert rep.trace.n_kept <= 2 * rep.n_intervals + 10  # only reads around the steps kept
    assert rep.sensor_profile == "Fake H200" and rep.method_reason
    for phase, true_w in {**POWER_W, OTHER: OTHER_W}.items():
        p = rep.phases[phase].power_w
        assert p is not None and p.se is not None and p.ci_low is not None and p.ci_high is not None
        assert abs(p.value - true_w) <= Z_999 * p.se, (phase, p)
    assert rep.residual_pct is not None and abs(rep.residual_pct) < 1.0
    total = sum(pe.energy_j.value for pe in rep.phases.values() if pe.energy_j)
    assert total == pytest.approx(rep.counter_energy_j, rel=1e-9)
    # the edge reads and the trace agree on the window's energy (one counter step at most)
    assert rep.edge_counter_energy_j == pytest.approx(rep.counter_energy_j, rel=0.05)
    prefill = rep.phases[PREFILL]
    assert result.metrics is not None and prefill.j_per_token is not None
    assert prefill.tokens == result.metrics.tokens.input_tokens
    # per request: every request of the window, summing to the window's energy
    assert per.not_measured is None, per.not_measured
    assert per.n_requests == n_batches * 4 and len(per.requests) == per.n_requests
    assert per.sum_energy_j == pytest.approx(per.counter_energy_j, rel=1e-9)
    assert per.p50_j is not None and per.mean_j is not None and per.p99_j is not None
    assert read_result(Path(str(result.run_dir))) == result


A_J, B_J, C_W = 0.002, 0.05, 300.0  # J per prefill token, J per decode token, step power


def _step_power(span: Any) -> float:
    s = span.step
    tokens_j = A_J * sum(s.prefill_tokens.values()) + B_J * sum(s.decode_tokens.values())
    return C_W + tokens_j / (s.end_s - s.start_s)


class _StepSpan:
    """An engine step as a span of the power schedule."""

    phase = "step"

    def __init__(self, step: Any) -> None:
        self.step, self.start_s, self.end_s = step, step.start_s, step.end_s


def test_engine_steps_give_per_request_energy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    origin = time.monotonic()
    steps = plan_engine_steps(origin + 0.5, 60.0, seed=2)
    power = power_schedule_from_spans([_StepSpan(s) for s in steps], _step_power, OTHER_W,
                                      origin, noise_w=15.0, segment_s=0.01, seed=2)  # fmt: skip
    fake = FakeNVML([_device(power, 2)])
    fake.t0_s = origin
    result = _run(tmp_path, monkeypatch, PlannedEngineBackend(steps, 6.0), fake)
    assert result.energy is not None
    per, rep = result.energy.per_request, result.energy.phases
    assert per is not None and rep is not None
    assert per.not_measured is None, per.not_measured
    assert per.sum_energy_j == pytest.approx(per.counter_energy_j, rel=1e-9)
    assert per.residual_pct is not None and abs(per.residual_pct) < 1.0
    coef = per.coefficients
    for name, true in (("prefill_tokens (J/token)", A_J), ("decode_tokens (J/token)", B_J)):
        c = coef[name]
        assert c.se is not None and abs(c.value - true) <= Z_999 * c.se, (name, c)
    assert per.mean_j is not None and per.p50_j is not None and per.p99_j is not None
    assert per.j_vs_output_tokens and per.requests
    # phases from the steps: decode and mixed steps (prefill-only ones are rare here)
    assert rep.not_measured is None, rep.not_measured
    assert {DECODE, MIXED}.issubset(rep.phases) and any("engine step loop" in n for n in rep.notes)


def test_a_short_window_says_why_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = time.monotonic()
    plan = plan_static_batches(origin + 0.5, 30.0, seed=4)
    power = power_schedule_from_spans(planned_spans(plan), POWER_W, OTHER_W, origin)
    fake = FakeNVML([_device(power, 4)])
    fake.t0_s = origin
    result = _run(tmp_path, monkeypatch, PlannedBackend(plan, 2), fake)
    assert result.energy is not None and result.energy.phases is not None
    reason = result.energy.phases.not_measured
    assert reason is not None and reason.startswith("window too short"), reason
    assert result.energy.per_request is not None and result.energy.per_request.not_measured


class _CpuPlannedBackend(PlannedBackend):
    def device_indices(self) -> list[int]:
        return []


def test_a_cpu_run_has_no_gpu_energy_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    origin = time.monotonic()
    plan = plan_static_batches(origin + 0.3, 10.0, seed=5)
    fake = FakeNVML([_device(200.0, 5)])  # a GPU is there, but this run does not use it
    result = _run(tmp_path, monkeypatch, _CpuPlannedBackend(plan, 2), fake, device="cpu")
    assert result.energy is not None and result.energy.phases is not None
    assert result.energy.phases.not_measured == "no GPU energy counter: no GPU in use"
