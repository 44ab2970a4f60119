//! Plain-Rust kernels: the fallback on every target and the structure the SIMD versions follow.
//! Each fused kernel computes, per block, the integer-valued quants as f32, their dot with `x`,
//! and then scales it (`d·Σ q·x`), the same factorisation as the SIMD kernels.

use half::f16;

use super::{Kernels, MR_MAX, NR};

pub(crate) static KERNELS: Kernels = Kernels {
    q4_0: rows_q4_0,
    q5_0: rows_q5_0,
    q8_0: rows_q8_0,
    q4_k: rows_q4_k,
    q6_k: rows_q6_k,
    dot_f32: dot_f32_unsafe,
    micro,
    mr: 6,
    q4_0_reads_sums: false,
};

#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dot product with eight independent accumulators (vectorises without `unsafe`).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

unsafe fn dot_f32_unsafe(a: &[f32], b: &[f32]) -> f32 {
    dot_f32(a, b)
}

/// `Σ q[j]·x[j]` over 32 values with four partial sums.
#[inline]
fn dot32(q: &[f32; 32], x: &[f32; 32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for c in 0..4 {
        for k in 0..8 {
            acc[k] += q[8 * c + k] * x[8 * c + k];
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7])
}

fn for_rows(rows: &[u8], stride: usize, out: &mut [f32], mut f: impl FnMut(&[u8]) -> f32) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(stride)) {
        *o = f(row);
    }
}

fn rows_q4_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    for_rows(rows, stride, out, |row| {
        let mut acc = 0.0f32;
        for (b, xb) in row.as_chunks::<18>().0.iter().zip(x.as_chunks::<32>().0) {
            let mut q = [0.0f32; 32];
            for j in 0..16 {
                q[j] = f32::from((b[2 + j] & 0x0F) as i8 - 8);
                q[j + 16] = f32::from((b[2 + j] >> 4) as i8 - 8);
            }
            acc += f16_at(b, 0) * dot32(&q, xb);
        }
        acc
    });
}

fn rows_q5_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    for_rows(rows, stride, out, |row| {
        let mut acc = 0.0f32;
        for (b, xb) in row.as_chunks::<22>().0.iter().zip(x.as_chunks::<32>().0) {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let mut q = [0.0f32; 32];
            for j in 0..16 {
                let h0 = (((qh >> j) & 1) << 4) as u8;
                let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
                q[j] = f32::from(((b[6 + j] & 0x0F) | h0) as i8 - 16);
                q[j + 16] = f32::from(((b[6 + j] >> 4) | h1) as i8 - 16);
            }
            acc += f16_at(b, 0) * dot32(&q, xb);
        }
        acc
    });
}

fn rows_q8_0(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    for_rows(rows, stride, out, |row| {
        let mut acc = 0.0f32;
        for (b, xb) in row.as_chunks::<34>().0.iter().zip(x.as_chunks::<32>().0) {
            let mut q = [0.0f32; 32];
            for j in 0..32 {
                q[j] = f32::from(b[2 + j] as i8);
            }
            acc += f16_at(b, 0) * dot32(&q, xb);
        }
        acc
    });
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K block (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Per sub-block: `d·sc·Σ q·x − dmin·m·Σ x`, with `Σ x` from `sums32`.
fn rows_q4_k(rows: &[u8], stride: usize, x: &[f32], sums32: &[f32], out: &mut [f32]) {
    for_rows(rows, stride, out, |row| {
        let (mut acc, mut mins) = (0.0f32, 0.0f32);
        for (i, (b, xb)) in row
            .as_chunks::<144>()
            .0
            .iter()
            .zip(x.as_chunks::<256>().0)
            .enumerate()
        {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            for c in 0..4 {
                let qs = &b[16 + 32 * c..48 + 32 * c];
                let (mut lo, mut hi) = ([0.0f32; 32], [0.0f32; 32]);
                for l in 0..32 {
                    lo[l] = f32::from(qs[l] & 0x0F);
                    hi[l] = f32::from(qs[l] >> 4);
                }
                let x1: &[f32; 32] = xb[64 * c..64 * c + 32].try_into().expect("32");
                let x2: &[f32; 32] = xb[64 * c + 32..64 * c + 64].try_into().expect("32");
                let (sc1, m1) = scale_min_k4(2 * c, scales);
                let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                acc += d * f32::from(sc1) * dot32(&lo, x1) + d * f32::from(sc2) * dot32(&hi, x2);
                mins += dmin * f32::from(m1) * sums32[8 * i + 2 * c]
                    + dmin * f32::from(m2) * sums32[8 * i + 2 * c + 1];
            }
        }
        acc - mins
    });
}

fn rows_q6_k(rows: &[u8], stride: usize, x: &[f32], _: &[f32], out: &mut [f32]) {
    for_rows(rows, stride, out, |row| {
        let mut acc = 0.0f32;
        for (b, xb) in row.as_chunks::<210>().0.iter().zip(x.as_chunks::<256>().0) {
            let d = f16_at(b, 208);
            for half in 0..2 {
                let ql = &b[64 * half..64 * half + 64];
                let qh = &b[128 + 32 * half..160 + 32 * half];
                let sc = &b[192 + 8 * half..200 + 8 * half];
                let xh = &xb[128 * half..128 * half + 128];
                // Group g holds elements 32g..32g+32 of this half.
                let mut q = [[0.0f32; 32]; 4];
                for l in 0..32 {
                    q[0][l] = f32::from(((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32);
                    q[1][l] =
                        f32::from(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32);
                    q[2][l] = f32::from(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32);
                    q[3][l] = f32::from(((ql[l + 32] >> 4) | ((qh[l] >> 6) << 4)) as i8 - 32);
                }
                for (g, qg) in q.iter().enumerate() {
                    for s in 0..2 {
                        let mut sum = 0.0f32;
                        for l in 16 * s..16 * s + 16 {
                            sum += qg[l] * xh[32 * g + l];
                        }
                        acc += d * f32::from(sc[2 * g + s] as i8) * sum;
                    }
                }
            }
        }
        acc
    });
}

fn micro(kc: usize, x: &[f32], xs: usize, mr: usize, w: &[f32], c: &mut [[f32; NR]; MR_MAX]) {
    match mr {
        1 => micro_n::<1>(kc, x, xs, w, c),
        2 => micro_n::<2>(kc, x, xs, w, c),
        3 => micro_n::<3>(kc, x, xs, w, c),
        4 => micro_n::<4>(kc, x, xs, w, c),
        5 => micro_n::<5>(kc, x, xs, w, c),
        _ => micro_n::<6>(kc, x, xs, w, c),
    }
}

#[inline(always)]
fn micro_n<const M: usize>(
    kc: usize,
    x: &[f32],
    xs: usize,
    w: &[f32],
    c: &mut [[f32; NR]; MR_MAX],
) {
    let mut acc = [[0.0f32; NR]; M];
    for (k, wk) in w.as_chunks::<NR>().0.iter().take(kc).enumerate() {
        for (t, a) in acc.iter_mut().enumerate() {
            let xv = x[t * xs + k];
            for j in 0..NR {
                a[j] += xv * wk[j];
            }
        }
    }
    c[..M].copy_from_slice(&acc);
}
