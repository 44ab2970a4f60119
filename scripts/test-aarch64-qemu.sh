#!/usr/bin/env bash
# Runs the CPU kernel tests for aarch64 (the NEON kernels phones use) under qemu user-mode
# emulation: cross-builds the library's unit tests and tests/cpu_kernels.rs for
# aarch64-unknown-linux-gnu and runs them through qemu-aarch64, on qemu's `max` CPU and then on
# a Cortex-A53 (the int8 kernels' feature levels). Correctness only: emulated timings mean
# nothing.
#
# Needs (Debian): qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross, and the rustup target.
# Installs them when it can; if a download is refused it says what is missing and skips
# (exit 0), like bindings/check-mobile-targets.sh. A failing test fails the script.
set -uo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
skip() { echo "test-aarch64-qemu: SKIPPED: $*"; exit 0; }

if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null; } \
    || skip "could not install qemu-user / gcc-aarch64-linux-gnu"
fi
if ! rustup target list --installed | grep -qx "$target"; then
  out=$(rustup target add "$target" 2>&1) || skip "'rustup target add $target' failed: $out"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# No Vulkan under emulation: the wgpu unit tests skip themselves.
export GEMMAKIT_SKIP_GPU_TESTS=1
# The GPU code is not built (nothing of it can run under qemu, and wgpu/naga/cubecl would
# double this stage's compile time); this also compiles the CPU-only library (the `gpu`
# feature off) in CI.
args=(--release --locked --target "$target" -p gemmakit --no-default-features)
# qemu's default CPU (`max`) has dotprod and i8mm, and the kernel tests iterate over every
# level the CPU runs, so this pass covers each int8 kernel (plain NEON, dotprod, i8mm) ...
cargo test "${args[@]}" --lib --test cpu_kernels || exit 1
# ... and a Cortex-A53 (Armv8.0: neither) checks what is detected and chosen without them.
QEMU_CPU=cortex-a53 exec cargo test "${args[@]}" --test cpu_kernels
