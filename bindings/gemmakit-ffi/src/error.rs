//! The error crossing the FFI: `GemmaKitException` subclasses in Kotlin, `GemmaKitError` cases
//! in Swift. A variant per engine error (fields converted to FFI types), plus the two failures
//! only the FFI has: a foreign callback that threw, and a caught panic.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use gemmakit::GemmaError;
use gemmakit::error::DownloadFailure;

/// Kotlin's `message` lists the fields (`path=…, reason=…, engineMessage=…`); `toString()`
/// (Kotlin) and `description` (Swift) give `engine_message`, the engine error's own sentence
/// (its `Display`), so the two languages never drift from the engine's wording. The other fields
/// are the parts a program may want to act on. (`engine_message`, not `message`: a field named
/// `message` clashes with `Throwable.message` in the generated Kotlin.)
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi::export(Display)]
pub enum GemmaKitError {
    #[error("{engine_message}")]
    Io {
        path: String,
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    InvalidWeightFile {
        path: String,
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    InvalidConfig {
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    UnknownArchitecture {
        architecture: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    Unsupported {
        feature: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    MissingTensor {
        name: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    ShapeMismatch {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
        engine_message: String,
    },
    #[error("{engine_message}")]
    UnsupportedDtype {
        name: String,
        dtype: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    TokenOutOfRange {
        id: u32,
        vocab: u64,
        engine_message: String,
    },
    #[error("{engine_message}")]
    ContextOverflow {
        requested: u64,
        context_len: u64,
        engine_message: String,
    },
    #[error("{engine_message}")]
    MemoryBudgetExceeded {
        needed: u64,
        budget: u64,
        engine_message: String,
    },
    #[error("{engine_message}")]
    InvalidImage {
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    InvalidAudio {
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    MediaMismatch {
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    InvalidArgument {
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    ChatTemplateLimit {
        limit: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    InvalidConstraint {
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    BackendUnavailable {
        backend: String,
        reason: String,
        engine_message: String,
    },
    #[error("{engine_message}")]
    Device {
        reason: String,
        engine_message: String,
    },
    /// A download failed; `kind` says how (a token needed, no disk space, cancelled, …).
    #[error("{engine_message}")]
    Download {
        url: String,
        kind: DownloadFailureKind,
        engine_message: String,
    },
    #[error("{engine_message}")]
    UnknownModel {
        name: String,
        known: Vec<String>,
        engine_message: String,
    },
    #[error("{engine_message}")]
    InvalidCatalogue {
        reason: String,
        engine_message: String,
    },
    /// A Kotlin/Swift callback (the generation sink) threw; generation was stopped.
    #[error("a callback failed: {reason}")]
    Callback { reason: String },
    /// A bug: the engine panicked. The panic was caught at the FFI boundary.
    #[error("internal error (panic): {reason}")]
    Panic { reason: String },
}

/// How a download failed (the engine's `DownloadFailure`, fields in FFI types).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum DownloadFailureKind {
    /// 401/403: the repository is gated or private; pass an access token.
    AuthRequired {
        status: u16,
    },
    HttpStatus {
        status: u16,
    },
    /// The partial file is kept: a later download resumes it.
    Network {
        attempts: u32,
        reason: String,
    },
    InvalidResponse {
        reason: String,
    },
    /// The file was deleted.
    ChecksumMismatch {
        expected: String,
        actual: String,
    },
    /// The partial file is kept.
    InsufficientDisk {
        needed: u64,
        available: u64,
    },
    /// Another download of the same file is running.
    Locked {
        path: String,
    },
    /// The partial file is kept.
    Cancelled,
}

impl From<DownloadFailure> for DownloadFailureKind {
    fn from(f: DownloadFailure) -> Self {
        use DownloadFailureKind as K;
        match f {
            DownloadFailure::AuthRequired { status } => K::AuthRequired { status },
            DownloadFailure::HttpStatus { status } => K::HttpStatus { status },
            DownloadFailure::Network { attempts, reason } => K::Network { attempts, reason },
            DownloadFailure::InvalidResponse(reason) => K::InvalidResponse { reason },
            DownloadFailure::ChecksumMismatch { expected, actual } => {
                K::ChecksumMismatch { expected, actual }
            }
            DownloadFailure::InsufficientDisk { needed, available } => {
                K::InsufficientDisk { needed, available }
            }
            DownloadFailure::Locked(path) => K::Locked {
                path: path.display().to_string(),
            },
            DownloadFailure::Cancelled => K::Cancelled,
        }
    }
}

impl From<GemmaError> for GemmaKitError {
    fn from(e: GemmaError) -> Self {
        use GemmaKitError as K;
        let n = |v: usize| v as u64;
        let engine_message = e.to_string();
        match e {
            GemmaError::Io { path, source } => K::Io {
                path: path.display().to_string(),
                reason: source.to_string(),
                engine_message,
            },
            GemmaError::InvalidWeightFile { path, reason, .. } => K::InvalidWeightFile {
                path: path.display().to_string(),
                reason,
                engine_message,
            },
            GemmaError::InvalidConfig(reason) => K::InvalidConfig {
                reason,
                engine_message,
            },
            // An assistant of another model: a configuration error for the app (its reason
            // names what differs).
            GemmaError::DraftModelMismatch { .. } => K::InvalidConfig {
                reason: engine_message.clone(),
                engine_message,
            },
            GemmaError::UnknownArchitecture(architecture) => K::UnknownArchitecture {
                architecture,
                engine_message,
            },
            GemmaError::Unsupported(feature) => K::Unsupported {
                feature,
                engine_message,
            },
            GemmaError::MissingTensor(name) => K::MissingTensor {
                name,
                engine_message,
            },
            GemmaError::ShapeMismatch {
                name,
                expected,
                found,
            } => K::ShapeMismatch {
                name,
                expected: expected.into_iter().map(n).collect(),
                found: found.into_iter().map(n).collect(),
                engine_message,
            },
            GemmaError::UnsupportedDtype { name, dtype } => K::UnsupportedDtype {
                name,
                dtype,
                engine_message,
            },
            GemmaError::TokenOutOfRange { id, vocab } => K::TokenOutOfRange {
                id,
                vocab: n(vocab),
                engine_message,
            },
            GemmaError::ContextOverflow {
                requested,
                context_len,
            } => K::ContextOverflow {
                requested: n(requested),
                context_len: n(context_len),
                engine_message,
            },
            GemmaError::MemoryBudgetExceeded { needed, budget } => K::MemoryBudgetExceeded {
                needed,
                budget,
                engine_message,
            },
            GemmaError::InvalidImage(reason) => K::InvalidImage {
                reason,
                engine_message,
            },
            GemmaError::InvalidAudio(reason) => K::InvalidAudio {
                reason,
                engine_message,
            },
            GemmaError::MediaMismatch(reason) => K::MediaMismatch {
                reason,
                engine_message,
            },
            GemmaError::InvalidArgument(reason) => K::InvalidArgument {
                reason,
                engine_message,
            },
            GemmaError::ChatTemplateLimit { limit } => K::ChatTemplateLimit {
                limit,
                engine_message,
            },
            GemmaError::InvalidConstraint(reason) => K::InvalidConstraint {
                reason,
                engine_message,
            },
            GemmaError::BackendUnavailable { backend, reason } => K::BackendUnavailable {
                backend,
                reason,
                engine_message,
            },
            GemmaError::Device(reason) => K::Device {
                reason,
                engine_message,
            },
            GemmaError::Download { url, failure } => K::Download {
                url,
                kind: failure.into(),
                engine_message,
            },
            GemmaError::UnknownModel { name, known } => K::UnknownModel {
                name,
                known,
                engine_message,
            },
            GemmaError::InvalidCatalogue(reason) => K::InvalidCatalogue {
                reason,
                engine_message,
            },
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

    #[test]
    fn every_engine_error_reads_as_the_engine_wrote_it() {
        let engine_errors = [
            GemmaError::UnknownArchitecture("llama".into()),
            GemmaError::invalid_weight_file("/w.gguf", "truncated"),
            GemmaError::ShapeMismatch {
                name: "t".into(),
                expected: vec![2, 3],
                found: vec![3, 2],
            },
            GemmaError::ContextOverflow {
                requested: 9,
                context_len: 8,
            },
            GemmaError::Device("lost".into()),
        ];
        for engine_error in engine_errors {
            let sentence = engine_error.to_string();
            let ffi_error: GemmaKitError = engine_error.into();
            assert_eq!(ffi_error.to_string(), sentence);
        }
    }
}
