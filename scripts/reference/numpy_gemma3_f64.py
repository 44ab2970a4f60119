#!/usr/bin/env python3
"""Independent float64 reference for the Gemma 3 270M GGUF: a plain numpy forward pass with the
weights dequantized by gguf-py (no llama.cpp code), greedy by full recomputation.

Usage: .venv-gguf/bin/python scripts/reference/numpy_gemma3_f64.py MODEL.gguf \
           tests/fixtures/gemma3_270m/llama_cpp_greedy.json OUT.json OUT_first_step_logits.npy
Writes greedy tokens and top-2 log-prob margins for the same prompts as the llama.cpp
reference, and the first-step logits (float32) of the first three prompts.
"""
# Independent float64 numpy forward of the demo GGUF (dequantized with gguf-py), first step only.
import sys, time, numpy as np, gguf
from gguf.quants import dequantize
P = sys.argv[1]
r = gguf.GGUFReader(P); T = {t.name: t for t in r.tensors}
def W(n):
    t = T[n]; a = dequantize(t.data, t.tensor_type)
    return np.asarray(a, dtype=np.float64).reshape(int(t.shape[1]) if len(t.shape)>1 else -1, -1) if len(t.shape)>1 else np.asarray(a, dtype=np.float64).reshape(-1)
t0=time.time(); E = W("token_embd.weight"); print("embd", E.shape, time.time()-t0, file=sys.stderr)
D, H, HD, L, EPS = 640, 4, 256, 18, 1e-6
layers = [{k: W(f"blk.{i}.{k}.weight") for k in ["attn_norm","attn_q","attn_k","attn_v","attn_q_norm","attn_k_norm","attn_output","post_attention_norm","ffn_norm","ffn_gate","ffn_up","ffn_down","post_ffw_norm"]} for i in range(L)]
onorm = W("output_norm.weight")
def rms(x, w): return x / np.sqrt((x*x).mean(-1, keepdims=True) + EPS) * w
def rope(x, pos, base):  # x [n, h, 256], neox
    half = HD//2; inv = base ** (-np.arange(half)*2.0/HD); ang = pos[:,None]*inv[None,:]
    c, s = np.cos(ang)[:,None,:], np.sin(ang)[:,None,:]
    a, b = x[...,:half], x[...,half:]
    return np.concatenate([a*c - b*s, a*s + b*c], -1)
def gelu(x): return 0.5*x*(1+np.tanh(np.sqrt(2/np.pi)*(x+0.044715*x**3)))
def forward(ids):
    n = len(ids); pos = np.arange(n, dtype=np.float64)
    x = E[ids] * np.sqrt(D)
    for i, lw in enumerate(layers):
        base = 1e6 if i % 6 == 5 else 1e4
        h = rms(x, lw["attn_norm"])
        q = (h @ lw["attn_q"].T).reshape(n, H, HD); k = (h @ lw["attn_k"].T).reshape(n, 1, HD); v = (h @ lw["attn_v"].T).reshape(n, 1, HD)
        q = rope(rms(q, lw["attn_q_norm"]), pos, base) / np.sqrt(HD); k = rope(rms(k, lw["attn_k_norm"]), pos, base)
        s = np.einsum("qhd,khd->hqk", q, np.broadcast_to(k, (n, H, HD)))
        s = s + np.triu(np.full((n, n), -np.inf), 1)[None]
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", s, np.broadcast_to(v, (n, H, HD))).reshape(n, H*HD)
        x = x + rms(o @ lw["attn_output"].T, lw["post_attention_norm"])
        h = rms(x, lw["ffn_norm"])
        f = (gelu(h @ lw["ffn_gate"].T) * (h @ lw["ffn_up"].T)) @ lw["ffn_down"].T
        x = x + rms(f, lw["post_ffw_norm"])
    return rms(x[-1], onorm) @ E.T
import json
g = json.load(open(sys.argv[2]))
out = {"generator": "scripts/reference/numpy_gemma3_f64.py", "note": "independent float64 numpy forward of the GGUF, weights dequantized by gguf-py; greedy by full recomputation", "prompts": []}
firsts = []
for i, p in enumerate(g["prompts"]):
    ids = list(p["prompt_ids"])
    toks, margins = [], []
    for step in range(len(p["tokens"])):
        logits = forward(np.array(ids))
        if step == 0 and i < 3:
            firsts.append(logits.astype(np.float32))
        order = np.argsort(-logits)[:2]
        m = logits.max(); lp = logits - (m + np.log(np.exp(logits - m).sum()))
        toks.append(int(order[0])); margins.append(float(lp[order[0]] - lp[order[1]]))
        ids.append(int(order[0]))
    out["prompts"].append({"prompt_ids": p["prompt_ids"], "tokens": toks, "top2_margins": margins})
    print(i, toks[:8], "llama agrees:", toks == p["tokens"], file=sys.stderr)
json.dump(out, open(sys.argv[3], "w"), indent=1)
np.save(sys.argv[4], np.array(firsts))
