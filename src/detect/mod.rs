//! Detect: the drift detectors and the events they raise.
//!
//! Detectors run inside the analysis shards (see `analyze::service`); their
//! updates flow through `crate::pipeline` into the shared [`EventLog`] that
//! the API, the metrics and the alerting read.

pub mod dependency;
pub mod errors;
pub mod event;
pub mod histogram;
pub mod kind;
pub mod latency;
pub mod outbound;
pub mod stats;

use std::sync::{Arc, RwLock};

use event::EventLog;

/// A duration in nanoseconds of event time, saturating (durations come
/// from the configuration, which allows any).
pub fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Events kept in memory for the API.
pub const MAX_EVENTS: usize = 10_000;

/// The shared, readable record of events.
pub type SharedEventLog = Arc<RwLock<EventLog>>;
