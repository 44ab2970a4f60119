//! One ranged GET, redirects followed by hand: the headers of every hop are read (Hugging Face
//! declares the LFS sha256 and size on its first answer, a 302 to its CDN, as `X-Linked-Etag`
//! and `X-Linked-Size`), and the bearer token goes only to the host it was given for.

use std::time::Duration;

use ureq::http::{HeaderMap, Uri};

use super::verify::{Sha256Digest, sha256_from_etag};
use crate::error::{DownloadFailure, GemmaError};

const MAX_REDIRECTS: usize = 10;
/// Validators (ETags) longer than this are not kept.
const MAX_VALIDATOR_LEN: usize = 256;

/// What a request got: a body to read, or why not.
pub(crate) enum Answer {
    /// 200 or 206: the body and what the headers say about it.
    Body(Opened),
    /// A status that is not a success, after redirects.
    Status(u16),
}

pub(crate) struct Opened {
    pub body: ureq::BodyReader<'static>,
    /// Offset of the body's first byte in the file (the Range start for a 206, 0 for a 200).
    pub start: u64,
    /// The whole file's size, when declared (Content-Range total, Content-Length of a 200,
    /// or `X-Linked-Size`).
    pub total: Option<u64>,
    /// The sha256 the server declares (`X-Linked-Etag`, else `ETag`), when it is one.
    pub declared_sha256: Option<Sha256Digest>,
    /// The ETag as sent, to notice a file that changed between two requests.
    pub validator: Option<String>,
    /// The server answers byte ranges (a 206, or `Accept-Ranges: bytes`): a partial file of
    /// it can be resumed.
    pub accepts_ranges: bool,
}

/// A failure of the request itself: `transient` ones (the network) are retried.
pub(crate) struct RequestError {
    pub transient: bool,
    pub error: GemmaError,
}

pub(crate) fn agent(stall_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(stall_timeout))
        .user_agent(concat!("gemmakit/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// GET `url` from byte `offset` on (a `Range` request when `offset > 0`).
pub(crate) fn get_from(
    agent: &ureq::Agent,
    url: &str,
    offset: u64,
    token: Option<&str>,
) -> Result<Answer, RequestError> {
    let fatal = |failure: DownloadFailure| RequestError {
        transient: false,
        error: GemmaError::download(url, failure),
    };
    let origin = parse_uri(url).map_err(|e| RequestError {
        transient: false,
        error: e,
    })?;
    let mut current = origin.clone();
    let mut linked_sha256 = None;
    let mut linked_size = None;
    for _ in 0..=MAX_REDIRECTS {
        let mut request = agent.get(current.clone());
        if offset > 0 {
            request = request.header("Range", format!("bytes={offset}-"));
        }
        if let Some(token) = token
            && current.authority() == origin.authority()
            && current.scheme() == origin.scheme()
        {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = request.call().map_err(|e| network_error(url, e))?;
        let status = response.status().as_u16();
        let headers = response.headers();
        linked_sha256 =
            linked_sha256.or_else(|| header(headers, "x-linked-etag").and_then(sha256_from_etag));
        linked_size =
            linked_size.or_else(|| header(headers, "x-linked-size").and_then(|s| s.parse().ok()));
        if (300..400).contains(&status) && status != 304 {
            let Some(location) = header(headers, "location") else {
                return Err(fatal(DownloadFailure::InvalidResponse(format!(
                    "HTTP {status} without a Location"
                ))));
            };
            current = resolve(&current, location).map_err(|why| {
                fatal(DownloadFailure::InvalidResponse(format!(
                    "bad redirect to `{location}`: {why}"
                )))
            })?;
            continue;
        }
        if status != 200 && status != 206 {
            return Ok(Answer::Status(status));
        }
        let etag = header(headers, "etag");
        let declared_sha256 = linked_sha256.or_else(|| etag.and_then(sha256_from_etag));
        let validator = etag
            .filter(|e| e.len() <= MAX_VALIDATOR_LEN)
            .map(str::to_string);
        let content_length: Option<u64> =
            header(headers, "content-length").and_then(|s| s.parse().ok());
        let (start, total) = if status == 206 {
            let range = header(headers, "content-range").unwrap_or("");
            let (start, total) = parse_content_range(range).ok_or_else(|| {
                fatal(DownloadFailure::InvalidResponse(format!(
                    "206 with Content-Range `{range}`"
                )))
            })?;
            (start, total.or(linked_size))
        } else {
            (0, content_length.or(linked_size))
        };
        let accepts_ranges =
            status == 206 || header(headers, "accept-ranges").is_some_and(|v| v.trim() == "bytes");
        return Ok(Answer::Body(Opened {
            body: response.into_body().into_reader(),
            start,
            total,
            declared_sha256,
            validator,
            accepts_ranges,
        }));
    }
    Err(fatal(DownloadFailure::InvalidResponse(format!(
        "more than {MAX_REDIRECTS} redirects"
    ))))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_uri(url: &str) -> Result<Uri, GemmaError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| GemmaError::InvalidArgument(format!("`{url}` is not a URL: {e}")))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(GemmaError::InvalidArgument(format!(
            "`{url}` is not an http(s) URL"
        ))),
    }
}

/// A Location (absolute, or relative to the current URL) as an absolute http(s) URI.
fn resolve(current: &Uri, location: &str) -> Result<Uri, String> {
    let has_scheme = location.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let absolute = if has_scheme {
        location.to_string()
    } else {
        let scheme = current.scheme_str().unwrap_or("https");
        let authority = current.authority().map(|a| a.as_str()).unwrap_or("");
        if let Some(rest) = location.strip_prefix("//") {
            format!("{scheme}://{rest}")
        } else if location.starts_with('/') {
            format!("{scheme}://{authority}{}", remove_dot_segments(location))
        } else {
            let path = current.path();
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!(
                "{scheme}://{authority}{}",
                remove_dot_segments(&format!("{dir}{location}"))
            )
        }
    };
    parse_uri(&absolute).map_err(|e| e.to_string())
}

/// `/a/b/../c/./d?q` → `/a/c/d?q` (RFC 3986 §5.2.4, on the path before any query).
fn remove_dot_segments(reference: &str) -> String {
    let (path, query) = match reference.find(['?', '#']) {
        Some(i) => reference.split_at(i),
        None => (reference, ""),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." if last => out.push(""),
            "." => {}
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}{query}", out.join("/"))
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) → (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, total))
}

fn network_error(url: &str, e: ureq::Error) -> RequestError {
    let transient = !matches!(
        e,
        ureq::Error::BadUri(_) | ureq::Error::InvalidProxyUrl | ureq::Error::RequireHttpsOnly(_)
    );
    let error = if transient {
        GemmaError::download(
            url,
            DownloadFailure::Network {
                attempts: 1,
                reason: e.to_string(),
            },
        )
    } else {
        GemmaError::InvalidArgument(format!("`{url}`: {e}"))
    };
    RequestError { transient, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read_strictly() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        for bad in [
            "bytes 100-99/200",
            "bytes 100-200/200",
            "items 0-1/2",
            "bytes x-1/2",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn redirects_resolve_like_a_browser() {
        let here: Uri = "https://huggingface.co/o/r/resolve/main/f.gguf"
            .parse()
            .unwrap();
        let cases = [
            ("https://cdn.example/x?sig=1", "https://cdn.example/x?sig=1"),
            ("//cdn.example/y", "https://cdn.example/y"),
            ("/api/z", "https://huggingface.co/api/z"),
            ("g.gguf", "https://huggingface.co/o/r/resolve/main/g.gguf"),
            (
                "../../x/./y?a=../b",
                "https://huggingface.co/o/r/x/y?a=../b",
            ),
            ("/a/../../b/", "https://huggingface.co/b/"),
        ];
        for (location, expected) in cases {
            assert_eq!(resolve(&here, location).unwrap().to_string(), expected);
        }
        assert!(resolve(&here, "ftp://x/y").is_err());
    }
}
