"""Study overhead: where a GPU study's time goes outside its measurement windows, before and
after a change to llem.

Runs ``benchmarks/gpu_study_overhead.yaml`` (a random-weight Llama-3.2-1B shape in bf16, 512
synthetic prompts of 128 in / 64 out, batch sizes 128 and 256, 3 cycles interleaved: 6
experiments, each in its own spawned process) with ``llem run STUDY -o DIR --no-gaps``, once
per source tree given: ``--before-src`` first, then ``--after-src``, each as
``PYTHONPATH=<tree>:$PYTHONPATH`` (checked: the run must import llenergymeasure from that
tree). Every figure is read back from what the runs wrote, never from their output: each
experiment's phase durations and window (``result.json``), its process wall time, saving
and exit (``study_manifest.json``), the per-config statistics (``study_summary.json``).
Results from before the start and imports phases were recorded get their start derived as
the wall minus the recorded phases (marked ``*``; it then also holds saving and exit, and
their ``load`` still holds the framework imports and ``baseline`` the energy session start).

Prints the time table of each run (the one ``llem run`` prints after a study) and a
comparison: per config J/output token and output tokens/s with their 95 % CIs over the 3
cycles (a change in how the time outside the window is spent must not move them beyond
run-to-run noise: the CIs should overlap), and per experiment the time outside the window
and the overhead (outside minus load, engine start and baseline; goal <= 5 s).

Order: before, then after, once each (the simplest; one call). What that order favours and
how it is evened out: the first run reads Python modules and CUDA libraries from a cold page
cache (a throwaway ``import torch, transformers`` warms it before either run), and measures
the idle baseline that the second run then reads from its cache (``baseline`` is outside
the overhead figure either way); the GPU is warmer during the second run (no gaps), which
can only raise its J/token. ``--order after-before`` swaps them to check.

    # the "before" tree: git archive <commit> src | tar -x -C .before
    PYTHONPATH=src:/tmp/site python benchmarks/gpu_study_overhead.py \\
        --before-src .before/src --after-src src --out overhead.json     # ~4-5 min, H200 (est.)
    PYTHONPATH=src python benchmarks/gpu_study_overhead.py --after-src src   # one run, ~2 min
    python benchmarks/gpu_study_overhead.py --cpu-smoke --before-src .before/src --after-src src

``--cpu-smoke``: tiny-llama on the CPU, 24 prompts, 2 cycles (a minute or two on a laptop).
``--sdpa-backends flash,efficient``: the same study with ``pytorch.sdpa_backends`` set (this
tree only): what PyTorch's attention kernel choice does to the first call and to J/token.
The script itself imports the ``--after-src`` tree (the breakdown and the table come from
it); run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "gpu_study_overhead.yaml"
GOAL_S = 5.0
SMOKE = {
    "model": "tiny-llama",
    "device": "cpu",
    "precision": "fp32",
    "dataset": {"input_len": 32, "output_len": 8, "seed": 0},
    "n": 24,
    "max_input_tokens": 32,
    "max_output_tokens": 8,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before-src", type=Path, default=None, help="the old tree's src/")
    p.add_argument("--after-src", type=Path, default=ROOT / "src", help="the new tree's src/")
    p.add_argument("--order", choices=["before-after", "after-before"], default="before-after")
    p.add_argument("--study", type=Path, default=STUDY)
    p.add_argument("--results-dir", type=Path, default=Path("results/gpu_study_overhead"))
    p.add_argument("--out", type=Path, default=None, help="JSON with both runs and the comparison")
    p.add_argument("--budget-s", type=float, default=290.0, help="both runs together")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny-llama on the CPU, 2 cycles")
    p.add_argument(
        "--sdpa-backends",
        default=None,
        help="comma list: the study with pytorch.sdpa_backends set (this tree only, no --before-src)",
    )
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(argv)
    if args.sdpa_backends and args.before_src is not None:
        p.error("--sdpa-backends: the old tree does not know pytorch.sdpa_backends")
    return args


# ---- running -------------------------------------------------------------------------------
def arm_env(src: Path) -> dict[str, str]:
    """The environment of a run: ``src`` first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(src.resolve()), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_tree(python: str, src: Path) -> str:
    """The llenergymeasure a run would import; SystemExit when it is not ``src``'s."""
    out = subprocess.run(
        [python, "-c", "import llenergymeasure as m; print(m.__file__, m.__version__)"],
        env=arm_env(src),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    found = out.stdout.strip()
    path = Path(found.split(" ")[0]) if found else None
    if out.returncode != 0 or path is None or src.resolve() not in path.resolve().parents:
        raise SystemExit(
            f"{src}: a run would not import llenergymeasure from it: {found or out.stderr}"
        )
    return found


def derived_study(study: Path, out_dir: Path, smoke: bool, sdpa_backends: str | None) -> Path:
    """The study as given, or with the CPU smoke settings and/or ``pytorch.sdpa_backends``
    set, written next to the results."""
    if not smoke and not sdpa_backends:
        return study
    import yaml

    data = yaml.safe_load(study.read_text())
    if smoke:
        data["base"].update(SMOKE)
        data["sweep"] = {"pytorch.batch_size": [4, 8]}
        data["execution"]["n_cycles"] = 2
    if sdpa_backends:
        kernels = [k.strip() for k in sdpa_backends.split(",") if k.strip()]
        data["base"].setdefault("pytorch", {})["sdpa_backends"] = kernels
        data["study_name"] = f"{data['study_name']}-sdpa-{'-'.join(kernels)}"
    path = out_dir / f"{study.stem}_derived.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_arm(
    args: argparse.Namespace, arm: str, src: Path, study: Path, timeout_s: float
) -> dict[str, Any]:
    """One ``llem run`` of the study with ``src``; where it wrote, how long it took."""
    out = args.results_dir / arm
    out.mkdir(parents=True, exist_ok=True)
    log = args.results_dir / f"{arm}.log"
    cmd = [
        args.python,
        "-m",
        "llenergymeasure",
        "run",
        str(study),
        "-o",
        str(out),
        "--no-gaps",
        "-q",
    ]
    print(f"[{arm}] {' '.join(cmd)}  (PYTHONPATH={src}, timeout {timeout_s:.0f} s)", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(
                cmd,
                env=arm_env(src),
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                cwd=ROOT,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    wall = time.perf_counter() - t0
    dirs = sorted(out.glob("*/study_manifest.json"), key=lambda p: p.stat().st_mtime)
    study_dir = dirs[-1].parent if dirs else None
    print(f"[{arm}] exit {rc} after {wall:.0f} s -> {study_dir}", flush=True)
    return {
        "arm": arm,
        "src": str(src),
        "rc": rc,
        "wall_s": wall,
        "study_dir": study_dir,
        "log": str(log),
    }


def warm_page_cache(python: str, src: Path) -> None:
    """Import the heavy libraries once, so that neither run pays a cold page cache."""
    code = "import torch, transformers; import transformers.models.llama.modeling_llama"
    subprocess.run(
        [python, "-c", code], env=arm_env(src), capture_output=True, timeout=300, cwd=ROOT
    )


# ---- reading -------------------------------------------------------------------------------
def read_run(study_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The study's summary with its timing rebuilt from its own files, and the figures.

    A run stopped at its time limit has no summary (None): the experiments that finished
    still give the breakdown (gaps are off, so none); per-config CIs are not computed from
    a part of the cycles."""
    from llenergymeasure.domain.study import StudyResult
    from llenergymeasure.results.persistence import read_result
    from llenergymeasure.study.manifest import read_manifest
    from llenergymeasure.study.summary import study_timing

    manifest = read_manifest(study_dir)
    results = {
        e.key: read_result(study_dir / e.result_path)
        for e in manifest.entries
        if e.status == "completed" and e.result_path
    }
    summary_path = study_dir / "study_summary.json"
    summary = (
        StudyResult.model_validate_json(summary_path.read_text()) if summary_path.exists() else None
    )
    if summary is None:
        gap_s, wall_s = 0.0, sum(e.duration_s or 0.0 for e in manifest.entries)
    else:
        gap_s, wall_s = summary.timing.gap_s, summary.timing.wall_time_s
    timing = study_timing(manifest.entries, gap_s, wall_s, results)
    rows = [t.breakdown for t in timing.experiments if t.breakdown is not None]
    figures: dict[str, Any] = {
        "study_dir": str(study_dir),
        "status": "stopped at the benchmark's time limit (no study summary)",
        "completed": len(results),
        "planned": len(manifest.entries),
        "study_wall_s": None,
        "experiments": [t.model_dump() for t in timing.experiments],
        "raw": [_raw_phases(e.position, results.get(e.key)) for e in manifest.entries],
        "mean": _means(rows),
        "configs": {},
        "old_results": any(b.start_derived for b in rows),
    }
    if summary is not None:
        summary = summary.model_copy(update={"timing": timing})
        figures.update(
            status=summary.status,
            completed=summary.counts.completed,
            planned=summary.counts.planned,
            study_wall_s=timing.wall_time_s,
            configs={c.label: _config_figures(c) for c in summary.configs},
        )
    return summary, figures


def _raw_phases(position: int, result: Any) -> dict[str, Any]:
    """One experiment's recorded phases (``other`` in the table is ``preflight``,
    ``environment`` and ``cleanup``) and its warm-up call latencies, as its result.json has
    them."""
    if result is None:
        return {"position": position}
    warmup = result.warmup
    return {
        "position": position,
        "phase_durations_s": dict(result.phase_durations_s),
        "warmup_latencies_s": list(warmup.latencies_s) if warmup is not None else None,
    }


def _means(rows: list[Any]) -> dict[str, float | None]:
    """Mean per experiment of every breakdown field (None where no row has it)."""
    out: dict[str, float | None] = {}
    if not rows:
        return out
    for name in rows[0].model_dump():
        values = [getattr(b, name) for b in rows if isinstance(getattr(b, name), float)]
        out[name] = statistics.fmean(values) if values else None
    return out


def _config_figures(c: Any) -> dict[str, Any]:
    """J/output token and output tok/s of one config: mean and 95 % CI over cycles."""
    out: dict[str, Any] = {"cycles": c.cycles_completed}
    for name in ("j_per_output_token", "output_tokens_per_s"):
        s = c.metrics[name].stats
        out[name] = (
            None if s is None else {"mean": s.mean, "low": s.ci.low, "high": s.ci.high, "n": s.n}
        )
    return out


# ---- comparing -----------------------------------------------------------------------------
def comparison(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per config: after/before of J/token and tok/s and whether the CIs overlap; per
    experiment: the time outside the window and the overhead, before and after."""
    configs = {}
    for label, a in after["configs"].items():
        b = before["configs"].get(label)
        if b is None:
            continue
        row = {}
        for name in ("j_per_output_token", "output_tokens_per_s"):
            x, y = b.get(name), a.get(name)
            if x is None or y is None:
                row[name] = None
                continue
            row[name] = {
                "before": x,
                "after": y,
                "ratio": y["mean"] / x["mean"] if x["mean"] else None,
                "cis_overlap": x["low"] <= y["high"] and y["low"] <= x["high"],
            }
        configs[label] = row
    mb, ma = before["mean"], after["mean"]
    return {
        "configs": configs,
        "outside_s": {"before": mb.get("outside_s"), "after": ma.get("outside_s")},
        "overhead_s": {"before": mb.get("overhead_s"), "after": ma.get("overhead_s")},
        "max_overhead_after_s": max(
            (e["breakdown"]["overhead_s"] for e in after["experiments"] if e.get("breakdown")),
            default=None,
        ),
        "study_wall_s": {"before": before["study_wall_s"], "after": after["study_wall_s"]},
        "goal_s": GOAL_S,
    }


def comparison_text(comp: dict[str, Any], before_old: bool) -> str:
    """The comparison as lines of text."""
    mj = 1000.0
    lines = ["Before / after", "  per config (mean [95% CI] over cycles):"]
    for label, row in comp["configs"].items():
        for name, unit, scale in (
            ("j_per_output_token", "mJ/token", mj),
            ("output_tokens_per_s", "tok/s", 1.0),
        ):
            r = row.get(name)
            if r is None:
                lines.append(f"    {label:22s} {unit:9s} not measured in both")
                continue
            b, a = r["before"], r["after"]
            lines.append(
                f"    {label:22s} {unit:9s} before {b['mean'] * scale:9.4g} [{b['low'] * scale:.4g}, "
                f"{b['high'] * scale:.4g}]  after {a['mean'] * scale:9.4g} [{a['low'] * scale:.4g}, "
                f"{a['high'] * scale:.4g}]  after/before {r['ratio']:.4f}  "
                f"CIs {'overlap' if r['cis_overlap'] else 'DO NOT overlap'}"
            )
    o, h = comp["outside_s"], comp["overhead_s"]
    lines.append(
        f"  per experiment, mean: outside the window {o['before']:.2f} s -> {o['after']:.2f} s; "
        f"overhead {h['before']:.2f} s -> {h['after']:.2f} s (goal <= {comp['goal_s']:g} s; "
        f"max after {comp['max_overhead_after_s']:.2f} s: "
        f"{'met' if comp['max_overhead_after_s'] <= comp['goal_s'] else 'NOT met'})"
    )
    if before_old:
        lines.append(
            "  (before: older results: its load holds the framework imports and its baseline "
            "the energy session start, so its overhead reads low; compare 'outside')"
        )
    w = comp["study_wall_s"]
    lines.append(f"  study wall {w['before']:.1f} s -> {w['after']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the arms in order, print each run's time table and the comparison."""
    args = parse_args(argv)
    sys.path.insert(0, str(args.after_src.resolve()))  # the breakdown and tables come from it
    from llenergymeasure.study.summary import format_study_timing

    t0 = time.perf_counter()
    study = derived_study(args.study, args.results_dir, args.cpu_smoke, args.sdpa_backends)
    arms = [("after", args.after_src)]
    if args.before_src is not None:
        arms = [("before", args.before_src), ("after", args.after_src)]
        if args.order == "after-before":
            arms.reverse()
    for arm, src in arms:
        print(f"[{arm}] imports {check_tree(args.python, src)}", flush=True)
    warm_page_cache(args.python, args.after_src)
    runs: dict[str, dict[str, Any]] = {}
    failed = False
    for k, (arm, src) in enumerate(arms):
        left = args.budget_s - (time.perf_counter() - t0)
        timeout = left if k == len(arms) - 1 else left * 0.55
        info = run_arm(args, arm, src, study, max(30.0, timeout))
        if info["study_dir"] is None:
            failed = True
            print(f"[{arm}] no study directory: see {info['log']}")
            continue
        summary, figures = read_run(info["study_dir"])
        figures.update({"rc": info["rc"], "run_wall_s": info["wall_s"], "src": str(src)})
        runs[arm] = figures
        failed |= info["rc"] != 0 or figures["completed"] != figures["planned"]
        print(f"\n== {arm} ({src}): {figures['completed']}/{figures['planned']} experiments ==")
        if summary is None:
            means = {k: round(v, 2) for k, v in figures["mean"].items() if v is not None}
            print(f"{figures['status']}; per experiment, mean: {means}", flush=True)
        else:
            print(format_study_timing(summary), flush=True)
    report: dict[str, Any] = {"args": vars(args), "runs": runs}
    if "before" in runs and "after" in runs and runs["before"]["configs"]:
        comp = comparison(runs["before"], runs["after"])
        report["comparison"] = comp
        print()
        print(comparison_text(comp, runs["before"]["old_results"]))
    print(f"total wall {time.perf_counter() - t0:.0f} s (budget {args.budget_s:.0f} s)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
