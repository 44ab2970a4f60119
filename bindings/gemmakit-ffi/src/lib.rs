//! uniffi bindings of GemmaKit for Kotlin (Android, desktop JVM) and Swift (iOS).
//!
//! Type conversion only: every behaviour lives in the `gemmakit` crate. What this crate adds is
//! what only an FFI needs: FFI-friendly types (`u32`/`u64` for sizes, JSON as text), a foreign
//! streaming sink, typed errors with no panic crossing the boundary ([`error::guard`]), and the
//! platform glue (JNI_OnLoad, logcat, os_log).
//!
//! Generate the Kotlin/Swift sources with `scripts/gen-bindings.sh`.

uniffi::setup_scaffolding!();

pub mod download;
pub mod error;
pub mod objects;
pub mod platform;
pub mod types;

pub use download::{DownloadListener, ModelDownload};
pub use error::GemmaKitError;
pub use objects::{Conversation, Engine, GenerationSink};
pub use types::*;
