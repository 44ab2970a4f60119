#!/usr/bin/env python3
"""Reference data for GemmaKit's GGUF reader and ggml block decoders, from an independent
implementation: the PyPI `gguf` package (gguf-py, maintained in the llama.cpp tree), whose
`gguf.quants` decodes and encodes ggml blocks with numpy and whose `GGUFWriter` writes GGUF files.

Writes into tests/fixtures/quant/:
  dequant_reference.json  random blocks for each type + gguf-py's dequantized f32 values, gguf-py
                          quantize_q8_0/q4_0 outputs for random rows, gguf-py's type size table.
  gguf_py_sample.gguf     a small GGUF file written by gguf.GGUFWriter (custom alignment 64,
                          every scalar metadata type, string/f32/nested arrays, F32/F16/Q8_0 tensors).
All float data is stored as hex of little-endian bytes so the Rust tests compare bit patterns.

Recreate (from the repo root; needs PyPI):
    python3 -m venv .venv-gguf && .venv-gguf/bin/pip install gguf==0.19.0 numpy==2.4.6
    .venv-gguf/bin/python scripts/reference/gguf_dequant_ref.py
Deterministic: a fixed seed and no time stamps, so re-running gives identical files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "quant"
SEED = 20260501

# Offsets of the f16 scale fields inside each block type, from ggml-common.h. Random bytes are
# written everywhere else; these are overwritten with finite, sane f16 values so the expected
# output is not dominated by inf/NaN. Each entry: (block count, [(offset, role)]).
SCALE_FIELDS: dict[T, tuple[int, list[tuple[int, str]]]] = {
    T.Q4_0: (6, [(0, "d")]),
    T.Q4_1: (6, [(0, "d"), (2, "m")]),
    T.Q5_0: (6, [(0, "d")]),
    T.Q5_1: (6, [(0, "d"), (2, "m")]),
    T.Q8_0: (6, [(0, "d")]),
    T.Q2_K: (3, [(80, "d"), (82, "m")]),   # scales[16], qs[64], d, dmin
    T.Q3_K: (3, [(108, "d")]),             # hmask[32], qs[64], scales[12], d
    T.Q4_K: (3, [(0, "d"), (2, "m")]),     # d, dmin, scales[12], qs[128]
    T.Q5_K: (3, [(0, "d"), (2, "m")]),     # d, dmin, scales[12], qh[32], qs[128]
    T.Q6_K: (3, [(208, "d")]),             # ql[128], qh[64], scales[16] (i8), d
}

# Edge-case scales used for the first blocks of every type: exact powers of two, zero, negative,
# the smallest f16 subnormal, the largest finite f16.
SPECIAL_SCALES = [1.0, -0.5, 0.0, 2.0**-24, 65504.0, -3.0e-3]


def f16_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """n finite f16 values: the special ones first, then sign * 10^U(-4, 1)."""
    vals = list(SPECIAL_SCALES[:n])
    while len(vals) < n:
        vals.append(float(rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(-4.0, 1.0)))
    return np.array(vals, dtype=np.float16)


def random_blocks(rng: np.random.Generator, qtype: T) -> np.ndarray:
    n_blocks, fields = SCALE_FIELDS[qtype]
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset, role in fields:
        scales = f16_scales(rng, n_blocks)
        if role == "m":
            # Shift the special list so d and m do not get the same special value in one block.
            scales = np.roll(scales, 1)
        blocks[:, offset:offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def plain_values(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Raw bytes for F32/F16/BF16: random bit patterns plus every special class."""
    if qtype == T.F32:
        special = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
                            0x00000001, 0x807FFFFF, 0x3F800000, 0x7F7FFFFF], dtype=np.uint32)
        rand = rng.integers(0, 2**32, size=54, dtype=np.uint32)
    else:
        special = np.array([0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x0001, 0x83FF, 0x3C00,
                            0x7BFF, 0x7F80, 0xFF81, 0x0080, 0x8001], dtype=np.uint16)
        rand = rng.integers(0, 2**16, size=50, dtype=np.uint16)
    return np.concatenate([special, rand]).view(np.uint8)


def hexs(a: np.ndarray) -> str:
    return np.ascontiguousarray(a).tobytes().hex()


def f32_hex(a: np.ndarray) -> str:
    a = np.asarray(a)
    assert a.dtype == np.float32, a.dtype
    return a.astype("<f4").tobytes().hex()


def dequant_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for qtype in [T.F32, T.F16, T.BF16]:
        raw = plain_values(rng, qtype)
        expected = dequantize(raw, qtype).astype(np.float32, copy=False).reshape(-1)
        cases.append(case(qtype, raw, expected))
    for qtype in SCALE_FIELDS:
        blocks = random_blocks(rng, qtype)
        expected = dequantize(blocks, qtype).reshape(-1)
        cases.append(case(qtype, blocks, expected))
    return cases


def case(qtype: T, raw: np.ndarray, expected: np.ndarray) -> dict:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_bytes = raw.size
    assert n_bytes % type_size == 0
    assert expected.size == n_bytes // type_size * block_size, (qtype, expected.shape)
    return {
        "type": qtype.name,
        "type_id": int(qtype),
        "n_elements": int(expected.size),
        "blocks_hex": hexs(raw),
        "expected_f32_le_hex": f32_hex(expected),
    }


def quantize_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for qtype in [T.Q8_0, T.Q4_0]:
        rows = [
            rng.standard_normal(128).astype(np.float32) * np.float32(0.05),
            (rng.standard_normal(64) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32),
            np.zeros(32, dtype=np.float32),                        # d = 0 path
            np.linspace(-4.0, 3.0, 32, dtype=np.float32),         # max |x| is negative
            np.arange(-16, 16, dtype=np.float32) / np.float32(4),  # exact ties after scaling
        ]
        for x in rows:
            q = quantize(x, qtype)
            assert q.dtype == np.uint8
            cases.append({"type": qtype.name, "input_f32_le_hex": f32_hex(x), "expected_blocks_hex": hexs(q)})
    return cases


def type_table() -> list[dict]:
    return [
        {"name": t.name, "id": int(t), "block_size": b, "type_size": s}
        for t, (b, s) in sorted(GGML_QUANT_SIZES.items(), key=lambda kv: int(kv[0]))
    ]


def write_sample_gguf(path: Path) -> None:
    """A small GGUF written by gguf-py, parsed by a test in rust-core/src/weights/gguf/tests.rs."""
    w = gguf.GGUFWriter(path, arch="gemma3")
    w.add_custom_alignment(64)
    w.add_string("general.name", "gemmakit-ref-sample")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.25)
    w.add_bool("test.bool", True)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -1.5e300)
    w.add_array("test.strings", ["a", "", "héllo"])
    w.add_key_value("test.f32s", [1.5, -2.0, 3.25], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
    w.add_array("test.nested", [[1, 2], [3]])  # python ints: INT32
    # Row-major numpy shapes; gguf-py writes them reversed (ne0 first).
    w.add_tensor("f32.weight", (np.arange(24, dtype=np.float32) * np.float32(0.5) - np.float32(4)).reshape(3, 8))
    w.add_tensor("f16.bias", np.array([1.0, -2.0, 0.5, 65504.0], dtype=np.float16))
    q8_src = (np.arange(128, dtype=np.float32) / np.float32(10) - np.float32(6)).reshape(2, 64)
    w.add_tensor("q8.weight", quantize(q8_src, T.Q8_0), raw_dtype=T.Q8_0)  # byte shape -> (2, 64)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    rng = np.random.default_rng(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {
        "generator": "scripts/reference/gguf_dequant_ref.py",
        "gguf_py_version": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy_version": np.__version__,
        "seed": SEED,
        "format": "hex strings are raw little-endian bytes; expected_f32_le_hex holds f32 values",
        "type_sizes": type_table(),
        "dequant": dequant_cases(rng),
        "quantize": quantize_cases(rng),
    }
    json_path = OUT / "dequant_reference.json"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    sample = OUT / "gguf_py_sample.gguf"
    write_sample_gguf(sample)
    print(f"wrote {json_path} ({json_path.stat().st_size} bytes), {sample} ({sample.stat().st_size} bytes)")
    return 0


def _dist_version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    sys.exit(main())
