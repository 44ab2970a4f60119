"""Reference image preprocessing for rust-core/tests/vision_parity.rs.

Writes small encoded test images to tests/fixtures/images/ and, for each, what transformers'
Gemma4ImageProcessorPil (5.24, Pillow 13) makes of it after `transformers.image_utils.load_image`
(which applies the EXIF orientation and converts to RGB, as the HF pipelines do):

* `<name>.resized.png`: the resized uint8 image (lossless). pixel_values is exactly
  `float32(float64(u8) * (1/255))` of it, patchified; the script asserts that.
* `<name>.decoded.png` (JPEG cases): the RGB pixels Pillow decoded, upright.
* `reference.json`: per case the budget, the oriented input size, the resized size, the number
  of real patches and soft tokens, and sha256 of the processor's `pixel_values` (float32 LE,
  padded to max_patches) and `image_position_ids` (int64 LE), so the Rust test can demand
  identical bytes and still explain a mismatch pixel by pixel.

Run from the repo root: .venv-ref/bin/python scripts/reference/image_preprocess_ref.py
Deterministic (fixed seeds, no timestamps in the encoded files).
"""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from transformers.image_utils import load_image
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

OUT = Path("tests/fixtures/images")
PATCH, POOL = 16, 3


def synthetic(h: int, w: int, seed: int, noise: int) -> np.ndarray:
    """Gradients, a disc, stripes and some noise: edges and texture for the resampler."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    r = xx * 255.0 / max(w - 1, 1)
    g = yy * 255.0 / max(h - 1, 1)
    b = 128 + 100 * np.sin(xx / max(w, 1) * 9.0) * np.cos(yy / max(h, 1) * 7.0)
    img = np.stack([r, g, b], axis=-1)
    disc = (yy - h * 0.4) ** 2 + (xx - w * 0.6) ** 2 < (min(h, w) * 0.25) ** 2
    img[disc] = [250, 30, 40]
    stripes = (xx // max(w // 24, 1)) % 2 == 0
    band = (yy > h * 0.75) & (yy < h * 0.85)
    img[band & stripes] = [10, 10, 10]
    if noise:
        img = img + rng.integers(-noise, noise + 1, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1] if arr.ndim == 3 else 2]
    Image.fromarray(arr, mode=mode).save(buf, format=fmt, **kw)
    return buf.getvalue()


def cases():
    # Small: upscaled to fill the budget.
    yield "small_upscaled.png", encode(synthetic(37, 53, 1, 30), "PNG"), 140
    # Large: downscaled under the default budget (antialiased bicubic, support > 2 pixels).
    yield "large_downscaled.png", encode(synthetic(700, 1000, 2, 0), "PNG", optimize=True), 280
    # EXIF orientation 6 (rotate 90° clockwise to display): the tower must see it upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    yield "exif_rotated.jpg", encode(synthetic(48, 80, 3, 8), "JPEG", quality=90, exif=exif.tobytes()), 70
    # Plain baseline JPEG with 4:2:0 chroma, video-frame budget.
    yield "frame_420.jpg", encode(synthetic(90, 160, 4, 8), "JPEG", quality=85, subsampling=2), 70
    # RGBA (alpha is dropped, not composited) and greyscale inputs.
    rgba = np.concatenate([synthetic(60, 45, 5, 20), np.full((60, 45, 1), 128, np.uint8)], axis=-1)
    yield "rgba.png", encode(rgba, "PNG"), 70
    yield "grey.png", encode(synthetic(50, 50, 6, 20)[..., 0], "PNG"), 70
    # Lossless WebP (lossy WebP decoders may round differently; not a preprocessing question).
    yield "lossless.webp", encode(synthetic(64, 96, 7, 20), "WEBP", lossless=True), 70


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    ref = {}
    for name, data, budget in cases():
        (OUT / name).write_bytes(data)
        img = load_image(str(OUT / name))  # EXIF transpose + RGB, as the pipelines do
        proc = Gemma4ImageProcessorPil(patch_size=PATCH, max_soft_tokens=budget, pooling_kernel_size=POOL)
        out = proc(images=[img], return_tensors="np")
        pv = out["pixel_values"][0].astype(np.float32)
        pos = out["image_position_ids"][0].astype(np.int64)
        n_soft = int(out["num_soft_tokens_per_image"][0])
        n_patches = int((pos[:, 0] >= 0).sum())
        pw = int(pos[:n_patches, 0].max()) + 1
        ph = int(pos[:n_patches, 1].max()) + 1
        # Un-patchify the real patches back to the resized uint8 image.
        patches = pv[:n_patches].reshape(ph, pw, PATCH, PATCH, 3)
        resized = patches.transpose(0, 2, 1, 3, 4).reshape(ph * PATCH, pw * PATCH, 3)
        u8 = np.rint(resized * 255.0).astype(np.uint8)
        assert np.array_equal((u8.astype(np.float64) * (1 / 255)).astype(np.float32), resized), name
        assert not pv[n_patches:].any()
        stem = name.rsplit(".", 1)[0]
        decoded = None
        if name.endswith(".jpg"):
            # What Pillow's libjpeg-turbo decoded (after orientation), so the test can tell
            # decoder rounding apart from resampling.
            decoded = f"{stem}.decoded.png"
            img.save(OUT / decoded, optimize=True)
        Image.fromarray(u8).save(OUT / f"{stem}.resized.png", optimize=True)
        ref[name] = {
            "max_soft_tokens": budget,
            "input_hw": [img.height, img.width],
            "resized_hw": [ph * PATCH, pw * PATCH],
            "num_patches": n_patches,
            "num_soft_tokens": n_soft,
            "max_patches": int(pv.shape[0]),
            "pixel_values_sha256": sha256(pv),
            "position_ids_sha256": sha256(pos),
            "resized_png": f"{stem}.resized.png",
            "decoded_png": decoded,
        }
        print(name, ref[name]["input_hw"], "->", ref[name]["resized_hw"], n_soft, "tokens")
    meta = {
        "generator": "scripts/reference/image_preprocess_ref.py",
        "processor": f"Gemma4ImageProcessorPil(patch_size={PATCH}, pooling_kernel_size={POOL}) after load_image",
        "versions": {
            "transformers": __import__("transformers").__version__,
            "pillow": Image.__version__,
            "numpy": np.__version__,
        },
        "cases": ref,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
