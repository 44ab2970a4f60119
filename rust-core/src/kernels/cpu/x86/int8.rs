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

use super::{f16_at, fifth_bits, nibbles, prefetch_ahead, w256};
use crate::kernels::cpu::int8::{DotKernels, XTok};
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

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q4_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len();
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 32 * blocks);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let block = |i: usize| {
                        let b = row.add(18 * i);
                        let w = nibbles(_mm_loadu_si128(b.add(2).cast()));
                        (dot_codes(x, i, w), f16_at(b) * *x.step.get_unchecked(i))
                    };
                    *o = sum_blocks(row, 18, blocks, block);
                }
            }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q5_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len();
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 32 * blocks);
            let fifth = _mm256_set1_epi8(0x10);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let block = |i: usize| {
                        let b = row.add(22 * i);
                        let nib = nibbles(_mm_loadu_si128(b.add(6).cast()));
                        let w = _mm256_or_si256(nib, _mm256_and_si256(fifth_bits(b.add(2)), fifth));
                        (dot_codes(x, i, w), f16_at(b) * *x.step.get_unchecked(i))
                    };
                    *o = sum_blocks(row, 22, blocks, block);
                }
            }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q8_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len();
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 32 * blocks);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let block = |i: usize| {
                        let b = row.add(34 * i);
                        let w = _mm256_loadu_si256(b.add(2).cast());
                        let xq = _mm256_loadu_si256(x.q.as_ptr().add(32 * i).cast());
                        let dot = $dot(
                            _mm256_setzero_si256(),
                            _mm256_abs_epi8(w),
                            _mm256_sign_epi8(xq, w),
                        );
                        (
                            _mm256_cvtepi32_ps(dot),
                            f16_at(b) * *x.step.get_unchecked(i),
                        )
                    };
                    *o = sum_blocks(row, 34, blocks, block);
                }
            }
        }

        /// Per sub-block `d·sc·d_x·Σ q·q_x`, minus `Σ dmin·m·Σx` with the exact block sums.
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q4_k(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len() / 8;
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 256 * blocks);
            let m4 = _mm256_set1_epi8(0x0F);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let (mut acc0, mut acc1) = (w256::zero(), w256::zero());
                    let mut mins = 0.0f32;
                    for i in 0..blocks {
                        prefetch_ahead(row.add(144 * i), 144);
                        let b = row.add(144 * i);
                        let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
                        let scales = std::slice::from_raw_parts(b.add(4), 12);
                        for c in 0..4 {
                            let q = _mm256_loadu_si256(b.add(16 + 32 * c).cast());
                            let j = 8 * i + 2 * c;
                            let s1 = dot_codes(x, j, _mm256_and_si256(q, m4));
                            let s2 =
                                dot_codes(x, j + 1, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
                            let (sc1, m1) = scale_min_k4(2 * c, scales);
                            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                            let (dx1, dx2) =
                                (*x.step.get_unchecked(j), *x.step.get_unchecked(j + 1));
                            acc0 = w256::fma_scalar(acc0, s1, d * f32::from(sc1) * dx1);
                            acc1 = w256::fma_scalar(acc1, s2, d * f32::from(sc2) * dx2);
                            mins += dmin * f32::from(m1) * *x.sum.get_unchecked(j)
                                + dmin * f32::from(m2) * *x.sum.get_unchecked(j + 1);
                        }
                    }
                    *o = w256::hsum(w256::add(acc0, acc1)) - mins;
                }
            }
        }

        /// Codes 0..63 (offset 32); one scale per 16 elements, so the dot's lanes 0–3 and
        /// 4–7 take different factors.
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q6_k(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len() / 8;
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 256 * blocks);
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(3);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let mut acc = [w256::zero(); 2];
                    for i in 0..blocks {
                        prefetch_ahead(row.add(210 * i), 210);
                        let b = row.add(210 * i);
                        let d = f16_at(b.add(208));
                        for half in 0..2 {
                            let ql = b.add(64 * half);
                            let qh = _mm256_loadu_si256(b.add(128 + 32 * half).cast());
                            let sc = b.add(192 + 8 * half) as *const i8;
                            let la = _mm256_loadu_si256(ql.cast());
                            let lb = _mm256_loadu_si256(ql.add(32).cast());
                            let top = |h: __m256i| _mm256_slli_epi16(_mm256_and_si256(h, m2), 4);
                            let groups = [
                                _mm256_or_si256(_mm256_and_si256(la, m4), top(qh)),
                                _mm256_or_si256(
                                    _mm256_and_si256(lb, m4),
                                    top(_mm256_srli_epi16(qh, 2)),
                                ),
                                _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16(la, 4), m4),
                                    top(_mm256_srli_epi16(qh, 4)),
                                ),
                                _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16(lb, 4), m4),
                                    top(_mm256_srli_epi16(qh, 6)),
                                ),
                            ];
                            for (g, w) in groups.into_iter().enumerate() {
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
                        }
                    }
                    *o = w256::hsum(w256::add(acc[0], acc[1]));
                }
            }
        }

        pub(crate) static KERNELS: DotKernels = DotKernels {
            q4_0: rows_q4_0,
            q5_0: rows_q5_0,
            q8_0: rows_q8_0,
            q4_k: rows_q4_k,
            q6_k: rows_q6_k,
        };
    };
}

mod avx2 {
    use super::*;
    int8_kernels!("avx2,fma,f16c", dot_maddubs);
}

mod vnni {
    use super::*;
    int8_kernels!("avx2,fma,f16c,avx512f,avx512vl,avx512vnni", dot_vnni);
}

pub(crate) use avx2::KERNELS as AVX2;
pub(crate) use vnni::KERNELS as VNNI;
