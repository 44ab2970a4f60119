//! aarch64 Advanced SIMD kernels (NEON is part of every aarch64 target's baseline). Same scheme
//! as the AVX2 kernels: quants → signed bytes → i16 → i32 → f32 (exact), FMA with the f32
//! activations, block scale applied to each block's sum. Not run in CI (x86_64 only); the
//! portable kernels, which these mirror, are tested against the same reference there.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;

use half::f16;

use super::portable::scale_min_k4;
use super::{Kernels, MR_MAX, NR};

pub(crate) static KERNELS: Kernels = Kernels {
    q4_0: rows_q4_0,
    q5_0: rows_q5_0,
    q8_0: rows_q8_0,
    q4_k: rows_q4_k,
    q6_k: rows_q6_k,
    dot_f32,
    micro,
    mr: 6,
    q4_0_reads_sums: false,
};

/// The f16 at `p`, as f32, from a 65536-entry table: Rust has no stable f16 NEON conversion,
/// and `half`'s portable one costs more than the rest of a block's work. Block scales cluster
/// in a narrow range, so the entries in use stay in cache.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    unsafe { *f16_table().get_unchecked(usize::from((p as *const u16).read_unaligned().to_le())) }
}

#[inline(always)]
fn f16_table() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0.0f32; 65536]);
        for (h, v) in t.iter_mut().enumerate() {
            *v = f16::from_bits(h as u16).to_f32();
        }
        t
    })
}

/// `Σ q·x` over 16 signed bytes and `x[0..16]`, as four partial sums.
#[inline(always)]
unsafe fn dot16(q: int8x16_t, x: *const f32) -> float32x4_t {
    unsafe {
        let lo = vmovl_s8(vget_low_s8(q));
        let hi = vmovl_high_s8(q);
        let f0 = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
        let f1 = vcvtq_f32_s32(vmovl_high_s16(lo));
        let f2 = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
        let f3 = vcvtq_f32_s32(vmovl_high_s16(hi));
        let a = vmulq_f32(f0, vld1q_f32(x));
        let b = vmulq_f32(f1, vld1q_f32(x.add(4)));
        let a = vfmaq_f32(a, f2, vld1q_f32(x.add(8)));
        let b = vfmaq_f32(b, f3, vld1q_f32(x.add(12)));
        vaddq_f32(a, b)
    }
}

/// `Σ_i d_i·s_i` over `blocks` blocks for `block(i) = (s_i, d_i)`: two accumulators, unrolled
/// by hand (an array indexed by `i & 1` stays in memory).
#[inline(always)]
unsafe fn sum_blocks(blocks: usize, block: impl Fn(usize) -> (float32x4_t, f32)) -> f32 {
    unsafe {
        let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let mut i = 0;
        while i + 2 <= blocks {
            let (s0, d0) = block(i);
            let (s1, d1) = block(i + 1);
            acc0 = vfmaq_n_f32(acc0, s0, d0);
            acc1 = vfmaq_n_f32(acc1, s1, d1);
            i += 2;
        }
        if i < blocks {
            let (s0, d0) = block(i);
            acc0 = vfmaq_n_f32(acc0, s0, d0);
        }
        vaddvq_f32(vaddq_f32(acc0, acc1))
    }
}

#[inline(always)]
unsafe fn for_rows(
    rows: &[u8],
    stride: usize,
    out: &mut [f32],
    mut f: impl FnMut(*const u8) -> f32,
) {
    debug_assert!(rows.len() >= out.len() * stride);
    for (r, o) in out.iter_mut().enumerate() {
        *o = f(unsafe { rows.as_ptr().add(r * stride) });
    }
}

unsafe fn rows_q4_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 32;
    unsafe {
        for_rows(rows, stride, out, |row| {
            let m4 = vdupq_n_u8(0x0F);
            let eight = vdupq_n_s8(8);
            let block = |i: usize| {
                let b = row.add(18 * i);
                let q = vld1q_u8(b.add(2));
                let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, m4)), eight);
                let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
                let xp = x.as_ptr().add(32 * i);
                let s = vaddq_f32(dot16(lo, xp), dot16(hi, xp.add(16)));
                (s, f16_at(b))
            };
            sum_blocks(blocks, block)
        })
    }
}

/// 0xFF in byte j where bit j of the 16-bit `bits` is set.
#[inline(always)]
unsafe fn bits_to_mask(bits: u16) -> uint8x16_t {
    unsafe {
        const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let spread = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
        vtstq_u8(spread, vld1q_u8(BIT.as_ptr()))
    }
}

unsafe fn rows_q5_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 32;
    unsafe {
        for_rows(rows, stride, out, |row| {
            let m4 = vdupq_n_u8(0x0F);
            let high = vdupq_n_u8(0xF0);
            let block = |i: usize| {
                let b = row.add(22 * i);
                let qh = (b.add(2) as *const u32).read_unaligned().to_le();
                let q = vld1q_u8(b.add(6));
                // A clear fifth bit means value − 16: set the top nibble (two's complement).
                let lo = vorrq_u8(vandq_u8(q, m4), vbicq_u8(high, bits_to_mask(qh as u16)));
                let hi = vorrq_u8(
                    vshrq_n_u8::<4>(q),
                    vbicq_u8(high, bits_to_mask((qh >> 16) as u16)),
                );
                let xp = x.as_ptr().add(32 * i);
                let s = vaddq_f32(
                    dot16(vreinterpretq_s8_u8(lo), xp),
                    dot16(vreinterpretq_s8_u8(hi), xp.add(16)),
                );
                (s, f16_at(b))
            };
            sum_blocks(blocks, block)
        })
    }
}

unsafe fn rows_q8_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 32;
    unsafe {
        for_rows(rows, stride, out, |row| {
            let block = |i: usize| {
                let b = row.add(34 * i);
                let xp = x.as_ptr().add(32 * i);
                let s = vaddq_f32(
                    dot16(vld1q_s8(b.add(2) as *const i8), xp),
                    dot16(vld1q_s8(b.add(18) as *const i8), xp.add(16)),
                );
                (s, f16_at(b))
            };
            sum_blocks(blocks, block)
        })
    }
}

unsafe fn rows_q4_k(rows: &[u8], stride: usize, x: &[f32], sums32: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 256;
    debug_assert!(sums32.len() >= blocks * 8);
    unsafe {
        for_rows(rows, stride, out, |row| {
            let m4 = vdupq_n_u8(0x0F);
            let mut acc = [vdupq_n_f32(0.0); 2];
            let mut mins = 0.0f32;
            for i in 0..blocks {
                let b = row.add(144 * i);
                let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
                let scales = std::slice::from_raw_parts(b.add(4), 12);
                for c in 0..4 {
                    let qs = b.add(16 + 32 * c);
                    let qa = vld1q_u8(qs);
                    let qb = vld1q_u8(qs.add(16));
                    let xp = x.as_ptr().add(256 * i + 64 * c);
                    let s1 = vaddq_f32(
                        dot16(vreinterpretq_s8_u8(vandq_u8(qa, m4)), xp),
                        dot16(vreinterpretq_s8_u8(vandq_u8(qb, m4)), xp.add(16)),
                    );
                    let s2 = vaddq_f32(
                        dot16(vreinterpretq_s8_u8(vshrq_n_u8::<4>(qa)), xp.add(32)),
                        dot16(vreinterpretq_s8_u8(vshrq_n_u8::<4>(qb)), xp.add(48)),
                    );
                    let (sc1, m1) = scale_min_k4(2 * c, scales);
                    let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                    acc[0] = vfmaq_n_f32(acc[0], s1, d * f32::from(sc1));
                    acc[1] = vfmaq_n_f32(acc[1], s2, d * f32::from(sc2));
                    mins += dmin * f32::from(m1) * *sums32.get_unchecked(8 * i + 2 * c)
                        + dmin * f32::from(m2) * *sums32.get_unchecked(8 * i + 2 * c + 1);
                }
            }
            vaddvq_f32(vaddq_f32(acc[0], acc[1])) - mins
        })
    }
}

unsafe fn rows_q6_k(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 256;
    unsafe {
        for_rows(rows, stride, out, |row| {
            let m4 = vdupq_n_u8(0x0F);
            let m2 = vdupq_n_u8(3);
            let bias = vdupq_n_s8(32);
            let mut acc = [vdupq_n_f32(0.0); 2];
            for i in 0..blocks {
                let b = row.add(210 * i);
                let d = f16_at(b.add(208));
                for half in 0..2 {
                    let ql = b.add(64 * half);
                    let qh = b.add(128 + 32 * half);
                    let sc = b.add(192 + 8 * half) as *const i8;
                    let xh = x.as_ptr().add(256 * i + 128 * half);
                    for p in 0..2 {
                        let la = vld1q_u8(ql.add(16 * p));
                        let lb = vld1q_u8(ql.add(32 + 16 * p));
                        let h = vld1q_u8(qh.add(16 * p));
                        let groups = [
                            vorrq_u8(vandq_u8(la, m4), vshlq_n_u8::<4>(vandq_u8(h, m2))),
                            vorrq_u8(
                                vandq_u8(lb, m4),
                                vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(h), m2)),
                            ),
                            vorrq_u8(
                                vshrq_n_u8::<4>(la),
                                vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(h), m2)),
                            ),
                            vorrq_u8(vshrq_n_u8::<4>(lb), vshlq_n_u8::<4>(vshrq_n_u8::<6>(h))),
                        ];
                        for (g, q) in groups.into_iter().enumerate() {
                            let q = vsubq_s8(vreinterpretq_s8_u8(q), bias);
                            let s = dot16(q, xh.add(32 * g + 16 * p));
                            let scale = d * f32::from(*sc.add(2 * g + p));
                            acc[p] = vfmaq_n_f32(acc[p], s, scale);
                        }
                    }
                }
            }
            vaddvq_f32(vaddq_f32(acc[0], acc[1]))
        })
    }
}

unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (k, a_k) in acc.iter_mut().enumerate() {
                *a_k = vfmaq_f32(
                    *a_k,
                    vld1q_f32(pa.add(i + 4 * k)),
                    vld1q_f32(pb.add(i + 4 * k)),
                );
            }
            i += 16;
        }
        while i + 4 <= n {
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            i += 4;
        }
        let mut s = vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }
}

unsafe fn micro(
    kc: usize,
    x: &[f32],
    xs: usize,
    mr: usize,
    w: &[f32],
    c: &mut [[f32; NR]; MR_MAX],
) {
    debug_assert!(w.len() >= kc * NR && x.len() >= (mr - 1) * xs + kc);
    unsafe {
        match mr {
            1 => micro_n::<1>(kc, x.as_ptr(), xs, w.as_ptr(), c),
            2 => micro_n::<2>(kc, x.as_ptr(), xs, w.as_ptr(), c),
            3 => micro_n::<3>(kc, x.as_ptr(), xs, w.as_ptr(), c),
            4 => micro_n::<4>(kc, x.as_ptr(), xs, w.as_ptr(), c),
            5 => micro_n::<5>(kc, x.as_ptr(), xs, w.as_ptr(), c),
            _ => micro_n::<6>(kc, x.as_ptr(), xs, w.as_ptr(), c),
        }
    }
}

/// `M` tokens × 16 rows: 4·M accumulators (24 of the 32 registers at M = 6).
#[inline(always)]
unsafe fn micro_n<const M: usize>(
    kc: usize,
    x: *const f32,
    xs: usize,
    w: *const f32,
    c: &mut [[f32; NR]; MR_MAX],
) {
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; M];
        for k in 0..kc {
            let wk = [
                vld1q_f32(w.add(k * NR)),
                vld1q_f32(w.add(k * NR + 4)),
                vld1q_f32(w.add(k * NR + 8)),
                vld1q_f32(w.add(k * NR + 12)),
            ];
            for (t, a) in acc.iter_mut().enumerate() {
                let xv = vld1q_dup_f32(x.add(t * xs + k));
                for i in 0..4 {
                    a[i] = vfmaq_f32(a[i], wk[i], xv);
                }
            }
        }
        for (a, ct) in acc.iter().zip(c.iter_mut()) {
            for i in 0..4 {
                vst1q_f32(ct.as_mut_ptr().add(4 * i), a[i]);
            }
        }
    }
}
