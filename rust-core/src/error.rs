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

    #[error("the model needs about {needed} bytes of memory, over the budget of {budget} bytes")]
    MemoryBudgetExceeded { needed: u64, budget: u64 },

    #[error("invalid image: {0}")]
    InvalidImage(String),

    #[error("invalid audio: {0}")]
    InvalidAudio(String),

    #[error("media do not match the prompt: {0}")]
    MediaMismatch(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A JSON schema, regex, grammar or strict tool set that cannot constrain decoding, or a
    /// constraint that failed while decoding.
    #[error("invalid constraint: {0}")]
    InvalidConstraint(String),

    #[error("backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String },

    #[error("device error: {0}")]
    Device(String),
}

impl GemmaError {
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
