//! Model graphs (one file per architecture) and the pieces they share.

pub mod attention;
pub mod audio;
pub mod config;
pub mod gemma;
pub mod gguf;
pub mod kv_cache;
pub mod linear;
pub mod names;
pub mod ops;
pub mod rope;
pub mod towers;
pub mod vision;

pub use config::GemmaConfig;
pub use gemma::{GemmaModel, LogitsFor, SoftTokens, Trace};
pub use kv_cache::KvCache;
