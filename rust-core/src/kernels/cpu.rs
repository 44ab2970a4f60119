//! CPU matrix products over weights that stay in the mapped file.
//!
//! `y[t, o] = Σ_i x[t, i] · W[o, i]` with `W` stored `[out, in]` in its file encoding. Each
//! worker decodes one weight row at a time into a small f32 buffer and dots it with every input
//! row, so a weight byte is read once per call whatever the number of tokens. This is the f32
//! reference path; the quantized SIMD kernels of the performance work plug in here.

use rayon::prelude::*;

use crate::weights::{MappedTensor, decode_f32};

/// Output rows handed to one task; large enough to amortise scheduling, small enough to
/// balance 262144-row LM heads over every core.
const ROWS_PER_TASK: usize = 64;

/// `x` is `[tokens, in]` row-major; returns `[tokens, out]`.
pub fn matmul_mapped(x: &[f32], tokens: usize, weight: &MappedTensor) -> Vec<f32> {
    let (out_dim, in_dim) = (weight.rows(), weight.cols());
    assert_eq!(
        x.len(),
        tokens * in_dim,
        "activation shape does not match the weight"
    );
    // Computed transposed ([out, tokens]) so each task owns a contiguous block of the result.
    let mut out_t = vec![0.0f32; out_dim * tokens];
    out_t
        .par_chunks_mut(ROWS_PER_TASK * tokens.max(1))
        .enumerate()
        .for_each(|(task, block)| {
            let mut row = vec![0.0f32; in_dim];
            let first = task * ROWS_PER_TASK;
            for (r, dst) in block.chunks_exact_mut(tokens.max(1)).enumerate() {
                decode_f32(weight.row_bytes(first + r), weight.dtype(), &mut row);
                for (t, d) in dst.iter_mut().enumerate() {
                    *d = dot(&row, &x[t * in_dim..(t + 1) * in_dim]);
                }
            }
        });
    transpose(&out_t, out_dim, tokens)
}

/// Dot product with eight independent accumulators (vectorises without `unsafe`).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// `[rows, cols]` → `[cols, rows]`.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum_for_odd_lengths() {
        for n in [0usize, 1, 7, 8, 9, 31, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5, "n = {n}");
        }
    }

    #[test]
    fn transpose_moves_every_element() {
        let src: Vec<f32> = (0..6).map(|v| v as f32).collect(); // [[0,1,2],[3,4,5]]
        assert_eq!(transpose(&src, 2, 3), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
