//! The fleet's PostgreSQL store and its synchronisation.

use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{ENVIRONMENT, counter_vec, gauge, gauge_vec, histogram_vec};

/// The fleet path's metrics.
#[derive(Clone)]
pub(crate) struct FleetMetrics {
    pub errors: IntCounterVec,
    pub degraded: IntGauge,
    pub duration: HistogramVec,
    pub rows: IntCounterVec,
    pub bytes: IntCounterVec,
    pub replicas: IntGaugeVec,
    pub publishes: IntCounterVec,
}

impl FleetMetrics {
    pub(super) fn new(registry: &Registry) -> FleetMetrics {
        FleetMetrics {
            errors: counter_vec(
                registry,
                "driftwatch_fleet_store_errors_total",
                "Failed operations on the fleet's PostgreSQL store by operation (publish, refresh, rejoin, open_event, leave_event, sweep, claim, delivered, maintain).",
                &["operation"],
            ),
            degraded: gauge(
                registry,
                "driftwatch_fleet_degraded",
                "1 while the fleet's PostgreSQL store has not answered since the start or its last operation failed: this replica detects on its own.",
            ),
            duration: histogram_vec(
                registry,
                "driftwatch_fleet_operation_duration_seconds",
                "Time of the fleet path's work on PostgreSQL by operation (publish, refresh, events, sweep, maintain).",
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                &["operation"],
            ),
            rows: counter_vec(
                registry,
                "driftwatch_fleet_rows_total",
                "Rows this replica read from or wrote to the fleet's PostgreSQL store, by direction (read, written).",
                &["direction"],
            ),
            bytes: counter_vec(
                registry,
                "driftwatch_fleet_bytes_total",
                "Snapshot, aggregate and event bytes this replica read from or wrote to the fleet's store, by direction (read, written).",
                &["direction"],
            ),
            replicas: gauge_vec(
                registry,
                "driftwatch_fleet_replicas",
                "Replicas whose snapshots of a service the fleet's aggregate holds, this one included.",
                &["service_name", ENVIRONMENT],
            ),
            publishes: counter_vec(
                registry,
                "driftwatch_fleet_publishes_total",
                "Snapshots offered to the fleet by outcome (written; unchanged: nothing but the clock moved, so nothing was written; superseded: a newer flush of the service replaced it before the database took it).",
                &["outcome"],
            ),
        }
    }
}
