"""How long each NVML read of the telemetry sampler takes on this GPU (and the energy counter).

NVML calls go through the driver; a slow one held while the workload's process needs the
driver (allocations, launches) is a way a sampler in another process could still slow the
workload. Prints median / p99 microseconds per call over ``--reps`` calls on GPU 0.

    python benchmarks/nvml_call_cost.py [--reps 200] [--out nvml_cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from llenergymeasure.core.energy._nvml import nvml
from llenergymeasure.core.energy.sampler import _NvmlReader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    nvml.init()
    handle = nvml.handle_by_index(0)
    calls = dict(_NvmlReader.FIELDS)
    calls["energy_counter_mj"] = nvml.total_energy_mj
    calls["all_sampler_fields"] = lambda h: [f(h) for f in _NvmlReader.FIELDS.values()]
    report = {}
    print(f"{'call':22} {'median us':>10} {'p99 us':>10}")
    for name, fn in calls.items():
        reps = args.reps if name != "energy_counter_mj" else max(10, args.reps // 4)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            try:
                fn(handle)
            except Exception as e:  # a field this GPU does not support
                report[name] = {"error": repr(e)}
                break
            times.append((time.perf_counter() - t0) * 1e6)
        if times:
            times.sort()
            report[name] = {
                "median_us": statistics.median(times),
                "p99_us": times[min(len(times) - 1, int(0.99 * len(times)))],
                "reps": len(times),
            }
            print(f"{name:22} {report[name]['median_us']:10.1f} {report[name]['p99_us']:10.1f}")
        else:
            print(f"{name:22} {report[name]['error']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
