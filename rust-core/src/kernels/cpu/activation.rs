//! Element-wise activations on host slices, written so the compiler vectorises them (no
//! branches, no libm calls): on the decode path burn's `tanh` (scalar libm `tanhf`/`expm1f`)
//! over the 6144/12288-wide MLP took ~7% of an E2B step.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that `n · LN2_HI` is exact for |n| < 2^9.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` in f32 within 2 ulp for x ≥ −87.3, 0 below (no subnormals: a masked attention
/// score comes out exactly 0), `+inf` above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 89.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series to r⁷/7!: |r| ≤ ln2/2 leaves a relative error below 2e-9.
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // n ∈ [−126, 129]: 2^n as exponent bits (255 is +inf, which is what e^x is there).
    let bits = ((n as i32 + 127).clamp(0, 255) as u32) << 23;
    if underflow {
        0.0
    } else {
        p * f32::from_bits(bits)
    }
}

/// `gate[i] = gelu_tanh(gate[i]) · up[i]`, with gelu_tanh(x) = ½x(1 + tanh(√(2/π)(x +
/// 0.044715x³))) computed as x / (1 + e^(−2u)) (the same function: ½(1 + tanh u) is the logistic
/// of 2u), so one exponential and one division per element.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gate and up widths differ");
    let k = 2.0 * (2.0 / std::f64::consts::PI).sqrt() as f32;
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        let two_u = k * (x + 0.044715 * x * x * x);
        *g = x / (1.0 + exp(-two_u)) * u;
    }
}

/// `v ← cap · tanh(v / cap)` (final-logit soft-capping), as (1 − e^(−2|z|)) / (1 + e^(−2|z|))
/// with the sign of z: within 2.5e-7 of tanh, so within 8e-6 (4 ulp of 30) on a cap of 30.
pub fn softcap(values: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    for v in values {
        let z = *v * inv;
        let t = exp(-2.0 * z.abs());
        *v = ((1.0 - t) / (1.0 + t)).copysign(z) * cap;
    }
}

/// `x / sqrt(mean(x²) + eps) · w` over each run of `width` values (`w` of length `width`, or
/// none), with the mean of squares summed in f32 over eight lanes.
pub fn rms_norm_rows(values: &mut [f32], width: usize, weight: Option<&[f32]>, eps: f32) {
    for row in values.chunks_exact_mut(width.max(1)) {
        let mean_sq = super::dot(row, row) / width as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        match weight {
            Some(w) => row.iter_mut().zip(w).for_each(|(v, &w)| *v = *v * inv * w),
            None => row.iter_mut().for_each(|v| *v *= inv),
        }
    }
}

/// Softmax over each run of `width` values, over the entries `visible` allows only (the others
/// become 0): row `r` uses `visible[(r % k)·width..][..width]` where `k = visible.len() / width`
/// (grouped query heads repeat the same queries). A row that sees nothing becomes all zeros.
pub fn softmax_rows_visible(values: &mut [f32], width: usize, visible: &[bool]) {
    let width = width.max(1);
    let k = (visible.len() / width).max(1);
    for (r, row) in values.chunks_exact_mut(width).enumerate() {
        let seen = &visible[(r % k) * width..(r % k + 1) * width];
        let max = row
            .iter()
            .zip(seen)
            .filter(|(_, s)| **s)
            .fold(f32::NEG_INFINITY, |m, (v, _)| m.max(*v));
        let mut total = 0.0f32;
        for (v, &s) in row.iter_mut().zip(seen) {
            *v = if s { exp(*v - max) } else { 0.0 };
            total += *v;
        }
        let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// The first index of the largest value, NaN never winning over a number (0 for an empty
/// slice): greedy sampling's pick, the MTP assistant's draft and the LM head's `argmax_rows`.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest finite values with their indices, largest first; ties go to the lower
/// index (the order `GpuLinear::top_k_rows` picks in on the device).
pub fn top_k(values: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut picks: Vec<(u32, f32)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k > 0 && k < picks.len() {
        picks.select_nth_unstable_by(k - 1, order);
        picks.truncate(k);
    }
    picks.sort_unstable_by(order);
    picks.truncate(k);
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = (f32::from_bits(b32.abs().to_bits() + 1) - b32.abs()) as f64;
        (a as f64 - b).abs() / ulp
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 1.234_5e-4;
            worst = worst.max(ulps(exp(x), (x as f64).exp()));
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(-1e30), 0.0);
    }

    #[test]
    fn masked_softmax_matches_f64_over_the_visible_entries() {
        let width = 37;
        let values: Vec<f32> = (0..width * 6)
            .map(|i| ((i * 7919) % 113) as f32 * 0.37 - 20.0)
            .collect();
        // Two query patterns, repeated over three groups of rows.
        let visible: Vec<bool> = (0..2 * width).map(|i| i % 3 != 1 || i == 1).collect();
        let mut got = values.clone();
        softmax_rows_visible(&mut got, width, &visible);
        let eps = f32::EPSILON as f64;
        for (r, row) in values.chunks_exact(width).enumerate() {
            let seen = &visible[(r % 2) * width..(r % 2 + 1) * width];
            let max = row
                .iter()
                .zip(seen)
                .filter(|(_, s)| **s)
                .fold(f64::MIN, |m, (&x, _)| m.max(x as f64));
            let total: f64 = row
                .iter()
                .zip(seen)
                .filter(|(_, s)| **s)
                .map(|(&x, _)| (x as f64 - max).exp())
                .sum();
            for (c, (&x, &s)) in row.iter().zip(seen).enumerate() {
                let g = got[r * width + c] as f64;
                if !s {
                    assert_eq!(g, 0.0);
                    continue;
                }
                let want = (x as f64 - max).exp() / total;
                // Rounding x − max in f32 moves e^(x − max) by up to |x − max|·ε relative, on
                // top of the exponential's and the division's own rounding.
                let bound = (4.0 + (x as f64 - max).abs()) * eps * want;
                assert!((g - want).abs() <= bound, "row {r} col {c}: {g} vs {want}");
            }
        }
        let mut none = vec![1.0f32; 4];
        softmax_rows_visible(&mut none, 4, &[false; 4]);
        assert_eq!(none, vec![0.0; 4]);
    }

    #[test]
    fn rms_norm_rows_match_f64() {
        let width = 70;
        let values: Vec<f32> = (0..width * 3)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let weight: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 / 50.0).collect();
        for w in [Some(&weight[..]), None] {
            let mut got = values.clone();
            rms_norm_rows(&mut got, width, w, 1e-6);
            for (row, got) in values.chunks(width).zip(got.chunks(width)) {
                let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64;
                for (i, (&v, &g)) in row.iter().zip(got).enumerate() {
                    let scale = w.map_or(1.0, |w| w[i] as f64);
                    let want = v as f64 / (ms + 1e-6).sqrt() * scale;
                    assert!(
                        (g as f64 - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs().max(1e-3)
                    );
                }
            }
        }
    }

    #[test]
    fn softcap_matches_tanh_in_f64() {
        let cap = 30.0f32;
        let mut v: Vec<f32> = (-20_000..20_000).map(|i| i as f32 * 0.01 + 3e-3).collect();
        let want: Vec<f64> = v
            .iter()
            .map(|&x| (x as f64 / cap as f64).tanh() * cap as f64)
            .collect();
        softcap(&mut v, cap);
        for (got, want) in v.iter().zip(&want) {
            assert!(((*got as f64) - want).abs() <= 8e-6, "{got} vs {want}");
        }
        let mut edge = [0.0f32, -0.0, 1e9, -1e9];
        softcap(&mut edge, cap);
        assert_eq!(edge, [0.0, -0.0, 30.0, -30.0]);
    }

    #[test]
    fn gelu_matches_the_tanh_formula_in_f64() {
        // The reference is transformers' gelu_pytorch_tanh, ½x(1 + tanh u), in f64, written
        // x / (1 + e^(−2u)) because in f64 1 + tanh u cancels to 0 for u < −19.
        let reference = |x: f64| {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
            x / (1.0 + (-2.0 * u).exp())
        };
        let xs: Vec<f32> = (-4000..4000).map(|i| i as f32 * 2.5e-3 + 1e-4).collect();
        let up: Vec<f32> = xs.iter().map(|x| 1.0 + x.abs()).collect();
        let mut g = xs.clone();
        gelu_tanh_mul(&mut g, &up);
        for ((&x, &u), &got) in xs.iter().zip(&up).zip(&g) {
            let want = reference(x as f64) * u as f64;
            // Any f32 evaluation rounds the argument 2u = 2√(2/π)(x + 0.044715x³) first; the
            // result's sensitivity to that is x·u·σ'(2u)·2u, with σ the logistic function.
            let (xf, uf) = (x as f64, u as f64);
            let two_u = 2.0 * (2.0 / std::f64::consts::PI).sqrt() * (xf + 0.044715 * xf.powi(3));
            let s = 1.0 / (1.0 + (-two_u).exp());
            let conditioning = (xf * uf * s * (1.0 - s) * two_u).abs();
            let eps = f32::EPSILON as f64;
            assert!(
                ((got as f64) - want).abs() <= 4.0 * eps * (want.abs() + conditioning),
                "x = {x}: {got} vs {want}"
            );
        }
        let mut big = vec![-30.0f32, 30.0, 0.0];
        gelu_tanh_mul(&mut big, &[1.0, 1.0, 1.0]);
        assert_eq!(big[1], 30.0);
        assert!(big[0] == 0.0 && big[2] == 0.0);
    }
}
