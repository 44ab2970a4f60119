//! `gemmakit pull NAME|URL`: downloads a catalogue model (or any URL) into the cache,
//! resumably and verified, with a progress bar on stderr; the final path is the last line on
//! stdout.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::Args;
use gemmakit::delivery::{
    Catalogue, DownloadProgress, DownloadRequest, Downloaded, ModelCache, Verification, download,
};
use gemmakit::error::DownloadFailure;
use gemmakit::{GemmaError, Result};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct PullArgs {
    /// A catalogue name (`gemmakit models catalogue`) or an http(s) URL.
    name: String,
    /// Where to write the file (default: its place in the cache, $GEMMAKIT_HOME/models).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Expected sha256 (hex); overrides the catalogue's.
    #[arg(long)]
    sha256: Option<String>,
    /// Access token for gated repositories (default: $HF_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// Also pull the model's vision/audio towers (its catalogue `mmproj` entry).
    #[arg(long)]
    mmproj: bool,
}

pub fn execute(args: PullArgs) -> Result<()> {
    let catalogue = Catalogue::from_env()?;
    let cache = ModelCache::from_env();
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("HF_TOKEN").ok());
    let mut requests = Vec::new();
    if args.name.starts_with("https://") || args.name.starts_with("http://") {
        let dest = match &args.out {
            Some(out) => out.clone(),
            None => cache.models_dir().join(file_name_of(&args.name)?),
        };
        let mut request = DownloadRequest::new(&args.name, dest);
        request.sha256 = args.sha256.clone();
        requests.push(request);
    } else {
        let entry = catalogue.get(&args.name)?;
        if args.mmproj {
            let Some(mmproj) = &entry.mmproj else {
                return Err(GemmaError::InvalidArgument(format!(
                    "`{}` has no mmproj entry",
                    entry.name
                )));
            };
            let towers = catalogue.get(mmproj)?;
            let mut request =
                DownloadRequest::new(towers.url(&catalogue.url_pattern), cache.path_of(towers));
            (request.sha256, request.size) = (towers.sha256.clone(), towers.size);
            if let Some(out) = &args.out {
                request.dest = out.with_file_name(&towers.file);
            }
            requests.push(request);
        }
        let dest = args.out.clone().unwrap_or_else(|| cache.path_of(entry));
        let mut request = DownloadRequest::new(entry.url(&catalogue.url_pattern), dest);
        request.sha256 = args.sha256.clone().or_else(|| entry.sha256.clone());
        request.size = entry.size;
        requests.push(request);
    }
    for mut request in requests {
        request.token = token.clone();
        let done = pull_one(&mut request)?;
        let how = match done.verification {
            Verification::Pinned => "sha256 verified (pinned)",
            Verification::ServerDeclared => "sha256 verified (declared by the server)",
            Verification::Unverified => "NOT verified: no sha256 pinned or declared",
            Verification::AlreadyPresent => "already downloaded",
        };
        eprintln!("gemmakit: {} bytes, {how}", done.bytes);
        println!("{}", done.path.display());
    }
    Ok(())
}

/// Downloads with a progress bar; when another process is pulling the same file, says so and
/// waits for it.
fn pull_one(request: &mut DownloadRequest) -> Result<Downloaded> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg}")
            .expect("valid template"),
    );
    let never = AtomicBool::new(false);
    let mut show = |p: &DownloadProgress| {
        bar.set_length(p.total.unwrap_or(p.downloaded));
        bar.set_position(p.downloaded);
        bar.set_message(rate_and_eta(p));
    };
    eprintln!("gemmakit: {} → {}", request.url, request.dest.display());
    let result = match download(request, &never, &mut show) {
        Err(GemmaError::Download {
            failure: DownloadFailure::Locked(_),
            ..
        }) => {
            eprintln!("gemmakit: another pull of this file is running; waiting for it");
            request.wait_for_lock = true;
            download(request, &never, &mut show)
        }
        other => other,
    };
    bar.finish_and_clear();
    result
}

fn rate_and_eta(p: &DownloadProgress) -> String {
    let rate = format!("{:.1} MiB/s", p.bytes_per_second / (1u64 << 20) as f64);
    match p.eta_seconds {
        Some(eta) => format!("{rate}, {}:{:02} left", eta as u64 / 60, eta as u64 % 60),
        None => rate,
    }
}

/// The last path segment of a URL (no query), refusing names that are no file name.
fn file_name_of(url: &str) -> Result<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        return Err(GemmaError::InvalidArgument(format!(
            "`{url}` names no file; pass --out FILE"
        )));
    }
    Ok(name.to_string())
}
