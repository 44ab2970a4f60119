//! The error crossing the FFI: `GemmaKitException` subclasses in Kotlin, `GemmaKitError` cases
//! in Swift. A variant per engine error (fields converted to FFI types), plus the two failures
//! only the FFI has: a foreign callback that threw, and a caught panic.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use gemmakit::GemmaError;

/// Kotlin's `message` lists the fields (`path=…, reason=…`); `toString()` (Kotlin) and
/// `description` (Swift) give the engine's own sentence.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi::export(Display)]
pub enum GemmaKitError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path} is not a valid weight file: {reason}")]
    InvalidWeightFile { path: String, reason: String },
    #[error("invalid model config: {reason}")]
    InvalidConfig { reason: String },
    #[error("unknown model architecture `{architecture}` (supported: gemma4, gemma4_text)")]
    UnknownArchitecture { architecture: String },
    #[error("unsupported model feature: {feature}")]
    Unsupported { feature: String },
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor `{name}` has unsupported element type {dtype}")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: u64 },
    #[error("{requested} positions do not fit in the context of {context_len} tokens")]
    ContextOverflow { requested: u64, context_len: u64 },
    #[error("the model needs about {needed} bytes of memory, over the budget of {budget} bytes")]
    MemoryBudgetExceeded { needed: u64, budget: u64 },
    #[error("invalid image: {reason}")]
    InvalidImage { reason: String },
    #[error("invalid audio: {reason}")]
    InvalidAudio { reason: String },
    #[error("media do not match the prompt: {reason}")]
    MediaMismatch { reason: String },
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    #[error("backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String },
    #[error("device error: {reason}")]
    Device { reason: String },
    /// A Kotlin/Swift callback (the generation sink) threw; generation was stopped.
    #[error("a callback failed: {reason}")]
    Callback { reason: String },
    /// A bug: the engine panicked. The panic was caught at the FFI boundary.
    #[error("internal error (panic): {reason}")]
    Panic { reason: String },
}

impl From<GemmaError> for GemmaKitError {
    fn from(e: GemmaError) -> Self {
        use GemmaKitError as K;
        let n = |v: usize| v as u64;
        match e {
            GemmaError::Io { path, source } => K::Io {
                path: path.display().to_string(),
                reason: source.to_string(),
            },
            GemmaError::InvalidWeightFile { path, reason, .. } => K::InvalidWeightFile {
                path: path.display().to_string(),
                reason,
            },
            GemmaError::InvalidConfig(reason) => K::InvalidConfig { reason },
            GemmaError::UnknownArchitecture(architecture) => {
                K::UnknownArchitecture { architecture }
            }
            GemmaError::Unsupported(feature) => K::Unsupported { feature },
            GemmaError::MissingTensor(name) => K::MissingTensor { name },
            GemmaError::ShapeMismatch {
                name,
                expected,
                found,
            } => K::ShapeMismatch {
                name,
                expected: expected.into_iter().map(n).collect(),
                found: found.into_iter().map(n).collect(),
            },
            GemmaError::UnsupportedDtype { name, dtype } => K::UnsupportedDtype { name, dtype },
            GemmaError::TokenOutOfRange { id, vocab } => K::TokenOutOfRange {
                id,
                vocab: n(vocab),
            },
            GemmaError::ContextOverflow {
                requested,
                context_len,
            } => K::ContextOverflow {
                requested: n(requested),
                context_len: n(context_len),
            },
            GemmaError::MemoryBudgetExceeded { needed, budget } => {
                K::MemoryBudgetExceeded { needed, budget }
            }
            GemmaError::InvalidImage(reason) => K::InvalidImage { reason },
            GemmaError::InvalidAudio(reason) => K::InvalidAudio { reason },
            GemmaError::MediaMismatch(reason) => K::MediaMismatch { reason },
            GemmaError::InvalidArgument(reason) => K::InvalidArgument { reason },
            GemmaError::BackendUnavailable { backend, reason } => {
                K::BackendUnavailable { backend, reason }
            }
            GemmaError::Device(reason) => K::Device { reason },
        }
    }
}

/// An exception of an unexpected type thrown by a Kotlin/Swift callback arrives here instead of
/// panicking Rust.
impl From<uniffi::UnexpectedUniFFICallbackError> for GemmaKitError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        GemmaKitError::Callback { reason: e.reason }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs `f`, turning an engine error into its FFI variant and a panic into
/// [`GemmaKitError::Panic`]: no unwind reaches the foreign caller.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, GemmaKitError>) -> Result<T, GemmaKitError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let reason = panic_message(payload.as_ref());
        log::error!("panic caught at the FFI boundary: {reason}");
        Err(GemmaKitError::Panic { reason })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_typed_error() {
        let r: Result<(), _> = guard(|| panic!("boom {}", 7));
        assert!(matches!(r, Err(GemmaKitError::Panic { reason }) if reason == "boom 7"));
    }

    #[test]
    fn engine_errors_keep_their_message() {
        let e: GemmaKitError = GemmaError::io(
            "/x.gguf",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
        .into();
        assert!(matches!(&e, GemmaKitError::Io { path, .. } if path == "/x.gguf"));
        assert!(e.to_string().starts_with("cannot read /x.gguf: "), "{e}");
    }
}
