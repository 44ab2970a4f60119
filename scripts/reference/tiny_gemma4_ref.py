#!/usr/bin/env python3
"""Tiny Gemma 4 (E2B- or E4B-shaped) reference-output generator.

Repo copy of the shared reference generator (shared/reference/tiny_gemma4_ref.py), extended with
`--variant e2b|e4b`, the `long.*` reference keys and `--compare DIR`.
`--variant e2b --no-long` reproduces the shared fixture's model.safetensors, config.json,
generation_config.json and tensor_names.json byte-for-byte; reference_outputs are
deterministic on one machine (1 or 2 threads) but differ across CPUs by float rounding
(<= 1e-4 abs vs. the shared file on an AMD EPYC AVX512 box; integer keys/tokens identical).

Builds a TINY random Gemma4ForConditionalGeneration that keeps every
architectural feature of Gemma 4 E2B/E4B. Variant e2b (the shared one):

  text  : sliding + full layers, per-layer-type head_dim (sliding 16 / full 32),
          MQA (1 kv head), q/k/v RMSNorm, attention scaling 1.0, default RoPE on
          sliding layers and "proportional" partial RoPE (0.25) on full layers,
          sliding window (8, so a 20-token prompt crosses it), KV sharing across
          the last 3 layers (producer = last non-shared layer of each type),
          double-wide MLP on the KV-shared layers, per-layer embeddings (PLE),
          layer_scalar, tied embeddings, final logit softcap 30.
  vision: patch embed + 2-D learned position tables, 2-D axial RoPE, clipped
          linears (finite clip bounds so clamping is exercised), q/k/v norms,
          3x3 position-aware average pooling, sqrt(d) scaling, projector.
  audio : 2x Conv2d subsampling (+LayerNorm, ReLU), conformer layers (macaron
          FFNs, chunked local attention with rel-pos + softcap, light conv),
          output projection (with bias), projector.

Variant e4b (E4B-like text decoder; vision/audio towers identical to e2b, projectors
map to the same H = 64): 12 layers `[S,S,S,S,S,F] x 2` (5:1), 4 q heads / 2 kv heads
(GQA 2:1, sliding and full), num_kv_shared_layers 6 (layers 6..11 reuse KV;
producers sliding -> 4, full -> 5), NO double-wide MLP (intermediate 128 everywhere).

Config layouts (the Rust loader must accept both):
  e2b: config.json rewritten to the RELEASE layout: text_config.global_head_dim = 32 and
       num_global_key_value_heads = null, no per_layer_config; eoa_token_id added.
  e4b: config.json exactly as transformers 5.24 `save_pretrained` writes it natively:
       text_config.per_layer_config = {"05": {"head_dim": 32}, "11": {"head_dim": 32}}
       (keys = full-layer indices, zero-padded to the widest index), no global_head_dim,
       only eoa_token_index (no eoa_token_id).

All parameters AND buffers (norm weights, layer_scalar, per_dim_scale,
clip bounds, position tables) are randomised (default HF init leaves many of
them at 1/0/inf, which would hide bugs such as "(1 + w)" RMSNorm).

Extra reference keys (both variants, unless --no-long): long.input_ids [1,40] (BOS + 39
seeded random ids in [3,500), drawn from a SEPARATE generator so every other key is
unchanged; same ids for both variants), long.logits [1,40,512] (uncached full-sequence),
long.gen_tokens [8] and long.gen_step_logits [8,512] (KV-cached greedy; asserted equal
to uncached greedy and to `generate`).

Writes into --out (default: <repo>/tests/fixtures/tiny_gemma4_<variant>):
  model.safetensors, config.json, generation_config.json, reference_outputs.safetensors,
  reference_meta.json, tensor_names.json, manifest.json (sha256 of every file except
  reference_meta.json, which holds timings).

Usage:  .venv-ref/bin/python scripts/reference/tiny_gemma4_ref.py --variant e4b [--out DIR]
        ... --variant e2b --no-long --out OUT_DIR --compare SHARED_REFERENCE_DIR/tiny_gemma4_e2b
`--compare DIR` checks the new files against DIR/manifest.json and compares the
reference tensors key by key (bit-identical / max abs diff / extra keys).
Run twice into two dirs and diff the manifests to check determinism.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import transformers
import transformers.models.gemma4.modeling_gemma4 as mg
from transformers import (
    Gemma4AudioConfig,
    Gemma4AudioFeatureExtractor,
    Gemma4Config,
    Gemma4ForConditionalGeneration,
    Gemma4TextConfig,
    Gemma4VisionConfig,
)
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

SEED = 1234

# ---- tiny special-token ids (the real ones are 255999 / 258880.. and need a 262144 vocab)
VOCAB = 512
PAD, EOS, BOS = 0, 1, 2
BOI, EOI, IMAGE, VIDEO, BOA, EOA, AUDIO = 500, 501, 502, 503, 504, 505, 506

ROPE = {
    "full_attention": {"rope_theta": 1_000_000.0, "rope_type": "proportional", "partial_rotary_factor": 0.25},
    "sliding_attention": {"rope_theta": 10_000.0, "rope_type": "default"},
}

TEXT_KW = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    global_head_dim=32,
    num_global_key_value_heads=None,
    attention_k_eq_v=False,
    sliding_window=8,
    max_position_embeddings=131072,
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    hidden_size_per_layer_input=8,
    vocab_size_per_layer_input=VOCAB,
    num_kv_shared_layers=3,
    use_double_wide_mlp=True,
    final_logit_softcapping=30.0,
    use_bidirectional_attention=None,
    rope_parameters=ROPE,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
    tie_word_embeddings=True,
)
VISION_KW = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=16,
    global_head_dim=16,
    patch_size=4,
    pooling_kernel_size=3,
    position_embedding_size=64,
    use_clipped_linears=True,
    standardize=False,
    default_output_length=70,
    rms_norm_eps=1e-6,
)
AUDIO_KW = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    # NB: HF computes the SSCP projection input as (channels[0] // 4) * channels[1], which only
    # equals the true (mel_bins / 4) * channels[1] when channels[0] == 128 == mel bins.
    subsampling_conv_channels=[128, 8],
    conv_kernel_size=5,
    attention_chunk_size=12,
    attention_context_left=13,
    attention_context_right=0,
    attention_logit_cap=50.0,
    output_proj_dims=48,  # != text hidden (64), like E4B (1536 vs 2560)
    use_clipped_linears=True,
    rms_norm_eps=1e-6,
)
IMAGE_PROC_KW = dict(patch_size=4, max_soft_tokens=70, pooling_kernel_size=3)

# E4B-like text decoder: 5:1 pattern, 2 kv heads, no double-wide MLP; everything else as e2b.
TEXT_KW_E4B = dict(
    TEXT_KW,
    num_hidden_layers=12,
    layer_types=["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention"] * 5 + ["full_attention"],
    num_key_value_heads=2,
    num_kv_shared_layers=6,
    use_double_wide_mlp=False,
)
VARIANTS = {"e2b": TEXT_KW, "e4b": TEXT_KW_E4B}
# e2b: release layout (global_head_dim) written by rewriting config.json;
# e4b: native transformers 5.24 layout (text_config.per_layer_config), file left as saved.
CONFIG_LAYOUT = {"e2b": "release (text_config.global_head_dim)", "e4b": "native (text_config.per_layer_config)"}
LONG_LEN, LONG_SEED = 40, SEED + 1


def build_config(text_kw=TEXT_KW) -> Gemma4Config:
    return Gemma4Config(
        text_config=Gemma4TextConfig(**text_kw),
        vision_config=Gemma4VisionConfig(**VISION_KW),
        audio_config=Gemma4AudioConfig(**AUDIO_KW),
        boi_token_id=BOI,
        eoi_token_id=EOI,
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        boa_token_id=BOA,
        eoa_token_index=EOA,
        audio_token_id=AUDIO,
        tie_word_embeddings=True,
        vision_soft_tokens_per_image=70,
    )


def randomize_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Randomise every parameter and every persistent buffer (deterministically)."""

    def u(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("embed_tokens.weight") or name.endswith("embed_tokens_per_layer.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif name.endswith("position_embedding_table"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif name.endswith("per_dim_scale"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.ndim == 1:  # all RMSNorm / LayerNorm scales: random sign * U(0.5, 1.5)
                # (random signs keep the random model from collapsing onto one greedy token)
                sign = torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1
                p.copy_(sign * u(p.shape, 0.5, 1.5))
            else:  # Linear [out, in], Conv2d [out, in, kh, kw], depthwise Conv1d [C, 1, k]
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
        for name, b in sorted(model.named_buffers(), key=lambda kv: kv[0]):
            if name.endswith("layer_scalar"):
                b.copy_(u(b.shape, 0.5, 1.5))
            elif name.endswith("input_min"):
                b.copy_(-u(b.shape, 1.5, 3.0))
            elif name.endswith("input_max"):
                b.copy_(u(b.shape, 1.5, 3.0))
            elif name.endswith("output_min"):
                b.copy_(-u(b.shape, 1.0, 3.0))
            elif name.endswith("output_max"):
                b.copy_(u(b.shape, 1.0, 3.0))
        model.tie_weights()


def make_image(gen: torch.Generator) -> np.ndarray:
    """40x64 RGB uint8: smooth gradient + noise (deterministic)."""
    h, w = 40, 64
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    base = np.stack([xx * 255 / (w - 1), yy * 255 / (h - 1), (xx + yy) * 255 / (w + h - 2)], axis=-1)
    noise = torch.randint(-40, 41, (h, w, 3), generator=gen).numpy()
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_waveform(gen: torch.Generator, seconds: float = 1.23, sr: int = 16000) -> np.ndarray:
    n = int(round(seconds * sr))
    t = np.arange(n, dtype=np.float64) / sr
    sig = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 1250.0 * t + 0.5)
    sig = sig * (0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t))  # amplitude modulation
    noise = torch.randn(n, generator=gen, dtype=torch.float64).numpy() * 0.02
    return (sig + noise).astype(np.float32)


def greedy_cached(model, prompt_ids, steps, **mm_inputs):
    """Greedy decoding with the KV cache: one prefill call, then one token per call."""
    out = model(input_ids=prompt_ids, use_cache=True, **mm_inputs)
    cache = out.cache
    step_logits = [out.logits[:, -1, :]]
    tokens = [int(out.logits[0, -1].argmax())]
    for _ in range(steps - 1):
        nxt = torch.tensor([[tokens[-1]]], dtype=torch.long)
        out = model(input_ids=nxt, cache=cache, use_cache=True)
        cache = out.cache
        step_logits.append(out.logits[:, -1, :])
        tokens.append(int(out.logits[0, -1].argmax()))
    return tokens, torch.cat(step_logits, dim=0)


def greedy_nocache(model, prompt_ids, steps, **mm_inputs):
    ids = prompt_ids
    tokens = []
    for _ in range(steps):
        out = model(input_ids=ids, use_cache=False, **mm_inputs)
        tokens.append(int(out.logits[0, -1].argmax()))
        ids = torch.cat([ids, torch.tensor([[tokens[-1]]])], dim=1)
    return tokens


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="e2b")
    ap.add_argument("--out", default=None, help="default: <repo>/tests/fixtures/tiny_gemma4_<variant>")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-long", action="store_true",
                    help="omit the long.* keys (reproduces the shared e2b fixture byte-for-byte)")
    ap.add_argument("--compare", metavar="DIR", default=None,
                    help="after writing, compare against DIR/manifest.json and DIR/reference_outputs.safetensors")
    args = ap.parse_args()
    if args.out is None:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        args.out = os.path.join(repo, "tests", "fixtures", f"tiny_gemma4_{args.variant}")
    text_kw = VARIANTS[args.variant]
    os.makedirs(args.out, exist_ok=True)

    t0 = time.time()
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(SEED)

    cfg = build_config(text_kw)
    cfg._attn_implementation = "eager"
    model = Gemma4ForConditionalGeneration(cfg).eval()
    model.config._attn_implementation = "eager"
    randomize_(model, gen)
    lm = model.model.language_model
    tcfg = cfg.text_config

    refs = {}

    # ------------------------------------------------------------------ text
    prompt = torch.cat([torch.tensor([[BOS]]), torch.randint(3, 500, (1, 19), generator=gen)], dim=1)
    refs["text.input_ids"] = prompt
    layer_outs = {}
    hooks = [
        layer.register_forward_hook(lambda m, i, o, idx=idx: layer_outs.__setitem__(idx, o.detach().clone()))
        for idx, layer in enumerate(lm.layers)
    ]
    hooks.append(lm.norm.register_forward_hook(lambda m, i, o: layer_outs.__setitem__("norm", o.detach().clone())))
    with torch.no_grad():
        out = model(input_ids=prompt, use_cache=False)
        embeds = lm.embed_tokens(prompt)
        ple_tok = lm.get_per_layer_inputs(prompt)
        ple = lm.project_per_layer_inputs(embeds, ple_tok)
    for h in hooks:
        h.remove()
    refs["text.inputs_embeds"] = embeds  # already multiplied by sqrt(hidden)
    refs["text.per_layer_token_embeds"] = ple_tok  # [1,T,L,P], already * sqrt(P)
    refs["text.per_layer_inputs"] = ple  # [1,T,L,P], final PLE input of each layer
    for i in range(tcfg.num_hidden_layers):
        refs[f"text.layer_out.{i}"] = layer_outs[i]  # residual stream after layer i (incl. layer_scalar)
    refs["text.final_norm"] = layer_outs["norm"]
    refs["text.logits"] = out.logits  # softcapped

    # --------------------------------------------------------- greedy decode
    with torch.no_grad():
        toks, step_logits = greedy_cached(model, prompt, 8)
        toks_nc = greedy_nocache(model, prompt, 8)
        gen_out = model.generate(
            prompt, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=PAD,
            min_new_tokens=8,
        )
    assert toks == toks_nc, (toks, toks_nc)
    assert toks == gen_out[0, prompt.shape[1]:].tolist(), (toks, gen_out)
    refs["gen.prompt_ids"] = prompt
    refs["gen.tokens"] = torch.tensor(toks, dtype=torch.long)
    refs["gen.step_logits"] = step_logits  # logits that produced each generated token

    # ---------------------------------------------------------------- vision
    img = make_image(gen)
    improc = Gemma4ImageProcessorPil(**IMAGE_PROC_KW)
    vin = improc(images=[Image.fromarray(img)], return_tensors="pt")
    pixel_values = vin["pixel_values"].float()
    image_pos = vin["image_position_ids"].long()
    n_img_tok = int(vin["num_soft_tokens_per_image"][0])
    enc_out = {}
    hk = model.model.vision_tower.encoder.register_forward_hook(
        lambda m, i, o: enc_out.__setitem__("h", o.last_hidden_state.detach().clone())
    )
    with torch.no_grad():
        vt = model.model.vision_tower(pixel_values=pixel_values, pixel_position_ids=image_pos)
        v_soft = model.model.embed_vision(inputs_embeds=vt.last_hidden_state)
    hk.remove()
    refs["vision.image_uint8"] = torch.from_numpy(img)  # [H,W,3] before resize
    refs["vision.pixel_values"] = pixel_values  # [1, max_patches, 3*p*p] in [0,1]
    refs["vision.image_position_ids"] = image_pos  # [1, max_patches, 2] (x, y), -1 = padding
    refs["vision.encoder_last_hidden"] = enc_out["h"]  # [1, max_patches, Dv] before pooling
    refs["vision.tower_out"] = vt.last_hidden_state  # [n_soft, Dv] pooled, * sqrt(Dv), padding stripped
    refs["vision.soft_tokens"] = v_soft  # [n_soft, D_text] after projector
    assert vt.last_hidden_state.shape[0] == n_img_tok

    # ----------------------------------------------------------------- audio
    wav = make_waveform(gen)
    fe = Gemma4AudioFeatureExtractor()
    # NB: pass a list; a bare 1-D array hits a shape bug in transformers 5.24 (squeeze error)
    ain = fe([wav], sampling_rate=16000, return_tensors="pt")
    feats = ain["input_features"].float()
    fmask = ain["input_features_mask"].bool()
    sscp = {}
    hk = model.model.audio_tower.subsample_conv_projection.register_forward_hook(
        lambda m, i, o: sscp.__setitem__("h", o[0].detach().clone())
    )
    with torch.no_grad():
        at = model.model.audio_tower(feats, fmask)
        a_soft_all = model.model.embed_audio(inputs_embeds=at.last_hidden_state)
    hk.remove()
    a_mask = at.attention_mask
    n_aud_tok = int(a_mask.sum())
    refs["audio.waveform"] = torch.from_numpy(wav)
    refs["audio.input_features"] = feats  # [1, frames, 128] log-mel (padded frames zeroed)
    refs["audio.input_features_mask"] = fmask
    refs["audio.sscp_out"] = sscp["h"]  # [1, frames/4, Da] after subsampling + input_proj
    refs["audio.tower_out"] = at.last_hidden_state  # [1, frames/4, output_proj_dims]
    refs["audio.tower_mask"] = a_mask  # [1, frames/4] True = valid
    refs["audio.soft_tokens"] = a_soft_all[a_mask]  # [n_valid, D_text] after projector

    # Variant: attention window as in Google's JAX reference (self + 12 past keys) instead of
    # HF 5.24's (self + 11 past keys). See gemma4-architecture.md "Audio attention window".
    orig_swmf = mg.sliding_window_mask_function

    def inclusive_window(sliding_window):
        left, right = sliding_window

        def inner(batch_idx, head_idx, q_idx, kv_idx):
            dist = q_idx - kv_idx
            return ((dist >= 0) & (dist <= left)) | ((dist < 0) & (-dist <= right))

        return inner

    mg.sliding_window_mask_function = inclusive_window
    try:
        with torch.no_grad():
            at13 = model.model.audio_tower(feats, fmask)
    finally:
        mg.sliding_window_mask_function = orig_swmf
    refs["audio.tower_out_jax_window"] = at13.last_hidden_state

    # ------------------------------------------------------------ multimodal
    mm_ids = (
        [BOS, 10, 11, 12, BOI] + [IMAGE] * n_img_tok + [EOI, 13, 14, BOA] + [AUDIO] * n_aud_tok + [EOA, 15, 16]
    )
    mm_ids = torch.tensor([mm_ids], dtype=torch.long)
    mm_inputs = dict(
        pixel_values=pixel_values, image_position_ids=image_pos, input_features=feats, input_features_mask=fmask
    )
    with torch.no_grad():
        mm_out = model(input_ids=mm_ids, use_cache=False, **mm_inputs)
        mm_toks, mm_step_logits = greedy_cached(model, mm_ids, 8, **mm_inputs)
        mm_toks_nc = greedy_nocache(model, mm_ids, 8, **mm_inputs)
    assert mm_toks == mm_toks_nc, (mm_toks, mm_toks_nc)
    refs["mm.input_ids"] = mm_ids
    refs["mm.logits"] = mm_out.logits
    refs["mm.gen_tokens"] = torch.tensor(mm_toks, dtype=torch.long)
    refs["mm.gen_step_logits"] = mm_step_logits

    # ------------------------------------------------------------------ long
    # 40-token prompt (crosses the sliding window of 8 several times); its own generator so
    # that adding these keys leaves every other key (and the weights) unchanged.
    long_info = None
    if not args.no_long:
        lgen = torch.Generator().manual_seed(LONG_SEED)
        long_ids = torch.cat([torch.tensor([[BOS]]), torch.randint(3, 500, (1, LONG_LEN - 1), generator=lgen)], dim=1)
        with torch.no_grad():
            long_out = model(input_ids=long_ids, use_cache=False)
            l_toks, l_step_logits = greedy_cached(model, long_ids, 8)
            l_toks_nc = greedy_nocache(model, long_ids, 8)
            l_gen = model.generate(
                long_ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=PAD, min_new_tokens=8,
            )
        assert l_toks == l_toks_nc, (l_toks, l_toks_nc)
        assert l_toks == l_gen[0, long_ids.shape[1]:].tolist(), (l_toks, l_gen)
        refs["long.input_ids"] = long_ids  # [1,40]
        refs["long.logits"] = long_out.logits  # [1,40,512], uncached, softcapped
        refs["long.gen_tokens"] = torch.tensor(l_toks, dtype=torch.long)  # [8]
        refs["long.gen_step_logits"] = l_step_logits  # [8,512], KV-cached
        long_info = {
            "tokens": l_toks,
            # cached prefill (HF skips non-last positions in KV-shared layers) vs. uncached last row
            "prefill_last_vs_uncached_max_abs_diff": float(
                (l_step_logits[0] - long_out.logits[0, -1]).abs().max()),
        }

    # ------------------------------------------------------------------ save
    model.save_pretrained(args.out, safe_serialization=True)
    cpath = os.path.join(args.out, "config.json")
    if args.variant == "e2b":
        # Rewrite config.json in the layout of the released google/gemma-4-E2B-it config
        # (text_config.global_head_dim / num_global_key_value_heads instead of per_layer_config).
        with open(cpath) as f:
            cj = json.load(f)
        tc = cj["text_config"]
        tc.pop("per_layer_config", None)
        tc["global_head_dim"] = text_kw["global_head_dim"]
        tc["num_global_key_value_heads"] = None
        cj["eoa_token_id"] = EOA
        with open(cpath, "w") as f:
            json.dump(cj, f, indent=2, sort_keys=True)
            f.write("\n")
    else:
        # e4b: keep the native transformers-5.24 layout; make sure it really is that layout.
        with open(cpath) as f:
            tc = json.load(f)["text_config"]
        assert "global_head_dim" not in tc and tc.get("per_layer_config"), sorted(tc)

    # Reload from disk and check the text logits are reproduced bit-exactly.
    re = Gemma4ForConditionalGeneration.from_pretrained(args.out, attn_implementation="eager").eval()
    with torch.no_grad():
        re_logits = re(input_ids=prompt, use_cache=False).logits
    reload_max_diff = float((re_logits - refs["text.logits"]).abs().max())
    assert reload_max_diff == 0.0, reload_max_diff
    if "long.logits" in refs:
        with torch.no_grad():
            re_long = re(input_ids=refs["long.input_ids"], use_cache=False).logits
        reload_long_diff = float((re_long - refs["long.logits"]).abs().max())
        assert reload_long_diff == 0.0, reload_long_diff
    assert re.config.text_config.kv_sharing_modes == tcfg.kv_sharing_modes

    refs = {k: v.detach().cpu().clone().contiguous() for k, v in refs.items()}
    for k, v in list(refs.items()):
        if v.dtype == torch.bool:
            refs[k] = v.to(torch.uint8)
        elif v.is_floating_point():
            refs[k] = v.float()
    save_file(refs, os.path.join(args.out, "reference_outputs.safetensors"), metadata={"format": "pt"})

    from safetensors import safe_open

    with safe_open(os.path.join(args.out, "model.safetensors"), "pt") as f:
        names = {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}
    with open(os.path.join(args.out, "tensor_names.json"), "w") as f:
        json.dump(names, f, indent=1)

    meta = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version},
        "seed": SEED,
        "variant": args.variant,
        "config_layout": CONFIG_LAYOUT[args.variant],
        "text_config_kwargs": {k: v for k, v in text_kw.items() if k != "rope_parameters"},
        "threads": args.threads,
        "dtype": "float32 everywhere; attn_implementation=eager",
        "token_ids": dict(pad=PAD, eos=EOS, bos=BOS, boi=BOI, eoi=EOI, image=IMAGE, video=VIDEO, boa=BOA, eoa=EOA,
                          audio=AUDIO),
        "kv_sharing_modes": tcfg.kv_sharing_modes,
        "image_processor": {**IMAGE_PROC_KW, "resample": "PIL BICUBIC", "rescale": "1/255", "normalize": False,
                            "input_hw": list(img.shape[:2]),
                            "resized_hw": [(int(image_pos[0, :, 1].max()) + 1) * IMAGE_PROC_KW["patch_size"],
                                           (int(image_pos[0, :, 0].max()) + 1) * IMAGE_PROC_KW["patch_size"]],
                            "num_soft_tokens": n_img_tok},
        "feature_extractor": fe.to_dict(),
        "audio": {"num_samples": int(wav.shape[0]), "num_frames": int(feats.shape[1]),
                  "num_valid_frames": int(fmask.sum()), "num_soft_tokens": n_aud_tok},
        "greedy": {"text_tokens": toks, "mm_tokens": mm_toks, "cached_equals_uncached": True,
                   "generate_equals_manual": True, "long": long_info},
        "reload_from_disk_max_abs_diff": reload_max_diff,
        "reference_tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                              for k, v in sorted(refs.items())},
        "elapsed_s": round(time.time() - t0, 2),
    }
    meta["feature_extractor"].pop("mel_filters", None)
    meta["feature_extractor"].pop("window", None)
    with open(os.path.join(args.out, "reference_meta.json"), "w") as f:
        json.dump(meta, f, indent=1, default=str)

    manifest = {}
    for fn in sorted(os.listdir(args.out)):
        p = os.path.join(args.out, fn)
        if os.path.isfile(p) and fn not in ("manifest.json", "reference_meta.json"):
            manifest[fn] = {"bytes": os.path.getsize(p), "sha256": sha256(p)}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps({"out": args.out, "variant": args.variant, "elapsed_s": meta["elapsed_s"],
                      "text_tokens": toks, "mm_tokens": mm_toks, "long": long_info,
                      "kv_sharing_modes": tcfg.kv_sharing_modes,
                      "n_image_tokens": n_img_tok, "n_audio_tokens": n_aud_tok,
                      "files": manifest}, indent=1))
    if args.compare:
        compare(args.out, args.compare)


def compare(new_dir, ref_dir):
    """Compare new_dir against ref_dir: file sha256 (via ref_dir/manifest.json) and reference tensors."""
    from safetensors.torch import load_file

    with open(os.path.join(ref_dir, "manifest.json")) as f:
        ref_manifest = json.load(f)
    print(f"== compare {new_dir} vs {ref_dir}")
    for fn, ent in sorted(ref_manifest.items()):
        p = os.path.join(new_dir, fn)
        same = os.path.exists(p) and sha256(p) == ent["sha256"]
        print(f"  {fn:32s} {'IDENTICAL' if same else 'DIFFERS'}")
    a = load_file(os.path.join(new_dir, "reference_outputs.safetensors"))
    b = load_file(os.path.join(ref_dir, "reference_outputs.safetensors"))
    common = sorted(set(a) & set(b))
    worst = 0.0
    n_diff = 0
    for k in common:
        if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype:
            print(f"  key {k}: shape/dtype {tuple(a[k].shape)}/{a[k].dtype} vs {tuple(b[k].shape)}/{b[k].dtype}")
            n_diff += 1
        elif not torch.equal(a[k], b[k]):
            d = float((a[k].double() - b[k].double()).abs().max())
            worst = max(worst, d)
            n_diff += 1
            print(f"  key {k}: max abs diff {d:.3e}")
    print(f"  reference keys: {len(common)} shared, {n_diff} differ (worst max abs diff {worst:.3e}); "
          f"only in new: {sorted(set(a) - set(b))}; only in ref: {sorted(set(b) - set(a))}")


if __name__ == "__main__":
    main()
