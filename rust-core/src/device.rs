//! The device the model graph runs on (a leaf module: it knows burn and nothing of models):
//! which backend, the facts that shape how weights are laid out, and moving tensors between
//! the device and the host. Choosing a device for a model (Auto) is the engine's business.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{GemmaError, Result};

/// Which cores the CPU workers run on (big.LITTLE detection and pinning).
pub mod cores;
/// Dispatches, bytes moved and bytes held on the GPU, counted as the engine runs.
pub mod counters;

/// The binding-size limit of lavapipe and many phone GPUs; used when a device does not say.
pub const DEFAULT_MAX_BINDING_BYTES: usize = 128 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// burn-flex on the CPU, with our CPU kernels for the weight products.
    Cpu,
    /// burn-wgpu (Vulkan, Metal).
    Gpu,
}

impl FromStr for BackendKind {
    type Err = GemmaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "gpu" | "wgpu" => Ok(BackendKind::Gpu),
            other => Err(GemmaError::InvalidArgument(format!(
                "unknown backend `{other}` (expected cpu or gpu)"
            ))),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        })
    }
}

/// A device plus the facts about it that shape how weights are laid out.
#[derive(Clone)]
pub struct ComputeDevice {
    pub kind: BackendKind,
    pub device: Device,
    /// Largest buffer one binding may address; weights are split to stay under it.
    pub max_binding_bytes: usize,
    /// A GPU API implemented on the CPU (Mesa lavapipe/llvmpipe, SwiftShader).
    pub software: bool,
    /// Human-readable adapter description (e.g. "llvmpipe (LLVM 15.0.6, 256 bits) / Vulkan").
    pub description: String,
    /// CPU activation numerics per phase (exact f32 unless the engine opts into 8-bit
    /// activations).
    pub activations: Activations,
    /// The GPU's shaders may compute in f16 (wgpu's `shader-f16`; Vulkan `shaderFloat16`,
    /// every Apple GPU, most 2020+ Adreno/Mali drivers). Reported; the kernels compute in
    /// f32 on every adapter today.
    pub shader_f16: bool,
}

impl fmt::Debug for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComputeDevice")
            .field("kind", &self.kind)
            .field("max_binding_bytes", &self.max_binding_bytes)
            .field("description", &self.description)
            .finish()
    }
}

impl ComputeDevice {
    /// Whether tensors on this device live in host memory (burn-flex), where element-wise
    /// work runs faster as one host pass (kernels::cpu) than as a chain of burn ops.
    pub fn is_host(&self) -> bool {
        is_host(&self.device)
    }

    pub fn open(kind: BackendKind) -> Result<Self> {
        match kind {
            BackendKind::Cpu => Ok(ComputeDevice {
                kind,
                device: Device::flex(),
                max_binding_bytes: usize::MAX,
                software: false,
                description: cpu_description(),
                activations: Activations::EXACT,
                shader_f16: false,
            }),
            BackendKind::Gpu => gpu(),
        }
    }
}

/// "burn-flex CPU, N threads", and the cores they are pinned to, if any.
fn cpu_description() -> String {
    let threads = rayon::current_num_threads();
    match crate::device::cores::process_cores() {
        Some(cores) => format!("burn-flex CPU, {threads} threads on cores {cores:?}"),
        None => format!("burn-flex CPU, {threads} threads"),
    }
}

/// Why a build without the `gpu` cargo feature (a CPU-only mobile library) has no GPU.
pub const NO_GPU_FEATURE: &str =
    "this build of GemmaKit has no GPU backend (built without the `gpu` cargo feature)";

#[cfg(not(feature = "gpu"))]
fn gpu() -> Result<ComputeDevice> {
    Err(GemmaError::BackendUnavailable {
        backend: "gpu".into(),
        reason: NO_GPU_FEATURE.into(),
    })
}

/// The wgpu runtime can be initialised once per process; every caller shares that device.
#[cfg(feature = "gpu")]
fn gpu() -> Result<ComputeDevice> {
    static GPU: std::sync::OnceLock<Result<ComputeDevice, String>> = std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options()
            .init_with_setup()
            .map_err(|e| e.to_string())?;
        counters::observe_launches();
        let limits = setup.device.limits();
        let info = setup.adapter.get_info();
        let shader_f16 = setup
            .adapter
            .features()
            .contains(burn::tensor::wgpu::wgpu::Features::SHADER_F16);
        let f16 = if shader_f16 { ", shader-f16" } else { "" };
        Ok(ComputeDevice {
            kind: BackendKind::Gpu,
            device,
            max_binding_bytes: (limits.max_storage_buffer_binding_size as usize)
                .min(limits.max_buffer_size as usize),
            software: info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
            description: format!("{} / {:?}{f16}", info.name, info.backend),
            activations: Activations::EXACT,
            shader_f16,
        })
    })
    .clone()
    .map_err(|reason| GemmaError::BackendUnavailable {
        backend: "gpu".into(),
        reason,
    })
}

/// How the CPU multiplies activations with weights (see [`Activations`] for the phases).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActivationPrecision {
    /// f32 activations times exactly dequantized weights (the reference numerics).
    #[default]
    Exact,
    /// Activations rounded to 8 bits per 32-block (kernels::cpu::int8); used where the CPU
    /// has integer dot instructions for the phase and the weight format has an int8 kernel.
    Int8,
}

impl FromStr for ActivationPrecision {
    type Err = GemmaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" | "f32" => Ok(ActivationPrecision::Exact),
            "int8" => Ok(ActivationPrecision::Int8),
            other => Err(GemmaError::InvalidArgument(format!(
                "unknown activation precision `{other}` (expected exact or int8)"
            ))),
        }
    }
}

impl fmt::Display for ActivationPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActivationPrecision::Exact => "exact",
            ActivationPrecision::Int8 => "int8",
        })
    }
}

/// CPU activation numerics per phase: prefill is the many-token path (chunks of at least
/// `kernels::cpu::TILED_MIN_TOKENS` tokens), decode the few-token one (decode steps, a
/// speculative verify pass, a prompt shorter than that).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activations {
    pub prefill: ActivationPrecision,
    pub decode: ActivationPrecision,
}

impl Activations {
    /// Exact in both phases.
    pub const EXACT: Activations = Activations {
        prefill: ActivationPrecision::Exact,
        decode: ActivationPrecision::Exact,
    };
}

/// Whether `device` is burn-flex (the CPU backend): the one test by which graph operations
/// pick a host pass or a burn op (see [`ComputeDevice::is_host`]).
pub fn is_host(device: &Device) -> bool {
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// A host array as a tensor of `shape` on `device`.
pub fn from_host<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    counters::count_upload(device, values.len() * 4);
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A tensor's values, row-major, on the host.
pub fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    counters::count_read_back(&t.device(), t.shape().num_elements() * 4);
    let data = t
        .try_into_data()
        .map_err(|e| GemmaError::Device(format!("reading a tensor back failed: {e:?}")))?;
    data.try_into_vec_as::<f32>()
        .map_err(|e| GemmaError::Device(format!("unexpected tensor data: {e:?}")))
}
