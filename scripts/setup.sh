#!/usr/bin/env bash
# From a fresh clone to a running demo: installs dependencies, fetches the
# Qwen3 tokenizer, builds, writes the demo model and generates from it.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
scripts/install_deps.sh
scripts/fetch_tokenizer.sh
scripts/build.sh

# The demo model: until the project's trained LCLM ships (issue 4), this is a
# tiny Qwen3 with seeded random weights and the real Qwen3 tokenizer, so the
# text it prints is not meaningful; the pipeline that prints it is the real one.
model=models/tiny-qwen3
if [[ ! -f "$model/config.json" ]]; then
  build/bin/lclm-make-model -o "$model" --preset tiny --seed 42 \
    --tokenizer-dir third_party/qwen3-tokenizer
fi
echo "== lclm generate -m $model --chat -p ... -n 32 --temp 0 =="
build/bin/lclm generate -m "$model" --chat -p "What does a latent context language model do?" \
  -n 32 --temp 0
