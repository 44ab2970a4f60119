//! Model delivery across the FFI: the catalogue, a download handle (progress listener, cancel
//! from any thread) and the device's available memory. Conversion only: the behaviour is
//! `gemmakit::delivery` and `gemmakit::engine::memory`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gemmakit::delivery::{
    self, Catalogue, DownloadRequest, ModelCache, Verification as CoreVerification,
};

use crate::error::{GemmaKitError, guard};

/// Progress of a download: bytes on disk so far, total when known, rate and time left.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DownloadProgress {
    pub downloaded: u64,
    pub total: Option<u64>,
    pub bytes_per_second: f64,
    pub eta_seconds: Option<f64>,
}

impl From<&delivery::DownloadProgress> for DownloadProgress {
    fn from(p: &delivery::DownloadProgress) -> Self {
        DownloadProgress {
            downloaded: p.downloaded,
            total: p.total,
            bytes_per_second: p.bytes_per_second,
            eta_seconds: p.eta_seconds,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Verification {
    Pinned,
    ServerDeclared,
    Unverified,
    AlreadyPresent,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DownloadedFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub verification: Verification,
}

/// One catalogue entry, with where it is stored in a cache.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CatalogueModel {
    pub name: String,
    pub description: String,
    pub url: String,
    pub quantization: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub min_ram_mb: u64,
    pub context: u32,
    pub mmproj: Option<String>,
    /// The file's path relative to a cache's models directory.
    pub relative_path: String,
}

/// Receives download progress (at most every 100 ms, and at the start and end), on the thread
/// that called `run`. Throwing cancels the download (`run` then throws `Callback`).
#[uniffi::export(foreign)]
pub trait DownloadListener: Send + Sync {
    fn on_progress(&self, progress: DownloadProgress) -> Result<(), GemmaKitError>;
}

/// The built-in catalogue, or the app's own (`catalogue_json`).
#[uniffi::export]
pub fn catalogue_models(
    catalogue_json: Option<String>,
) -> Result<Vec<CatalogueModel>, GemmaKitError> {
    guard(|| {
        let catalogue = load_catalogue(catalogue_json)?;
        Ok(catalogue
            .models
            .iter()
            .map(|m| CatalogueModel {
                name: m.name.clone(),
                description: m.description.clone(),
                url: m.url(&catalogue.url_pattern),
                quantization: m.quantization.clone(),
                size: m.size,
                sha256: m.sha256.clone(),
                min_ram_mb: m.min_ram_mb,
                context: u32::try_from(m.context).unwrap_or(u32::MAX),
                mmproj: m.mmproj.clone(),
                relative_path: m.relative_path().display().to_string(),
            })
            .collect())
    })
}

/// Memory the device can give this process now, as the engine's memory check reads it
/// (`MemAvailable` on Linux and Android); `null`/`nil` where the platform has no such figure.
#[uniffi::export]
pub fn available_memory() -> Option<u64> {
    gemmakit::engine::memory::available_memory()
}

fn load_catalogue(json: Option<String>) -> gemmakit::Result<Catalogue> {
    match json {
        Some(json) => Catalogue::from_json(&json),
        None => Ok(Catalogue::built_in()),
    }
}

/// One file to download. Create it, call `run` on a background thread, `cancel` from any
/// other; after a failure or cancel, a new handle for the same file resumes the partial file.
#[derive(uniffi::Object)]
pub struct ModelDownload {
    request: DownloadRequest,
    cancel: AtomicBool,
}

#[uniffi::export]
impl ModelDownload {
    /// Any URL to `dest_path`; `sha256`: the expected hex digest (else the server's declared
    /// one); `token`: a bearer token for gated repositories.
    #[uniffi::constructor]
    pub fn new(
        url: String,
        dest_path: String,
        sha256: Option<String>,
        token: Option<String>,
    ) -> Arc<Self> {
        let mut request = DownloadRequest::new(url, dest_path);
        request.sha256 = sha256;
        request.token = token;
        Arc::new(ModelDownload {
            request,
            cancel: AtomicBool::new(false),
        })
    }

    /// The catalogue entry `name` into the cache whose models directory is `models_dir`.
    #[uniffi::constructor]
    pub fn from_catalogue(
        name: String,
        models_dir: String,
        catalogue_json: Option<String>,
        token: Option<String>,
    ) -> Result<Arc<Self>, GemmaKitError> {
        guard(|| {
            let catalogue = load_catalogue(catalogue_json)?;
            let entry = catalogue.get(&name)?;
            let dest = ModelCache::at(PathBuf::from(models_dir)).path_of(entry);
            let mut request = DownloadRequest::new(entry.url(&catalogue.url_pattern), dest);
            request.sha256 = entry.sha256.clone();
            request.size = entry.size;
            request.token = token;
            Ok(Arc::new(ModelDownload {
                request,
                cancel: AtomicBool::new(false),
            }))
        })
    }

    /// Where the file goes.
    pub fn dest_path(&self) -> String {
        self.request.dest.display().to_string()
    }

    /// Downloads, blocking the calling thread (call it off the main thread). Fails with
    /// `Download { kind = Locked }` while another download of the same file runs.
    pub fn run(
        &self,
        listener: Option<Arc<dyn DownloadListener>>,
    ) -> Result<DownloadedFile, GemmaKitError> {
        guard(|| {
            let listener_error = Mutex::new(None);
            let mut on_progress = |p: &delivery::DownloadProgress| {
                if let Some(listener) = &listener
                    && let Err(e) = listener.on_progress(p.into())
                {
                    *listener_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    self.cancel.store(true, Ordering::Relaxed);
                }
            };
            let result = delivery::download(&self.request, &self.cancel, &mut on_progress);
            if let Some(e) = listener_error
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
            {
                return Err(e);
            }
            let done = result?;
            Ok(DownloadedFile {
                path: done.path.display().to_string(),
                bytes: done.bytes,
                sha256: done.sha256,
                verification: match done.verification {
                    CoreVerification::Pinned => Verification::Pinned,
                    CoreVerification::ServerDeclared => Verification::ServerDeclared,
                    CoreVerification::Unverified => Verification::Unverified,
                    CoreVerification::AlreadyPresent => Verification::AlreadyPresent,
                },
            })
        })
    }

    /// Stops `run` within one read (it then fails with `Download { kind = Cancelled }`); the
    /// partial file is kept for a resume.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}
