//! AVX2 + FMA + F16C kernels. Quants are unpacked to signed bytes, widened to i32 eight at a
//! time, converted to f32 (exact: |q| ≤ 128) and multiplied with the f32 activations; the block
//! scale multiplies the block's sum once. Callers guarantee the CPU features (see `Isa`).

use std::arch::x86_64::*;

use super::portable::scale_min_k4;
use super::{Kernels, MR, NR};

pub(crate) static KERNELS: Kernels = Kernels {
    q4_0: rows_q4_0,
    q5_0: rows_q5_0,
    q8_0: rows_q8_0,
    q4_k: rows_q4_k,
    q6_k: rows_q6_k,
    dot_f32,
    micro,
};

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The f16 at `p`, as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16_at(p: *const u8) -> f32 {
    unsafe {
        let h = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
    }
}

/// The low eight signed bytes of `v` as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn i8x8_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// `Σ q·x` over 16 signed bytes in `q` and `x[0..16]`, as a vector of partial sums.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot16(q: __m128i, x: *const f32) -> __m256 {
    unsafe {
        let a = _mm256_mul_ps(i8x8_f32(q), _mm256_loadu_ps(x));
        _mm256_fmadd_ps(
            i8x8_f32(_mm_srli_si128(q, 8)),
            _mm256_loadu_ps(x.add(8)),
            a,
        )
    }
}

/// `Σ q·x` over 32 signed bytes (`lo` = elements 0..16, `hi` = 16..32) and `x[0..32]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot32(lo: __m128i, hi: __m128i, x: *const f32) -> __m256 {
    unsafe {
        let a = _mm256_mul_ps(i8x8_f32(lo), _mm256_loadu_ps(x));
        let b = _mm256_mul_ps(i8x8_f32(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x.add(8)));
        let a = _mm256_fmadd_ps(i8x8_f32(hi), _mm256_loadu_ps(x.add(16)), a);
        let b = _mm256_fmadd_ps(i8x8_f32(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x.add(24)), b);
        _mm256_add_ps(a, b)
    }
}

/// Runs `f(row_ptr)` for each row, storing its result.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn for_rows(rows: &[u8], stride: usize, out: &mut [f32], mut f: impl FnMut(*const u8) -> f32) {
    debug_assert!(rows.len() >= out.len() * stride);
    for (r, o) in out.iter_mut().enumerate() {
        *o = f(unsafe { rows.as_ptr().add(r * stride) });
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q4_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 32;
    unsafe {
        for_rows(rows, stride, out, |row| {
            let m4 = _mm_set1_epi8(0x0F);
            let eight = _mm_set1_epi8(8);
            let mut acc = [_mm256_setzero_ps(); 2];
            for i in 0..blocks {
                let b = row.add(18 * i);
                let q = _mm_loadu_si128(b.add(2) as *const __m128i);
                let lo = _mm_sub_epi8(_mm_and_si128(q, m4), eight);
                let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), eight);
                let s = dot32(lo, hi, x.as_ptr().add(32 * i));
                acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b)), s, acc[i & 1]);
            }
            hsum(_mm256_add_ps(acc[0], acc[1]))
        })
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q5_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 32;
    unsafe {
        for_rows(rows, stride, out, |row| {
            let m4 = _mm_set1_epi8(0x0F);
            // Byte i of the spread keeps bit (i mod 8) of its source byte set to 1 elsewhere,
            // so comparing with all-ones tests that one bit (ggml's bytes_from_bits_32).
            let shuf = _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0,
            );
            let bit = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
            let ones = _mm256_set1_epi64x(-1);
            let high = _mm256_set1_epi8(0xF0u8 as i8);
            let mut acc = [_mm256_setzero_ps(); 2];
            for i in 0..blocks {
                let b = row.add(22 * i);
                let qh = (b.add(2) as *const i32).read_unaligned();
                let set = _mm256_cmpeq_epi8(
                    _mm256_or_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(qh), shuf), bit),
                    ones,
                );
                let q = _mm_loadu_si128(b.add(6) as *const __m128i);
                let nib = _mm256_set_m128i(
                    _mm_and_si128(_mm_srli_epi16(q, 4), m4),
                    _mm_and_si128(q, m4),
                );
                // A clear fifth bit means value − 16: set the top nibble (two's complement).
                let v = _mm256_or_si256(nib, _mm256_andnot_si256(set, high));
                let s = dot32(
                    _mm256_castsi256_si128(v),
                    _mm256_extracti128_si256(v, 1),
                    x.as_ptr().add(32 * i),
                );
                acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b)), s, acc[i & 1]);
            }
            hsum(_mm256_add_ps(acc[0], acc[1]))
        })
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q8_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 32;
    unsafe {
        for_rows(rows, stride, out, |row| {
            let mut acc = [_mm256_setzero_ps(); 2];
            for i in 0..blocks {
                let b = row.add(34 * i);
                let xp = x.as_ptr().add(32 * i);
                let ld = |o: usize| i8x8_f32(_mm_loadl_epi64(b.add(2 + o) as *const __m128i));
                let s0 = _mm256_mul_ps(ld(0), _mm256_loadu_ps(xp));
                let s1 = _mm256_mul_ps(ld(8), _mm256_loadu_ps(xp.add(8)));
                let s0 = _mm256_fmadd_ps(ld(16), _mm256_loadu_ps(xp.add(16)), s0);
                let s1 = _mm256_fmadd_ps(ld(24), _mm256_loadu_ps(xp.add(24)), s1);
                let s = _mm256_add_ps(s0, s1);
                acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b)), s, acc[i & 1]);
            }
            hsum(_mm256_add_ps(acc[0], acc[1]))
        })
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q4_k(rows: &[u8], stride: usize, x: &[f32], sums32: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 256;
    debug_assert!(sums32.len() >= blocks * 8);
    unsafe {
        for_rows(rows, stride, out, |row| {
            let m4 = _mm_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); 2];
            let mut mins = 0.0f32;
            for i in 0..blocks {
                let b = row.add(144 * i);
                let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
                let scales = std::slice::from_raw_parts(b.add(4), 12);
                for c in 0..4 {
                    let qs = b.add(16 + 32 * c);
                    let qa = _mm_loadu_si128(qs as *const __m128i);
                    let qb = _mm_loadu_si128(qs.add(16) as *const __m128i);
                    let xp = x.as_ptr().add(256 * i + 64 * c);
                    let s1 = dot32(_mm_and_si128(qa, m4), _mm_and_si128(qb, m4), xp);
                    let s2 = dot32(
                        _mm_and_si128(_mm_srli_epi16(qa, 4), m4),
                        _mm_and_si128(_mm_srli_epi16(qb, 4), m4),
                        xp.add(32),
                    );
                    let (sc1, m1) = scale_min_k4(2 * c, scales);
                    let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                    acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(d * f32::from(sc1)), s1, acc[0]);
                    acc[1] = _mm256_fmadd_ps(_mm256_set1_ps(d * f32::from(sc2)), s2, acc[1]);
                    mins += dmin * f32::from(m1) * *sums32.get_unchecked(8 * i + 2 * c)
                        + dmin * f32::from(m2) * *sums32.get_unchecked(8 * i + 2 * c + 1);
                }
            }
            hsum(_mm256_add_ps(acc[0], acc[1])) - mins
        })
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q6_k(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    let blocks = x.len() / 256;
    unsafe {
        for_rows(rows, stride, out, |row| {
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(3);
            let bias = _mm256_set1_epi8(32);
            let mut acc = [_mm256_setzero_ps(); 2];
            for i in 0..blocks {
                let b = row.add(210 * i);
                let d = f16_at(b.add(208));
                for half in 0..2 {
                    let ql = b.add(64 * half);
                    let qh = _mm256_loadu_si256(b.add(128 + 32 * half) as *const __m256i);
                    let sc = b.add(192 + 8 * half) as *const i8;
                    let la = _mm256_loadu_si256(ql as *const __m256i);
                    let lb = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                    let hbits = |shift: i32| {
                        let h = match shift {
                            0 => qh,
                            2 => _mm256_srli_epi16(qh, 2),
                            4 => _mm256_srli_epi16(qh, 4),
                            _ => _mm256_srli_epi16(qh, 6),
                        };
                        _mm256_slli_epi16(_mm256_and_si256(h, m2), 4)
                    };
                    let groups = [
                        _mm256_or_si256(_mm256_and_si256(la, m4), hbits(0)),
                        _mm256_or_si256(_mm256_and_si256(lb, m4), hbits(2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4), hbits(4)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4), hbits(6)),
                    ];
                    let xh = x.as_ptr().add(256 * i + 128 * half);
                    for (g, q) in groups.into_iter().enumerate() {
                        let q = _mm256_sub_epi8(q, bias);
                        let s_lo = dot16(_mm256_castsi256_si128(q), xh.add(32 * g));
                        let s_hi = dot16(_mm256_extracti128_si256(q, 1), xh.add(32 * g + 16));
                        let (sa, sb) = (*sc.add(2 * g), *sc.add(2 * g + 1));
                        acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(d * f32::from(sa)), s_lo, acc[0]);
                        acc[1] = _mm256_fmadd_ps(_mm256_set1_ps(d * f32::from(sb)), s_hi, acc[1]);
                    }
                }
            }
            hsum(_mm256_add_ps(acc[0], acc[1]))
        })
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    unsafe {
        while i + 32 <= n {
            for (k, a_k) in acc.iter_mut().enumerate() {
                *a_k = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                    *a_k,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn micro(kc: usize, x: &[f32], xs: usize, mr: usize, w: &[f32], c: &mut [[f32; NR]; MR]) {
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

/// `M` tokens × 16 rows: 2·M accumulators, two weight loads and `M` broadcasts per step.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn micro_n<const M: usize>(
    kc: usize,
    x: *const f32,
    xs: usize,
    w: *const f32,
    c: &mut [[f32; NR]; MR],
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        for k in 0..kc {
            let w0 = _mm256_loadu_ps(w.add(k * NR));
            let w1 = _mm256_loadu_ps(w.add(k * NR + 8));
            for (t, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_broadcast_ss(&*x.add(t * xs + k));
                a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
            }
        }
        for (a, ct) in acc.iter().zip(c.iter_mut()) {
            _mm256_storeu_ps(ct.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(ct.as_mut_ptr().add(8), a[1]);
        }
    }
}
