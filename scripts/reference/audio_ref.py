"""Reference values for the audio front end, from transformers 5.24's Gemma4AudioFeatureExtractor
and Gemma4Processor (no model needed).

Writes tests/fixtures/audio/:
  feature_ref.safetensors  waveform [5279] (f32, seeded noise + tone), input_features [1, F, 128],
                           input_features_mask [1, F] (u8) - a clip whose padding masks a frame;
                           e2b.tower_out / tower_mask / soft_tokens: the tiny E2B fixture's audio
                           tower (transformers, f32 eager) on those features (last row masked);
                           preemphasis_{htk,plain}.input_features: the same clip with
                           preemphasis 0.97 (HTK flavour and plain)
  token_counts.json        per length: mel frames, valid frames, and the soft-token count the
                           processor inserts (replace_audio_token on the extractor's mask, and
                           _compute_audio_num_tokens)

Run from the repo root:  .venv-ref/bin/python scripts/reference/audio_ref.py
"""
import json
import pathlib

import numpy as np
from safetensors.numpy import save_file
from transformers import Gemma4AudioFeatureExtractor

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/audio"
OUT.mkdir(parents=True, exist_ok=True)
fe = Gemma4AudioFeatureExtractor()


def processor_tokens(mask: np.ndarray) -> int:
    # Gemma4Processor.replace_audio_token: two stride-2 convolutions on the mask.
    t = len(mask)
    for _ in range(2):
        t_out = (t + 2 - 3) // 2 + 1
        mask = mask[::2][:t_out]
        t = len(mask)
    return int(mask.sum())


def length_tokens(n: int) -> int:
    # Gemma4Processor._compute_audio_num_tokens (frame arithmetic on the unpadded length).
    frames = (n + 160 - 321) // 160 + 1
    if frames <= 0:
        return 0
    t = frames
    for _ in range(2):
        t = (t + 2 - 3) // 2 + 1
    return min(t, 750)


counts = {}
for n in [161, 200, 320, 321, 481, 1000, 5003, 16000, 19680, 16161, 160 * 100 + 1, 479_999, 480_000]:
    out = fe([np.zeros(n, dtype=np.float32) + 0.01], sampling_rate=16000, return_tensors="np")
    mask = out["input_features_mask"][0].astype(bool)
    counts[str(n)] = {
        "num_frames": int(mask.shape[0]),
        "valid_frames": int(mask.sum()),
        "soft_tokens": processor_tokens(mask),
        "soft_tokens_by_length": length_tokens(n),
    }
(OUT / "token_counts.json").write_text(json.dumps(counts, indent=1) + "\n")

rng = np.random.default_rng(7)
n = 5279  # 32 valid frames of 33: the padding to 128 samples adds a masked frame
t = np.arange(n) / 16000.0
wave = (0.4 * np.sin(2 * np.pi * 300.0 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
out = fe([wave], sampling_rate=16000, return_tensors="np")
# The tiny E2B fixture's audio tower on these features: 33 frames -> 9 rows, the last masked.
import torch
from transformers import Gemma4ForConditionalGeneration

torch.set_num_threads(1)
model = Gemma4ForConditionalGeneration.from_pretrained(
    str(OUT.parent / "tiny_gemma4_e2b"), dtype=torch.float32, attn_implementation="eager"
).eval()
feats = torch.from_numpy(out["input_features"].astype(np.float32))
fmask = torch.from_numpy(out["input_features_mask"].astype(bool))
with torch.no_grad():
    at = model.model.audio_tower(feats, fmask)
    soft = model.model.embed_audio(inputs_embeds=at.last_hidden_state)
save_file(
    {
        "waveform": wave,
        "input_features": out["input_features"].astype(np.float32),
        "input_features_mask": out["input_features_mask"].astype(np.uint8),
        "preemphasis_htk.input_features": Gemma4AudioFeatureExtractor(preemphasis=0.97)(
            [wave], sampling_rate=16000, return_tensors="np"
        )["input_features"].astype(np.float32),
        "preemphasis_plain.input_features": Gemma4AudioFeatureExtractor(
            preemphasis=0.97, preemphasis_htk_flavor=False
        )([wave], sampling_rate=16000, return_tensors="np")["input_features"].astype(np.float32),
        "e2b.tower_out": at.last_hidden_state.numpy().astype(np.float32),
        "e2b.tower_mask": at.attention_mask.numpy().astype(np.uint8),
        "e2b.soft_tokens": soft[at.attention_mask].numpy().astype(np.float32),
    },
    str(OUT / "feature_ref.safetensors"),
)
print(json.dumps(counts))
print("tower mask", at.attention_mask.numpy().astype(int).tolist())
print("features", out["input_features"].shape, "valid", int(out["input_features_mask"].sum()))
