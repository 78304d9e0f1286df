//! The wall clock, read in one place.
//!
//! Detection runs in event time, from span timestamps; the wall clock only
//! stamps what the process itself does: alert delivery schedules, event
//! retention, fleet heartbeats, the receivers' arrival times, file names.
//! Reading it here alone (`clippy.toml` bans `SystemTime::now` elsewhere)
//! keeps every such read visible and replaceable. A clock before the Unix
//! epoch reads as 0.
//!
//! [`Timestamp`] is how the core keeps an instant: an integer, compared and
//! subtracted as one, and written as RFC 3339 only where it leaves (the
//! event JSON, pages, payloads).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant, in nanoseconds since the Unix epoch. It is written as RFC
/// 3339 in UTC with millisecond precision (`2026-01-01T00:00:00.000Z`) and
/// read from any RFC 3339 time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_unix_nanos(unix_nanos: u64) -> Timestamp {
        Timestamp(unix_nanos)
    }

    /// Whole seconds since the epoch (git's commit times); before 1970
    /// reads as the epoch.
    pub fn from_unix_secs(unix_secs: i64) -> Timestamp {
        Timestamp(u64::try_from(unix_secs).unwrap_or(0).saturating_mul(1_000_000_000))
    }

    pub const fn unix_nanos(self) -> u64 {
        self.0
    }

    /// RFC 3339, UTC, milliseconds.
    pub fn rfc3339(self) -> String {
        self.to_string()
    }

    /// Parses RFC 3339: any fraction of a second, and `Z` or a numeric
    /// offset (`+01:00`), which is applied; a time without either is read
    /// as UTC. `None` for anything else, or a time before 1970.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let text = text.trim();
        // humantime reads UTC only (and would skip an offset after a
        // fraction), so the offset is split off and applied here.
        let (local, offset_secs) = match text.as_bytes() {
            [.., b'Z' | b'z'] => (&text[..text.len() - 1], 0i64),
            [.., sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] if text.len() > 6 => {
                let digit = |b: &u8| b.is_ascii_digit().then(|| i64::from(b - b'0'));
                let (hours, minutes) = (digit(h1)? * 10 + digit(h2)?, digit(m1)? * 10 + digit(m2)?);
                if hours > 23 || minutes > 59 {
                    return None;
                }
                let offset = hours * 3600 + minutes * 60;
                (&text[..text.len() - 6], if *sign == b'-' { -offset } else { offset })
            }
            _ => (text, 0),
        };
        let local = humantime::parse_rfc3339_weak(local).ok()?.duration_since(UNIX_EPOCH).ok()?;
        let local = i128::try_from(local.as_nanos()).ok()?;
        let utc = local - i128::from(offset_secs) * 1_000_000_000;
        u64::try_from(utc).ok().map(Timestamp)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(self.0)).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Timestamp::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

/// Time since the Unix epoch.
pub(crate) fn since_epoch() -> Duration {
    #[expect(clippy::disallowed_methods, reason = "the one place the wall clock is read")]
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Nanoseconds since the Unix epoch (saturating, in the year 2554).
pub(crate) fn unix_nanos() -> u64 {
    nanos(since_epoch())
}

/// A duration in nanoseconds, saturating: durations come from the
/// configuration, which allows any, and event time is kept in `u64`.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock as a value a component holds, so that a test can set
/// it: the system's, or (in tests) one that moves only when told to. The
/// alert dispatcher keeps its schedule on it (group waits, retry times,
/// `max_age`), since those are stored and must outlive a restart.
#[derive(Debug, Clone, Default)]
pub(crate) struct WallClock {
    /// A test's clock, in milliseconds since the epoch.
    set: Option<Arc<AtomicU64>>,
}

impl WallClock {
    /// Milliseconds since the Unix epoch.
    pub(crate) fn unix_millis(&self) -> u64 {
        match &self.set {
            Some(millis) => millis.load(Ordering::Acquire),
            None => unix_millis(),
        }
    }

    /// A clock that reads `unix_millis` until it is set.
    #[cfg(test)]
    pub(crate) fn manual(unix_millis: u64) -> WallClock {
        WallClock {
            set: Some(Arc::new(AtomicU64::new(unix_millis))),
        }
    }

    /// Sets a manual clock (every copy of it reads the new time).
    #[cfg(test)]
    pub(crate) fn set(&self, unix_millis: u64) {
        if let Some(millis) = &self.set {
            millis.store(unix_millis, Ordering::Release);
        }
    }
}

/// The wall clock as a `SystemTime`, for comparing with HTTP dates and
/// file times.
pub(crate) fn now() -> SystemTime {
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

    #[test]
    fn a_timestamp_is_written_as_rfc3339_and_read_back() {
        let at = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
        assert_eq!(at.rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(serde_json::to_value(at).expect("json"), "2023-11-14T22:13:20.123Z");
        let back: Timestamp = serde_json::from_value(serde_json::json!("2023-11-14T22:13:20.123Z")).expect("parse");
        assert_eq!(back.unix_nanos(), 1_700_000_000_123_000_000, "milliseconds survive");
        assert_eq!(Timestamp::parse("2023-11-14T23:13:20.123+01:00"), Some(back), "an offset is applied");
        assert_eq!(Timestamp::parse("2023-11-14T21:13:20.123-01:00"), Some(back));
        assert_eq!(Timestamp::parse("2023-11-14T22:13:20.123"), Some(back), "no offset: UTC");
        assert_eq!(Timestamp::parse("2023-11-14T23:13:20+01:00").map(Timestamp::unix_nanos), Some(1_700_000_000_000_000_000));
        for bad in ["", "yesterday", "2023-11-14T22:13:20+25:00", "2023-11-14T22:13:20.5+0100", "1969-12-31T23:59:59Z"] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
        }
        let error = serde_json::from_value::<Timestamp>(serde_json::json!("")).expect_err("not a time");
        assert!(error.to_string().contains("RFC 3339"), "{error}");
    }
}
