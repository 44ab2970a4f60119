//! A weight product `y = x · Wᵀ` whose storage depends on the backend: on the CPU the weight
//! stays in the mapped file and our kernel streams it; on a GPU it is uploaded once, split by
//! output rows so that no buffer exceeds the device's binding limit.

use burn::tensor::Tensor;

use super::ops::{from_host, to_host};
use crate::backend::{BackendKind, ComputeDevice};
use crate::error::Result;
use crate::kernels;
use crate::weights::MappedTensor;

pub enum Linear {
    Mapped(MappedTensor),
    Device {
        /// `[in, out_chunk]` each, in output order.
        chunks: Vec<Tensor<2>>,
        in_features: usize,
        out_features: usize,
    },
}

impl Linear {
    /// `weight` is `[out, in]` (PyTorch layout).
    pub fn load(weight: &MappedTensor, device: &ComputeDevice) -> Result<Self> {
        match device.kind {
            BackendKind::Cpu => Ok(Linear::Mapped(weight.clone())),
            BackendKind::Gpu => {
                let (out_features, in_features) = (weight.rows(), weight.cols());
                let row_bytes = in_features * std::mem::size_of::<f32>();
                let rows_per_chunk =
                    (device.max_binding_bytes / row_bytes.max(1)).clamp(1, out_features.max(1));
                let mut chunks = Vec::new();
                let mut start = 0;
                while start < out_features {
                    let rows = rows_per_chunk.min(out_features - start);
                    let ids: Vec<u32> = (start as u32..(start + rows) as u32).collect();
                    let block = weight.gather_rows_f32(&ids, 1.0)?;
                    let block_t = kernels::cpu::transpose(&block, rows, in_features);
                    chunks.push(from_host(block_t, [in_features, rows], &device.device));
                    start += rows;
                }
                Ok(Linear::Device {
                    chunks,
                    in_features,
                    out_features,
                })
            }
        }
    }


    /// `x`: `[tokens, in]` → `[tokens, out]` on `x`'s device.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Linear::Mapped(w) => {
                let [tokens, _] = x.dims();
                let device = x.device();
                let y = kernels::cpu::matmul_mapped(&to_host(x)?, tokens, w);
                Ok(from_host(y, [tokens, w.rows()], &device))
            }
            Linear::Device { chunks, .. } => {
                let parts: Vec<Tensor<2>> =
                    chunks.iter().map(|w| x.clone().matmul(w.clone())).collect();
                Ok(if parts.len() == 1 {
                    parts.into_iter().next().expect("one chunk")
                } else {
                    Tensor::cat(parts, 1)
                })
            }
        }
    }

    /// Like [`forward`](Self::forward) but returns `[tokens, out]` on the host, chunk by chunk,
    /// so a 262144-wide LM head never needs one device buffer for all logits.
    pub fn forward_to_host(&self, x: Tensor<2>) -> Result<Vec<f32>> {
        match self {
            Linear::Mapped(w) => {
                let [tokens, _] = x.dims();
                Ok(kernels::cpu::matmul_mapped(&to_host(x)?, tokens, w))
            }
            Linear::Device {
                chunks,
                out_features,
                ..
            } => {
                let [tokens, _] = x.dims();
                let mut out = vec![0.0f32; tokens * out_features];
                let mut col = 0;
                for w in chunks {
                    let width = w.dims()[1];
                    let part = to_host(x.clone().matmul(w.clone()))?;
                    for t in 0..tokens {
                        out[t * out_features + col..t * out_features + col + width]
                            .copy_from_slice(&part[t * width..(t + 1) * width]);
                    }
                    col += width;
                }
                Ok(out)
            }
        }
    }
}
