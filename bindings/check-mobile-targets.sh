#!/usr/bin/env bash
# Cross-checks the bindings crate for Android and iOS (`cargo check`: no NDK or Xcode needed).
# If a target's standard library cannot be downloaded, says why and skips it (exit 0): the
# check is advisory on machines without access to the rustup distribution server.
# oslog stays off for iOS: its build script compiles C with the Apple SDK.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
for target in ${GEMMAKIT_MOBILE_TARGETS:-aarch64-linux-android aarch64-apple-ios}; do
  if ! rustup target list --installed | grep -qx "$target"; then
    if ! out=$(rustup target add "$target" 2>&1); then
      echo "check-mobile-targets: SKIPPED $target: 'rustup target add $target' failed:"
      echo "$out" | sed -e '/Stack backtrace/,$d' -e 's/^/    /'
      continue
    fi
  fi
  echo "check-mobile-targets: cargo check -p gemmakit-ffi --target $target"
  if ! cargo check --release --locked -p gemmakit-ffi --target "$target"; then
    echo "check-mobile-targets: FAILED $target"
    status=1
  fi
done
exit $status
