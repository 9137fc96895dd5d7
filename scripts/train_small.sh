#!/usr/bin/env bash
# Re-trains the shipped model models/lclm-small from scratch with lclm-train:
# the four published stages on Debian text (docs/training.md), then exports
# the result as bf16. Each stage is its own run directory under RUNS, so an
# interrupted run continues with `scripts/train_small.sh` again (--resume),
# and finished stages are not redone.
#
#   scripts/train_small.sh [--out DIR] [--runs DIR] [--scale F]
#
# --scale multiplies every stage's step count (e.g. 0.1 for a smoke run).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

out=models/lclm-small
runs=runs/lclm-small
scale=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "train_small.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

train=build/bin/lclm-train
[[ -x $train ]] || scripts/build.sh
# Threads wait passively: spinning OpenMP threads lose badly to any other
# process on a 2-core machine.
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$runs"

# Training text: the license texts of base-files and the copyright files of
# installed packages a-l; packages m-z are held out for evaluation.
shopt -s nullglob
text=(/usr/share/common-licenses /usr/share/doc/[a-l]*/copyright)
common=(--ratios 4,8,16 --threads 2 --save-every 100 --log-every 20 --text "${text[@]}")

steps() { awk -v s="$1" -v k="$scale" 'BEGIN { n = int(s * k); print (n < 1 ? 1 : n) }'; }

# run_stage NAME INIT-ARGS... -- TRAIN-ARGS...: trains runs/NAME unless done.
run_stage() {
  local name=$1; shift
  local dir=$runs/$name
  local init=() args=()
  while [[ $1 != -- ]]; do init+=("$1"); shift; done
  shift
  args=("$@")
  if [[ -f $dir.done ]]; then
    echo "== $name: done"
    return
  fi
  if [[ -f $dir/trainer_state/state.json ]]; then
    echo "== $name: resuming"
    $train --resume -o "$dir" --threads 2 2>&1 | tee -a "$runs/train.log"
  else
    rm -rf "$dir"
    echo "== $name: training"
    $train "${init[@]}" -o "$dir" "${args[@]}" "${common[@]}" 2>&1 | tee -a "$runs/train.log"
  fi
  touch "$dir.done"
}

# Stage 0 warms the adapter up on a random decoder (the published recipe
# starts from a trained one); stages 1-3 use learning rates 15-30x the
# published ones, which are for fine-tuning billion-parameter models.
run_stage s0 --init-random --vocab 4096 --window 64 --ratio 4 --random-seed 1 -- \
  --stages 0 --steps "$(steps 100)" --seq-len 512 --seed 10
run_stage s1 --init "$runs/s0" -- \
  --stages 1 --steps "$(steps 200)" --seq-len 512 --lr-scale 30 --seed 11
run_stage s2 --init "$runs/s1" -- \
  --stages 2 --steps "$(steps 1600)" --seq-len 512 --lr-scale 30 --seed 12
run_stage s3 --init "$runs/s2" -- \
  --stages 3 --steps "$(steps 700)" --seq-len 1024 --lr-scale 15 --seed 13

# A second SFT pass dense in questions: short haystacks (5-50% of the
# sequence), so each step carries several retrieval answers, half of the
# haystacks plain so the decoder learns to copy from text it reads.
run_stage s4 --init "$runs/s3" -- \
  --stages 3 --steps "$(steps 1700)" --seq-len 1024 --lr-scale 20 --seed 14 \
  --mix 0,0.2,0.45,0.25,0.1 --haystack-fill 0.05,0.5

$train --init "$runs/s4" --export "$out" --save-dtype bf16
du -sh "$out"
