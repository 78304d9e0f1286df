//! What the receivers accepted, refused and recorded.

use prometheus::{HistogramVec, IntCounterVec, Registry};

use super::{ENVIRONMENT, REJECTION_REASONS, counter_vec, histogram_vec};

/// The receivers' metrics.
#[derive(Clone)]
pub(crate) struct ReceiveMetrics {
    pub spans_received: IntCounterVec,
    pub spans_rejected: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub other_signals: IntCounterVec,
    pub recorded: IntCounterVec,
}

impl ReceiveMetrics {
    pub(super) fn new(registry: &Registry) -> ReceiveMetrics {
        let metrics = ReceiveMetrics {
            spans_received: counter_vec(
                registry,
                "driftwatch_spans_received_total",
                "Spans accepted by a receiver, by service and transport.",
                &["service_name", ENVIRONMENT, "transport"],
            ),
            spans_rejected: counter_vec(
                registry,
                "driftwatch_spans_rejected_total",
                "Spans refused, by reason (invalid_utf8, end_before_start, future_timestamp, missing_timestamp, malformed_request, too_large, too_many_spans, backpressure, ...) and transport.",
                &["reason", "transport"],
            ),
            requests: counter_vec(
                registry,
                "driftwatch_export_requests_total",
                "OTLP export requests by transport and outcome.",
                &["transport", "outcome"],
            ),
            request_duration: histogram_vec(
                registry,
                "driftwatch_export_request_duration_seconds",
                "Time to process one OTLP export request.",
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
                &["transport"],
            ),
            other_signals: counter_vec(
                registry,
                "driftwatch_other_signal_requests_total",
                "Metrics and logs export requests: forwarded, acknowledged (no forwarding), dropped_queue_full, backpressure, unsupported, too_large.",
                &["signal", "transport", "outcome"],
            ),
            recorded: counter_vec(
                registry,
                "driftwatch_record_requests_total",
                "Export requests for the recording (record.path): written, dropped (queue full) or failed (write error).",
                &["outcome"],
            ),
        };
        // Start the per-reason series at zero, so dashboards and alert
        // rules see 0 rather than no data until the first rejection.
        for transport in ["grpc", "http_protobuf", "http_json"] {
            for reason in REJECTION_REASONS {
                metrics.spans_rejected.with_label_values(&[reason, transport]);
            }
        }
        metrics
    }
}
