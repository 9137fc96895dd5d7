#!/usr/bin/env bash
# Bounded load test of `lclm serve` on loopback: starts the server on a free
# port of 127.0.0.1, sends REQUESTS streamed chat completions from each
# number of clients in CONCURRENCY (e.g. 1,2,4,8, one after another;
# build/bin/lclm-loadtest), prints requests/s, generated tokens/s and p50/p99
# time to first token and latency, and stops the server.
#   scripts/loadtest.sh [MODEL] [REQUESTS] [CONCURRENCY] [MAX_TOKENS] [SERVE FLAGS...]
# MODEL defaults to the shipped model, models/lclm-small (a plain Qwen3
# directory needs tokenizer.json beside it); SERVE FLAGS go to `lclm serve`
# (e.g. --parallel 8 -t 2).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

model=${1:-models/lclm-small}
requests=${2:-32}
concurrency=${3:-8}
max_tokens=${4:-16}
shift $(( $# < 4 ? $# : 4 ))
most=$(tr ',' '\n' <<< "$concurrency" | sort -n | tail -1)
[[ -f "$model/config.json" || -f "$model/model_config.json" ]] ||
  { echo "loadtest.sh: no model at $model" >&2; exit 2; }

log=$(mktemp)
build/bin/lclm serve -m "$model" --host 127.0.0.1 --port 0 --max-queue "$most" "$@" 2> "$log" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
port=""
for _ in $(seq 1 600); do
  port=$(sed -n 's|.*on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
  [[ -n "$port" ]] && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$port" ]] || { echo "loadtest.sh: the server did not start" >&2; exit 1; }
echo "== lclm serve -m $model $* on 127.0.0.1:$port"
build/bin/lclm-loadtest --port "$port" -n "$requests" -c "$concurrency" --max-tokens "$max_tokens"
echo "== metrics"
curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null | grep -E '^lclm_(requests_total|completion_tokens_total|prompt_tokens_total|latent_cache)' || true
