//! A weight product `y = x · Wᵀ` whose storage depends on the backend: on the CPU the weight
//! stays in the mapped file and our kernel streams it; on a GPU it is uploaded once, packed
//! (quantized types stay quantized) and split by output rows so that no buffer exceeds the
//! device's binding limit (kernels/gpu).

use burn::tensor::Tensor;

use super::ops::{from_host, to_host};
use crate::backend::{BackendKind, ComputeDevice};
use crate::error::Result;
use crate::kernels;
use crate::weights::MappedTensor;

pub enum Linear {
    Mapped(MappedTensor, kernels::cpu::ActivationPrecision),
    Gpu(kernels::gpu::GpuLinear),
}

impl Linear {
    /// `weight` is `[out, in]` (PyTorch layout).
    pub fn load(weight: &MappedTensor, device: &ComputeDevice) -> Result<Self> {
        match device.kind {
            BackendKind::Cpu => Ok(Linear::Mapped(weight.clone(), device.activations)),
            BackendKind::Gpu => Ok(Linear::Gpu(kernels::gpu::GpuLinear::upload(
                weight,
                device.max_binding_bytes,
                &device.device,
            )?)),
        }
    }

    /// `x`: `[tokens, in]` → `[tokens, out]` on `x`'s device.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Linear::Mapped(w, precision) => {
                let [tokens, _] = x.dims();
                let device = x.device();
                let y = kernels::cpu::matmul_mapped(&to_host(x)?, tokens, w, *precision);
                Ok(from_host(y, [tokens, w.rows()], &device))
            }
            Linear::Gpu(w) => Ok(w.forward(x)),
        }
    }

    /// Like [`forward`](Self::forward) but returns `[tokens, out]` on the host, chunk by chunk,
    /// so a 262144-wide LM head never needs one device buffer for all logits.
    pub fn forward_to_host(&self, x: Tensor<2>) -> Result<Vec<f32>> {
        match self {
            Linear::Mapped(w, precision) => {
                let [tokens, _] = x.dims();
                Ok(kernels::cpu::matmul_mapped(
                    &to_host(x)?,
                    tokens,
                    w,
                    *precision,
                ))
            }
            Linear::Gpu(w) => w.forward_to_host(x),
        }
    }
}
