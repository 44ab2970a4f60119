//! aarch64 Advanced SIMD kernels (NEON is part of every aarch64 target's baseline). Same scheme
//! as the AVX2 kernels: quants → signed bytes → i16 → i32 → f32 (exact), FMA with the f32
//! activations, block scale applied to each block's sum. The block unpacking and the Q4_K and
//! Q6_K row loops are shared with the int8-activation kernels (`int8`). Tested under
//! qemu-aarch64 (`scripts/test-aarch64-qemu.sh`, in CI) against the same reference as x86.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;
use std::arch::asm;

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

/// The f16 at `p`, as f32: `ldr h` + `fcvt` (baseline AArch64 floating point). Rust 1.95 has
/// no stable f16 type or NEON conversion intrinsic, `half`'s portable conversion costs more
/// than the rest of a block's work, and the 65536-entry table used before cost a lookup plus
/// its `OnceLock` check per scale (five instructions to these two).
#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    let v: f32;
    // SAFETY: reads the two bytes at `p`, which the caller's block holds (AArch64 loads need
    // no alignment); registers only otherwise.
    unsafe {
        asm!(
            "ldr {v:h}, [{p}]",
            "fcvt {v:s}, {v:h}",
            p = in(reg) p,
            v = out(vreg) v,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    v
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
pub(super) unsafe fn sum_blocks(blocks: usize, block: impl Fn(usize) -> (float32x4_t, f32)) -> f32 {
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
pub(super) unsafe fn for_rows(
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

/// A 32-element block's values as signed bytes: elements 0..16 and 16..32.
pub(super) type Codes = (int8x16_t, int8x16_t);

/// `out[r]` for the rows of a format with 32-element blocks of `block_bytes` bytes and an f16
/// scale first; shared by the exact and int8 kernels. `codes(b)` unpacks the block at `b`,
/// `dot(i, codes)` is its product with the activations' block `i` as partial sums and the
/// factor the block scale takes on (the int8 activation step; 1 for exact activations).
#[inline(always)]
pub(super) unsafe fn rows_32(
    rows: &[u8],
    stride: usize,
    out: &mut [f32],
    blocks: usize,
    block_bytes: usize,
    codes: impl Fn(*const u8) -> Codes,
    dot: impl Fn(usize, Codes) -> (float32x4_t, f32),
) {
    unsafe {
        for_rows(rows, stride, out, |row| {
            let block = |i: usize| {
                let b = row.add(block_bytes * i);
                let (s, factor) = dot(i, codes(b));
                (s, f16_at(b) * factor)
            };
            sum_blocks(blocks, block)
        })
    }
}

/// Q4_0 (18 bytes: f16 scale, byte i = element i low nibble, i + 16 high): `code − 8`.
#[inline(always)]
pub(super) unsafe fn q4_0_codes(b: *const u8) -> Codes {
    unsafe {
        let (m4, eight) = (vdupq_n_u8(0x0F), vdupq_n_s8(8));
        let q = vld1q_u8(b.add(2));
        (
            vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, m4)), eight),
            vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight),
        )
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

/// Q5_0 (22 bytes: f16 scale, 32 fifth bits, nibbles as Q4_0): `code − 16`.
#[inline(always)]
pub(super) unsafe fn q5_0_codes(b: *const u8) -> Codes {
    unsafe {
        let (m4, high) = (vdupq_n_u8(0x0F), vdupq_n_u8(0xF0));
        let qh = (b.add(2) as *const u32).read_unaligned().to_le();
        let q = vld1q_u8(b.add(6));
        // A clear fifth bit means value − 16: set the top nibble (two's complement).
        let lo = vorrq_u8(vandq_u8(q, m4), vbicq_u8(high, bits_to_mask(qh as u16)));
        let hi = vorrq_u8(
            vshrq_n_u8::<4>(q),
            vbicq_u8(high, bits_to_mask((qh >> 16) as u16)),
        );
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }
}

/// Q8_0 (34 bytes: f16 scale, 32 i8).
#[inline(always)]
pub(super) unsafe fn q8_0_codes(b: *const u8) -> Codes {
    unsafe { (vld1q_s8(b.add(2).cast()), vld1q_s8(b.add(18).cast())) }
}

/// The exact kernels' block product: `Σ q·x` over the block's 32 values and `x[32i..]`.
#[inline(always)]
unsafe fn dot_exact(x: &[f32], i: usize, (lo, hi): Codes) -> (float32x4_t, f32) {
    unsafe {
        let xp = x.as_ptr().add(32 * i);
        (vaddq_f32(dot16(lo, xp), dot16(hi, xp.add(16))), 1.0)
    }
}

unsafe fn rows_q4_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let dot = |i, c| unsafe { dot_exact(x, i, c) };
    unsafe { rows_32(rows, stride, out, x.len() / 32, 18, |b| q4_0_codes(b), dot) }
}

unsafe fn rows_q5_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let dot = |i, c| unsafe { dot_exact(x, i, c) };
    unsafe { rows_32(rows, stride, out, x.len() / 32, 22, |b| q5_0_codes(b), dot) }
}

unsafe fn rows_q8_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let dot = |i, c| unsafe { dot_exact(x, i, c) };
    unsafe { rows_32(rows, stride, out, x.len() / 32, 34, |b| q8_0_codes(b), dot) }
}

/// `d·sc` and `dmin·m` of a Q4_K block's eight sub-blocks, from its 12 packed 6-bit scale and
/// minimum bytes at `q`: unpacked as three 32-bit words (ggml's `utmp` masks), widened and
/// converted as vectors. The same values as `scale_min_k4` per sub-block, which cost the row
/// loop about ten scalar instructions per 32 elements.
#[inline(always)]
pub(super) unsafe fn q4_k_scales(q: *const u8, d: f32, dmin: f32) -> ([f32; 8], [f32; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    let word = |i: usize| unsafe { (q.add(4 * i) as *const u32).read_unaligned().to_le() };
    let (w0, w1, w2) = (word(0), word(1), word(2));
    // Sub-blocks 0..4 keep 6 bits in bytes 0..4 (scales) and 4..8 (minimums); 4..8 take 4
    // bits from bytes 8..12 and their top 2 from the top bits of bytes 0..8.
    let scales = (w0 & LOW6, (w2 & LOW4) | (((w0 >> 6) & TOP2) << 4));
    let mins = (w1 & LOW6, ((w2 >> 4) & LOW4) | (((w1 >> 6) & TOP2) << 4));
    let to_f32 = |(lo, hi): (u32, u32), f: f32| unsafe {
        let h = vmovl_u8(vcreate_u8(u64::from(lo) | (u64::from(hi) << 32)));
        let mut out = [0.0f32; 8];
        vst1q_f32(
            out.as_mut_ptr(),
            vmulq_n_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(h))), f),
        );
        vst1q_f32(
            out.as_mut_ptr().add(4),
            vmulq_n_f32(vcvtq_f32_u32(vmovl_high_u16(h)), f),
        );
        out
    };
    (to_f32(scales, d), to_f32(mins, dmin))
}

/// The Q4_K row loop of the exact and int8 kernels: for every row of `$out`, runs `$body` for
/// each pair `$c` of sub-blocks (2c: low nibbles `$lo`, 2c + 1: high nibbles `$hi`, each as
/// elements 0..16 and 16..32 in signed bytes) of each super-block `$i`, with their
/// `(d·sc, dmin·m)` in `$sm`, then stores `Σ $acc − $mins`.
macro_rules! q4_k_rows {
    ($rows:expr, $stride:expr, $blocks:expr, $out:expr,
     |$acc:ident, $mins:ident, $i:ident, $c:ident, $lo:ident, $hi:ident, $sm:ident|
     $body:block) => {
        for (r, o) in $out.iter_mut().enumerate() {
            unsafe {
                let row = $rows.as_ptr().add(r * $stride);
                let m4 = vdupq_n_u8(0x0F);
                let mut $acc = [vdupq_n_f32(0.0); 2];
                let mut $mins = 0.0f32;
                for $i in 0..$blocks {
                    let b = row.add(144 * $i);
                    let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
                    let (scales, mins) = q4_k_scales(b.add(4), d, dmin);
                    for $c in 0..4 {
                        let qs = b.add(16 + 32 * $c);
                        let (qa, qb) = (vld1q_u8(qs), vld1q_u8(qs.add(16)));
                        let s8 = |v: uint8x16_t| vreinterpretq_s8_u8(v);
                        let $lo = (s8(vandq_u8(qa, m4)), s8(vandq_u8(qb, m4)));
                        let $hi = (s8(vshrq_n_u8::<4>(qa)), s8(vshrq_n_u8::<4>(qb)));
                        let $sm = [
                            (scales[2 * $c], mins[2 * $c]),
                            (scales[2 * $c + 1], mins[2 * $c + 1]),
                        ];
                        $body
                    }
                }
                *o = vaddvq_f32(vaddq_f32($acc[0], $acc[1])) - $mins;
            }
        }
    };
}

unsafe fn rows_q4_k(rows: &[u8], stride: usize, x: &[f32], sums32: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 256;
    debug_assert!(sums32.len() >= blocks * 8);
    q4_k_rows!(rows, stride, blocks, out, |acc, mins, i, c, lo, hi, sm| {
        let xp = x.as_ptr().add(256 * i + 64 * c);
        let s1 = vaddq_f32(dot16(lo.0, xp), dot16(lo.1, xp.add(16)));
        let s2 = vaddq_f32(dot16(hi.0, xp.add(32)), dot16(hi.1, xp.add(48)));
        acc[0] = vfmaq_n_f32(acc[0], s1, sm[0].0);
        acc[1] = vfmaq_n_f32(acc[1], s2, sm[1].0);
        mins += sm[0].1 * *sums32.get_unchecked(8 * i + 2 * c)
            + sm[1].1 * *sums32.get_unchecked(8 * i + 2 * c + 1);
    });
}

/// The Q6_K row loop of the exact and int8 kernels: for every row of `$out`, runs `$body` for
/// each 16 values `$q` (signed: code − 32) of each group `$g` of 32 (elements
/// `32g + 16p..`, `$p` = 0, 1) of each half `$half` (128 elements) of each block `$i`, with the
/// block's `$d` and the half's 8 i8 scales at `$sc` (`$q`'s is `sc[2g + p]`), then stores
/// `Σ $acc`.
macro_rules! q6_k_rows {
    ($rows:expr, $stride:expr, $blocks:expr, $out:expr,
     |$acc:ident, $i:ident, $half:ident, $p:ident, $g:ident, $q:ident, $d:ident, $sc:ident|
     $body:block) => {
        for (r, o) in $out.iter_mut().enumerate() {
            unsafe {
                let row = $rows.as_ptr().add(r * $stride);
                let (m4, m2, bias) = (vdupq_n_u8(0x0F), vdupq_n_u8(3), vdupq_n_s8(32));
                let mut $acc = [vdupq_n_f32(0.0); 2];
                for $i in 0..$blocks {
                    let b = row.add(210 * $i);
                    let $d = f16_at(b.add(208));
                    for $half in 0..2 {
                        let ql = b.add(64 * $half);
                        let qh = b.add(128 + 32 * $half);
                        let $sc = b.add(192 + 8 * $half) as *const i8;
                        for $p in 0..2 {
                            let la = vld1q_u8(ql.add(16 * $p));
                            let lb = vld1q_u8(ql.add(32 + 16 * $p));
                            let h = vld1q_u8(qh.add(16 * $p));
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
                            for ($g, $q) in groups.into_iter().enumerate() {
                                let $q = vsubq_s8(vreinterpretq_s8_u8($q), bias);
                                $body
                            }
                        }
                    }
                }
                *o = vaddvq_f32(vaddq_f32($acc[0], $acc[1]));
            }
        }
    };
}

unsafe fn rows_q6_k(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 256;
    q6_k_rows!(rows, stride, blocks, out, |acc, i, half, p, g, q, d, sc| {
        let s = dot16(q, x.as_ptr().add(256 * i + 128 * half + 32 * g + 16 * p));
        acc[p] = vfmaq_n_f32(acc[p], s, d * f32::from(*sc.add(2 * g + p)));
    });
}

pub(super) mod int8;

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
