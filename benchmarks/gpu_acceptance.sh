#!/usr/bin/env bash
# One GPU acceptance check in one call: GPU test suite, energy meter accuracy/overhead,
# experiments through the tool, harness tax, launcher tax, a study, vLLM, the sensor characterisation
# and energy by phase; prints a short table last.
# Usage (GPU machine, repo root):  benchmarks/gpu_acceptance.sh [quick|full] [OUT_DIR] [PARTS]
#   PARTS: comma list of tests,energy,experiment,harness,launcher,study,vllm,sensor,phases,overhead
#   (default: all)
#   sensor: gpu_sensor_characterise.py --quick (~2 min): how each power signal follows a
#   square-wave load; merged into OUT_DIR/sensor_profiles.json (a copy of the bundled file)
#   phases: gpu_phase_energy.py (quick ~2 min, full ~3.5 min): energy by phase / per request
#   and the counter trace's cost, with that profiles file, its trace cost merged into it.
#   Copy OUT_DIR/sensor_profiles.json to src/llenergymeasure/core/energy/ afterwards.
#   overhead: gpu_study_overhead.py (~2 min per tree): a 2-config x 3-cycle study's time
#   breakdown; before/after when $LLEM_BEFORE_SRC (or .before/src) holds an older src/
#   (git archive <commit> src | tar -x -C .before), else this tree alone.
#   vllm: benchmarks/gpu_vllm.py once per max_num_seqs in $LLEM_VLLM_SEQS (default "64 256";
#   $LLEM_VLLM_ARGS is passed on: "--reps 5 --target-s 4 --budget-s 300" ran both in 8 min on
#   an H200, engine starts included); skipped with a message when vllm does not
#   import (vLLM 0.26.0 for the GPU image: ../shared/device/vllm_chunks.sh, PYTHONPATH=/tmp/vsite)
# OUT_DIR gets a few small files (JSON, logs, the study summary, one timeline); bulky run
# directories go to $LLEM_ACCEPT_WORK (default OUT_DIR/work).
set -u
mode=${1:-quick}
out=${2:-results/gpu_acceptance}
parts=${3:-tests,energy,experiment,harness,launcher,study,vllm,sensor,phases,overhead}
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
  # eager cache, batch 256: ~35 s a pair on an H200 (the static cache's compile warm-up: ~2 min)
  python3 benchmarks/gpu_launcher_tax.py --cache eager --batch 256 --input-len 128 --n 768 \
    --pairs 6 --budget-s 285 --out "$out/launcher_tax.json" --results-dir "$work/launcher" 2>&1 \
    | tee -a "$log" | tail -12
fi
if has study; then
  study=benchmarks/gpu_study.yaml; [ "$mode" = "quick" ] && study=benchmarks/gpu_study_quick.yaml
  python3 -m llenergymeasure run "$study" -o "$work/study" 2>&1 | tee -a "$log" | tail -40
  summary=$(ls -t "$work"/study/*/study_summary.json 2>/dev/null | head -1)
  [ -n "$summary" ] && mkdir -p "$out/study" && cp "$summary" "$out/study/study_summary.json"
fi
if has vllm; then
  if python3 -c "import vllm" >/dev/null 2>&1; then
    python3 -m llenergymeasure config 2>&1 | sed -n '/^Backends/,/^$/p' | tee "$out/llem_config_backends.txt"
    # greedy arms never use FlashInfer's top-k/top-p sampler, but a fresh machine's first
    # engine start JIT-compiles it (~100 s on the H200); set it to 1 to measure with it
    export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0}
    for seqs in ${LLEM_VLLM_SEQS:-64 256}; do
      python3 benchmarks/gpu_vllm.py --max-num-seqs "$seqs" --out "$out/vllm_$seqs.json" $q ${LLEM_VLLM_ARGS:-} \
        > "$out/vllm_$seqs.log" 2>&1
      tail -25 "$out/vllm_$seqs.log" | tee -a "$log"
    done
  else
    echo "vllm part skipped: vllm is not importable here (see ../shared/device/vllm_chunks.sh)" | tee -a "$log"
  fi
fi
profiles="$out/sensor_profiles.json"
if { has sensor || has phases; } && [ ! -f "$profiles" ]; then
  cp src/llenergymeasure/core/energy/sensor_profiles.json "$profiles"
fi
if has sensor; then
  python3 benchmarks/gpu_sensor_characterise.py --quick --out "$work/sensor" --merge-into "$profiles" \
    > "$out/sensor.log" 2>&1
  tail -8 "$out/sensor.log" | tee -a "$log"
  cp "$work/sensor/sensor_profile.json" "$out/sensor_profile.json" 2>/dev/null
fi
if has phases; then
  python3 benchmarks/gpu_phase_energy.py $q --profiles "$profiles" --merge-into "$profiles" \
    --out "$out/phases" > "$out/phases.log" 2>&1
  tail -14 "$out/phases.log" | tee -a "$log"
fi
if has overhead; then
  before=${LLEM_BEFORE_SRC:-.before/src}; bargs=""
  [ -d "$before/llenergymeasure" ] && bargs="--before-src $before"
  python3 benchmarks/gpu_study_overhead.py $bargs --after-src src --out "$out/overhead.json" \
    --results-dir "$work/overhead" > "$out/overhead.log" 2>&1
  tail -16 "$out/overhead.log" | tee -a "$log"
fi
python3 benchmarks/acceptance_table.py "$out" | tee "$out/acceptance_table.txt"
