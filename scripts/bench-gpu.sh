#!/usr/bin/env bash
# GPU check and benchmark for a Linux machine with a real NVIDIA/AMD GPU (Vulkan).
#
#   scripts/bench-gpu.sh [--skip-build] [--e2b]
#   GEMMAKIT_BIN=path/to/gemmakit scripts/bench-gpu.sh --e2b     (a prebuilt binary, no build)
#
# Stages (each timed; the whole run is meant to finish in under 10 minutes):
#   1. release build of the whole workspace
#   2. GPU adapter check (vulkaninfo if present; the binary reports the adapter it picked)
#   3. GPU-vs-CPU logits on the demo model (Gemma 3 270M Q4_K_M; fetched if missing)
#   4. (--e2b, or E2B=1) GPU-vs-CPU logits on a random full-size Gemma 4 E2B file, if
#      `gemmakit convert --random` exists
#   5. the bench table (`gemmakit bench` if it exists, else timed `gemmakit run`)
#
#   6. (with --e2b) decode per KV cache type on the GPU at depths 0 and 4096 (KV_TYPES, DEPTHS)
#
# Env: GEMMAKIT_HOME (model cache), CARGO_TARGET_DIR, GEMMAKIT_BIN (a prebuilt binary: skips the
#      build), TOL (logit tolerance, default 2e-2), KV_TYPES (default "f32 f16"), DEPTHS
#      (default "0,4096"), CPU_THREADS (CPU bench threads; default: all), E2B_FILE (an existing
#      `gemmakit convert --random e2b --quant q4_0 --seed 1` file instead of writing one).
#      WGPU_BACKEND=vulkan is set unless already set.
# On a machine without network the demo model stages are skipped unless the model is cached.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${GEMMAKIT_BIN:-$TARGET_DIR/release/gemmakit}"
WORK="$(mktemp -d -t gemmakit-bench-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
TOL="${TOL:-2e-2}"
SKIP_BUILD=0
[ -n "${GEMMAKIT_BIN:-}" ] && SKIP_BUILD=1
KV_TYPES="${KV_TYPES:-f32 f16}"
DEPTHS="${DEPTHS:-0,4096}"
THREAD_ARGS=()
[ -n "${CPU_THREADS:-}" ] && THREAD_ARGS=(-t "$CPU_THREADS")
E2B="${E2B:-0}"
for arg in "$@"; do
  case "$arg" in
    --skip-build) SKIP_BUILD=1 ;;
    --e2b) E2B=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "bench-gpu: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
STAGE_START=0
stage() { STAGE_START=$(date +%s); log "== $* =="; }
stage_done() { log "   done in $(( $(date +%s) - STAGE_START )) s"; }
RUN_START=$(date +%s)

has_subcommand() { "$BIN" help "$1" >/dev/null 2>&1; }
has_flag() { "$BIN" "$1" --help 2>/dev/null | grep -q -- "$2"; }

# Compares two float32 .npy files (written by `gemmakit eval`) without numpy:
# prints max |a - b| and whether the argmax of every row agrees; fails above $TOL.
compare_npy() {
  python3 - "$1" "$2" "$TOL" <<'PY'
import ast, struct, sys
def load(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", path
    hlen = struct.unpack("<H", data[8:10])[0] if data[6] == 1 else struct.unpack("<I", data[8:12])[0]
    start = 10 + hlen if data[6] == 1 else 12 + hlen
    header = ast.literal_eval(data[start - hlen:start].decode("latin1"))
    assert header["descr"] == "<f4" and not header["fortran_order"], header
    rows, cols = header["shape"]
    vals = struct.unpack("<%df" % (rows * cols), data[start:start + 4 * rows * cols])
    return [vals[r * cols:(r + 1) * cols] for r in range(rows)]
a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
worst = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
argmax = lambda r: max(range(len(r)), key=r.__getitem__)
same = all(argmax(ra) == argmax(rb) for ra, rb in zip(a, b))
print("positions %d, vocab %d: max |gpu - cpu| = %.3e, argmax %s" % (len(a), len(a[0]), worst, "equal" if same else "DIFFERS"))
sys.exit(0 if worst <= tol and same else 1)
PY
}

# GPU vs CPU logits of every position of a short token sequence.
check_logits() {
  local model="$1" tokens="$2" label="$3"
  local t0=$(date +%s)
  "$BIN" eval --model "$model" --tokens "$tokens" --backend cpu --out "$WORK/cpu.npy" \
    || die "$label: CPU eval"
  local t1=$(date +%s)
  "$BIN" eval --model "$model" --tokens "$tokens" --backend gpu --out "$WORK/gpu.npy" \
    || die "$label: GPU eval"
  local t2=$(date +%s)
  log "$label: CPU eval $((t1 - t0)) s, GPU eval $((t2 - t1)) s (both include loading)"
  compare_npy "$WORK/gpu.npy" "$WORK/cpu.npy" || die "$label: GPU logits differ from CPU (tolerance $TOL)"
}

stage "1. build (release, whole workspace)"
if [ "$SKIP_BUILD" = 1 ]; then
  log "skipped (--skip-build)"
else
  command -v cargo >/dev/null || die "cargo not found (install Rust 1.95+)"
  cargo build --release --workspace --all-targets || die "cargo build"
fi
[ -x "$BIN" ] || die "no binary at $BIN (set CARGO_TARGET_DIR?)"
stage_done

stage "2. GPU adapter"
if command -v vulkaninfo >/dev/null; then
  vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverName|apiVersion" | sed 's/^/   /' >&2 || true
else
  log "vulkaninfo not installed (apt-get install vulkan-tools); relying on gemmakit's report"
fi
stage_done

stage "3. GPU vs CPU logits: Gemma 3 270M Q4_K_M"
MODEL="${GEMMAKIT_HOME:-$HOME/.cache/gemmakit}/models/gemma3-270m-q4_k_m.gguf"
if [ ! -f "$MODEL" ]; then
  MODEL="$(scripts/fetch-demo-model.sh 2>/dev/null | tail -n 1)" || MODEL=""
fi
if [ -n "$MODEL" ] && [ -f "$MODEL" ]; then
  check_logits "$MODEL" "2,818,5279,529,7001,563,9079,236761" "270M"
else
  MODEL=""
  log "skipped: the demo model is not cached and could not be fetched (offline machine?)"
fi
stage_done

stage "4. GPU vs CPU logits: random full-size Gemma 4 E2B"
if [ "$E2B" != 1 ]; then
  log "skipped (pass --e2b; writes a ~3 GB file and takes a few minutes)"
elif has_subcommand convert && has_flag convert "--random"; then
  if [ -z "${E2B_FILE:-}" ]; then
    E2B_FILE="$WORK/e2b-random.gguf"
    "$BIN" convert --random e2b --quant q4_0 --seed 1 --out "$E2B_FILE" || die "gemmakit convert --random"
  fi
  check_logits "$E2B_FILE" "2,100,200,300" "E2B (random weights)"
else
  log "skipped: this build has no \`gemmakit convert --random\`"
fi
stage_done

stage "5. bench"
if has_subcommand bench; then
  for m in $MODEL ${E2B_FILE:-}; do
    log "$m"
    "$BIN" bench --model "$m" --backend gpu || die "gemmakit bench (gpu)"
    "$BIN" bench --model "$m" --backend cpu "${THREAD_ARGS[@]}" || die "gemmakit bench (cpu)"
  done
elif [ -n "$MODEL" ]; then
  log "no \`gemmakit bench\` in this build: timing \`gemmakit run\` (64 tokens, greedy)"
  printf "%-8s %10s %10s %14s %12s\n" backend wall_s ttft_ms prefill_tok_s decode_tok_s
  for backend in gpu cpu; do
    t0=$(date +%s.%N)
    out="$("$BIN" run --model "$MODEL" --backend "$backend" --raw --prompt "The capital of France is" \
      --max-tokens 64 --json)" || die "gemmakit run ($backend)"
    t1=$(date +%s.%N)
    python3 - "$backend" "$t0" "$t1" "$out" <<'PY'
import json, sys
backend, t0, t1, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
stats = json.loads(out.strip().splitlines()[-1]).get("stats", {})
fmt = lambda k: "%.1f" % stats[k] if isinstance(stats.get(k), (int, float)) else "?"
print("%-8s %10.2f %10s %14s %12s" % (backend, t1 - t0, fmt("ttft_ms"), fmt("prefill_tok_s"), fmt("decode_tok_s")))
PY
  done
fi
stage_done

stage "6. decode per KV cache type on the GPU (depths $DEPTHS)"
if [ -z "${E2B_FILE:-}" ] || ! has_flag bench "--kv-type"; then
  log "skipped (needs --e2b and a bench with --kv-type)"
else
  GEMMAKIT_BIN="$BIN" BACKEND=gpu scripts/bench-kv.sh "$E2B_FILE" "$KV_TYPES" "$DEPTHS" \
    || log "some KV type failed on the GPU (unsupported in this build?)"
fi
stage_done

log "all stages passed in $(( $(date +%s) - RUN_START )) s"
