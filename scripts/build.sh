#!/usr/bin/env bash
# Configures and builds lclm in build/ (Release, warnings are errors).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLCLM_WERROR=ON >/dev/null
cmake --build build --parallel "$(nproc)"
