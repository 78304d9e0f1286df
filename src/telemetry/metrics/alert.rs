//! Alert delivery through the outbox.

use prometheus::{IntCounterVec, IntGauge, Registry};

use super::{counter_vec, gauge};

/// The alert dispatcher's metrics.
#[derive(Clone)]
pub(crate) struct AlertMetrics {
    pub deliveries: IntCounterVec,
    pub outbox_pending: IntGauge,
}

impl AlertMetrics {
    pub(super) fn new(registry: &Registry) -> AlertMetrics {
        let metrics = AlertMetrics {
            deliveries: counter_vec(
                registry,
                "driftwatch_alert_deliveries_total",
                "Alert deliveries by sink type and outcome (delivered, retrying, dead; deduplicated: another replica of the fleet delivered it).",
                &["sink", "outcome"],
            ),
            outbox_pending: gauge(
                registry,
                "driftwatch_outbox_pending",
                "Alerts written to the outbox and not yet delivered or given up.",
            ),
        };
        for outcome in ["delivered", "retrying", "dead", "deduplicated"] {
            for sink in ["webhook", "alertmanager", "slack", "pagerduty"] {
                metrics.deliveries.with_label_values(&[sink, outcome]);
            }
        }
        metrics
    }
}
