//! The event pipeline: drifts fired, resolved and firing, and their
//! attribution.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{ENVIRONMENT, counter_vec, gauge, gauge_vec};

/// The event pipeline's metrics.
#[derive(Clone)]
pub(crate) struct EventMetrics {
    pub updates_queued: IntGauge,
    pub drifts_firing: IntGaugeVec,
    pub drift_events: IntCounterVec,
    pub drift_resolutions: IntCounterVec,
    pub drift_refires: IntCounterVec,
    pub attributions: IntCounterVec,
    pub revisions_unresolved: IntCounterVec,
    pub suspect_info: IntGaugeVec,
}

impl EventMetrics {
    pub(super) fn new(registry: &Registry) -> EventMetrics {
        EventMetrics {
            updates_queued: gauge(
                registry,
                "driftwatch_event_updates_queued",
                "Detector updates (fired, carried, resolved drifts) waiting for the event pipeline.",
            ),
            drifts_firing: gauge_vec(
                registry,
                "driftwatch_drifts_firing",
                "Drift events currently firing, by kind.",
                &["kind"],
            ),
            drift_events: counter_vec(
                registry,
                "driftwatch_drift_events_total",
                "Drift events fired, by kind and severity.",
                &["kind", "severity"],
            ),
            drift_resolutions: counter_vec(
                registry,
                "driftwatch_drift_resolutions_total",
                "Drift events resolved, by kind and reason (fixed, rolled_back, traffic_gone).",
                &["kind", "reason"],
            ),
            drift_refires: counter_vec(
                registry,
                "driftwatch_drift_refires_total",
                "Drifts that fired again after their earlier event resolved (same service, kind, subject and revision).",
                &["kind"],
            ),
            attributions: counter_vec(
                registry,
                "driftwatch_attributions_total",
                "Events attributed to commits, by outcome (suspects, no_suspects, unresolved_revision, shallow_history: the checkout lacks the range's history, error).",
                &["outcome"],
            ),
            revisions_unresolved: counter_vec(
                registry,
                "driftwatch_revisions_unresolved_total",
                "Event revisions the service's repository does not know.",
                &["service_name", ENVIRONMENT],
            ),
            suspect_info: gauge_vec(
                registry,
                "driftwatch_suspect_info",
                "The top suspect commit of each firing drift (1 while it fires), with the AI tool that wrote it or \"none\".",
                &["service_name", ENVIRONMENT, "kind", "event_id", "commit", "ai_tool"],
            ),
        }
    }
}
