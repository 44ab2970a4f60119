//! sha256: what a file should hash to (pinned, or declared by the server) and what it does.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{GemmaError, Result};

pub type Sha256Digest = [u8; 32];

/// 64 hex digits (either case) → the digest; anything else → `None`.
pub fn parse_sha256(text: &str) -> Option<Sha256Digest> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

pub fn to_hex(digest: &Sha256Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 an ETag (`X-Linked-Etag` or `ETag`) declares. Hugging Face sends an LFS file's
/// sha256 as its ETag (`"<64 hex>"`, possibly weak `W/"…"`); other ETags (an MD5, an opaque
/// version) declare nothing.
pub fn sha256_from_etag(etag: &str) -> Option<Sha256Digest> {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    parse_sha256(etag.trim_matches('"'))
}

/// Hashes the first `len` bytes of `path` into `hasher` (the part of a file a resumed download
/// already has).
pub(crate) fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| GemmaError::io(path, e))?;
    let mut reader = file.take(len);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| GemmaError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..n]);
    }
}

/// The sha256 of a whole file.
pub fn file_sha256(path: &Path) -> Result<Sha256Digest> {
    let mut hasher = Sha256::new();
    hash_prefix(path, u64::MAX, &mut hasher)?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_declare_a_sha256_only_when_they_are_one() {
        // sha256("abc"), from FIPS 180-2's example.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let digest = parse_sha256(abc).unwrap();
        assert_eq!(to_hex(&digest), abc);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(b"abc")));
        assert_eq!(sha256_from_etag(&format!("\"{abc}\"")), Some(digest));
        assert_eq!(
            sha256_from_etag(&format!("W/\"{}\"", abc.to_uppercase())),
            Some(digest)
        );
        for not_one in [
            "\"d41d8cd98f00b204e9800998ecf8427e\"",
            "",
            "\"x\"",
            &abc[1..],
        ] {
            assert_eq!(sha256_from_etag(not_one), None, "{not_one}");
        }
        assert_eq!(parse_sha256(&format!("{}zz", &abc[..62])), None);
        assert_eq!(parse_sha256(&format!("{}é", &abc[..62])), None);
    }
}
