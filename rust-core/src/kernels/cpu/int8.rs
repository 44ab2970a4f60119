//! Products with 8-bit activations ([`ActivationPrecision::Int8`]), opt-in per phase
//! ([`Activations`]): prefill (many tokens) and decode (one token, or the few of a speculative
//! verify pass).
//!
//! The exact path multiplies every dequantized weight with the f32 activation (16 products per
//! 512-bit FMA). Here each token's activations are rounded to 8 bits per 32-block with an f32
//! scale (llama.cpp's numerics class; its Q8_0 keeps the scale in f16) and the weights keep
//! their integer values, so one VNNI `vpdpbusd` does 64 products (32 at 256 bits). Weight
//! scales, Q4_K minimums (against the exact f32 block sums of `x`) and the activation scale
//! are applied per 32-block (Q6_K: per 16 elements) in f32.
//!
//! Error per output, relative to the exact product: at most `Σ_blocks |s_w|·(d_x/2)·Σ|q_w|`
//! (each activation moves by at most half its block's step `d_x = max|x|/127`); the tests
//! assert that bound against an f64 reference.
//!
//! - **Prefill** ([`matmul`]): Q4_0, Q5_0, Q8_0 and Q4_K, packed into panels per call. Kernels:
//!   AVX-512 VNNI, aarch64 i8mm (`usmmla`), and a portable one that defines the packing (tests;
//!   CPUs without either keep the exact path, which is faster there than integer code without
//!   dot instructions).
//! - **Decode** ([`matvec_with`]): Q4_0, Q5_0, Q8_0, Q4_K and Q6_K straight from the mapped
//!   blocks (no repacking), streamed like the exact decode kernels. Levels ([`DotIsa`]): AVX2
//!   (`maddubs`), AVX-512 VNNI at 256 bits (`x86::int8`), aarch64 Advanced SIMD (`smull`) and
//!   dotprod (`sdot`; `neon::int8`), and the portable reference.

use super::portable::scale_min_k4;
use super::{OutPtr, QuantMatrix, TILE_ROWS, rows_per_task, write_tile};
use crate::weights::GgmlType;

pub use crate::device::{ActivationPrecision, Activations};

/// 1.5·2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;

/// Output rows of one packed panel.
const NR: usize = 16;
/// Tokens per micro-kernel call.
pub const MR: usize = 8;

/// Whether the int8 path handles `dtype`.
pub fn supports(dtype: GgmlType) -> bool {
    matches!(
        dtype,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q4_K
    )
}

/// What a request gets on this CPU: `Int8` prefill needs [`fast_kernel`], `Int8` decode a
/// [`DotIsa::fast`] level; otherwise that phase runs exact.
pub fn effective(requested: Activations) -> Activations {
    let pick = |p: ActivationPrecision, fast: bool| {
        if p == ActivationPrecision::Int8 && fast {
            ActivationPrecision::Int8
        } else {
            ActivationPrecision::Exact
        }
    };
    Activations {
        prefill: pick(requested.prefill, fast_kernel().is_some()),
        decode: pick(requested.decode, DotIsa::fast().is_some()),
    }
}

/// The int8 micro-kernel this CPU runs fast, if any.
pub fn fast_kernel() -> Option<Micro> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
    {
        return Some(vnni::micro);
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("i8mm") {
        return Some(i8mm::micro);
    }
    None
}

/// Each token's activations as 8-bit integers per 32-block.
pub struct QuantizedX {
    /// `q + 128` (so the VNNI kernel can use them as its unsigned operand), `[tokens, cols]`.
    pub biased: Vec<u8>,
    /// Block steps `d_x`, `[tokens, cols / 32]`.
    pub step: Vec<f32>,
    /// Exact f32 block sums of `x` (Q4_K's minimum term), `[tokens, cols / 32]`.
    pub sum: Vec<f32>,
}

/// `x` `[tokens, cols]` (cols a multiple of 32) rounded per 32-block: `q = round(x / d)` (ties
/// to even), `d = max|x| / 127`.
pub fn quantize_x(x: &[f32]) -> QuantizedX {
    let blocks = x.len() / 32;
    let mut q = QuantizedX {
        biased: vec![0; blocks * 32],
        step: vec![0.0; blocks],
        sum: vec![0.0; blocks],
    };
    for (b, xs) in x.as_chunks::<32>().0.iter().enumerate() {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (o, &v) in q.biased[32 * b..32 * b + 32].iter_mut().zip(xs) {
            // Round to nearest (ties to even) by the 1.5·2^23 trick: `f32::round` is a libm
            // call without SSE4.1, and this loop then vectorises.
            let r = (v * inv + ROUND) - ROUND;
            *o = (r.clamp(-127.0, 127.0) as i32 + 128) as u8;
        }
        q.step[b] = d;
        q.sum[b] = xs.iter().sum();
    }
    q
}

/// One panel of [`NR`] weight rows over `nb` 32-blocks: integer weights laid out
/// `[block][group of 4 columns][row][4]` (one 64-byte vector per block and group), with each
/// (block, row)'s scale, minimum, and `128·Σq` (what the +128 bias of the activations adds).
pub struct Panel {
    w: Vec<i8>,
    scale: Vec<f32>,
    min: Vec<f32>,
    bias: Vec<i32>,
    has_min: bool,
}

impl Panel {
    fn with_blocks(nb: usize) -> Panel {
        Panel {
            w: vec![0; nb * 32 * NR],
            scale: vec![0.0; nb * NR],
            min: vec![0.0; nb * NR],
            bias: vec![0; nb * NR],
            has_min: false,
        }
    }
}

/// Four bytes `q − k` (as i8) for four values `q` in `[0, 127]` (one per byte), `k ≤ 128`:
/// per-byte subtraction without borrows between bytes (the set top bits absorb them).
#[inline(always)]
fn sub_bytes(values: u32, k: u32) -> u32 {
    ((values | 0x8080_8080) - k * 0x0101_0101) ^ 0x8080_8080
}

/// Sum of four signed bytes.
#[inline(always)]
fn byte_sum(word: u32) -> i32 {
    word.to_le_bytes().iter().map(|&b| i32::from(b as i8)).sum()
}

/// One 32-element block of a weight row as eight little-endian words of four i8 (elements
/// 4g..4g+4 in word g), the scales of elements 0..16 and 16..32 (equal except in Q6_K) and
/// the minimum (`w = scale·q − min`). `col` is the block's first column.
#[inline(always)]
fn row_block(dtype: GgmlType, row: &[u8], col: usize) -> ([u32; 8], [f32; 2], f32) {
    let f16_at = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    let word = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut q = [0u32; 8];
    match dtype {
        GgmlType::Q4_0 => {
            // Byte i holds element i (low nibble) and i + 16 (high nibble).
            let b = &row[col / 32 * 18..][..18];
            for g in 0..4 {
                let w = word(b, 2 + 4 * g);
                q[g] = sub_bytes(w & 0x0F0F_0F0F, 8);
                q[g + 4] = sub_bytes((w >> 4) & 0x0F0F_0F0F, 8);
            }
            (q, [f16_at(b, 0); 2], 0.0)
        }
        GgmlType::Q5_0 => {
            // As Q4_0, plus a fifth bit per element in `qh` (bit i for element i); q − 16.
            let b = &row[col / 32 * 22..][..22];
            let qh = word(b, 2);
            // Bit i of `bits` spread to bit 4 of byte i % 4 of the word for elements i..i+4.
            let fifth = |bits: u32| {
                (bits & 1) << 4 | (bits & 2) << 11 | (bits & 4) << 18 | (bits & 8) << 25
            };
            for g in 0..4 {
                let w = word(b, 6 + 4 * g);
                let lo = (w & 0x0F0F_0F0F) | fifth(qh >> (4 * g));
                let hi = ((w >> 4) & 0x0F0F_0F0F) | fifth(qh >> (16 + 4 * g));
                q[g] = sub_bytes(lo, 16);
                q[g + 4] = sub_bytes(hi, 16);
            }
            (q, [f16_at(b, 0); 2], 0.0)
        }
        GgmlType::Q8_0 => {
            let b = &row[col / 32 * 34..][..34];
            for (g, o) in q.iter_mut().enumerate() {
                *o = word(b, 2 + 4 * g);
            }
            (q, [f16_at(b, 0); 2], 0.0)
        }
        GgmlType::Q4_K => {
            // Sub-blocks 2c and 2c + 1 share 32 bytes: low nibbles, then high nibbles.
            let b = &row[col / 256 * 144..][..144];
            let sub = col % 256 / 32;
            let (sc, m) = scale_min_k4(sub, &b[4..16]);
            let shift = 4 * (sub % 2) as u32;
            for (g, o) in q.iter_mut().enumerate() {
                *o = (word(b, 16 + 32 * (sub / 2) + 4 * g) >> shift) & 0x0F0F_0F0F;
            }
            (
                q,
                [f16_at(b, 0) * f32::from(sc); 2],
                f16_at(b, 2) * f32::from(m),
            )
        }
        GgmlType::Q6_K => {
            // Half h (128 elements) of a block: group g of 32 takes the low (g < 2) or high
            // nibbles of ql[64h + 32(g % 2)..], two bits of qh[128 + 32h..] at 2g, minus 32;
            // one i8 scale per 16 elements.
            let b = &row[col / 256 * 210..][..210];
            let (h, g) = (col % 256 / 128, col % 128 / 32);
            let (nib, top) = (4 * (g / 2) as u32, 2 * g as u32);
            for (k, o) in q.iter_mut().enumerate() {
                let lo = (word(b, 64 * h + 32 * (g % 2) + 4 * k) >> nib) & 0x0F0F_0F0F;
                let hi = ((word(b, 128 + 32 * h + 4 * k) >> top) & 0x0303_0303) << 4;
                *o = sub_bytes(lo | hi, 32);
            }
            let d = f16_at(b, 208);
            let sc = |i: usize| d * f32::from(b[192 + 8 * h + 2 * g + i] as i8);
            (q, [sc(0), sc(1)], 0.0)
        }
        other => unreachable!("int8 packing of {other} (checked by `supports`)"),
    }
}

/// Packs rows `r0..r0 + n` (n ≤ NR; missing rows are zero) over columns `k0..k0 + kc`.
fn pack_panel(w: QuantMatrix<'_>, r0: usize, n: usize, k0: usize, kc: usize, p: &mut Panel) {
    let stride = w.stride();
    let nb = kc / 32;
    if n < NR {
        p.w[..nb * 32 * NR].fill(0);
        p.scale[..nb * NR].fill(0.0);
        p.min[..nb * NR].fill(0.0);
        p.bias[..nb * NR].fill(0);
    }
    p.has_min = w.dtype == GgmlType::Q4_K;
    for j in 0..n {
        let row = &w.bytes[(r0 + j) * stride..(r0 + j + 1) * stride];
        for b in 0..nb {
            let (q, scale, min) = row_block(w.dtype, row, k0 + 32 * b);
            for (g, word) in q.iter().enumerate() {
                let at = ((b * 8 + g) * NR + j) * 4;
                p.w[at..at + 4].copy_from_slice(&(*word as i32).to_le_bytes().map(|v| v as i8));
            }
            p.scale[b * NR + j] = scale[0];
            p.min[b * NR + j] = min;
            p.bias[b * NR + j] = 128 * q.iter().map(|&w| byte_sum(w)).sum::<i32>();
        }
    }
}

/// `c[t][j] = Σ_b scale[b][j]·d_x[t][b]·Σ_i q_w·q_x − min[b][j]·Σx[t][b]` for `t < mr` over a
/// panel of `nb` blocks; `x` is the tokens' [`QuantizedX`] starting at the panel's first block.
pub type Micro =
    unsafe fn(nb: usize, x: XRef<'_>, mr: usize, panel: &Panel, c: &mut [[f32; NR]; MR]);

/// Quantized activations of `mr` tokens from one block on.
#[derive(Clone, Copy)]
pub struct XRef<'a> {
    biased: &'a [u8],
    step: &'a [f32],
    sum: &'a [f32],
    /// Blocks per token (the row stride of `step`/`sum`; 32× that of `biased`).
    blocks: usize,
}

/// The reference micro-kernel: integer dots in i32, scales in f32, as the VNNI one.
pub fn micro_portable(nb: usize, x: XRef<'_>, mr: usize, p: &Panel, c: &mut [[f32; NR]; MR]) {
    for (t, ct) in c.iter_mut().enumerate().take(mr) {
        *ct = [0.0; NR];
        for b in 0..nb {
            let xb = &x.biased[(t * x.blocks + b) * 32..][..32];
            let (dx, sx) = (x.step[t * x.blocks + b], x.sum[t * x.blocks + b]);
            for (j, cj) in ct.iter_mut().enumerate() {
                let mut dot = 0i32;
                for g in 0..8 {
                    let w = &p.w[((b * 8 + g) * NR + j) * 4..][..4];
                    for i in 0..4 {
                        dot += i32::from(w[i]) * (i32::from(xb[4 * g + i]) - 128);
                    }
                }
                *cj += dot as f32 * (p.scale[b * NR + j] * dx) - p.min[b * NR + j] * sx;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{MR, NR, Panel, XRef};

    /// Safety: the CPU has AVX-512 F/BW/VNNI (see `fast_kernel`).
    pub unsafe fn micro(nb: usize, x: XRef<'_>, mr: usize, p: &Panel, c: &mut [[f32; NR]; MR]) {
        unsafe {
            match (mr, p.has_min) {
                (8, false) => micro_n::<8, false>(nb, x, p, c),
                (8, true) => micro_n::<8, true>(nb, x, p, c),
                (m, false) => dispatch_small::<false>(m, nb, x, p, c),
                (m, true) => dispatch_small::<true>(m, nb, x, p, c),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dispatch_small<const MIN: bool>(
        m: usize,
        nb: usize,
        x: XRef<'_>,
        p: &Panel,
        c: &mut [[f32; NR]; MR],
    ) {
        unsafe {
            match m {
                1 => micro_n::<1, MIN>(nb, x, p, c),
                2 => micro_n::<2, MIN>(nb, x, p, c),
                3 => micro_n::<3, MIN>(nb, x, p, c),
                4 => micro_n::<4, MIN>(nb, x, p, c),
                5 => micro_n::<5, MIN>(nb, x, p, c),
                6 => micro_n::<6, MIN>(nb, x, p, c),
                _ => micro_n::<7, MIN>(nb, x, p, c),
            }
        }
    }

    /// `M` tokens × 16 rows: per block, 8 `vpdpbusd` per token into an i32 accumulator (the
    /// token's 4 activations of a group broadcast against 16 rows × 4 weights), then one
    /// conversion and two FMAs per token into its f32 accumulator.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn micro_n<const M: usize, const MIN: bool>(
        nb: usize,
        x: XRef<'_>,
        p: &Panel,
        c: &mut [[f32; NR]; MR],
    ) {
        debug_assert!(p.w.len() >= nb * 32 * NR && x.step.len() >= (M - 1) * x.blocks + nb);
        unsafe {
            let mut acc = [_mm512_setzero_ps(); M];
            let xb = x.biased.as_ptr();
            for b in 0..nb {
                let mut dots = [_mm512_setzero_si512(); M];
                for g in 0..8 {
                    let w = _mm512_loadu_si512(p.w.as_ptr().add((b * 8 + g) * NR * 4).cast());
                    for (t, d) in dots.iter_mut().enumerate() {
                        let four = (xb.add((t * x.blocks + b) * 32 + 4 * g) as *const i32)
                            .read_unaligned();
                        *d = _mm512_dpbusd_epi32(*d, _mm512_set1_epi32(four), w);
                    }
                }
                let bias = _mm512_loadu_si512(p.bias.as_ptr().add(b * NR).cast());
                let scale = _mm512_loadu_ps(p.scale.as_ptr().add(b * NR));
                let min = _mm512_loadu_ps(p.min.as_ptr().add(b * NR));
                for (t, a) in acc.iter_mut().enumerate() {
                    let i = t * x.blocks + b;
                    let dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(dots[t], bias));
                    let s = _mm512_mul_ps(scale, _mm512_set1_ps(*x.step.get_unchecked(i)));
                    *a = _mm512_fmadd_ps(dot, s, *a);
                    if MIN {
                        *a = _mm512_fnmadd_ps(min, _mm512_set1_ps(*x.sum.get_unchecked(i)), *a);
                    }
                }
            }
            for (a, ct) in acc.iter().zip(c.iter_mut()) {
                _mm512_storeu_ps(ct.as_mut_ptr(), *a);
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod i8mm {
    use std::arch::aarch64::*;

    use super::super::neon::int8::usmmla;
    use super::{MR, NR, Panel, XRef};

    /// Safety: the CPU has i8mm (see `fast_kernel`).
    pub unsafe fn micro(nb: usize, x: XRef<'_>, mr: usize, p: &Panel, c: &mut [[f32; NR]; MR]) {
        debug_assert!(p.w.len() >= nb * 32 * NR && x.step.len() >= (mr - 1) * x.blocks + nb);
        // SAFETY: guaranteed by the caller.
        unsafe { micro_i8mm(nb, x, mr, p, c) }
    }

    /// 2×2 tiles of `usmmla` (two tokens' 8 biased activations by two rows' 8 weights, the
    /// activations' +128 removed with the panel's `bias` per block as in the VNNI kernel),
    /// four row pairs × two token pairs at a time: 8 i32 and 8 f32 accumulators. The panel
    /// keeps each row's weights in groups of 4 (the VNNI layout); zipping the 32-bit words of
    /// groups 2h and 2h + 1 of four rows gives two rows' 8 consecutive weights. An odd last
    /// token is paired with itself and its copy discarded.
    #[target_feature(enable = "neon,i8mm")]
    unsafe fn micro_i8mm(nb: usize, x: XRef<'_>, mr: usize, p: &Panel, c: &mut [[f32; NR]; MR]) {
        // Tokens of pair `tp` (the second clamped to the last token).
        let tokens = |tp: usize| (2 * tp, (2 * tp + 1).min(mr - 1));
        let pairs = mr.div_ceil(2);
        for tp0 in (0..pairs).step_by(2) {
            let np = (pairs - tp0).min(2);
            for r8 in (0..NR).step_by(8) {
                let mut acc = [[vdupq_n_f32(0.0); 4]; 2];
                for b in 0..nb {
                    let mut dots = [[vdupq_n_s32(0); 4]; 2];
                    for h in 0..4 {
                        // SAFETY: groups 2h, 2h + 1 of rows r8..r8 + 8 of block b lie in the
                        // panel (`p.w.len() ≥ nb·32·NR`).
                        let rows = unsafe {
                            let w =
                                p.w.as_ptr()
                                    .add(((b * 8 + 2 * h) * NR + r8) * 4)
                                    .cast::<i32>();
                            let g = |at: usize| vld1q_s32(w.add(at));
                            let (e0, e1) = (g(0), g(NR));
                            let (f0, f1) = (g(4), g(NR + 4));
                            [
                                vzip1q_s32(e0, e1),
                                vzip2q_s32(e0, e1),
                                vzip1q_s32(f0, f1),
                                vzip2q_s32(f0, f1),
                            ]
                        };
                        for (tp, d) in dots.iter_mut().enumerate().take(np) {
                            let (t0, t1) = tokens(tp0 + tp);
                            // SAFETY: tokens t0, t1 < mr hold `x.blocks ≥ nb` blocks of 32.
                            let a = unsafe {
                                let at = |t: usize| {
                                    x.biased.as_ptr().add((t * x.blocks + b) * 32 + 8 * h)
                                };
                                vcombine_u8(vld1_u8(at(t0)), vld1_u8(at(t1)))
                            };
                            for (d, &w) in d.iter_mut().zip(&rows) {
                                *d = usmmla(*d, a, vreinterpretq_s8_s32(w));
                            }
                        }
                    }
                    for (tp, (a, d)) in acc.iter_mut().zip(&dots).enumerate().take(np) {
                        let (t0, t1) = tokens(tp0 + tp);
                        let pair = |v: &[f32], t0: usize, t1: usize| {
                            vcombine_f32(vdup_n_f32(v[t0]), vdup_n_f32(v[t1]))
                        };
                        let (i0, i1) = (t0 * x.blocks + b, t1 * x.blocks + b);
                        let step = pair(x.step, i0, i1);
                        for (rp, (a, &d)) in a.iter_mut().zip(d).enumerate() {
                            let j = b * NR + r8 + 2 * rp;
                            // SAFETY: rows j, j + 1 of block b lie in the panel's per-row
                            // vectors (`nb·NR` long).
                            let (scale, min, bias) = unsafe {
                                let two_f = |v: &[f32]| {
                                    let l = vld1_f32(v.as_ptr().add(j));
                                    vcombine_f32(l, l)
                                };
                                let l = vld1_s32(p.bias.as_ptr().add(j));
                                (two_f(&p.scale), two_f(&p.min), vcombine_s32(l, l))
                            };
                            let dot = vcvtq_f32_s32(vsubq_s32(d, bias));
                            *a = vfmaq_f32(*a, dot, vmulq_f32(scale, step));
                            if p.has_min {
                                *a = vfmsq_f32(*a, min, pair(x.sum, i0, i1));
                            }
                        }
                    }
                }
                for (tp, a) in acc.iter().enumerate().take(np) {
                    let (t0, t1) = tokens(tp0 + tp);
                    for (rp, &v) in a.iter().enumerate() {
                        let j = r8 + 2 * rp;
                        // Lanes 0, 1: token t0's rows j, j + 1; lanes 2, 3: token t1's.
                        c[t0][j..j + 2]
                            .copy_from_slice(&[vgetq_lane_f32::<0>(v), vgetq_lane_f32::<1>(v)]);
                        if t1 != t0 {
                            c[t1][j..j + 2]
                                .copy_from_slice(&[vgetq_lane_f32::<2>(v), vgetq_lane_f32::<3>(v)]);
                        }
                    }
                }
            }
        }
    }
}

/// `out = x · Wᵀ` with 8-bit activations (`w.dtype` must satisfy [`supports`], `w.cols` be a
/// multiple of 32). Overwrites `out`. Each task packs its rows over the whole inner dimension
/// once (64 bytes per column: 384 KiB for a 6144-wide row tile, in L2), then every group of
/// [`MR`] tokens runs through it with its sums in registers and writes its outputs once.
pub fn matmul(micro: Micro, x: &[f32], tokens: usize, w: QuantMatrix<'_>, out: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let xq = quantize_x(x);
    let blocks = cols / 32;
    let per_task = rows_per_task(rows, TILE_ROWS).min(TILE_ROWS);
    let dst = OutPtr(out.as_mut_ptr());
    super::pool::for_each_task(rows.div_ceil(per_task), &|task| {
        let dst = dst;
        let r0 = task * per_task;
        let n = per_task.min(rows - r0);
        let packed: Vec<Panel> = (0..n.div_ceil(NR))
            .map(|p| {
                let mut panel = Panel::with_blocks(blocks);
                pack_panel(w, r0 + p * NR, NR.min(n - p * NR), 0, cols, &mut panel);
                panel
            })
            .collect();
        let mut c = [[0.0f32; NR]; MR];
        let mut t0 = 0;
        while t0 < tokens {
            let mr = MR.min(tokens - t0);
            let b0 = t0 * blocks;
            let xr = XRef {
                biased: &xq.biased[b0 * 32..],
                step: &xq.step[b0..],
                sum: &xq.sum[b0..],
                blocks,
            };
            for (p, panel) in packed.iter().enumerate() {
                // SAFETY: `micro` is `micro_portable` or came from `fast_kernel`; the panel
                // holds `blocks` blocks and `xr` mr tokens of `blocks` blocks each.
                unsafe { micro(blocks, xr, mr, panel, &mut c) };
                // SAFETY: rows r0+p·NR.. of tokens t0.. belong to this task alone.
                unsafe {
                    write_tile(
                        dst,
                        rows,
                        t0,
                        r0 + p * NR,
                        NR.min(n - p * NR),
                        &c[..mr],
                        false,
                    )
                };
            }
            t0 += mr;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Decode: the few-token path (matvec and speculative verify) with 8-bit activations.

/// Whether the int8 decode kernels handle `dtype` (the prefill formats plus Q6_K).
pub fn supports_decode(dtype: GgmlType) -> bool {
    supports(dtype) || dtype == GgmlType::Q6_K
}

/// Instruction-set level of the int8 decode kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotIsa {
    /// Plain Rust: defines the numerics (tests); not used for inference.
    Portable,
    /// x86_64 AVX2: `vpmaddubsw` + `vpmaddwd` (32 byte products per two instructions).
    Avx2,
    /// x86_64 AVX-512 VNNI at 256 bits: one `vpdpbusd` per 32 byte products.
    AvxVnni,
    /// aarch64 Advanced SIMD (every aarch64 CPU): `smull` + `smlal2` + `sadalp` per 16 byte
    /// products.
    Neon,
    /// aarch64 dotprod (Armv8.2+ optional, Armv8.4+ mandatory: Cortex-A55/A76 on): one
    /// `sdot` per 16 byte products.
    NeonDot,
}

impl DotIsa {
    /// Every level this CPU runs, slowest first.
    pub fn available() -> Vec<DotIsa> {
        #[allow(unused_mut)]
        let mut levels = vec![DotIsa::Portable];
        #[cfg(target_arch = "x86_64")]
        if super::Isa::Avx2.is_supported() {
            levels.push(DotIsa::Avx2);
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                levels.push(DotIsa::AvxVnni);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            levels.push(DotIsa::Neon);
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                levels.push(DotIsa::NeonDot);
            }
        }
        levels
    }

    /// The fastest SIMD level this CPU runs, if any (cached): where there is none, decode
    /// stays exact (see [`effective`]).
    pub fn fast() -> Option<DotIsa> {
        static FAST: std::sync::OnceLock<Option<DotIsa>> = std::sync::OnceLock::new();
        *FAST.get_or_init(|| {
            DotIsa::available()
                .into_iter()
                .rfind(|&l| l != DotIsa::Portable)
        })
    }

    /// Whether this CPU runs `self` (cached; no allocation).
    fn is_supported(self) -> bool {
        static AVAILABLE: std::sync::OnceLock<Vec<DotIsa>> = std::sync::OnceLock::new();
        AVAILABLE.get_or_init(DotIsa::available).contains(&self)
    }

    /// Whether the level's kernels multiply unsigned weight codes and read the offset terms
    /// ([`XTok::init`]): x86's, whose byte products take one unsigned operand.
    fn reads_offsets(self) -> bool {
        matches!(self, DotIsa::Avx2 | DotIsa::AvxVnni)
    }

    fn kernel(self, dtype: GgmlType) -> RowsDot8 {
        let k: &DotKernels = match self {
            #[cfg(target_arch = "x86_64")]
            DotIsa::Avx2 => &super::x86::int8::AVX2,
            #[cfg(target_arch = "x86_64")]
            DotIsa::AvxVnni => &super::x86::int8::VNNI,
            #[cfg(target_arch = "aarch64")]
            DotIsa::Neon => &super::neon::int8::NEON,
            #[cfg(target_arch = "aarch64")]
            DotIsa::NeonDot => &super::neon::int8::NEON_DOT,
            _ => &PORTABLE,
        };
        match dtype {
            GgmlType::Q4_0 => k.q4_0,
            GgmlType::Q5_0 => k.q5_0,
            GgmlType::Q8_0 => k.q8_0,
            GgmlType::Q4_K => k.q4_k,
            GgmlType::Q6_K => k.q6_k,
            other => unreachable!("int8 decode of {other} (checked by `supports_decode`)"),
        }
    }
}

/// `out[r] = Σ_i row_r[i]·x[i]` with `x` one token's quantized activations, for the rows
/// packed back to back in `rows` (`stride` bytes each). Safety: the caller guarantees the
/// level is supported and `rows` holds `out.len()` rows covering `x`.
pub(crate) type RowsDot8 = unsafe fn(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]);

/// One level's decode kernels.
pub(crate) struct DotKernels {
    pub(crate) q4_0: RowsDot8,
    pub(crate) q5_0: RowsDot8,
    pub(crate) q8_0: RowsDot8,
    pub(crate) q4_k: RowsDot8,
    pub(crate) q6_k: RowsDot8,
}

/// Instantiates an ISA file's decode levels: for each, module `$m` running
/// `$kernels!($feat, $dot)` (which defines `rows_q4_0` … `rows_q6_k`), and their
/// [`DotKernels`] exported as `$name`.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_macros)
)]
macro_rules! dot_levels {
    ($kernels:ident: $($m:ident($feat:literal, $dot:ident) => $name:ident),*) => {
        $(
            mod $m {
                use super::*;
                $kernels!($feat, $dot);
                pub(crate) static KERNELS: DotKernels = DotKernels {
                    q4_0: rows_q4_0,
                    q5_0: rows_q5_0,
                    q8_0: rows_q8_0,
                    q4_k: rows_q4_k,
                    q6_k: rows_q6_k,
                };
            }
            pub(crate) use $m::KERNELS as $name;
        )*
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use dot_levels;

/// What the x86 kernels subtract from their weights' unsigned codes (`w = d·(code − k)`):
/// they multiply the codes as unsigned bytes and add `−k·Σq_x` per 16 activations instead.
fn unsigned_offset(dtype: GgmlType) -> i32 {
    match dtype {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        GgmlType::Q6_K => 32,
        _ => 0,
    }
}

/// All tokens' activations, rounded once per product ([`quantize_x`]'s numerics).
struct DecodeX {
    q: Vec<i8>,
    /// Per 32-block, eight i32 lanes: `−k·Σq` of elements 0..16 in lane 0 and of 16..32 in
    /// lane 4 (the integer dot's lanes 0–3 and 4–7 cover those halves), zero elsewhere; empty
    /// for levels that do not read it ([`DotIsa::reads_offsets`]).
    init: Vec<i32>,
    step: Vec<f32>,
    sum: Vec<f32>,
    blocks: usize,
}

impl DecodeX {
    fn new(x: &[f32], cols: usize, dtype: GgmlType, isa: DotIsa) -> DecodeX {
        let QuantizedX { biased, step, sum } = quantize_x(x);
        let q: Vec<i8> = biased.iter().map(|&b| (b ^ 0x80) as i8).collect();
        // Levels that do not read the offset terms get none (`token` then lends an empty
        // slice).
        let k = unsigned_offset(dtype);
        let mut init = vec![0i32; if isa.reads_offsets() { q.len() / 4 } else { 0 }];
        if k != 0 && !init.is_empty() {
            for (lanes, qs) in init.chunks_exact_mut(8).zip(q.chunks_exact(32)) {
                let half = |h: &[i8]| h.iter().map(|&v| i32::from(v)).sum::<i32>();
                lanes[0] = -k * half(&qs[..16]);
                lanes[4] = -k * half(&qs[16..]);
            }
        }
        DecodeX {
            q,
            init,
            step,
            sum,
            blocks: cols / 32,
        }
    }

    fn token(&self, t: usize) -> XTok<'_> {
        let b = t * self.blocks..(t + 1) * self.blocks;
        XTok {
            q: &self.q[32 * b.start..32 * b.end],
            init: self.init.get(8 * b.start..8 * b.end).unwrap_or(&[]),
            step: &self.step[b.clone()],
            sum: &self.sum[b],
        }
    }
}

/// One token's quantized activations (`blocks` 32-blocks): values, the offset terms (see
/// [`DecodeX`]), steps `d_x` and exact f32 block sums (Q4_K's minimum term).
#[derive(Clone, Copy)]
pub(crate) struct XTok<'a> {
    pub(crate) q: &'a [i8],
    /// Read by the x86 kernels only ([`DotIsa::reads_offsets`]).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) init: &'a [i32],
    pub(crate) step: &'a [f32],
    pub(crate) sum: &'a [f32],
}

/// The reference decode kernel: per 32-block, integer dots of each 16-element half in i32,
/// then `Σ_h dot_h·(scale_h·d_x) − min·Σx` in f32 (the SIMD kernels' factoring).
fn rows_portable(dtype: GgmlType, rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(stride)) {
        let mut acc = 0.0f32;
        for (b, xs) in x.q.as_chunks::<32>().0.iter().enumerate() {
            let (q, scale, min) = row_block(dtype, row, 32 * b);
            let mut dot = [0i32; 2];
            for (g, word) in q.iter().enumerate() {
                for (i, &w) in word.to_le_bytes().iter().enumerate() {
                    dot[g / 4] += i32::from(w as i8) * i32::from(xs[4 * g + i]);
                }
            }
            acc +=
                (dot[0] as f32 * scale[0] + dot[1] as f32 * scale[1]) * x.step[b] - min * x.sum[b];
        }
        *o = acc;
    }
}

macro_rules! portable_kernels {
    ($($name:ident: $ty:ident),*) => {
        $(unsafe fn $name(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            rows_portable(GgmlType::$ty, rows, stride, x, out)
        })*
        static PORTABLE: DotKernels = DotKernels { $($name),* };
    };
}
portable_kernels!(q4_0: Q4_0, q5_0: Q5_0, q8_0: Q8_0, q4_k: Q4_K, q6_k: Q6_K);

/// `out = x · Wᵀ` on the few-token path with 8-bit activations, on level `isa` (one of
/// [`DotIsa::available`]; `w.dtype` must satisfy [`supports_decode`]). `x` is rounded once
/// for the call; the weights stream as in the exact decode kernels (the same row blocks and
/// tasks, each block of rows dotted with every token while it is in L1), so each token's
/// product equals its own single-token call bit for bit. Overwrites `out`.
pub fn matvec_with(isa: DotIsa, x: &[f32], tokens: usize, w: QuantMatrix<'_>, out: &mut [f32]) {
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    assert!(supports_decode(w.dtype), "int8 decode of {}", w.dtype);
    if super::is_empty_product(x, tokens, w, out) {
        return;
    }
    let xq = DecodeX::new(x, w.cols, w.dtype, isa);
    let kernel = isa.kernel(w.dtype);
    let (rows, stride) = (w.rows, w.stride());
    let dst = OutPtr(out.as_mut_ptr());
    super::for_row_blocks(w, &|bytes, rb, bn| {
        let dst = dst;
        for t in 0..tokens {
            // SAFETY: rows rb..rb+bn of token t belong to this block alone and lie in `out`.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.0.add(t * rows + rb), bn) };
            // SAFETY: the level was checked above; `bytes` holds bn rows of `stride` bytes
            // encoding `cols` elements, `xq.token(t)` the token's `cols / 32` blocks.
            unsafe { kernel(bytes, stride, xq.token(t), o) }
        }
    });
}
