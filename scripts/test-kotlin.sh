#!/usr/bin/env bash
# JVM tests of the Kotlin bindings: builds the host cdylib, generates the JVM flavour of the
# Kotlin bindings, and runs the Maven project android/jvm-test (JUnit 5 through Surefire)
# against target/release/libgemmakit_ffi.so and the tiny fixture model.
# Needs a JDK ≥ 17 and Maven (Debian: `apt-get install maven`); the first run downloads the
# Kotlin compiler and plugins from Maven Central into ~/.m2.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v mvn >/dev/null || { echo "test-kotlin.sh: mvn not found (apt-get install maven)" >&2; exit 1; }

# The same command as CI's build stage, so this reuses its artifacts (see gen-bindings.sh).
cargo build --release --workspace --all-targets

out=android/jvm-test/target/generated-sources/uniffi
rm -rf "$out" && mkdir -p "$out"
target/release/uniffi-bindgen generate target/release/libgemmakit_ffi.so \
  --language kotlin --no-format --out-dir "$out"

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/gemmakit-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

# Not -q: Maven's quiet mode hides Surefire's summary. -ntp drops the download log.
cd android/jvm-test
exec mvn -B -ntp -Dstyle.color=never test "$@"
