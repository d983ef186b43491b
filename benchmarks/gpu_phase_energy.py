"""Energy by phase and per request on a GPU: the acceptance check, through the tool's own path.

What runs is what ``llem run`` runs after the window: the ``EnergySession`` with its counter
tracer (``core/energy/counter_trace.py``: the energy counter read every ~4 ms, dithered,
in a spawned process, only while a window is open), the ``StepRecorder`` of the pytorch
backend (CUDA events per decode step) and the attribution the orchestrator calls
(``orchestration/phase_energy.attribute_window``: the phase regression, the fine-signal
estimate where the sensor profile trusts one, the per-request model). The model is the
random-weight Llama-3.2-1B shape (bf16, cuda:0), driven by ``generate`` with the recorder
as a stopping criterion, exactly as the backend does it. Parts, each reporting its own
error instead of stopping the script:

- ``windows``: windows of static batches (batch ``--batch``, prompts of one of
  ``PROMPT_LENGTHS`` (256-1536) tokens, a random 0-20 ms host pause after some batches so
  that the phases' shares differ between counter intervals; every length is generated once
  with the longest window's new tokens before the first window, so that no window meets a
  shape warm-up has not seen: PyTorch's cuDNN attention builds a plan per new sequence
  length, which on the H200 made decode steps of random lengths host-bound, 53-63 ms instead
  of ~10, and the decode J/token of two windows differ by how many steps met a new shape):
  ``prefill_only`` (max_new_tokens=1, many batches), then ``--rounds`` rounds of ``mixed``
  (``--new-tokens``, 32) and ``decode_heavy`` (4x the new tokens), their order swapped every
  round (``mixed``, ``decode_heavy``, then ``decode_heavy.2``, ``mixed.2``, ...). Eager decode
  of a 1B model is host-bound, and on the H200 VM the host's speed changed between regimes
  (decode steps of ~11 ms or ~20 ms, switching within seconds): one window of each kind
  compared the two regimes, not the two attributions; alternated rounds meet both alike;
- ``overhead``: what the trace costs the workload: alternated pairs (ABBA order) of the same
  batch-1 decode run with and without the tracer reading, throughput ratio on/off (median
  and bootstrap 95 % CI over pairs);
- ``checks``: the acceptance lines: per window, the phase model's sum vs the window's
  counter energy (``residual_pct``, target |.| < 1 %; every interval holding part of the
  window is fitted, so it is small by construction: the line adds the intervals' rms misfit
  and the note on a lone misfit interval, where there is one) and the per-request sum; prefill
  J/token of ``mixed`` (pooled over the rounds) vs ``prefill_only`` and decode J/token of
  ``mixed`` vs ``decode_heavy`` (both pooled: the rounds' phase energies over their tokens,
  SEs combined; within 10 % or within the CIs), with each round's ratio and its windows'
  median decode step time, so that a host-speed difference is seen.

Output: ``--out DIR/phase_energy.json`` (per window also ``raw``: the kept counter reads
and the batches' token times, to redo the attribution offline) and the printed lines.
``--merge-into PROFILES`` writes the measured trace cost (``SensorProfile.counter_trace_cost``)
into this GPU model's entry of a ``sensor_profiles.json`` (``--profiles`` is read for the
sensor characterisation; default the bundled one). ``--fake``: the same pipeline on the fake NVML without a GPU (a planned
workload that sleeps; the fake GPU draws 600 W in prefill, 400 W in decode, 150 W else).

    PYTHONPATH=src python benchmarks/gpu_phase_energy.py --quick --out DIR     # ~2 min
    PYTHONPATH=src python benchmarks/gpu_phase_energy.py --out DIR             # ~3.5 min
    PYTHONPATH=src python benchmarks/gpu_phase_energy.py --fake --quick --out /tmp/x
    PYTHONPATH=src python benchmarks/gpu_phase_energy.py --reanalyse RUN.json --out DIR

``--reanalyse RUN.json``: no GPU; the attribution and the checks redone, with this tree's
code, from the windows a run recorded (``phase_energy.json``'s ``raw`` per window, or a
window given as its counter reads and ``timings``, a list of ``RequestTiming`` fields):
the measurement is the run's, the analysis this tree's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from bench_stats import median_ci

from llenergymeasure.core.energy._nvml import nvml
from llenergymeasure.core.energy.counter_trace import PhaseTraceSettings
from llenergymeasure.core.energy.sensor_profiles import (
    MIN_TRACE_CI_LOW,
    MIN_TRACE_THROUGHPUT_RATIO,
    load_profiles_from,
    merge_profiles,
    profile_for,
    trace_is_free,
)
from llenergymeasure.core.energy.session import EnergySession
from llenergymeasure.domain.phases import SensorProfile, TraceCost
from llenergymeasure.orchestration.phase_energy import attribute_window

KINDS = ("prefill_only", "mixed", "decode_heavy")  # window kinds; rounds add ".2", ".3", ...
#: the windows' prompt lengths (GPU): few, so that warm-up covers every shape (module docstring)
PROMPT_LENGTHS = (256, 640, 1024, 1536)
FAKE_W = {"prefill": 600.0, "decode": 400.0}
FAKE_OTHER_W = 150.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter windows, 3 overhead pairs")
    p.add_argument(
        "--window-s", type=float, default=None, help="each mixed/decode_heavy (10; quick 6)"
    )
    p.add_argument(
        "--rounds", type=int, default=None, help="mixed/decode_heavy rounds (4; quick 3)"
    )
    p.add_argument("--prefill-window-s", type=float, default=None, help="default 12 (quick 10)")
    p.add_argument("--pairs", type=int, default=None, help="overhead pairs (6; quick 3)")
    p.add_argument(
        "--pair-s", type=float, default=None, help="seconds per overhead run (4; quick 3)"
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--parts", default="windows,overhead", help="comma list: windows,overhead")
    p.add_argument("--profiles", type=Path, default=None, help="sensor_profiles.json to use")
    p.add_argument("--merge-into", type=Path, default=None, help="write the trace cost here")
    p.add_argument("--out", type=Path, default=Path("results/gpu_phase_energy"))
    p.add_argument("--fake", action="store_true", help="fake NVML, no GPU: checks the script")
    p.add_argument("--reanalyse", type=Path, default=None, help="redo a run's windows offline")
    p.add_argument(
        "--budget-s",
        type=float,
        default=220.0,
        help="stop adding overhead pairs when the run would pass this (s)",
    )
    args = p.parse_args(argv)
    args.window_s = args.window_s or (6.0 if args.quick else 10.0)
    args.rounds = max(1, args.rounds or (3 if args.quick else 4))
    args.prefill_window_s = args.prefill_window_s or (10.0 if args.quick else 12.0)
    args.pairs = args.pairs or (3 if args.quick else 6)
    args.pair_s = args.pair_s or (3.0 if args.quick else 4.0)
    return args


def window_plan(args: argparse.Namespace) -> list[tuple[str, float, int]]:
    """(name, seconds, new tokens) of each window, in the order they run (module docstring)."""
    plan = [("prefill_only", args.prefill_window_s, 1)]
    for r in range(1, args.rounds + 1):
        pair = [(f"mixed{_round(r)}", args.window_s, args.new_tokens),
                (f"decode_heavy{_round(r)}", args.window_s, 4 * args.new_tokens)]  # fmt: skip
        plan += pair if r % 2 else pair[::-1]
    return plan


def _round(r: int) -> str:
    return "" if r == 1 else f".{r}"


def kind_of(name: str) -> str:
    """``mixed.3`` -> ``mixed``."""
    return name.split(".")[0]


def decode_step_ms(batches: list[dict[str, Any]]) -> float | None:
    """Median time between a batch's consecutive tokens over a window's batches (raw form)."""
    gaps = [g for bt in batches for g in np.diff(bt["token_times_s"])]
    return 1e3 * float(np.median(gaps)) if gaps else None


# --- workloads ----------------------------------------------------------------------------
class GpuWorkload:
    """The 1B Llama on cuda:0, generate with the tool's StepRecorder (CUDA events)."""

    def __init__(self) -> None:
        import gpu_energy  # type: ignore[import-not-found]  # benchmarks/ sibling
        import torch

        self.torch = torch
        self.model = gpu_energy.build_llama()
        self.device = "cuda:0"

    def sync(self) -> None:
        self.torch.cuda.synchronize()

    def warm(self, batch: int, n_in: int, new_tokens: int, name: str = "") -> None:
        self._generate(batch, n_in, new_tokens, None)
        self.sync()

    def warm_shapes(self, batch: int, new_tokens: int) -> None:
        """Every prompt length once with ``new_tokens``: each sequence length the windows
        will meet has its attention plan before the first window."""
        for n_in in PROMPT_LENGTHS:
            self.warm(batch, n_in, new_tokens)

    def run(self, name: str, seconds: float, batch: int, new_tokens: int, rng: Any,
            pauses: bool = True) -> list[Any]:  # fmt: skip
        """Static batches for ``seconds``; the requests' timings (perf_counter clock)."""
        from llenergymeasure.core.latency import make_step_recorder
        from llenergymeasure.core.latency_clock import TokenClock

        clock = TokenClock()
        recorder = make_step_recorder(clock, self.device)
        end = time.perf_counter() + seconds
        k = 0
        while time.perf_counter() < end:
            n_in = int(rng.choice(PROMPT_LENGTHS)) if pauses else 128
            rids = [f"{name}-b{k}-r{i}" for i in range(batch)]
            recorder.begin_batch(rids, [n_in] * batch)
            self._generate(batch, n_in, new_tokens, recorder)
            recorder.end_batch([new_tokens] * batch)
            if pauses and rng.random() < 0.3:
                time.sleep(float(rng.uniform(0.0, 0.02)))
            k += 1
        return clock.finish()

    def _generate(self, batch: int, n_in: int, new_tokens: int, recorder: Any) -> None:
        from transformers import StoppingCriteriaList

        torch = self.torch
        ids = torch.randint(3, 32000, (batch, n_in), device=self.device)
        criteria = StoppingCriteriaList([recorder]) if recorder is not None else None
        with torch.inference_mode():
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                do_sample=False, pad_token_id=0, stopping_criteria=criteria)  # fmt: skip


class FakeWorkload:
    """--fake: batches planned in advance (testing.plan_static_batches) that the fake GPU
    'runs' (draws their power) whether or not anyone waits; ``run`` sleeps through them."""

    def __init__(self, args: argparse.Namespace) -> None:
        from llenergymeasure.testing import (
            FakeDevice,
            FakeNVML,
            plan_static_batches,
            planned_spans,
            power_schedule_from_spans,
        )

        origin = time.monotonic()
        # one plan segment per window (keyed by its name) and one for the overhead pairs, in
        # the order the script runs them, each with some slack: a segment starts when the
        # script reaches it (warm)
        segments = [*window_plan(args), ("ovh", 2 * args.pairs * args.pair_s, 64)]
        self.plans: dict[str, list[Any]] = {}
        t = origin + 4.0  # the session's sampler and tracer start first
        for k, (name, seconds, new_tokens) in enumerate(segments):
            slack = min(5.0, max(0.8, seconds / 2))
            plan = plan_static_batches(
                t, seconds + slack, seed=k, batch=4, input_tokens=(256, 1536),
                output_tokens=(new_tokens, new_tokens), step_s=0.012,
            )  # fmt: skip
            self.plans[name] = plan
            t = plan[-1].end_s + 0.5
        self.t_next = {k: v[0].start_s for k, v in self.plans.items()}
        spans = [sp for plan in self.plans.values() for sp in planned_spans(plan)]
        power = power_schedule_from_spans(spans, FAKE_W, FAKE_OTHER_W, origin, noise_w=20.0,
                                          segment_s=0.01, seed=1)  # fmt: skip
        self.fake = FakeNVML([FakeDevice("GPU-fake-0", name="Fake GPU", power_w=power,
                                         counter_period_s=0.1002, counter_phase_s=0.031,
                                         counter_jitter_s=0.002, counter_delay_s=0.01)])  # fmt: skip
        self.fake.t0_s = origin

    def sync(self) -> None:
        return None

    def warm(self, batch: int, n_in: int, new_tokens: int, name: str = "") -> None:
        """Wait until this window's plan runs (its power is then drawn during the window)."""
        start = self.t_next[name]
        time.sleep(max(0.0, start - time.monotonic()))

    def run(self, name: str, seconds: float, batch: int, new_tokens: int, rng: Any,
            pauses: bool = True) -> list[Any]:  # fmt: skip
        from llenergymeasure.core.metrics import RequestTiming

        now = time.monotonic()
        plan = [b for b in self.plans[name] if b.end_s > now]
        timings = []
        for b in plan:
            if b.start_s > now + seconds:
                break
            time.sleep(max(0.0, b.end_s - time.monotonic()))
            timings += [RequestTiming(b.start_s, b.token_times_s, n, b.output_tokens)
                        for n in b.input_tokens]  # fmt: skip
        return timings


# --- parts --------------------------------------------------------------------------------
def run_windows(args: argparse.Namespace, work: Any, session: EnergySession, rng: Any) -> dict[str, Any]:  # fmt: skip
    """The windows (:func:`window_plan`) through the session and the attribution."""
    results: dict[str, Any] = {}
    plan = window_plan(args)
    if hasattr(work, "warm_shapes"):
        work.warm_shapes(args.batch, max(n for _, _, n in plan))
    for name, seconds, new_tokens in plan:
        try:
            work.warm(args.batch, 512, new_tokens, name=name)
            session.begin_window(name, sync=work.sync)
            timings = work.run(name, seconds, args.batch, new_tokens, rng)
            report = session.end_window(name, sync=work.sync)
            trace = session.window_trace(name)
            if trace is None:
                raise RuntimeError(f"no counter trace: {session.trace_off_reason}")
            t_attr = time.perf_counter()
            by_device = {k: v for m in report.measurements if m.method == "counter"
                         for k, v in m.energy_j_by_device.items()}  # fmt: skip
            phases, per = attribute_window(trace, timings, [], timing_method="cuda_events",
                                           edge_energy_j_by_device=by_device,
                                           keep_requests=False)  # fmt: skip
            raw = raw_window(trace, timings)
            results[name] = {
                "n_requests": len(timings), "new_tokens": new_tokens,
                "window_s": report.duration_s, "gpu_energy_j": report.gpu_energy_j,
                "attribution_s": time.perf_counter() - t_attr,
                "decode_step_ms": decode_step_ms(raw["batches"]),
                "phases": phases.model_dump(mode="json"),
                "per_request": per.model_dump(mode="json"),
                "raw": raw,
            }  # fmt: skip
        except Exception:
            results[name] = {"error": traceback.format_exc()}
            print(f"window {name} failed:\n{results[name]['error']}", flush=True)
    return results


def raw_window(trace: Any, timings: list[Any]) -> dict[str, Any]:
    """What the attribution read, so that it can be redone offline: the window, the kept
    counter reads and the batches' token times (one entry per batch: the requests of a
    static batch share their start and step times)."""
    batches: dict[float, dict[str, Any]] = {}
    for t in timings:
        b = batches.setdefault(t.request_start_s, {"start_s": t.request_start_s,
                                                   "token_times_s": [], "input_tokens": [],
                                                   "output_tokens": []})  # fmt: skip
        if len(t.token_times_s) > len(b["token_times_s"]):
            b["token_times_s"] = list(t.token_times_s)
        b["input_tokens"].append(t.input_tokens)
        b["output_tokens"].append(t.output_tokens)
    dev = next(iter(trace.devices.values()))
    choice = trace.choice
    return {"window": list(trace.window), "t_s": dev.t_s, "read_s": dev.read_s,
            "energy_mj": dev.energy_mj,
            "delay_s": choice.counter_delay_s if choice is not None else 0.0,
            "averaging_window_s": choice.counter_window_s if choice is not None else 0.0,
            "batches": list(batches.values())}  # fmt: skip


def reanalyse_windows(path: Path) -> dict[str, Any]:
    """Each recorded window of a run attributed again by this tree (``--reanalyse``)."""
    from types import SimpleNamespace

    from llenergymeasure.core.energy.counter_trace import DeviceTrace, WindowTrace
    from llenergymeasure.core.metrics import RequestTiming

    doc = json.loads(path.read_text())
    recorded = doc.get("windows", doc)
    results: dict[str, Any] = {}
    for name, w in recorded.items():
        if kind_of(name) not in KINDS:
            continue
        if not w or "error" in w:
            results[name] = {"error": f"not recorded in {path}"}
            continue
        raw = w.get("raw", w)
        if "timings" in raw:
            timings = [RequestTiming(**t) for t in raw["timings"]]
        else:
            timings = [RequestTiming(b["start_s"], b["token_times_s"][:k], n, k)
                       for b in raw["batches"]
                       for n, k in zip(b["input_tokens"], b["output_tokens"], strict=True)]  # fmt: skip
        avg = raw.get("averaging_window_s", raw.get("avg_s", 0.0))
        choice = SimpleNamespace(counter_delay_s=raw["delay_s"], counter_window_s=avg,
                                 fine_delay_s=0.0, profile=None,
                                 reason=f"re-attributed offline from {path.name}")  # fmt: skip
        dev = DeviceTrace("gpu:0", t_s=raw["t_s"], read_s=raw["read_s"], energy_mj=raw["energy_mj"])
        trace = WindowTrace(window=tuple(raw["window"]), devices={"gpu:0": dev},
                            interval_s=float(np.median(np.diff(raw["t_s"]))), choice=choice)  # type: ignore[arg-type]  # fmt: skip
        edge = raw.get("edge_j") or {"gpu:0": (w.get("phases") or {}).get("edge_counter_energy_j")}
        phases, per = attribute_window(trace, timings, [], timing_method="cuda_events",
                                       edge_energy_j_by_device=edge, keep_requests=False)  # fmt: skip
        results[name] = {"n_requests": len(timings), "window_s": raw["window"][1] - raw["window"][0],
                         "decode_step_ms": decode_step_ms(raw["batches"]) if "batches" in raw else None,
                         "phases": phases.model_dump(mode="json"),
                         "per_request": per.model_dump(mode="json")}  # fmt: skip
    return results


def phases_from_raw(raw: dict[str, Any]) -> Any:
    """The phase report redone from a window's ``raw`` record (:func:`raw_window`)."""
    from llenergymeasure.core.energy.intervals import counter_intervals
    from llenergymeasure.core.energy.phases import phase_energy_report
    from llenergymeasure.core.energy.step_records import static_batch_spans
    from llenergymeasure.core.metrics import RequestTiming

    timings = [RequestTiming(b["start_s"], b["token_times_s"][:k], n, k)
               for b in raw["batches"]
               for n, k in zip(b["input_tokens"], b["output_tokens"], strict=True)]  # fmt: skip
    iv = counter_intervals(raw["t_s"], raw["energy_mj"], raw["read_s"])
    t0, t1 = raw["window"]
    return phase_energy_report(iv, static_batch_spans(timings), (t0, t1),
                               delay_s=raw["delay_s"],
                               averaging_window_s=raw["averaging_window_s"])  # fmt: skip


def run_overhead(
    args: argparse.Namespace, work: Any, session: EnergySession, t_start: float
) -> dict[str, Any]:
    """Alternated on/off runs of a batch-1 decode workload (ABBA), the tracer reading or not;
    fewer pairs when ``--budget-s`` would be passed (at least 2)."""
    tracer = session.tracer
    if tracer is None:
        return {"error": f"no tracer: {session.trace_off_reason}"}
    rng = np.random.default_rng(1)
    work.warm(1, 128, 64, name="ovh")
    runs: list[dict[str, Any]] = []
    n_pairs = 0
    for k in range(args.pairs):
        left = args.budget_s - (time.monotonic() - t_start)
        if k >= 2 and left < 2.6 * args.pair_s + 10.0:
            break
        n_pairs += 1
        order = ("on", "off") if k % 2 == 0 else ("off", "on")
        for mode in order:
            work.sync()
            if mode == "on":
                tracer.begin()
            t0 = time.perf_counter()
            timings = work.run("ovh", args.pair_s, 1, 64, rng, pauses=False)
            work.sync()
            dt = time.perf_counter() - t0
            reads = None
            if mode == "on":
                dev = next(iter(tracer.end(time.monotonic()).values()))
                reads = dev.mean_interval_s
            tokens = sum(t.output_tokens for t in timings)
            runs.append(
                {"pair": k, "mode": mode, "tok_per_s": tokens / dt, "read_interval_s": reads}
            )
    ratios = []
    for k in range(n_pairs):
        on = next(r["tok_per_s"] for r in runs if r["pair"] == k and r["mode"] == "on")
        off = next(r["tok_per_s"] for r in runs if r["pair"] == k and r["mode"] == "off")
        ratios.append(on / off)
    lo, hi = median_ci(ratios) if len(ratios) >= 2 else (math.nan, math.nan)
    intervals = [r["read_interval_s"] for r in runs if r["read_interval_s"]]
    return {"workload": "llama-3.2-1b shape bf16, batch 1, 128 prompt, 64 new tokens, "
                        f"{args.pair_s:g} s per run" + (" (fake)" if args.fake else ""),
            "runs": runs, "ratios": ratios, "median_ratio": float(np.median(ratios)),
            "median_ratio_ci95": [lo, hi],
            "read_interval_s": float(np.mean(intervals)) if intervals else None}  # fmt: skip


# --- checks -------------------------------------------------------------------------------
def agree(a: dict[str, Any] | None, b: dict[str, Any] | None) -> tuple[bool | None, str]:
    """(ok, text): two J/token estimates within 10 % or with overlapping CIs."""
    if not a or not b:
        return None, "not measured"
    close = abs(a["value"] - b["value"]) <= 0.1 * abs(b["value"])
    ci = all(a.get(k) is not None and b.get(k) is not None for k in ("ci_low", "ci_high"))
    overlap = ci and a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]
    diff = 100 * (a["value"] - b["value"]) / b["value"]
    text = (f"{1e3 * a['value']:.4g} [{_ci_ms(a)}] vs {1e3 * b['value']:.4g} [{_ci_ms(b)}] "
            f"mJ/token ({diff:+.1f} %)")  # fmt: skip
    return bool(close or overlap), text


def _ci_ms(e: dict[str, Any]) -> str:
    if e.get("ci_low") is None or e.get("ci_high") is None:
        return "-"
    return f"{1e3 * e['ci_low']:.4g}, {1e3 * e['ci_high']:.4g}"


def checks(windows: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance checks (module docstring), one dict each: name, ok, value."""
    out: list[dict[str, Any]] = []

    for name, w in windows.items():
        w = w or {}
        ph, per = w.get("phases") or {}, w.get("per_request") or {}
        res = ph.get("residual_pct")
        why = w.get("error", "").strip().splitlines()[-1:] or [ph.get("not_measured")]
        edge, total = ph.get("edge_counter_energy_j"), ph.get("counter_energy_j")
        vs_edge = (f"; phases {total:.1f} J vs edge reads {edge:.1f} J ({100 * (total - edge) / edge:+.2f} %)"
                   if edge and total else "")  # fmt: skip
        misfit = "".join(f"; {n}" for n in ph.get("notes") or [] if "misfit" in n)
        rms = ph.get("interval_rms_j")
        fit_text = f"; interval rms {rms:.3g} J{misfit}" if rms is not None else ""
        out.append({"check": f"{name}: phase model vs counter energy (|.| < 1 %)",
                    "ok": None if res is None else abs(res) < 1.0,
                    "value": f"{res:+.3f} %{vs_edge}{fit_text}" if res is not None
                             else f"not measured: {why[0]}",
                    "phases": {k: (v.get("energy_j") or {}).get("value")
                               for k, v in (ph.get("phases") or {}).items()},
                    "counter_energy_j": ph.get("counter_energy_j"),
                    "edge_counter_energy_j": ph.get("edge_counter_energy_j")})  # fmt: skip
        fine = ph.get("fine_signal") or {}
        if fine and not fine.get("not_measured"):
            parts = []
            for phase in ("prefill", "decode"):
                f = ((fine.get("phases") or {}).get(phase) or {}).get("j_per_token")
                r = ((ph.get("phases") or {}).get(phase) or {}).get("j_per_token")
                if f and r:
                    parts.append(
                        f"{phase} {1e3 * f['value']:.4g} vs regression {1e3 * r['value']:.4g} mJ/token"
                    )
            out.append({"check": f"{name}: second estimate, {fine['signal']} integrated over the phases",
                        "ok": None, "value": "; ".join(parts)
                        + f"; total vs counter {fine.get('vs_counter_pct') or 0:+.2f} %"})  # fmt: skip
        if per.get("sum_energy_j") is not None:
            gap = per["sum_energy_j"] - per["counter_energy_j"]
            out.append({"check": f"{name}: per-request energies sum to the window energy",
                        "ok": abs(gap) <= 1e-6 * abs(per["counter_energy_j"]),
                        "value": f"sum - counter = {gap:+.3g} J; model miss before rescaling "
                                 f"{per.get('residual_pct') or 0:+.2f} %; terms {per['terms']}; "
                                 f"mean/p50/p99 {per['mean_j']:.4g}/{per['p50_j']:.4g}/"
                                 f"{per['p99_j']:.4g} J"})  # fmt: skip
        else:
            out.append({"check": f"{name}: per-request energies sum to the window energy",
                        "ok": None, "value": f"not measured: {per.get('not_measured')}"})  # fmt: skip
    for phase, other in (("prefill", "prefill_only"), ("decode", "decode_heavy")):
        mixed, alone = pooled_jpt(windows, "mixed", phase), pooled_jpt(windows, other, phase)
        ok, text = agree(mixed, alone)
        n = sum(1 for k in windows if kind_of(k) == "mixed")
        pooled = f" (mixed pooled over {n} windows)" if n > 1 else ""
        rounds = round_ratios(windows, phase, other) if phase == "decode" else ""
        out.append({"check": f"{phase} J/token: mixed vs {other} (10 % or CIs)", "ok": ok,
                    "value": text + pooled + rounds})  # fmt: skip
    return out


def _phase(w: dict[str, Any] | None, phase: str) -> dict[str, Any]:
    return (((w or {}).get("phases") or {}).get("phases") or {}).get(phase) or {}


def pooled_jpt(windows: dict[str, Any], kind: str, phase: str) -> dict[str, Any] | None:
    """A phase's J/token over every window of ``kind``: the phase energies over the tokens,
    the standard errors combined (independent windows), a normal 95 % CI."""
    parts = [_phase(w, phase) for k, w in windows.items() if kind_of(k) == kind]
    parts = [
        p for p in parts if p.get("tokens") and (p.get("energy_j") or {}).get("value") is not None
    ]
    if not parts:
        return None
    tokens = sum(p["tokens"] for p in parts)
    energy = sum(p["energy_j"]["value"] for p in parts)
    se = math.sqrt(sum((p["energy_j"].get("se") or 0.0) ** 2 for p in parts)) / tokens
    value = energy / tokens
    return {"value": value, "se": se, "ci_low": value - 1.96 * se, "ci_high": value + 1.96 * se}


def round_ratios(windows: dict[str, Any], phase: str, other: str) -> str:
    """Each round's mixed / ``other`` J/token and the two windows' median decode step times."""
    texts = []
    for name, w in windows.items():
        if kind_of(name) != "mixed":
            continue
        twin = windows.get(other + name[len("mixed") :]) or {}
        a, b = _phase(w, phase).get("j_per_token"), _phase(twin, phase).get("j_per_token")
        if not a or not b:
            continue
        ms = [x.get("decode_step_ms") for x in (w, twin)]
        steps = f" ({ms[0]:.1f} / {ms[1]:.1f} ms per step)" if None not in ms else ""
        texts.append(f"{a['value'] / b['value']:.3f}{steps}")
    return f"; per round mixed / {other}: " + ", ".join(texts) if texts else ""


def overhead_check(overhead: dict[str, Any]) -> dict[str, Any]:
    if "median_ratio" not in overhead:
        return {"check": "counter trace on/off throughput", "ok": None,
                "value": f"not measured: {str(overhead.get('error', '')).strip().splitlines()[-1:]}"}  # fmt: skip
    lo, hi = overhead["median_ratio_ci95"]
    free, _ = trace_is_free(SensorProfile(gpu_name="-", counter_trace_cost=trace_cost(overhead)))
    return {"check": f"counter trace on/off throughput (median >= {MIN_TRACE_THROUGHPUT_RATIO}, "
                     f"CI >= {MIN_TRACE_CI_LOW})",
            "ok": free,
            "value": f"{overhead['median_ratio']:.4f} [{lo:.4f}, {hi:.4f}] over "
                     f"{len(overhead['ratios'])} pairs, reads every "
                     f"{1e3 * (overhead['read_interval_s'] or math.nan):.2f} ms"}  # fmt: skip


def trace_cost(overhead: dict[str, Any], quick: bool = False) -> TraceCost:
    """The overhead part's result as the profile's ``counter_trace_cost``."""
    lo, hi = overhead["median_ratio_ci95"]
    return TraceCost(throughput_ratio=overhead["median_ratio"],
                     ci_low=None if math.isnan(lo) else lo, ci_high=None if math.isnan(hi) else hi,
                     n_pairs=len(overhead["ratios"]), workload=overhead["workload"],
                     read_interval_s=overhead["read_interval_s"],
                     measured_with="benchmarks/gpu_phase_energy.py" + (" --quick" if quick else ""))  # fmt: skip


def merge_trace_cost(path: Path, gpu_name: str, overhead: dict[str, Any], quick: bool) -> None:
    """Write the measured trace cost into ``gpu_name``'s entry of a profiles file."""
    base = json.loads(path.read_text()) if path.exists() else {"schema_version": 1, "profiles": {}}
    table = load_profiles_from(path) if path.exists() else {}
    current = table.get(gpu_name) or SensorProfile(gpu_name=gpu_name)
    cost = trace_cost(overhead, quick)
    profile = current.model_copy(update={"gpu_name": gpu_name, "counter_trace_cost": cost})
    doc = {"schema_version": 1, "profiles": {gpu_name: profile.model_dump(mode="json")}}
    path.write_text(json.dumps(merge_profiles(base, doc), indent=2) + "\n")


# --- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reanalyse is not None:
        return reanalyse(args)
    parts = set(args.parts.split(","))
    t_start = time.monotonic()
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "errors": {}}
    work: Any = FakeWorkload(args) if args.fake else None
    if work is not None:
        nvml.lib = work.fake
    nvml.init()
    gpu_name = nvml.name(nvml.handle_by_index(0))
    out["gpu"] = gpu_name
    profiles = load_profiles_from(args.profiles) if args.profiles else None
    profile = profile_for(gpu_name, profiles)
    out["sensor_profile"] = profile.model_dump(mode="json")
    out["auto_would_trace"] = trace_is_free(profile)
    if work is None:
        work = GpuWorkload()
    settings = PhaseTraceSettings("on", profiles=profiles)
    session = EnergySession("nvml", [0], baseline=None, phase_trace=settings)
    rng = np.random.default_rng(0)
    with session:
        out["trace_choice"] = str(session.trace_choice)
        if "windows" in parts:
            out["windows"] = run_windows(args, work, session, rng)
        if "overhead" in parts:
            try:
                out["overhead"] = run_overhead(args, work, session, t_start)
            except Exception:
                out["overhead"] = {"error": traceback.format_exc()}
    out["checks"] = checks(out.get("windows", {})) if "windows" in parts else []
    if "overhead" in parts:
        out["checks"].append(overhead_check(out["overhead"]))
        if args.merge_into is not None and "median_ratio" in out["overhead"]:
            merge_trace_cost(args.merge_into, gpu_name, out["overhead"], args.quick)
            out["merged_into"] = str(args.merge_into)
    out["elapsed_s"] = time.monotonic() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phase_energy.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"\nEnergy by phase on {gpu_name} ({out['elapsed_s']:.0f} s; profile: "
          f"{profile.status}; {session.trace_choice.reason if session.trace_choice else '-'})")  # fmt: skip
    print_checks(out["checks"])
    print(f"written: {args.out}/phase_energy.json"
          + (f"; trace cost merged into {args.merge_into}" if out.get("merged_into") else ""))  # fmt: skip
    return 0


def reanalyse(args: argparse.Namespace) -> int:
    """``--reanalyse``: the checks of a recorded run's windows, attributed by this tree."""
    windows = reanalyse_windows(args.reanalyse)
    out = {"reanalysed": str(args.reanalyse), "windows": windows, "checks": checks(windows)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phase_energy.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"\nEnergy by phase, re-attributed from {args.reanalyse}")
    print_checks(out["checks"])
    print(f"written: {args.out}/phase_energy.json")
    return 0


def print_checks(lines: list[dict[str, Any]]) -> None:
    for c in lines:
        mark = {True: "ok", False: "MISSED", None: "n/a"}[c["ok"]]
        print(f"  [{mark:6}] {c['check']}: {c['value']}")


if __name__ == "__main__":
    raise SystemExit(main())
