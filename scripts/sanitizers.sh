#!/usr/bin/env bash
# Memory checks beyond the normal test run (README "Sanitizers and Miri"):
#     scripts/sanitizers.sh [asan|miri|all]        (default: all)
# - asan: the library's unit tests and the FFI crate's tests under AddressSanitizer with
#   LeakSanitizer, nightly, in their own target dir (target/asan: a second burn build, ~25 min
#   on 2 cores). The GPU kernel tests are skipped: Mesa's Vulkan driver is not instrumented and
#   its allocations look like leaks.
# - miri: Miri on the unit tests of the portable CPU kernels (x86/NEON intrinsics are not
#   selected under Miri: feature detection reports none), quantization, GGUF reading and
#   writing, and the tokenizer stream. Tests Miri cannot run (memory maps, the whole-model paths)
#   carry #[cfg_attr(miri, ignore)].
# Needs `rustup component add --toolchain nightly miri rust-src`.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/gemmakit-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
host="$(rustc +nightly -vV | sed -n 's/^host: //p')"

if [ "$what" = asan ] || [ "$what" = all ]; then
    # --target keeps the sanitizer off build scripts and proc macros.
    RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
    ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" \
    CARGO_TARGET_DIR=target/asan \
        cargo +nightly test --locked --release --target "$host" \
        -p gemmakit -p gemmakit-ffi --lib -- --skip kernels::gpu
fi

if [ "$what" = miri ] || [ "$what" = all ]; then
    # Isolation off: some of these tests read their reference fixtures. Tree Borrows, not
    # Stacked Borrows: rayon's crossbeam-epoch is known to break Stacked Borrows' rules and to
    # pass Tree Borrows (crossbeam-rs/crossbeam#996); the activation kernel tests pass under both.
    export MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-tree-borrows"
    export CARGO_TARGET_DIR=target/miri
    cargo +nightly miri test --locked -p gemmakit --lib -- \
        kernels::cpu weights::quant weights::gguf tokenizer::stream
    # The CPU matrix kernels (portable paths under Miri) against gguf-py and float64, with
    # smaller shapes under cfg(miri) that still leave partial panels, tiles and token groups.
    # The process-lifetime worker threads (rayon's pool, the matvec pool) are still running when
    # the test binary's main thread returns, which Miri's leak check reports after every test
    # has passed; -Zmiri-ignore-leaks turns that final check off (it is not undefined behaviour).
    MIRIFLAGS="$MIRIFLAGS -Zmiri-ignore-leaks" \
        cargo +nightly miri test --locked -p gemmakit --test cpu_kernels
fi
