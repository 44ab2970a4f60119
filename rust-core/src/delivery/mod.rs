//! Model delivery: the catalogue of known models, the model cache (`$GEMMAKIT_HOME/models`),
//! and the resumable, verified downloader that fills it.
//!
//! A download writes `FILE.part` and its metadata `FILE.part.json` next to the destination,
//! holds `FILE.lock` while it runs (one download per file, across processes), resumes with an
//! HTTP Range request after a dropped connection or in a later process, checks the disk space
//! before the body, verifies the sha256 (pinned, or the server's declared LFS sha256), and
//! renames the finished file into place atomically.

pub mod cache;
pub mod catalogue;
pub mod disk;
pub mod download;
mod http;
mod partial;
pub mod progress;
pub mod verify;

use std::io::Read;
use std::path::Path;

pub use cache::{CachedFile, ModelCache};
pub use catalogue::{Catalogue, CatalogueEntry};
pub use download::{DownloadRequest, Downloaded, RetryPolicy, Verification, download};
pub use progress::DownloadProgress;

use crate::error::{GemmaError, Result};

/// Reads a small file (metadata, a catalogue) whole, refusing one over `limit` bytes before
/// allocating for it.
pub(crate) fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| GemmaError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| GemmaError::io(path, e))?;
    if bytes.len() > limit {
        return Err(GemmaError::InvalidArgument(format!(
            "{} is over {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}
