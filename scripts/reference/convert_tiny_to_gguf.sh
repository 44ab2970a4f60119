#!/usr/bin/env bash
# Converts the tiny Gemma 4 test checkpoints (tests/fixtures/tiny_gemma4_{e2b,e4b})
# to GGUF with llama.cpp's own converter (vendor/llama.cpp/convert_hf_to_gguf.py
# from the llama-cpp-python sdist kept by setup-llama-venv.sh), as an
# independent reference for GemmaKit's GGUF loader.
#
# Outputs per variant, written to a scratch dir first and then copied into
# tests/fixtures/tiny_gemma4_<v>/:
#   model-f32.gguf     text model, all tensors f32
#   model-q8_0.gguf    text model, --outtype q8_0 (converter's own q8_0 choice)
#   mmproj-f32.gguf    vision + audio towers (--mmproj), if the converter emits it
#
# The fixtures ship no tokenizer, and the converter's Gemma4 path needs one
# (gguf.LlamaHfVocab: a BPE tokenizer.json with byte_fallback + merges, loaded
# through transformers.AutoTokenizer). So a COPY of each fixture dir gets a
# synthetic 512-token tokenizer (see make_tokenizer below), plus a
# preprocessor_config.json (image_mean/std) that --mmproj needs; the originals
# are not touched.
#
# Runs with the .venv-ref python (torch + transformers, see setup-venv.sh);
# gguf comes from the sdist's vendor/llama.cpp/gguf-py (the converter puts it
# on sys.path itself), so nothing is installed into .venv-ref.
#
# Usage: scripts/reference/convert_tiny_to_gguf.sh [e2b|e4b ...]   (default: both)
# Env: SCRATCH (default: a fresh mktemp dir, kept), NO_COPY=1 (leave fixtures alone)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REF_PY="${REF_PY:-$ROOT/.venv-ref/bin/python}"
LLAMA_PY="${LLAMA_PY:-$ROOT/.venv-llama/bin/python}"
LLAMA_SRC="$(ls -d "$ROOT"/.venv-llama/src/llama_cpp_python-*/vendor/llama.cpp 2>/dev/null | tail -1)"
CONVERT="$LLAMA_SRC/convert_hf_to_gguf.py"
SCRATCH="${SCRATCH:-$(mktemp -d -t tiny-gguf.XXXXXX)}"
VARIANTS=("$@")
[ ${#VARIANTS[@]} -eq 0 ] && VARIANTS=(e2b e4b)

[ -x "$REF_PY" ] || { echo "missing $REF_PY: run scripts/reference/setup-venv.sh" >&2; exit 1; }
[ -f "$CONVERT" ] || { echo "missing convert_hf_to_gguf.py: run scripts/reference/setup-llama-venv.sh" >&2; exit 1; }
echo "converter: $CONVERT"
echo "scratch:   $SCRATCH"

# Writes tokenizer.json + tokenizer_config.json (512 tokens) and
# preprocessor_config.json into $1.
make_tokenizer() {
  "$REF_PY" - "$1" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
cfg = json.loads((out / "config.json").read_text())
V = cfg["text_config"]["vocab_size"]
assert V == 512, V

# Layout (ids must line up with config.json: pad 0, eos 1, bos 2,
# boi 500, eoi 501, image 502, video 503, boa 504, eoa 505, audio 506).
# Token strings follow the real Gemma 4 tokenizer.
special = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>",
           5: "<|turn>", 6: "<turn|>",
           500: "<|image>", 501: "<image|>", 502: "<|image|>", 503: "<|video|>",
           504: "<|audio>", 505: "<audio|>", 506: "<|audio|>"}
for i in range(507, V):
    special[i] = f"<unused{i - 507}>"

vocab = {}
for i in range(0, 7):
    vocab[special[i]] = i
for b in range(256):                      # 7..262 byte-fallback tokens
    vocab[f"<0x{b:02X}>"] = 7 + b
# Normal pieces: single chars first, then pieces built by merges (rank order).
chars = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] \
      + [chr(c) for c in range(ord("A"), ord("Z") + 1)] \
      + [str(d) for d in range(10)] + list(".,!?;:'\"()-_/\n\t")
nid = 263
for c in chars:
    vocab[c] = nid; nid += 1
merges = []
words = ["\u2581the", "\u2581a", "\u2581is", "\u2581of", "\u2581and", "\u2581to",
         "\u2581in", "\u2581hello", "\u2581world", "\u2581capital", "\u2581France",
         "\u2581Paris", "\u2581cat", "\u2581sat", "\u2581on", "\u2581mat",
         "\u2581def", "\u2581return", "\u2581if", "\u2581for", "\u2581one",
         "\u2581two", "\u2581three", "ing", "ed", "er", "\u2581The", "\u2581model",
         "\u2581user", "\u2581image", "\u2581audio", "\u2581text"]
def add(tok):
    global nid
    if tok not in vocab and nid < 500:
        vocab[tok] = nid; nid += 1
        return True
    return False
for w in words:                            # left-to-right merge chains
    cur = w[0]
    for ch in w[1:]:
        nxt = cur + ch
        if nxt not in vocab:
            if not add(nxt):
                break
            merges.append(f"{cur} {ch}")
        cur = nxt
i = 0
while nid < 500:                           # pad to 500 with two-letter pieces
    a, b = chr(ord("a") + i // 26 % 26), chr(ord("a") + i % 26)
    if add(a + b):
        merges.append(f"{a} {b}")
    i += 1
for i in range(500, V):
    vocab[special[i]] = i
assert len(vocab) == V and sorted(vocab.values()) == list(range(V))

added = [{"id": i, "content": special[i], "single_word": False, "lstrip": False,
          "rstrip": False, "normalized": False, "special": True}
         for i in sorted(special)]
tok = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": added,
    "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    "pre_tokenizer": None,
    "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
    },
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
              "continuing_subword_prefix": None, "end_of_word_suffix": None,
              "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
              "vocab": vocab, "merges": merges},
}
(out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=1))
(out / "tokenizer_config.json").write_text(json.dumps({
    "tokenizer_class": "PreTrainedTokenizerFast",
    "add_bos_token": True, "add_eos_token": False,
    "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
    "mask_token": "<mask>",
    "model_max_length": 131072,
    "chat_template": "{{ bos_token }}{% for m in messages %}<|turn>{{ m['role'] }}\n{{ m['content'] }}<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}",
}, indent=1))
# The mmproj path reads image_mean/image_std from preprocessor_config.json.
# Values = transformers' Gemma4ImageProcessor defaults (do_normalize False,
# i.e. pixels only rescaled to [0,1], as tiny_gemma4_ref.py feeds them).
(out / "preprocessor_config.json").write_text(json.dumps({
    "image_processor_type": "Gemma4ImageProcessor",
    "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0],
    "do_normalize": False, "do_rescale": True, "rescale_factor": 1 / 255,
    "patch_size": 4, "max_soft_tokens": 70, "pooling_kernel_size": 3,
}, indent=1))
print(f"tokenizer: {len(vocab)} tokens, {len(merges)} merges, {len(special)} special; + preprocessor_config.json")
PY
}

convert() { # dir outfile outtype [extra args]
  local dir="$1" out="$2" outtype="$3"; shift 3
  local t0=$SECONDS
  "$REF_PY" "$CONVERT" "$dir" --outfile "$out" --outtype "$outtype" "$@" > "$out.log" 2>&1 || {
    tail -30 "$out.log" >&2; echo "FAILED: $out (log: $out.log)" >&2; return 1; }
  echo "  $(basename "$out"): $(stat -c %s "$out") bytes, $((SECONDS - t0)) s"
}

for v in "${VARIANTS[@]}"; do
  src="$ROOT/tests/fixtures/tiny_gemma4_$v"
  work="$SCRATCH/tiny_gemma4_$v"
  out="$SCRATCH/out_$v"
  rm -rf "$work" "$out"; mkdir -p "$work" "$out"
  cp "$src/config.json" "$src/generation_config.json" "$src/model.safetensors" "$work/"
  echo "== $v"
  make_tokenizer "$work"
  convert "$work" "$out/model-f32.gguf" f32
  convert "$work" "$out/model-q8_0.gguf" q8_0
  if convert "$work" "$out/mmproj-f32.gguf" f32 --mmproj; then :; else
    echo "  (no mmproj: converter failed, see $out/mmproj-f32.gguf.log)"; fi
  if [ "${NO_COPY:-0}" != 1 ]; then
    for f in model-f32.gguf model-q8_0.gguf mmproj-f32.gguf; do
      [ -f "$out/$f" ] && cp "$out/$f" "$src/$f"
    done
    echo "  copied into $src"
  fi
done
