//! The downloader against a local HTTP server (tests/http_server): resume after dropped
//! connections, verification, typed errors for every way a server can fail, cancel, disk space
//! and the per-file lock. The finished file is compared byte for byte with what the server
//! holds, and its sha256 with coreutils' `sha256sum`.

mod http_server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gemmakit::GemmaError;
use gemmakit::delivery::{
    DownloadProgress, DownloadRequest, Downloaded, RetryPolicy, Verification, download,
};
use gemmakit::error::DownloadFailure;
use http_server::{FileServer, Route, reference_sha256, temp_dir, test_bytes};

const MIB: usize = 1 << 20;

/// A request with quick retries (the default backoff is half a second and up).
fn request(url: String, dest: &Path) -> DownloadRequest {
    let mut r = DownloadRequest::new(url, dest);
    r.retry = RetryPolicy {
        attempts: 4,
        first_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    r.stall_timeout = Duration::from_secs(5);
    r
}

fn run(r: &DownloadRequest) -> (Result<Downloaded, GemmaError>, Vec<DownloadProgress>) {
    let mut seen = Vec::new();
    let result = download(r, &AtomicBool::new(false), &mut |p| seen.push(*p));
    (result, seen)
}

fn failure(result: Result<Downloaded, GemmaError>) -> DownloadFailure {
    match result {
        Err(GemmaError::Download { failure, .. }) => failure,
        other => panic!("expected a download failure, got {other:?}"),
    }
}

fn part_of(dest: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", dest.display()))
}

fn assert_nothing_left(dest: &Path) {
    assert!(!dest.exists(), "{} exists", dest.display());
    assert!(
        !part_of(dest).exists(),
        "partial file of {} kept",
        dest.display()
    );
}

#[test]
fn resumes_after_the_connection_drops_at_several_points() {
    let body = test_bytes(2 * MIB, 1);
    let sha = reference_sha256(&body);
    let server = FileServer::start();
    let cuts = [1, 300_000, 4096 * 100 + 7, MIB as u64];
    server.route("/m.gguf", Route::file(body.clone()).with_cuts(&cuts));
    let dir = temp_dir("resume");
    let dest = dir.join("m.gguf");
    let mut r = request(server.url("/m.gguf"), &dest);
    r.sha256 = Some(sha.clone());
    let (result, progress) = run(&r);
    let done = result.unwrap();
    assert_eq!(done.verification, Verification::Pinned);
    assert_eq!(done.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(std::fs::read(&dest).unwrap(), *body, "byte-identical");
    // Each retry asked for the bytes after the ones it had.
    let mut offset = 0;
    let mut expected = vec![None];
    for cut in cuts {
        offset += cut;
        expected.push(Some(format!("bytes={offset}-")));
    }
    assert_eq!(server.ranges("/m.gguf"), expected);
    let last = progress.last().unwrap();
    assert_eq!(
        (last.downloaded, last.total),
        (body.len() as u64, Some(body.len() as u64))
    );
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].downloaded <= w[1].downloaded)
    );
    for name in ["m.gguf.part", "m.gguf.part.json", "m.gguf.lock"] {
        assert!(!dir.join(name).exists(), "{name} left behind");
    }
}

#[test]
fn a_partial_file_from_an_earlier_run_is_resumed_and_verified() {
    let body = test_bytes(MIB, 2);
    let server = FileServer::start();
    // The first run gets 400,000 bytes, then every attempt dies at once.
    server.route(
        "/f.gguf",
        Route::file(body.clone()).with_cuts(&[400_000, 0, 0, 0, 0, 0]),
    );
    let dir = temp_dir("earlier-run");
    let dest = dir.join("f.gguf");
    let mut r = request(server.url("/f.gguf"), &dest);
    r.retry.attempts = 3;
    let err = failure(run(&r).0);
    assert!(
        matches!(err, DownloadFailure::Network { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(std::fs::metadata(part_of(&dest)).unwrap().len(), 400_000);
    assert!(!dest.exists());
    // A later run (a new Job, as a new process would start) resumes from the partial file.
    server.route(
        "/f.gguf",
        Route {
            etag: Some(reference_sha256(&body)),
            ..Route::file(body.clone())
        },
    );
    let done = run(&r).0.unwrap();
    assert_eq!(done.verification, Verification::ServerDeclared);
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
    assert_eq!(
        server.ranges("/f.gguf").last().unwrap().as_deref(),
        Some("bytes=400000-")
    );
}

#[test]
fn a_wrong_sha256_deletes_the_file_and_says_both() {
    let body = test_bytes(300_000, 3);
    let server = FileServer::start();
    server.route("/f.gguf", Route::file(body.clone()));
    let fake = "ab".repeat(32);
    server.route(
        "/declared.gguf",
        Route {
            etag: Some(fake.clone()),
            ..Route::file(body.clone())
        },
    );
    let dir = temp_dir("sha");
    for (path, pinned) in [("/f.gguf", Some(fake.clone())), ("/declared.gguf", None)] {
        let dest = dir.join(&path[1..]);
        let mut r = request(server.url(path), &dest);
        r.sha256 = pinned;
        let err = failure(run(&r).0);
        let DownloadFailure::ChecksumMismatch { expected, actual } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (expected.as_str(), actual.clone()),
            (fake.as_str(), reference_sha256(&body))
        );
        assert_nothing_left(&dest);
    }
}

#[test]
fn a_body_cut_short_every_time_fails_after_bounded_retries() {
    let body = test_bytes(200_000, 4);
    let server = FileServer::start();
    // Content-Length says 200,000, the connection closes after 1,000 bytes, every time, and
    // the server cannot resume: no progress is ever kept.
    let cuts = vec![1000; 10];
    server.route(
        "/f.gguf",
        Route {
            ranges: false,
            ..Route::file(body.clone()).with_cuts(&cuts)
        },
    );
    let dir = temp_dir("truncated");
    let dest = dir.join("f.gguf");
    let r = request(server.url("/f.gguf"), &dest);
    let err = failure(run(&r).0);
    assert!(
        matches!(err, DownloadFailure::Network { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(server.ranges("/f.gguf").len(), 4, "bounded retries");
    assert_nothing_left(&dest);
}

#[test]
fn a_server_without_range_support_restarts_from_zero() {
    let body = test_bytes(MIB, 5);
    let server = FileServer::start();
    server.route(
        "/f.gguf",
        Route {
            ranges: false,
            ..Route::file(body.clone()).with_cuts(&[500_000])
        },
    );
    let dir = temp_dir("no-ranges");
    let dest = dir.join("f.gguf");
    let done = run(&request(server.url("/f.gguf"), &dest)).0.unwrap();
    assert_eq!(done.bytes, MIB as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
    assert_eq!(
        server.ranges("/f.gguf"),
        [None, Some("bytes=500000-".to_string())],
        "asked to resume, got the whole file and took it from 0"
    );
}

#[test]
fn statuses_are_typed_errors_and_a_token_opens_a_gated_file() {
    let body = test_bytes(100_000, 6);
    let server = FileServer::start();
    server.route(
        "/gated.gguf",
        Route {
            token: Some("hf_secret".into()),
            ..Route::file(body.clone())
        },
    );
    server.route(
        "/flaky.gguf",
        Route {
            status: Some(503),
            ..Route::default()
        },
    );
    let dir = temp_dir("status");
    let dest = dir.join("x.gguf");

    let err = failure(run(&request(server.url("/missing.gguf"), &dest)).0);
    assert_eq!(err, DownloadFailure::HttpStatus { status: 404 });
    assert_nothing_left(&dest);

    let err = run(&request(server.url("/gated.gguf"), &dest))
        .0
        .unwrap_err();
    assert!(err.to_string().contains("needs an access token"), "{err}");
    assert_eq!(
        failure(Err(err)),
        DownloadFailure::AuthRequired { status: 401 }
    );
    let mut r = request(server.url("/gated.gguf"), &dest);
    r.token = Some("wrong".into());
    assert_eq!(
        failure(run(&r).0),
        DownloadFailure::AuthRequired { status: 403 }
    );
    assert_nothing_left(&dest);
    r.token = Some("hf_secret".into());
    run(&r).0.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), *body);

    let flaky = dir.join("flaky.gguf");
    let err = failure(run(&request(server.url("/flaky.gguf"), &flaky)).0);
    assert!(
        matches!(err, DownloadFailure::Network { attempts: 4, ref reason } if reason.contains("503")),
        "{err:?}"
    );
    assert_eq!(server.ranges("/flaky.gguf").len(), 4);
}

#[test]
fn redirect_chains_are_followed_and_the_token_stays_on_its_host() {
    let body = test_bytes(200_000, 7);
    let sha = reference_sha256(&body);
    let server = FileServer::start();
    let port = server.port;
    // Like Hugging Face: the first answer declares the LFS sha256 and size, then the CDN.
    server.route(
        "/resolve/main/f.gguf",
        Route {
            redirect: Some("../hop".into()),
            extra_headers: vec![
                ("X-Linked-Etag".into(), format!("\"{sha}\"")),
                ("X-Linked-Size".into(), body.len().to_string()),
            ],
            ..Route::default()
        },
    );
    server.route(
        "/resolve/hop",
        Route {
            redirect: Some(format!("http://localhost:{port}/cdn/f.gguf?sig=1")),
            ..Route::default()
        },
    );
    server.route("/cdn/f.gguf?sig=1", Route::file(body.clone()));
    server.route(
        "/loop",
        Route {
            redirect: Some("/loop".into()),
            ..Route::default()
        },
    );
    let dir = temp_dir("redirect");
    let dest = dir.join("f.gguf");
    let mut r = request(server.url("/resolve/main/f.gguf"), &dest);
    r.token = Some("hf_secret".into());
    let done = run(&r).0.unwrap();
    assert_eq!(done.verification, Verification::ServerDeclared);
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
    let seen = server.requests();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/resolve/main/f.gguf", "/resolve/hop", "/cdn/f.gguf?sig=1"]
    );
    let auth: Vec<_> = seen.iter().map(|s| s.authorization.is_some()).collect();
    assert_eq!(
        auth,
        [true, true, false],
        "no token for another host (localhost)"
    );

    let err = failure(run(&request(server.url("/loop"), &dir.join("loop.gguf"))).0);
    assert!(
        matches!(err, DownloadFailure::InvalidResponse(ref w) if w.contains("redirects")),
        "{err:?}"
    );
}

#[test]
fn cancel_keeps_a_resumable_partial_file() {
    let body = test_bytes(2 * MIB, 8);
    let server = FileServer::start();
    server.route(
        "/slow.gguf",
        Route {
            chunk_delay: Some(Duration::from_millis(2)),
            ..Route::file(body.clone())
        },
    );
    let dir = temp_dir("cancel");
    let dest = dir.join("slow.gguf");
    let r = request(server.url("/slow.gguf"), &dest);
    let cancel = Arc::new(AtomicBool::new(false));
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.store(true, Ordering::Relaxed);
        })
    };
    let started = std::time::Instant::now();
    let result = download(&r, &cancel, &mut |_| {});
    canceller.join().unwrap();
    assert_eq!(failure(result), DownloadFailure::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cancel took {:?}",
        started.elapsed()
    );
    assert!(!dest.exists());
    let kept = std::fs::metadata(part_of(&dest)).unwrap().len();
    assert!(kept > 0 && kept < body.len() as u64, "{kept}");
    server.route("/slow.gguf", Route::file(body.clone()));
    run(&r).0.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
    assert_eq!(
        server.ranges("/slow.gguf").last().unwrap(),
        &Some(format!("bytes={kept}-"))
    );
}

#[test]
fn two_downloads_of_one_file_one_runs_the_other_is_told_or_waits() {
    let body = test_bytes(MIB, 9);
    let server = FileServer::start();
    server.route(
        "/f.gguf",
        Route {
            chunk_delay: Some(Duration::from_millis(1)),
            ..Route::file(body.clone())
        },
    );
    let dir = temp_dir("lock");
    let dest = dir.join("f.gguf");
    let first = {
        let r = request(server.url("/f.gguf"), &dest);
        std::thread::spawn(move || run(&r).0)
    };
    // Wait until the first holds the lock and writes.
    while !part_of(&dest).exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = run(&request(server.url("/f.gguf"), &dest)).0;
    assert!(matches!(failure(second), DownloadFailure::Locked(ref p) if *p == dest));
    let mut waiting = request(server.url("/f.gguf"), &dest);
    waiting.wait_for_lock = true;
    let waited = run(&waiting).0.unwrap();
    assert_eq!(waited.verification, Verification::AlreadyPresent);
    first.join().unwrap().unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
    assert_eq!(
        server.ranges("/f.gguf").len(),
        1,
        "the file was fetched once"
    );
}

#[test]
fn hostile_answers_are_refused() {
    let body = test_bytes(300_000, 10);
    let server = FileServer::start();
    server.route("/f.gguf", Route::file(body.clone()).with_cuts(&[100_000]));
    let dir = temp_dir("hostile");
    // A catalogue size other than the server's: another file.
    let dest = dir.join("size.gguf");
    let mut r = request(server.url("/f.gguf"), &dest);
    r.size = Some(123);
    let err = failure(run(&r).0);
    assert!(
        matches!(err, DownloadFailure::InvalidResponse(ref w) if w.contains("123 expected")),
        "{err:?}"
    );
    assert_nothing_left(&dest);
    // A 206 for other bytes than asked.
    server.route(
        "/wrong-range.gguf",
        Route {
            wrong_range_start: Some(5),
            ..Route::file(body.clone()).with_cuts(&[100_000])
        },
    );
    let dest = dir.join("range.gguf");
    let err = failure(run(&request(server.url("/wrong-range.gguf"), &dest)).0);
    assert!(
        matches!(err, DownloadFailure::InvalidResponse(ref w) if w.contains("from 5")),
        "{err:?}"
    );
    assert_nothing_left(&dest);
    // A Content-Length of 1 TiB: refused before anything is allocated or written.
    server.route(
        "/huge.gguf",
        Route {
            declared_len: Some(1 << 40),
            ..Route::file(body.clone())
        },
    );
    let dest = dir.join("huge.gguf");
    let err = failure(run(&request(server.url("/huge.gguf"), &dest)).0);
    assert!(
        matches!(err, DownloadFailure::InvalidResponse(ref w) if w.contains("1099511627776 bytes")),
        "{err:?}"
    );
    assert_nothing_left(&dest);
    // Not a URL, not http(s), not a sha256: refused before any request.
    for (url, sha) in [
        ("ftp://x/y", None),
        ("nonsense", None),
        (&server.url("/f.gguf")[..], Some("xyz")),
    ] {
        let mut r = request(url.to_string(), &dir.join("bad.gguf"));
        r.sha256 = sha.map(String::from);
        assert!(
            matches!(run(&r).0, Err(GemmaError::InvalidArgument(_))),
            "{url}"
        );
    }
}

/// A 1 MiB tmpfs where the process may mount one (root in a container with the capability);
/// elsewhere the statvfs check is still covered by the CLI's file-size-limit test.
#[test]
fn a_full_disk_is_refused_before_the_body_and_nothing_is_left() {
    let body = test_bytes(2 * MIB, 11);
    let server = FileServer::start();
    server.route("/big.gguf", Route::file(body.clone()));
    let dir = temp_dir("tmpfs");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN)");
        return;
    }
    let dest = dir.join("big.gguf");
    let err = failure(run(&request(server.url("/big.gguf"), &dest)).0);
    let unmount = || {
        let _ = std::process::Command::new("umount").arg(&dir).status();
    };
    let DownloadFailure::InsufficientDisk { needed, available } = err else {
        unmount();
        panic!("{err:?}")
    };
    assert_eq!(needed, 2 * MIB as u64);
    assert!(available <= MIB as u64, "{available}");
    assert!(!dest.exists());
    let part_len = std::fs::metadata(part_of(&dest)).map_or(0, |m| m.len());
    unmount();
    assert_eq!(part_len, 0, "nothing written");
}
