#!/usr/bin/env bash
# Runs the fuzz targets (README "Fuzzing"): scripts/fuzz.sh [TARGET|all] [SECONDS]
# Default: every target, 600 s each, one after the other. Needs nightly and cargo-fuzz
# (`cargo install cargo-fuzz`). The first build compiles burn (~20 min on 2 cores) into
# rust-core/fuzz/target, reused afterwards.
#
# Each run starts from the committed seeds (rust-core/fuzz/corpus/TARGET) and grows a working
# corpus in rust-core/fuzz/target/corpus/TARGET (not committed). It runs in fork mode and goes on
# after a crash, timeout or OOM; what it finds lands in rust-core/fuzz/artifacts/TARGET. A found
# input, once fixed, goes to rust-core/tests/fuzz_regressions/TARGET (named invalid-* or valid-*),
# where the stable test fuzz_regressions replays it in CI.
#
# Environment: FUZZ_SANITIZER (default none: the fuzzed paths are safe Rust, and an ASan build of
# burn doubles the build; `address` for ASan), FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/../rust-core/fuzz"

target="${1:-all}"
seconds="${2:-600}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The fuzz crate is outside the workspace: resolve it to the workspace's tested versions.
[ -f Cargo.lock ] || cp ../../Cargo.lock Cargo.lock
flags=(--sanitizer "${FUZZ_SANITIZER:-none}" --debug-assertions)

if [ "$target" = all ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
else
    targets=("$target")
fi

cargo +nightly fuzz build "${flags[@]}"
mkdir -p "$CARGO_TARGET_DIR/fuzz-logs"
for t in "${targets[@]}"; do
    mkdir -p "$CARGO_TARGET_DIR/corpus/$t"
    log="$CARGO_TARGET_DIR/fuzz-logs/$t.log"
    echo "== $t: ${seconds} s (log: $log)"
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo +nightly fuzz run "${flags[@]}" "$t" "$CARGO_TARGET_DIR/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -max_len=65536 \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 ${FUZZ_ARGS:-} \
        >"$log" 2>&1 || true
    grep -E '^#[0-9]+: cov' "$log" | tail -1 || true
    found=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
    echo "   inputs found (crash/timeout/oom): $found"
done
