//! Model graphs (one file per architecture) and the pieces they share.

pub mod attention;
pub mod audio;
pub mod config;
pub mod gemma;
pub mod gemma4_assistant;
pub mod gguf;
pub mod kv_cache;
pub mod linear;
pub mod names;
pub mod ops;
pub mod rope;
pub mod towers;
pub mod vision;

pub use config::{AssistantConfig, GemmaConfig};
pub use gemma::{GemmaModel, LogitsFor, SoftTokens, Trace};
pub use gemma4_assistant::{AssistantModel, AssistantStep};
pub use kv_cache::KvCache;
