//! What the analysis shards were given, tracked and left out, and the
//! series of the detectors' inputs.

use prometheus::{GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{ENVIRONMENT, counter, counter_vec, float_gauge_vec, gauge, gauge_vec, histogram_vec};

/// The analysis shards' metrics.
#[derive(Clone)]
pub(crate) struct AnalysisMetrics {
    pub queue_spans: IntGauge,
    pub queue_bytes: IntGauge,
    pub event_updates_waited: IntCounter,
    pub spans_analyzed: IntCounterVec,
    pub spans_not_analyzed: IntCounterVec,
    pub operations_tracked: IntGaugeVec,
    pub operations_folded: IntCounterVec,
    pub calls_without_caller: IntCounterVec,
    pub requests_untallied: IntCounterVec,
    pub calls_per_request: GaugeVec,
    pub repeated_call_share: GaugeVec,
    pub scope_first_seen: GaugeVec,
    pub outbound_peers: IntGaugeVec,
    pub span_duration: HistogramVec,
    pub span_errors: IntCounterVec,
    pub operation_series: IntGauge,
    pub operation_series_folded: IntCounter,
    pub peer_series_left_out: IntGaugeVec,
    pub revision_first_seen: GaugeVec,
    pub revision_last_seen: GaugeVec,
}

impl AnalysisMetrics {
    pub(super) fn new(registry: &Registry) -> AnalysisMetrics {
        AnalysisMetrics {
            queue_spans: gauge(
                registry,
                "driftwatch_analysis_queue_spans",
                "Spans accepted and waiting for analysis.",
            ),
            queue_bytes: gauge(
                registry,
                "driftwatch_analysis_queue_bytes",
                "Bytes held by spans waiting for analysis, their interned strings aside.",
            ),
            event_updates_waited: counter(
                registry,
                "driftwatch_event_updates_waited_total",
                "Times an analysis shard waited because the event pipeline's queue was full (nothing is dropped).",
            ),
            spans_analyzed: counter_vec(
                registry,
                "driftwatch_spans_analyzed_total",
                "Spans processed by the analysis, by service.",
                &["service_name", ENVIRONMENT],
            ),
            spans_not_analyzed: counter_vec(
                registry,
                "driftwatch_spans_not_analyzed_total",
                "Spans accepted but left out of the analysis, by reason (too_late: beyond analyze.max_lateness; max_services: beyond analyze.max_services).",
                &["reason"],
            ),
            operations_tracked: gauge_vec(
                registry,
                "driftwatch_operations_tracked",
                "Operations tracked exactly per service (bounded by analyze.max_operations).",
                &["service_name", ENVIRONMENT],
            ),
            operations_folded: counter_vec(
                registry,
                "driftwatch_operations_folded_spans_total",
                "Spans whose operation was not tracked and was folded into __other__, by service.",
                &["service_name", ENVIRONMENT],
            ),
            calls_without_caller: counter_vec(
                registry,
                "driftwatch_outbound_calls_without_caller_total",
                "Outbound calls counted without their calling operation: the service's share of the pending-call budget was full.",
                &["service_name", ENVIRONMENT],
            ),
            requests_untallied: counter_vec(
                registry,
                "driftwatch_requests_untallied_total",
                "Requests whose calls per peer were not counted by the fan-out and repeated-call detectors: too many requests open at once, or too many (revision, operation, peer) series.",
                &["service_name", ENVIRONMENT],
            ),
            calls_per_request: float_gauge_vec(
                registry,
                "driftwatch_calls_per_request",
                "Mean outbound calls to a peer per request of an operation, over the revision's requests that called it (the fan-out detector's series).",
                &["service_name", ENVIRONMENT, "operation", "peer", "revision"],
            ),
            repeated_call_share: float_gauge_vec(
                registry,
                "driftwatch_repeated_call_share",
                "Share of an operation's requests that made the same non-idempotent call (POST, PATCH, publish, resend) to a peer more than once, over the revision's requests that made it (the repeated-call detector's series).",
                &["service_name", ENVIRONMENT, "operation", "peer", "revision"],
            ),
            scope_first_seen: float_gauge_vec(
                registry,
                "driftwatch_instrumentation_scope_first_seen_timestamp_seconds",
                "When the service's spans first came from an instrumentation scope (a library: database driver, HTTP client, messaging) within the new-dependency detector's lookback.",
                &["service_name", ENVIRONMENT, "scope"],
            ),
            outbound_peers: gauge_vec(
                registry,
                "driftwatch_outbound_peers",
                "Distinct outbound peers a service called within the lookback.",
                &["service_name", ENVIRONMENT],
            ),
            span_duration: histogram_vec(
                registry,
                "driftwatch_span_duration_seconds",
                "Duration of entry and internal spans by service, operation (tracked operations; the rest are __other__) and revision.",
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                &["service_name", ENVIRONMENT, "operation", "revision"],
            ),
            span_errors: counter_vec(
                registry,
                "driftwatch_span_errors_total",
                "Failed entry and internal spans (status ERROR, or a SERVER span that answered 5xx or a failed gRPC status) by service, operation and revision; divide by driftwatch_span_duration_seconds_count for the error rate.",
                &["service_name", ENVIRONMENT, "operation", "revision"],
            ),
            operation_series: gauge(
                registry,
                "driftwatch_operation_series",
                "(service, operation, revision) series of driftwatch_span_duration_seconds exported now, at most 1024.",
            ),
            operation_series_folded: counter(
                registry,
                "driftwatch_operation_series_folded_spans_total",
                "Spans of a tracked operation exported under operation=\"__other__\" in driftwatch_span_duration_seconds and driftwatch_span_errors_total: /metrics held 1024 (service, operation, revision) series already. The analysis is not affected.",
            ),
            peer_series_left_out: gauge_vec(
                registry,
                "driftwatch_peer_series_left_out",
                "Series of a per-peer gauge (driftwatch_calls_per_request, driftwatch_repeated_call_share) not exported at the last refresh: /metrics holds at most 1024 of each, those with the highest values. The analysis is not affected.",
                &["metric"],
            ),
            revision_first_seen: float_gauge_vec(
                registry,
                "driftwatch_revision_first_seen_timestamp_seconds",
                "Event time of a revision's first span: its deploy.",
                &["service_name", ENVIRONMENT, "revision"],
            ),
            revision_last_seen: float_gauge_vec(
                registry,
                "driftwatch_revision_last_seen_timestamp_seconds",
                "Event time of a revision's latest span.",
                &["service_name", ENVIRONMENT, "revision"],
            ),
        }
    }
}
