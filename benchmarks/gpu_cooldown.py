"""How an H100 settles after load: power, temperature, SM clock and P-state, sampled with
NVML every 100 ms for ``--watch-s`` seconds after ``--load-s`` seconds of bf16 matmuls.

Why: an idle baseline measured right after a workload came out at 121.7 W instead of ~76 W
(second session). This shows how long the GPU takes to return to idle, which is what the idle
baseline's settle check (``core/energy/baseline.py``) has to wait for.

    PYTHONPATH=src python benchmarks/gpu_cooldown.py --out cooldown.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from gpu_energy import matmul_load  # type: ignore[import-not-found]  # benchmarks/ sibling


def watch(handle: Any, watch_s: float, interval_s: float) -> list[dict[str, float]]:
    """NVML samples (t from the end of the load) for ``watch_s`` seconds."""
    import pynvml

    rows = []
    t0 = time.monotonic()
    while (t := time.monotonic() - t0) < watch_s:
        rows.append(
            {
                "t_s": t,
                "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, 0),
                "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "pstate": pynvml.nvmlDeviceGetPerformanceState(handle),
            }
        )
        time.sleep(interval_s)
    return rows


def main() -> None:
    """Load, then watch; print one line per 5 s and save every sample."""
    import pynvml
    import torch

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--load-s", type=float, default=30.0)
    p.add_argument("--watch-s", type=float, default=90.0)
    args = p.parse_args()
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    before = watch(handle, 3.0, 0.1)
    matmul_load(args.load_s, {})
    torch.cuda.empty_cache()
    rows = watch(handle, args.watch_s, 0.1)
    pynvml.nvmlShutdown()
    args.out.write_text(
        json.dumps({"before": before, "after": rows, "args": vars(args)}, default=str)
    )
    print(f"before load: {sum(r['power_w'] for r in before) / len(before):.1f} W")
    print("  t s   power W (5 s mean)  temp C  sm MHz  pstate")
    for start in range(0, int(args.watch_s), 5):
        chunk = [r for r in rows if start <= r["t_s"] < start + 5]
        if chunk:
            last = chunk[-1]
            mean_w = sum(r["power_w"] for r in chunk) / len(chunk)
            print(
                f"{start:5d}   {mean_w:8.1f}            {last['temperature_c']:4d}  "
                f"{last['sm_clock_mhz']:6d}  P{last['pstate']}"
            )


if __name__ == "__main__":
    main()
