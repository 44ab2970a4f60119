#!/usr/bin/env bash
# Builds GemmaKitFFI.xcframework (macOS with Xcode only): static libraries for iOS devices,
# the iOS simulator (arm64 + x86_64, lipo'd) and macOS, with the generated C header and
# modulemap, from the `mobile` profile (release + fat LTO + stripped, see Cargo.toml), then
# zips it and prints the SwiftPM checksum for a remote `binaryTarget(url:checksum:)`.
# Run ../scripts/gen-bindings.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(uname -s)" = Darwin ] || { echo "build-xcframework.sh: needs macOS and Xcode" >&2; exit 1; }
[ -f ios/Generated/GemmaKitFFI/module.modulemap ] || { echo "run scripts/gen-bindings.sh first" >&2; exit 1; }

targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin)
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do
  cargo build --profile mobile -p gemmakit-ffi --lib --features oslog --target "$t"
done

sim=target/ios-sim-universal/mobile
mkdir -p "$sim"
lipo -create target/aarch64-apple-ios-sim/mobile/libgemmakit_ffi.a \
  target/x86_64-apple-ios/mobile/libgemmakit_ffi.a -output "$sim/libgemmakit_ffi.a"

rm -rf ios/GemmaKitFFI.xcframework
xcodebuild -create-xcframework \
  -library target/aarch64-apple-ios/mobile/libgemmakit_ffi.a -headers ios/Generated/GemmaKitFFI \
  -library "$sim/libgemmakit_ffi.a" -headers ios/Generated/GemmaKitFFI \
  -library target/aarch64-apple-darwin/mobile/libgemmakit_ffi.a -headers ios/Generated/GemmaKitFFI \
  -output ios/GemmaKitFFI.xcframework

# For a remote binaryTarget: upload the zip and put its URL and this checksum in Package.swift.
(cd ios && rm -f GemmaKitFFI.xcframework.zip && zip -qry GemmaKitFFI.xcframework.zip GemmaKitFFI.xcframework)
echo "ios/GemmaKitFFI.xcframework.zip checksum: $(swift package compute-checksum ios/GemmaKitFFI.xcframework.zip)"
