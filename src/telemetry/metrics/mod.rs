//! Self-metrics, exported on `/metrics` in the Prometheus text format.
//!
//! Names follow Prometheus conventions (`driftwatch_` prefix, `_total` for
//! counters, base units). Label values that come from clients (service
//! names) are bounded: past [`MAX_SERVICE_LABELS`] distinct services, the
//! rest are counted under `__other__`. The series that multiply services by
//! operations, revisions and peers share a [`SeriesBudget`] each, so a
//! scrape stays a few megabytes whatever `analyze.max_operations` allows.
//!
//! A service is labelled `service_name` (`service.namespace/service.name`)
//! and `deployment_environment_name`, the OTel resource attributes' names
//! as the Collector's Prometheus exporters spell them; the environment is
//! empty (so absent to Prometheus) when the spans name none.
//!
//! Each component's metrics are a struct of their own, in a file of this
//! folder (`receive`, `analysis`, `events`, `alert`, `store`, `fleet`,
//! `forward`); [`Metrics`] makes each once and holds the labels they share.

use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

mod alert;
mod analysis;
mod events;
mod fleet;
mod forward;
mod receive;
mod store;

pub(crate) use alert::AlertMetrics;
pub(crate) use analysis::AnalysisMetrics;
pub(crate) use events::EventMetrics;
pub(crate) use fleet::FleetMetrics;
pub(crate) use forward::ForwardMetrics;
pub(crate) use receive::ReceiveMetrics;
pub(crate) use store::StoreMetrics;

/// Distinct `service_name` label values before folding into `__other__`.
pub(crate) const MAX_SERVICE_LABELS: usize = 256;
/// Distinct `deployment_environment_name` label values before folding into
/// `__other__`.
pub(crate) const MAX_ENVIRONMENT_LABELS: usize = 32;
/// The label that keeps a service's environments apart.
pub(crate) const ENVIRONMENT: &str = "deployment_environment_name";
pub(crate) const OTHER_LABEL: &str = "__other__";
/// Longest label value exported, in bytes: client-supplied names (services,
/// operations, revisions) are cut to this, at a character boundary.
pub(crate) const MAX_LABEL_BYTES: usize = 128;
/// (service, operation, revision) series of `driftwatch_span_duration_seconds`
/// (and `driftwatch_span_errors_total`) at once, over every shard: about
/// 3 MB of text. Past it, a tracked operation's spans are exported under
/// `operation="__other__"`.
pub(crate) const MAX_OPERATION_SERIES: usize = 1024;
/// Series of each per-peer gauge (`driftwatch_calls_per_request`,
/// `driftwatch_repeated_call_share`) at once, over every shard; past it,
/// those with the highest values are exported.
pub(crate) const MAX_PEER_SERIES: usize = 1024;

/// Room for at most `max` series, taken and given back by the shards that
/// export them, without a lock.
pub(crate) struct SeriesBudget {
    used: AtomicUsize,
    max: usize,
}

impl SeriesBudget {
    pub(crate) fn new(max: usize) -> SeriesBudget {
        SeriesBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes room for up to `wanted` series; returns how many it got.
    pub(crate) fn take(&self, wanted: usize) -> usize {
        let mut granted = 0;
        // The closure always returns `Some`, so the update cannot fail.
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            granted = wanted.min(self.max.saturating_sub(used));
            Some(used + granted)
        });
        granted
    }

    /// Gives back room for `series` taken earlier.
    pub(crate) fn give_back(&self, series: usize) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(series)));
    }

    /// Series held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// `value` cut to [`MAX_LABEL_BYTES`] at a character boundary.
pub(crate) fn label_value(value: &str) -> &str {
    crate::text::truncate(value, MAX_LABEL_BYTES)
}

/// `collector`, registered in `registry`. Each component's metrics are
/// made once per registry, by [`Metrics::new`], so names never clash.
fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry.register(Box::new(collector.clone())).expect("unique metric names");
    collector
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    register(registry, prometheus::Gauge::new(name, help).expect("valid metric"))
}

fn float_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(registry, GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(registry, HistogramVec::new(opts, labels).expect("valid metric"))
}

/// Every `reason` of `driftwatch_spans_rejected_total`.
pub(crate) const REJECTION_REASONS: &[&str] = &[
    "invalid_utf8",
    "missing_timestamp",
    "end_before_start",
    "future_timestamp",
    "too_many_spans",
    "backpressure",
];

/// The process's registry, each component's metrics, and the bounded
/// service labels they share.
pub(crate) struct Metrics {
    registry: Registry,
    pub receive: ReceiveMetrics,
    pub analysis: AnalysisMetrics,
    pub events: EventMetrics,
    pub alert: AlertMetrics,
    pub store: StoreMetrics,
    pub fleet: FleetMetrics,
    pub forward: ForwardMetrics,
    /// Room for `driftwatch_span_duration_seconds` series.
    pub operation_series: SeriesBudget,
    /// Room for `driftwatch_calls_per_request` and
    /// `driftwatch_repeated_call_share` series, in that order.
    pub peer_series: [SeriesBudget; 2],
    services_seen: LabelSet,
    environments_seen: LabelSet,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds and the rest of the Prometheus conventions.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric names");
        gauge_vec(&registry, "driftwatch_build_info", "Always 1; the labels name the build.", &["version"])
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            receive: ReceiveMetrics::new(&registry),
            analysis: AnalysisMetrics::new(&registry),
            events: EventMetrics::new(&registry),
            alert: AlertMetrics::new(&registry),
            store: StoreMetrics::new(&registry),
            fleet: FleetMetrics::new(&registry),
            forward: ForwardMetrics::new(&registry),
            registry,
            operation_series: SeriesBudget::new(MAX_OPERATION_SERIES),
            peer_series: [SeriesBudget::new(MAX_PEER_SERIES), SeriesBudget::new(MAX_PEER_SERIES)],
            services_seen: LabelSet::new(MAX_SERVICE_LABELS),
            environments_seen: LabelSet::new(MAX_ENVIRONMENT_LABELS),
        }
    }

    /// A client-supplied service name as a bounded label value: cut to
    /// [`MAX_LABEL_BYTES`], and past [`MAX_SERVICE_LABELS`] distinct names
    /// folded into [`OTHER_LABEL`].
    pub(crate) fn service_label<'a>(&self, service: &'a str) -> &'a str {
        self.services_seen.admit(label_value(service))
    }

    /// The `service_name` and `deployment_environment_name` label values of
    /// a service, each bounded as [`Metrics::service_label`] is.
    pub(crate) fn service_labels<'a>(&self, key: &'a crate::service::ServiceKey) -> [&'a str; 2] {
        self.labels_of(&key.service, key.environment.as_deref())
    }

    /// [`Metrics::service_labels`] of a service named by strings (an event's).
    pub(crate) fn labels_of<'a>(&self, service: &'a str, environment: Option<&'a str>) -> [&'a str; 2] {
        let environment = match environment {
            Some(environment) => self.environments_seen.admit(label_value(environment)),
            None => "",
        };
        [self.service_label(service), environment]
    }

    /// The text exposition of every registered metric.
    pub(crate) fn render(&self) -> String {
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
    fn a_series_budget_grants_what_is_left_and_takes_back_what_is_given() {
        let budget = SeriesBudget::new(10);
        assert_eq!(budget.take(4), 4);
        assert_eq!(budget.take(8), 6, "only what is left");
        assert_eq!(budget.take(1), 0);
        budget.give_back(3);
        assert_eq!(budget.used(), 7);
        assert_eq!(budget.take(5), 3);
        budget.give_back(100);
        assert_eq!(budget.used(), 0, "never below zero");
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
        metrics.receive.spans_received.with_label_values(&["checkout", "", "grpc"]).inc_by(3);
        metrics.receive.spans_received.with_label_values(&["checkout", "production", "grpc"]).inc_by(2);
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
