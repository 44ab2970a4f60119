#!/usr/bin/env python3
"""Tokenizer reference from llama.cpp for the GemmaKit demo model.

Writes tests/fixtures/gemma3_270m/llama_cpp_tokenize.json: for each string,
llama.cpp's token ids with special=True and special=False (add_bos=False both
times) and the detokenized text, plus the GGUF tokenizer metadata (read with
the gguf package's GGUFReader) in the header.

    .venv-llama/bin/python scripts/reference/llama_cpp_tokenize.py [--model PATH]
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import gguf
import llama_cpp
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "gemma3_270m" / "llama_cpp_tokenize.json"

STRINGS = [
    # empty / whitespace
    "",
    " ",
    "  ",
    "   ",
    "    ",
    "     ",
    "      ",
    "       ",
    "        ",
    "         ",
    "          ",
    "\n",
    "\n\n",
    "\n\n\n",
    "\n\n\n\n\n\n\n\n\n\n",
    "\t",
    "\t\t",
    " \n \n",
    "\r\n",
    "a \n\n  b   c    d",
    # ASCII
    "Hello",
    "Hello world",
    "hello world",
    " Hello world",
    "Hello world ",
    "  leading and trailing  ",
    "The capital of France is",
    "The quick brown fox jumps over the lazy dog.",
    "HELLO WORLD!!! What's up???",
    "don't, can't, won't; it's O'Neil's",
    "e-mail: someone@example.com, url: https://example.com/a?b=c&d=e#f",
    "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
    # digits
    "0",
    "7",
    "42",
    "123",
    "1234567890",
    "3.14159265358979",
    "12345678901234567890123456789",
    "-1e-10 +2.5E+3 0x1F 0b1010",
    "2024-01-31 23:59:59",
    "$1,234.56 and 50% off",
    # accents and other Latin
    "café",
    "naïve résumé façade",
    "Übermäßig große Straße",
    "¿Dónde está la biblioteca?",
    "Ça va très bien, merci.",
    "Æsir ø å ß ŀ",
    "Zażółć gęślą jaźń",
    "e\u0301 (e + combining acute) vs é",
    # other scripts
    "Привет, мир!",
    "Γειά σου Κόσμε",
    "שלום עולם",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "你好，世界",
    "日本の首都は東京です。",
    "カタカナとひらがな",
    "안녕하세요 세계",
    "中文English混合mixed日本語",
    "Hello Мир 世界 عالم 🌍",
    # emoji
    "😀",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🧑🏿‍💻 coding",
    "I ❤️ NY 🗽",
    "🇫🇷🇩🇪🇯🇵",
    # code
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "int main() {\n\tprintf(\"hi\\n\");\n\treturn 0;\n}\n",
    "\tindented\twith\ttabs\n\t\tdouble",
    "for (let i = 0; i < 10; i++) { console.log(i); }",
    "<html><body><div class=\"x\">&amp;</div></body></html>",
    "SELECT * FROM users WHERE id = 1;",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "    x = 1  # four-space indent",
    # special-token strings
    "<bos>",
    "<eos>",
    "<pad>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "text with <eos> in the middle",
    "<start_of_image>",
    "<start_of_turn",
    "< eos >",
    "<unused0>",
    "[multimodal]",
    # bytes / odd
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth\u200bspace",
    "tab\tand\u3000ideographic space",
    "\u0000nul",
    "~!@#$%^&*()_+`-=[]\\{}|;':\",./<>?",
    "....----____====",
    "a" * 40,
]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "fetch-demo-model.sh")],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def field_value(reader: gguf.GGUFReader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        return f"<array of {len(f.data)}>"
    return f.contents()


def gguf_tokenizer_facts(path: Path) -> dict:
    r = gguf.GGUFReader(str(path))
    keys = sorted(k for k in r.fields if k.startswith("tokenizer."))
    facts = {k: field_value(r, k) for k in keys if k != "tokenizer.chat_template"}
    tokens = r.fields["tokenizer.ggml.tokens"]
    types = r.fields.get("tokenizer.ggml.token_type")
    facts["n_tokens"] = len(tokens.data)
    facts["has_merges"] = "tokenizer.ggml.merges" in r.fields
    facts["has_scores"] = "tokenizer.ggml.scores" in r.fields
    facts["add_space_prefix_present"] = "tokenizer.ggml.add_space_prefix" in r.fields
    facts["chat_template_present"] = "tokenizer.chat_template" in r.fields
    if types is not None:
        tv = [int(types.parts[i][0]) for i in types.data]
        names = {int(t): t.name for t in gguf.TokenType}
        facts["token_type_counts"] = {names.get(k, str(k)): v for k, v in sorted(collections.Counter(tv).items())}
        toks = tokens.contents()
        facts["control_tokens_first_20"] = [[i, toks[i]] for i, t in enumerate(tv) if t == gguf.TokenType.CONTROL][:20]
        facts["user_defined_count"] = sum(1 for t in tv if t == gguf.TokenType.USER_DEFINED)
        facts["byte_tokens_first_last"] = [[i, toks[i]] for i in
                                           (lambda b: [b[0], b[-1]] if b else [])(
                                               [i for i, t in enumerate(tv) if t == gguf.TokenType.BYTE])]
    facts["general.architecture"] = field_value(r, "general.architecture")
    facts["general.name"] = field_value(r, "general.name")
    facts["general.file_type"] = field_value(r, "general.file_type")
    return facts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    model = args.model or default_model()

    llm = Llama(model_path=str(model), vocab_only=True, verbose=False)
    assert len(STRINGS) >= 60 and len(set(STRINGS)) == len(STRINGS)
    cases = []
    for s in STRINGS:
        b = s.encode("utf-8")
        ids_sp = llm.tokenize(b, add_bos=False, special=True)
        ids_nosp = llm.tokenize(b, add_bos=False, special=False)
        det_sp = llm.detokenize(ids_sp, special=True)
        det_nosp = llm.detokenize(ids_nosp, special=True)
        det_sp_plain = llm.detokenize(ids_sp, special=False)
        cases.append(dict(
            text=s,
            ids_special=ids_sp,
            ids_no_special=ids_nosp,
            pieces_no_special=[llm._model.token_get_text(i) for i in ids_nosp],
            detok_special=det_sp.decode("utf-8", errors="backslashreplace"),
            detok_no_special=det_nosp.decode("utf-8", errors="backslashreplace"),
            detok_special_hide_control=det_sp_plain.decode("utf-8", errors="backslashreplace"),
            roundtrip_special=det_sp == b,
            roundtrip_no_special=det_nosp == b,
        ))

    # BOS behaviour of llama.cpp's tokenizer for this model.
    probe = b"Hello"
    bos_probe = dict(
        add_bos_true=llm.tokenize(probe, add_bos=True, special=True),
        add_bos_false=llm.tokenize(probe, add_bos=False, special=True),
        bos_text_add_bos_true=llm.tokenize(b"<bos>Hello", add_bos=True, special=True),
    )
    versions = ROOT / ".venv-llama" / "src" / "VERSIONS.txt"
    vendored = None
    if versions.exists():
        for line in versions.read_text().splitlines():
            if line.startswith("llama.cpp (vendored)"):
                vendored = line.split(" ", 3)[-1]
    doc = dict(
        meta=dict(
            generator="scripts/reference/llama_cpp_tokenize.py",
            model=dict(file=model.name, sha256=sha256_file(model)),
            llama_cpp_python=llama_cpp.__version__, llama_cpp=vendored,
            gguf_py=importlib.metadata.version("gguf"),
            settings="Llama(vocab_only=True); tokenize(text, add_bos=False, special=True|False); "
                     "detokenize(ids, special=True) unless noted (detok_special_hide_control uses special=False)",
            n_vocab=llm.n_vocab(), bos_id=llm.token_bos(), eos_id=llm.token_eos(),
            bos_probe=bos_probe,
            gguf_tokenizer=gguf_tokenizer_facts(model),
        ),
        cases=cases,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    n_rt = sum(c["roundtrip_no_special"] for c in cases)
    print(f"wrote {args.out}: {len(cases)} strings, {n_rt} round-trip exactly (special=False)", file=sys.stderr)


if __name__ == "__main__":
    main()
