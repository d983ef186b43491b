"""Print the short table that ends a GPU acceptance run (benchmarks/gpu_acceptance.sh).

Reads what the run left in OUT_DIR (energy.json, experiment.json, harness.json,
launcher_tax.json, study/, pytest_gpu.log, vllm_<max_num_seqs>.json, sensor_profile.json,
phases/phase_energy.json, overhead.json) and prints one line per check with its target. Parts that did not run are
listed as "not run", never as passed.

    python benchmarks/acceptance_table.py OUT_DIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str]


def _load(path: Path) -> Any:
    """JSON content of ``path`` or None when it is missing/unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _status(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def energy_rows(data: Any) -> list[Row]:
    """Accuracy (meter vs raw counter) and overhead rows."""
    if data is None:
        return [("energy benchmark", "not run", "", "")]
    rows: list[Row] = []
    if data.get("accuracy"):
        rows += _accuracy_rows(data["accuracy"]["windows"])
    for name, r in data["overhead"].items():
        if name == "cpu_settings":
            continue
        lo, hi = r.get("median_ratio_ci95", (float("nan"), float("nan")))
        rows.append(
            (
                f"overhead {name} (on/off, median [95% CI])",
                f"{r['median_ratio']:.4f} [{lo:.3f},{hi:.3f}]",
                ">= 0.99",
                _status(r["median_ratio"] >= 0.99),
            )
        )
    return rows


def _accuracy_rows(windows: list[dict[str, Any]]) -> list[Row]:
    """Meter vs raw counter, and the polled cross-check."""
    worst = max(abs(w["ratio"] - 1.0) for w in windows) * 100
    polled = [abs(w["polled_vs_counter_pct"]) for w in windows if w.get("polled_vs_counter_pct")]
    if "in_bracket" not in windows[0]:  # files from before the bracketing reads
        meter_row = (
            f"meter vs raw counter, {len(windows)} windows",
            f"max dev {worst:.3f} %",
            "<= 1 %",
            _status(worst <= 1.0),
        )
    else:
        exact = [w for w in windows if not w["counter_stepped_between_reads"]]
        worst_exact = max((abs(w["ratio"] - 1.0) for w in exact), default=0.0) * 100
        inside = sum(bool(w["in_bracket"]) for w in windows)
        meter_row = (
            f"meter vs raw counter, {len(windows)} windows",
            f"max dev {worst_exact:.3f} % ({len(exact)} w/o step), "
            f"{inside}/{len(windows)} in bracket, max dev all {worst:.2f} %",
            "<= 1 %, all in bracket",
            _status(worst_exact <= 1.0 and inside == len(windows)),
        )
    return [
        meter_row,
        (
            "polled cross-check vs counter",
            f"max |dev| {max(polled, default=0):.2f} %",
            "reported",
            "",
        ),
    ]


def harness_rows(data: Any) -> list[Row]:
    """No-harness-tax ratios and latency agreement."""
    if data is None:
        return [("harness benchmark", "not run", "", "")]
    rows: list[Row] = []
    for s in data["settings"]:
        tag = f"{s['mode']} b{s['batch_size']}"
        rows.append(
            (
                f"tool/plain generate {tag}",
                f"{s['ratio_median']:.3f}",
                ">= 0.98",
                _status(s["ratio_median"] >= 0.98),
            )
        )
        if s.get("ttft_rel_diff") is not None:
            worst = 100 * max(abs(s["ttft_rel_diff"]), abs(s["itl_rel_diff"]))
            rows.append(
                (
                    f"TTFT/ITL vs CUDA events {tag}",
                    f"max dev {worst:.2f} %",
                    "<= 5 %",
                    _status(worst <= 5.0),
                )
            )
    return rows


def experiment_rows(data: Any) -> list[Row]:
    """One row per llem run (throughput and energy per token)."""
    if data is None:
        return [("experiment benchmark", "not run", "", "")]
    return [
        (
            f"llem run {r['mode']} b{r['batch']}",
            f"{r['tok/s']:.0f} tok/s, {r['mJ/out tok']:.1f} mJ/tok",
            r["energy method"],
            "",
        )
        for r in data["rows"]
    ]


def launcher_rows(data: Any) -> list[Row]:
    """num_processes: 1 through the launcher / the direct path (throughput, J/token)."""
    if data is None:
        return [("launcher tax", "not run", "", "")]
    summary = data.get("summary", {})
    tput = summary.get("throughput")
    if not tput:
        return [("launcher tax", "no complete pair", ">= 0.98", "MISSED")]
    lo, hi = tput["median_ratio_ci95"]
    rows: list[Row] = [
        (
            f"launcher/direct tok/s, {len(tput['ratios'])} pairs (median [95% CI])",
            f"{tput['median_ratio']:.4f} [{lo:.3f},{hi:.3f}]",
            ">= 0.98",
            _status(tput["median_ratio"] >= 0.98),
        )
    ]
    jt = summary.get("j_per_token")
    if jt:
        lo, hi = jt["median_ratio_ci95"]
        rows.append(
            (
                "launcher/direct J/output token (median [95% CI])",
                f"{jt['median_ratio']:.4f} [{lo:.3f},{hi:.3f}]",
                "reported",
                "",
            )
        )
    return rows


def study_rows(out: Path) -> list[Row]:
    """Counts from the study summary, if a study ran."""
    summaries = sorted(out.glob("study/**/study_summary.json"))
    if not summaries:
        return [("study", "not run", "", "")]
    s = _load(summaries[-1]) or {}
    counts = s.get("counts", {})
    done, planned = counts.get("completed", 0), counts.get("planned", 0)
    return [
        (
            f"study {s.get('study_name', '?')}",
            f"{done}/{planned} completed",
            "all",
            _status(done == planned and planned > 0),
        )
    ]


def pytest_rows(out: Path) -> list[Row]:
    """The GPU test suite's closing line."""
    try:
        text = (out / "pytest_gpu.log").read_text()
    except OSError:
        return [("pytest -m gpu", "not run", "", "")]
    m = re.findall(r"(\d+ passed[^\n]*|\d+ failed[^\n]*)", text)
    line = m[-1] if m else "no result line"
    return [
        (
            "pytest -m gpu",
            line.strip("= "),
            "all pass",
            _status("failed" not in line and "passed" in line),
        )
    ]


def vllm_rows(out: Path) -> list[Row]:
    """benchmarks/gpu_vllm.py: tool and bare step loop vs plain LLM.generate, J/token, latency."""
    files = sorted(out.glob("vllm_*.json"), key=lambda p: p.stem)
    if not files:
        return [("vllm benchmark", "not run", "", "")]
    rows: list[Row] = []
    for path in files:
        data = _load(path) or {}
        s = data.get("summary") or {}
        tag = f"vllm seqs {data.get('args', {}).get('max_num_seqs', path.stem)}"
        for message in data.get("errors") or []:
            # a repetition cut by the time budget is listed here too: say what it was
            rows.append((f"{tag} error", str(message)[:60], "none", "MISSED"))
        for key, target, label in (
            ("tool_over_generate", 0.98, "tool/LLM.generate"),
            ("steploop_over_generate", 0.99, "step loop/LLM.generate"),
        ):
            r = s.get(key) or {}
            med, ci = r.get("median"), r.get("ci95")
            if med is None:
                rows.append((f"{tag} {label}", "not measured", f">= {target}", "MISSED"))
                continue
            value = f"{med:.4f}" + (f" [{ci[0]:.3f},{ci[1]:.3f}]" if ci else "")
            value += f" n={len(r.get('ratios', []))}"
            ok = med >= target and len(r.get("ratios", [])) >= 5
            rows.append(
                (f"{tag} {label} (median [95% CI])", value, f">= {target}, n>=5", _status(ok))
            )
        jt = [s.get(a, {}).get("j_per_token_median") for a in ("tool", "generate")]
        rows.append(
            (
                f"{tag} J/output token tool, generate",
                ", ".join("-" if j is None else f"{j * 1e3:.2f} mJ" for j in jt),
                "counter",
                _status(all(j is not None for j in jt)),
            )
        )
        lat = s.get("latency_ms_median_rep") or {}
        present = [k for k in ("ttft", "itl", "tpot") if lat.get(k)]
        rows.append(
            (
                f"{tag} TTFT/ITL/TPOT (step loop)",
                " ".join(f"{k} {lat[k]['mean_ms']:.1f}ms" for k in present) or "not measured",
                "all present",
                _status(len(present) == 3),
            )
        )
    return rows


def sensor_rows(data: Any) -> list[Row]:
    """benchmarks/gpu_sensor_characterise.py: each signal's update period, delay, window."""
    if data is None:
        return [("sensor characterisation", "not run", "", "")]
    rows: list[Row] = []
    for name, prof in (data.get("profiles") or {}).items():
        for sig, s in (prof.get("signals") or {}).items():

            def ms(key: str, s: dict[str, Any] = s) -> str:
                v = s.get(key)
                return "-" if v is None else f"{1e3 * v:.1f}"

            rows.append(
                (
                    f"sensor {name} {sig} (update/delay/window ms)",
                    f"{ms('update_period_s')}/{ms('delay_s')}/{ms('averaging_window_s')}",
                    "measured",
                    "trusted for phases" if s.get("trusted_for_phases") else "",
                )
            )
    return rows or [("sensor characterisation", "no signal fitted", "", "MISSED")]


def phases_rows(data: Any) -> list[Row]:
    """benchmarks/gpu_phase_energy.py: its checks, one row each (targets in the names)."""
    if data is None:
        return [("energy by phase", "not run", "", "")]
    rows: list[Row] = []
    for c in data.get("checks", []):
        ok = c.get("ok")
        rows.append(
            (c["check"], str(c["value"])[:90], "see name", "" if ok is None else _status(ok))
        )
    return rows or [("energy by phase", "no checks", "", "MISSED")]


def overhead_rows(data: Any) -> list[Row]:
    """benchmarks/gpu_study_overhead.py: overhead per experiment (goal <= 5 s) and, before
    and after, whether the J/token CIs overlap."""
    if data is None:
        return [("study overhead", "not run", "", "")]
    after = data.get("runs", {}).get("after")
    if not after:
        return [("study overhead", "no run of this tree", "", "MISSED")]
    worst = max(
        (e["breakdown"]["overhead_s"] for e in after["experiments"] if e.get("breakdown")),
        default=None,
    )
    mean = after.get("mean", {}).get("overhead_s")
    if worst is None or mean is None:
        return [("study overhead", "no breakdown", "", "MISSED")]
    rows: list[Row] = [
        ("study overhead / experiment (pytorch)", f"mean {mean:.2f} s, max {worst:.2f} s",
         "<= 5 s", _status(worst <= 5.0)),
    ]  # fmt: skip
    comp = data.get("comparison")
    if comp:
        for label, row in comp["configs"].items():
            r = row.get("j_per_output_token")
            if r is not None:
                rows.append((f"J/token before vs after, {label}", f"ratio {r['ratio']:.4f}",
                             "CIs overlap", _status(bool(r["cis_overlap"]))))  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    """Print the table; exit 1 when a check with a target missed it."""
    out = Path(argv[1] if len(argv) > 1 else "results/gpu_acceptance")
    rows = [
        *pytest_rows(out),
        *energy_rows(_load(out / "energy.json")),
        *experiment_rows(_load(out / "experiment.json")),
        *harness_rows(_load(out / "harness.json")),
        *launcher_rows(_load(out / "launcher_tax.json")),
        *study_rows(out),
        *vllm_rows(out),
        *sensor_rows(_load(out / "sensor_profile.json")),
        *phases_rows(_load(out / "phases" / "phase_energy.json")),
        *overhead_rows(_load(out / "overhead.json")),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print("\nGPU acceptance summary")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 1 if any(r[3] == "MISSED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
