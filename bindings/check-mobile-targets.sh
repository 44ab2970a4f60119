#!/usr/bin/env bash
# Cross-checks the bindings crate for Android and iOS (`cargo check`: no NDK or Xcode needed).
# If a target's standard library cannot be downloaded, says why and skips it (exit 0): the
# check is advisory on machines without access to the rustup distribution server.
# oslog stays off for iOS: its build script compiles C with the Apple SDK.
#
# ring (rustls' crypto, for model downloads) compiles C and assembly in its build script, and
# cargo check runs build scripts. Without an NDK or Xcode, ring is built freestanding with
# clang (apt: clang llvm): `--target=<triple>` and RING_CORE_NOSTDLIBINC, which ring supports
# for cross-builds without a C library's headers; an empty SDKROOT keeps cc-rs from calling
# xcrun, and the one SDK header ring reads, TargetConditionals.h, is given the values of an
# iOS device. These objects only serve the check: a real app build uses the NDK's / Xcode's
# clang instead (scripts/build-jni-libs.sh, ios/build-xcframework.sh).
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang >/dev/null || ! command -v llvm-ar >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq clang llvm >/dev/null; } \
    || echo "check-mobile-targets: clang/llvm-ar not installable; ring's build script will fail"
fi
empty_sdk="${TMPDIR:-/tmp}/gemmakit-empty-sdk"
mkdir -p "$empty_sdk/include"
cat > "$empty_sdk/include/TargetConditionals.h" <<'H'
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 0
#define TARGET_OS_IPHONE 1
#define TARGET_OS_IOS 1
H

# Every target in one `cargo check`: the host's build scripts and proc macros are compiled
# once for all of them.
targets=()
cross_env=()
for target in ${GEMMAKIT_MOBILE_TARGETS:-aarch64-linux-android aarch64-apple-ios}; do
  if ! rustup target list --installed | grep -qx "$target"; then
    if ! out=$(rustup target add "$target" 2>&1); then
      echo "check-mobile-targets: SKIPPED $target: 'rustup target add $target' failed:"
      echo "$out" | sed -e '/Stack backtrace/,$d' -e 's/^/    /'
      continue
    fi
  fi
  triple=${target//-/_}
  targets+=(--target "$target")
  cross_env+=("CC_$triple=clang" "AR_$triple=llvm-ar"
    "CFLAGS_$triple=--target=$target -ffreestanding -nostdlibinc -DRING_CORE_NOSTDLIBINC=1 -I$empty_sdk/include")
done
[ ${#targets[@]} -eq 0 ] && exit 0

status=0
# The CPU-only library (`--no-default-features`) is compiled for aarch64 by
# scripts/test-aarch64-qemu.sh (CI's next stage); GEMMAKIT_MOBILE_FEATURES adds it here.
for features in "" ${GEMMAKIT_MOBILE_FEATURES:+"$GEMMAKIT_MOBILE_FEATURES"}; do
  echo "check-mobile-targets: cargo check -p gemmakit-ffi ${targets[*]} $features"
  # shellcheck disable=SC2086 # $features is one flag or none
  if ! env "${cross_env[@]}" SDKROOT="$empty_sdk" IPHONEOS_DEPLOYMENT_TARGET=13.0 \
      cargo check --release --locked -p gemmakit-ffi "${targets[@]}" $features; then
    echo "check-mobile-targets: FAILED ${targets[*]} $features"
    status=1
  fi
done
exit $status
