"""Characterise a GPU's power signals with a square-wave load of known timing.

For energy by phase (docs/measurement.md sections 2-3 describe the signals) we need to know,
per GPU model, how each NVML power signal follows the load: the energy counter
(nvmlDeviceGetTotalEnergyConsumption), the instantaneous power field
(NVML_FI_DEV_POWER_INSTANT) and nvmlDeviceGetPowerUsage. This script

1. times one read of each signal on the idle GPU;
2. runs busy/idle square waves (busy = bf16 4096^3 matmuls, synchronised one by one, so the
   busy spans' host times are known to ~0.2 ms; idle = sleep) at periods of 10, 20, 50, 100,
   200 and 500 ms, then a long busy step and a long idle step;
3. meanwhile reads the counter as fast as it can (one read costs ms) in one process and both
   power fields every ~1 ms in another, with dithered gaps and time.monotonic stamps;
4. fits, per signal, its update period, the counter's step grid (period, phase, jitter), and
   its delay and averaging window (boxcar or exponential) against the known load
   (``llenergymeasure.core.energy.sensor_fit``).

Output (``--out DIR``): ``sensor_profile.json`` in the layout of
``src/llenergymeasure/core/energy/sensor_profiles.json`` (``--merge-into`` that file to add or
replace this GPU model's entry), ``raw_traces.npz`` + ``load_spans.json`` (re-fit offline
with ``--analyse DIR``), and a printed table.

    PYTHONPATH=src python benchmarks/gpu_sensor_characterise.py --quick      # ~2 min
    PYTHONPATH=src python benchmarks/gpu_sensor_characterise.py              # ~5 min
    PYTHONPATH=src python benchmarks/gpu_sensor_characterise.py --analyse results/sensor_x
    PYTHONPATH=src python benchmarks/gpu_sensor_characterise.py --fake --seconds-per-period 0.5

``--fake`` runs the same pipeline against ``llenergymeasure.testing.FakeNVML`` without a GPU
(the load sleeps; the fake draws the planned power): a check of the script itself.
Use ``--gpu N`` with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that cuda:N is NVML index N.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from llenergymeasure.core.energy._nvml import nvml
from llenergymeasure.core.energy.sensor_fit import (
    SignalTrace,
    counter_signal_profile,
    point_signal_profile,
)
from llenergymeasure.core.energy.sensor_profiles import merge_profiles, profiles_document
from llenergymeasure.domain.phases import SensorProfile

PERIODS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SIGNALS = ("energy_counter", "power_instant", "power_usage")
Span = tuple[float, float]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 s per period (~2 min in all)")
    p.add_argument("--seconds-per-period", type=float, default=None, help="default 30 (quick: 8)")
    p.add_argument("--gap-s", type=float, default=1.0, help="idle between period blocks")
    p.add_argument("--step-s", type=float, default=3.0, help="final busy step, then as long idle")
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--merge-into", type=Path, default=None, help="a sensor_profiles.json")
    p.add_argument("--analyse", type=Path, default=None, help="re-fit a saved run; no GPU")
    p.add_argument("--fake", action="store_true", help="FakeNVML, no GPU: checks the script")
    args = p.parse_args()
    if args.seconds_per_period is None:
        args.seconds_per_period = 8.0 if args.quick else 30.0
    return args


# --- plan and load ------------------------------------------------------------------------
def plan(args: argparse.Namespace, t0: float) -> tuple[list[Span], float]:
    """Planned busy spans: each period for a while, idle gaps between, a long busy step."""
    spans: list[Span] = []
    t = t0
    for period in PERIODS_S:
        n = max(2, round(args.seconds_per_period / period))
        spans += [(t + k * period, t + k * period + period / 2) for k in range(n)]
        t += n * period + args.gap_s
    spans.append((t, t + args.step_s))
    return spans, t + 2 * args.step_s  # the step, then as long idle


class MatmulLoad:
    """bf16 matmuls on one GPU, synchronised one by one (busy spans known on the host)."""

    def __init__(self, gpu: int) -> None:
        import torch

        self.torch = torch
        self.device = f"cuda:{gpu}"
        self.a = torch.randn(4096, 4096, device=self.device, dtype=torch.bfloat16)
        self.b = torch.randn(4096, 4096, device=self.device, dtype=torch.bfloat16)

    def busy_until(self, t_end: float) -> tuple[float, float]:
        """Matmuls until t_end; the span the GPU was busy, on time.monotonic."""
        start = time.monotonic()
        while time.monotonic() < t_end:
            self.c = self.a @ self.b
            self.torch.cuda.synchronize(self.device)
        return start, time.monotonic()


class SleepLoad:
    """--fake: the fake GPU draws the planned power; the load only keeps time."""

    def busy_until(self, t_end: float) -> tuple[float, float]:
        start = time.monotonic()
        time.sleep(max(0.0, t_end - start))
        return start, time.monotonic()


def run_load(load: Any, spans: list[Span], t_end: float) -> list[Span]:
    """Follow the plan; returns the busy spans as they happened."""
    done: list[Span] = []
    for a, b in spans:
        time.sleep(max(0.0, a - time.monotonic()))
        done.append(load.busy_until(b))
    time.sleep(max(0.0, t_end - time.monotonic()))
    return done


# --- readers (spawned processes) ----------------------------------------------------------
def reader(kind: str, index: int, fake: Any, stop: Any, conn: Any, seed: int) -> None:
    """Read a signal until ``stop``; send (name -> (t_start, read_s, value) arrays)."""
    if fake is not None:
        nvml.lib = fake
    nvml.init()
    h = nvml.handle_by_index(index)
    conn.send("ready")
    rng = np.random.default_rng(seed)
    calls = {"counter": {"energy_counter": nvml.total_energy_mj},
             "power": {"power_instant": nvml.power_instant_w, "power_usage": nvml.power_w}}[kind]  # fmt: skip
    rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in calls}
    gap = (0.0, 0.001) if kind == "counter" else (0.0005, 0.0015)
    while not stop.is_set():
        for name, fn in calls.items():
            t0 = time.monotonic()
            try:
                value = float(fn(h))
            except Exception:  # a field this GPU does not support: nothing to record
                continue
            rows[name].append((t0, time.monotonic() - t0, value))
        time.sleep(rng.uniform(*gap))
    conn.send({k: np.array(v, dtype=float).reshape(-1, 3) for k, v in rows.items()})
    conn.close()


def read_cost_s(index: int, reps: int = 100) -> dict[str, float]:
    """Median seconds per read of each signal, idle GPU."""
    h = nvml.handle_by_index(index)
    out = {}
    for name, fn in (("energy_counter", nvml.total_energy_mj), ("power_instant", nvml.power_instant_w),
                     ("power_usage", nvml.power_w)):  # fmt: skip
        times = []
        for _ in range(reps if name != "energy_counter" else reps // 4):
            t0 = time.perf_counter()
            try:
                fn(h)
            except Exception:
                break
            times.append(time.perf_counter() - t0)
        if times:
            out[name] = float(np.median(times))
    return out


def measure(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], list[Span], dict[str, Any]]:
    """Run the load with both readers; raw traces, busy spans, run metadata."""
    fake = _fake(args) if args.fake else None
    if fake is not None:
        nvml.lib = fake
    nvml.init()
    h = nvml.handle_by_index(args.gpu)
    meta = {"gpu_name": nvml.name(h), "driver_version": nvml.driver_version(),
            "idle_read_cost_s": read_cost_s(args.gpu), "fake": bool(args.fake),
            "seconds_per_period": args.seconds_per_period}  # fmt: skip
    load: Any = SleepLoad() if args.fake else MatmulLoad(args.gpu)
    if not args.fake:
        load.busy_until(time.monotonic() + 2.0)  # clocks up, kernels loaded
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs, pipes = [], []
    for i, kind in enumerate(("counter", "power")):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=reader, args=(kind, args.gpu, fake, stop, child, i))
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    for parent in pipes:
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("a reader process did not start")
    spans, t_end = fake.plan if fake is not None else plan(args, time.monotonic() + 2.0)
    if spans[0][0] < time.monotonic() + 0.5:
        raise RuntimeError("readers started too late for the --fake plan; try again")
    done = run_load(load, spans, t_end)
    stop.set()
    raw: dict[str, np.ndarray] = {}
    for parent, proc in zip(pipes, procs, strict=True):
        raw.update(parent.recv())
        proc.join(timeout=10)
    return raw, (spans if args.fake else done), meta


def _fake(args: argparse.Namespace) -> Any:
    """A FakeNVML whose GPU draws 100 W idle and 400 W in the planned busy spans."""
    from llenergymeasure.testing import FakeDevice, FakeNVML, power_schedule_from_spans

    start = time.monotonic()
    spans, t_end = plan(args, start + 5.0)  # readers are spawned after this
    busy = [_Busy(a, b) for a, b in spans]
    fake = FakeNVML([])
    sched = power_schedule_from_spans(busy, {"busy": 400.0}, 100.0, t_origin_s=fake.t0_s)
    fake.devices = [FakeDevice("GPU-fake", name="Fake GPU", power_w=sched, counter_period_s=0.1002,
                               counter_phase_s=0.037, counter_delay_s=0.01)]  # fmt: skip
    fake.plan = (spans, t_end)  # type: ignore[attr-defined]
    return fake


class _Busy:
    phase = "busy"

    def __init__(self, a: float, b: float) -> None:
        self.start_s, self.end_s = a, b


# --- analysis and output ------------------------------------------------------------------
def analyse(raw: dict[str, np.ndarray], spans: list[Span], meta: dict[str, Any]) -> SensorProfile:
    """A measured SensorProfile from the raw traces and the busy spans."""
    signals = {}
    for name in SIGNALS:
        rows = raw.get(name)
        if rows is None or rows.shape[0] < 10:
            continue
        trace = SignalTrace(rows[:, 0], rows[:, 1], rows[:, 2])
        fit = counter_signal_profile if name == "energy_counter" else point_signal_profile
        profile = fit(trace, spans)
        idle_cost = meta.get("idle_read_cost_s", {}).get(name)
        signals[name] = profile.model_copy(update={"read_cost_s": idle_cost or profile.read_cost_s})
    return SensorProfile(
        gpu_name=meta["gpu_name"],
        status="measured",
        measured_with=f"benchmarks/gpu_sensor_characterise.py, {meta['seconds_per_period']} s per period"
        + (" (fake NVML)" if meta.get("fake") else ""),
        driver_version=meta.get("driver_version"),
        signals=signals,
        notes=[f"square-wave periods {list(PERIODS_S)} s; busy = bf16 4096^3 matmuls"],
    )


def table(profile: SensorProfile) -> str:
    """One line per signal."""

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{1000 * v:.2f}"

    lines = [f"{profile.gpu_name} (driver {profile.driver_version})",
             f"{'signal':16} {'update ms':>9} {'jitter ms':>9} {'delay ms':>8} {'window ms':>9} "
             f"{'response':>11} {'r2':>6} {'read ms':>8} trusted"]  # fmt: skip
    for name, s in profile.signals.items():
        r2 = "-" if s.fit_r2 is None else f"{s.fit_r2:.3f}"
        lines.append(
            f"{name:16} {ms(s.update_period_s):>9} {ms(s.phase_jitter_s):>9} {ms(s.delay_s):>8} "
            f"{ms(s.averaging_window_s):>9} {s.response or '-':>11} {r2:>6} "
            f"{ms(s.read_cost_s):>8} {s.trusted_for_phases}"
        )
    return "\n".join(lines)


def save(out: Path, raw: dict[str, np.ndarray], spans: list[Span], meta: dict[str, Any],
         profile: SensorProfile) -> None:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "raw_traces.npz", **raw)
    (out / "load_spans.json").write_text(json.dumps({"meta": meta, "busy_spans": spans}))
    (out / "sensor_profile.json").write_text(json.dumps(profiles_document([profile]), indent=1))


def load_saved(path: Path) -> tuple[dict[str, np.ndarray], list[Span], dict[str, Any]]:
    with np.load(path / "raw_traces.npz") as npz:
        raw = {k: npz[k] for k in npz.files}
    doc = json.loads((path / "load_spans.json").read_text())
    return raw, [tuple(s) for s in doc["busy_spans"]], doc["meta"]  # type: ignore[misc]


def main() -> None:
    args = parse_args()
    if args.analyse is not None:
        raw, spans, meta = load_saved(args.analyse)
        out = args.out or args.analyse
    else:
        raw, spans, meta = measure(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = args.out or Path("results") / f"sensor_{meta['gpu_name'].replace(' ', '_')}_{stamp}"
    profile = analyse(raw, spans, meta)
    save(out, raw, spans, meta, profile)
    print(table(profile))
    print(f"written: {out}/sensor_profile.json")
    if args.merge_into is not None:
        base = json.loads(args.merge_into.read_text())
        merged = merge_profiles(base, profiles_document([profile]))
        args.merge_into.write_text(json.dumps(merged, indent=2) + "\n")
        print(f"merged into {args.merge_into}")


if __name__ == "__main__":
    main()
