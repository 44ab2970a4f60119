//! Model graphs (one file per architecture) and the pieces they share.

pub mod attention;
pub mod config;
pub mod gemma4;
pub mod kv_cache;
pub mod linear;
pub mod ops;
pub mod rope;

pub use config::Gemma4Config;
pub use gemma4::{Gemma4, LogitsFor, Trace};
pub use kv_cache::KvCache;
