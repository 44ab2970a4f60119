//! The downloader: one file from one URL into place, resumable and verified (see the module
//! docs of [`delivery`](super) for the files it keeps).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::http::{self, Answer, Opened};
use super::partial::{DownloadLock, PartialMeta, PartialPaths};
use super::progress::{DownloadProgress, ProgressMeter};
use super::verify::{self, Sha256Digest};
use crate::error::{DownloadFailure, GemmaError, Result};

/// No model file is larger; a server that sends more (or declares more) is refused.
pub const MAX_DOWNLOAD_BYTES: u64 = 64 << 30;

/// Retries of failed attempts: `attempts` consecutive failures without a byte of progress end
/// the download; the wait doubles from `first_backoff` up to `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(16),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DownloadRequest {
    pub url: String,
    /// The final path; `.part`, `.part.json` and `.lock` files go next to it.
    pub dest: PathBuf,
    /// Pinned sha256 (hex). Without it the server's declared sha256 is checked, when it sends
    /// one.
    pub sha256: Option<String>,
    /// Expected size (the catalogue's), checked against the server's.
    pub size: Option<u64>,
    /// Bearer token (a Hugging Face access token for gated repositories).
    pub token: Option<String>,
    pub retry: RetryPolicy,
    /// A connection that sends nothing for this long counts as dropped.
    pub stall_timeout: Duration,
    /// When another download of the same file runs: wait for it (`true`) or fail at once
    /// with [`DownloadFailure::Locked`].
    pub wait_for_lock: bool,
}

impl DownloadRequest {
    pub fn new(url: impl Into<String>, dest: impl Into<PathBuf>) -> Self {
        DownloadRequest {
            url: url.into(),
            dest: dest.into(),
            sha256: None,
            size: None,
            token: None,
            retry: RetryPolicy::default(),
            stall_timeout: Duration::from_secs(30),
            wait_for_lock: false,
        }
    }
}

/// How the file's content was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Against the sha256 the caller (the catalogue) pinned.
    Pinned,
    /// Against the sha256 the server declared (Hugging Face's LFS ETag).
    ServerDeclared,
    /// Not checked: no sha256 was pinned or declared.
    Unverified,
    /// The file was already in place (checked against the pinned sha256 when there is one).
    AlreadyPresent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// Hex; `None` for a file already in place without a pinned sha256 (not re-hashed).
    pub sha256: Option<String>,
    pub verification: Verification,
}

/// Downloads `request.url` to `request.dest`. `cancel` is checked between reads; progress is
/// reported at most every 100 ms, at the start and at the end.
pub fn download(
    request: &DownloadRequest,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(&DownloadProgress),
) -> Result<Downloaded> {
    let pinned = match &request.sha256 {
        Some(text) => Some(verify::parse_sha256(text).ok_or_else(|| {
            GemmaError::InvalidArgument(format!("sha256 `{text}` is not 64 hex digits"))
        })?),
        None => None,
    };
    let dest = &request.dest;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| GemmaError::io(dir, e))?;
    }
    let paths = PartialPaths::for_destination(dest);
    let _lock = match DownloadLock::acquire(&paths.lock, request.wait_for_lock)? {
        Some(lock) => lock,
        None => return Err(fail(request, DownloadFailure::Locked(dest.clone()))),
    };
    // After the lock: a download that held it may have just put the file in place.
    if let Some(done) = already_present(dest, pinned)? {
        return Ok(done);
    }
    let mut job = Job {
        request,
        paths: &paths,
        pinned,
        hasher: Sha256::new(),
        have: 0,
        resumable: true,
        meter: ProgressMeter::new(),
    };
    let declared = job.fetch(cancel, on_progress)?;
    let result = job.finish(declared);
    if result.is_ok() {
        let _ = std::fs::remove_file(&paths.lock);
    }
    result
}

fn fail(request: &DownloadRequest, failure: DownloadFailure) -> GemmaError {
    GemmaError::download(&request.url, failure)
}

/// The destination, when it is already there (and matches the pinned sha256, if any).
fn already_present(dest: &Path, pinned: Option<Sha256Digest>) -> Result<Option<Downloaded>> {
    let Ok(meta) = std::fs::metadata(dest) else {
        return Ok(None);
    };
    let sha256 = match pinned {
        Some(expected) => {
            let actual = verify::file_sha256(dest)?;
            if actual != expected {
                log::warn!(
                    "{} has another sha256; downloading it again",
                    dest.display()
                );
                return Ok(None);
            }
            Some(verify::to_hex(&actual))
        }
        None => None,
    };
    Ok(Some(Downloaded {
        path: dest.to_path_buf(),
        bytes: meta.len(),
        sha256,
        verification: Verification::AlreadyPresent,
    }))
}

/// One download in progress: the partial file's length and running hash.
struct Job<'a> {
    request: &'a DownloadRequest,
    paths: &'a PartialPaths,
    pinned: Option<Sha256Digest>,
    hasher: Sha256,
    /// Bytes in the partial file, all of them in `hasher`.
    have: u64,
    /// Whether the server answers ranges: a partial file is kept at the end only then.
    resumable: bool,
    meter: ProgressMeter,
}

/// How one attempt ended, when it did not fail for good.
enum Attempt {
    /// The whole body was received.
    Complete { declared: Option<Sha256Digest> },
    /// Retry from the partial file's end, for this reason.
    Retry { reason: String },
}

impl Job<'_> {
    /// Attempts until the whole file is in the partial file; returns the server's declared
    /// sha256.
    fn fetch(
        &mut self,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(&DownloadProgress),
    ) -> Result<Option<Sha256Digest>> {
        if let Some(declared) = self.resume_from_disk()? {
            return Ok(declared);
        }
        let agent = http::agent(self.request.stall_timeout);
        let mut failures = 0u32;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(fail(self.request, DownloadFailure::Cancelled));
            }
            let before = self.have;
            let reason = match self.attempt(&agent, cancel, on_progress)? {
                Attempt::Complete { declared } => return Ok(declared),
                Attempt::Retry { reason } => reason,
            };
            failures = if self.have > before { 1 } else { failures + 1 };
            if failures >= self.request.retry.attempts {
                if !self.resumable {
                    self.paths.discard();
                }
                return Err(fail(
                    self.request,
                    DownloadFailure::Network {
                        attempts: failures,
                        reason,
                    },
                ));
            }
            log::info!("{}: {reason}; retrying", self.request.url);
            sleep_unless_cancelled(self.request.retry.backoff(failures), cancel);
        }
    }

    /// Picks up a partial file left by an earlier run when its metadata says it is a prefix
    /// of this URL's file; otherwise starts from 0. `Some(declared sha256)`: the partial file
    /// is already complete (the earlier run ended before the rename).
    fn resume_from_disk(&mut self) -> Result<Option<Option<Sha256Digest>>> {
        let len = self.paths.part_len();
        let Some(meta) = self.paths.read_meta().filter(|m| m.url == self.request.url) else {
            self.restart();
            return Ok(None);
        };
        if len == 0 || meta.total.is_some_and(|total| len > total) {
            self.restart();
            return Ok(None);
        }
        verify::hash_prefix(&self.paths.part, len, &mut self.hasher)?;
        self.have = len;
        if meta.total == Some(len) {
            let declared = meta
                .declared_sha256
                .as_deref()
                .and_then(verify::parse_sha256);
            return Ok(Some(declared));
        }
        log::info!("resuming {} at byte {len}", self.request.url);
        Ok(None)
    }

    fn restart(&mut self) {
        self.paths.discard();
        self.hasher = Sha256::new();
        self.have = 0;
    }

    fn attempt(
        &mut self,
        agent: &ureq::Agent,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(&DownloadProgress),
    ) -> Result<Attempt> {
        let token = self.request.token.as_deref();
        let opened = match http::get_from(agent, &self.request.url, self.have, token) {
            Ok(Answer::Body(opened)) => opened,
            Ok(Answer::Status(status)) => return self.refused(status),
            Err(e) if e.transient => {
                return Ok(Attempt::Retry {
                    reason: e.error.to_string(),
                });
            }
            Err(e) => return Err(e.error),
        };
        self.resumable = opened.accepts_ranges;
        let total = self.accept(&opened)?;
        self.check_disk_space(total)?;
        self.paths.write_meta(&PartialMeta {
            url: self.request.url.clone(),
            total,
            validator: opened.validator.clone(),
            declared_sha256: opened.declared_sha256.as_ref().map(verify::to_hex),
        })?;
        if let Some(p) = self.meter.report(self.have, total, true) {
            on_progress(&p);
        }
        let declared = opened.declared_sha256;
        let received = self.receive(opened.body, total, cancel, on_progress)?;
        if let Some(p) = self.meter.report(self.have, total, true) {
            on_progress(&p);
        }
        match (received, total) {
            (Err(e), _) => Ok(Attempt::Retry {
                reason: format!("connection lost at byte {}: {e}", self.have),
            }),
            (Ok(()), Some(total)) if self.have < total => Ok(Attempt::Retry {
                reason: format!("body ended at byte {} of {total}", self.have),
            }),
            (Ok(()), _) => Ok(Attempt::Complete { declared }),
        }
    }

    /// A non-success status: typed errors, except the ones worth another try.
    fn refused(&mut self, status: u16) -> Result<Attempt> {
        match status {
            401 | 403 => Err(fail(self.request, DownloadFailure::AuthRequired { status })),
            // The partial file is longer than the server's: it is not a prefix of it.
            416 => {
                self.restart();
                Ok(Attempt::Retry {
                    reason: "HTTP 416: the partial file does not fit the server's".into(),
                })
            }
            408 | 429 | 500..=599 => Ok(Attempt::Retry {
                reason: format!("HTTP {status}"),
            }),
            _ => {
                // 404 and the like: the partial file is of something that is gone.
                self.paths.discard();
                Err(fail(self.request, DownloadFailure::HttpStatus { status }))
            }
        }
    }

    /// Checks what the server sends against what the partial file holds; returns the total.
    /// A server that ignores the Range (200), or whose file changed, restarts the download.
    fn accept(&mut self, opened: &Opened) -> Result<Option<u64>> {
        let invalid = |why: String| fail(self.request, DownloadFailure::InvalidResponse(why));
        let previous = self.paths.read_meta();
        if self.have > 0 {
            let same_file = previous.as_ref().is_some_and(|m| {
                m.total == opened.total
                    && (m.validator.is_none() || m.validator == opened.validator)
            });
            if opened.start == 0 || !same_file {
                log::info!("{}: cannot resume; starting again from 0", self.request.url);
                self.restart();
            } else if opened.start != self.have {
                self.paths.discard();
                return Err(invalid(format!(
                    "asked for bytes from {}, got them from {}",
                    self.have, opened.start
                )));
            }
        }
        if opened.start != self.have {
            return Err(invalid(format!("a body starting at byte {}", opened.start)));
        }
        let total = opened.total.or(self.request.size);
        if let Some(total) = total {
            if total > MAX_DOWNLOAD_BYTES {
                return Err(invalid(format!("a file of {total} bytes")));
            }
            if let Some(size) = self.request.size
                && size != total
            {
                self.paths.discard();
                return Err(invalid(format!(
                    "the server's file has {total} bytes, {size} expected"
                )));
            }
        }
        Ok(total)
    }

    fn check_disk_space(&self, total: Option<u64>) -> Result<()> {
        let Some(total) = total else { return Ok(()) };
        let dir = self.paths.part.parent().unwrap_or(Path::new("."));
        let needed = total.saturating_sub(self.have);
        match super::disk::available_bytes(dir)? {
            Some(available) if available < needed => Err(fail(
                self.request,
                DownloadFailure::InsufficientDisk { needed, available },
            )),
            _ => Ok(()),
        }
    }

    /// Appends the body to the partial file. `Err` inside `Ok`: the connection broke (retry);
    /// an outer `Err`: the download is over (disk, cancel, a body longer than declared).
    fn receive(
        &mut self,
        mut body: impl Read,
        total: Option<u64>,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(&DownloadProgress),
    ) -> Result<std::io::Result<()>> {
        let part = &self.paths.part;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(|e| GemmaError::io(part, e))?;
        let limit = total.unwrap_or(MAX_DOWNLOAD_BYTES);
        let mut buffer = vec![0u8; 256 << 10];
        loop {
            if cancel.load(Ordering::Relaxed) {
                self.flush(&mut file)?;
                return Err(fail(self.request, DownloadFailure::Cancelled));
            }
            let n = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.flush(&mut file)?;
                    return Ok(Err(e));
                }
            };
            if self.have + n as u64 > limit {
                drop(file);
                self.paths.discard();
                return Err(fail(
                    self.request,
                    DownloadFailure::InvalidResponse(format!(
                        "the body is longer than the {limit} bytes declared"
                    )),
                ));
            }
            if let Err(e) = file.write_all(&buffer[..n]) {
                return Err(self.write_failed(&mut file, e));
            }
            self.hasher.update(&buffer[..n]);
            self.have += n as u64;
            self.meter.add(n as u64);
            if let Some(p) = self.meter.report(self.have, total, false) {
                on_progress(&p);
            }
        }
        self.flush(&mut file)?;
        Ok(Ok(()))
    }

    /// A failed write. A full disk (or a file-size limit) keeps what was written for a resume
    /// once there is room: the file is cut back to the bytes that are in the hash.
    fn write_failed(&mut self, file: &mut File, e: std::io::Error) -> GemmaError {
        let part = &self.paths.part;
        if let Err(e) = file.set_len(self.have) {
            log::warn!("cannot truncate {}: {e}", part.display());
            self.paths.discard();
        }
        let full = matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::FileTooLarge)
            || e.raw_os_error() == Some(libc::EDQUOT);
        if !full {
            return GemmaError::io(part, e);
        }
        let dir = part.parent().unwrap_or(Path::new("."));
        let available = super::disk::available_bytes(dir)
            .ok()
            .flatten()
            .unwrap_or(0);
        let total = self.paths.read_meta().and_then(|m| m.total);
        let needed = total.map_or(1, |t| t.saturating_sub(self.have));
        fail(
            self.request,
            DownloadFailure::InsufficientDisk { needed, available },
        )
    }

    fn flush(&self, file: &mut File) -> Result<()> {
        file.flush()
            .and_then(|()| file.sync_data())
            .map_err(|e| GemmaError::io(&self.paths.part, e))
    }

    /// Verifies the complete partial file and renames it into place.
    fn finish(self, declared: Option<Sha256Digest>) -> Result<Downloaded> {
        let actual: Sha256Digest = self.hasher.finalize().into();
        let (expected, verification) = match (self.pinned, declared) {
            (Some(pinned), _) => (Some(pinned), Verification::Pinned),
            (None, Some(declared)) => (Some(declared), Verification::ServerDeclared),
            (None, None) => (None, Verification::Unverified),
        };
        if let Some(expected) = expected
            && expected != actual
        {
            self.paths.discard();
            return Err(fail(
                self.request,
                DownloadFailure::ChecksumMismatch {
                    expected: verify::to_hex(&expected),
                    actual: verify::to_hex(&actual),
                },
            ));
        }
        if expected.is_none() {
            log::warn!(
                "{}: no sha256 pinned or declared by the server; the file is not verified",
                self.request.url
            );
        }
        let dest = &self.request.dest;
        std::fs::rename(&self.paths.part, dest).map_err(|e| GemmaError::io(dest, e))?;
        if let Some(dir) = dest.parent()
            && let Ok(dir) = File::open(dir)
        {
            // The rename is durable once the directory is synced.
            let _ = dir.sync_all();
        }
        let _ = std::fs::remove_file(&self.paths.meta);
        Ok(Downloaded {
            path: dest.clone(),
            bytes: self.have,
            sha256: Some(verify::to_hex(&actual)),
            verification,
        })
    }
}

fn sleep_unless_cancelled(duration: Duration, cancel: &AtomicBool) {
    let step = Duration::from_millis(20);
    let mut left = duration;
    while !left.is_zero() && !cancel.load(Ordering::Relaxed) {
        let nap = left.min(step);
        std::thread::sleep(nap);
        left -= nap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 9,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        let waits: Vec<u128> = (1..=5).map(|f| policy.backoff(f).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }
}
