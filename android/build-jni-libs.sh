#!/usr/bin/env bash
# Cross-compiles libgemmakit_ffi.so for the Android ABIs into gemmakit/src/main/jniLibs.
# Needs the Android NDK (r28+: 16 KB-aligned ELF segments, required by Play) with
# ANDROID_NDK_HOME set, cargo-ndk (`cargo install cargo-ndk --version 4.1.2`) and the Rust
# targets (`rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android`).
# Not run in CI (no NDK there): CI only `cargo check`s aarch64-linux-android.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 -o android/gemmakit/src/main/jniLibs \
  build --release -p gemmakit-ffi
