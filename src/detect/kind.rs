//! What kind of drift an event is, and how severe: plain values that the
//! configuration (alert routes), the detectors, the API and the sinks all
//! name. A leaf, so the configuration does not depend on the event log.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LatencyRegression,
    NewOutboundPeer,
    ErrorRateRegression,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LatencyRegression => "latency_regression",
            EventKind::NewOutboundPeer => "new_outbound_peer",
            EventKind::ErrorRateRegression => "error_rate_regression",
        }
    }

    /// As people read it, in titles.
    pub fn title(self) -> &'static str {
        match self {
            EventKind::LatencyRegression => "Latency regression",
            EventKind::NewOutboundPeer => "New outbound peer",
            EventKind::ErrorRateRegression => "Error-rate regression",
        }
    }

    /// Every kind, in a fixed order (for metrics that list them all).
    pub const ALL: [EventKind; 3] = [
        EventKind::LatencyRegression,
        EventKind::NewOutboundPeer,
        EventKind::ErrorRateRegression,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}
