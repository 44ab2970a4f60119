#!/usr/bin/env bash
# Same-run comparison with llama.cpp, as in BENCHMARKS.md: for each GGUF file given, runs
# llama.cpp's llama-bench and `gemmakit bench` with the same prompt length, generation length,
# threads and repetitions, one after the other, each under `/usr/bin/time -v` (peak RSS of the
# whole process), and prints one markdown table row per file.
#
# Usage:
#   LLAMA_BENCH=/path/to/llama-bench scripts/bench-vs-llamacpp.sh MODEL.gguf [MODEL.gguf ...]
#
# Env:
#   LLAMA_BENCH    llama.cpp's llama-bench binary (required)
#   GEMMAKIT       our binary (default: target/release/gemmakit of this checkout, built by
#                  `cargo build --release --workspace --all-targets --locked`)
#   THREADS        threads for both (default 2)
#   REPS           repetitions of each test (default 3)
#   PROMPT         prompt length of the prefill test (default 512)
#   GEN            tokens of the decode test (default 128)
#   DEPTH          tokens already in the cache before each test; passed to both as `-d` only when
#                  set (older llama-bench builds lack `-d`)
#   GEMMAKIT_ARGS  extra flags for `gemmakit bench`, e.g. "--int8-prefill --no-cold"
#   OUT            also write the table to this file
#   RAW_DIR        keep every run's raw output (JSON, stderr, the `time -v` report) in this
#                  directory (default: a temporary one, removed unless a run failed)
#
# Prefill and decode are tokens per second: llama-bench's mean and gemmakit's median over the
# repetitions. Ratios are gemmakit / llama.cpp: above 1 is faster for tok/s, below 1 is less
# memory for peak RSS.
set -euo pipefail

die() {
  echo "bench-vs-llamacpp: $*" >&2
  exit 1
}

[ "$#" -ge 1 ] || die "usage: LLAMA_BENCH=/path/to/llama-bench $0 MODEL.gguf [MODEL.gguf ...]"
[ -n "${LLAMA_BENCH:-}" ] || die "set LLAMA_BENCH to the path of llama.cpp's llama-bench binary"
[ -x "$LLAMA_BENCH" ] || die "LLAMA_BENCH=$LLAMA_BENCH is not an executable file"
GEMMAKIT="${GEMMAKIT:-$(dirname "$0")/../target/release/gemmakit}"
[ -x "$GEMMAKIT" ] || die "no gemmakit binary at $GEMMAKIT (build it, or set GEMMAKIT)"
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed for the peak RSS"
command -v python3 > /dev/null || die "python3 is needed to read the JSON outputs"

THREADS="${THREADS:-2}"
REPS="${REPS:-3}"
PROMPT="${PROMPT:-512}"
GEN="${GEN:-128}"
for setting in THREADS REPS PROMPT GEN; do
  [[ "${!setting}" =~ ^[1-9][0-9]*$ ]] || die "$setting must be a positive integer, not '${!setting}'"
done
depth_flags=()
if [ -n "${DEPTH:-}" ]; then
  [[ "$DEPTH" =~ ^[0-9]+$ ]] || die "DEPTH must be a non-negative integer, not '$DEPTH'"
  depth_flags=(-d "$DEPTH")
fi
# Word-split on purpose: a list of flags.
read -r -a gemmakit_extra <<< "${GEMMAKIT_ARGS:-}"
for model in "$@"; do
  [ -f "$model" ] || die "no model file $model"
done

if [ -n "${RAW_DIR:-}" ]; then
  mkdir -p "$RAW_DIR"
  raw="$RAW_DIR"
else
  raw="$(mktemp -d)"
  # A failed run's output is what explains the failure: keep it then.
  trap 'if [ "$?" -eq 0 ]; then rm -rf "$raw"; else echo "bench-vs-llamacpp: raw outputs kept in $raw" >&2; fi' EXIT
fi

# Runs a command under `time -v`: stdout to $1.json, stderr to $1.err, the report to $1.time.
timed() {
  local base="$1"
  shift
  if ! /usr/bin/time -v -o "$base.time" "$@" > "$base.json" 2> "$base.err"; then
    tail -n 20 "$base.err" >&2
    die "failed: $* (raw output in $base.*)"
  fi
}

# One table row from the two runs' JSON and `time -v` reports.
row() {
  python3 - "$@" << 'PY'
import json, os, re, sys

model, ours_json, ours_time, llama_json, llama_time, n_prompt, n_gen = sys.argv[1:8]
n_prompt, n_gen = int(n_prompt), int(n_gen)

def fail(msg):
    sys.exit(f"bench-vs-llamacpp: {model}: {msg}")

def peak_rss_bytes(path):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(path).read())
    if not m:
        fail(f"no peak RSS in {path}")
    return int(m.group(1)) * 1024

# gemmakit bench --json: one JSON object per line, one line per configuration (here one).
ours = [json.loads(l) for l in open(ours_json) if l.startswith("{")]
if len(ours) != 1:
    fail(f"expected one result line from gemmakit bench, got {len(ours)} ({ours_json})")
ours = ours[0]

# llama-bench -o json: an array with one entry per test: pp (n_gen 0) and tg (n_prompt 0).
def llama_test(entries, prompt, gen):
    found = [e for e in entries if e["n_prompt"] == prompt and e["n_gen"] == gen]
    if len(found) != 1:
        fail(f"expected one llama-bench entry with n_prompt={prompt}, n_gen={gen} ({llama_json})")
    return found[0]["avg_ts"]

llama = json.load(open(llama_json))
llama_prefill = llama_test(llama, n_prompt, 0)
llama_decode = llama_test(llama, 0, n_gen)

def size(b):
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"

def ratio(a, b):
    return f"{a / b:.2f}×"

ours_rss, llama_rss = peak_rss_bytes(ours_time), peak_rss_bytes(llama_time)
cells = [
    os.path.basename(model),
    f"{ours['prefill_tok_s']:.1f}", f"{llama_prefill:.1f}", ratio(ours["prefill_tok_s"], llama_prefill),
    f"{ours['decode_tok_s']:.1f}", f"{llama_decode:.1f}", ratio(ours["decode_tok_s"], llama_decode),
    size(ours_rss), size(llama_rss), ratio(ours_rss, llama_rss),
]
print("| " + " | ".join(cells) + " |")
PY
}

table() {
  local test="pp$PROMPT / tg$GEN"
  [ -n "${DEPTH:-}" ] && test="$test @ d$DEPTH"
  echo "$test, threads $THREADS, repetitions $REPS, CPU; ${GEMMAKIT_ARGS:+gemmakit flags: $GEMMAKIT_ARGS; }$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "| model | prefill tok/s gemmakit | llama.cpp | ratio | decode tok/s gemmakit | llama.cpp | ratio | peak RSS gemmakit | llama.cpp | ratio |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  local index=0 model base
  for model in "$@"; do
    index=$((index + 1))
    base="$raw/$index-$(basename "$model" .gguf)"
    echo "bench-vs-llamacpp: $model: llama-bench" >&2
    timed "$base.llama" "$LLAMA_BENCH" -m "$model" -p "$PROMPT" -n "$GEN" -t "$THREADS" \
      -r "$REPS" "${depth_flags[@]}" -o json
    echo "bench-vs-llamacpp: $model: gemmakit bench" >&2
    timed "$base.gemmakit" "$GEMMAKIT" bench -m "$model" -p "$PROMPT" -n "$GEN" -t "$THREADS" \
      -r "$REPS" "${depth_flags[@]}" --backend cpu --json "${gemmakit_extra[@]}"
    row "$model" "$base.gemmakit.json" "$base.gemmakit.time" "$base.llama.json" \
      "$base.llama.time" "$PROMPT" "$GEN"
  done
}

if [ -n "${OUT:-}" ]; then
  table "$@" | tee "$OUT"
else
  table "$@"
fi
