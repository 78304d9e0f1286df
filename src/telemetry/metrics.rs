//! Self-metrics, exported on `/metrics` in the Prometheus text format.
//!
//! Names follow Prometheus conventions (`driftwatch_` prefix, `_total` for
//! counters, base units). Label values that come from clients (service
//! names) are bounded: past [`MAX_SERVICE_LABELS`] distinct services, the
//! rest are counted under `__other__`.
//!
//! A service is labelled `service_name` (`service.namespace/service.name`)
//! and `deployment_environment_name`, the OTel resource attributes' names
//! as the Collector's Prometheus exporters spell them; the environment is
//! empty (so absent to Prometheus) when the spans name none.

use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Distinct `service_name` label values before folding into `__other__`.
pub const MAX_SERVICE_LABELS: usize = 256;
/// Distinct `deployment_environment_name` label values before folding into
/// `__other__`.
pub const MAX_ENVIRONMENT_LABELS: usize = 32;
/// The label that keeps a service's environments apart.
pub const ENVIRONMENT: &str = "deployment_environment_name";
pub const OTHER_LABEL: &str = "__other__";
/// Longest label value exported, in bytes: client-supplied names (services,
/// operations, revisions) are cut to this, at a character boundary.
pub const MAX_LABEL_BYTES: usize = 128;

/// `value` cut to [`MAX_LABEL_BYTES`] at a character boundary.
pub fn label_value(value: &str) -> &str {
    crate::text::truncate(value, MAX_LABEL_BYTES)
}

/// Every `reason` of `driftwatch_spans_rejected_total`.
pub const REJECTION_REASONS: &[&str] = &[
    "invalid_utf8",
    "missing_timestamp",
    "end_before_start",
    "future_timestamp",
    "too_many_spans",
    "backpressure",
];

pub struct Metrics {
    registry: Registry,
    pub spans_received: IntCounterVec,
    pub spans_rejected: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub analysis_queue_spans: IntGauge,
    pub analysis_queue_bytes: IntGauge,
    /// Detector updates waiting for the event pipeline.
    pub event_updates_queued: IntGauge,
    /// Times a shard waited because the event pipeline's queue was full.
    pub event_updates_waited: IntCounter,
    pub spans_analyzed: IntCounterVec,
    pub spans_not_analyzed: IntCounterVec,
    pub drifts_firing: IntGaugeVec,
    pub drift_events: IntCounterVec,
    pub drift_resolutions: IntCounterVec,
    pub drift_refires: IntCounterVec,
    pub operations_tracked: IntGaugeVec,
    pub operations_folded: IntCounterVec,
    pub calls_without_caller: IntCounterVec,
    pub requests_untallied: IntCounterVec,
    pub calls_per_request: prometheus::GaugeVec,
    pub repeated_call_share: prometheus::GaugeVec,
    pub scope_first_seen: prometheus::GaugeVec,
    pub outbound_peers: IntGaugeVec,
    pub attributions: IntCounterVec,
    pub revisions_unresolved: IntCounterVec,
    pub alert_deliveries: IntCounterVec,
    pub outbox_pending: IntGauge,
    pub fleet_errors: IntCounterVec,
    pub store_degraded: IntGauge,
    pub fleet_degraded: IntGauge,
    pub fleet_duration: HistogramVec,
    pub fleet_rows: IntCounterVec,
    pub fleet_bytes: IntCounterVec,
    pub fleet_replicas: IntGaugeVec,
    pub fleet_publishes: IntCounterVec,
    pub store_pending: IntGauge,
    pub store_errors: IntCounter,
    pub store_dropped: IntCounter,
    pub span_duration: HistogramVec,
    pub span_errors: IntCounterVec,
    pub revision_first_seen: prometheus::GaugeVec,
    pub revision_last_seen: prometheus::GaugeVec,
    pub suspect_info: IntGaugeVec,
    pub forward_requests: IntCounterVec,
    pub forward_queue_bytes: IntGauge,
    pub recorded: IntCounterVec,
    pub other_signals: IntCounterVec,
    services_seen: LabelSet,
    environments_seen: LabelSet,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let spans_received = IntCounterVec::new(
            Opts::new(
                "driftwatch_spans_received_total",
                "Spans accepted by a receiver, by service and transport.",
            ),
            &["service_name", ENVIRONMENT, "transport"],
        )
        .expect("valid metric");
        let spans_rejected = IntCounterVec::new(
            Opts::new(
                "driftwatch_spans_rejected_total",
                "Spans refused, by reason (invalid_utf8, end_before_start, future_timestamp, missing_timestamp, \
                 malformed_request, too_large, too_many_spans, backpressure, ...) and transport.",
            ),
            &["reason", "transport"],
        )
        .expect("valid metric");
        let recorded = IntCounterVec::new(
            Opts::new(
                "driftwatch_record_requests_total",
                "Export requests for the recording (record.path): written, dropped (queue full) or failed (write error).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let other_signals = IntCounterVec::new(
            Opts::new(
                "driftwatch_other_signal_requests_total",
                "Metrics and logs export requests: forwarded, acknowledged (no forwarding), dropped_queue_full, backpressure, unsupported, too_large.",
            ),
            &["signal", "transport", "outcome"],
        )
        .expect("valid metric");
        let requests = IntCounterVec::new(
            Opts::new(
                "driftwatch_export_requests_total",
                "OTLP export requests by transport and outcome.",
            ),
            &["transport", "outcome"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "driftwatch_export_request_duration_seconds",
                "Time to process one OTLP export request.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["transport"],
        )
        .expect("valid metric");
        let analysis_queue_spans =
            IntGauge::new("driftwatch_analysis_queue_spans", "Spans accepted and waiting for analysis.").expect("valid metric");
        let event_updates_queued = IntGauge::new(
            "driftwatch_event_updates_queued",
            "Detector updates (fired, carried, resolved drifts) waiting for the event pipeline.",
        )
        .expect("valid metric");
        let event_updates_waited = IntCounter::new(
            "driftwatch_event_updates_waited_total",
            "Times an analysis shard waited because the event pipeline's queue was full (nothing is dropped).",
        )
        .expect("valid metric");
        let analysis_queue_bytes = IntGauge::new(
            "driftwatch_analysis_queue_bytes",
            "Bytes held by spans waiting for analysis, their interned strings aside.",
        )
        .expect("valid metric");
        let spans_analyzed = IntCounterVec::new(
            Opts::new(
                "driftwatch_spans_analyzed_total",
                "Spans processed by the analysis, by service.",
            ),
            &["service_name", ENVIRONMENT],
        )
        .expect("valid metric");
        let spans_not_analyzed = IntCounterVec::new(
            Opts::new(
                "driftwatch_spans_not_analyzed_total",
                "Spans accepted but left out of the analysis, by reason (too_late: beyond analyze.max_lateness; \
                 max_services: beyond analyze.max_services).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let drifts_firing = IntGaugeVec::new(
            Opts::new("driftwatch_drifts_firing", "Drift events currently firing, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        let drift_events = IntCounterVec::new(
            Opts::new("driftwatch_drift_events_total", "Drift events fired, by kind and severity."),
            &["kind", "severity"],
        )
        .expect("valid metric");
        let drift_resolutions = IntCounterVec::new(
            Opts::new(
                "driftwatch_drift_resolutions_total",
                "Drift events resolved, by kind and reason (fixed, rolled_back, traffic_gone).",
            ),
            &["kind", "reason"],
        )
        .expect("valid metric");
        let drift_refires = IntCounterVec::new(
            Opts::new(
                "driftwatch_drift_refires_total",
                "Drifts that fired again after their earlier event resolved (same service, kind, subject and revision).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let operations_tracked = IntGaugeVec::new(
            Opts::new(
                "driftwatch_operations_tracked",
                "Operations tracked exactly per service (bounded by analyze.max_operations).",
            ),
            &["service_name", ENVIRONMENT],
        )
        .expect("valid metric");
        let calls_without_caller = IntCounterVec::new(
            Opts::new(
                "driftwatch_outbound_calls_without_caller_total",
                "Outbound calls counted without their calling operation: the service's share of the pending-call budget was full.",
            ),
            &["service_name", ENVIRONMENT],
        )
        .expect("valid metric");
        let requests_untallied = IntCounterVec::new(
            Opts::new(
                "driftwatch_requests_untallied_total",
                "Requests whose calls per peer were not counted by the fan-out and repeated-call detectors: too many requests open at once, or too many (revision, operation, peer) series.",
            ),
            &["service_name", ENVIRONMENT],
        )
        .expect("valid metric");
        let calls_per_request = prometheus::GaugeVec::new(
            Opts::new(
                "driftwatch_calls_per_request",
                "Mean outbound calls to a peer per request of an operation, over the revision's requests that called it (the fan-out detector's series).",
            ),
            &["service_name", ENVIRONMENT, "operation", "peer", "revision"],
        )
        .expect("valid metric");
        let repeated_call_share = prometheus::GaugeVec::new(
            Opts::new(
                "driftwatch_repeated_call_share",
                "Share of an operation's requests that made the same non-idempotent call (POST, PATCH, publish, resend) to a peer more than once, over the revision's requests that made it (the repeated-call detector's series).",
            ),
            &["service_name", ENVIRONMENT, "operation", "peer", "revision"],
        )
        .expect("valid metric");
        let scope_first_seen = prometheus::GaugeVec::new(
            Opts::new(
                "driftwatch_instrumentation_scope_first_seen_timestamp_seconds",
                "When the service's spans first came from an instrumentation scope (a library: database driver, HTTP client, messaging) within the new-dependency detector's lookback.",
            ),
            &["service_name", ENVIRONMENT, "scope"],
        )
        .expect("valid metric");
        let operations_folded = IntCounterVec::new(
            Opts::new(
                "driftwatch_operations_folded_spans_total",
                "Spans whose operation was not tracked and was folded into __other__, by service.",
            ),
            &["service_name", ENVIRONMENT],
        )
        .expect("valid metric");
        let outbound_peers = IntGaugeVec::new(
            Opts::new(
                "driftwatch_outbound_peers",
                "Distinct outbound peers a service called within the lookback.",
            ),
            &["service_name", ENVIRONMENT],
        )
        .expect("valid metric");
        let attributions = IntCounterVec::new(
            Opts::new(
                "driftwatch_attributions_total",
                "Events attributed to commits, by outcome (suspects, no_suspects, unresolved_revision, shallow_history: the checkout lacks the range's history, error).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let revisions_unresolved = IntCounterVec::new(
            Opts::new(
                "driftwatch_revisions_unresolved_total",
                "Event revisions the service's repository does not know.",
            ),
            &["service_name", ENVIRONMENT],
        )
        .expect("valid metric");
        let alert_deliveries = IntCounterVec::new(
            Opts::new(
                "driftwatch_alert_deliveries_total",
                "Alert deliveries by sink type and outcome (delivered, retrying, dead; deduplicated: another replica of the fleet delivered it).",
            ),
            &["sink", "outcome"],
        )
        .expect("valid metric");
        let outbox_pending = IntGauge::new(
            "driftwatch_outbox_pending",
            "Alerts written to the outbox and not yet delivered or given up.",
        )
        .expect("valid metric");
        let fleet_errors = IntCounterVec::new(
            Opts::new(
                "driftwatch_fleet_store_errors_total",
                "Failed operations on the fleet's PostgreSQL store by operation (publish, refresh, rejoin, open_event, leave_event, sweep, claim, delivered, maintain).",
            ),
            &["operation"],
        )
        .expect("valid metric");
        let store_degraded = IntGauge::new(
            "driftwatch_store_degraded",
            "1 while the embedded store cannot be written (a full disk): events and alerts wait in memory.",
        )
        .expect("valid metric");
        let fleet_degraded = IntGauge::new(
            "driftwatch_fleet_degraded",
            "1 while the fleet's PostgreSQL store has not answered since the start or its last operation failed: this replica detects on its own.",
        )
        .expect("valid metric");
        let fleet_duration = HistogramVec::new(
            HistogramOpts::new(
                "driftwatch_fleet_operation_duration_seconds",
                "Time of the fleet path's work on PostgreSQL by operation (publish, refresh, events, sweep, maintain).",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["operation"],
        )
        .expect("valid metric");
        let fleet_rows = IntCounterVec::new(
            Opts::new(
                "driftwatch_fleet_rows_total",
                "Rows this replica read from or wrote to the fleet's PostgreSQL store, by direction (read, written).",
            ),
            &["direction"],
        )
        .expect("valid metric");
        let fleet_bytes = IntCounterVec::new(
            Opts::new(
                "driftwatch_fleet_bytes_total",
                "Snapshot, aggregate and event bytes this replica read from or wrote to the fleet's store, by direction (read, written).",
            ),
            &["direction"],
        )
        .expect("valid metric");
        let fleet_replicas = IntGaugeVec::new(
            Opts::new(
                "driftwatch_fleet_replicas",
                "Replicas whose snapshots of a service the fleet's aggregate holds, this one included.",
            ),
            &["service_name", ENVIRONMENT],
        )
        .expect("valid metric");
        let fleet_publishes = IntCounterVec::new(
            Opts::new(
                "driftwatch_fleet_publishes_total",
                "Snapshots offered to the fleet by outcome (written; unchanged: nothing but the clock moved, so nothing was written; superseded: a newer flush of the service replaced it before the database took it).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let store_pending = IntGauge::new(
            "driftwatch_store_pending_writes",
            "Events and alert deliveries kept in memory until the embedded store can be written.",
        )
        .expect("valid metric");
        let store_errors =
            IntCounter::new("driftwatch_store_errors_total", "Failed operations on the embedded store.").expect("valid metric");
        let store_dropped = IntCounter::new(
            "driftwatch_store_dropped_total",
            "Events and alert deliveries given up because the store stayed unwritable past the in-memory bound.",
        )
        .expect("valid metric");
        let span_duration = HistogramVec::new(
            HistogramOpts::new(
                "driftwatch_span_duration_seconds",
                "Duration of entry and internal spans by service, operation (tracked operations; the rest are __other__) and revision.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["service_name", ENVIRONMENT, "operation", "revision"],
        )
        .expect("valid metric");
        let span_errors = IntCounterVec::new(
            Opts::new(
                "driftwatch_span_errors_total",
                "Failed entry and internal spans (status ERROR, or a SERVER span that answered 5xx or a failed gRPC status) by service, operation and revision; divide by driftwatch_span_duration_seconds_count for the error rate.",
            ),
            &["service_name", ENVIRONMENT, "operation", "revision"],
        )
        .expect("valid metric");
        let revision_first_seen = prometheus::GaugeVec::new(
            Opts::new(
                "driftwatch_revision_first_seen_timestamp_seconds",
                "Event time of a revision's first span: its deploy.",
            ),
            &["service_name", ENVIRONMENT, "revision"],
        )
        .expect("valid metric");
        let revision_last_seen = prometheus::GaugeVec::new(
            Opts::new(
                "driftwatch_revision_last_seen_timestamp_seconds",
                "Event time of a revision's latest span.",
            ),
            &["service_name", ENVIRONMENT, "revision"],
        )
        .expect("valid metric");
        let suspect_info = IntGaugeVec::new(
            Opts::new(
                "driftwatch_suspect_info",
                "The top suspect commit of each firing drift (1 while it fires), with the AI tool that wrote it or \"none\".",
            ),
            &["service_name", ENVIRONMENT, "kind", "event_id", "commit", "ai_tool"],
        )
        .expect("valid metric");
        let forward_requests = IntCounterVec::new(
            Opts::new(
                "driftwatch_forward_requests_total",
                "Requests forwarded upstream by outcome (sent, dropped_queue_full, dropped_retries_exhausted, dropped_rejected).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let forward_queue_bytes = IntGauge::new(
            "driftwatch_forward_queue_bytes",
            "Bytes of requests waiting to be forwarded upstream.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(spans_received.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(spans_rejected.clone()),
            Box::new(requests.clone()),
            Box::new(recorded.clone()),
            Box::new(other_signals.clone()),
            Box::new(request_duration.clone()),
            Box::new(analysis_queue_spans.clone()),
            Box::new(analysis_queue_bytes.clone()),
            Box::new(event_updates_queued.clone()),
            Box::new(event_updates_waited.clone()),
            Box::new(spans_analyzed.clone()),
            Box::new(spans_not_analyzed.clone()),
            Box::new(drifts_firing.clone()),
            Box::new(drift_events.clone()),
            Box::new(drift_resolutions.clone()),
            Box::new(drift_refires.clone()),
            Box::new(operations_tracked.clone()),
            Box::new(operations_folded.clone()),
            Box::new(calls_without_caller.clone()),
            Box::new(requests_untallied.clone()),
            Box::new(calls_per_request.clone()),
            Box::new(repeated_call_share.clone()),
            Box::new(scope_first_seen.clone()),
            Box::new(outbound_peers.clone()),
            Box::new(attributions.clone()),
            Box::new(revisions_unresolved.clone()),
            Box::new(alert_deliveries.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(fleet_errors.clone()),
            Box::new(store_degraded.clone()),
            Box::new(fleet_degraded.clone()),
            Box::new(fleet_duration.clone()),
            Box::new(fleet_rows.clone()),
            Box::new(fleet_bytes.clone()),
            Box::new(fleet_replicas.clone()),
            Box::new(fleet_publishes.clone()),
            Box::new(store_pending.clone()),
            Box::new(store_errors.clone()),
            Box::new(store_dropped.clone()),
            Box::new(span_duration.clone()),
            Box::new(span_errors.clone()),
            Box::new(revision_first_seen.clone()),
            Box::new(revision_last_seen.clone()),
            Box::new(suspect_info.clone()),
            Box::new(forward_requests.clone()),
            Box::new(forward_queue_bytes.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds and the rest of the Prometheus conventions.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric names");
        {
            let build_info = IntGaugeVec::new(
                Opts::new("driftwatch_build_info", "Always 1; the labels name the build."),
                &["version"],
            )
            .expect("valid metric");
            build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
            registry.register(Box::new(build_info)).expect("unique metric names");
        }
        // Start the per-reason series at zero, so dashboards and alert rules
        // see 0 rather than no data until the first rejection.
        for transport in ["grpc", "http_protobuf", "http_json"] {
            for reason in REJECTION_REASONS {
                spans_rejected.with_label_values(&[reason, transport]);
            }
        }
        for outcome in ["delivered", "retrying", "dead", "deduplicated"] {
            for sink in ["webhook", "alertmanager", "slack", "pagerduty"] {
                alert_deliveries.with_label_values(&[sink, outcome]);
            }
        }
        Metrics {
            registry,
            spans_received,
            spans_rejected,
            requests,
            recorded,
            other_signals,
            request_duration,
            analysis_queue_spans,
            analysis_queue_bytes,
            event_updates_queued,
            event_updates_waited,
            spans_analyzed,
            spans_not_analyzed,
            drifts_firing,
            drift_events,
            drift_resolutions,
            drift_refires,
            operations_tracked,
            operations_folded,
            calls_without_caller,
            requests_untallied,
            calls_per_request,
            repeated_call_share,
            scope_first_seen,
            outbound_peers,
            attributions,
            revisions_unresolved,
            alert_deliveries,
            outbox_pending,
            fleet_errors,
            store_degraded,
            fleet_degraded,
            fleet_duration,
            fleet_rows,
            fleet_bytes,
            fleet_replicas,
            fleet_publishes,
            store_pending,
            store_errors,
            store_dropped,
            span_duration,
            span_errors,
            revision_first_seen,
            revision_last_seen,
            suspect_info,
            forward_requests,
            forward_queue_bytes,
            services_seen: LabelSet::new(MAX_SERVICE_LABELS),
            environments_seen: LabelSet::new(MAX_ENVIRONMENT_LABELS),
        }
    }

    /// The registry, for other stages to add their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A client-supplied service name as a bounded label value: cut to
    /// [`MAX_LABEL_BYTES`], and past [`MAX_SERVICE_LABELS`] distinct names
    /// folded into [`OTHER_LABEL`].
    pub fn service_label<'a>(&self, service: &'a str) -> &'a str {
        self.services_seen.admit(label_value(service))
    }

    /// The `service_name` and `deployment_environment_name` label values of
    /// a service, each bounded as [`Metrics::service_label`] is.
    pub fn service_labels<'a>(&self, key: &'a crate::service::ServiceKey) -> [&'a str; 2] {
        self.labels_of(&key.service, key.environment.as_deref())
    }

    /// [`Metrics::service_labels`] of a service named by strings (an event's).
    pub fn labels_of<'a>(&self, service: &'a str, environment: Option<&'a str>) -> [&'a str; 2] {
        let environment = match environment {
            Some(environment) => self.environments_seen.admit(label_value(environment)),
            None => "",
        };
        [self.service_label(service), environment]
    }

    /// The text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The label values admitted so far, at most `max`: read and grown on the
/// hot path without a lock. Open addressing over write-once slots, at least
/// twice as many as `max` (so a probe always ends at the value or at an
/// empty slot); a slot, once set, never changes, and two callers adding the
/// same value race for the same first empty slot, which only one can set.
struct LabelSet {
    slots: Box<[OnceLock<Box<str>>]>,
    /// Slots set or being set.
    len: AtomicUsize,
    max: usize,
    hasher: foldhash::fast::FixedState,
}

impl LabelSet {
    fn new(max: usize) -> LabelSet {
        let slots = (max * 2).max(2).next_power_of_two();
        LabelSet {
            slots: (0..slots).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
            max,
            hasher: foldhash::fast::FixedState::with_seed(0x6477),
        }
    }

    /// `value`, or [`OTHER_LABEL`] once `max` other values are held.
    fn admit<'a>(&self, value: &'a str) -> &'a str {
        let mask = self.slots.len() - 1;
        let mut i = self.hasher.hash_one(value) as usize & mask;
        loop {
            match self.slots[i].get() {
                Some(held) if **held == *value => return value,
                Some(_) => i = (i + 1) & mask,
                None => {
                    if self.len.fetch_add(1, Ordering::AcqRel) >= self.max {
                        self.len.fetch_sub(1, Ordering::AcqRel);
                        return OTHER_LABEL;
                    }
                    if self.slots[i].set(value.into()).is_ok() {
                        return value;
                    }
                    // Another caller set this slot first: look at it again.
                    self.len.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_admit_each_value_once_under_contention() {
        let set = std::sync::Arc::new(LabelSet::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let set = set.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        set.admit(&format!("v{}", (i * 7 + t) % 100));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        for i in 0..100 {
            set.admit(&format!("v{i}"));
        }
        let held: Vec<&str> = set.slots.iter().filter_map(|s| s.get().map(|v| &**v)).collect();
        let distinct: std::collections::HashSet<&str> = held.iter().copied().collect();
        assert_eq!(held.len(), 64, "the bound is reached exactly");
        assert_eq!(distinct.len(), held.len(), "no value is held twice");
        for value in held {
            assert_eq!(set.admit(value), value, "an admitted value stays admitted");
        }
    }

    #[test]
    fn service_labels_are_bounded() {
        let metrics = Metrics::new();
        for i in 0..MAX_SERVICE_LABELS {
            assert_eq!(metrics.service_label(&format!("s{i}")), format!("s{i}"));
        }
        assert_eq!(metrics.service_label("one-too-many"), OTHER_LABEL);
        assert_eq!(metrics.service_label("s0"), "s0");
    }

    #[test]
    fn environment_labels_are_bounded_and_empty_without_one() {
        let metrics = Metrics::new();
        assert_eq!(metrics.labels_of("checkout", None), ["checkout", ""]);
        for i in 0..MAX_ENVIRONMENT_LABELS {
            let environment = format!("e{i}");
            assert_eq!(metrics.labels_of("checkout", Some(&environment))[1], environment);
        }
        assert_eq!(metrics.labels_of("checkout", Some("one-too-many")), ["checkout", OTHER_LABEL]);
        assert_eq!(metrics.labels_of("checkout", Some("e0"))[1], "e0");
    }

    #[test]
    fn label_values_are_cut_in_bytes_at_a_character_boundary() {
        let long = "é".repeat(1 << 19);
        let cut = label_value(&long);
        assert!(
            cut.len() <= MAX_LABEL_BYTES && cut.len() >= MAX_LABEL_BYTES - 1,
            "{}",
            cut.len()
        );
        assert!(long.starts_with(cut));
        assert_eq!(Metrics::new().service_label(&long).len(), cut.len());
        assert_eq!(label_value("checkout"), "checkout");
    }

    #[test]
    fn every_span_rejection_reason_is_initialised() {
        for reason in crate::extract::SpanRejection::ALL {
            assert!(REJECTION_REASONS.contains(&reason.as_label()), "{reason:?}");
        }
    }

    #[test]
    fn renders_text_format() {
        let metrics = Metrics::new();
        metrics.spans_received.with_label_values(&["checkout", "", "grpc"]).inc_by(3);
        metrics.spans_received.with_label_values(&["checkout", "production", "grpc"]).inc_by(2);
        let text = metrics.render();
        assert!(
            text.contains(
                "driftwatch_spans_received_total{deployment_environment_name=\"\",service_name=\"checkout\",transport=\"grpc\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "driftwatch_spans_received_total{deployment_environment_name=\"production\",service_name=\"checkout\",transport=\"grpc\"} 2"
            ),
            "{text}"
        );
        let build = format!("driftwatch_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&build), "{text}");
        for process in ["process_resident_memory_bytes ", "process_cpu_seconds_total ", "process_open_fds "] {
            assert!(text.contains(process), "{process}: {text}");
        }
    }
}
