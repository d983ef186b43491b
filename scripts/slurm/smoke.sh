#!/usr/bin/env bash
# Smoke test of the single-node test cluster: `cluster.sh up`, two `--gpus=1` jobs, and a check
# that Slurm gave them different CUDA_VISIBLE_DEVICES and ran them at the same time.
# Exit 0 when both hold, 1 otherwise. Leaves the cluster running (stop: cluster.sh stop), or
# stops it at the end with SMOKE_STOP=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SLEEP_S=${SMOKE_SLEEP_S:-8}

fail() {
  echo "smoke: FAIL: $*" >&2
  [ -n "${out:-}" ] && tail -n +1 "$out"/*.out >&2 2>/dev/null
  exit 1
}

LLEM_SLURM_GPUS=${LLEM_SLURM_GPUS:-2} bash "$here/cluster.sh" up || fail "cluster.sh up"

out=$(mktemp -d /tmp/llem-slurm-smoke.XXXXXX)
trap 'rm -rf "$out"' EXIT
# shellcheck disable=SC2016 # expanded by the job's shell, not here
job='echo "cvd=$CUDA_VISIBLE_DEVICES"; echo "start=$(date +%s%N)"; sleep '"$SLEEP_S"'; echo "end=$(date +%s%N)"'
a=$(sbatch --parsable --gpus=1 --time=2 -o "$out/a.out" --wrap "$job") || fail "sbatch a"
b=$(sbatch --parsable --gpus=1 --time=2 -o "$out/b.out" --wrap "$job") || fail "sbatch b"
echo "smoke: submitted jobs $a and $b"

deadline=$((SECONDS + SLEEP_S + 60))
while [ -n "$(squeue -h -j "$a,$b" -o %i 2>/dev/null)" ]; do
  [ $SECONDS -lt $deadline ] || { scancel "$a" "$b"; fail "jobs still queued/running after $((SLEEP_S + 60)) s"; }
  sleep 0.5
done

val() { sed -n "s/^$2=//p" "$out/$1.out"; }
for j in a b; do
  [ -n "$(val $j end)" ] || fail "job $j did not finish its script"
done
cvd_a=$(val a cvd) cvd_b=$(val b cvd)
echo "smoke: CUDA_VISIBLE_DEVICES a=$cvd_a b=$cvd_b"
if [ -z "$cvd_a" ] || [ -z "$cvd_b" ]; then fail "CUDA_VISIBLE_DEVICES not set"; fi
[ "$cvd_a" != "$cvd_b" ] || fail "both jobs got CUDA_VISIBLE_DEVICES=$cvd_a"
# Concurrent: each started before the other ended.
if [ "$(val a start)" -ge "$(val b end)" ] || [ "$(val b start)" -ge "$(val a end)" ]; then
  fail "the jobs ran one after the other, not at the same time"
fi
overlap=$(( ($(val a end) < $(val b end) ? $(val a end) : $(val b end)) - \
  ($(val a start) > $(val b start) ? $(val a start) : $(val b start)) ))
echo "smoke: jobs overlapped for $((overlap / 1000000)) ms"
states=$(sacct -n -X -P -j "$a,$b" -o State | sort -u | tr '\n' ' ')
echo "smoke: sacct states: $states"
[ "$states" = "COMPLETED " ] || fail "sacct does not say COMPLETED for both"
if [ "${SMOKE_STOP:-0}" = 1 ]; then bash "$here/cluster.sh" stop; fi
echo "smoke: OK"
