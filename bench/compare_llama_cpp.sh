#!/usr/bin/env bash
# lclm against llama.cpp on the same machine, in one run: llama-bench and
# lclm-bench-qwen3 on Qwen3-0.6B's matmul shapes (random weights), bf16, q8_0
# and q4_0, at 1 and 2 threads, interleaved (each lclm figure right after the
# llama.cpp one it is compared with). Prints the table of docs/benchmarks.md
# ("The bar") with lclm / llama.cpp ratios and keeps every JSON. As in
# llama-bench, ppN is a prefill alone and tgN decodes N tokens from an empty
# context (lclm: one prompt token, then N timed steps).
#
#   bench/compare_llama_cpp.sh LLAMA_CPP_SOURCE [OUT_DIR]
#
# LLAMA_CPP_SOURCE: a llama.cpp source tree (the project vendors none; the
# docs name the build compared against). llama-bench and llama-quantize are
# built in LLAMA_CPP_SOURCE/build if missing. The GGUFs (bench/llama_cpp_gguf.py,
# then llama-quantize) are written once under OUT_DIR/gguf.
# Environment: TYPES (default "bf16 q8_0 q4_0"), THREADS ("1 2"), PROMPT (512),
# GEN (64), REPEATS (3), LCLM_BUILD (build), PYTHON (/usr/bin/python3).
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit $(( $# < 1 ? 2 : 0 ))
fi
root=$(cd "$(dirname "$0")/.." && pwd)
llama=$(cd "$1" && pwd)
out=${2:-$root/build/llama-cpp-compare}
types=${TYPES:-bf16 q8_0 q4_0}
threads=${THREADS:-1 2}
prompt=${PROMPT:-512}
gen=${GEN:-64}
repeats=${REPEATS:-3}
build=${LCLM_BUILD:-$root/build}
python=${PYTHON:-/usr/bin/python3}
lclm_bench=$build/bin/lclm-bench-qwen3
[[ -x "$lclm_bench" ]] || { echo "error: $lclm_bench is missing: build lclm first" >&2; exit 1; }

bin=$llama/build/bin
if [[ ! -x $bin/llama-bench || ! -x $bin/llama-quantize ]]; then
  echo "building llama-bench and llama-quantize in $llama/build" >&2
  cmake -S "$llama" -B "$llama/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$llama/build" --parallel "$(nproc)" --target llama-bench llama-quantize >/dev/null
fi

mkdir -p "$out/gguf"
gguf=$out/gguf/qwen3-shape
if [[ ! -f $gguf-bf16.gguf ]]; then
  "$python" "$root/bench/llama_cpp_gguf.py" --gguf-py "$llama/gguf-py" -o "$gguf-bf16.gguf.part"
  mv "$gguf-bf16.gguf.part" "$gguf-bf16.gguf"
fi
for t in $types; do
  if [[ $t != bf16 && ! -f $gguf-$t.gguf ]]; then
    "$bin/llama-quantize" "$gguf-bf16.gguf" "$gguf-$t.gguf.part" "${t^^}" >"$out/quantize-$t.log" 2>&1
    mv "$gguf-$t.gguf.part" "$gguf-$t.gguf"
  fi
done

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
  echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512f|avx512_bf16|avx512_vnni|amx_bf16|amx_int8)$' | xargs)"
  echo "cores: $(nproc)"
  echo "llama.cpp: $(git -C "$llama" log -1 --format='%h %cs' 2>/dev/null || echo "$llama")"
  echo "lclm: $(git -C "$root" log -1 --format='%h %cs')"
} | tee "$out/machine.txt"

for t in $types; do
  quant=()
  [[ $t != bf16 ]] && quant=(--quant "$t")
  for n in $threads; do
    echo "== $t, $n thread(s): llama-bench" >&2
    "$bin/llama-bench" -m "$gguf-$t.gguf" -p "$prompt" -n "$gen" -r "$repeats" -t "$n" -o json \
      >"$out/llama_${t}_t$n.json"
    # As llama-bench: prefill of PROMPT tokens alone, and GEN tokens decoded
    # from an empty context (one prompt token, then GEN timed steps).
    echo "== $t, $n thread(s): lclm-bench-qwen3 pp$prompt, tg$gen" >&2
    "$lclm_bench" -t "$n" --prompt "$prompt" --gen 2 --repeats "$repeats" "${quant[@]}" \
      --json "$out/lclm_${t}_t${n}_pp.json" >"$out/lclm_${t}_t${n}_pp.txt"
    "$lclm_bench" -t "$n" --prompt 1 --gen $((gen + 1)) --repeats "$repeats" "${quant[@]}" \
      --json "$out/lclm_${t}_t${n}_tg.json" >"$out/lclm_${t}_t${n}_tg.txt"
  done
done

"$python" - "$out" "$prompt" "$gen" "$types" "$threads" <<'EOF'
import json, sys
out, prompt, gen, types, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5].split()

def llama(t, n, kind):
    for r in json.load(open(f"{out}/llama_{t}_t{n}.json")):
        if (kind == "pp" and r["n_prompt"] > 0 and r["n_gen"] == 0) or (kind == "tg" and r["n_gen"] > 0 and r["n_prompt"] == 0):
            return r["avg_ts"]

def lclm(t, n, kind):
    j = json.load(open(f"{out}/lclm_{t}_t{n}_{kind}.json"))
    return j["prefill" if kind == "pp" else "decode"]["tokens_per_second"]

head = "| figure |" + "".join(f" lclm {n} thr | llama.cpp {n} thr | ratio |" for n in threads)
print(head)
print("|---|" + "---|---|---|" * len(threads))
for t in types:
    for kind, size in (("pp", prompt), ("tg", gen)):
        row = f"| {t} {kind}{size} |"
        for n in threads:
            a, b = lclm(t, n, kind), llama(t, n, kind)
            row += f" {a:.1f} | {b:.1f} | {a / b:.2f}x |"
        print(row)
EOF
