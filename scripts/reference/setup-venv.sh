#!/usr/bin/env bash
# Creates .venv-ref/ at the repo root with the pinned HF reference stack used to
# generate tests/fixtures/tiny_gemma4_*. Idempotent: does nothing if the venv
# already imports the pinned versions. Needs PyPI access; downloads ~6 GB
# (torch wheel + CUDA libs; a --no-deps/CPU-less torch does not import).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-ref"
PY="${PYTHON:-python3}"

# Versions the committed fixtures were generated with (python 3.11.7).
PINS=(
  "torch==2.15.0"
  "transformers==5.24.0"
  "safetensors==0.8.0"
  "numpy==2.4.6"
  "pillow==13.0.0"
)

check() {
  "$VENV/bin/python" - <<'PY'
import torch, transformers, safetensors, numpy, PIL
print("torch", torch.__version__)
print("transformers", transformers.__version__)
print("safetensors", safetensors.__version__)
print("numpy", numpy.__version__)
print("pillow", PIL.__version__)
PY
}

if [ -x "$VENV/bin/python" ] && check >/dev/null 2>&1; then
  echo ".venv-ref already present at $VENV:"
  check
  exit 0
fi

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install "${PINS[@]}"
echo "installed into $VENV:"
check
