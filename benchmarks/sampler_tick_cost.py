"""Does a sampler tick slow down the decode step it lands in? (step-level, tick-locked)

The on/off throughput test (``energy_overhead.py``) compares ~1-2 s blocks, and on the GPU
VM consecutive blocks of CPU-bound eager decoding differ by ~10 % whatever runs, so it cannot
resolve a 1-3 % effect there. This looks at the mechanism instead: the sampler process wakes
every 100 ms and makes seven NVML reads; if that costs the decode loop anything, the decode
loop must progress more slowly right after a sample is taken than between samples. Both are
measured in the same calls, 50 ms apart, so the machine's speed drift cancels.

For each (mode, batch) the model is loaded through the tool's pytorch backend (as in
``energy_overhead.py``), an ``EnergySession`` (meter + sampler at 100 ms) is started, and
greedy ``generate`` calls run for ``--seconds`` with a stopping criterion that notes the host
time after every step (it never stops generation). For every sample timestamp (``t_s`` of
the timeline, stamped right before the reads) the decode rate over the 20 ms after it is
compared with the mean rate over the 20 ms windows starting 50 ms before and 50 ms after it
(half an interval away, same call). The ratio of the mean rates, with a bootstrap 95 % CI
(ticks resampled), is 1 if a tick costs nothing; a tick costing x ms lowers it by up to
x / 20 ms, and throughput by x / 100 ms. The same analysis at times 25 ms after each sample
(a placebo: none of its windows contains a sample) shows the method's own bias.

    PYTHONPATH=src python benchmarks/sampler_tick_cost.py --out tick_cost.json
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from energy_overhead import build_workload, calls_per_block, new_session, sync


class HostSteps:
    """Stopping criterion that records ``time.monotonic()`` after each step, never stops."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []
        self._never: Any = None

    def begin(self) -> None:
        self.calls.append([time.monotonic()])

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.calls[-1].append(time.monotonic())
        if self._never is None or self._never.shape[0] != input_ids.shape[0]:
            self._never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self._never


def run_setting(
    mode: str, batch: int, seconds: float, args: Any, fields: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Steps and ticks of one setting (sampler reading only ``fields`` if given), classified."""
    from transformers import StoppingCriteriaList

    work = build_workload(mode, batch, args.in_tokens, args.new_tokens, args.model)
    calls_per_block(work, 1.0)  # warm-up (static cache compiles here)
    recorder = HostSteps()
    criteria = StoppingCriteriaList([recorder])
    session = new_session(args.sample_interval_ms, fields)
    session.start()
    try:
        work.call()
        sync()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            recorder.begin()
            with _inference_mode():
                work.model.generate(
                    input_ids=work.input_ids,
                    attention_mask=work.attention_mask,
                    generation_config=work.generation_config,
                    stopping_criteria=criteria,
                )
            sync()
        if session.sampler is None:  # no GPU (smoke run): nothing samples
            raise SystemExit("no telemetry sampler running: this benchmark needs an NVIDIA GPU")
        session.sampler.flush()
        ticks = sorted(r["t_s"] for r in session.sampler.timeline.rows)
    finally:
        session.stop()
        work.backend.cleanup()
    result = classify(mode, batch, recorder.calls, ticks)
    result["sampler_fields"] = list(fields) if fields else "all"
    return result


class _inference_mode:
    def __enter__(self) -> None:
        import torch

        self.ctx = torch.inference_mode()
        self.ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.ctx.__exit__(*exc)


def classify(
    mode: str,
    batch: int,
    calls: list[list[float]],
    ticks: list[float],
    near_s: float = 0.02,
    far_offset_s: float = 0.05,
) -> dict[str, Any]:
    """Decode progress right after each tick vs half an interval before and after it.

    Progress P(t) is the number of decode steps done by time t, interpolated linearly between
    step times (steps 2..N of a call; the prefill is left out). For a tick at tau the rate
    over [tau, tau + near_s] is compared with the mean rate over the same-length windows
    ``far_offset_s`` before and after it, in the same call. Windows fixed in time avoid the
    length bias of asking "did this step contain a tick?" (longer steps are more likely to
    contain one, whatever a tick costs); controls on both sides cancel a trend along the call.
    A placebo (every tick moved by 25 ms: none of its three windows contains a sample) must
    give 1.
    """
    result: dict[str, Any] = {"mode": mode, "batch": batch, "calls": len(calls)}
    shift = far_offset_s / 2  # placebo windows and their controls all miss [tau, tau + near_s]
    for name, taus in (("", ticks), ("placebo_", [t + shift for t in ticks])):
        near, far = _windows(calls, taus, near_s, far_offset_s)
        result[f"{name}ticks_used"] = len(near)
        result[f"{name}near_over_far_rate"] = sum(near) / sum(far) if far else None
        result[f"{name}near_over_far_rate_ci95"] = list(_ratio_ci(near, far))
        if not name:
            result["mean_step_ms"] = 1000.0 / statistics.fmean(far) if far else None
    result.update(near_s=near_s, far_offset_s=far_offset_s)
    return result


def _windows(
    calls: list[list[float]], taus: list[float], near_s: float, far_offset_s: float
) -> tuple[list[float], list[float]]:
    """Per usable tick: rate just after it, and the mean rate of the two control windows."""
    near: list[float] = []
    far: list[float] = []
    for times in calls:
        decode = times[2:]  # [0]=call start, [1]=after the prefill step
        if len(decode) < 2:
            continue
        lo = bisect.bisect_left(taus, decode[0] + far_offset_s)
        hi = bisect.bisect_right(taus, decode[-1] - far_offset_s - near_s)
        for tau in taus[lo:hi]:
            near.append(_rate(decode, tau, tau + near_s))
            before = _rate(decode, tau - far_offset_s, tau - far_offset_s + near_s)
            after = _rate(decode, tau + far_offset_s, tau + far_offset_s + near_s)
            far.append((before + after) / 2)
    return near, far


def _rate(times: list[float], t0: float, t1: float) -> float:
    """Steps per second over [t0, t1] from step times (linear between steps)."""
    return (_progress(times, t1) - _progress(times, t0)) / (t1 - t0)


def _progress(times: list[float], t: float) -> float:
    """Interpolated number of steps completed at time t (times sorted, t inside them)."""
    i = bisect.bisect_right(times, t) - 1
    i = min(max(i, 0), len(times) - 2)
    return i + (t - times[i]) / (times[i + 1] - times[i])


def _ratio_ci(near: list[float], far: list[float], n: int = 2000) -> tuple[float, float]:
    """Bootstrap 95 % CI of sum(near) / sum(far), resampling ticks (pairs kept together)."""
    if not far:
        return (float("nan"), float("nan"))
    rng = random.Random(0)
    idx = range(len(far))
    ratios = []
    for _ in range(n):
        pick = rng.choices(idx, k=len(far))
        ratios.append(sum(near[i] for i in pick) / sum(far[i] for i in pick))
    ratios.sort()
    return ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]


def main() -> None:
    """Every setting; JSON to --out; a table last."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--settings",
        default="eager:1,eager:64,static:64",
        help="mode:batch[:field:field...],... (fields: the sampler reads only these)",
    )
    p.add_argument("--seconds", type=float, default=40.0, help="generate time per setting")
    p.add_argument("--model", default="llama-3.2-1b")
    p.add_argument("--in-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--sample-interval-ms", type=float, default=100.0)
    args = p.parse_args()
    rows = []
    for item in args.settings.split(","):
        mode, batch, *fields = item.split(":")
        rows.append(run_setting(mode, int(batch), args.seconds, args, tuple(fields) or None))
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"args": vars(args), "settings": rows}, indent=1, default=str))
    print(
        "\nsetting                ticks  step ms  rate 0-20 ms after a tick / +-50 ms [95% CI]"
        "   placebo (no sample) [95% CI]"
    )
    for r in rows:
        lo, hi = r["near_over_far_rate_ci95"]
        plo, phi = r["placebo_near_over_far_rate_ci95"]
        fields = (
            r["sampler_fields"]
            if isinstance(r["sampler_fields"], str)
            else "+".join(r["sampler_fields"])
        )
        print(
            f"{r['mode']}_b{r['batch']:<4} {fields:<12} {r['ticks_used']:5d}  {r['mean_step_ms']:7.3f}"
            f"  {r['near_over_far_rate']:.4f} [{lo:.4f},{hi:.4f}]"
            f"                 {r['placebo_near_over_far_rate']:.4f} [{plo:.4f},{phi:.4f}]"
        )


if __name__ == "__main__":
    main()
