//! The CubeCL kernels. Each cube (workgroup) of `cube_size` units computes one output row for a
//! tile of tokens: units stride over the row's words, keep per-token partial sums in registers,
//! and reduce them through shared memory (no subgroup operations, which CPU adapters and many
//! Android drivers lack). Activation loads are vectors of 4 f32 (wgpu's widest).
//!
//! No unit leaves early: every unit of a cube reaches every barrier (out-of-range rows and
//! tokens only skip their loads and stores).

use cubecl::prelude::*;

/// Sums `tile` partial values per unit (`partial[t · cube_size + unit]`) over the cube; the
/// result for token `t` ends in `partial[t · cube_size]`.
#[cube]
fn reduce_tiles(
    partial: &mut Shared<[f32]>,
    #[comptime] tile: usize,
    #[comptime] cube_size: usize,
) {
    sync_cube();
    let unit = UNIT_POS as usize;
    // CUBE_DIM == cube_size; a builtin keeps the loop a runtime (uniform) loop.
    let mut stride = CUBE_DIM / 2;
    while stride > 0 {
        let half = stride as usize;
        if unit < half {
            #[unroll]
            for t in 0..tile {
                let other = partial[t * cube_size + unit + half];
                partial[t * cube_size + unit] += other;
            }
        }
        sync_cube();
        stride /= 2;
    }
}

/// `out[tok, out_col + row] = Σ_k x[tok, k] · W[row, k]` with `W` in integer words (see
/// `pack.rs`): `w = scale · (q − offset) − min` per block of `words_per_block` words.
///
/// With `glu`, `W` holds a gated MLP's gate and up rows interleaved (weight row `2·row` is the
/// gate's row `row`, `2·row + 1` the up's) and the output is `gelu_tanh(gate) · up`: both
/// products in one dispatch that reads `x` once, each summed exactly as alone. With
/// `gelu_times`, the output is `gelu_tanh(y) · mul` with `mul` laid out as `out` (Gemma 4's
/// per-layer input gate times the layer's per-layer embedding).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn packed_matmul<N: Size>(
    x: &[Vector<f32, N>],
    words: &[u32],
    scales: &[f32],
    mins: &[f32],
    mul: &[f32],
    out: &mut [f32],
    rows: u32,
    tokens: u32,
    words_per_row: u32,
    out_stride: u32,
    out_col: u32,
    #[comptime] bits: u32,
    #[comptime] words_per_block: u32,
    #[comptime] offset: u32,
    #[comptime] has_min: bool,
    #[comptime] glu: bool,
    #[comptime] gelu_times: bool,
    #[comptime] tile: usize,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let tok0 = CUBE_POS_Z * tile as u32;
    let elems = comptime!((32 / bits) as usize);
    let vecs = comptime!(elems / 4);
    let mask = comptime!((1u32 << bits) - 1);
    let x_row_vecs = words_per_row * vecs as u32;
    // Weight rows per output: the gate's and the up's with `glu`.
    let per_out = comptime!(if glu { 2usize } else { 1usize });

    let mut acc = Array::<f32>::new(tile * per_out);
    let mut q = Array::<f32>::new(elems);
    // Rows past the end (the grid is rounded up) run no iterations.
    let limit = select(row < rows, words_per_row, 0u32);
    let mut w = UNIT_POS;
    while w < limit {
        #[unroll]
        for p in 0..per_out {
            let idx = (row * per_out as u32 + p as u32) * words_per_row + w;
            let word = words[idx as usize];
            let block = idx / words_per_block;
            let scale = scales[block as usize];
            let mut shift = scale * f32::new(comptime!(offset as f32));
            if comptime!(has_min) {
                shift += mins[block as usize];
            }
            #[unroll]
            for e in 0..elems {
                let raw = (word >> (e as u32 * bits)) & mask;
                if comptime!(bits == 8) {
                    // Sign-extend the byte.
                    q[e] = f32::cast_from(raw) - f32::cast_from((raw >> 7) * 256u32);
                } else {
                    q[e] = f32::cast_from(raw);
                }
            }
            #[unroll]
            for t in 0..tile {
                let tok = tok0 + t as u32;
                if tok < tokens {
                    let mut dot = f32::new(0.0_f32);
                    let mut sum = f32::new(0.0_f32);
                    #[unroll]
                    for v in 0..vecs {
                        let xv = x[(tok * x_row_vecs + w * vecs as u32 + v as u32) as usize];
                        #[unroll]
                        for l in 0..4usize {
                            let xl = xv.extract(l);
                            dot += q[v * 4 + l] * xl;
                            sum += xl;
                        }
                    }
                    acc[p * tile + t] += scale * dot - shift * sum;
                }
            }
        }
        w += CUBE_DIM;
    }

    let mut partial = Shared::<[f32]>::new_slice(tile * per_out * cube_size);
    #[unroll]
    for i in 0..tile * per_out {
        partial[i * cube_size + UNIT_POS as usize] = acc[i];
    }
    reduce_tiles(&mut partial, tile * per_out, cube_size);
    if (UNIT_POS as usize) < tile {
        let tok = tok0 + UNIT_POS;
        if tok < tokens && row < rows {
            let mut y = partial[UNIT_POS as usize * cube_size];
            let at = (tok * out_stride + out_col + row) as usize;
            if comptime!(glu) {
                y = gelu_tanh(y) * partial[(tile + UNIT_POS as usize) * cube_size];
            }
            if comptime!(gelu_times) {
                y = gelu_tanh(y) * mul[at];
            }
            out[at] = y;
        }
    }
}

/// `out[tok, out_col + row] = Σ_k x[tok, k] · W[row, k]` with `W` dense f32 `[rows, k]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn dense_matmul<N: Size>(
    x: &[Vector<f32, N>],
    weight: &[Vector<f32, N>],
    out: &mut [f32],
    rows: u32,
    tokens: u32,
    vecs_per_row: u32,
    out_stride: u32,
    out_col: u32,
    #[comptime] tile: usize,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let tok0 = CUBE_POS_Z * tile as u32;
    let mut acc = Array::<f32>::new(tile);
    let limit = select(row < rows, vecs_per_row, 0u32);
    let mut v = UNIT_POS;
    while v < limit {
        let wv = weight[(row * vecs_per_row + v) as usize];
        #[unroll]
        for t in 0..tile {
            let tok = tok0 + t as u32;
            if tok < tokens {
                let prod = wv * x[(tok * vecs_per_row + v) as usize];
                let mut dot = f32::new(0.0_f32);
                #[unroll]
                for l in 0..N::value() {
                    dot += prod.extract(l);
                }
                acc[t] += dot;
            }
        }
        v += CUBE_DIM;
    }

    let mut partial = Shared::<[f32]>::new_slice(tile * cube_size);
    #[unroll]
    for t in 0..tile {
        partial[t * cube_size + UNIT_POS as usize] = acc[t];
    }
    reduce_tiles(&mut partial, tile, cube_size);
    if (UNIT_POS as usize) < tile {
        let tok = tok0 + UNIT_POS;
        if tok < tokens && row < rows {
            out[(tok * out_stride + out_col + row) as usize] =
                partial[UNIT_POS as usize * cube_size];
        }
    }
}

/// Max (`is_max`) or sum over the cube of one value per unit; every unit gets the result.
#[cube]
fn cube_reduce(scratch: &mut Shared<[f32]>, value: f32, #[comptime] is_max: bool) -> f32 {
    let unit = UNIT_POS as usize;
    scratch[unit] = value;
    sync_cube();
    let mut stride = CUBE_DIM / 2;
    while stride > 0 {
        let half = stride as usize;
        if unit < half {
            let a = scratch[unit];
            let b = scratch[unit + half];
            if comptime!(is_max) {
                scratch[unit] = select(b > a, b, a);
            } else {
                scratch[unit] = a + b;
            }
        }
        sync_cube();
        stride /= 2;
    }
    let result = scratch[0];
    sync_cube();
    result
}

/// KV element kinds of [`encoded_attention`] and [`encode_rows`] (comptime): a row is the CPU
/// codec's bytes (`kernels::kv`), little-endian in u32 words, padded to a whole word.
pub const KV_F32: u32 = 0;
pub const KV_F16: u32 = 1;
pub const KV_Q8_0: u32 = 2;
pub const KV_TQ: u32 = 3;

/// The f16 in the low 16 bits of `h` as f32 (exact; no `shader-f16` needed).
#[cube]
pub fn half_to_f32(h: u32) -> f32 {
    let sign = (h >> 15) << 31;
    let exp = (h >> 10) & 31u32;
    let mant = h & 1023u32;
    let mut x = f32::reinterpret(sign | ((exp + 112u32) << 23) | (mant << 13));
    if exp == 0u32 {
        // Zero or subnormal: mant · 2⁻²⁴ (computed on a normal f32, as GPUs may flush
        // subnormal f32).
        let m = f32::cast_from(mant) * f32::reinterpret(0x3380_0000u32);
        x = select(sign != 0u32, -m, m);
    }
    if exp == 31u32 {
        x = f32::reinterpret(sign | 0x7f80_0000u32 | (mant << 13));
    }
    x
}

/// The f32 with bits `x` rounded to the nearest f16 (ties to even), as `half::f16::from_f32`.
#[cube]
pub fn f32_to_half(x: u32) -> u32 {
    let sign = (x >> 16) & 0x8000u32;
    let exp = (x >> 23) & 255u32;
    let man = x & 0x007f_ffffu32;
    let mut out = sign;
    if exp == 255u32 {
        // Inf or NaN (a NaN keeps a quiet bit).
        out = sign | 0x7c00u32 | select(man != 0u32, 0x200u32, 0u32) | (man >> 13);
    } else if exp >= 143u32 {
        // Beyond the largest f16: infinity.
        out = sign | 0x7c00u32;
    } else if exp > 112u32 {
        // Normal f16.
        out = (sign | ((exp - 112u32) << 10) | (man >> 13))
            + select(
                (man & 0x1000u32) != 0u32 && (man & 0x2fffu32) != 0u32,
                1u32,
                0u32,
            );
    } else if exp >= 102u32 {
        // Subnormal f16: the implicit bit shifted in, rounded to nearest even.
        let m = man | 0x0080_0000u32;
        let shift = 126u32 - exp;
        let round = 1u32 << (shift - 1u32);
        out = (sign | (m >> shift))
            + select(
                (m & round) != 0u32 && (m & (3u32 * round - 1u32)) != 0u32,
                1u32,
                0u32,
            );
    }
    out
}

/// Element `i` of the encoded row starting at word `row`, decoded as the CPU codec does
/// (`KvCodec::decode`; TurboQuant rows stay in the rotated domain: `norm · level`).
#[cube]
fn kv_element(
    words: &[u32],
    row: u32,
    i: u32,
    levels: &[f32],
    #[comptime] kind: u32,
    #[comptime] bits: u32,
) -> f32 {
    let mut x = f32::new(0.0_f32);
    if comptime!(kind == KV_F32) {
        x = f32::reinterpret(words[(row + i) as usize]);
    }
    if comptime!(kind == KV_F16) {
        let w = words[(row + i / 2) as usize];
        x = half_to_f32((w >> ((i % 2) * 16)) & 0xffffu32);
    }
    if comptime!(kind == KV_Q8_0) {
        // ggml's block: an f16 scale, then 32 signed bytes (34 bytes, so the scale sits at a
        // byte offset of 0 or 2 within its word).
        let at = (i / 32) * 34;
        let sw = words[(row + at / 4) as usize];
        let scale = half_to_f32((sw >> ((at % 4) * 8)) & 0xffffu32);
        let b = at + 2 + i % 32;
        let raw = (words[(row + b / 4) as usize] >> ((b % 4) * 8)) & 255u32;
        x = scale * (f32::cast_from(raw) - f32::cast_from((raw >> 7) * 256u32));
    }
    if comptime!(kind == KV_TQ) {
        // An f16 norm, then `bits`-bit codebook indices from byte 2 on, LSB first.
        let norm = half_to_f32(words[row as usize] & 0xffffu32);
        let at = 16u32 + i * bits;
        let w = at / 32;
        let sh = at % 32;
        let mut code = words[(row + w) as usize] >> sh;
        if sh + bits > 32u32 {
            code |= words[(row + w + 1) as usize] << (32u32 - sh);
        }
        x = norm * levels[(code & comptime!((1u32 << bits) - 1)) as usize];
    }
    x
}

/// Where encoded row `row` of `[kv_heads, tokens]` new rows goes in a cache plane of `slots`
/// rows a head: slot `first_slot + row % tokens` of head `row / tokens`.
#[cube]
fn plane_row(row: u32, tokens: u32, slots: u32, first_slot: u32) -> u32 {
    (row / tokens) * slots + first_slot + row % tokens
}

/// f32 rows `[kv_heads · tokens, d]` (read as bits) → encoded rows of kind [`KV_F32`] or
/// [`KV_F16`] (two halves a word, the first in the low bits), one unit a word, written into
/// slots `first_slot..first_slot + tokens` of a plane `[kv_heads, slots, words_per_row]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn encode_rows(
    x: &[u32],
    out: &mut [u32],
    words: u32,
    d: u32,
    words_per_row: u32,
    tokens: u32,
    slots: u32,
    first_slot: u32,
    #[comptime] kind: u32,
) {
    let idx = ABSOLUTE_POS_Y * (CUBE_COUNT_X * CUBE_DIM_X) + ABSOLUTE_POS_X;
    if idx < words {
        let row = idx / words_per_row;
        let w = idx % words_per_row;
        let at = (plane_row(row, tokens, slots, first_slot) * words_per_row + w) as usize;
        if comptime!(kind == KV_F32) {
            out[at] = x[(row * d + w) as usize];
        } else {
            let i = 2 * w;
            let lo = f32_to_half(x[(row * d + i) as usize]);
            let mut hi = 0u32;
            if i + 1 < d {
                hi = f32_to_half(x[(row * d + i + 1) as usize]);
            }
            out[at] = lo | (hi << 16);
        }
    }
}

/// f32 rows `[rows, d]` (read as bits; row `r` belongs to KV head `r / tokens`) → encoded rows
/// of kind [`KV_Q8_0`] or [`KV_TQ`] written into slots `first_slot..first_slot + tokens` of a
/// plane `[kv_heads, slots, words_per_row]`, one cube a row, with the CPU
/// codec's arithmetic step for step (`KvCodec::encode`), so the bytes are the codec's:
///
/// - q8_0: per block of 32, `scale = amax / 127`, `q = round(x / scale)` half away from zero
///   (Rust's `round`, not the GPU's ties-to-even), the scale stored as f16.
/// - TurboQuant: the norm summed in order by one unit, `x / norm` times the head's signs, the
///   Hadamard butterflies in the CPU's order, times `hadamard_scale` (the host's `1/√d`), the
///   nearest level by the midpoints, and the norm correction `norm / √Σ level²` in order.
///
/// Adds, multiplies and compares are IEEE-exact on every Vulkan/Metal device; the divisions
/// and square roots are exact on lavapipe and most desktop drivers, and otherwise within the
/// 1–3 ulp the APIs allow, which can move a value sitting on a rounding boundary by one step.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn encode_quantized_rows(
    x: &[u32],
    signs: &[f32],
    levels: &[f32],
    out: &mut [u32],
    rows: u32,
    tokens: u32,
    words_per_row: u32,
    slots: u32,
    first_slot: u32,
    hadamard_scale: f32,
    #[comptime] kind: u32,
    #[comptime] bits: u32,
    #[comptime] d: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let unit = UNIT_POS;
    // A row's bytes (q8_0: 34 a block of 32, the last block padded with zeros) or codebook
    // indices (TurboQuant).
    let mut codes = Shared::<[u32]>::new_slice(comptime!(d.div_ceil(32) * 34));
    let mut y = Shared::<[f32]>::new_slice(d);
    // TurboQuant's norm, and its stored scale as f16 bits.
    let mut norm_at = Shared::<[f32]>::new_slice(1usize);
    let mut half_scale = Shared::<[u32]>::new_slice(1usize);
    // Out-of-range cubes (the grid is rounded up) still reach every barrier.
    let live = row < rows;
    let base = row * comptime!(d as u32);

    if comptime!(kind == KV_Q8_0) {
        let mut b = unit;
        while b < comptime!(d.div_ceil(32) as u32) {
            // The last block of a row of d ≢ 0 (mod 32) is partial (its bytes stay zero).
            let n = select(
                comptime!(d as u32) - b * 32u32 < 32u32,
                comptime!(d as u32) - b * 32u32,
                32u32,
            );
            let mut amax = f32::new(0.0_f32);
            if live {
                for i in 0..n {
                    let a = f32::reinterpret(x[(base + b * 32u32 + i) as usize]).abs();
                    amax = select(a > amax, a, amax);
                }
            }
            let scale = amax / f32::new(127.0_f32);
            let inv = select(
                scale > f32::new(0.0_f32),
                f32::new(1.0_f32) / scale,
                f32::new(0.0_f32),
            );
            let h = f32_to_half(u32::reinterpret(scale));
            let at = b * 34u32;
            codes[at as usize] = h & 255u32;
            codes[(at + 1u32) as usize] = h >> 8;
            for i in 0..32u32 {
                let mut t = f32::new(0.0_f32);
                if live && i < n {
                    t = f32::reinterpret(x[(base + b * 32u32 + i) as usize]) * inv;
                }
                let a = t.abs();
                let whole = a.floor();
                let mut r = whole
                    + select(
                        a - whole >= f32::new(0.5_f32),
                        f32::new(1.0_f32),
                        f32::new(0.0_f32),
                    );
                r = select(r > f32::new(127.0_f32), f32::new(127.0_f32), r);
                // Two's complement byte of ±r.
                let byte = select(
                    t < f32::new(0.0_f32) && r > f32::new(0.0_f32),
                    f32::new(256.0_f32) - r,
                    r,
                );
                codes[(at + 2u32 + i) as usize] = u32::cast_from(byte);
            }
            b += CUBE_DIM;
        }
        sync_cube();
    }

    if comptime!(kind == KV_TQ) {
        if unit == 0u32 {
            let mut sum = f32::new(0.0_f32);
            if live {
                for i in 0..d {
                    let v = f32::reinterpret(x[base as usize + i]);
                    sum += v * v;
                }
            }
            norm_at[0] = sum.sqrt();
        }
        sync_cube();
        let norm = norm_at[0];
        // Zero, infinite or NaN: the codec writes an all-zero row.
        let usable = norm > f32::new(0.0_f32) && norm <= f32::reinterpret(0x7f7f_ffffu32);
        let head = row / tokens;
        let mut i = unit;
        while i < comptime!(d as u32) {
            let mut v = f32::new(0.0_f32);
            if live && usable {
                v = f32::reinterpret(x[(base + i) as usize]) / norm
                    * signs[(head * comptime!(d as u32) + i) as usize];
            }
            y[i as usize] = v;
            i += CUBE_DIM;
        }
        sync_cube();
        // Walsh-Hadamard butterflies, pairs (a, a + h) within blocks of 2h, as the CPU does.
        let mut h = 1u32;
        while h < comptime!(d as u32) {
            let mut p = unit;
            while p < comptime!((d / 2) as u32) {
                let a = (p / h) * 2u32 * h + p % h;
                let u = y[a as usize];
                let w = y[(a + h) as usize];
                y[a as usize] = u + w;
                y[(a + h) as usize] = u - w;
                p += CUBE_DIM;
            }
            sync_cube();
            h *= 2u32;
        }
        let mut i = unit;
        while i < comptime!(d as u32) {
            let t = y[i as usize] * hadamard_scale;
            // Nearest level: the count of midpoints below it.
            let mut k = 0u32;
            #[unroll]
            for j in 0..comptime!((1u32 << bits) - 1) {
                let mid = f32::new(0.5_f32) * (levels[j as usize] + levels[(j + 1) as usize]);
                k += select(t > mid, 1u32, 0u32);
            }
            codes[i as usize] = k;
            i += CUBE_DIM;
        }
        sync_cube();
        if unit == 0u32 {
            let mut energy = f32::new(0.0_f32);
            for i in 0..d {
                let l = levels[codes[i] as usize];
                energy += l * l;
            }
            let root = energy.sqrt();
            let floor = f32::reinterpret(0x0080_0000u32);
            let scale = norm / select(root > floor, root, floor);
            half_scale[0] = f32_to_half(u32::reinterpret(scale));
        }
        sync_cube();
    }

    // Pack: word w holds bytes 4w..4w+4 (q8_0), or bits 32w..32w+32 of [f16 scale | indices
    // LSB first] (TurboQuant); the padding after the row's last byte stays zero.
    let mut w = unit;
    while w < words_per_row {
        let mut word = 0u32;
        if comptime!(kind == KV_Q8_0) {
            for j in 0..4u32 {
                let byte = w * 4u32 + j;
                if byte < comptime!((d.div_ceil(32) * 34) as u32) {
                    word |= codes[byte as usize] << (8u32 * j);
                }
            }
        }
        if comptime!(kind == KV_TQ) {
            let lo = w * 32u32;
            let norm = norm_at[0];
            if norm > f32::new(0.0_f32) && norm <= f32::reinterpret(0x7f7f_ffffu32) {
                if w == 0u32 {
                    word = half_scale[0];
                }
                // Indices whose bits [16 + j·bits, 16 + (j+1)·bits) meet [lo, lo + 32).
                let mut j = select(lo > 16u32, (lo - 16u32) / bits, 0u32);
                let end = select(
                    (lo + 16u32) / bits + 1u32 < comptime!(d as u32),
                    (lo + 16u32) / bits + 1u32,
                    comptime!(d as u32),
                );
                while j < end {
                    let at = 16u32 + j * bits;
                    if at >= lo && at < lo + 32u32 {
                        word |= codes[j as usize] << (at - lo);
                    }
                    if at < lo && at + bits > lo {
                        word |= codes[j as usize] >> (lo - at);
                    }
                    j += 1u32;
                }
            }
        }
        if live {
            out[(plane_row(row, tokens, slots, first_slot) * words_per_row + w) as usize] = word;
        }
        w += CUBE_DIM;
    }
}

/// Attention of query tokens over a KV cache of any [`KV_F32`]…[`KV_TQ`] kind for keys and
/// for values (the f32 cache too: its rows are kind f32), one cube per (query head, query
/// token): rows decoded on load, softmax over the visible keys of `scale · q·k` in f32,
/// max-subtracted.
///
/// Each unit owns the slots `unit, unit + cube_size, …` for the scores (so it only reads back
/// the scores it wrote), and `head_dim / cube_size` output elements for the weighted sum of
/// values, which goes through shared memory one tile of `cube_size` slots at a time.
///
/// `q`: `[tokens, heads, head_dim]` (for TurboQuant keys already rotated by the KV head's
/// rotation); `k`, `v`: encoded rows `[kv_heads, slots, words]` with the given head and slot
/// strides in words; `key_pos[s]`: the position of slot `s` (−1: empty); `q_pos[t]`: the
/// position of query token `t`; a key is visible when `key ≤ query < key + window`.
/// `scores`: `[tokens·heads, slots]` scratch; `out`: `[tokens, heads, head_dim]`, for
/// TurboQuant values in the rotated domain.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn encoded_attention(
    q: &[f32],
    k: &[u32],
    v: &[u32],
    key_pos: &[f32],
    q_pos: &[f32],
    k_levels: &[f32],
    v_levels: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
    slots: u32,
    heads: u32,
    groups: u32,
    k_head_stride: u32,
    k_slot_stride: u32,
    v_head_stride: u32,
    v_slot_stride: u32,
    window: f32,
    scale: f32,
    #[comptime] k_kind: u32,
    #[comptime] k_bits: u32,
    #[comptime] v_kind: u32,
    #[comptime] v_bits: u32,
    #[comptime] head_dim: usize,
    #[comptime] cube_size: usize,
) {
    let head = CUBE_POS_X;
    let token = CUBE_POS_Y;
    let kv_head = head / groups;
    let unit = UNIT_POS;
    let at = q_pos[token as usize];
    let q_base = (token * heads + head) as usize * head_dim;
    let k_base = kv_head * k_head_stride;
    let v_base = kv_head * v_head_stride;
    let s_base = (token * heads + head) * slots;
    let mut scratch = Shared::<[f32]>::new_slice(cube_size);

    // Pass 1: scores of this unit's slots, and their max.
    let mut local_max = f32::new(-1.0e30);
    let mut s = unit;
    while s < slots {
        let mut score = f32::new(-1.0e30);
        let key = key_pos[s as usize];
        if key >= f32::new(0.0_f32) && key <= at && key + window > at {
            let row = k_base + s * k_slot_stride;
            let mut dot = f32::new(0.0_f32);
            for i in 0..head_dim {
                dot += q[q_base + i] * kv_element(k, row, i as u32, k_levels, k_kind, k_bits);
            }
            score = dot * scale;
            local_max = select(score > local_max, score, local_max);
        }
        scores[(s_base + s) as usize] = score;
        s += CUBE_DIM;
    }
    let max = cube_reduce(&mut scratch, local_max, true);

    // Pass 2: the softmax denominator (a hidden slot's −1e30 score underflows to 0).
    let mut local_sum = f32::new(0.0_f32);
    let mut s = unit;
    while s < slots {
        let score = scores[(s_base + s) as usize];
        local_sum += select(
            score > f32::new(-1.0e29),
            (score - max).exp(),
            f32::new(0.0_f32),
        );
        s += CUBE_DIM;
    }
    let total = cube_reduce(&mut scratch, local_sum, false);

    // Pass 3: one tile of probabilities in shared memory, then each unit adds the weighted
    // values of its output elements.
    let per_unit = comptime!(head_dim.div_ceil(cube_size));
    let mut acc = Array::<f32>::new(per_unit);
    #[unroll]
    for e in 0..per_unit {
        acc[e] = f32::new(0.0_f32);
    }
    let mut start = 0u32;
    while start < slots {
        let s = start + unit;
        let mut p = f32::new(0.0_f32);
        if s < slots {
            let score = scores[(s_base + s) as usize];
            p = select(
                score > f32::new(-1.0e29),
                (score - max).exp(),
                f32::new(0.0_f32),
            );
        }
        scratch[unit as usize] = p;
        sync_cube();
        let count = select(
            slots - start < cube_size as u32,
            slots - start,
            cube_size as u32,
        );
        for j in 0..count {
            let pj = scratch[j as usize];
            if pj != f32::new(0.0_f32) {
                let row = v_base + (start + j) * v_slot_stride;
                #[unroll]
                for e in 0..per_unit {
                    let i = e * cube_size + unit as usize;
                    if i < head_dim {
                        acc[e] += pj * kv_element(v, row, i as u32, v_levels, v_kind, v_bits);
                    }
                }
            }
        }
        sync_cube();
        start += cube_size as u32;
    }
    let inv = 1.0f32 / total;
    #[unroll]
    for e in 0..per_unit {
        let i = e * cube_size + unit as usize;
        if i < head_dim {
            out[q_base + i] = acc[e] * inv;
        }
    }
}

/// `1 / √(mean(x[base..base + n]²) + eps)`, the cube's units striding over the row and their
/// sums reduced through shared memory; every unit of the cube gets it (and reaches every
/// barrier, `live` or not).
#[cube]
fn inverse_rms(
    x: &[f32],
    base: u32,
    n: u32,
    eps: f32,
    live: bool,
    #[comptime] cube_size: usize,
) -> f32 {
    let unit = UNIT_POS;
    let mut partial = Shared::<[f32]>::new_slice(cube_size);
    let mut sum = f32::new(0.0_f32);
    if live {
        let mut i = unit;
        while i < n {
            let v = x[(base + i) as usize];
            sum += v * v;
            i += CUBE_DIM;
        }
    }
    partial[unit as usize] = sum;
    reduce_tiles(&mut partial, 1usize, cube_size);
    f32::new(1.0_f32) / (partial[0] / f32::cast_from(n) + eps).sqrt()
}

/// `out[r, i] = (residual[r, i] + x[r, i] / √(mean_i(x[r, i]²) + eps) · w[i]) · scale`, where
/// `w` applies when `weighted` and `residual` when `add_residual` (else `out` is the normed row,
/// times `scale`): one cube a row, units striding over it, the sum of squares reduced through
/// shared memory. One dispatch where burn's ops take six (square, mean, add, power, two
/// products), and the residual stream's sum and the layer scalar ride along.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_rows(
    x: &[f32],
    w: &[f32],
    residual: &[f32],
    out: &mut [f32],
    rows: u32,
    n: u32,
    eps: f32,
    scale: f32,
    #[comptime] weighted: bool,
    #[comptime] add_residual: bool,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    // Out-of-range cubes (the grid is rounded up) still reach every barrier.
    let live = row < rows;
    let base = row * n;
    let inv = inverse_rms(x, base, n, eps, live, cube_size);
    if live {
        let mut i = UNIT_POS;
        while i < n {
            let at = (base + i) as usize;
            let mut v = x[at] * inv;
            if comptime!(weighted) {
                v *= w[i as usize];
            }
            if comptime!(add_residual) {
                v += residual[at];
            }
            out[at] = v * scale;
            i += CUBE_DIM;
        }
    }
}

/// Rotary embedding (as [`rope_rows`]) of the RMS-normed rows of `x` `[tokens, heads, 2·half]`
/// (as [`rms_norm_rows`] with a weight `[2·half]`): a query or key head's norm and rotation in
/// one dispatch, one cube a head.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_rope_rows(
    x: &[f32],
    w: &[f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [f32],
    rows: u32,
    heads: u32,
    half: u32,
    eps: f32,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let live = row < rows;
    let base = row * 2u32 * half;
    let inv = inverse_rms(x, base, 2u32 * half, eps, live, cube_size);
    if live {
        let token = row / heads;
        let mut j = UNIT_POS;
        while j < half {
            let x1 = x[(base + j) as usize] * inv * w[j as usize];
            let x2 = x[(base + j + half) as usize] * inv * w[(j + half) as usize];
            let c = cos[(token * half + j) as usize];
            let s = sin[(token * half + j) as usize];
            out[(base + j) as usize] = x1 * c - x2 * s;
            out[(base + j + half) as usize] = x2 * c + x1 * s;
            j += CUBE_DIM;
        }
    }
}

/// Rotary embedding, NeoX layout, of `x` `[tokens, heads, 2·half]` with tables `[tokens, half]`:
/// `(x₁, x₂) → (x₁·cos − x₂·sin, x₂·cos + x₁·sin)`, one unit a pair (burn's ops take eight
/// dispatches: four products, a difference, a sum and the concatenation).
#[cube(launch)]
pub fn rope_rows(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [f32],
    pairs: u32,
    heads: u32,
    half: u32,
) {
    let idx = ABSOLUTE_POS_Y * (CUBE_COUNT_X * CUBE_DIM_X) + ABSOLUTE_POS_X;
    if idx < pairs {
        let j = idx % half;
        let row = idx / half;
        let token = row / heads;
        let at = row * 2u32 * half + j;
        let x1 = x[at as usize];
        let x2 = x[(at + half) as usize];
        let c = cos[(token * half + j) as usize];
        let s = sin[(token * half + j) as usize];
        out[at as usize] = x1 * c - x2 * s;
        out[(at + half) as usize] = x2 * c + x1 * s;
    }
}

/// `out = gelu_tanh(a) · b`, element-wise (`model::ops::gelu_tanh`'s formula): one dispatch
/// where burn's ops take eleven. tanh's argument is clamped to ±15, where tanh is 1 to f32
/// precision, because some drivers compute tanh through exp and overflow to NaN beyond.
#[cube(launch)]
pub fn gelu_tanh_mul(a: &[f32], b: &[f32], out: &mut [f32], n: u32) {
    let idx = ABSOLUTE_POS_Y * (CUBE_COUNT_X * CUBE_DIM_X) + ABSOLUTE_POS_X;
    if idx < n {
        out[idx as usize] = gelu_tanh(a[idx as usize]) * b[idx as usize];
    }
}

/// `model::ops::gelu_tanh`'s formula, tanh's argument clamped to ±15 (see [`gelu_tanh_mul`]).
#[cube]
fn gelu_tanh(x: f32) -> f32 {
    let cube = x * x * x;
    let mut inner = (x + cube * f32::new(0.044715_f32)) * f32::new(0.7978846_f32);
    inner = select(inner > f32::new(15.0_f32), f32::new(15.0_f32), inner);
    inner = select(inner < f32::new(-15.0_f32), f32::new(-15.0_f32), inner);
    x * (inner.tanh() + f32::new(1.0_f32)) * f32::new(0.5_f32)
}

/// Each cube finds the largest of `block` logits of one token (`logits` `[tokens, rows]`, block
/// `CUBE_POS_X` of row `CUBE_POS_Y`) and writes it with its index (`first_row` added, as f32:
/// exact below 2²⁴) to `best[token, block_offset + block]` (pairs, `total_blocks` per token);
/// ties go to the lower index, NaN never wins, and a block with nothing but NaN writes
/// index −1. The host reads these few pairs instead of the logits.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn argmax_blocks(
    logits: &[f32],
    best: &mut [f32],
    rows: u32,
    first_row: u32,
    block_offset: u32,
    total_blocks: u32,
    block: u32,
    #[comptime] cube_size: usize,
) {
    let b = CUBE_POS_X;
    let token = CUBE_POS_Y;
    let unit = UNIT_POS;
    let none = 0xffff_ffffu32;
    let mut values = Shared::<[f32]>::new_slice(cube_size);
    let mut indices = Shared::<[u32]>::new_slice(cube_size);
    let start = b * block;
    let end = select(start + block < rows, start + block, rows);
    let mut bv = f32::new(0.0_f32);
    let mut bi = u32::new(0xffff_ffff_i64);
    let mut i = start + unit;
    while i < end {
        let v = logits[(token * rows + i) as usize];
        // `v == v`: not NaN. Units scan upwards, so a tie keeps the earlier index.
        if v == v && (bi == none || v > bv) {
            bv = v;
            bi = i;
        }
        i += CUBE_DIM;
    }
    values[unit as usize] = bv;
    indices[unit as usize] = bi;
    sync_cube();
    let mut stride = CUBE_DIM / 2;
    while stride > 0 {
        if unit < stride {
            let pv = values[(unit + stride) as usize];
            let pi = indices[(unit + stride) as usize];
            let ov = values[unit as usize];
            let oi = indices[unit as usize];
            if pi != none && (oi == none || pv > ov || (pv == ov && pi < oi)) {
                values[unit as usize] = pv;
                indices[unit as usize] = pi;
            }
        }
        sync_cube();
        stride /= 2;
    }
    if unit == 0u32 {
        let at = ((token * total_blocks + block_offset + b) * 2u32) as usize;
        let index = indices[0];
        best[at] = values[0];
        best[at + 1] = select(
            index == none,
            f32::new(-1.0_f32),
            f32::cast_from(first_row + index),
        );
    }
}
