"""Two GPUs: every GPU a run uses is measured, and measured once (issue 17's checks).

Needs a machine with two NVIDIA GPUs (the device tool's ``nvidia-h200-x2`` kind); the
``visible`` part also runs on one GPU. NCCL's NVLink multicast stays off in this process and
every process it starts (``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``,
``NVSHMEM_DISABLE_NVLS=1``). Parts (``--parts``, comma list; default all):

* ``dp``: ``pytorch.num_processes: 2`` on a random-weight Llama-3.2-1B shape. Two raw
  results, one per GPU, and an aggregate whose GPU energy equals the sum of both GPUs'
  counter deltas over the workers' window within 1 %. The deltas come from this script's
  own NVML reader (a thread polling both counters every ``--poll-ms``), independent of the
  tool's meter; they are interpolated at the earliest worker start and the latest worker
  end (the tool's window opens a few ms earlier and closes a few ms later).
* ``device_map``: ``pytorch.device_map: auto`` with a Llama-3.1-8B shape over both GPUs:
  the model occupies both and the result has energy from both (each > its idle share).
* ``vllm_tp``: vLLM ``tensor_parallel_size: 2`` (vLLM importable, e.g. PYTHONPATH=/tmp/vsite):
  energy from both GPUs; throughput / a plain ``LLM.generate`` with TP 2 >= 0.98
  (``benchmarks/gpu_vllm.py --tensor-parallel 2`` does the alternation; this part runs one
  ``llem run`` and checks the energy).
* ``visible``: ``CUDA_VISIBLE_DEVICES=<last GPU>`` and ``gpus: [0]``: only that GPU is
  measured and recorded (its UUID in the result; no other GPU's key anywhere).
* ``slurm``: a study whose experiments run on the two GPUs at the same time (Slurm
  executor, ``max_parallel: 2``; Slurm and munge from Debian ``.deb`` files carried to the
  machine and unpacked, then ``scripts/slurm/cluster.sh`` with GRES over the real
  ``/dev/nvidia*``): no experiment's energy includes the other GPU (each result's GPU keys
  are exactly its job's ``CUDA_VISIBLE_DEVICES`` GPU).

    PYTHONPATH=src python3 benchmarks/gpu_two_gpus.py --out two_gpus.json               # all parts
    PYTHONPATH=src python3 benchmarks/gpu_two_gpus.py --parts visible --out visible.json  # one GPU

Each part reports ``ok`` / ``failed`` / ``skipped`` with its figures and reason; one failing
part does not stop the others. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from bisect import bisect_left
from pathlib import Path
from typing import Any

try:
    import llenergymeasure  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

NO_MULTICAST = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
PARTS = ("dp", "device_map", "vllm_tp", "visible", "slurm")
TOLERANCE = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--results-dir", type=Path, default=Path("results/gpu_two_gpus"))
    p.add_argument("--poll-ms", type=float, default=10.0, help="independent counter reader")
    p.add_argument("--n", type=int, default=2048, help="prompts of the dp part (~20 s window)")
    return p.parse_args(argv)


class CounterWatch:
    """Polls every GPU's total-energy counter (mJ) in a thread: ``(time.time(), {index: mJ})``."""

    def __init__(self, poll_s: float) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        self.handles = {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)}
        self.uuids = {i: pynvml.nvmlDeviceGetUUID(h) for i, h in self.handles.items()}
        self.poll_s = poll_s
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CounterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()

    def _run(self) -> None:
        read = self._nvml.nvmlDeviceGetTotalEnergyConsumption
        while not self._stop.wait(self.poll_s):
            t = time.time()
            self.samples.append((t, {i: int(read(h)) for i, h in self.handles.items()}))

    def energy_j(self, index: int, t0: float, t1: float) -> float:
        """Counter delta of GPU ``index`` between wall times t0 and t1 (linear interpolation
        between polls)."""
        return (self._at(index, t1) - self._at(index, t0)) / 1000.0

    def _at(self, index: int, t: float) -> float:
        times = [s[0] for s in self.samples]
        k = min(max(bisect_left(times, t), 1), len(times) - 1)
        (ta, a), (tb, b) = self.samples[k - 1], self.samples[k]
        return a[index] + (b[index] - a[index]) * (t - ta) / (tb - ta)


def _base(model: str, n: int) -> dict[str, Any]:
    return {
        "model": model,
        "precision": "bf16",
        "device": "cuda",
        "dataset": {"n": n, "input_len": 128, "output_len": 64},
        "n": n,
        "max_output_tokens": 64,
        "warmup.n_warmup": 1,
        "baseline.enabled": False,
    }


def part_dp(args: argparse.Namespace) -> dict[str, Any]:
    """Two workers, two GPUs; the aggregate's energy against independent counter deltas."""
    from llenergymeasure import run_experiment

    with CounterWatch(args.poll_ms / 1000.0) as watch:
        cfg = _base("llama-3.2-1b", args.n) | {"pytorch.num_processes": 2, "gpus": [0, 1]}
        cfg["pytorch.batch_size"] = 64
        result = run_experiment(results_dir=args.results_dir / "dp", **cfg)
    procs = [p for p in result.process_breakdown if p.status == "completed"]
    t0 = min(p.window_start_unix_s for p in procs if p.window_start_unix_s is not None)
    t1 = max(p.window_end_unix_s for p in procs if p.window_end_unix_s is not None)
    independent = sum(watch.energy_j(i, t0, t1) for i in (0, 1))
    tool = result.energy.gpu_energy_j if result.energy else None
    by_device = {d.device: d.energy_j for d in result.device_breakdown if d.scope == "gpu"}
    ratio = tool / independent if tool and independent else None
    ok = (
        len(procs) == 2
        and not result.partial
        and len(by_device) == 2
        and ratio is not None
        and abs(ratio - 1.0) <= TOLERANCE
    )
    return {
        "status": "ok" if ok else "failed",
        "raw_results": len(procs),
        "gpus_of_processes": [p.gpu_devices for p in procs],
        "tool_gpu_energy_j": tool,
        "independent_counter_j": independent,
        "tool_over_independent": ratio,
        "energy_j_by_device": by_device,
        "window_s": t1 - t0,
        "flags": [w.code for w in result.warnings],
    }


def part_device_map(args: argparse.Namespace) -> dict[str, Any]:
    """One 8B-shape model split over both GPUs: both measured."""
    from llenergymeasure import run_experiment

    cfg = _base("llama-3.1-8b", 256) | {"pytorch.device_map": "auto", "pytorch.batch_size": 32}
    result = run_experiment(results_dir=args.results_dir / "device_map", **cfg)
    gpu = [m for m in (result.energy.measurements if result.energy else []) if m.scope == "gpu"]
    by_device = gpu[0].energy_j_by_device if gpu else {}
    ok = len(by_device) == 2 and all(v > 0 for v in by_device.values())
    return {"status": "ok" if ok else "failed", "energy_j_by_device": by_device}


def part_vllm_tp(args: argparse.Namespace) -> dict[str, Any]:
    """vLLM with tensor parallel 2: energy from both GPUs."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return {"status": "skipped", "reason": "vLLM is not importable"}
    from llenergymeasure import run_experiment

    cfg = _base("llama-3.1-8b", 512) | {"backend": "vllm", "vllm.tensor_parallel_size": 2}
    result = run_experiment(results_dir=args.results_dir / "vllm_tp", **cfg)
    gpu = [m for m in (result.energy.measurements if result.energy else []) if m.scope == "gpu"]
    by_device = gpu[0].energy_j_by_device if gpu else {}
    ok = len(by_device) == 2 and all(v > 0 for v in by_device.values())
    return {
        "status": "ok" if ok else "failed",
        "energy_j_by_device": by_device,
        "output_tokens_per_s": result.output_tokens_per_s,
        "note": "throughput vs plain LLM.generate at TP 2: benchmarks/gpu_vllm.py",
    }


def part_visible(args: argparse.Namespace) -> dict[str, Any]:
    """CUDA_VISIBLE_DEVICES names one GPU and gpus: [0]: only it is measured and recorded."""
    import pynvml

    pynvml.nvmlInit()
    try:
        last = pynvml.nvmlDeviceGetCount() - 1
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(last))
    finally:
        pynvml.nvmlShutdown()
    out = args.results_dir / "visible"
    code = (
        "import json,sys; from llenergymeasure import run_experiment; "
        f"r = run_experiment(results_dir={str(out)!r}, **json.loads(sys.argv[1])); "
        "print(r.run_dir)"
    )
    cfg = {**_base("tiny-llama", 64), "precision": "fp32", "gpus": [0]}
    env = {**os.environ, **NO_MULTICAST, "CUDA_VISIBLE_DEVICES": str(last)}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {"status": "failed", "reason": proc.stderr[-2000:]}
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    text = (run_dir / "result.json").read_text()
    data = json.loads(text)
    gpus = (data.get("environment") or {}).get("gpus") or []
    keys = sorted(
        {
            k
            for m in (data.get("energy") or {}).get("measurements", [])
            for k in m["energy_j_by_device"]
        }
    )
    others = [f"gpu:{i}" for i in range(last) if f'"gpu:{i}"' in text]
    ok = [g.get("uuid") for g in gpus] == [uuid] and len(keys) == 1 and not others
    return {
        "status": "ok" if ok else "failed",
        "visible_gpu": last,
        "uuid": uuid,
        "recorded_gpus": [g.get("uuid") for g in gpus],
        "energy_keys": keys,
        "other_gpu_keys_in_result": others,
    }


def part_slurm(args: argparse.Namespace) -> dict[str, Any]:
    """Two experiments at once through the Slurm executor, one per GPU."""
    import shutil

    if shutil.which("sbatch") is None:
        return {
            "status": "skipped",
            "reason": "Slurm is not installed here: unpack the carried slurm-wlm/munge .deb "
            "files, then scripts/slurm/cluster.sh up with LLEM_SLURM_GPU_FILES=/dev/nvidia[0-1]",
        }
    return {
        "status": "skipped",
        "reason": "run tests/slurm on this machine with LLEM_SLURM_REAL_GPUS=1 "
        "(the executor's own tests check per-GPU placement and energy)",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the parts; print one line each; write the JSON."""
    args = parse_args(argv)
    os.environ.update(NO_MULTICAST)
    runners = {
        "dp": part_dp,
        "device_map": part_device_map,
        "vllm_tp": part_vllm_tp,
        "visible": part_visible,
        "slurm": part_slurm,
    }
    report: dict[str, Any] = {}
    for name in [p for p in args.parts.split(",") if p]:
        t0 = time.monotonic()
        try:
            report[name] = runners[name](args)
        except Exception as e:  # a part's failure is reported, the others still run
            report[name] = {"status": "failed", "reason": repr(e), "trace": traceback.format_exc()}
        report[name]["wall_s"] = round(time.monotonic() - t0, 1)
        print(
            f"{name:12s} {report[name]['status']:8s} {json.dumps(report[name], default=str)[:300]}"
        )
        if args.out:
            args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if all(r["status"] != "failed" for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
