//! The details a drift event carries for each kind, as `/api/v1/events`,
//! the webhook body and the stores spell them (`outbound`, `dependency`,
//! `repeats`, `fanout`). Part of the event model: the detectors fill them
//! in, and every later stage reads them without importing a detector.

use serde::{Deserialize, Serialize};

// === new_outbound_peer ===

/// Why a peer was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerReason {
    /// Not called by the service within the lookback.
    NewPeer,
    /// Outside `detect.outbound.allow`.
    NotAllowed,
    /// A link-local or cloud instance-metadata address.
    MetadataEndpoint,
}

/// One operation that calls the peer, and what the call costs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallerSummary {
    pub operation: String,
    pub calls: u64,
    /// p95 duration of the client span.
    pub p95_call_ms: f64,
    /// Median share of the calling operation's duration spent in the call.
    pub median_share: f64,
}

/// The details of a `new_outbound_peer` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundStats {
    pub reasons: Vec<PeerReason>,
    /// Calls by the revision when the event fired.
    pub calls: u64,
    pub callers: Vec<CallerSummary>,
}

// === new_dependency ===

/// The details of a `new_dependency` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencyStats {
    /// `InstrumentationScope.name`.
    pub scope: String,
    /// Spans from the scope when the event fired.
    pub spans: u64,
    /// The operations (span names) the scope's spans carry, most first.
    pub operations: Vec<OperationCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationCount {
    pub operation: String,
    pub spans: u64,
}

// === repeated_unsafe_call ===

/// The details of a `repeated_unsafe_call` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatStats {
    /// Requests of the drifting revision that made the call.
    pub requests: u64,
    /// Of those, the ones that made it more than once.
    pub repeated_requests: u64,
    /// The most times one request made it.
    pub max_calls_per_request: u32,
    /// Requests of the baseline revision that made the call (each once).
    pub baseline_requests: u64,
}

// === fanout_regression ===

/// Calls per request of one side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallsSummary {
    pub requests: u64,
    pub mean: f64,
    pub p50: u32,
    pub p95: u32,
    pub max: u32,
    /// (calls, requests) per bucket; a bucket is named by its smallest
    /// value (exact up to 15 calls).
    pub histogram: Vec<(u32, u64)>,
}

/// The details of a `fanout_regression` event: calls per request to the
/// peer, before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutStats {
    pub baseline: CallsSummary,
    pub current: CallsSummary,
    /// Relative rise of the mean (4.0 = five times as many calls).
    pub relative_increase: f64,
    /// One-sided Mann-Whitney p-value, before the Bonferroni correction.
    pub p_value: f64,
    /// Series compared in the same evaluation (the Bonferroni factor).
    pub tests: u32,
}
