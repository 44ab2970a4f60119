//! The files a download keeps next to its destination: `FILE.part` (the bytes so far),
//! `FILE.part.json` (what they are a prefix of) and `FILE.lock` (held while it runs).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{GemmaError, Result};

/// Metadata files are tiny; a larger one is not ours and is ignored.
const MAX_METADATA_BYTES: usize = 64 << 10;

/// What the partial file is a prefix of. A resume needs the same URL, the same total and the
/// same validator (the server's sha256 or ETag), or it restarts from 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartialMeta {
    pub url: String,
    pub total: Option<u64>,
    pub validator: Option<String>,
    /// The sha256 the server declared (hex), for a file completed before a crash.
    #[serde(default)]
    pub declared_sha256: Option<String>,
}

pub(crate) struct PartialPaths {
    pub part: PathBuf,
    pub meta: PathBuf,
    pub lock: PathBuf,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl PartialPaths {
    pub fn for_destination(dest: &Path) -> Self {
        PartialPaths {
            part: with_suffix(dest, ".part"),
            meta: with_suffix(dest, ".part.json"),
            lock: with_suffix(dest, ".lock"),
        }
    }

    /// The metadata of the partial file, or `None` when there is none or it is unreadable
    /// (then the partial file cannot be trusted and the download restarts).
    pub fn read_meta(&self) -> Option<PartialMeta> {
        let bytes = super::read_bounded(&self.meta, MAX_METADATA_BYTES).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(meta) => Some(meta),
            Err(e) => {
                log::warn!("ignoring {}: {e}", self.meta.display());
                None
            }
        }
    }

    pub fn write_meta(&self, meta: &PartialMeta) -> Result<()> {
        let json = serde_json::to_vec(meta).expect("plain data serializes");
        crate::files::write_atomic(&self.meta, &json).map_err(|e| GemmaError::io(&self.meta, e))
    }

    /// Bytes in the partial file (0 when there is none).
    pub fn part_len(&self) -> u64 {
        std::fs::metadata(&self.part).map_or(0, |m| m.len())
    }

    /// Deletes the partial file and its metadata (a restart, or a download that cannot be
    /// resumed).
    pub fn discard(&self) {
        for path in [&self.part, &self.meta] {
            if let Err(e) = std::fs::remove_file(path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("cannot delete {}: {e}", path.display());
            }
        }
    }
}

/// An exclusive lock on `FILE.lock` (`flock`: released when the process ends, however it
/// ends, so a killed download never leaves a stale lock).
pub(crate) struct DownloadLock {
    _file: File,
}

impl DownloadLock {
    /// Takes the lock; `wait`: blocks until another holder is done, else answers `None` at
    /// once when it is held.
    pub fn acquire(path: &Path, wait: bool) -> Result<Option<Self>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| GemmaError::io(path, e))?;
        if wait {
            file.lock().map_err(|e| GemmaError::io(path, e))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(GemmaError::io(path, e)),
            }
        }
        Ok(Some(DownloadLock { _file: file }))
    }
}
