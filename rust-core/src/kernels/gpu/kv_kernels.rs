//! The KV cache's kernels: rows encoded as the CPU codec's bytes (`kernels::kv`) on the
//! device, after a key's norm and RoPE or a value's norm, and attention that reads those rows
//! directly (decoded on load), for every KV type. The host side is `kv.rs`.

use cubecl::prelude::*;

use super::kernels::{cube_reduce, inverse_rms};

/// KV element kinds of [`encoded_attention`] and [`encode_kv_rows`] (comptime): a row is the CPU
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

/// Row `base..base + d` of `x` into `out`: RMS-normed when `normed` (times `norm_w` when
/// `weighted`), rotated by RoPE row `token` of `cos`, `sin` `[tokens, d/2]` when `roped`, with
/// [`rms_norm_rows`](super::kernels::rms_norm_rows) /
/// [`rms_norm_rope_rows`](super::kernels::rms_norm_rope_rows)'s arithmetic (the same values);
/// zeros where not `live`. Every unit reaches every barrier; `out` is complete on return.
#[cube]
#[allow(clippy::too_many_arguments)]
fn prepare_row(
    x: &[f32],
    base: u32,
    norm_w: &[f32],
    cos: &[f32],
    sin: &[f32],
    token: u32,
    eps: f32,
    live: bool,
    out: &mut Shared<[f32]>,
    #[comptime] normed: bool,
    #[comptime] weighted: bool,
    #[comptime] roped: bool,
    #[comptime] d: usize,
    #[comptime] cube_size: usize,
) {
    let unit = UNIT_POS;
    let mut inv = f32::new(1.0_f32);
    if comptime!(normed) {
        inv = inverse_rms(x, base, comptime!(d as u32), eps, live, cube_size);
    }
    if comptime!(roped) {
        let half = comptime!((d / 2) as u32);
        let mut j = unit;
        while j < half {
            let mut x1 = f32::new(0.0_f32);
            let mut x2 = f32::new(0.0_f32);
            let mut c = f32::new(1.0_f32);
            let mut s = f32::new(0.0_f32);
            if live {
                x1 = x[(base + j) as usize];
                x2 = x[(base + j + half) as usize];
                if comptime!(normed) {
                    x1 *= inv;
                    x2 *= inv;
                }
                if comptime!(weighted) {
                    x1 *= norm_w[j as usize];
                    x2 *= norm_w[(j + half) as usize];
                }
                c = cos[(token * half + j) as usize];
                s = sin[(token * half + j) as usize];
            }
            out[j as usize] = x1 * c - x2 * s;
            out[(j + half) as usize] = x2 * c + x1 * s;
            j += CUBE_DIM;
        }
    } else {
        let mut i = unit;
        while i < comptime!(d as u32) {
            let mut v = f32::new(0.0_f32);
            if live {
                v = x[(base + i) as usize];
                if comptime!(normed) {
                    v *= inv;
                }
                if comptime!(weighted) {
                    v *= norm_w[i as usize];
                }
            }
            out[i as usize] = v;
            i += CUBE_DIM;
        }
    }
    sync_cube();
}

/// f32 rows `[rows, d]` (row `r` is token `r % tokens` of KV head `r / tokens`) → encoded rows
/// of any kind [`KV_F32`] … [`KV_TQ`] written into slots `first_slot..first_slot + tokens` of a
/// plane `[kv_heads, slots, words_per_row]`, one cube a row. Each row is first prepared in
/// shared memory: RMS-normed when `normed` (times `norm_w` when `weighted`: a key's norm; a
/// value's has no weight), rotated by the NeoX RoPE tables `cos`, `sin` `[tokens, d/2]` when
/// `roped` ([`prepare_row`]: the separate kernels' arithmetic, so the bytes are those of their
/// output encoded; one dispatch a plane where three were).
///
/// Encoding repeats the CPU codec's arithmetic step for step (`KvCodec::encode`), so the bytes
/// are the codec's:
///
/// - f32: the value's bits; f16: round to nearest even as `half::f16::from_f32` (two halves a
///   word, the first in the low bits).
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
pub fn encode_kv_rows(
    x: &[f32],
    norm_w: &[f32],
    cos: &[f32],
    sin: &[f32],
    signs: &[f32],
    levels: &[f32],
    out: &mut [u32],
    rows: u32,
    tokens: u32,
    words_per_row: u32,
    slots: u32,
    first_slot: u32,
    eps: f32,
    hadamard_scale: f32,
    #[comptime] normed: bool,
    #[comptime] weighted: bool,
    #[comptime] roped: bool,
    #[comptime] kind: u32,
    #[comptime] bits: u32,
    #[comptime] d: usize,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let unit = UNIT_POS;
    // Out-of-range cubes (the grid is rounded up) still reach every barrier.
    let live = row < rows;
    let base = row * comptime!(d as u32);

    // The prepared row.
    let mut values = Shared::<[f32]>::new_slice(d);
    prepare_row(
        x,
        base,
        norm_w,
        cos,
        sin,
        row % tokens,
        eps,
        live,
        &mut values,
        normed,
        weighted,
        roped,
        d,
        cube_size,
    );

    // A row's bytes (q8_0: 34 a block of 32, the last block padded with zeros) or codebook
    // indices (TurboQuant).
    let mut codes = Shared::<[u32]>::new_slice(comptime!(d.div_ceil(32) * 34));
    let mut y = Shared::<[f32]>::new_slice(d);
    // TurboQuant's norm, and its stored scale as f16 bits.
    let mut norm_at = Shared::<[f32]>::new_slice(1usize);
    let mut half_scale = Shared::<[u32]>::new_slice(1usize);

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
            for i in 0..n {
                let a = values[(b * 32u32 + i) as usize].abs();
                amax = select(a > amax, a, amax);
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
                if i < n {
                    t = values[(b * 32u32 + i) as usize] * inv;
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
            for i in 0..d {
                let v = values[i];
                sum += v * v;
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
                v = values[i as usize] / norm * signs[(head * comptime!(d as u32) + i) as usize];
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

    // Pack: word w holds the value's bits (f32), halves 2w and 2w + 1 (f16), bytes 4w..4w+4
    // (q8_0), or bits 32w..32w+32 of [f16 scale | indices LSB first] (TurboQuant); the
    // padding after the row's last byte stays zero.
    let mut w = unit;
    while w < words_per_row {
        let mut word = 0u32;
        if comptime!(kind == KV_F32) {
            word = u32::reinterpret(values[w as usize]);
        }
        if comptime!(kind == KV_F16) {
            let i = 2u32 * w;
            word = f32_to_half(u32::reinterpret(values[i as usize]));
            if i + 1u32 < comptime!(d as u32) {
                word |= f32_to_half(u32::reinterpret(values[(i + 1u32) as usize])) << 16;
            }
        }
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
    q_norm: &[f32],
    cos: &[f32],
    sin: &[f32],
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
    eps: f32,
    #[comptime] prep_q: bool,
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

    // The query row, with `prep_q` RMS-normed with weight `q_norm` and rotated by RoPE
    // (tables `[tokens, head_dim/2]`) as `rms_norm_rope_rows` does it: one dispatch a layer
    // less, the same values.
    let mut qs = Shared::<[f32]>::new_slice(head_dim);
    prepare_row(
        q,
        q_base as u32,
        q_norm,
        cos,
        sin,
        token,
        eps,
        true,
        &mut qs,
        prep_q,
        prep_q,
        prep_q,
        head_dim,
        cube_size,
    );

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
                dot += qs[i] * kv_element(k, row, i as u32, k_levels, k_kind, k_bits);
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
