//! Free disk space, checked before a download's body is written.

use std::path::Path;

use crate::error::{GemmaError, Result};

/// Bytes an unprivileged process may still write on the filesystem holding `dir`
/// (`statvfs`: available blocks × fragment size); `None` where the platform has no statvfs.
#[cfg(unix)]
pub fn available_bytes(dir: &Path) -> Result<Option<u64>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| GemmaError::InvalidArgument(format!("{} contains NUL", dir.display())))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a pointer to writable statvfs storage.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(GemmaError::io(dir, std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stats = unsafe { stats.assume_init() };
    Ok(Some(
        (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64),
    ))
}

#[cfg(not(unix))]
pub fn available_bytes(_dir: &Path) -> Result<Option<u64>> {
    Ok(None)
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn free_space_is_what_df_reports() {
        let dir = std::env::temp_dir();
        let ours = super::available_bytes(&dir).unwrap().unwrap();
        // `df --output=avail -B1` uses the same statvfs fields; the filesystem may change a
        // little between the two calls.
        let Ok(out) = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&dir)
            .output()
        else {
            return; // no coreutils df
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(df) = text
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<u64>().ok())
        else {
            return;
        };
        assert!(ours.abs_diff(df) < 64 << 20, "statvfs {ours} vs df {df}");
    }
}
