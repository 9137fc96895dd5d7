#!/usr/bin/env bash
# Re-trains the shipped model models/lclm-small from scratch with lclm-train:
# the four published stages on Debian text (s0-s4), then the recall
# curriculum (s5-s20, docs/training.md) that teaches the decoder to look
# things up, first in plain text, then in latents, then at length, then at
# 4x and 8x, then at length again, then on random numbers. The result is
# exported as bf16. Each stage is its own run directory under RUNS, so an
# interrupted run (Ctrl-C saves the step in progress and stops the script)
# continues with `scripts/train_small.sh` again (--resume), and finished
# stages are not redone.
#
#   scripts/train_small.sh [--out DIR] [--runs DIR] [--scale F] [--base-only] [--agent]
#
# --scale multiplies every stage's step count (e.g. 0.01 for a smoke run).
# --base-only stops after s4, the model shipped before the recall curriculum.
# --agent goes on with s21-s22, the skim-and-expand agent's protocol and
# facts in many wordings, and exports s22: the 2026-12-05 experiment, not
# shipped (it lost recall; docs/journal/2026-12-05-agent-training.md).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

out=models/lclm-small
runs=runs/lclm-small
scale=1
base_only=
agent=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    --base-only) base_only=1; shift ;;
    --agent) agent=1; shift ;;
    # The header comment, however long it grows.
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
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
common=(--threads 2 --save-every 100 --log-every 20 --text "${text[@]}")
# Stages s0-s4 trained before packed examples were kept apart.
early=(--ratios 4,8,16 --pack-attention all)

steps() { awk -v s="$1" -v k="$scale" 'BEGIN { n = int(s * k); print (n < 1 ? 1 : n) }'; }

# run_stage NAME INIT-ARGS... -- TRAIN-ARGS...: trains runs/NAME unless done.
run_stage() {
  local name=$1; shift
  local dir=$runs/$name
  local init=() args=()
  while [[ $1 != -- ]]; do init+=("$1"); shift; done
  shift
  args=("$@")
  # --until is not part of a run's saved state: a resume needs it again.
  local until=()
  for ((i = 0; i < ${#args[@]}; i++)); do
    [[ ${args[i]} == --until ]] && until=(--until "${args[i + 1]}")
  done
  if [[ -f $dir.done ]]; then
    echo "== $name: done"
    return
  fi
  if [[ -f $dir/trainer_state/state.json ]]; then
    echo "== $name: resuming"
    $train --resume -o "$dir" --threads 2 "${until[@]}" 2>&1 | tee -i -a "$runs/train.log"
  else
    rm -rf "$dir"
    echo "== $name: training"
    $train "${init[@]}" -o "$dir" "${args[@]}" "${common[@]}" 2>&1 | tee -i -a "$runs/train.log"
  fi
  touch "$dir.done"
}

# Stage 0 warms the adapter up on a random decoder (the published recipe
# starts from a trained one); stages 1-3 use learning rates 15-30x the
# published ones, which are for fine-tuning billion-parameter models.
run_stage s0 --init-random --vocab 4096 --window 64 --ratio 4 --random-seed 1 -- \
  --stages 0 --steps "$(steps 100)" --seq-len 512 --seed 10 "${early[@]}"
run_stage s1 --init "$runs/s0" -- \
  --stages 1 --steps "$(steps 200)" --seq-len 512 --lr-scale 30 --seed 11 "${early[@]}"
run_stage s2 --init "$runs/s1" -- \
  --stages 2 --steps "$(steps 1600)" --seq-len 512 --lr-scale 30 --seed 12 "${early[@]}"
run_stage s3 --init "$runs/s2" -- \
  --stages 3 --steps "$(steps 700)" --seq-len 1024 --lr-scale 15 --seed 13 "${early[@]}"

# A second SFT pass dense in questions: short haystacks (5-50% of the
# sequence), so each step carries several retrieval answers, half of the
# haystacks plain so the decoder learns to copy from text it reads.
run_stage s4 --init "$runs/s3" -- \
  --stages 3 --steps "$(steps 1700)" --seq-len 1024 --lr-scale 20 --seed 14 \
  --mix 0,0.2,0.45,0.25,0.1 --haystack-fill 0.05,0.5 "${early[@]}"

if [[ -n $base_only ]]; then
  $train --init "$runs/s4" --export "$out" --save-dtype bf16
  du -sh "$out"
  exit 0
fi

# The recall curriculum (docs/training.md): short examples, each attending
# only to itself. It starts from s4's weights rounded to bf16, the model
# shipped before it.
[[ -f $runs/s4-bf16/model_config.json ]] ||
  $train --init "$runs/s4" --export "$runs/s4-bf16" --save-dtype bf16
short=(--seq-len 512 --needles 1,4 --questions 4 --haystack-fill 0.02,0.15 --copy-fill 0.03,0.12
  --warmup 50)
# s5: plain copying (mostly shuffled words) and plain needles, where the
# induction-style lookup forms, beside copying and needles from latents at
# 1x and 2x; s6: more of the compressed tasks, 4x too.
run_stage s5 --init "$runs/s4-bf16" -- \
  --stages 3 --steps "$(steps 12000)" --until "$(steps 8000)" --lr-scale 30 --seed 91 \
  --ratios 1,1,2 --mix 0,0.3,0.15,0.2,0.35 --scramble 0.7 "${short[@]}"
run_stage s6 --init "$runs/s5" -- \
  --stages 3 --steps "$(steps 8000)" --until "$(steps 1250)" --lr-scale 30 --seed 92 \
  --ratios 1,1,2,4 --mix 0,0.45,0.3,0.1,0.15 --scramble 0.6 "${short[@]}"
# s7: the same with the latent alignment term, which pulls each latent
# towards the embeddings of its tokens: reading latents starts from reading
# tokens (1x first). s8: the weight moves to 2x and 4x.
run_stage s7 --init "$runs/s6" -- \
  --stages 3 --steps "$(steps 8000)" --until "$(steps 3500)" --lr-scale 30 --seed 93 \
  --ratios 1,1,2,4 --mix 0,0.45,0.3,0.1,0.15 --scramble 0.6 --latent-align 1 "${short[@]}"
run_stage s8 --init "$runs/s7" -- \
  --stages 3 --steps "$(steps 8000)" --until "$(steps 3000)" --lr-scale 30 --seed 94 \
  --ratios 1,2,2,4,4 --mix 0,0.45,0.3,0.1,0.15 --scramble 0.5 --latent-align 1 "${short[@]}"
# s9: at length, so that the answer format and the lookup hold on long
# prompts: sequences of 1,024, haystacks up to half of one (times min(r, 6)
# when compressed), every ratio the model is used at.
run_stage s9 --init "$runs/s8" -- \
  --stages 3 --steps "$(steps 3000)" --until "$(steps 2500)" --seq-len 1024 --lr-scale 20 \
  --seed 95 --ratios 1,2,4,4,8,16 --mix 0,0.25,0.4,0.2,0.15 --scramble 0.3 \
  --copy-fill 0.03,0.15 --haystack-fill 0.05,0.5 --needles 1,4 --questions 4 --warmup 50 \
  --latent-align 1
# s10: short examples again, the weight on 4x and 8x, a tenth continual text
# (s5-s9 had none); s11: the same mix from s10 with the alignment term
# weakened to 0.1, which lets latents carry more than their tokens' mean.
run_stage s10 --init "$runs/s9" -- \
  --stages 3 --steps "$(steps 12000)" --until "$(steps 2500)" --lr-scale 30 --seed 101 \
  --ratios 2,4,4,8 --mix 0.1,0.35,0.35,0.1,0.1 --scramble 0.5 --latent-align 1 "${short[@]}"
run_stage s11 --init "$runs/s10" -- \
  --stages 3 --steps "$(steps 9500)" --lr-scale 30 --seed 102 \
  --ratios 2,4,4,8 --mix 0.1,0.35,0.35,0.1,0.1 --scramble 0.5 --latent-align 0.1 "${short[@]}"
# s12: a short pass at length again, since s10-s11's sequences of 512 left
# the plain lookup weak past 512 tokens.
run_stage s12 --init "$runs/s11" -- \
  --stages 3 --steps "$(steps 1000)" --seq-len 1024 --lr-scale 20 --seed 103 \
  --ratios 2,4,4,8,8,16 --mix 0.1,0.25,0.35,0.2,0.1 --scramble 0.3 --copy-fill 0.03,0.15 \
  --haystack-fill 0.05,0.5 --needles 1,4 --questions 4 --warmup 50 --latent-align 0.1

# deepen_stage NAME FROM PART LAYERS SEED STEPS LR_SCALE [UNTIL]: grows
# FROM's encoder or decoder (PART) to LAYERS layers (the new ones start as
# the identity, so FROM's function is kept), then trains it at length with
# the weight on 4x, 8x and 16x (stopping at step UNTIL of the STEPS plan).
deepen_stage() {
  local name=$1 from=$2 part=$3 layers=$4 seed=$5 n=$6 lr=$7 until=(${8:+--until "$(steps "$8")"})
  local grown=$runs/$from-deep-$part
  [[ -f $grown/model_config.json ]] ||
    $train --init "$runs/$from" --export "$grown" "--deepen-$part" "$layers" --save-dtype f32
  run_stage "$name" --init "$grown" -- \
    --stages 3 --steps "$(steps "$n")" "${until[@]}" --seq-len 1024 --lr-scale "$lr" --seed "$seed" \
    --ratios 2,4,4,8,8,16,16 --mix 0.1,0.3,0.35,0.15,0.1 --scramble 0.3 --copy-fill 0.03,0.15 \
    --haystack-fill 0.05,0.5 --needles 1,4 --questions 4 --warmup 50 --latent-align 0.1
}
# s13: the encoder grown from 2 to 6 layers; s14: again, from 6 to 10;
# s15: the decoder grown from 4 to 8 layers.
deepen_stage s13 s12 encoder 6 104 5000 25
deepen_stage s14 s13 encoder 10 105 4000 25
deepen_stage s15 s14 decoder 8 107 4000 20 3500
# s16: s15 continued at a third of its peak rate, with two thirds of the
# compressed examples at 8x or 16x (s15: four sevenths).
run_stage s16 --init "$runs/s15" -- \
  --stages 3 --steps "$(steps 2000)" --seq-len 1024 --lr-scale 8 --seed 108 \
  --ratios 2,4,4,8,8,8,16,16,16 --mix 0.1,0.3,0.35,0.15,0.1 --scramble 0.3 --copy-fill 0.03,0.15 \
  --haystack-fill 0.05,0.5 --needles 1,4 --questions 4 --warmup 50 --latent-align 0.1

# s17-s20: s16 continued where its latents lose the order of digits
# (docs/journal/2026-training-runs.md, "Where the digits go"):
# reconstruction passages are mostly random numbers (--numbers), which a
# language model cannot guess back, so the latents must keep each digit's
# place.
# numbers_stage NAME FROM STEPS SEED NUMBERS MIX: FROM continued at s16's
# rate and ratios with this share of number passages and task mix.
numbers_stage() {
  local name=$1 from=$2 n=$3 seed=$4 numbers=$5 mix=$6
  run_stage "$name" --init "$runs/$from" -- \
    --stages 3 --steps "$(steps "$n")" --seq-len 1024 --lr-scale 8 --seed "$seed" \
    --ratios 2,4,4,8,8,8,16,16,16 --mix "$mix" --numbers "$numbers" --scramble 0.3 --copy-fill 0.03,0.15 \
    --haystack-fill 0.05,0.5 --needles 1,4 --questions 4 --warmup 50 --latent-align 0.1
}
# s17 starts from the bf16 export of s16, as the shipped s16 was: half the
# passages numbers. s18 and s19: four fifths, and two fifths of the
# examples reconstruction; s20 is s19 continued.
[[ -f $runs/s16-bf16/model_config.json ]] ||
  $train --init "$runs/s16" --export "$runs/s16-bf16" --save-dtype bf16
numbers_stage s17 s16-bf16 1000 123 0.5 0.1,0.3,0.35,0.15,0.1
numbers_stage s18 s17 1000 124 0.8 0.1,0.4,0.3,0.1,0.1
numbers_stage s19 s18 3000 126 0.8 0.1,0.4,0.3,0.1,0.1
numbers_stage s20 s19 3000 127 0.8 0.1,0.4,0.3,0.1,0.1

if [[ -z $agent ]]; then
  $train --init "$runs/s20" --export "$out" --save-dtype bf16
  du -sh "$out"
  exit 0
fi

# s21-s22 (--agent): the skim-and-expand agent's protocol and facts in many wordings
# (docs/training.md, "Data", tasks 4-6), from s20 rounded to bf16 (the model
# shipped before them): half the examples one round of the agent at 4x, 8x
# or 16x (first rounds that expand the chunk holding the answer, later
# rounds that answer from it or expand what is still missing), a quarter
# facts of the train split (compressed and plain), the rest s20's needles,
# numbers and continual text; sequences of 2,048, which an agent's second
# round of an 8,192-token document at 8x needs. s21 stopped at step 253 of
# its plan, when made-up fact subjects were added to the data (s21's facts
# had a few dozen subjects, which a question in other words does not
# match); s22 goes on from it with them. s21 ran before made-up subjects
# existed (commit 7972a00), so a re-run of it draws other facts.
agent_flags=(--stages 3 --seq-len 2048 --lr-scale 8 --ratios 4,8,8,16,16
  --mix 0.05,0.1,0.1,0,0,0.15,0.1,0.5 --numbers 0.8 --scramble 0.3 --copy-fill 0.03,0.15
  --haystack-fill 0.05,0.3 --needles 1,4 --questions 4 --latent-align 0.1)
[[ -f $runs/s20-bf16/model_config.json ]] ||
  $train --init "$runs/s20" --export "$runs/s20-bf16" --save-dtype bf16
run_stage s21 --init "$runs/s20-bf16" -- \
  --steps "$(steps 800)" --until "$(steps 253)" --seed 130 --warmup 50 "${agent_flags[@]}"
run_stage s22 --init "$runs/s21" -- \
  --steps "$(steps 550)" --seed 131 --warmup 30 "${agent_flags[@]}"

$train --init "$runs/s22" --export "$out" --save-dtype bf16
du -sh "$out"
