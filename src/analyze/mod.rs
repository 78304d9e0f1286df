//! Analyze: the bounded queue between the receivers and the analysis
//! shards, and the shard workers that consume it.
//!
//! Services are sharded by a hash of their name, so one shard owns all the
//! state of a service and needs no lock. Admission is bounded by the number
//! of queued spans and by the bytes they hold: when analysis falls behind,
//! receivers are told to push back on clients rather than buffer without
//! limit. (The strings a fact names live in the interner, which has a byte
//! budget of its own.)

pub(crate) mod mailbox;
pub(crate) mod operations;
pub(crate) mod peers;
pub(crate) mod persist;
pub mod service;
pub mod shard;
pub mod snapshot;
pub(crate) mod timeline;
pub(crate) mod view;
pub(crate) mod window;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::AnalyzeConfig;
use crate::detect::event::EventUpdate;
use crate::telemetry::metrics::{Metrics, SeriesBudget, label_value};
use crate::extract::{ServiceKey, SpanFact};
use service::AnalysisSettings;
use shard::ShardAnalysis;
use snapshot::ServiceSnapshot;

/// How often shards let wall-clock time advance idle services.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The queue refused a batch because admitting it would exceed the bound.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("analysis queue full: {queued} spans ({queued_bytes} bytes) queued, limits {limit} spans and {limit_bytes} bytes")]
pub(crate) struct QueueFull {
    pub queued: usize,
    pub queued_bytes: usize,
    pub limit: usize,
    pub limit_bytes: usize,
}

/// The bytes a queued fact holds, its interned strings aside.
pub(crate) fn fact_bytes(fact: &SpanFact) -> usize {
    let location = std::mem::size_of::<crate::extract::CodeLocation>();
    std::mem::size_of::<SpanFact>()
        + fact.code.as_ref().map_or(0, |_| location)
        + fact.error_code.as_ref().map_or(0, |_| location)
}

const _: () = assert!(
    std::mem::size_of::<SpanFact>() + 2 * std::mem::size_of::<crate::extract::CodeLocation>()
        <= crate::config::QUEUED_SPAN_BYTES_BOUND
);

fn batch_bytes(facts: &[SpanFact]) -> usize {
    facts.iter().map(fact_bytes).sum::<usize>() + std::mem::size_of::<Vec<SpanFact>>()
}

/// What a shard does with each batch.
pub(crate) trait ShardObserver: Send + 'static {
    fn observe(&mut self, facts: &[SpanFact]);

    /// Called about once a second of wall-clock time.
    fn tick(&mut self, _elapsed: std::time::Duration) {}

    /// Called once the queue has closed and every batch was observed.
    fn finish(&mut self) {}

    /// Hands on what `observe`, `tick` or `finish` raised, waiting while
    /// the consumer's queue is full.
    fn hand_on(&mut self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// What the shard saw of `service`'s revisions, when asked.
    fn coverage(&self, _service: &str, _environment: Option<&str>) -> Option<crate::coverage::ServiceCoverage> {
        None
    }
}

/// The live shard: analyses each batch, counts it, and hands drift updates
/// to the event pipeline.
pub(crate) struct LiveShard {
    analysis: ShardAnalysis,
    metrics: Arc<Metrics>,
    updates: crate::detect::event::UpdateSender,
    scratch: Vec<EventUpdate>,
    persistence: Option<Persistence>,
    /// Folded-span totals already exported, per service.
    folded_exported: std::collections::HashMap<ServiceKey, u64>,
    /// Calls without a caller already exported, per service.
    uncalled_exported: std::collections::HashMap<ServiceKey, u64>,
    untallied_exported: std::collections::HashMap<ServiceKey, u64>,
    /// Operation evictions already accounted for, per service (see
    /// `release_untracked_operations`).
    evictions_seen: std::collections::HashMap<ServiceKey, u64>,
    /// Per (service, operation, revision) exported: the duration histogram
    /// and the error counter, created together so an error rate always has
    /// both, and kept so observing a span does not look labels up. It holds
    /// the series of `exported`, no others.
    durations: DurationSeries,
    /// Series exported per service and revision (with the operations of its
    /// duration histograms), so they can be removed with the revision. Each
    /// operation but `__other__` holds room in `Metrics::operation_series`.
    exported: std::collections::HashMap<ServiceKey, RevisionSeries>,
    /// Per-peer request series exported (calls per request, repeated-call
    /// share), as label values, so those whose revision went are removed.
    peer_series_exported: [std::collections::HashSet<PeerSeriesLabels>; 2],
    /// Room taken in `Metrics::peer_series` at the last refresh, one per
    /// row: services folded into one `service_name` label can make it more
    /// than the series exported, and it is what is given back.
    peer_series_taken: [usize; 2],
    /// Series of each per-peer gauge left out at the last refresh.
    peer_series_left_out: [usize; 2],
    /// Instrumentation scopes exported: `service_name`,
    /// `deployment_environment_name`, `scope`.
    scopes_exported: std::collections::HashSet<[String; 3]>,
    /// Time since the per-peer gauges and the scopes were refreshed.
    since_peer_series_export: std::time::Duration,
}

/// `service_name`, `deployment_environment_name`, `operation`, `peer`,
/// `revision`.
type PeerSeriesLabels = [String; 5];

/// How often the per-peer request gauges are refreshed: each costs a label
/// lookup, and a scrape every 15 s or more sees no difference.
const PEER_SERIES_EXPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Per-peer request series exported per service and metric, at most.
const MAX_PEER_SERIES_EXPORTED: usize = crate::detect::fanout::MAX_SERIES;

/// Sets `gauge` to `rows` (label values, value) and removes the series of
/// `exported` that `rows` no longer holds; `exported` becomes `rows`' labels.
fn refresh_gauge<const N: usize>(
    gauge: &prometheus::GaugeVec,
    exported: &mut std::collections::HashSet<[String; N]>,
    rows: Vec<([String; N], f64)>,
) {
    let mut current = std::collections::HashSet::with_capacity(rows.len());
    for (labels, value) in rows {
        gauge.with_label_values(&labels.each_ref().map(String::as_str)).set(value);
        current.insert(labels);
    }
    for gone in exported.difference(&current) {
        let _ = gauge.remove_label_values(&gone.each_ref().map(String::as_str));
    }
    *exported = current;
}

/// Cuts `rows` to the room `budget` has for them once the room `held` by
/// the rows they replace is given back (every shard shares the room),
/// keeping the rows with the highest values; returns how many were left
/// out. The room taken is the length of `rows` afterwards.
fn fit_to_budget<L>(budget: &SeriesBudget, held: usize, rows: &mut Vec<(L, f64)>) -> usize {
    budget.give_back(held);
    let granted = budget.take(rows.len());
    let left_out = rows.len() - granted;
    if left_out > 0 {
        rows.select_nth_unstable_by(granted, |a, b| b.1.total_cmp(&a.1));
        rows.truncate(granted);
    }
    left_out
}

type RevisionSeries = std::collections::HashMap<crate::extract::Sym, std::collections::HashSet<crate::extract::Sym>>;

/// Looked up for every entry and internal span: hashed with foldhash.
type DurationSeries = std::collections::HashMap<
    (ServiceKey, crate::extract::Sym, crate::extract::Sym),
    (prometheus::Histogram, prometheus::IntCounter),
    foldhash::fast::RandomState,
>;

/// The duration histogram and error counter that a span of `operation`
/// (tracked, or `__other__`) and `revision` of the service `key` (labelled
/// `service`) counts in: the operation's own series while
/// `Metrics::operation_series` has room for it, else the `__other__` one.
fn duration_series<'a>(
    durations: &'a mut DurationSeries,
    exported: &mut std::collections::HashMap<ServiceKey, RevisionSeries>,
    metrics: &Metrics,
    (key, service): (&ServiceKey, [&str; 2]),
    operation: &crate::extract::Sym,
    revision: &crate::extract::Sym,
) -> &'a (prometheus::Histogram, prometheus::IntCounter) {
    let series = (key.clone(), operation.clone(), revision.clone());
    if !durations.contains_key(&series) {
        let other = operations::other_name();
        let operations = exported.entry(key.clone()).or_default().entry(revision.clone()).or_default();
        let own = operations.contains(operation) || *operation == other || metrics.operation_series.take(1) == 1;
        if !own {
            metrics.analysis.operation_series_folded.inc();
            return duration_series(durations, exported, metrics, (key, service), &other, revision);
        }
        if operations.insert(operation.clone()) && *operation != other {
            metrics.analysis.operation_series.set(metrics.operation_series.used() as i64);
        }
        let labels = [service[0], service[1], label_value(operation), label_value(revision)];
        let handles = (
            metrics.analysis.span_duration.with_label_values(&labels),
            metrics.analysis.span_errors.with_label_values(&labels),
        );
        durations.insert(series.clone(), handles);
    }
    &durations[&series]
}

/// Removes the duration histogram and error counter of `operation` and
/// `revision` of the service `key` (labelled `service`) from `/metrics` and
/// from the handles kept for them.
fn remove_duration_series(
    metrics: &Metrics,
    durations: &mut DurationSeries,
    (key, service): (&ServiceKey, [&str; 2]),
    operation: &crate::extract::Sym,
    revision: &crate::extract::Sym,
) {
    let labels = [service[0], service[1], label_value(operation), label_value(revision)];
    let _ = metrics.analysis.span_duration.remove_label_values(&labels);
    let _ = metrics.analysis.span_errors.remove_label_values(&labels);
    durations.remove(&(key.clone(), operation.clone(), revision.clone()));
}

/// Gives the room of `series` removed operation series back to
/// `Metrics::operation_series`, and shows the room still in use.
fn give_back_operation_series(metrics: &Metrics, series: usize) {
    if series > 0 {
        metrics.operation_series.give_back(series);
        metrics.analysis.operation_series.set(metrics.operation_series.used() as i64);
    }
}

impl LiveShard {
    pub(crate) fn new(settings: Arc<AnalysisSettings>, metrics: Arc<Metrics>, updates: crate::detect::event::UpdateSender) -> LiveShard {
        LiveShard {
            analysis: ShardAnalysis::new(settings),
            metrics,
            updates,
            scratch: Vec::new(),
            persistence: None,
            folded_exported: Default::default(),
            uncalled_exported: Default::default(),
            untallied_exported: Default::default(),
            evictions_seen: Default::default(),
            durations: Default::default(),
            exported: Default::default(),
            peer_series_exported: Default::default(),
            peer_series_taken: [0; 2],
            peer_series_left_out: [0; 2],
            scopes_exported: Default::default(),
            since_peer_series_export: std::time::Duration::ZERO,
        }
    }

    /// Sets `driftwatch_instrumentation_scope_first_seen_timestamp_seconds`
    /// from every service's known scopes, and removes those forgotten.
    fn export_scopes(&mut self) {
        let mut rows = Vec::with_capacity(self.scopes_exported.len());
        for state in self.analysis.services() {
            let [service, environment] = self.metrics.service_labels(&state.key);
            for (scope, known) in state.known_scopes() {
                let labels = [service.to_owned(), environment.to_owned(), label_value(scope).to_owned()];
                rows.push((labels, known.first_seen as f64 / 1e9));
            }
        }
        refresh_gauge(&self.metrics.analysis.scope_first_seen, &mut self.scopes_exported, rows);
    }

    /// Sets `driftwatch_calls_per_request` and
    /// `driftwatch_repeated_call_share` from every service's fan-out and
    /// repeated-call series, and removes the series no longer kept.
    fn export_peer_series(&mut self) {
        let mut rows: [Vec<(PeerSeriesLabels, f64)>; 2] = Default::default();
        for state in self.analysis.services() {
            let [service, environment] = self.metrics.service_labels(&state.key);
            let labels = |revision: &str, operation: &str, peer: &str| -> PeerSeriesLabels {
                [
                    service.to_owned(),
                    environment.to_owned(),
                    label_value(operation).to_owned(),
                    label_value(peer).to_owned(),
                    label_value(revision).to_owned(),
                ]
            };
            for (revision, operation, peer, mean) in state.calls_per_request() {
                rows[0].push((labels(revision, operation, peer), mean));
            }
            // The repeated-call detector keeps more series than a scrape
            // should carry: those that repeat most are exported.
            let mut shares: Vec<_> = state.repeated_call_shares().collect();
            if shares.len() > MAX_PEER_SERIES_EXPORTED {
                shares.select_nth_unstable_by(MAX_PEER_SERIES_EXPORTED, |a, b| b.3.total_cmp(&a.3));
                shares.truncate(MAX_PEER_SERIES_EXPORTED);
            }
            for (revision, operation, peer, share) in shares {
                rows[1].push((labels(revision, operation, peer), share));
            }
        }
        let analysis = &self.metrics.analysis;
        let gauges = [
            (&analysis.calls_per_request, "driftwatch_calls_per_request"),
            (&analysis.repeated_call_share, "driftwatch_repeated_call_share"),
        ];
        for (i, ((gauge, name), mut rows)) in gauges.into_iter().zip(rows).enumerate() {
            let left_out = fit_to_budget(&self.metrics.peer_series[i], self.peer_series_taken[i], &mut rows);
            self.peer_series_taken[i] = rows.len();
            analysis.peer_series_left_out.with_label_values(&[name]).add(left_out as i64 - self.peer_series_left_out[i] as i64);
            self.peer_series_left_out[i] = left_out;
            refresh_gauge(gauge, &mut self.peer_series_exported[i], rows);
        }
    }

    /// Restores `snapshots` and writes the shard's state to `store` every
    /// `flush_interval` and when the shard finishes.
    pub(crate) fn with_persistence(mut self, persistence: Persistence, snapshots: &[ServiceSnapshot]) -> LiveShard {
        for snapshot in snapshots {
            self.analysis.restore(snapshot);
        }
        if let Some(link) = &persistence.fleet {
            while let Ok(baselines) = link.adopt.try_recv() {
                self.analysis.adopt_fleet(baselines);
            }
        }
        self.persistence = Some(persistence);
        self
    }

    /// Removes the series of revisions the service's timeline dropped, so
    /// label values do not outlive the revisions they name.
    fn expire_revisions(&mut self, key: &ServiceKey, service: [&str; 2]) {
        let Some(state) = self.analysis.service(key) else { return };
        let Some(exported) = self.exported.get_mut(key) else { return };
        let gone: Vec<crate::extract::Sym> = exported
            .keys()
            .filter(|r| state.timeline.id_of(r).is_none())
            .cloned()
            .collect();
        for revision in gone {
            let Some(operations) = exported.remove(&revision) else {
                continue;
            };
            let labels = [service[0], service[1], label_value(&revision)];
            let _ = self.metrics.analysis.revision_first_seen.remove_label_values(&labels);
            let _ = self.metrics.analysis.revision_last_seen.remove_label_values(&labels);
            let other = operations::other_name();
            let own = operations.iter().filter(|o| **o != other).count();
            for operation in &operations {
                remove_duration_series(&self.metrics, &mut self.durations, (key, service), operation, &revision);
            }
            give_back_operation_series(&self.metrics, own);
        }
    }

    /// Removes the duration series of operations the service no longer
    /// tracks (idle past `analyze.operation_idle`, or displaced by a much
    /// busier name): their spans count under `__other__` from then on, and
    /// the room they held in `Metrics::operation_series` goes to others.
    fn release_untracked_operations(&mut self, key: &ServiceKey) {
        let Some(state) = self.analysis.service(key) else { return };
        let evictions = state.operations.evictions();
        if self.evictions_seen.get(key).copied().unwrap_or(0) == evictions {
            return;
        }
        self.evictions_seen.insert(key.clone(), evictions);
        let Some(exported) = self.exported.get_mut(key) else { return };
        let service = self.metrics.service_labels(key);
        let other = operations::other_name();
        let (metrics, durations) = (&self.metrics, &mut self.durations);
        let mut released = 0;
        for (revision, operations) in exported.iter_mut() {
            operations.retain(|operation| {
                if *operation == other || state.operations.is_tracked(operation) {
                    return true;
                }
                remove_duration_series(metrics, durations, (key, service), operation, revision);
                released += 1;
                false
            });
        }
        give_back_operation_series(metrics, released);
    }

    fn flush(&mut self) {
        let Some(p) = self.persistence.as_mut() else { return };
        p.since_flush = std::time::Duration::ZERO;
        // The state as of now: every span this shard has counted as
        // analysed is in it.
        let as_of = crate::clock::unix_nanos();
        for snapshot in self.analysis.snapshots(p.retention_nanos) {
            let bytes = match serde_json::to_vec(&snapshot) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(%error, service = %snapshot.service, "cannot serialise the analysis snapshot");
                    continue;
                }
            };
            let key = snapshot.store_key();
            if let Some(link) = &p.fleet
                && link.publish.put(key.clone(), bytes.clone())
            {
                self.metrics.fleet.publishes.with_label_values(&["superseded"]).inc();
            }
            // Written by `mailbox::write_to_store`, off the shard.
            p.local.put(key, bytes);
        }
        p.local.flushed(as_of);
    }
}

impl ShardObserver for LiveShard {
    fn observe(&mut self, facts: &[SpanFact]) {
        let outcome = self.analysis.observe(facts, &mut self.scratch);
        for run in facts.chunk_by(SpanFact::same_service) {
            let key = run[0].key();
            let service = self.metrics.service_labels(&key);
            // The batch may have ended a period that evicted operations.
            self.release_untracked_operations(&key);
            self.metrics
                .analysis
                .spans_analyzed
                .with_label_values(&service)
                .inc_by(run.len() as u64);
            if let Some(state) = self.analysis.service(&key) {
                let other = operations::other_name();
                for fact in run.iter().filter(|f| !f.kind.is_outbound()) {
                    let operation = if state.operations.is_tracked(&fact.operation) {
                        &fact.operation
                    } else {
                        &other
                    };
                    let (histogram, errors) = duration_series(
                        &mut self.durations,
                        &mut self.exported,
                        &self.metrics,
                        (&key, service),
                        operation,
                        &fact.revision,
                    );
                    histogram.observe(fact.duration_nanos() as f64 / 1e9);
                    if fact.status.is_error() {
                        errors.inc();
                    }
                }
                self.expire_revisions(&key, service);
                let Some(state) = self.analysis.service(&key) else {
                    continue;
                };
                for revision in state.timeline.entries() {
                    self.exported
                        .entry(key.clone())
                        .or_default()
                        .entry(revision.revision.clone())
                        .or_default();
                    let labels = [service[0], service[1], label_value(&revision.revision)];
                    self.metrics
                        .analysis
                        .revision_first_seen
                        .with_label_values(&labels)
                        .set(revision.first_seen_unix_nanos as f64 / 1e9);
                    self.metrics
                        .analysis
                        .revision_last_seen
                        .with_label_values(&labels)
                        .set(revision.last_seen_unix_nanos as f64 / 1e9);
                }
                self.metrics
                    .analysis
                    .operations_tracked
                    .with_label_values(&service)
                    .set(state.operations.tracked_len() as i64);
                self.metrics
                    .analysis
                    .outbound_peers
                    .with_label_values(&service)
                    .set(state.peers.known_len() as i64);
                let folded = state.operations.folded_spans();
                let exported = self.folded_exported.entry(key.clone()).or_insert(0);
                self.metrics
                    .analysis
                    .operations_folded
                    .with_label_values(&service)
                    .inc_by(folded - *exported);
                *exported = folded;
                let dropped = state.peers.calls_dropped;
                let exported = self.uncalled_exported.entry(key.clone()).or_insert(0);
                self.metrics
                    .analysis
                    .calls_without_caller
                    .with_label_values(&service)
                    .inc_by(dropped.saturating_sub(*exported));
                *exported = dropped;
                let untallied = state.requests_untallied();
                let exported = self.untallied_exported.entry(key.clone()).or_insert(0);
                self.metrics
                    .analysis
                    .requests_untallied
                    .with_label_values(&service)
                    .inc_by(untallied.saturating_sub(*exported));
                *exported = untallied;
            }
        }
        if outcome.too_late > 0 {
            self.metrics
                .analysis
                .spans_not_analyzed
                .with_label_values(&["too_late"])
                .inc_by(outcome.too_late);
        }
        if outcome.over_service_limit > 0 {
            self.metrics
                .analysis
                .spans_not_analyzed
                .with_label_values(&["max_services"])
                .inc_by(outcome.over_service_limit);
        }
    }

    fn tick(&mut self, elapsed: std::time::Duration) {
        if let Some(link) = self.persistence.as_ref().and_then(|p| p.fleet.as_ref()) {
            while let Ok(baselines) = link.adopt.try_recv() {
                self.analysis.adopt_fleet(baselines);
            }
        }
        self.analysis.tick(elapsed, &mut self.scratch);
        let evicting: Vec<ServiceKey> = self
            .analysis
            .services()
            .filter(|s| self.evictions_seen.get(&s.key).copied().unwrap_or(0) != s.operations.evictions())
            .map(|s| s.key.clone())
            .collect();
        for key in evicting {
            self.release_untracked_operations(&key);
        }
        self.since_peer_series_export += elapsed;
        if self.since_peer_series_export >= PEER_SERIES_EXPORT_INTERVAL {
            self.since_peer_series_export = std::time::Duration::ZERO;
            self.export_peer_series();
            self.export_scopes();
        }
        let due = self.persistence.as_mut().is_some_and(|p| {
            p.since_flush += elapsed;
            p.since_flush >= p.interval
        });
        if due {
            self.flush();
        }
    }

    fn finish(&mut self) {
        self.flush();
    }

    async fn hand_on(&mut self) {
        let (updates, metrics) = (&self.updates, &self.metrics);
        for update in self.scratch.drain(..) {
            let update = match updates.try_send(update) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(update)) => update,
                // The pipeline lives as long as the process; a send fails
                // only during shutdown, when nobody reads events any more.
                Err(mpsc::error::TrySendError::Closed(_)) => continue,
            };
            metrics.analysis.event_updates_waited.inc();
            let _ = updates.send(update).await;
        }
    }

    fn coverage(&self, service: &str, environment: Option<&str>) -> Option<crate::coverage::ServiceCoverage> {
        self.analysis.coverage(service, environment)
    }
}

/// A shard's end of its link to the fleet (`crate::fleet` holds the other
/// end): where its snapshots go, and where fresh fleet baselines come from.
pub(crate) struct ShardLink {
    /// Each service's snapshot JSON after each flush, latest only.
    pub publish: mailbox::SnapshotSender,
    /// Fresh fleet baselines of the shard's services.
    pub adopt: std::sync::mpsc::Receiver<Vec<Arc<crate::fleet::baseline::FleetBaseline>>>,
}

/// Where and how often a live shard writes its state.
pub(crate) struct Persistence {
    /// Snapshots for the embedded store (see [`mailbox::write_to_store`]).
    pub local: mailbox::SnapshotSender,
    pub interval: std::time::Duration,
    pub retention_nanos: u64,
    since_flush: std::time::Duration,
    /// Fleet mode: where snapshots are published and fleet baselines come from.
    fleet: Option<ShardLink>,
}

impl Persistence {
    pub(crate) fn new(
        local: mailbox::SnapshotSender,
        interval: std::time::Duration,
        retention: std::time::Duration,
    ) -> Persistence {
        Persistence {
            local,
            interval,
            retention_nanos: crate::clock::nanos(retention),
            since_flush: std::time::Duration::ZERO,
            fleet: None,
        }
    }

    /// Shares snapshots with the fleet through `link`.
    pub(crate) fn with_fleet(mut self, link: ShardLink) -> Persistence {
        self.fleet = Some(link);
        self
    }
}

/// The sending side, shared by all receivers.
#[derive(Clone)]
pub(crate) struct AnalysisQueue {
    shards: Arc<[mpsc::UnboundedSender<Vec<SpanFact>>]>,
    queued: Arc<AtomicUsize>,
    queued_bytes: Arc<AtomicUsize>,
    limit: usize,
    limit_bytes: usize,
    metrics: Arc<Metrics>,
}

/// The shard that owns `service`: stable across runs, so restored state
/// lands where the service's spans will.
pub(crate) fn shard_index(service: &str, shards: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    service.hash(&mut hasher);
    (hasher.finish() as usize) % shards.max(1)
}

/// The consuming side: one task per shard. Dropping every
/// [`AnalysisQueue`] and awaiting [`AnalysisWorkers::drain`] processes what
/// was admitted and stops.
pub(crate) struct AnalysisWorkers {
    tasks: Vec<JoinHandle<()>>,
}

impl AnalysisWorkers {
    pub(crate) async fn drain(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the shard workers; `observer` makes the state of each shard.
pub(crate) fn start<O: ShardObserver>(
    config: &AnalyzeConfig,
    metrics: Arc<Metrics>,
    mut observer: impl FnMut(usize) -> O,
) -> (AnalysisQueue, AnalysisWorkers, crate::coverage::CoverageBoard) {
    let queued = Arc::new(AtomicUsize::new(0));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    let mut askers = Vec::new();
    let mut tasks = Vec::new();
    for index in 0..config.shards.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        // Questions wait in a small queue; askers time out, never pile up.
        let (ask, questions) = mpsc::channel(16);
        askers.push(ask);
        tasks.push(tokio::spawn(run_shard(
            rx,
            questions,
            observer(index),
            queued.clone(),
            queued_bytes.clone(),
            metrics.clone(),
            config.pause,
        )));
    }
    let queue = AnalysisQueue {
        shards: senders.into(),
        queued,
        queued_bytes,
        limit: config.max_queued_spans,
        limit_bytes: config.max_queued_bytes,
        metrics,
    };
    let board = crate::coverage::CoverageBoard::new(askers, shard_index);
    (queue, AnalysisWorkers { tasks }, board)
}

impl AnalysisQueue {
    /// Admits a batch, or refuses all of it when the queue is full.
    pub(crate) fn try_submit(&self, facts: Vec<SpanFact>) -> Result<(), QueueFull> {
        let n = facts.len();
        if n == 0 {
            return Ok(());
        }
        let bytes = batch_bytes(&facts);
        let full = |queued: usize| QueueFull {
            queued,
            queued_bytes: self.queued_bytes.load(Ordering::Acquire),
            limit: self.limit,
            limit_bytes: self.limit_bytes,
        };
        let admitted = self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
            (queued + n <= self.limit).then_some(queued + n)
        });
        if let Err(queued) = admitted {
            return Err(full(queued));
        }
        let admitted = self.queued_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
            (queued + bytes <= self.limit_bytes).then_some(queued + bytes)
        });
        if admitted.is_err() {
            let queued = self.queued.fetch_sub(n, Ordering::AcqRel) - n;
            return Err(full(queued));
        }
        self.metrics.analysis.queue_spans.add(n as i64);
        self.metrics.analysis.queue_bytes.add(bytes as i64);
        if self.shards.len() == 1 {
            self.send(0, facts);
            return Ok(());
        }
        // The common sidecar case is one service per request: send the
        // batch whole when every fact lands on the same shard.
        let first = self.shard_of(&facts[0].service);
        if facts.iter().all(|f| self.shard_of(&f.service) == first) {
            self.send(first, facts);
            return Ok(());
        }
        let mut split: Vec<Vec<SpanFact>> = vec![Vec::new(); self.shards.len()];
        for fact in facts {
            split[self.shard_of(&fact.service)].push(fact);
        }
        // The split batches account for their own bytes from here on.
        let split_bytes: usize = split.iter().filter(|b| !b.is_empty()).map(|b| batch_bytes(b)).sum();
        self.adjust_bytes(bytes, split_bytes);
        for (index, batch) in split.into_iter().enumerate().filter(|(_, b)| !b.is_empty()) {
            self.send(index, batch);
        }
        Ok(())
    }

    fn adjust_bytes(&self, admitted: usize, actual: usize) {
        if actual >= admitted {
            self.queued_bytes.fetch_add(actual - admitted, Ordering::AcqRel);
            self.metrics.analysis.queue_bytes.add((actual - admitted) as i64);
        } else {
            self.queued_bytes.fetch_sub(admitted - actual, Ordering::AcqRel);
            self.metrics.analysis.queue_bytes.sub((admitted - actual) as i64);
        }
    }

    fn send(&self, shard: usize, facts: Vec<SpanFact>) {
        let n = facts.len();
        let bytes = batch_bytes(&facts);
        if self.shards[shard].send(facts).is_err() {
            // The worker is gone (shutdown): release the admission.
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.metrics.analysis.queue_spans.sub(n as i64);
            self.metrics.analysis.queue_bytes.sub(bytes as i64);
        }
    }

    fn shard_of(&self, service: &str) -> usize {
        shard_index(service, self.shards.len())
    }

    /// Spans admitted and not yet analysed.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

async fn run_shard<O: ShardObserver>(
    mut rx: mpsc::UnboundedReceiver<Vec<SpanFact>>,
    mut questions: mpsc::Receiver<crate::coverage::CoverageQuery>,
    mut observer: O,
    queued: Arc<AtomicUsize>,
    queued_bytes: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    pause: bool,
) {
    if pause {
        // Stalled: hold what arrives without analysing it, so the admission
        // bound fills up as it would behind a stuck detector.
        let mut held = Vec::new();
        while let Some(batch) = rx.recv().await {
            held.push(batch);
        }
        return;
    }
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = tokio::time::Instant::now();
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                observer.observe(&batch);
                observer.hand_on().await;
                let bytes = batch_bytes(&batch);
                queued.fetch_sub(batch.len(), Ordering::AcqRel);
                queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                metrics.analysis.queue_spans.sub(batch.len() as i64);
                metrics.analysis.queue_bytes.sub(bytes as i64);
            }
            now = ticker.tick() => {
                observer.tick(now - last_tick);
                observer.hand_on().await;
                last_tick = now;
            }
            Some(query) = questions.recv() => {
                let _ = query.reply.send(observer.coverage(&query.service, query.environment.as_deref()));
            }
        }
    }
    observer.finish();
    observer.hand_on().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{CodeLocation, SpanKind, Sym};

    struct Idle;
    impl ShardObserver for Idle {
        fn observe(&mut self, _facts: &[SpanFact]) {}
    }

    #[tokio::test]
    async fn a_full_update_queue_makes_the_shard_wait_and_loses_nothing() {
        let metrics = Arc::new(Metrics::new());
        let (tx, mut rx) = mpsc::channel(1);
        let settings = Arc::new(AnalysisSettings::from_config(&crate::config::Config::default()));
        let mut shard = LiveShard::new(settings, metrics.clone(), tx);
        shard.scratch.extend((0..3).map(|i| EventUpdate::SeenIn {
            id: format!("e{i}"),
            revision: "r2".into(),
            at_unix_nanos: 0,
        }));
        let handing_on = tokio::spawn(async move {
            shard.hand_on().await;
            shard
        });
        tokio::task::yield_now().await;
        assert!(!handing_on.is_finished(), "the shard waits while the queue is full");
        let mut ids = Vec::new();
        while ids.len() < 3 {
            match rx.recv().await {
                Some(EventUpdate::SeenIn { id, .. }) => ids.push(id),
                other => panic!("unexpected {other:?}"),
            }
        }
        let shard = handing_on.await.expect("no panic");
        assert_eq!(ids, ["e0", "e1", "e2"], "in order, none dropped");
        assert!(shard.scratch.is_empty());
        assert!(metrics.analysis.event_updates_waited.get() >= 1, "the wait is counted");
    }

    fn fact(service: &str, with_code: bool) -> SpanFact {
        SpanFact {
            trace_id: 1,
            span_id: 1,
            code: with_code.then(|| {
                Box::new(CodeLocation {
                    function: None,
                    filepath: None,
                    lineno: Some(1),
                })
            }),
            ..SpanFact::new(Sym::from(service), Sym::from("r"), Sym::from("op"), SpanKind::Server, 1, 2)
        }
    }

    #[test]
    fn per_peer_gauges_share_their_room_and_keep_the_highest_values() {
        let budget = SeriesBudget::new(10);
        let rows = |n: usize| (0..n).map(|i| (i, i as f64)).collect::<Vec<_>>();
        let mut first = rows(6);
        assert_eq!(fit_to_budget(&budget, 0, &mut first), 0);
        let mut second = rows(8);
        assert_eq!(fit_to_budget(&budget, 0, &mut second), 4, "the first shard holds 6 of the 10");
        let mut kept: Vec<usize> = second.iter().map(|r| r.0).collect();
        kept.sort_unstable();
        assert_eq!(kept, [4, 5, 6, 7], "the highest values are kept");
        // The first shard's next refresh holds fewer: the room goes back.
        let mut first = rows(1);
        assert_eq!(fit_to_budget(&budget, 6, &mut first), 0);
        let mut second = rows(8);
        assert_eq!(fit_to_budget(&budget, 4, &mut second), 0);
        assert_eq!(budget.used(), 9);
    }

    /// `(series, spans)` of `driftwatch_span_duration_seconds` in `text`
    /// whose labels include `filter`.
    fn duration_series_in(text: &str, filter: &str) -> (usize, u64) {
        let lines = text
            .lines()
            .filter(|l| l.starts_with("driftwatch_span_duration_seconds_count{") && l.contains(filter));
        lines.fold((0, 0), |(series, spans), line| {
            let count: u64 = line.rsplit(' ').next().and_then(|c| c.parse().ok()).expect("a count");
            (series + 1, spans + count)
        })
    }

    #[tokio::test]
    async fn operation_series_on_metrics_are_bounded_whatever_max_operations_allows_and_freed_with_their_revision() {
        let mut config = crate::config::Config::default();
        config.analyze.max_operations = 4 * crate::telemetry::metrics::MAX_OPERATION_SERIES;
        config.analyze.max_revisions = 2;
        let settings = Arc::new(AnalysisSettings::from_config(&config));
        let metrics = Arc::new(Metrics::new());
        let (tx, _rx) = mpsc::channel(1024);
        let mut shard = LiveShard::new(settings, metrics.clone(), tx);
        let max = crate::telemetry::metrics::MAX_OPERATION_SERIES;
        let operations = max + 100;
        let second = 1_000_000_000;
        let spans = |revision: &str, at: u64| -> Vec<SpanFact> {
            (0..operations)
                .map(|i| {
                    let operation = Sym::from(format!("GET /items/{i}").as_str());
                    SpanFact::new(Sym::from("checkout"), Sym::from(revision), operation, SpanKind::Server, at, at + 1_000_000)
                })
                .collect()
        };
        let t0 = 1_700_000_000 * second;
        shard.observe(&spans("r1", t0));
        shard.observe(&spans("r1", t0 + second));

        let text = metrics.render();
        let (own, own_spans) = duration_series_in(&text, "revision=\"r1\"");
        let (other, other_spans) = duration_series_in(&text, "operation=\"__other__\"");
        assert_eq!(own - other, max, "one series per operation up to the bound");
        assert_eq!((other, other_spans), (1, 200), "the rest count under __other__");
        assert_eq!(own_spans, 2 * operations as u64, "every span is counted once");
        assert_eq!(metrics.analysis.operation_series_folded.get(), 200);
        assert_eq!(metrics.analysis.operation_series.get(), max as i64);
        assert_eq!(shard.durations.len(), max + 1, "handles are kept only for series exported");

        // Two later revisions push r1 out of the timeline: its series go,
        // and their room serves the revision that comes next.
        shard.observe(&spans("r2", t0 + 10 * second));
        shard.observe(&spans("r3", t0 + 20 * second));
        shard.observe(&spans("r3", t0 + 21 * second));
        let text = metrics.render();
        assert_eq!(duration_series_in(&text, "revision=\"r1\"").0, 0, "{}", metrics.analysis.operation_series.get());
        let (r2, _) = duration_series_in(&text, "revision=\"r2\"");
        let (r3, _) = duration_series_in(&text, "revision=\"r3\"");
        assert_eq!(r2 + r3, max + 2, "the room r1 gave back went to later revisions");
        assert_eq!(metrics.operation_series.used(), max);
    }

    #[tokio::test]
    async fn per_peer_gauges_of_services_past_the_label_limit_hold_their_room_once_across_refreshes() {
        let settings = Arc::new(AnalysisSettings::from_config(&crate::config::Config::default()));
        let metrics = Arc::new(Metrics::new());
        let (tx, _rx) = mpsc::channel(1024);
        let mut shard = LiveShard::new(settings, metrics.clone(), tx);
        let second = 1_000_000_000;
        let t0 = 1_700_000_000 * second;
        let services = crate::telemetry::metrics::MAX_SERVICE_LABELS + 44;
        let fact = |service: usize, id: u64, parent: u64, kind: SpanKind, at: u64| SpanFact {
            trace_id: service as u128 + 1,
            span_id: id,
            parent_span_id: parent,
            peer: (kind == SpanKind::Client).then(|| Sym::from("db.internal:5432")),
            ..SpanFact::new(Sym::from(format!("svc-{service}").as_str()), Sym::from("r1"), Sym::from("GET /cart"), kind, at, at + 1_000_000)
        };
        // One request per service, calling the database once.
        let mut requests = Vec::new();
        for i in 0..services {
            let id = 2 * i as u64 + 1;
            requests.push(fact(i, id + 1, id, SpanKind::Client, t0));
            requests.push(fact(i, id, 0, SpanKind::Server, t0));
        }
        shard.observe(&requests);
        // A minute later every request's join window has closed.
        let later: Vec<SpanFact> = (0..services).map(|i| fact(i, 1_000_000 + i as u64, 0, SpanKind::Server, t0 + 60 * second)).collect();
        shard.observe(&later);
        let series = |text: &str| text.lines().filter(|l| l.starts_with("driftwatch_calls_per_request{")).count();
        for refresh in 0..4 {
            shard.export_peer_series();
            assert_eq!(metrics.peer_series[0].used(), services, "refresh {refresh}: one unit per row, held once");
            assert_eq!(
                series(&metrics.render()),
                crate::telemetry::metrics::MAX_SERVICE_LABELS + 1,
                "the services past the label limit share one __other__ series"
            );
        }
    }

    #[tokio::test]
    async fn operations_no_longer_tracked_leave_metrics_and_give_their_room_back() {
        let mut config = crate::config::Config::default();
        config.analyze.max_operations = 2;
        config.analyze.operation_idle = std::time::Duration::from_secs(30);
        let settings = Arc::new(AnalysisSettings::from_config(&config));
        let metrics = Arc::new(Metrics::new());
        let (tx, _rx) = mpsc::channel(1024);
        let mut shard = LiveShard::new(settings, metrics.clone(), tx);
        let second = 1_000_000_000;
        let span = |operation: &str, at: u64| {
            SpanFact::new(Sym::from("checkout"), Sym::from("r1"), Sym::from(operation), SpanKind::Server, at, at + 1_000_000)
        };
        let t0 = 1_700_000_000 * second;
        shard.observe(&[span("GET /a", t0), span("GET /b", t0)]);
        assert_eq!(metrics.analysis.operation_series.get(), 2);
        // /a and /b go quiet; /c and /d take their places once they have
        // been idle for operation_idle.
        for s in 1..=12 {
            let at = t0 + s * 10 * second;
            shard.observe(&[span("GET /c", at), span("GET /d", at)]);
        }
        let text = metrics.render();
        assert_eq!(duration_series_in(&text, "operation=\"GET /a\"").0, 0, "{text}");
        assert_eq!(duration_series_in(&text, "operation=\"GET /b\"").0, 0);
        assert_eq!(duration_series_in(&text, "operation=\"GET /c\"").0, 1);
        assert_eq!(duration_series_in(&text, "operation=\"GET /d\"").0, 1);
        assert_eq!(metrics.analysis.operation_series.get(), 2, "/a and /b gave their room back");
        assert_eq!(metrics.operation_series.used(), 2);
        assert_eq!(shard.durations.len(), 3, "/c, /d and __other__, which counted them while untracked");
    }

    #[tokio::test]
    async fn admission_is_bounded_in_bytes_as_well_as_in_spans() {
        let config = AnalyzeConfig {
            shards: 2,
            pause: true,
            max_queued_spans: 1_000_000,
            max_queued_bytes: 100 * fact_bytes(&fact("s", true)),
            ..AnalyzeConfig::default()
        };
        let metrics = Arc::new(Metrics::new());
        let (queue, _workers, _coverage) = start(&config, metrics.clone(), |_| Idle);
        let batch = |n: usize| (0..n).map(|i| fact(&format!("s{i}"), true)).collect::<Vec<_>>();
        queue.try_submit(batch(60)).expect("60 spans fit");
        let refused = queue.try_submit(batch(60)).expect_err("120 spans' bytes exceed the bound");
        assert_eq!(refused.queued, 60, "a refused batch leaves no admission behind");
        assert!(refused.queued_bytes <= config.max_queued_bytes);
        assert_eq!(queue.queued(), 60);
        assert_eq!(metrics.analysis.queue_bytes.get() as usize, refused.queued_bytes);
        // Facts without code locations are smaller, so more of them fit.
        queue
            .try_submit((0..30).map(|i| fact(&format!("s{i}"), false)).collect())
            .expect("small facts fit in what is left");
    }
}
