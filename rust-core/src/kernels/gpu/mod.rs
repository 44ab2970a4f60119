//! GPU kernels (CubeCL on burn-wgpu): weight products over packed quantized weights and
//! single-token attention over the KV cache.
//!
//! - `pack`: GGUF blocks → GPU words (u32) + f32 block scales, once at load.
//! - `kernels`: the `#[cube]` kernels (matrix-vector and token-tiled matrix-matrix products
//!   with their epilogues, RMS norms, RoPE, GELU, the greedy pick), shared-memory reductions
//!   only.
//! - `kv_kernels`: the KV cache's kernels (rows encoded after their norm and RoPE, attention
//!   over encoded rows that prepares its queries).
//! - `ops`: the kernels as a burn backend extension, callable on ordinary `Tensor`s.
//! - `kv`: the KV cache's encoded rows on the device (every KV type but all-f32) and attention
//!   over them, TurboQuant's rotations around it.
//! - `linear`: [`GpuLinear`], a weight uploaded once and split under the binding limit.
//!
//! Pipelines are compiled by cubecl on first use and cached for the life of the process. They
//! are not persisted across runs: cubecl 0.11 persists compiled kernels only for its SPIR-V
//! compiler (burn's `vulkan` feature, which crashes lavapipe) and only with its `persistence`
//! feature (an embedded database dependency); the WGSL path hands shaders to the driver on
//! every run, and the driver's own shader cache (Mesa, NVIDIA, Adreno, Mali) is what persists.

pub mod kernels;
pub mod kv;
pub mod kv_kernels;
pub mod linear;
pub mod ops;
pub mod pack;

pub use crate::kernels::attention::{AttentionCall, decode_attention};
pub use linear::GpuLinear;

#[cfg(test)]
mod tests;
