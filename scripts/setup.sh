#!/usr/bin/env bash
# From a fresh clone to a running demo: installs dependencies, fetches the
# Qwen3 tokenizer, builds, and runs the main job (scripts/demo.sh): compress a
# document, ask about it, and compare with reading it uncompressed.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
scripts/install_deps.sh
scripts/fetch_tokenizer.sh
scripts/build.sh

scripts/demo.sh
