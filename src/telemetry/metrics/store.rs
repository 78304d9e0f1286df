//! The embedded store, and what waits in memory while it cannot be
//! written.

use prometheus::{Gauge, IntCounter, IntGauge, Registry};

use super::{counter, float_gauge, gauge};

/// The embedded store's metrics.
#[derive(Clone)]
pub(crate) struct StoreMetrics {
    pub degraded: IntGauge,
    pub pending: IntGauge,
    pub errors: IntCounter,
    pub dropped: IntCounter,
    pub snapshots_written_as_of: Gauge,
}

impl StoreMetrics {
    pub(super) fn new(registry: &Registry) -> StoreMetrics {
        StoreMetrics {
            degraded: gauge(
                registry,
                "driftwatch_store_degraded",
                "1 while the embedded store cannot be written (a full disk): events and alerts wait in memory.",
            ),
            pending: gauge(
                registry,
                "driftwatch_store_pending_writes",
                "Events and alert deliveries kept in memory until the embedded store can be written.",
            ),
            errors: counter(
                registry,
                "driftwatch_store_errors_total",
                "Failed operations on the embedded store.",
            ),
            dropped: counter(
                registry,
                "driftwatch_store_dropped_total",
                "Events and alert deliveries given up because the store stayed unwritable past the in-memory bound.",
            ),
            snapshots_written_as_of: float_gauge(
                registry,
                "driftwatch_store_snapshots_written_as_of_timestamp_seconds",
                "Every analysis shard's state as of this time (its last flush) is written to the embedded store: a restart \
                 resumes from it. 0 until each shard has flushed once (store.flush_interval).",
            ),
        }
    }
}
