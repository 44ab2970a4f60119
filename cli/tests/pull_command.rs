//! `gemmakit pull` and `gemmakit models` as processes, against the local HTTP server of
//! rust-core/tests/http_server: resume across processes (the first one killed mid-body), a
//! file-size limit standing in for a full disk, two concurrent pulls, failures with the
//! reason, and catalogue names resolved in $GEMMAKIT_HOME.

#[path = "../../rust-core/tests/http_server/mod.rs"]
mod http_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use http_server::{FileServer, Route, reference_sha256, temp_dir, test_bytes};

fn gemmakit(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gemmakit"));
    c.env("GEMMAKIT_HOME", home).env_remove("HF_TOKEN");
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn last_stdout_line(out: &Output) -> String {
    text(&out.stdout).lines().last().unwrap_or("").to_string()
}

#[test]
fn a_killed_pull_resumes_in_a_new_process() {
    let body = test_bytes(3 << 20, 21);
    let sha = reference_sha256(&body);
    let server = FileServer::start();
    server.route(
        "/m.gguf",
        Route {
            chunk_delay: Some(Duration::from_millis(2)),
            ..Route::file(body.clone())
        },
    );
    let home = temp_dir("kill");
    let out = home.join("m.gguf");
    let part = home.join("m.gguf.part");
    let mut child = gemmakit(&home)
        .args(["pull", &server.url("/m.gguf"), "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 256 << 10 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup, the lock dies with the process
    child.wait().unwrap();
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept < body.len() as u64);

    server.route("/m.gguf", Route::file(body.clone()));
    let done = gemmakit(&home)
        .args(["pull", &server.url("/m.gguf"), "--sha256", &sha, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert_eq!(last_stdout_line(&done), out.display().to_string());
    assert_eq!(std::fs::read(&out).unwrap(), *body, "byte-identical");
    let resumed_from = server.ranges("/m.gguf").last().cloned().flatten().unwrap();
    let from: u64 = resumed_from["bytes=".len()..resumed_from.len() - 1]
        .parse()
        .unwrap();
    assert!(from >= kept, "resumed at {from}, {kept} were on disk");
    assert!(!part.exists());
}

#[test]
fn a_file_size_limit_fails_like_a_full_disk_and_keeps_a_resumable_part() {
    let body = test_bytes(1 << 20, 22);
    let server = FileServer::start();
    server.route("/m.gguf", Route::file(body.clone()));
    let home = temp_dir("fsize");
    let out = home.join("m.gguf");
    // RLIMIT_FSIZE of 256 KiB (bash counts 1024-byte blocks); SIGXFSZ ignored, so the write
    // fails with EFBIG as a write to a full disk fails with ENOSPC.
    let limited = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 256; exec \"$@\"")
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_gemmakit"))
        .args(["pull", &server.url("/m.gguf"), "--out"])
        .arg(&out)
        .env("GEMMAKIT_HOME", &home)
        .output()
        .unwrap();
    assert!(!limited.status.success());
    let stderr = text(&limited.stderr);
    assert!(stderr.contains("not enough disk space"), "{stderr}");
    assert!(!out.exists());
    let kept = std::fs::metadata(home.join("m.gguf.part")).unwrap().len();
    assert!(kept > 0 && kept <= 256 << 10, "{kept}");

    let done = gemmakit(&home)
        .args(["pull", &server.url("/m.gguf"), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), *body);
    assert_eq!(
        server.ranges("/m.gguf").last().unwrap(),
        &Some(format!("bytes={kept}-"))
    );
}

#[test]
fn two_concurrent_pulls_fetch_the_file_once() {
    let body = test_bytes(1 << 20, 23);
    let server = FileServer::start();
    server.route(
        "/m.gguf",
        Route {
            chunk_delay: Some(Duration::from_millis(1)),
            ..Route::file(body.clone())
        },
    );
    let home = temp_dir("concurrent");
    let out = home.join("m.gguf");
    let spawn = || {
        gemmakit(&home)
            .args(["pull", &server.url("/m.gguf"), "--out"])
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    while !home.join("m.gguf.part").exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = spawn();
    let (a, b) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for out_ in [&a, &b] {
        assert!(out_.status.success(), "{}", text(&out_.stderr));
        assert_eq!(last_stdout_line(out_), out.display().to_string());
    }
    assert!(
        text(&b.stderr).contains("waiting for it"),
        "{}",
        text(&b.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), *body);
    assert_eq!(server.ranges("/m.gguf").len(), 1);
}

#[test]
fn failures_exit_non_zero_with_the_reason() {
    let server = FileServer::start();
    server.route(
        "/gated.gguf",
        Route {
            token: Some("t".into()),
            ..Route::file(test_bytes(10, 24))
        },
    );
    let home = temp_dir("fail");
    for (url, reason) in [
        (server.url("/missing.gguf"), "HTTP 404"),
        (server.url("/gated.gguf"), "needs an access token"),
    ] {
        let out = gemmakit(&home).args(["pull", &url]).output().unwrap();
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(reason), "{}", text(&out.stderr));
        assert!(text(&out.stdout).is_empty());
    }
    let out = gemmakit(&home)
        .args(["pull", "no-such-model"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("gemma-4-e2b-it-q4_k_m"),
        "lists the catalogue"
    );
}

#[test]
fn catalogue_names_pull_into_the_cache_and_load_by_name() {
    // The tiny Gemma 4 fixture, served under a catalogue entry of an app's own catalogue.
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny_gemma4_e2b/model-f32.gguf");
    let body = std::sync::Arc::new(std::fs::read(&fixture).unwrap());
    let sha = reference_sha256(&body);
    let server = FileServer::start();
    server.route("/o/tiny/resolve/main/tiny.gguf", Route::file(body.clone()));
    let home = temp_dir("catalogue");
    let catalogue = home.join("catalogue.json");
    std::fs::write(
        &catalogue,
        format!(
            r#"{{"url_pattern": "http://127.0.0.1:{}/{{repo}}/resolve/main/{{file}}",
               "models": [{{"name": "tiny", "repo": "o/tiny", "file": "tiny.gguf",
               "quantization": "F32", "size": {}, "sha256": "{sha}", "min_ram_mb": 64,
               "context": 128}}]}}"#,
            server.port,
            body.len()
        ),
    )
    .unwrap();
    let with_catalogue = || {
        let mut c = gemmakit(&home);
        c.env("GEMMAKIT_CATALOGUE", &catalogue);
        c
    };
    let pulled = with_catalogue().args(["pull", "tiny"]).output().unwrap();
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    let path = home.join("models/o--tiny/tiny.gguf");
    assert_eq!(last_stdout_line(&pulled), path.display().to_string());
    assert!(text(&pulled.stderr).contains("pinned"));

    let listed = with_catalogue().args(["models"]).output().unwrap();
    let listing = text(&listed.stdout);
    assert!(
        listing.starts_with("tiny\t") && listing.contains(&path.display().to_string()),
        "{listing}"
    );
    let where_ = with_catalogue()
        .args(["models", "path", "tiny"])
        .output()
        .unwrap();
    assert_eq!(last_stdout_line(&where_), path.display().to_string());

    let info = with_catalogue()
        .args(["info", "--backend", "cpu", "--model", "tiny"])
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", text(&info.stderr));

    let deleted = with_catalogue()
        .args(["models", "delete", "tiny"])
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert!(!path.exists());
    let gone = with_catalogue()
        .args(["info", "--model", "tiny"])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("gemmakit pull tiny"),
        "{}",
        text(&gone.stderr)
    );
}
