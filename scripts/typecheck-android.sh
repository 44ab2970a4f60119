#!/usr/bin/env bash
# Type-checks the Android sources that need only the framework (the Android flavour of the
# generated bindings, android/gemmakit, android/sample-core, the sample app's AndroidPlatform.kt)
# against Robolectric's android-all (API 36) from Maven Central: android/sample-app/typecheck.
# MainActivity.kt and the Compose screens need androidx from Google's repository: not compiled.
# Generates the Android bindings first (scripts/gen-bindings.sh). The first run downloads
# android-all (about 100 MB) into ~/.m2.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d android/gemmakit/src/main/generated/dev ] || ./scripts/gen-bindings.sh
cd android/sample-app/typecheck
exec mvn -B -ntp -Dstyle.color=never compile "$@"
