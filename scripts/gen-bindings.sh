#!/usr/bin/env bash
# Builds the host library and generates the Kotlin (Android flavour) and Swift bindings from it.
#
#   android/gemmakit/src/main/generated/   Kotlin, package dev.gemmakit.ffi (android = true)
#   ios/Sources/GemmaKit/Generated/        Swift sources (module GemmaKit)
#   ios/Generated/GemmaKitFFI/             C header + module.modulemap for the xcframework
#
# The generated files are not committed (.gitignore): they must come from the same build as the
# native library they call (checksums are omitted, see bindings/gemmakit-ffi/uniffi.toml), so
# every packaging step regenerates them. uniffi metadata is architecture-independent, so the
# host build serves every target.
set -euo pipefail
cd "$(dirname "$0")/.."

# The same command as CI's build stage: every build of the workspace resolves the same feature
# set, so the burn tree is compiled once (`-p gemmakit-ffi` resolves a different one and would
# rebuild it).
cargo build --release --workspace --all-targets

lib=target/release/libgemmakit_ffi.so
[ "$(uname -s)" = Darwin ] && lib=target/release/libgemmakit_ffi.dylib
bindgen=target/release/uniffi-bindgen
bindgen_swift=target/release/uniffi-bindgen-swift

kotlin_out=android/gemmakit/src/main/generated
swift_out=ios/Sources/GemmaKit/Generated
ffi_out=ios/Generated/GemmaKitFFI
rm -rf "$kotlin_out" "$swift_out" "$ffi_out"
mkdir -p "$kotlin_out" "$swift_out" "$ffi_out"

"$bindgen" generate "$lib" --language kotlin --no-format --out-dir "$kotlin_out" \
  --config bindings/gemmakit-ffi/uniffi-android.toml
"$bindgen_swift" "$lib" "$swift_out" --swift-sources
"$bindgen_swift" "$lib" "$ffi_out" --headers --modulemap \
  --module-name GemmaKitFFI --modulemap-filename module.modulemap

echo "generated:"
find "$kotlin_out" "$swift_out" "$ffi_out" -type f | sort | sed 's/^/  /'
