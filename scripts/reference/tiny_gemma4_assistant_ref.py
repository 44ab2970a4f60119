#!/usr/bin/env python3
"""Tiny Gemma 4 MTP assistant ("drafter") reference-output generator.

Builds a TINY random `Gemma4AssistantForCausalLM` (transformers 5.24.0, f32, eager) that fits
the tiny E2B target `tests/fixtures/tiny_gemma4_e2b` (hidden 64, vocab 512, 1 KV head, head dims
16 / 32, window 8) as planned in shared/spec/gemma4-mtp.md §6:

  backbone_hidden_size 64, hidden 32, intermediate 64, 4 layers [S,S,S,F], 2 q heads, 1 KV head,
  head_dim 16 / global_head_dim 32, all 4 layers KV-shared (they read the TARGET's cache:
  sliding layers its last sliding producer, the full layer its last full producer),
  ordered embeddings: 16 centroids, top 4 -> 4 x 32 = 128 candidate tokens of 512.

Every parameter and buffer is randomised (norm weights with random signs, layer_scalar,
token_ordering = a seeded random permutation of 0..511, stored int64).

Reference outputs (reference_outputs.safetensors), for draft rounds driven by the target's
greedy verification from a 4-token prompt, while the drafting position p stays below the
window (p <= 7: every SWA convention sees the same keys there):
  round.{r}.ids            [p+1] int64: the context (positions < p, whose KV the target holds)
                           followed by the round's first token `tok` at position p
  round.{r}.target_hidden  [64]  the target's post-final-norm hidden state of row p-1
                           (hidden_states[-1]), the assistant's first `h`
  round.{r}.step.{s}.token         [1]   int64, the step's input token
  round.{r}.step.{s}.normed        [32]  the assistant's final-norm output
  round.{r}.step.{s}.masked_logits [512] the centroid-masked head's logits (what HF returns)
  round.{r}.step.{s}.dense_logits  [512] normed . embed_tokens^T (the dense head)
  round.{r}.step.{s}.centroids     [4]   int64, top-4 centroid ids (torch.topk order)
  round.{r}.step.{s}.h_next        [64]  post_projection output (last_hidden_state)
  round.{r}.drafts         [3]   int64, argmax of each step's masked logits
  round.{r}.dense_drafts   [3]   int64, the same drafting with the dense head
  round.{r}.accepted       [1]   int64, drafts the target's greedy verification kept
Each step is one direct call of `Gemma4AssistantForCausalLM.forward` with
`inputs_embeds = cat(target.embed_tokens(tok) (scaled), h)`, `position_ids = [[p]]` and the
target's `shared_kv_states` of an uncached pass over the context.

Writes into --out (default: <repo>/tests/fixtures/tiny_gemma4_e2b_assistant):
  model.safetensors, config.json, reference_outputs.safetensors, manifest.json (sha256 of
  every other file). Deterministic (fixed seeds; run twice and diff the manifests).

Usage:  .venv-ref/bin/python scripts/reference/tiny_gemma4_assistant_ref.py [--out DIR]
"""

import argparse
import hashlib
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Gemma4AssistantConfig, Gemma4AssistantForCausalLM, Gemma4ForConditionalGeneration
from transformers.models.gemma4.configuration_gemma4 import Gemma4TextConfig

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.path.join(ROOT, "tests", "fixtures", "tiny_gemma4_e2b")
SEED = 20_2026
PROMPT = [2, 17, 301, 45]
DRAFT_STEPS = 3
WINDOW = 8


def build_config(target_text) -> Gemma4AssistantConfig:
    text = Gemma4TextConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        global_head_dim=32,
        num_kv_shared_layers=4,
        vocab_size=512,
        sliding_window=WINDOW,
        hidden_size_per_layer_input=0,
        vocab_size_per_layer_input=0,
        use_double_wide_mlp=False,
        enable_moe_block=False,
        final_logit_softcapping=None,
        rope_parameters=target_text.rope_parameters,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    cfg = Gemma4AssistantConfig(
        backbone_hidden_size=64,
        use_ordered_embeddings=True,
        num_centroids=16,
        centroid_intermediate_top_k=4,
        tie_word_embeddings=True,
        text_config=text,
    )
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    return cfg


def randomize_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter and buffer random (as tiny_gemma4_ref.py), token_ordering a permutation."""

    def u(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("embed_tokens.weight") or name.endswith("centroids.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif p.ndim == 1:  # RMSNorm scales: random sign * U(0.5, 1.5)
                sign = torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1
                p.copy_(sign * u(p.shape, 0.5, 1.5))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
        for name, b in sorted(model.named_buffers(), key=lambda kv: kv[0]):
            if name.endswith("layer_scalar"):
                b.copy_(u(b.shape, 0.5, 1.5))
            elif name.endswith("token_ordering"):
                b.copy_(torch.randperm(b.numel(), generator=gen).to(b.dtype).view(b.shape))
        model.tie_weights()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "tiny_gemma4_e2b_assistant"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)

    target = Gemma4ForConditionalGeneration.from_pretrained(TARGET, dtype=torch.float32, attn_implementation="eager")
    target.eval()
    cfg = build_config(target.config.text_config)
    gen = torch.Generator().manual_seed(SEED)
    assistant = Gemma4AssistantForCausalLM(cfg).eval()
    randomize_(assistant, gen)
    assistant.save_pretrained(args.out, safe_serialization=True)
    # Reload, so the outputs come from exactly what the files hold.
    assistant = Gemma4AssistantForCausalLM.from_pretrained(args.out, dtype=torch.float32, attn_implementation="eager").eval()

    embed = assistant.get_input_embeddings().weight  # [512, 32] (tied LM head)
    centroids = assistant.masked_embedding.centroids.weight  # [16, 32]
    normed = {}
    assistant.model.norm.register_forward_hook(lambda m, i, o: normed.__setitem__("x", o.detach().clone()))

    def target_pass(ids):
        with torch.no_grad():
            out = target(
                input_ids=torch.tensor([ids]),
                output_hidden_states=True,
                return_shared_kv_states=True,
                use_cache=False,
            )
        return out

    def draft_round(ids_ctx, tok, h, refs, r):
        """DRAFT_STEPS assistant steps at constant position p = len(ids_ctx)."""
        out = target_pass(ids_ctx)
        kv = out.shared_kv_states
        p = len(ids_ctx)
        drafts, dense_drafts = [], []
        t = tok
        for s in range(DRAFT_STEPS):
            with torch.no_grad():
                e = target.get_input_embeddings()(torch.tensor([[t]]))  # scaled by sqrt(64)
                a = assistant(
                    inputs_embeds=torch.cat([e, h.view(1, 1, -1)], dim=-1),
                    position_ids=torch.tensor([[p]]),
                    shared_kv_states=kv,
                )
            n = normed["x"].view(-1)
            masked = a.logits.view(-1)
            dense = n @ embed.T
            key = f"round.{r}.step.{s}"
            refs[f"{key}.token"] = torch.tensor([t], dtype=torch.int64)
            refs[f"{key}.normed"] = n
            refs[f"{key}.masked_logits"] = masked
            refs[f"{key}.dense_logits"] = dense.detach()
            refs[f"{key}.centroids"] = torch.topk(n @ centroids.T, cfg.centroid_intermediate_top_k).indices.to(torch.int64)
            refs[f"{key}.h_next"] = a.last_hidden_state.view(-1)
            drafts.append(int(masked.argmax()))
            dense_drafts.append(int(dense.argmax()))
            t = drafts[-1]
            h = a.last_hidden_state.view(-1)
        return drafts, dense_drafts

    refs = {}
    ids = list(PROMPT)
    out = target_pass(ids)
    tok = int(out.logits[0, -1].argmax())
    h = out.hidden_states[-1][0, -1]
    r = 0
    while len(ids) < WINDOW:
        p = len(ids)
        refs[f"round.{r}.ids"] = torch.tensor(ids + [tok], dtype=torch.int64)
        refs[f"round.{r}.target_hidden"] = h.clone()
        drafts, dense_drafts = draft_round(ids, tok, h, refs, r)
        refs[f"round.{r}.drafts"] = torch.tensor(drafts, dtype=torch.int64)
        refs[f"round.{r}.dense_drafts"] = torch.tensor(dense_drafts, dtype=torch.int64)
        # The target's greedy verification of tok + drafts (one uncached pass).
        ver = target_pass(ids + [tok] + drafts)
        rows = ver.logits[0, p:]  # row i scores the position after (tok, d1..)[i]
        greedy = [int(x) for x in rows.argmax(-1)]
        accepted = 0
        while accepted < len(drafts) and greedy[accepted] == drafts[accepted]:
            accepted += 1
        refs[f"round.{r}.accepted"] = torch.tensor([accepted], dtype=torch.int64)
        ids = ids + [tok] + drafts[:accepted]
        tok = greedy[accepted]
        h = ver.hidden_states[-1][0, p + accepted]
        r += 1
    refs = {k: v.detach().contiguous() for k, v in refs.items()}
    save_file(refs, os.path.join(args.out, "reference_outputs.safetensors"))
    for extra in ("generation_config.json",):
        path = os.path.join(args.out, extra)
        if os.path.exists(path):
            os.remove(path)

    manifest = {}
    for fn in sorted(os.listdir(args.out)):
        path = os.path.join(args.out, fn)
        if os.path.isfile(path) and fn != "manifest.json":
            manifest[fn] = {"bytes": os.path.getsize(path), "sha256": sha256(path)}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps({"rounds": r, "files": manifest}, indent=1))


if __name__ == "__main__":
    main()
