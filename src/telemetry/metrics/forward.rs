//! Forwarding upstream.

use prometheus::{IntCounterVec, IntGauge, Registry};

use super::{counter_vec, gauge};

/// The forwarder's metrics.
#[derive(Clone)]
pub(crate) struct ForwardMetrics {
    pub requests: IntCounterVec,
    pub queue_bytes: IntGauge,
}

impl ForwardMetrics {
    pub(super) fn new(registry: &Registry) -> ForwardMetrics {
        ForwardMetrics {
            requests: counter_vec(
                registry,
                "driftwatch_forward_requests_total",
                "Requests forwarded upstream by outcome (sent, dropped_queue_full, dropped_retries_exhausted, dropped_rejected).",
                &["outcome"],
            ),
            queue_bytes: gauge(
                registry,
                "driftwatch_forward_queue_bytes",
                "Bytes of requests waiting to be forwarded upstream.",
            ),
        }
    }
}
