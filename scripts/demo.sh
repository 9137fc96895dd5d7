#!/usr/bin/env bash
# The main job: compress a real document with an LCLM, ask a question about
# it, and compare with the same decoder reading the document uncompressed:
# the answers, time to first token and memory, side by side.
#
# Until the project's trained LCLM ships, the demo checkpoint has seeded
# random weights (an 8-layer decoder over a 2-layer encoder, ratio 8), so the
# answers are not meaningful text; the timings and memory are real.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

lclm=build/bin/lclm
model=models/demo-lclm
document=${1:-/usr/share/common-licenses/GPL-3}
question=${2:-"Who is allowed to copy and distribute verbatim copies of this license?"}
[[ -f "$document" ]] || { echo "demo.sh: no document at $document" >&2; exit 1; }

if [[ ! -f "$model/model_config.json" ]]; then
  build/bin/lclm-make-model -o "$model" --lclm --tokenizer-dir third_party/qwen3-tokenizer \
    --seed 42 --ratio 8 --decoder-layers 8 --decoder-hidden 512
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{ cat "$document"; printf '\n%s' "$question"; } > "$work/plain_prompt.txt"

echo "== document: $document ($(wc -c < "$document") bytes)"
echo "== question: $question"
echo
echo "== compressed: lclm generate -m $model --compress-file DOC -p QUESTION --chat"
"$lclm" generate -m "$model" --compress-file "$document" -p "$question" --chat -n 24 --temp 0 \
  --stats-json "$work/compressed.json"
echo
echo "== uncompressed: lclm generate -m $model/decoder -f DOC+QUESTION --chat"
"$lclm" generate -m "$model/decoder" -f "$work/plain_prompt.txt" --chat -n 24 --temp 0 \
  --stats-json "$work/uncompressed.json"
echo

python3 - "$work/compressed.json" "$work/uncompressed.json" <<'PY'
import json, sys
c, u = (json.load(open(p)) for p in sys.argv[1:3])
mib = 1024 * 1024
rows = [
    ("decoder positions", c["prompt_positions"], u["prompt_positions"], "{:,}"),
    ("time to first token (ms)", c["ttft_ms"], u["ttft_ms"], "{:,.0f}"),
    ("  of which compression (ms)", c["compress_ms"], 0, "{:,.0f}"),
    ("KV cache (MiB)", c["kv_cache_bytes"] / mib, u["kv_cache_bytes"] / mib, "{:,.1f}"),
    ("peak resident memory (MiB)", c["peak_rss_bytes"] / mib, u["peak_rss_bytes"] / mib, "{:,.0f}"),
    ("decode (tokens/s)", c["decode_tokens_per_s"], u["decode_tokens_per_s"], "{:,.1f}"),
]
print(f"{'':30} {'compressed':>12} {'uncompressed':>13}")
for name, a, b, fmt in rows:
    print(f"{name:30} {fmt.format(a):>12} {fmt.format(b):>13}")
print(f"\n{c['compressed_tokens']:,} document tokens became {c['latents']:,} latents "
      f"({c['compressed_tokens'] / max(c['latents'], 1):.1f}x); "
      f"time to first token {u['ttft_ms'] / c['ttft_ms']:.1f}x faster, "
      f"KV cache {u['kv_cache_bytes'] / c['kv_cache_bytes']:.1f}x smaller.")
PY
