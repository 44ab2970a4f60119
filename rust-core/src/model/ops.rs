//! Small graph operations shared by the model files, written once on burn tensors.

use burn::tensor::{Device, Tensor};

pub use crate::device::{from_host, is_host, to_host};
use crate::error::Result;

/// `x / sqrt(mean(x²) + eps) * w` over the last axis (Gemma 4: no `1 + w`). `weight` is the
/// scale broadcast to `x`'s rank (e.g. `[1, H]`), or `None` for the weightless value norm.
/// On the CPU one host pass (kernels::cpu::activation::rms_norm_rows), on the GPU one kernel
/// (kernels::gpu::kernels::rms_norm_rows), instead of six burn ops: a decode step runs ~300
/// of these.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Option<&Tensor<D>>, eps: f32) -> Tensor<D> {
    if is_host(&x.device()) {
        let (shape, device) = (x.dims(), x.device());
        let host = to_host(x.clone()).and_then(|mut values| {
            let w = weight.map(|w| to_host(w.clone())).transpose()?;
            crate::kernels::cpu::activation::rms_norm_rows(
                &mut values,
                shape[D - 1],
                w.as_deref(),
                eps,
            );
            Ok(values)
        });
        if let Ok(values) = host {
            return from_host(values, shape, &device);
        }
    }
    #[cfg(feature = "gpu")]
    if !is_host(&x.device()) {
        return crate::kernels::gpu::ops::rms_norm(x, weight, None, eps, 1.0);
    }
    let mean_sq = (x.clone() * x.clone()).mean_dim(D - 1);
    let normed = x * (mean_sq + eps).powf_scalar(-0.5);
    match weight {
        Some(w) => normed * w.clone(),
        None => normed,
    }
}

/// `(residual + rms_norm(y, weight)) · scale`: a sub-layer's output joining the residual
/// stream, times Gemma 4's layer scalar where it is the layer's last sum (`scale` 1
/// otherwise). On the GPU one kernel (the norm's, with the sum and product folded in).
pub fn add_rms_norm(
    residual: Tensor<2>,
    y: Tensor<2>,
    weight: &Tensor<2>,
    eps: f32,
    scale: f32,
) -> Tensor<2> {
    #[cfg(feature = "gpu")]
    if !is_host(&y.device()) {
        return crate::kernels::gpu::ops::rms_norm(y, Some(weight), Some(residual), eps, scale);
    }
    let x = residual + rms_norm(y, Some(weight), eps);
    if scale != 1.0 { x * scale } else { x }
}

/// [`add_rms_norm`], and its result RMS-normed with the next sub-layer's input norm `next`:
/// `(stream, next input)`. One kernel on the GPU (where a dispatch is the cost), two passes
/// on the CPU.
pub fn add_rms_norm_then_norm(
    residual: Tensor<2>,
    y: Tensor<2>,
    weight: &Tensor<2>,
    eps: f32,
    scale: f32,
    next: &Tensor<2>,
) -> (Tensor<2>, Tensor<2>) {
    #[cfg(feature = "gpu")]
    if !is_host(&y.device()) {
        return crate::kernels::gpu::ops::add_rms_norm_then_norm(
            residual, y, weight, eps, scale, next,
        );
    }
    let x = add_rms_norm(residual, y, weight, eps, scale);
    let normed = rms_norm(x.clone(), Some(next), eps);
    (x, normed)
}

pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    // burn's gelu_approximate computes x³ with powf, which dominated E2B prefill profiles
    // (~17% of the time); two multiplications give the same value to an ulp.
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt() as f32;
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044715) * sqrt_2_over_pi;
    (x * (inner.tanh() + 1.0)) * 0.5
}

/// `gelu_tanh(a) ⊙ b` (equal shapes). On the CPU one vectorised pass over host copies
/// (kernels::cpu::activation) replaces burn's eleven element-wise ops and its scalar libm
/// `tanhf`, ~7% of an E2B decode step; on the GPU one kernel replaces eleven dispatches.
pub fn gelu_tanh_mul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Result<Tensor<D>> {
    if !is_host(&a.device()) {
        #[cfg(feature = "gpu")]
        return Ok(crate::kernels::gpu::ops::gelu_tanh_mul(a, b));
        #[cfg(not(feature = "gpu"))]
        return Ok(gelu_tanh(a) * b);
    }
    let (shape, device) = (a.dims(), a.device());
    let mut values = to_host(a)?;
    crate::kernels::cpu::activation::gelu_tanh_mul(&mut values, &to_host(b)?);
    Ok(from_host(values, shape, &device))
}

/// A norm scale `[n]` reshaped to broadcast over the last axis of a rank-`D` tensor.
pub fn norm_weight<const D: usize>(values: Vec<f32>, device: &Device) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[D - 1] = values.len();
    from_host(values, shape, device)
}
