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
    NewDependency,
    RepeatedUnsafeCall,
    FanoutRegression,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::LatencyRegression => "latency_regression",
            EventKind::NewOutboundPeer => "new_outbound_peer",
            EventKind::ErrorRateRegression => "error_rate_regression",
            EventKind::NewDependency => "new_dependency",
            EventKind::RepeatedUnsafeCall => "repeated_unsafe_call",
            EventKind::FanoutRegression => "fanout_regression",
        }
    }

    /// As people read it, in titles.
    pub(crate) fn title(self) -> &'static str {
        match self {
            EventKind::LatencyRegression => "Latency regression",
            EventKind::NewOutboundPeer => "New outbound peer",
            EventKind::ErrorRateRegression => "Error-rate regression",
            EventKind::NewDependency => "New dependency",
            EventKind::RepeatedUnsafeCall => "Repeated unsafe call",
            EventKind::FanoutRegression => "Fan-out regression",
        }
    }

    /// Every kind, in a fixed order (for metrics that list them all).
    pub(crate) const ALL: [EventKind; 6] = [
        EventKind::LatencyRegression,
        EventKind::NewOutboundPeer,
        EventKind::ErrorRateRegression,
        EventKind::NewDependency,
        EventKind::RepeatedUnsafeCall,
        EventKind::FanoutRegression,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, not worth waking anyone: alert routes and verdicts
    /// skip it unless asked for it.
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}
