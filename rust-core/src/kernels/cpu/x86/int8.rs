//! x86_64 int8-activation decode kernels (see `kernels::cpu::int8`): per 32-block, the weight
//! codes as 32 bytes times the token's 32 rounded activations, summed in i32 lanes of four
//! products each, then converted and scaled in f32 like the exact kernels' blocks (the same
//! `sum_blocks` loop, prefetch and row streaming).
//!
//! Q4_0, Q5_0, Q4_K and Q6_K codes are unsigned (`w = d·(code − k)`), the operand order both
//! `vpmaddubsw` and `vpdpbusd` want; the `−k·Σq_x` term comes precomputed per 16 activations
//! as the i32 accumulator's starting value (`XTok::init`). Q8_0 codes are signed: the usual
//! sign transfer (`|w|` times `x·sign(w)`). `vpmaddubsw` saturates at 2^15 per pair of
//! products; the largest pair here is 2·128·127 (Q8_0) < 2^15.
//!
//! Two levels from one macro: AVX2 (`vpmaddubsw` + `vpmaddwd`) and AVX-512 VNNI at 256 bits
//! (`vpdpbusd`, which also accumulates onto the offset term). Callers guarantee the features.

use std::arch::x86_64::*;

use super::{f16_at, fifth_bits, nibbles, prefetch_ahead, q6_k_codes, w256};
use crate::kernels::cpu::int8::{DotKernels, XTok, dot_levels};
use crate::kernels::cpu::portable::scale_min_k4;

/// `init + Σ a·b` per four bytes, `a` unsigned and `b` signed.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_maddubs(init: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(a, b);
    _mm256_add_epi32(init, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// As [`dot_maddubs`], one instruction.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
#[inline]
fn dot_vnni(init: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(init, a, b)
}

macro_rules! int8_kernels {
    ($feat:literal, $dot:ident) => {
        sum_blocks_fn!($feat, w256);

        /// Block `i` of the token: its 32 activations, and the integer dot with unsigned codes
        /// `w` (offset term included) as f32 lanes.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn dot_codes(x: XTok<'_>, i: usize, w: __m256i) -> __m256 {
            unsafe {
                let xq = _mm256_loadu_si256(x.q.as_ptr().add(32 * i).cast());
                let init = _mm256_loadu_si256(x.init.as_ptr().add(8 * i).cast());
                _mm256_cvtepi32_ps($dot(init, w, xq))
            }
        }

        /// `out[r]` for the rows of a format with 32-element blocks of `block_bytes` bytes and
        /// an f16 scale first: `dot(block, i)` is block `i`'s integer dot with the token as f32
        /// lanes, scaled by `d·d_x`.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn rows_32(
            rows: &[u8],
            stride: usize,
            x: XTok<'_>,
            out: &mut [f32],
            block_bytes: usize,
            dot: impl Fn(*const u8, usize) -> __m256,
        ) {
            let blocks = x.step.len();
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 32 * blocks);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let block = |i: usize| {
                        let b = row.add(block_bytes * i);
                        (dot(b, i), f16_at(b) * *x.step.get_unchecked(i))
                    };
                    *o = sum_blocks(row, block_bytes, blocks, block);
                }
            }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q4_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            unsafe {
                rows_32(rows, stride, x, out, 18, |b, i| {
                    dot_codes(x, i, nibbles(_mm_loadu_si128(b.add(2).cast())))
                })
            }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q5_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let fifth = _mm256_set1_epi8(0x10);
            unsafe {
                rows_32(rows, stride, x, out, 22, |b, i| {
                    let nib = nibbles(_mm_loadu_si128(b.add(6).cast()));
                    let w = _mm256_or_si256(nib, _mm256_and_si256(fifth_bits(b.add(2)), fifth));
                    dot_codes(x, i, w)
                })
            }
        }

        /// Signed codes: `|w|` times `x·sign(w)`.
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q8_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            unsafe {
                rows_32(rows, stride, x, out, 34, |b, i| {
                    let w = _mm256_loadu_si256(b.add(2).cast());
                    let xq = _mm256_loadu_si256(x.q.as_ptr().add(32 * i).cast());
                    let zero = _mm256_setzero_si256();
                    let dot = $dot(zero, _mm256_abs_epi8(w), _mm256_sign_epi8(xq, w));
                    _mm256_cvtepi32_ps(dot)
                })
            }
        }

        /// Per sub-block `d·sc·d_x·Σ q·q_x`, minus `Σ dmin·m·Σx` with the exact block sums.
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q4_k(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len() / 8;
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 256 * blocks);
            let m4 = _mm256_set1_epi8(0x0F);
            q4_k_rows!(
                w256,
                rows,
                stride,
                blocks,
                out,
                |acc, mins, i, c, qs, sm| {
                    let q = _mm256_loadu_si256(qs.cast());
                    let j = 8 * i + 2 * c;
                    let s1 = dot_codes(x, j, _mm256_and_si256(q, m4));
                    let s2 = dot_codes(x, j + 1, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
                    let (dx1, dx2) = (*x.step.get_unchecked(j), *x.step.get_unchecked(j + 1));
                    acc[0] = w256::fma_scalar(acc[0], s1, sm[0].0 * dx1);
                    acc[1] = w256::fma_scalar(acc[1], s2, sm[1].0 * dx2);
                    mins +=
                        sm[0].1 * *x.sum.get_unchecked(j) + sm[1].1 * *x.sum.get_unchecked(j + 1);
                }
            );
        }

        /// Codes 0..63 (offset 32); one scale per 16 elements, so the dot's lanes 0–3 and
        /// 4–7 take different factors.
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q6_k(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len() / 8;
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 256 * blocks);
            q6_k_rows!(
                w256,
                rows,
                stride,
                blocks,
                out,
                |acc, i, half, g, w, d, sc| {
                    let j = 8 * i + 4 * half + g;
                    let dd = d * *x.step.get_unchecked(j);
                    let (sa, sb) = (*sc.add(2 * g), *sc.add(2 * g + 1));
                    let s = _mm256_set_m128(
                        _mm_set1_ps(dd * f32::from(sb)),
                        _mm_set1_ps(dd * f32::from(sa)),
                    );
                    let a = &mut acc[g % 2];
                    *a = _mm256_fmadd_ps(dot_codes(x, j, w), s, *a);
                }
            );
        }
    };
}

dot_levels!(int8_kernels:
    avx2("avx2,fma,f16c", dot_maddubs) => AVX2,
    vnni("avx2,fma,f16c,avx512f,avx512vl,avx512vnni", dot_vnni) => VNNI
);
