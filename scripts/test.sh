#!/usr/bin/env bash
# The whole test suite from a fresh clone: dependencies, the reference
# tokenizer files, a build, then every CTest test (unit tests, forward-pass
# parity with PyTorch, tokenizer parity with the JavaScript references), then
# the file-format, model, tokenizer, server, CLI and fuzz tests again built with
# AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/; skip with
# LCLM_SKIP_SANITIZERS=1). Extra arguments go to the first ctest, e.g.
# scripts/test.sh -L tokenizer.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
scripts/install_deps.sh
scripts/fetch_tokenizer.sh
scripts/build.sh
cd build
# ctest runs two test processes at once on two cores: spinning OpenMP threads
# would wait on threads that lost their core, so they sleep instead.
export OMP_WAIT_POLICY=PASSIVE
ctest --output-on-failure --parallel "$(nproc)" --timeout 900 "$@"
cd "$repo_root"
if [[ "${LCLM_SKIP_SANITIZERS:-0}" != 1 ]]; then
  scripts/sanitize.sh
fi
