//! A small HTTP/1.1 file server on 127.0.0.1 for the download tests: byte ranges (or not),
//! ETags, tokens, redirects, statuses, slow bodies and connections cut mid-body, and a log of
//! the requests it got. One connection per request (`Connection: close`).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How one path answers.
#[derive(Clone, Default)]
pub struct Route {
    pub body: Arc<Vec<u8>>,
    /// Honour `Range: bytes=N-` with a 206 (else always 200 with the whole body).
    pub ranges: bool,
    /// Sent as `ETag: "<value>"`.
    pub etag: Option<String>,
    /// Answer 302 to this Location, with these extra headers (`X-Linked-Etag`, …).
    pub redirect: Option<String>,
    pub extra_headers: Vec<(String, String)>,
    /// Answer this status with an empty body.
    pub status: Option<u16>,
    /// Require `Authorization: Bearer <token>`; 401 without one, 403 with a wrong one.
    pub token: Option<String>,
    /// Sleep this long between 4 KiB chunks.
    pub chunk_delay: Option<Duration>,
    /// For each request in turn: close the connection after this many body bytes (the
    /// headers still declare the full length). Empty: send everything.
    pub cuts: Arc<Mutex<VecDeque<u64>>>,
    /// Send Content-Range from this offset instead of the one asked for (a broken server).
    pub wrong_range_start: Option<u64>,
    /// Declare this Content-Length instead of the body's (a hostile server).
    pub declared_len: Option<u64>,
}

impl Route {
    pub fn file(body: Arc<Vec<u8>>) -> Self {
        Route {
            body,
            ranges: true,
            ..Route::default()
        }
    }

    pub fn with_cuts(self, cuts: &[u64]) -> Self {
        *self.cuts.lock().unwrap() = cuts.iter().copied().collect();
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub host: Option<String>,
}

pub struct FileServer {
    pub port: u16,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    pub log: Arc<Mutex<Vec<Seen>>>,
}

impl FileServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, l) = (routes.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &r, &l);
                });
            }
        });
        FileServer { port, routes, log }
    }

    pub fn route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.into(), route);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// The `Range` headers of the requests for `path`, in order.
    pub fn ranges(&self, path: &str) -> Vec<Option<String>> {
        self.requests()
            .into_iter()
            .filter(|s| s.path == path)
            .map(|s| s.range)
            .collect()
    }
}

fn serve(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
        host: headers.get("host").cloned(),
    });
    let Some(route) = routes.lock().unwrap().get(&path).cloned() else {
        return respond_status(&mut stream, 404, &[]);
    };
    if let Some(location) = &route.redirect {
        let mut extra = route.extra_headers.clone();
        extra.push(("Location".into(), location.clone()));
        return respond_status(&mut stream, 302, &extra);
    }
    if let Some(token) = &route.token {
        match headers.get("authorization") {
            None => return respond_status(&mut stream, 401, &[]),
            Some(a) if *a != format!("Bearer {token}") => {
                return respond_status(&mut stream, 403, &[]);
            }
            Some(_) => {}
        }
    }
    if let Some(status) = route.status {
        return respond_status(&mut stream, status, &[]);
    }
    let len = route.body.len() as u64;
    let asked = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let start = match asked {
        Some(n) if route.ranges => n,
        _ => 0,
    };
    if start > 0 && start >= len {
        return respond_status(&mut stream, 416, &[]);
    }
    let mut head = if start > 0 {
        let shown = route.wrong_range_start.unwrap_or(start);
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {shown}-{}/{len}\r\n",
            len - 1
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_string()
    };
    let declared = route.declared_len.unwrap_or(len - start);
    head += &format!("Content-Length: {declared}\r\nConnection: close\r\n");
    if route.ranges {
        head += "Accept-Ranges: bytes\r\n";
    }
    if let Some(etag) = &route.etag {
        head += &format!("ETag: \"{etag}\"\r\n");
    }
    for (name, value) in &route.extra_headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    let cut = route.cuts.lock().unwrap().pop_front();
    let end = cut.map_or(len, |c| (start + c).min(len));
    let mut at = start;
    while at < end {
        let next = (at + 4096).min(end);
        stream.write_all(&route.body[at as usize..next as usize])?;
        at = next;
        if let Some(delay) = route.chunk_delay {
            stream.flush()?;
            std::thread::sleep(delay);
        }
    }
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}

fn respond_status(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    stream.shutdown(Shutdown::Both)
}

/// A fresh, empty directory under the system's temp dir, unique to this process and `name`.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gemmakit-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `len` bytes that differ at every offset a test cuts at (a seeded xorshift).
pub fn test_bytes(len: usize, seed: u64) -> Arc<Vec<u8>> {
    let mut state = seed | 1;
    Arc::new(
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect(),
    )
}

/// sha256 of `bytes` by coreutils' `sha256sum`: an implementation other than the library's.
pub fn reference_sha256(bytes: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_string()
}
