//! aarch64 int8-activation decode kernels (see `kernels::cpu::int8`): per 32-block, the weight
//! codes as signed bytes (the exact NEON kernels' unpacking, `super::*_codes`) times the
//! token's 32 rounded activations, summed in i32 lanes, then converted and scaled in f32 like
//! the exact kernels' blocks (the same `rows_32`, `q4_k_rows!` and `q6_k_rows!` loops).
//!
//! Both operands are signed (x86's `vpmaddubsw`/`vpdpbusd` need one unsigned), so each
//! format's offset is taken while unpacking and `XTok::init` is not read; the activations
//! are `quantize_x`'s, so the numerics are the x86 kernels' and the portable reference's.
//!
//! Two levels from one macro: dotprod (`sdot`: 16 byte products into four i32 lanes, one
//! instruction) and baseline Advanced SIMD (`smull` + `smlal2` + `sadalp`: three). Rust 1.95
//! has `vdotq_s32` only behind the unstable `stdarch_neon_dotprod`, so `sdot` is written with
//! `asm!` inside a `dotprod` function. Callers guarantee the features (see `DotIsa`).

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Codes, f16_at, q4_0_codes, q4_k_scales, q5_0_codes, q8_0_codes, rows_32};
use crate::kernels::cpu::int8::{DotKernels, XTok, dot_levels};

/// `$name(acc, a, b)`: `acc` plus one `$insn` of `a` (type `$a`) and `b` (signed bytes) into
/// i32 lanes, in a function with features `$feat`. For the instructions whose intrinsics
/// Rust 1.95 keeps unstable (`stdarch_neon_dotprod`, `stdarch_neon_i8mm`).
macro_rules! accumulate_asm {
    ($(#[$doc:meta])* $name:ident, $insn:literal, $feat:literal, $a:ty) => {
        $(#[$doc])*
        #[target_feature(enable = $feat)]
        #[inline]
        pub(crate) fn $name(mut acc: int32x4_t, a: $a, b: int8x16_t) -> int32x4_t {
            // SAFETY: the instruction only reads and writes these registers; its feature is
            // this function's, which its callers check (`DotIsa`, `fast_kernel`).
            unsafe {
                asm!(
                    concat!($insn, " {acc:v}.4s, {a:v}.16b, {b:v}.16b"),
                    acc = inout(vreg) acc,
                    a = in(vreg) a,
                    b = in(vreg) b,
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            acc
        }
    };
}

accumulate_asm!(
    /// `acc + Σ a·b`, lane i over bytes 4i..4i+4.
    dot_sdot, "sdot", "neon,dotprod", int8x16_t
);
accumulate_asm!(
    /// `acc + A·Bᵀ` for `a` two rows of 8 unsigned bytes and `b` two rows of 8 signed bytes:
    /// lanes `[a0·b0, a0·b1, a1·b0, a1·b1]` (the i8mm prefill micro-kernel's tile).
    usmmla, "usmmla", "neon,i8mm", uint8x16_t
);

/// `acc + Σ a·b` without dot instructions: products widened to i16, two per lane (at most
/// 2·128·127 < 2^15 in magnitude: activations are clamped to ±127), then pairwise into the
/// i32 lanes. The lanes group the bytes differently from `sdot`; only their total is used.
#[target_feature(enable = "neon")]
#[inline]
fn dot_mull(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    vpadalq_s16(acc, vmlal_high_s8(p, a, b))
}

macro_rules! int8_kernels {
    ($feat:literal, $dot:ident) => {
        /// The token's block `i` times 32 codes (elements 0..16, 16..32) as f32 lanes.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn dot_block(x: XTok<'_>, i: usize, (lo, hi): Codes) -> float32x4_t {
            // SAFETY: block `i` lies in the token (the callers' loops stay below its blocks).
            let (xa, xb) = unsafe {
                let xq = x.q.as_ptr().add(32 * i);
                (vld1q_s8(xq), vld1q_s8(xq.add(16)))
            };
            vcvtq_f32_s32($dot($dot(vdupq_n_s32(0), lo, xa), hi, xb))
        }

        /// The 16 codes `q` times the token's 16 activations from element `at` as f32 lanes.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn dot_half(x: XTok<'_>, at: usize, q: int8x16_t) -> float32x4_t {
            // SAFETY: elements at..at + 16 lie in the token (see `dot_block`).
            let xq = unsafe { vld1q_s8(x.q.as_ptr().add(at)) };
            vcvtq_f32_s32($dot(vdupq_n_s32(0), q, xq))
        }

        /// `rows_32` with block `i`'s integer dot, scaled by the activation step too.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn rows_32_int8(
            rows: &[u8],
            stride: usize,
            x: XTok<'_>,
            out: &mut [f32],
            bytes: usize,
            codes: impl Fn(*const u8) -> Codes,
        ) {
            let dot = |i, c| unsafe { (dot_block(x, i, c), *x.step.get_unchecked(i)) };
            unsafe { rows_32(rows, stride, out, x.step.len(), bytes, codes, dot) }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q4_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            unsafe { rows_32_int8(rows, stride, x, out, 18, |b| q4_0_codes(b)) }
        }
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q5_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            unsafe { rows_32_int8(rows, stride, x, out, 22, |b| q5_0_codes(b)) }
        }
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q8_0(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            unsafe { rows_32_int8(rows, stride, x, out, 34, |b| q8_0_codes(b)) }
        }

        /// Per sub-block `d·sc·d_x·Σ q·q_x`, minus `Σ dmin·m·Σx` with the exact block sums.
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q4_k(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len() / 8;
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 256 * blocks);
            q4_k_rows!(rows, stride, blocks, out, |acc, mins, i, c, lo, hi, sm| {
                let j = 8 * i + 2 * c;
                let (dx1, dx2) = (*x.step.get_unchecked(j), *x.step.get_unchecked(j + 1));
                acc[0] = vfmaq_n_f32(acc[0], dot_block(x, j, lo), sm[0].0 * dx1);
                acc[1] = vfmaq_n_f32(acc[1], dot_block(x, j + 1, hi), sm[1].0 * dx2);
                mins += sm[0].1 * *x.sum.get_unchecked(j) + sm[1].1 * *x.sum.get_unchecked(j + 1);
            });
        }

        /// One scale per 16 elements, so each half of a 32-block is converted on its own.
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q6_k(rows: &[u8], stride: usize, x: XTok<'_>, out: &mut [f32]) {
            let blocks = x.step.len() / 8;
            debug_assert!(rows.len() >= out.len() * stride && x.q.len() >= 256 * blocks);
            q6_k_rows!(rows, stride, blocks, out, |acc, i, half, p, g, q, d, sc| {
                let j = 8 * i + 4 * half + g;
                let s = dot_half(x, 32 * j + 16 * p, q);
                let scale = d * f32::from(*sc.add(2 * g + p)) * *x.step.get_unchecked(j);
                acc[p] = vfmaq_n_f32(acc[p], s, scale);
            });
        }
    };
}

dot_levels!(int8_kernels:
    mull("neon", dot_mull) => NEON,
    sdot("neon,dotprod", dot_sdot) => NEON_DOT
);
