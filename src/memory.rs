//! The process's resident memory, sampled off the request path.
//!
//! In the spirit of the OpenTelemetry Collector's `memory_limiter`: the
//! receivers refuse new data with a retryable status while resident memory
//! is above a soft limit, so memory stays bounded whatever clients send,
//! and exporters back off and retry instead of losing data. Reading
//! `/proc/self/statm` costs a few microseconds; a sampler refreshes the
//! figure every [`SAMPLE_EVERY`] so a request only reads an atomic.
//! Elsewhere than Linux the figure stays 0 and nothing is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often resident memory is read.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The latest resident-memory sample, in bytes.
#[derive(Debug, Default)]
pub(crate) struct Resident {
    bytes: AtomicU64,
}

impl Resident {
    /// A sample that a background task refreshes until the runtime ends.
    pub(crate) fn sampled() -> Arc<Resident> {
        let resident = Arc::new(Resident::default());
        resident.refresh();
        let weak = Arc::downgrade(&resident);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(resident) = weak.upgrade() else { return };
                resident.refresh();
            }
        });
        resident
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn refresh(&self) {
        self.bytes.store(read_rss().unwrap_or(0), Ordering::Relaxed);
    }
}

/// Resident set size from `/proc/self/statm` (pages × 4 KiB, the page size
/// on the platforms this runs on).
fn read_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_plausible_resident_size_on_linux() {
        let rss = read_rss().expect("/proc/self/statm");
        assert!(rss > 1 << 20 && rss < 1 << 40, "{rss}");
    }
}
