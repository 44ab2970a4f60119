//! Rotary position embeddings, NeoX ("rotate-half") layout, as transformers computes them:
//! inverse frequencies and angles in f32, frequency pairs beyond the rotated fraction set to
//! zero ("proportional" RoPE: they pass through unchanged).

use burn::tensor::{Device, Tensor};

use super::config::RopeParams;
use super::ops::from_host;

/// Inverse frequencies for a head of `head_dim`: `θ^(-2j/head_dim)` for the rotated pairs,
/// 0 for the rest. Note the exponent's denominator is the whole head, not the rotated part.
pub fn inverse_frequencies(params: RopeParams, head_dim: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let rotated = ((params.partial_rotary_factor * head_dim as f64) as usize / 2).min(half);
    let base = params.theta as f32;
    let scale = params.scaling_factor as f32;
    (0..half)
        .map(|j| {
            if j < rotated {
                1.0f32 / base.powf((2 * j) as f32 / head_dim as f32) / scale
            } else {
                0.0
            }
        })
        .collect()
}

/// cos/sin tables for `positions`, each `[T, 1, head_dim/2]` to broadcast over heads.
#[derive(Clone)]
pub struct RopeTables {
    pub cos: Tensor<3>,
    pub sin: Tensor<3>,
}

impl RopeTables {
    pub fn new(inv_freq: &[f32], positions: &[usize], device: &Device) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = [positions.len(), 1, half];
        RopeTables {
            cos: from_host(cos, shape, device),
            sin: from_host(sin, shape, device),
        }
    }

    /// Keeps the rows of the last `n` positions.
    pub fn last(&self, n: usize) -> Self {
        let t = self.cos.dims()[0];
        RopeTables {
            cos: self.cos.clone().narrow(0, t - n, n),
            sin: self.sin.clone().narrow(0, t - n, n),
        }
    }

    /// [`apply`](Self::apply) to `x` RMS-normed with `weight` (`[1, 1, head_dim]`): a query's
    /// or key's norm and rotation, one kernel on the GPU.
    pub fn apply_normed(&self, x: Tensor<3>, weight: &Tensor<3>, eps: f32) -> Tensor<3> {
        #[cfg(feature = "gpu")]
        if !super::ops::is_host(&x.device()) {
            return crate::kernels::gpu::ops::rms_norm_rope(x, weight, &self.cos, &self.sin, eps);
        }
        self.apply(super::ops::rms_norm(x, Some(weight), eps))
    }

    /// `x`: `[T, heads, head_dim]`. On the GPU one kernel (kernels::gpu::kernels::rope_rows)
    /// instead of eight burn ops.
    pub fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        #[cfg(feature = "gpu")]
        if !super::ops::is_host(&x.device()) {
            return crate::kernels::gpu::ops::rope(x, &self.cos, &self.sin);
        }
        let half = x.dims()[2] / 2;
        let x1 = x.clone().narrow(2, 0, half);
        let x2 = x.narrow(2, half, half);
        let out1 = x1.clone() * self.cos.clone() - x2.clone() * self.sin.clone();
        let out2 = x2 * self.cos.clone() + x1 * self.sin.clone();
        Tensor::cat(vec![out1, out2], 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional_rope_rotates_only_the_leading_pairs() {
        // Gemma 4 full layers: head 512, factor 0.25 → 64 rotated pairs, exponent over 512.
        let f = inverse_frequencies(
            RopeParams {
                theta: 1e6,
                partial_rotary_factor: 0.25,
                scaling_factor: 1.0,
            },
            512,
        );
        assert_eq!(f.len(), 256);
        assert_eq!(f[0], 1.0);
        let expected_63 = 1e6f64.powf(-126.0 / 512.0);
        assert!(((f[63] as f64) - expected_63).abs() < 1e-9);
        assert!(f[64..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn default_rope_uses_every_pair() {
        let f = inverse_frequencies(
            RopeParams {
                theta: 1e4,
                partial_rotary_factor: 1.0,
                scaling_factor: 1.0,
            },
            256,
        );
        let expected_last = 1e4f64.powf(-254.0 / 256.0);
        assert!(((f[127] as f64) - expected_last).abs() / expected_last < 1e-6);
    }
}
