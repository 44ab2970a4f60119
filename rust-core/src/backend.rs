//! Which device the model graph runs on, chosen at run time.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use burn::tensor::Device;

use crate::error::{GemmaError, Result};

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
    pub fn open(kind: BackendKind) -> Result<Self> {
        match kind {
            BackendKind::Cpu => Ok(ComputeDevice {
                kind,
                device: Device::flex(),
                max_binding_bytes: usize::MAX,
                software: false,
                description: format!("burn-flex CPU, {} threads", rayon::current_num_threads()),
            }),
            BackendKind::Gpu => gpu(),
        }
    }
}

/// The wgpu runtime can be initialised once per process; every caller shares that device.
fn gpu() -> Result<ComputeDevice> {
    static GPU: OnceLock<Result<ComputeDevice, String>> = OnceLock::new();
    GPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options()
            .init_with_setup()
            .map_err(|e| e.to_string())?;
        let limits = setup.device.limits();
        let info = setup.adapter.get_info();
        Ok(ComputeDevice {
            kind: BackendKind::Gpu,
            device,
            max_binding_bytes: (limits.max_storage_buffer_binding_size as usize)
                .min(limits.max_buffer_size as usize),
            software: info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
            description: format!("{} / {:?}", info.name, info.backend),
        })
    })
    .clone()
    .map_err(|reason| GemmaError::BackendUnavailable {
        backend: "gpu".into(),
        reason,
    })
}
