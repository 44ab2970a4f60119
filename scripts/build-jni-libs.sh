#!/usr/bin/env bash
# Cross-compiles libgemmakit_ffi.so for the Android ABIs into
# android/gemmakit/src/main/jniLibs/<abi>/ (what the AAR packs), with the `mobile` profile
# (release + fat LTO + stripped, see Cargo.toml) and 16 KB-aligned ELF segments (Google Play's
# requirement for Android 15+ devices with 16 KB pages; NDK r28+ does it by default, the flag
# makes older NDKs do it too). Checks the alignment of each library afterwards.
#
# Needs the Android NDK with ANDROID_NDK_HOME set, cargo-ndk (`cargo install cargo-ndk --version
# 4.1.2`) and the Rust targets (`rustup target add aarch64-linux-android
# armv7-linux-androideabi x86_64-linux-android`).
#   scripts/build-jni-libs.sh                    arm64-v8a, armeabi-v7a, x86_64
#   ABIS="arm64-v8a" scripts/build-jni-libs.sh   only these
#   CPU_ONLY=1 scripts/build-jni-libs.sh         without the `gpu` feature (no wgpu: about a third
#                                                of the size; README "Library size")
# Not run in CI (no NDK there): CI only `cargo check`s aarch64-linux-android.
set -euo pipefail
cd "$(dirname "$0")/.."

abis=(${ABIS:-arm64-v8a armeabi-v7a x86_64})
out=android/gemmakit/src/main/jniLibs
flags=()
for abi in "${abis[@]}"; do flags+=(-t "$abi"); done

# RUSTFLAGS with --target applies to the target's artifacts only (not build scripts).
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-z,max-page-size=16384"
features=()
[ "${CPU_ONLY:-0}" = 1 ] && features=(--no-default-features)
cargo ndk "${flags[@]}" -o "$out" build --profile mobile -p gemmakit-ffi --lib "${features[@]}"

for abi in "${abis[@]}"; do
  so="$out/$abi/libgemmakit_ffi.so"
  # Every PT_LOAD segment must be aligned to 2**14 (0x4000) or more.
  for align in $(readelf -lW "$so" | awk '$1 == "LOAD" { print $NF }'); do
    [ $((align)) -ge 16384 ] || { echo "$so: LOAD segment alignment $align < 16 KB" >&2; exit 1; }
  done
  echo "$so: $(stat -c %s "$so") bytes, LOAD segments 16 KB-aligned"
done
