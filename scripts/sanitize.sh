#!/usr/bin/env bash
# The tests of everything that reads untrusted input, built with
# AddressSanitizer and UndefinedBehaviorSanitizer in build-asan/: safetensors
# and model loading, kernels, the sampler (core_test), the tokenizer, the
# LCLM checkpoint and regions (compression_test), the HTTP server, the
# command line and its input files (cli_test), and the
# seeded fuzzing (fuzz_test). Any report fails the run.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
targets=(fuzz_test core_test tokenizer_test compression_test server_test cli_test)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLCLM_WERROR=ON \
  -DLCLM_SANITIZE=ON -DLCLM_BUILD_TRAINER=OFF -DLCLM_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan --parallel "$(nproc)" --target "${targets[@]}"
# OpenBLAS and libgomp keep their thread pools to the end of the process;
# LeakSanitizer would report them, so it is off. Every other report aborts.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_WAIT_POLICY=PASSIVE
for t in "${targets[@]}"; do
  echo "== $t (ASan + UBSan)"
  build-asan/tests/"$t" --gtest_brief=1
done
