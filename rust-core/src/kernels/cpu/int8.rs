//! Opt-in prefill products with 8-bit activations ([`ActivationPrecision::Int8`]).
//!
//! The exact path multiplies every dequantized weight with the f32 activation (16 products per
//! 512-bit FMA). Here each token's activations are rounded to 8 bits per 32-block with an f32
//! scale (llama.cpp's numerics class; its Q8_0 keeps the scale in f16) and the weights keep
//! their 8-bit integer values, so one VNNI `vpdpbusd` does 64 products. Weight scales, Q4_K
//! minimums (against the exact f32 block sums of `x`) and the activation scale are applied
//! per 32-block in f32.
//!
//! Error per output, relative to the exact product: at most `Σ_blocks |s_w|·(d_x/2)·Σ|q_w|`
//! (each activation moves by at most half its block's step `d_x = max|x|/127`); the tests
//! assert that bound against an f64 reference.
//!
//! Formats: Q4_0, Q5_0, Q8_0 and Q4_K (32-element blocks with one scale); others stay exact. Kernels:
//! AVX-512 VNNI, and a portable one that defines the packing (tests; CPUs without VNNI keep
//! the exact path, which is faster there than integer code without dot instructions).

use super::portable::scale_min_k4;
use super::{OutPtr, QuantMatrix, TILE_ROWS, rows_per_task, write_tile};
use crate::weights::GgmlType;

pub use crate::device::ActivationPrecision;

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

/// What a request for `precision` gets on this CPU (`Int8` needs [`fast_kernel`]).
pub fn effective(precision: ActivationPrecision) -> ActivationPrecision {
    match precision {
        ActivationPrecision::Int8 if fast_kernel().is_some() => ActivationPrecision::Int8,
        _ => ActivationPrecision::F32,
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

/// Four bytes `q − k` (as i8) for four values `q` in `[0, 31]` (one per byte), `k ≤ 16`:
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
/// 4g..4g+4 in word g), the scale and the minimum (`w = scale·q − min`). `col` is the block's
/// first column.
#[inline(always)]
fn row_block(dtype: GgmlType, row: &[u8], col: usize) -> ([u32; 8], f32, f32) {
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
            (q, f16_at(b, 0), 0.0)
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
            (q, f16_at(b, 0), 0.0)
        }
        GgmlType::Q8_0 => {
            let b = &row[col / 32 * 34..][..34];
            for (g, o) in q.iter_mut().enumerate() {
                *o = word(b, 2 + 4 * g);
            }
            (q, f16_at(b, 0), 0.0)
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
            (q, f16_at(b, 0) * f32::from(sc), f16_at(b, 2) * f32::from(m))
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
            p.scale[b * NR + j] = scale;
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
