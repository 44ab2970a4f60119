//! GemmaKit: offline Gemma 4 inference for phones.
//!
//! Data flows one way: file ([`source`], [`weights`]) → model graph ([`model`]) → logits →
//! sampler ([`sampling`]) → text ([`engine`]); media are preprocessed ([`media`]) before the
//! towers. The graph is written once on burn tensors and runs on the CPU (burn-flex) or a GPU
//! (burn-wgpu), chosen at run time ([`device`]); the weight products go through our own kernels
//! ([`kernels`]). ARCHITECTURE.md at the repository root gives the layers and their rules.

pub mod bench;
pub mod chat;
pub mod constraint;
pub mod convert;
pub mod delivery;
pub mod device;
pub mod engine;
pub mod error;
pub mod eval;
pub mod files;
pub mod kernels;
pub mod media;
pub mod model;
pub mod sampling;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use device::{BackendKind, ComputeDevice};
// The engine's conversation and generation modules, at the paths callers know.
pub use engine::{conversation, generate};
pub use error::{GemmaError, Result};
pub use model::{GemmaModel, LogitsFor};
