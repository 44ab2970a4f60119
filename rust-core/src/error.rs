//! The one error type of the engine. Every failure a caller can cause (a bad file, a bad
//! argument, an unavailable device) is a variant here, never a panic.

use std::path::PathBuf;

pub type Result<T, E = GemmaError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum GemmaError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid weight file: {reason}")]
    InvalidWeightFile { path: PathBuf, reason: String },

    #[error("invalid model config: {0}")]
    InvalidConfig(String),

    #[error("unknown model architecture `{0}` (supported: gemma4, gemma4_text)")]
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

    #[error("backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String },

    #[error("device error: {0}")]
    Device(String),
}

impl GemmaError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GemmaError::Io {
            path: path.into(),
            source,
        }
    }
}
