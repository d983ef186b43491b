"""Launched runs on CPU: two real gloo worker processes with the real tiny-llama.

The parent owns the energy session (a fake NVML with two GPUs here, so that the per-GPU
energy path is exercised end to end); the workers run on the CPU. Waits are on pipes and
process exits, never sleeps, so the tests stay correct on a loaded machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.domain.results import LaunchRecord, RawProcessResult
from llenergymeasure.orchestration.orchestrator import ExperimentOrchestrator
from llenergymeasure.results.aggregation import aggregate_run_dir
from llenergymeasure.results.persistence import read_result
from llenergymeasure.testing import INJECTED_EXIT_CODE, FakeDevice, FakeNVML, LaunchFaults

pytestmark = pytest.mark.slow

BASE: dict[str, Any] = {
    "model": "tiny-llama",
    "n": 8,
    "max_output_tokens": 5,
    "warmup": {"n_warmup": 1},
    "baseline": {"enabled": False},
    "telemetry": {"enabled": False},
}


def _config(**fields: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate({**BASE, **fields})


def _fake_gpu_session(config: ExperimentConfig, gpus: Any, timeline: Path | None) -> Any:
    """NVML counter over the GPUs the launcher asks for (fake GPUs), no sampler process."""
    from llenergymeasure.core.energy import EnergySession

    return EnergySession("nvml", gpus, sampler_enabled=False)


def _run_dir(results: Path) -> Path:
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    return run_dir


def test_two_workers_match_the_single_process_run_and_charge_each_gpu(tmp_path: Path) -> None:
    single = ExperimentOrchestrator(
        _config(device="cpu", pytorch={"batch_size": 2}), results_dir=tmp_path / "one"
    ).run()
    # a counter that steps every 1 ms: the short CPU window still reads each GPU's power
    fake = FakeNVML(
        [
            FakeDevice("GPU-fake-0", power_w=200.0, counter_period_s=0.001),
            FakeDevice("GPU-fake-1", power_w=100.0, counter_period_s=0.001),
        ]
    )
    with fake.installed():
        result = ExperimentOrchestrator(
            _config(gpus=[0, 1], pytorch={"batch_size": 2, "num_processes": 2}),
            results_dir=tmp_path / "two",
            energy_session_factory=_fake_gpu_session,
        ).run()
    run_dir = _run_dir(tmp_path / "two")
    # two raw results with their markers, the launcher's record, the aggregate
    assert sorted(p.name for p in (run_dir / "raw").iterdir()) == [
        "launch.json",
        "process_0.done",
        "process_0.json",
        "process_1.done",
        "process_1.json",
    ]
    raws = [
        RawProcessResult.model_validate_json((run_dir / f"raw/process_{i}.json").read_bytes())
        for i in range(2)
    ]
    assert [len(r.timings) for r in raws] == [4, 4]  # 8 prompts, round-robin
    # the same work as one process on the same prompts (sharding loses and repeats nothing)
    m, m1 = result.metrics, single.metrics
    assert m is not None and m1 is not None and not result.partial
    assert m.tokens == m1.tokens
    assert m.flops is not None and m1.flops is not None
    assert m.flops.total_flops == m1.flops.total_flops
    assert result.n_processes == 2 and result.process_results == [
        "raw/process_0.json",
        "raw/process_1.json",
    ]
    # energy belongs to the GPUs: each worker's raw result carries its own GPU's part
    assert [list(r.energy.measurements[0].energy_j_by_device) for r in raws if r.energy] == [
        ["gpu:0"],
        ["gpu:1"],
    ]
    assert [r.gpu_devices for r in raws] == [["gpu:0"], ["gpu:1"]]
    assert [r.cuda_visible_devices for r in raws] == ["GPU-fake-0", "GPU-fake-1"]
    energy = result.energy
    assert energy is not None and energy.gpu_energy_j is not None
    assert energy.gpu_energy_j == pytest.approx(300.0 * energy.duration_s, rel=0.1, abs=1.0)
    by_device = {d.device: d for d in result.device_breakdown}
    assert by_device["gpu:0"].processes == [0] and by_device["gpu:1"].processes == [1]
    assert by_device["gpu:0"].energy_j > by_device["gpu:1"].energy_j
    assert energy.duration_s >= (result.measurement_window_s or 0.0)
    # the workers started at the gloo barrier; nothing went wrong on the way
    codes = {w.code for w in result.warnings}
    assert not codes & {"start_barrier", "processes_missing", "device_measured_twice"}
    launch = LaunchRecord.model_validate_json((run_dir / "raw/launch.json").read_bytes())
    assert [p.status for p in launch.processes] == ["completed", "completed"]
    assert launch.energy is not None and launch.energy.gpu_energy_j == energy.gpu_energy_j
    assert result.environment is not None  # the parent's snapshot, CUDA_VISIBLE_DEVICES in it
    # the aggregation is re-runnable and gives the same result.json
    assert read_result(run_dir) == result
    again, _ = aggregate_run_dir(run_dir)
    assert again == result
    assert sorted(p.name for p in run_dir.iterdir()) == ["raw", "result.json"]


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_a_worker_failing_mid_run_leaves_a_flagged_partial_result(tmp_path: Path, how: str) -> None:
    """Worker 1 dies (os._exit, like an OOM kill) or raises after its first batch inside
    the window; worker 0's raw result is intact and the aggregate is partial, flagged."""
    faults = (
        LaunchFaults(exit_processes=(1,), after_batches=1)
        if how == "exit"
        else LaunchFaults(raise_processes=(1,), after_batches=1)
    )
    result = ExperimentOrchestrator(
        _config(device="cpu", pytorch={"batch_size": 2, "num_processes": 2}),
        results_dir=tmp_path,
        worker_target=faults.target(),
    ).run()
    run_dir = _run_dir(tmp_path)
    raw_files = sorted(p.name for p in (run_dir / "raw").iterdir())
    assert raw_files == ["launch.json", "process_0.done", "process_0.json"]
    survivor = RawProcessResult.model_validate_json((run_dir / "raw/process_0.json").read_bytes())
    assert len(survivor.timings) == 4 and survivor.process_index == 0
    assert not result.failed and result.partial and result.n_processes == 2
    flag = next(w for w in result.warnings if w.code == "processes_missing")
    assert flag.severity == "critical" and "measuring" in flag.message
    m = result.metrics
    assert m is not None and m.tokens.n_requests == 4 and m.tokens.output_tokens == 4 * 5
    assert [p.status for p in result.process_breakdown] == ["completed", "missing"]
    launch = LaunchRecord.model_validate_json((run_dir / "raw/launch.json").read_bytes())
    survived, lost = launch.processes
    assert (survived.status, survived.exit_code) == ("completed", 0)
    if how == "exit":
        assert (lost.status, lost.exit_code) == ("crashed", INJECTED_EXIT_CODE)
        assert f"exited with code {INJECTED_EXIT_CODE}" in flag.message
    else:
        assert (lost.status, lost.exit_code) == ("failed", 1)
        assert "InjectedFault" in flag.message and "InjectedFault" in (lost.detail or "")
    assert read_result(run_dir) == result


def test_launcher_runs_inside_a_study_child(tmp_path: Path) -> None:
    """A study runs each experiment in a spawn child: the launcher starts its workers there."""
    from llenergymeasure import run_study
    from llenergymeasure.config.models import StudyConfig

    study = run_study(
        StudyConfig(
            study_name="launched",
            base={**BASE, "n": 4, "device": "cpu", "pytorch": {"num_processes": 2}},
            sweep={"max_output_tokens": [3]},
        ),
        results_dir=tmp_path,
        no_gaps=True,
    )
    assert not study.failures, study.failures
    (path,) = list(tmp_path.rglob("result.json"))
    result = read_result(path)
    assert result.n_processes == 2 and not result.partial
    assert result.metrics is not None and result.metrics.tokens.n_requests == 4
    assert (path.parent / "raw" / "process_1.done").exists()


# ---- what the window holds: one worker vs the direct path -----------------------------------
#: Python functions whose calls inside a window the probe records: (module, qualified name).
Calls = set[tuple[str, str]]


def window_probe_worker(spec: Any, conn: Any, out: Path) -> None:
    """A worker target (spawn child): the real worker, its window probed into ``out``."""
    from llenergymeasure.orchestration.process_worker import run_process_worker

    _probe_windows(out)
    run_process_worker(spec, conn)


def _probe_windows(out: Path) -> None:
    """Patch ``Window`` (class-wide, this process) so that its first window writes ``out``:
    every Python function called between ``begin()`` and ``end()`` (``sys.setprofile``), and
    the settings the process measured with."""
    import json
    import sys

    from llenergymeasure.orchestration import assemble

    real_begin, real_end = assemble.Window.begin, assemble.Window.end
    calls: Calls = set()
    state: dict[str, Any] = {}

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls.add((str(frame.f_globals.get("__name__")), frame.f_code.co_qualname))

    def begin(self: Any) -> None:
        state["settings"] = _process_settings()
        real_begin(self)
        sys.setprofile(profile)

    def end(self: Any) -> None:
        sys.setprofile(None)
        real_end(self)
        if not out.exists():
            calls.discard((__name__, "_probe_windows.<locals>.end"))
            out.write_text(json.dumps({"calls": sorted(calls), **state}))

    assemble.Window.begin = begin  # type: ignore[method-assign]
    assemble.Window.end = end  # type: ignore[method-assign]


def _process_settings() -> dict[str, Any]:
    """What decides how fast this process runs the model, besides the model itself."""
    import os

    import torch
    import torch.distributed as dist

    return {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "grad_enabled": torch.is_grad_enabled(),
        "distributed_initialized": dist.is_available() and dist.is_initialized(),
        "matmul_precision": torch.get_float32_matmul_precision(),
    }


def test_one_worker_window_holds_the_same_work_as_the_direct_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``num_processes: 1``: between the worker's window stamps runs exactly what runs
    between the direct path's (generate, its step recorder, the token clock), in a process
    set up the same way: no torch.distributed group (a group of one is not formed), the
    intra-op threads of the launching process (set here to 1) and the same CPU set.
    Nothing of the launch protocol (pipe, barrier, pickling, result files) is inside."""
    import functools
    import json

    import torch

    from llenergymeasure.orchestration import assemble

    monkeypatch.setattr(assemble.Window, "begin", assemble.Window.begin)
    monkeypatch.setattr(assemble.Window, "end", assemble.Window.end)
    _probe_windows(tmp_path / "direct.json")  # undone by monkeypatch after the test
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # not torch's default on 2+ cores: the worker must get it too
    try:
        direct_result = ExperimentOrchestrator(
            _config(device="cpu", pytorch={"batch_size": 2}), results_dir=tmp_path / "d"
        ).run()
        launched = ExperimentOrchestrator(
            _config(device="cpu", pytorch={"batch_size": 2, "num_processes": 1}),
            results_dir=tmp_path / "l",
            worker_target=functools.partial(window_probe_worker, out=tmp_path / "worker.json"),
        ).run()
    finally:
        torch.set_num_threads(threads)

    direct = json.loads((tmp_path / "direct.json").read_text())
    worker = json.loads((tmp_path / "worker.json").read_text())
    direct_calls = {tuple(c) for c in direct["calls"]}
    worker_calls = {tuple(c) for c in worker["calls"]}
    assert worker_calls - direct_calls == set(), "the worker's window holds more"
    assert direct_calls - worker_calls == set(), "the worker's window holds less"
    ours = {module for module, _ in worker_calls if module.startswith("llenergymeasure.")}
    assert ours <= {
        "llenergymeasure.core.backends.protocol",
        "llenergymeasure.core.backends.pytorch",
        "llenergymeasure.core.backends.pytorch_settings",  # the attention kernels' context
        "llenergymeasure.core.latency",
        "llenergymeasure.core.latency_clock",
        "llenergymeasure.core.metrics",
    }, ours
    assert not {m for m, _ in worker_calls if m.startswith(("multiprocessing", "pickle"))}
    assert worker["settings"] == direct["settings"]
    assert worker["settings"]["distributed_initialized"] is False
    assert worker["settings"]["torch_threads"] == 1
    # the same work, and the parent's energy window holds the worker's
    assert launched.metrics is not None and direct_result.metrics is not None
    assert launched.metrics.tokens == direct_result.metrics.tokens
    assert launched.energy is None or launched.energy.duration_s >= (
        launched.measurement_window_s or 0.0
    )
    run_dir = _run_dir(tmp_path / "l")
    launch = LaunchRecord.model_validate_json((run_dir / "raw/launch.json").read_bytes())
    assert launch.start_barrier is not None and launch.start_barrier.startswith("none")


def test_a_launched_run_cuts_over_long_prompts_as_the_direct_path_does(tmp_path: Path) -> None:
    """Prompts longer than max_input_tokens x MAX_CHARS_PER_TOKEN characters are cut before
    tokenising (bounded work) in a launched run too, with the same dataset note."""
    from llenergymeasure.datasets.loader import MAX_CHARS_PER_TOKEN

    data = tmp_path / "long.txt"
    data.write_text("short prompt\n" + "word " * (16 * MAX_CHARS_PER_TOKEN) + "\n")
    fields = {"dataset": str(data), "n": 2, "max_input_tokens": 16, "device": "cpu"}
    notes = []
    for name, pytorch in (("direct", {}), ("launched", {"num_processes": 1})):
        result = ExperimentOrchestrator(
            _config(**fields, pytorch=pytorch), results_dir=tmp_path / name
        ).run()
        cut = [
            w.message for w in result.warnings if w.code == "dataset_note" and "cut" in w.message
        ]
        assert cut, (name, [w.message for w in result.warnings])
        notes.append(cut)
    assert notes[0] == notes[1]
