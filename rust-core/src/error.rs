//! The one error type of the engine. Every failure a caller can cause (a bad file, a bad
//! argument, an unavailable device) is a variant here, never a panic.

use std::path::PathBuf;

pub type Result<T, E = GemmaError> = std::result::Result<T, E>;

/// Another library's (or another layer's) error that caused a [`GemmaError`], kept so that
/// [`std::error::Error::source`] walks down to it.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum GemmaError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid weight file: {reason}")]
    InvalidWeightFile {
        path: PathBuf,
        reason: String,
        /// The parser's error when one rejected the file (`reason` is then its message).
        #[source]
        source: Option<Cause>,
    },

    #[error("invalid model config: {0}")]
    InvalidConfig(String),

    #[error(
        "unknown model architecture `{0}` (supported: gemma4 and gemma4_text checkpoints, gemma3 and gemma4 GGUFs)"
    )]
    UnknownArchitecture(String),

    #[error("unsupported model feature: {0}")]
    Unsupported(String),

    #[error(
        "the draft model does not belong to this model: its {what} is {draft}, the model's is \
         {target} (Gemma 4's MTP assistant must be the one made for this model)"
    )]
    DraftModelMismatch {
        what: String,
        draft: String,
        target: String,
    },

    #[error("tensor `{0}` is missing from the checkpoint")]
    MissingTensor(String),

    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("tensor `{name}` has unsupported element type {dtype}")]
    UnsupportedDtype { name: String, dtype: String },

    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },

    #[error("{requested} positions do not fit in the context of {context_len} tokens")]
    ContextOverflow {
        requested: usize,
        context_len: usize,
    },

    #[error(
        "the model needs about {} of memory ({needed} bytes) but only {} ({budget} bytes) is \
         available; loading it would get the app killed (a smaller model or context helps; \
         the memory check can be overridden)",
        gib(*needed),
        gib(*budget)
    )]
    MemoryBudgetExceeded { needed: u64, budget: u64 },

    #[error("download of {url} failed: {failure}")]
    Download {
        url: String,
        failure: DownloadFailure,
    },

    #[error("unknown model `{name}` (catalogue names: {})", known.join(", "))]
    UnknownModel { name: String, known: Vec<String> },

    #[error("invalid model catalogue: {0}")]
    InvalidCatalogue(String),

    #[error("invalid image: {0}")]
    InvalidImage(String),

    #[error("invalid audio: {0}")]
    InvalidAudio(String),

    #[error("media do not match the prompt: {0}")]
    MediaMismatch(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A chat template went past one of the limits a template may use (a model file's template
    /// is code from the internet): the limit is named.
    #[error("chat template exceeded its {limit} limit")]
    ChatTemplateLimit { limit: String },

    /// A JSON schema, regex, grammar or strict tool set that cannot constrain decoding, or a
    /// constraint that failed while decoding.
    #[error("invalid constraint: {0}")]
    InvalidConstraint(String),

    #[error("backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String },

    #[error("device error: {0}")]
    Device(String),
}

/// Why a download failed. Which ones keep the partial file is said per variant: a partial file
/// is kept only when a later pull can resume it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadFailure {
    /// 401/403: a gated or private repository. Nothing is written.
    #[error(
        "the server answered HTTP {status}: the repository is gated or private and needs an \
         access token (for Hugging Face: accept the model's licence on its page, then pass a \
         token with read access)"
    )]
    AuthRequired { status: u16 },
    /// Any other status that is not a success (404, a 5xx after the retries, …).
    #[error("the server answered HTTP {status}")]
    HttpStatus { status: u16 },
    /// The connection failed or kept dropping without progress; the partial file is kept.
    #[error("network error after {attempts} attempts: {reason}")]
    Network { attempts: u32, reason: String },
    /// The server's answer makes no sense (a Content-Range for other bytes, a body longer than
    /// declared, too many redirects, …). The partial file is deleted.
    #[error("invalid server response: {0}")]
    InvalidResponse(String),
    /// The finished file's sha256 is not the expected one; it was deleted.
    #[error("sha256 mismatch: expected {expected}, got {actual}; the file was deleted")]
    ChecksumMismatch { expected: String, actual: String },
    /// Not enough free space for the rest of the file; the partial file is kept.
    #[error(
        "not enough disk space: {} more needed ({needed} bytes), {} free ({available} bytes)",
        gib(*needed),
        gib(*available)
    )]
    InsufficientDisk { needed: u64, available: u64 },
    /// Another download of the same file (in this process or another) holds its lock.
    #[error("another download of {0} is running")]
    Locked(PathBuf),
    /// Cancelled by the caller; the partial file is kept for a later resume.
    #[error("cancelled")]
    Cancelled,
}

/// `1.23 GiB`, for messages that a person reads.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl GemmaError {
    /// A download of `url` that failed for `failure`.
    pub fn download(url: impl Into<String>, failure: DownloadFailure) -> Self {
        GemmaError::Download {
            url: url.into(),
            failure,
        }
    }

    /// A file that could not be read (or written, or listed): the I/O error is the source.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GemmaError::Io {
            path: path.into(),
            source,
        }
    }

    /// A weight file the engine cannot use, for a reason of its own.
    pub fn invalid_weight_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        GemmaError::InvalidWeightFile {
            path: path.into(),
            reason: reason.into(),
            source: None,
        }
    }

    /// A weight file a parser rejected: the parser's message is the reason, and its error
    /// stays reachable as the source.
    pub fn weight_file_rejected(
        path: impl Into<PathBuf>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        GemmaError::InvalidWeightFile {
            path: path.into(),
            reason: source.to_string(),
            source: Some(Box::new(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::weights::gguf::{GgufError, GgufFile};

    #[test]
    fn a_rejected_weight_file_reads_as_before_and_keeps_the_parsers_error() {
        let Err(parse_error) = GgufFile::parse(b"not a gguf file") else {
            panic!("garbage parsed as a GGUF");
        };
        let sentence = format!("/w.gguf is not a valid weight file: {parse_error}");
        let e = GemmaError::weight_file_rejected("/w.gguf", parse_error);
        assert_eq!(e.to_string(), sentence);
        let source = e.source().expect("the parser's error is the source");
        assert!(source.downcast_ref::<GgufError>().is_some(), "{source:?}");
    }
}
