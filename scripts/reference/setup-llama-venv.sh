#!/usr/bin/env bash
# Creates .venv-llama/ at the repo root with llama-cpp-python (llama.cpp built
# from source, CPU only), gguf and numpy: the independent llama.cpp reference
# used by scripts/reference/llama_cpp_*.py and convert_tiny_to_gguf.sh.
#
# Also keeps the llama-cpp-python sdist, unpacked, under .venv-llama/src/ so
# that its vendored llama.cpp (convert_hf_to_gguf.py, gguf-py) can be used.
#
# Idempotent: skips every step whose result is already there.
# Needs PyPI access, cmake >= 3.21 and a C/C++ compiler. On 2 cores the
# llama.cpp build takes roughly 10-15 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-llama"
SRC="$VENV/src"
PY="${PYTHON:-python3}"

LLAMA_CPP_PYTHON_VERSION="0.3.36"   # vendors ggml-org/llama.cpp@0c1e57098
GGUF_VERSION="0.19.0"
NUMPY_VERSION="2.4.6"

SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_NAME="llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}"
SDIST="$SRC/${SDIST_NAME}.tar.gz"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
mkdir -p "$SRC"

# 1. sdist (kept for the vendored llama.cpp tree).
if [ ! -f "$SDIST" ]; then
  "$VENV/bin/python" -m pip download --no-deps --no-binary :all: -d "$SRC" \
    "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"
fi
got="$("$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$SDIST")"
if [ "$got" != "$SDIST_SHA256" ]; then
  echo "sdist sha256 mismatch: $got != $SDIST_SHA256 ($SDIST)" >&2; exit 1
fi
if [ ! -f "$SRC/$SDIST_NAME/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  tar -xzf "$SDIST" -C "$SRC"
fi

# 2. llama-cpp-python, built from the same sdist.
#    GGML_NATIVE=OFF: portable x86-64 build (SSE4.2/AVX/AVX2/FMA/F16C/BMI2),
#    so results do not depend on the build machine's exact CPU.
#    LLAVA_BUILD=OFF: the multimodal (mtmd) library is not needed and only
#    costs build time; llama_cpp imports it lazily.
if ! "$VENV/bin/python" -c "import llama_cpp,sys; sys.exit(llama_cpp.__version__!='${LLAMA_CPP_PYTHON_VERSION}')" >/dev/null 2>&1; then
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$VENV/bin/python" -m pip install --no-cache-dir --verbose "$SDIST" \
      "numpy==${NUMPY_VERSION}" > "$VENV/build.log" 2>&1 || {
        tail -50 "$VENV/build.log"; echo "llama-cpp-python build failed, see $VENV/build.log" >&2; exit 1; }
fi

# 3. gguf (same version as the sdist's vendor/llama.cpp/gguf-py) and numpy.
"$VENV/bin/python" -m pip install -q "gguf==${GGUF_VERSION}" "numpy==${NUMPY_VERSION}"

# 4. Record versions.
VENDORED_COMMIT="$(sed -n 's/^- feat: update llama.cpp to ggml-org\/llama.cpp@\([0-9a-f]*\).*/\1/p' \
  "$SRC/$SDIST_NAME/CHANGELOG.md" | head -1)"
"$VENV/bin/python" - "$VENDORED_COMMIT" "$SRC/$SDIST_NAME" "$SDIST_SHA256" <<'PY' | tee "$SRC/VERSIONS.txt"
import sys, platform, llama_cpp, gguf, numpy
from importlib.metadata import version
commit, sdist = sys.argv[1], sys.argv[2]
print("python", platform.python_version())
print("llama-cpp-python", llama_cpp.__version__)
print("llama.cpp (vendored)", "ggml-org/llama.cpp@" + commit)
print("gguf", version("gguf"))
print("numpy", numpy.__version__)
print("sdist", sdist + ".tar.gz", "sha256", sys.argv[3])
print("system_info", llama_cpp.llama_print_system_info().decode().strip())
PY
