//! Hot operations with our own implementations. The model graph calls these through
//! [`crate::model::linear::Linear`]; which implementation runs depends on the backend.
//!
//! - `cpu`: matrix products that stream the weights straight from the memory-mapped file
//!   (no f32 copy of the weights), parallel over output rows.

pub mod attention;
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod kv;
#[cfg(test)]
pub(crate) mod reference;
