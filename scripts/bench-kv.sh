#!/usr/bin/env bash
# Decode (and prefill) speed per KV cache type at several cache depths, every type in one run
# so the numbers compare (BENCHMARKS.md "KV cache precision").
#
#   scripts/bench-kv.sh MODEL.gguf ["f32 f16 q8_0 tq4 q8_0/tq4"] ["0,4096,16384"]
#
# A type "K/V" sets keys and values apart. Env: GEMMAKIT_BIN (default target/release/gemmakit),
# BACKEND (default cpu), THREADS (default: the engine's), REPS (default 2), GEN (decode tokens,
# default 32), PROMPT (prompt tokens after the depth, default 16), BENCH_ARGS (more `gemmakit
# bench` options, e.g. "--prefill-activations int8" to fill deep caches faster).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${GEMMAKIT_BIN:-$ROOT/target/release/gemmakit}"
MODEL="${1:?usage: scripts/bench-kv.sh MODEL.gguf [TYPES] [DEPTHS]}"
TYPES="${2:-f32 f16 q8_0 tq4 q8_0/tq4}"
DEPTHS="${3:-0,4096,16384}"
args=(--model "$MODEL" --backend "${BACKEND:-cpu}" -p "${PROMPT:-16}" -n "${GEN:-32}"
  -d "$DEPTHS" -r "${REPS:-2}" --no-cold)
[ -n "${THREADS:-}" ] && args+=(-t "$THREADS")
# shellcheck disable=SC2206 # BENCH_ARGS is a list of options
[ -n "${BENCH_ARGS:-}" ] && args+=($BENCH_ARGS)
for t in $TYPES; do
  k="${t%/*}"
  v="${t#*/}"
  echo "== KV $k/$v" >&2
  if ! out="$("$BIN" bench "${args[@]}" --kv-type-k "$k" --kv-type-v "$v")"; then
    echo "| $k/$v | failed (see stderr) |"
    continue
  fi
  printf '%s\n' "$out" | grep '^|' | grep -v -e '^| model' -e '^|--' | sed "s#^#| $k/$v #"
done
