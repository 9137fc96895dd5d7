#!/usr/bin/env bash
# The main job: compress a real document with the project's trained LCLM
# (models/lclm-small, see docs/training.md), ask a question about it, and
# compare with the same decoder reading the document uncompressed: the
# answers, time to first token and memory, side by side.
#
#   scripts/demo.sh [DOCUMENT [RATIO]]
#
# The small model was trained to retrieve facts from compressed text, not to
# hold a conversation, so the demo plants one fact in the document (a RULER
# needle: "The special magic number for KEY is N.") in the middle and asks
# for it. Whitespace is collapsed as in its training text.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

lclm=build/bin/lclm
model=models/lclm-small
document=${1:-/usr/share/doc/sed/copyright}
ratio=${2:-8}
[[ -f "$document" ]] || { echo "demo.sh: no document at $document" >&2; exit 1; }
[[ -f "$model/model_config.json" ]] || { echo "demo.sh: $model is missing" >&2; exit 1; }

key=misty-harbor
number=4821937
question="What is the special magic number for $key mentioned in the text above?"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The document with the fact after the sentence nearest its middle.
python3 - "$document" "$work/document.txt" "The special magic number for $key is $number." <<'PY'
import sys
text = " ".join(open(sys.argv[1], encoding="utf-8", errors="replace").read().split())
middle = text.find(". ", len(text) // 2)
at = middle + 2 if middle >= 0 else len(text)
open(sys.argv[2], "w").write(text[:at] + sys.argv[3] + " " + text[at:])
PY
{ cat "$work/document.txt"; printf '\n%s' "$question"; } > "$work/plain_prompt.txt"

echo "== document: $document ($(wc -c < "$document") bytes), with one planted fact"
echo "== question: $question (expected: $number)"
echo
echo "== compressed ${ratio}x: lclm generate -m $model --ratio $ratio --compress-file DOC -p QUESTION --chat"
"$lclm" generate -m "$model" --ratio "$ratio" --compress-file "$work/document.txt" -p "$question" \
  --chat -n 24 --temp 0 --stats-json "$work/compressed.json"
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
speed = u["ttft_ms"] / c["ttft_ms"]
print(f"\n{c['compressed_tokens']:,} document tokens became {c['latents']:,} latents "
      f"({c['compressed_tokens'] / max(c['latents'], 1):.1f}x); "
      f"time to first token {speed:.1f}x {'faster' if speed >= 1 else 'slower'}, "
      f"KV cache {u['kv_cache_bytes'] / c['kv_cache_bytes']:.1f}x smaller.")
PY
