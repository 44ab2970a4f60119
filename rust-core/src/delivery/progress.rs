//! Download progress: bytes so far, total, rate and time left.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownloadProgress {
    /// Bytes of the file on disk so far (a resumed download starts above 0).
    pub downloaded: u64,
    /// The file's size, when the server (or the catalogue) says it.
    pub total: Option<u64>,
    /// Bytes per second received by this download so far.
    pub bytes_per_second: f64,
    /// Seconds left at that rate, when the total is known and the rate above 0.
    pub eta_seconds: Option<f64>,
}

/// How often progress is reported at most (and always at the start and the end).
const INTERVAL: Duration = Duration::from_millis(100);

/// Measures the rate of this session's bytes (not those resumed from disk) and throttles the
/// reports.
pub(crate) struct ProgressMeter {
    started: Instant,
    received: u64,
    last_report: Option<Instant>,
}

impl ProgressMeter {
    pub fn new() -> Self {
        ProgressMeter {
            started: Instant::now(),
            received: 0,
            last_report: None,
        }
    }

    pub fn add(&mut self, bytes: u64) {
        self.received += bytes;
    }

    /// The progress to report now, or `None` when the last report is too recent (`force`:
    /// report anyway).
    pub fn report(
        &mut self,
        downloaded: u64,
        total: Option<u64>,
        force: bool,
    ) -> Option<DownloadProgress> {
        let now = Instant::now();
        if !force && self.last_report.is_some_and(|t| now - t < INTERVAL) {
            return None;
        }
        self.last_report = Some(now);
        let seconds = (now - self.started).as_secs_f64();
        let bytes_per_second = if seconds > 0.0 {
            self.received as f64 / seconds
        } else {
            0.0
        };
        let eta_seconds = match total {
            Some(total) if bytes_per_second > 0.0 => {
                Some(total.saturating_sub(downloaded) as f64 / bytes_per_second)
            }
            _ => None,
        };
        Some(DownloadProgress {
            downloaded,
            total,
            bytes_per_second,
            eta_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta_follow_the_bytes_of_this_session() {
        let mut meter = ProgressMeter::new();
        let first = meter.report(500, Some(1500), true).unwrap();
        assert_eq!(first.downloaded, 500);
        assert_eq!(first.eta_seconds, None, "no rate yet");
        std::thread::sleep(Duration::from_millis(200));
        meter.add(100);
        let p = meter.report(600, Some(1500), true).unwrap();
        let elapsed = meter.started.elapsed().as_secs_f64();
        assert!(p.bytes_per_second > 0.0 && p.bytes_per_second <= 100.0 / 0.2);
        assert!(p.bytes_per_second >= 100.0 / elapsed);
        let eta = p.eta_seconds.unwrap();
        assert!((eta - 900.0 / p.bytes_per_second).abs() < 1e-9);
        assert!(meter.report(600, Some(1500), false).is_none(), "throttled");
    }
}
