//! What kind of drift an event is, and how severe: plain values that the
//! configuration (alert routes), the detectors, the API and the sinks all
//! name. A leaf, so the configuration does not depend on the event log.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LatencyRegression,
    NewOutboundPeer,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LatencyRegression => "latency_regression",
            EventKind::NewOutboundPeer => "new_outbound_peer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}
