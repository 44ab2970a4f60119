//! x86_64 kernels at two levels: AVX2 + FMA + F16C (256-bit accumulators) and AVX-512
//! F/BW/VL (512-bit accumulators). Quants are unpacked to signed bytes with 128/256-bit integer
//! ops, widened to i32, converted to f32 (exact: |q| ≤ 128) and multiplied with the f32
//! activations; a block's scale multiplies the block's sum once. The fused kernels are written
//! once (`fused_kernels!`) over a few width-specific helpers. Callers guarantee the CPU features
//! (see `Isa`).

use std::arch::x86_64::*;

use super::portable::scale_min_k4;
use super::{Kernels, MR_MAX, NR};

/// 256-bit helpers.
mod w256 {
    use std::arch::x86_64::*;
    pub type V = __m256;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub fn zero() -> V {
        _mm256_setzero_ps()
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub fn add(a: V, b: V) -> V {
        _mm256_add_ps(a, b)
    }
    /// `acc + s·v`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub fn fma_scalar(acc: V, v: V, s: f32) -> V {
        _mm256_fmadd_ps(_mm256_set1_ps(s), v, acc)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub fn hsum(v: V) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
    /// The low eight signed bytes of `v` as f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn i8x8(v: __m128i) -> V {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
    }
    /// `Σ q·x` over 16 signed bytes and `x[0..16]`, as partial sums.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn dot16(q: __m128i, x: *const f32) -> V {
        unsafe {
            let a = _mm256_mul_ps(i8x8(q), _mm256_loadu_ps(x));
            _mm256_fmadd_ps(i8x8(_mm_srli_si128(q, 8)), _mm256_loadu_ps(x.add(8)), a)
        }
    }
    /// `Σ q·x` over 32 signed bytes (`lo` = elements 0..16, `hi` = 16..32) and `x[0..32]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn dot32(lo: __m128i, hi: __m128i, x: *const f32) -> V {
        unsafe {
            let a = _mm256_mul_ps(i8x8(lo), _mm256_loadu_ps(x));
            let b = _mm256_mul_ps(i8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x.add(8)));
            let a = _mm256_fmadd_ps(i8x8(hi), _mm256_loadu_ps(x.add(16)), a);
            let b = _mm256_fmadd_ps(i8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x.add(24)), b);
            _mm256_add_ps(a, b)
        }
    }
    /// `Σ q·x − 8·Σx` over one Q4_0 block's 16 nibble bytes at `q` and `x[0..32]`, as
    /// partial sums; `h` is `Σx / 2`, subtracted once in each of 16 lanes. The nibbles widen
    /// unsigned, so the −8 costs no integer op.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn dot_q4_0(q: *const u8, x: *const f32, h: f32) -> V {
        unsafe {
            let m = _mm256_set1_epi32(15);
            let h = _mm256_set1_ps(h);
            let a = _mm256_cvtepu8_epi32(_mm_loadl_epi64(q as *const __m128i));
            let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(q.add(8) as *const __m128i));
            let f = |v: __m256i| _mm256_cvtepi32_ps(v);
            let s0 = _mm256_fmsub_ps(f(_mm256_and_si256(a, m)), _mm256_loadu_ps(x), h);
            let s1 = _mm256_fmsub_ps(f(_mm256_and_si256(b, m)), _mm256_loadu_ps(x.add(8)), h);
            let s0 = _mm256_fmadd_ps(f(_mm256_srli_epi32(a, 4)), _mm256_loadu_ps(x.add(16)), s0);
            let s1 = _mm256_fmadd_ps(f(_mm256_srli_epi32(b, 4)), _mm256_loadu_ps(x.add(24)), s1);
            _mm256_add_ps(s0, s1)
        }
    }
}

/// 512-bit helpers.
mod w512 {
    use std::arch::x86_64::*;
    pub type V = __m512;

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub fn zero() -> V {
        _mm512_setzero_ps()
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub fn add(a: V, b: V) -> V {
        _mm512_add_ps(a, b)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub fn fma_scalar(acc: V, v: V, s: f32) -> V {
        _mm512_fmadd_ps(_mm512_set1_ps(s), v, acc)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub fn hsum(v: V) -> f32 {
        _mm512_reduce_add_ps(v)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    fn i8x16(v: __m128i) -> V {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub unsafe fn dot16(q: __m128i, x: *const f32) -> V {
        unsafe { _mm512_mul_ps(i8x16(q), _mm512_loadu_ps(x)) }
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub unsafe fn dot32(lo: __m128i, hi: __m128i, x: *const f32) -> V {
        unsafe {
            let a = _mm512_mul_ps(i8x16(lo), _mm512_loadu_ps(x));
            _mm512_fmadd_ps(i8x16(hi), _mm512_loadu_ps(x.add(16)), a)
        }
    }
    /// As `w256::dot_q4_0`, but the offset comes from a table (so `_h` is not needed): the 16
    /// bytes widen once to 16 i32 lanes whose low four bits index the table for the low
    /// nibbles, and a shift exposes the high ones.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub unsafe fn dot_q4_0(q: *const u8, x: *const f32, _h: f32) -> V {
        unsafe {
            // q − 8 for every nibble value: one permute replaces the mask, the conversion and
            // the offset (the in-cache 12288→1536 matvec went from 33 to 41 GiB/s).
            let lut = _mm512_setr_ps(
                -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
                7.0,
            );
            let w = _mm512_cvtepu8_epi32(_mm_loadu_si128(q as *const __m128i));
            let lo = _mm512_permutexvar_ps(w, lut);
            let hi = _mm512_permutexvar_ps(_mm512_srli_epi32(w, 4), lut);
            let a = _mm512_mul_ps(lo, _mm512_loadu_ps(x));
            _mm512_fmadd_ps(hi, _mm512_loadu_ps(x.add(16)), a)
        }
    }
}

/// How far ahead of the kernel the weight stream is prefetched. The hardware prefetcher alone
/// left long rows (1536×12288 Q4_0 on E2B: 14.5 GB/s) far below the machine's bandwidth; 4–16
/// KiB ahead brought them to 30 GB/s and the LM head to 41 GB/s (2 threads, Zen 5).
const PREFETCH_BYTES: usize = 8192;

/// Prefetches the cache lines of `[p, p + len)` shifted [`PREFETCH_BYTES`] ahead. Prefetches
/// never fault, so reading past the matrix's end is harmless.
#[inline(always)]
unsafe fn prefetch_ahead(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: a prefetch is a hint; an address outside any mapping is ignored.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES + off) as *const i8) };
        off += 64;
    }
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

/// Q5_0's fifth bits from the 32-bit `qh` at `p`: byte i all ones where bit i is set. Byte i of
/// the spread keeps bit (i mod 8) of its source byte and sets every other bit, so comparing
/// with all-ones tests that bit (ggml's bytes_from_bits_32).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let qh = unsafe { (p as *const i32).read_unaligned() };
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bit = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    let spread = _mm256_or_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(qh), shuf), bit);
    _mm256_cmpeq_epi8(spread, _mm256_set1_epi64x(-1))
}

/// 16 bytes of nibble pairs (Q4_0/Q5_0: byte i holds element i low, i + 16 high) as 32
/// bytes in element order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn nibbles(q: __m128i) -> __m256i {
    let m4 = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(q, 4), m4),
        _mm_and_si128(q, m4),
    )
}

/// Half `half` (128 elements) of the Q6_K block at `b` as four vectors of 32 codes 0..63
/// (elements 32g..32g+32 in vector g; the value is code − 32).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q6_k_codes(b: *const u8, half: usize) -> [__m256i; 4] {
    let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
    let (la, lb, qh) = unsafe {
        let ql = b.add(64 * half);
        (
            _mm256_loadu_si256(ql as *const __m256i),
            _mm256_loadu_si256(ql.add(32) as *const __m256i),
            _mm256_loadu_si256(b.add(128 + 32 * half) as *const __m256i),
        )
    };
    let top = |shift: i32| {
        let h = match shift {
            0 => qh,
            2 => _mm256_srli_epi16(qh, 2),
            4 => _mm256_srli_epi16(qh, 4),
            _ => _mm256_srli_epi16(qh, 6),
        };
        _mm256_slli_epi16(_mm256_and_si256(h, m2), 4)
    };
    let high = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    [
        _mm256_or_si256(_mm256_and_si256(la, m4), top(0)),
        _mm256_or_si256(_mm256_and_si256(lb, m4), top(2)),
        _mm256_or_si256(high(la), top(4)),
        _mm256_or_si256(high(lb), top(6)),
    ]
}

/// The Q4_K row loop of the exact and int8 kernels: for every row of `$out`, runs `$body` for
/// each pair `$c` of sub-blocks (2c, 2c + 1: low and high nibbles of the 32 bytes at `$qs`) of
/// each super-block `$i`, with their `(d·sc, dmin·m)` in `$sm`, then stores
/// `Σ $acc − $mins`. The weight stream is prefetched ahead.
macro_rules! q4_k_rows {
    ($w:ident, $rows:expr, $stride:expr, $blocks:expr, $out:expr,
     |$acc:ident, $mins:ident, $i:ident, $c:ident, $qs:ident, $sm:ident| $body:block) => {
        for (r, o) in $out.iter_mut().enumerate() {
            unsafe {
                let row = $rows.as_ptr().add(r * $stride);
                let mut $acc = [$w::zero(); 2];
                let mut $mins = 0.0f32;
                for $i in 0..$blocks {
                    prefetch_ahead(row.add(144 * $i), 144);
                    let b = row.add(144 * $i);
                    let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
                    let scales = std::slice::from_raw_parts(b.add(4), 12);
                    for $c in 0..4 {
                        let $qs = b.add(16 + 32 * $c);
                        let (sc1, m1) = scale_min_k4(2 * $c, scales);
                        let (sc2, m2) = scale_min_k4(2 * $c + 1, scales);
                        let $sm = [
                            (d * f32::from(sc1), dmin * f32::from(m1)),
                            (d * f32::from(sc2), dmin * f32::from(m2)),
                        ];
                        $body
                    }
                }
                *o = $w::hsum($w::add($acc[0], $acc[1])) - $mins;
            }
        }
    };
}

/// The Q6_K row loop of the exact and int8 kernels: for every row of `$out`, runs `$body` for
/// each group `$g` of 32 codes `$q` ([`q6_k_codes`]) of each half `$half` of each block `$i`,
/// with the block's `$d` and the half's 8 i8 scales at `$sc`, then stores `Σ $acc`. The
/// weight stream is prefetched ahead.
macro_rules! q6_k_rows {
    ($w:ident, $rows:expr, $stride:expr, $blocks:expr, $out:expr,
     |$acc:ident, $i:ident, $half:ident, $g:ident, $q:ident, $d:ident, $sc:ident| $body:block) => {
        for (r, o) in $out.iter_mut().enumerate() {
            unsafe {
                let row = $rows.as_ptr().add(r * $stride);
                let mut $acc = [$w::zero(); 2];
                for $i in 0..$blocks {
                    prefetch_ahead(row.add(210 * $i), 210);
                    let b = row.add(210 * $i);
                    let $d = f16_at(b.add(208));
                    for $half in 0..2 {
                        let $sc = b.add(192 + 8 * $half) as *const i8;
                        for ($g, $q) in q6_k_codes(b, $half).into_iter().enumerate() {
                            $body
                        }
                    }
                }
                *o = $w::hsum($w::add($acc[0], $acc[1]));
            }
        }
    };
}

/// Defines `sum_blocks` (compiled for features `$feat`, accumulating in `$w` vectors): shared
/// by the exact fused kernels and the int8 decode kernels (`int8`).
macro_rules! sum_blocks_fn {
    ($feat:literal, $w:ident) => {
        /// `Σ_i d_i·s_i` over one row's `blocks` blocks of `block_bytes` each, for
        /// `block(i) = (s_i, d_i)`: two accumulators, unrolled by hand (an array indexed by
        /// `i & 1` would stay in memory), the weight stream prefetched ahead.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn sum_blocks(
            row: *const u8,
            block_bytes: usize,
            blocks: usize,
            block: impl Fn(usize) -> ($w::V, f32),
        ) -> f32 {
            let (mut acc0, mut acc1) = ($w::zero(), $w::zero());
            let mut i = 0;
            while i + 2 <= blocks {
                unsafe { prefetch_ahead(row.wrapping_add(block_bytes * i), 2 * block_bytes) };
                let (s0, d0) = block(i);
                let (s1, d1) = block(i + 1);
                acc0 = $w::fma_scalar(acc0, s0, d0);
                acc1 = $w::fma_scalar(acc1, s1, d1);
                i += 2;
            }
            if i < blocks {
                let (s0, d0) = block(i);
                acc0 = $w::fma_scalar(acc0, s0, d0);
            }
            $w::hsum($w::add(acc0, acc1))
        }
    };
}

/// Fused row kernels over the helpers in module `$w`, compiled for features `$feat`.
macro_rules! fused_kernels {
    ($feat:literal, $w:ident) => {
        sum_blocks_fn!($feat, $w);

        /// `halves` holds `Σx / 2` per 32-block of `x` (see `dot_q4_0`).
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q4_0(
            rows: &[u8],
            stride: usize,
            x: &[f32],
            halves: &[f32],
            out: &mut [f32],
        ) {
            let blocks = x.len() / 32;
            debug_assert!(rows.len() >= out.len() * stride && halves.len() >= blocks);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let block = |i: usize| {
                        let b = row.add(18 * i);
                        let h = *halves.get_unchecked(i);
                        let s = $w::dot_q4_0(b.add(2), x.as_ptr().add(32 * i), h);
                        (s, f16_at(b))
                    };
                    *o = sum_blocks(row, 18, blocks, block);
                }
            }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q5_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
            let blocks = x.len() / 32;
            debug_assert!(rows.len() >= out.len() * stride);
            let high = _mm256_set1_epi8(0xF0u8 as i8);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let block = |i: usize| {
                        let b = row.add(22 * i);
                        let set = fifth_bits(b.add(2));
                        let nib = nibbles(_mm_loadu_si128(b.add(6) as *const __m128i));
                        // A clear fifth bit means value − 16: set the top nibble (two's complement).
                        let v = _mm256_or_si256(nib, _mm256_andnot_si256(set, high));
                        let s = $w::dot32(
                            _mm256_castsi256_si128(v),
                            _mm256_extracti128_si256(v, 1),
                            x.as_ptr().add(32 * i),
                        );
                        (s, f16_at(b))
                    };
                    *o = sum_blocks(row, 22, blocks, block);
                }
            }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q8_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
            let blocks = x.len() / 32;
            debug_assert!(rows.len() >= out.len() * stride);
            for (r, o) in out.iter_mut().enumerate() {
                unsafe {
                    let row = rows.as_ptr().add(r * stride);
                    let block = |i: usize| {
                        let b = row.add(34 * i);
                        let lo = _mm_loadu_si128(b.add(2) as *const __m128i);
                        let hi = _mm_loadu_si128(b.add(18) as *const __m128i);
                        let s = $w::dot32(lo, hi, x.as_ptr().add(32 * i));
                        (s, f16_at(b))
                    };
                    *o = sum_blocks(row, 34, blocks, block);
                }
            }
        }

        /// Per sub-block `d·sc·Σ q·x`, minus `Σ dmin·m·Σx` with `Σx` from `sums32`.
        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q4_k(
            rows: &[u8],
            stride: usize,
            x: &[f32],
            sums32: &[f32],
            out: &mut [f32],
        ) {
            let blocks = x.len() / 256;
            debug_assert!(rows.len() >= out.len() * stride && sums32.len() >= blocks * 8);
            let m4 = _mm_set1_epi8(0x0F);
            q4_k_rows!($w, rows, stride, blocks, out, |acc, mins, i, c, qs, sm| {
                let qa = _mm_loadu_si128(qs as *const __m128i);
                let qb = _mm_loadu_si128(qs.add(16) as *const __m128i);
                let xp = x.as_ptr().add(256 * i + 64 * c);
                let s1 = $w::dot32(_mm_and_si128(qa, m4), _mm_and_si128(qb, m4), xp);
                let s2 = $w::dot32(
                    _mm_and_si128(_mm_srli_epi16(qa, 4), m4),
                    _mm_and_si128(_mm_srli_epi16(qb, 4), m4),
                    xp.add(32),
                );
                acc[0] = $w::fma_scalar(acc[0], s1, sm[0].0);
                acc[1] = $w::fma_scalar(acc[1], s2, sm[1].0);
                mins += sm[0].1 * *sums32.get_unchecked(8 * i + 2 * c)
                    + sm[1].1 * *sums32.get_unchecked(8 * i + 2 * c + 1);
            });
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn rows_q6_k(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
            let blocks = x.len() / 256;
            debug_assert!(rows.len() >= out.len() * stride);
            let bias = _mm256_set1_epi8(32);
            q6_k_rows!(
                $w,
                rows,
                stride,
                blocks,
                out,
                |acc, i, half, g, q, d, sc| {
                    let xh = x.as_ptr().add(256 * i + 128 * half);
                    let q = _mm256_sub_epi8(q, bias);
                    let s_lo = $w::dot16(_mm256_castsi256_si128(q), xh.add(32 * g));
                    let s_hi = $w::dot16(_mm256_extracti128_si256(q, 1), xh.add(32 * g + 16));
                    let (sa, sb) = (*sc.add(2 * g), *sc.add(2 * g + 1));
                    acc[0] = $w::fma_scalar(acc[0], s_lo, d * f32::from(sa));
                    acc[1] = $w::fma_scalar(acc[1], s_hi, d * f32::from(sb));
                }
            );
        }
    };
}

pub(super) mod int8;

mod avx2 {
    use super::*;
    fused_kernels!("avx2,fma,f16c", w256);
}

mod avx512 {
    use super::*;
    fused_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl", w512);
}

pub(crate) static KERNELS: Kernels = Kernels {
    q4_0: avx2::rows_q4_0,
    q5_0: avx2::rows_q5_0,
    q8_0: avx2::rows_q8_0,
    q4_k: avx2::rows_q4_k,
    q6_k: avx2::rows_q6_k,
    dot_f32,
    micro,
    mr: 6,
    q4_0_reads_sums: true,
};

pub(crate) static KERNELS_512: Kernels = Kernels {
    q4_0: avx512::rows_q4_0,
    q5_0: avx512::rows_q5_0,
    q8_0: avx512::rows_q8_0,
    q4_k: avx512::rows_q4_k,
    q6_k: avx512::rows_q6_k,
    dot_f32,
    micro: micro_512,
    mr: 12,
    q4_0_reads_sums: false,
};

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
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let mut s = w256::hsum(_mm256_add_ps(
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
unsafe fn micro(
    kc: usize,
    x: &[f32],
    xs: usize,
    mr: usize,
    w: &[f32],
    c: &mut [[f32; NR]; MR_MAX],
) {
    debug_assert!(w.len() >= kc * NR && x.len() >= (mr - 1) * xs + kc);
    let (x, w) = (x.as_ptr(), w.as_ptr());
    unsafe {
        match mr {
            1 => micro_n::<1>(kc, x, xs, w, c),
            2 => micro_n::<2>(kc, x, xs, w, c),
            3 => micro_n::<3>(kc, x, xs, w, c),
            4 => micro_n::<4>(kc, x, xs, w, c),
            5 => micro_n::<5>(kc, x, xs, w, c),
            _ => micro_n::<6>(kc, x, xs, w, c),
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
    c: &mut [[f32; NR]; MR_MAX],
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

#[target_feature(enable = "avx512f")]
unsafe fn micro_512(
    kc: usize,
    x: &[f32],
    xs: usize,
    mr: usize,
    w: &[f32],
    c: &mut [[f32; NR]; MR_MAX],
) {
    debug_assert!(w.len() >= kc * NR && x.len() >= (mr - 1) * xs + kc);
    let (x, w) = (x.as_ptr(), w.as_ptr());
    unsafe {
        match mr {
            1 => micro_512_n::<1>(kc, x, xs, w, c),
            2 => micro_512_n::<2>(kc, x, xs, w, c),
            3 => micro_512_n::<3>(kc, x, xs, w, c),
            4 => micro_512_n::<4>(kc, x, xs, w, c),
            5 => micro_512_n::<5>(kc, x, xs, w, c),
            6 => micro_512_n::<6>(kc, x, xs, w, c),
            7 => micro_512_n::<7>(kc, x, xs, w, c),
            8 => micro_512_n::<8>(kc, x, xs, w, c),
            9 => micro_512_n::<9>(kc, x, xs, w, c),
            10 => micro_512_n::<10>(kc, x, xs, w, c),
            11 => micro_512_n::<11>(kc, x, xs, w, c),
            _ => micro_512_n::<12>(kc, x, xs, w, c),
        }
    }
}

/// `M` tokens × 16 rows: one accumulator per token, one weight load per step, each token's
/// activation broadcast straight from memory into its FMA.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn micro_512_n<const M: usize>(
    kc: usize,
    x: *const f32,
    xs: usize,
    w: *const f32,
    c: &mut [[f32; NR]; MR_MAX],
) {
    unsafe {
        let mut acc = [_mm512_setzero_ps(); M];
        for k in 0..kc {
            let wk = _mm512_loadu_ps(w.add(k * NR));
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(t * xs + k)), wk, *a);
            }
        }
        for (a, ct) in acc.iter().zip(c.iter_mut()) {
            _mm512_storeu_ps(ct.as_mut_ptr(), *a);
        }
    }
}
