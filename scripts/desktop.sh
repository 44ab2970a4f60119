#!/usr/bin/env bash
# The GemmaKit sample app on the desktop (Compose for Desktop, Linux x86_64, Maven).
#   scripts/desktop.sh                       opens the app on the demo model (fetched if missing)
#   scripts/desktop.sh MODEL.gguf            opens the app on another model
#   scripts/desktop.sh --no-model            opens the app on the model screen
#   scripts/desktop.sh --screenshots OUT_DIR renders each screen headless to OUT_DIR/*.png with
#                                            real engine output (demo model + tiny fixture)
# Builds the host library, generates the JVM flavour of the Kotlin bindings into
# android/desktop/target/generated-sources/uniffi and compiles android/desktop (with
# android/gemmakit, android/sample-core, android/sample-ui). Needs a JDK ≥ 17 and Maven; the app
# itself needs a display (X11), the screenshots do not.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mvn >/dev/null || { echo "desktop.sh: mvn not found (apt-get install maven)" >&2; exit 1; }

cargo build --release --workspace --all-targets
out=android/desktop/target/generated-sources/uniffi
rm -rf "$out" && mkdir -p "$out"
target/release/uniffi-bindgen generate target/release/libgemmakit_ffi.so \
  --language kotlin --no-format --out-dir "$out"

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/gemmakit-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
demo="${GEMMAKIT_DEMO_MODEL:-$(./scripts/fetch-demo-model.sh | tail -n 1)}"

cd android/desktop
if [ "${1:-}" = "--screenshots" ]; then
  dir="$(realpath -m "${2:?usage: desktop.sh --screenshots OUT_DIR}")"
  root="$(cd ../.. && pwd)"
  exec mvn -B -ntp -q -Dstyle.color=never compile exec:exec \
    -Dgemmakit.main=dev.gemmakit.desktop.ScreenshotsKt \
    "-Dgemmakit.args=$dir $demo $root/tests/fixtures/tiny_gemma4_e2b/model-f32.gguf $root/tests/fixtures/images/rgba.png"
fi
model="${1:-$demo}"
[ "$model" = "--no-model" ] && model=""
exec mvn -B -ntp -q -Dstyle.color=never compile exec:exec \
  -Dgemmakit.main=dev.gemmakit.desktop.MainKt "-Dgemmakit.args=$model"
