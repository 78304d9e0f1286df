//! The wall clock, read in one place.
//!
//! Detection runs in event time, from span timestamps; the wall clock only
//! stamps what the process itself does: alert delivery schedules, event
//! retention, fleet heartbeats, the receivers' arrival times, file names.
//! Reading it here alone (`clippy.toml` bans `SystemTime::now` elsewhere)
//! keeps every such read visible and replaceable. A clock before the Unix
//! epoch reads as 0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch.
pub fn since_epoch() -> Duration {
    #[expect(clippy::disallowed_methods, reason = "the one place the wall clock is read")]
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Nanoseconds since the Unix epoch (saturating, in the year 2554).
pub fn unix_nanos() -> u64 {
    nanos(since_epoch())
}

/// A duration in nanoseconds, saturating: durations come from the
/// configuration, which allows any, and event time is kept in `u64`.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock as a `SystemTime`, for comparing with HTTP dates and
/// file times.
pub fn now() -> SystemTime {
    UNIX_EPOCH + since_epoch()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_agree() {
        let (nanos, millis) = (unix_nanos(), unix_millis());
        assert!(nanos / 1_000_000 >= millis && nanos / 1_000_000 - millis < 60_000);
        assert!(now() >= UNIX_EPOCH + Duration::from_millis(millis));
    }
}
