#!/usr/bin/env bash
# One GPU acceptance check in one call: GPU test suite, energy meter accuracy/overhead,
# experiments through the tool, harness tax, launcher tax, and a study; prints a short table last.
# Usage (GPU machine, repo root):  benchmarks/gpu_acceptance.sh [quick|full] [OUT_DIR] [PARTS]
#   PARTS: comma list of tests,energy,experiment,harness,launcher,study (default: all)
# OUT_DIR gets a few small files (JSON, logs, the study summary, one timeline); bulky run
# directories go to $LLEM_ACCEPT_WORK (default OUT_DIR/work).
set -u
mode=${1:-quick}
out=${2:-results/gpu_acceptance}
parts=${3:-tests,energy,experiment,harness,launcher,study}
work=${LLEM_ACCEPT_WORK:-$out/work}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
q=""; [ "$mode" = "quick" ] && q="--quick"
has() { case ",$parts," in *",$1,"*) return 0;; *) return 1;; esac; }
log="$out/acceptance.log"

nvidia-smi --query-gpu=name,driver_version,power.limit,temperature.gpu,persistence_mode --format=csv | tee -a "$log"
if has tests; then
  python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 | tee "$out/pytest_gpu.log" | tail -15
fi
if has energy; then
  python3 benchmarks/gpu_energy.py --out "$out/energy.json" $q 2>&1 | tee -a "$log" | tail -40
fi
if has experiment; then
  python3 benchmarks/gpu_experiment.py --out "$out/experiment.json" --results-dir "$work/runs" $q 2>&1 | tee -a "$log" | tail -30
fi
if has harness; then
  python3 benchmarks/gpu_experiment_harness.py --out "$out/harness.json" $q 2>&1 | tee -a "$log" | tail -30
fi
if has launcher; then
  python3 benchmarks/gpu_launcher_tax.py --out "$out/launcher_tax.json" --results-dir "$work/launcher" $q 2>&1 | tee -a "$log" | tail -12
fi
if has study; then
  study=benchmarks/gpu_study.yaml; [ "$mode" = "quick" ] && study=benchmarks/gpu_study_quick.yaml
  python3 -m llenergymeasure run "$study" -o "$work/study" 2>&1 | tee -a "$log" | tail -40
  summary=$(ls -t "$work"/study/*/study_summary.json 2>/dev/null | head -1)
  [ -n "$summary" ] && mkdir -p "$out/study" && cp "$summary" "$out/study/study_summary.json"
fi
python3 benchmarks/acceptance_table.py "$out" | tee "$out/acceptance_table.txt"
