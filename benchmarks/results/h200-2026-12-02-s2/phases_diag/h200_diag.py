"""H200 diag: the three windows of benchmarks/gpu_phase_energy.py --quick, with the raw traces,
timings and, per batch, when the host entered generate() and when the first forward reached
the GPU (a CUDA event), dumped for offline attribution (old vs new code)."""
import json, os, sys, time, dataclasses
sys.path[:0] = ["benchmarks", "src"]
import numpy as np
import torch
import gpu_phase_energy as gpe
from llenergymeasure.core.energy._nvml import nvml
from llenergymeasure.core.energy.counter_trace import PhaseTraceSettings
from llenergymeasure.core.energy.session import EnergySession

def main():
    out_dir = os.environ.get("OUT", "/tmp/out")
    args = gpe.parse_args(["--quick", "--parts", "windows"])
    nvml.init()
    work = gpe.GpuWorkload()
    marks: list[dict] = []
    state = {"armed": False, "ev": None, "host": None}

    def pre_hook(mod, a, kw):
        if state["armed"]:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            state.update(armed=False, ev=ev, host=time.perf_counter())
        return None

    work.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    orig = work._generate

    def patched(batch, n_in, new_tokens, recorder):
        enter = time.perf_counter()
        state.update(armed=True, ev=None, host=None)
        orig(batch, n_in, new_tokens, recorder)
        if recorder is not None and state["ev"] is not None:
            state["ev"].synchronize()
            gpu0 = recorder._start_s + recorder._start_event.elapsed_time(state["ev"]) / 1000.0
            marks.append({"anchor": recorder._start_s, "enter": enter, "fwd0_host": state["host"],
                          "fwd0_gpu": gpu0, "n_in": n_in, "new_tokens": new_tokens})

    work._generate = patched
    session = EnergySession("nvml", [0], baseline=None, phase_trace=PhaseTraceSettings("on"))
    rng = np.random.default_rng(0)
    res = {}
    plan = {"mixed": (args.window_s, args.new_tokens), "prefill_only": (args.prefill_window_s, 1),
            "decode_heavy": (args.window_s, 4 * args.new_tokens)}
    with session:
        for name, (seconds, new_tokens) in plan.items():
            work.warm(args.batch, 512, new_tokens)
            marks.clear()
            session.begin_window(name, sync=work.sync)
            timings = work.run(name, seconds, args.batch, new_tokens, rng)
            report = session.end_window(name, sync=work.sync)
            trace = session.window_trace(name)
            dev = trace.devices["gpu:0"]
            by_device = {k: v for m in report.measurements if m.method == "counter"
                         for k, v in m.energy_j_by_device.items()}
            ch = trace.choice
            res[name] = {"window": list(trace.window), "t_s": dev.t_s, "read_s": dev.read_s,
                         "energy_mj": dev.energy_mj, "delay_s": ch.counter_delay_s if ch else 0.0,
                         "avg_s": ch.counter_window_s if ch else 0.0, "edge_j": by_device,
                         "timings": [dataclasses.asdict(t) for t in timings], "marks": list(marks),
                         "profile": ch.profile if ch else None}
            m0 = marks[0]
            print(name, "window", trace.window, "first batch: anchor-t0 %.4f enter-anchor %.4f fwd0_host-anchor %.4f fwd0_gpu-anchor %.4f ttft %.4f" % (
                m0["anchor"] - trace.window[0], m0["enter"] - m0["anchor"], m0["fwd0_host"] - m0["anchor"],
                m0["fwd0_gpu"] - m0["anchor"], timings[0].token_times_s[0] - m0["anchor"]), flush=True)
            lag = [m["fwd0_gpu"] - m["anchor"] for m in marks]
            print("   all batches fwd0_gpu-anchor: first %.4f, rest mean %.4f max %.4f" % (lag[0], np.mean(lag[1:]), np.max(lag[1:])), flush=True)
    with open(os.path.join(out_dir, "diag.json"), "w") as f:
        json.dump(res, f)
    print("done")


if __name__ == "__main__":
    main()
