#!/usr/bin/env bash
# The project's test command (README "Testing"; CI runs it through .ci/run).
# Every Rust test runs in the release profile: one profile for tests, binaries and the cdylib,
# so the dependency tree (burn + wgpu, ~20 min on 2 cores) is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."

# wgpu needs a runtime dir; on machines without a GPU it runs on Mesa's lavapipe.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/gemmakit-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

cargo test --release --workspace --locked "$@"
