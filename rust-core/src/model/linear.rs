//! A weight product `y = x · Wᵀ` whose storage depends on the backend: on the CPU the weight
//! stays in the mapped file and our kernel streams it; on a GPU it is uploaded once, packed
//! (quantized types stay quantized) and split by output rows so that no buffer exceeds the
//! device's binding limit (kernels/gpu).

use burn::tensor::Tensor;

use super::ops::{from_host, to_host};
use crate::device::ComputeDevice;
use crate::error::GemmaError;
use crate::error::Result;
use crate::kernels;
use crate::weights::{MappedTensor, WeightStore};

pub enum Linear {
    Mapped(MappedTensor, kernels::cpu::Activations),
    #[cfg(feature = "gpu")]
    Gpu(kernels::gpu::GpuLinear),
}

/// Only the assistant's token ordering is integer; a weight never is.
fn check_weight(weight: &MappedTensor) -> Result<()> {
    if crate::weights::quant::is_integer(weight.dtype()) {
        return Err(GemmaError::UnsupportedDtype {
            name: weight.name().to_string(),
            dtype: format!("{} (a weight matrix)", weight.dtype()),
        });
    }
    Ok(())
}

/// Products of one input with several weights (a layer's q, k and v), returned in order: on a
/// GPU one product over their stacked rows where they share a type, its output split by
/// columns (one dispatch, the input read once; for one token the split columns are contiguous
/// views, so nothing is copied); separate products otherwise.
pub enum SplitLinear {
    Separate(Vec<Linear>),
    #[cfg(feature = "gpu")]
    Stacked {
        stacked: kernels::gpu::GpuLinear,
        widths: Vec<usize>,
    },
}

impl SplitLinear {
    /// `weights`: `[out_i, in]` each.
    pub fn load(weights: &[&MappedTensor], device: &ComputeDevice) -> Result<Self> {
        for w in weights {
            check_weight(w)?;
        }
        #[cfg(feature = "gpu")]
        if !device.is_host() && weights.len() > 1 {
            let stacked = kernels::gpu::GpuLinear::upload_stacked(
                weights,
                device.max_binding_bytes,
                &device.device,
            )?;
            if let Some(stacked) = stacked {
                let widths = weights.iter().map(|w| w.rows()).collect();
                return Ok(SplitLinear::Stacked { stacked, widths });
            }
        }
        let separate = weights.iter().map(|w| Linear::load(w, device));
        Ok(SplitLinear::Separate(separate.collect::<Result<_>>()?))
    }

    /// `x`: `[tokens, in]` → one `[tokens, out_i]` per weight, on `x`'s device.
    pub fn forward(&self, x: Tensor<2>) -> Result<Vec<Tensor<2>>> {
        match self {
            SplitLinear::Separate(linears) => {
                linears.iter().map(|l| l.forward(x.clone())).collect()
            }
            #[cfg(feature = "gpu")]
            SplitLinear::Stacked { stacked, widths } => {
                let y = stacked.forward(x);
                let mut start = 0;
                Ok(widths
                    .iter()
                    .map(|&w| {
                        let part = y.clone().narrow(1, start, w);
                        start += w;
                        part
                    })
                    .collect())
            }
        }
    }
}

/// A gated GELU MLP's first half, `gelu_tanh(x · Gᵀ) ⊙ (x · Uᵀ)`: on a GPU one fused product
/// where gate and up share a packed layout (`GpuLinear::upload_gated`: one dispatch, `x` read
/// once), two products and the element-wise kernel otherwise.
pub enum GatedLinear {
    Separate {
        gate: Linear,
        up: Linear,
    },
    #[cfg(feature = "gpu")]
    Fused(kernels::gpu::GpuLinear),
}

impl GatedLinear {
    /// `gate` and `up` are `[out, in]`.
    pub fn load(gate: &MappedTensor, up: &MappedTensor, device: &ComputeDevice) -> Result<Self> {
        check_weight(gate)?;
        check_weight(up)?;
        #[cfg(feature = "gpu")]
        if !device.is_host() {
            let fused = kernels::gpu::GpuLinear::upload_gated(
                gate,
                up,
                device.max_binding_bytes,
                &device.device,
            )?;
            if let Some(fused) = fused {
                return Ok(GatedLinear::Fused(fused));
            }
        }
        Ok(GatedLinear::Separate {
            gate: Linear::load(gate, device)?,
            up: Linear::load(up, device)?,
        })
    }

    /// `x`: `[tokens, in]` → `[tokens, out]` on `x`'s device.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            GatedLinear::Separate { gate, up } => {
                super::ops::gelu_tanh_mul(gate.forward(x.clone())?, up.forward(x)?)
            }
            #[cfg(feature = "gpu")]
            GatedLinear::Fused(w) => Ok(w.forward(x)),
        }
    }
}

impl Linear {
    /// `weight` is `[out, in]` (PyTorch layout).
    pub fn load(weight: &MappedTensor, device: &ComputeDevice) -> Result<Self> {
        check_weight(weight)?;
        if device.is_host() {
            return Ok(Linear::Mapped(weight.clone(), device.activations));
        }
        #[cfg(feature = "gpu")]
        return Ok(Linear::Gpu(kernels::gpu::GpuLinear::upload(
            weight,
            device.max_binding_bytes,
            &device.device,
        )?));
        #[cfg(not(feature = "gpu"))]
        Err(GemmaError::BackendUnavailable {
            backend: "gpu".into(),
            reason: crate::device::NO_GPU_FEATURE.into(),
        })
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
            #[cfg(feature = "gpu")]
            Linear::Gpu(w) => Ok(w.forward(x)),
        }
    }

    /// The index of each token's largest output after the soft-capping `cap` (ties: the lower
    /// index), as `kernels::cpu::activation::argmax` over the capped rows of
    /// [`forward_to_host`](Self::forward_to_host). On the GPU it is found on the device, so
    /// only a few bytes a token come back; capping is monotonic, so the device compares the
    /// raw outputs (the two differ only where capping rounds two outputs to one f32).
    pub fn argmax_rows(&self, x: Tensor<2>, cap: Option<f32>) -> Result<Vec<u32>> {
        match self {
            Linear::Mapped(w, _) => Ok(self
                .capped_on_host(x, cap)?
                .chunks_exact(w.rows().max(1))
                .map(kernels::cpu::activation::argmax)
                .collect()),
            #[cfg(feature = "gpu")]
            Linear::Gpu(w) => w.argmax_rows(x),
        }
    }

    /// [`forward_to_host`](Self::forward_to_host)'s outputs after the soft-capping `cap`.
    fn capped_on_host(&self, x: Tensor<2>, cap: Option<f32>) -> Result<Vec<f32>> {
        let mut logits = self.forward_to_host(x)?;
        if let Some(cap) = cap {
            kernels::cpu::activation::softcap(&mut logits, cap);
        }
        Ok(logits)
    }

    /// The `k` largest outputs of each token's row after the soft-capping `cap`, with their
    /// indices, largest first (ties: the lower index; non-finite outputs are skipped), as
    /// `kernels::cpu::activation::top_k` over the capped rows of
    /// [`forward_to_host`](Self::forward_to_host). On the GPU they are found on the device
    /// (`k` ≤ `kernels::gpu::ops::MAX_TOP_K`), so only the picks come back; capping is
    /// monotonic, so the device compares the raw outputs and the picks are capped here.
    pub fn top_k_rows(
        &self,
        x: Tensor<2>,
        k: usize,
        cap: Option<f32>,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        match self {
            Linear::Mapped(w, _) => Ok(self
                .capped_on_host(x, cap)?
                .chunks_exact(w.rows().max(1))
                .map(|row| kernels::cpu::activation::top_k(row, k))
                .collect()),
            #[cfg(feature = "gpu")]
            Linear::Gpu(w) => {
                let mut rows = w.top_k_rows(x, k)?;
                if let Some(cap) = cap {
                    for row in &mut rows {
                        let mut values: Vec<f32> = row.iter().map(|p| p.1).collect();
                        kernels::cpu::activation::softcap(&mut values, cap);
                        for (pick, capped) in row.iter_mut().zip(values) {
                            pick.1 = capped;
                        }
                    }
                }
                Ok(rows)
            }
        }
    }

    /// `gelu_tanh(x · Wᵀ) ⊙ mul` (`mul` `[tokens, out]`, on `x`'s device): on a GPU with
    /// quantized rows one kernel (the GELU and product in the weight product's epilogue).
    pub fn forward_gelu_times(&self, x: Tensor<2>, mul: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Linear::Mapped(..) => super::ops::gelu_tanh_mul(self.forward(x)?, mul),
            #[cfg(feature = "gpu")]
            Linear::Gpu(w) => Ok(w.forward_gelu_times(x, mul)),
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
            #[cfg(feature = "gpu")]
            Linear::Gpu(w) => w.forward_to_host(x),
        }
    }
}

/// transformers' `Gemma4ClippableLinear` (vision and audio towers):
/// `y = clamp(clamp(x, in_min, in_max) · Wᵀ, out_min, out_max)`.
pub struct ClippedLinear {
    linear: Linear,
    input: Bounds,
    output: Bounds,
}

/// `(min, max)`; `None` clamps nothing on that side. Infinite bounds become `None`: WGSL may
/// assume no infinities.
type Bounds = (Option<f32>, Option<f32>);

impl ClippedLinear {
    /// Loads `{module}.linear.weight` (`[out, in]`) and, if `clipped`, the bounds
    /// `{module}.input_min` … `{module}.output_max`; an absent bound (llama.cpp's converter
    /// drops infinite ones) clamps nothing.
    pub fn load(
        store: &WeightStore,
        module: &str,
        [out, inp]: [usize; 2],
        clipped: bool,
        device: &ComputeDevice,
    ) -> Result<Self> {
        let linear = Linear::load(
            store.get_shaped(&format!("{module}.linear.weight"), &[out, inp])?,
            device,
        )?;
        let bound = |name: &str| -> Result<Option<f32>> {
            let full = format!("{module}.{name}");
            if !clipped || !store.contains(&full) {
                return Ok(None);
            }
            match store.get(&full)?.to_f32_vec().as_slice() {
                [x] => Ok(x.is_finite().then_some(*x)),
                values => Err(GemmaError::ShapeMismatch {
                    name: full,
                    expected: vec![1],
                    found: vec![values.len()],
                }),
            }
        };
        Ok(ClippedLinear {
            linear,
            input: (bound("input_min")?, bound("input_max")?),
            output: (bound("output_min")?, bound("output_max")?),
        })
    }

    /// `x`: `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        let y = self.linear.forward(clamp(x, self.input))?;
        Ok(clamp(y, self.output))
    }
}

fn clamp(x: Tensor<2>, (lo, hi): Bounds) -> Tensor<2> {
    // torch.clamp(x, lo, hi) = min(max(x, lo), hi), also when lo > hi.
    let x = match lo {
        Some(lo) => x.clamp_min(lo),
        None => x,
    };
    match hi {
        Some(hi) => x.clamp_max(hi),
        None => x,
    }
}
