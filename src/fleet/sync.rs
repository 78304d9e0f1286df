//! Fleet mode: this replica's link to the PostgreSQL store it shares with
//! the other replicas of its services.
//!
//! A background task, every `store.flush_interval` (and more often for the
//! leases): publishes the snapshots the shards flushed, when more than the
//! clock changed; reads the aggregates of its services that changed and
//! hands each shard the other replicas' merged `FleetBaseline`; renews this
//! replica's hold on the drifts it sees firing and resolves those no live
//! replica holds; brings the events that changed into this replica's API;
//! and takes its turn at retention. It stops once the shards have finished
//! and their last snapshots are published.
//!
//! Its cost per refresh is one aggregate and one own snapshot per service
//! this replica runs, whatever the number of replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::analyze::ShardLink;
use crate::analyze::mailbox::SnapshotMailbox;
use crate::fleet::baseline::FleetBaseline;
use crate::fleet::aggregate::{Aggregate, AggregateError, apply, decode_snapshot};
use crate::analyze::snapshot::ServiceSnapshot;
use crate::analyze::window::WindowLayout;
use crate::detect::MAX_EVENTS;
use crate::telemetry::metrics::Metrics;
use crate::pipeline::FleetNotice;
use crate::fleet::store::{FleetError, FleetStore};

pub struct FleetSync {
    store: Arc<FleetStore>,
    layout: WindowLayout,
    shards: Vec<std::sync::mpsc::Sender<Vec<Arc<FleetBaseline>>>>,
    published: SnapshotMailbox,
    notices: mpsc::Sender<FleetNotice>,
    metrics: Arc<Metrics>,
    interval: Duration,
    lease: Duration,
    event_retention: Duration,
    baseline_retention: Duration,
    /// Fingerprints of the drifts this replica's restored detectors hold,
    /// while the database has not yet heard of it (it was away at start).
    rejoin: Option<Vec<String>>,
    /// The aggregate version each service's baseline was last read at.
    versions: HashMap<String, i64>,
    /// What this replica last published of each service, its clock aside:
    /// a snapshot equal to it is not written again.
    last_published: HashMap<String, ServiceSnapshot>,
    /// The database's time of the latest event change read.
    events_seen: Option<f64>,
    /// `FleetIo::totals` as last reported to the metrics.
    io_reported: [u64; 4],
}

/// How often retention and upkeep run, on one replica of the fleet.
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);

/// The baselines read from the fleet's aggregates: (service, aggregate
/// version, the other replicas merged, replicas in the aggregate).
pub(crate) type Baselines = Vec<(String, i64, Arc<FleetBaseline>, u32)>;

impl FleetSync {
    /// A link for each of `shards` shards, and the task's side.
    pub(crate) fn new(
        store: Arc<FleetStore>,
        layout: WindowLayout,
        shards: usize,
        notices: mpsc::Sender<FleetNotice>,
        metrics: Arc<Metrics>,
        config: &crate::config::StoreConfig,
    ) -> (FleetSync, Vec<ShardLink>) {
        let published = SnapshotMailbox::new();
        let mut senders = Vec::with_capacity(shards);
        let mut links = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = std::sync::mpsc::channel();
            senders.push(tx);
            links.push(ShardLink {
                publish: published.sender(),
                adopt: rx,
            });
        }
        let sync = FleetSync {
            store,
            layout,
            shards: senders,
            published,
            notices,
            metrics,
            interval: config.flush_interval,
            lease: config.fleet_lease,
            event_retention: config.event_retention,
            baseline_retention: config.baseline_retention,
            rejoin: None,
            versions: HashMap::new(),
            last_published: HashMap::new(),
            events_seen: None,
            io_reported: [0; 4],
        };
        (sync, links)
    }

    /// Holds `firing` in the fleet once the database answers: it was away
    /// when the replica started.
    pub(crate) fn rejoin_later(mut self, firing: Vec<String>) -> FleetSync {
        self.rejoin = Some(firing);
        self
    }

    /// The other replicas' view of `services` (every service when `None`)
    /// whose aggregate changed since `known`: one aggregate per service,
    /// this replica's own snapshot taken back out.
    pub async fn baselines(
        store: &FleetStore,
        layout: WindowLayout,
        services: Option<&[String]>,
        known: &[(String, i64)],
    ) -> Result<Baselines, FleetError> {
        let mut baselines = Vec::new();
        for row in store.aggregates(services, known).await? {
            match others_of(&row.body, row.own.as_deref()) {
                Ok((others, replicas)) => {
                    let mut baseline = FleetBaseline::merge(&others.key(), std::slice::from_ref(&others), layout);
                    baseline.replicas = replicas.saturating_sub(u32::from(row.own.is_some())) as usize;
                    baselines.push((row.service, row.version, Arc::new(baseline), replicas));
                }
                Err(error) => tracing::warn!(service = %row.service, %error, "the fleet's aggregate of this service is skipped"),
            }
        }
        Ok(baselines)
    }

    /// Hands each shard the baselines of its services: at start, before
    /// the shard sees its first span.
    pub(crate) fn seed(&mut self, baselines: Baselines) {
        let mut split = vec![Vec::new(); self.shards.len().max(1)];
        for (service, version, baseline, replicas) in baselines {
            let labels = self.metrics.service_labels(&baseline.key);
            self.metrics.fleet.replicas.with_label_values(&labels).set(i64::from(replicas));
            self.versions.insert(service, version);
            let shards = split.len();
            split[crate::analyze::shard_index(&baseline.key.service, shards)].push(baseline);
        }
        for (shard, mine) in split.into_iter().enumerate() {
            if !mine.is_empty() {
                let _ = self.shards[shard].send(mine);
            }
        }
    }

    pub(crate) async fn run(mut self) {
        let beat = self.interval.min(self.lease / 3).max(Duration::from_millis(200));
        let mut ticker = tokio::time::interval(beat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: HashMap<String, Vec<u8>> = HashMap::new();
        let mut last_refresh = tokio::time::Instant::now();
        let mut last_maintain: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                message = self.published.take() => match message {
                    Some(snapshots) => {
                        pending.extend(snapshots);
                        continue;
                    }
                    None => {
                        // The shards are done: their final snapshots are in.
                        self.publish(&mut pending).await;
                        self.report_io();
                        break;
                    }
                },
                _ = ticker.tick() => {}
            }
            self.join().await;
            self.publish(&mut pending).await;
            if last_refresh.elapsed() >= self.interval {
                last_refresh = tokio::time::Instant::now();
                self.refresh().await;
            }
            self.sweep().await;
            // Every replica asks; one per hour gets the turn.
            if last_maintain.is_none_or(|t| t.elapsed() >= self.lease) {
                last_maintain = Some(tokio::time::Instant::now());
                self.maintain().await;
            }
            self.report_io();
        }
    }

    /// Holds the restored drifts once the database answers, and reports
    /// whether it does.
    async fn join(&mut self) {
        if let Some(firing) = &self.rejoin {
            match self.store.rejoin(firing).await {
                Ok(()) => self.rejoin = None,
                Err(error) => {
                    self.metrics.fleet.errors.with_label_values(&["rejoin"]).inc();
                    tracing::debug!(%error, "the fleet's database is still away");
                }
            }
        }
        self.store.health().observe(&self.metrics.fleet);
    }

    /// Publishes the snapshots that changed since they were last published.
    /// The clock (the watermark, which advances while a service is idle)
    /// is not a change: an idle replica writes nothing.
    async fn publish(&mut self, pending: &mut HashMap<String, Vec<u8>>) {
        for (service, body) in pending.drain() {
            let content = serde_json::from_slice::<ServiceSnapshot>(&body).ok().map(|mut s| {
                s.watermark = 0;
                s
            });
            if content.is_some() && self.last_published.get(&service) == content.as_ref() {
                self.metrics.fleet.publishes.with_label_values(&["unchanged"]).inc();
                continue;
            }
            let started = std::time::Instant::now();
            let published = self.store.publish(&service, &body, &combine).await;
            self.metrics
                .fleet
                .duration
                .with_label_values(&["publish"])
                .observe(started.elapsed().as_secs_f64());
            match published {
                Ok(()) => {
                    self.metrics.fleet.publishes.with_label_values(&["written"]).inc();
                    match content {
                        Some(content) => self.last_published.insert(service, content),
                        None => self.last_published.remove(&service),
                    };
                }
                Err(error) => {
                    self.metrics.fleet.errors.with_label_values(&["publish"]).inc();
                    tracing::warn!(%service, %error, "cannot publish the analysis snapshot to the fleet");
                }
            }
        }
    }

    /// Reads the aggregates of this replica's services that changed since
    /// the last read: one row per service, whatever the number of replicas.
    async fn refresh(&mut self) {
        // The services it runs or has read before; a replica that has seen
        // neither (it serves no traffic yet, but answers verdicts for the
        // fleet) reads every service once.
        let mut services: Vec<String> = self.last_published.keys().chain(self.versions.keys()).cloned().collect();
        services.sort();
        services.dedup();
        let known: Vec<(String, i64)> = self.versions.iter().map(|(s, v)| (s.clone(), *v)).collect();
        let started = std::time::Instant::now();
        let narrowed = (!services.is_empty()).then_some(services.as_slice());
        let read = FleetSync::baselines(&self.store, self.layout, narrowed, &known).await;
        self.metrics
            .fleet
            .duration
            .with_label_values(&["refresh"])
            .observe(started.elapsed().as_secs_f64());
        match read {
            Ok(baselines) => self.seed(baselines),
            Err(error) => {
                self.metrics.fleet.errors.with_label_values(&["refresh"]).inc();
                tracing::warn!(%error, "cannot read the fleet's baselines");
            }
        }
    }

    async fn sweep(&mut self) {
        let now = crate::clock::Timestamp::from_unix_nanos(now_nanos());
        let started = std::time::Instant::now();
        match self.store.sweep(now).await {
            Ok(resolved) => {
                for event in resolved {
                    let _ = self.notices.send(FleetNotice::Resolved(Box::new(event))).await;
                }
            }
            Err(error) => {
                self.metrics.fleet.errors.with_label_values(&["sweep"]).inc();
                tracing::warn!(%error, "cannot renew this replica's drifts in the fleet store");
            }
        }
        self.metrics
            .fleet
            .duration
            .with_label_values(&["sweep"])
            .observe(started.elapsed().as_secs_f64());
        // Only what changed since the last read, from a lease before it: a
        // transaction that took its time to commit is still caught.
        let since = self.events_seen.map(|t| t - self.lease.as_secs_f64());
        let started = std::time::Instant::now();
        match self.store.events_changed(since, MAX_EVENTS as i64).await {
            Ok((events, latest)) => {
                if latest.is_some() {
                    self.events_seen = latest.into_iter().chain(self.events_seen).reduce(f64::max);
                }
                if !events.is_empty() {
                    let _ = self.notices.send(FleetNotice::Events(events)).await;
                }
            }
            Err(error) => {
                self.metrics.fleet.errors.with_label_values(&["refresh"]).inc();
                tracing::warn!(%error, "cannot read the fleet's events");
            }
        }
        self.metrics
            .fleet
            .duration
            .with_label_values(&["events"])
            .observe(started.elapsed().as_secs_f64());
    }

    async fn maintain(&self) {
        let started = std::time::Instant::now();
        match self
            .store
            .maintain(MAINTAIN_EVERY, self.event_retention, self.baseline_retention, &combine)
            .await
        {
            Ok(Some(done)) => {
                self.metrics
                    .fleet
                    .duration
                    .with_label_values(&["maintain"])
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(
                    events = done.events,
                    snapshots = done.snapshots,
                    aggregates = done.aggregates,
                    "fleet store upkeep done"
                );
            }
            Ok(None) => {}
            Err(error) => {
                self.metrics.fleet.errors.with_label_values(&["maintain"]).inc();
                tracing::warn!(%error, "cannot apply retention in the fleet store");
            }
        }
    }

    /// Moves what the store read and wrote since the last report into the
    /// metrics.
    fn report_io(&mut self) {
        let totals = self.store.io().totals();
        let counters = [
            (&self.metrics.fleet.rows, "read"),
            (&self.metrics.fleet.bytes, "read"),
            (&self.metrics.fleet.rows, "written"),
            (&self.metrics.fleet.bytes, "written"),
        ];
        for ((counter, direction), (now, before)) in counters.into_iter().zip(totals.iter().zip(self.io_reported)) {
            counter.with_label_values(&[direction]).inc_by(now.saturating_sub(before));
        }
        self.io_reported = totals;
    }
}

/// The aggregate `body` without this replica's snapshot `own`, and the
/// replicas the aggregate holds.
fn others_of(body: &[u8], own: Option<&[u8]>) -> Result<(ServiceSnapshot, u32), AggregateError> {
    let mut sum = Aggregate::decode(body)?;
    let replicas = sum.replicas;
    if let Some(own) = own.map(decode_snapshot).transpose()? {
        sum.subtract(&own)?;
    }
    Ok((sum.to_snapshot(), replicas))
}

/// [`crate::fleet::store::Combine`] for analysis snapshots.
pub fn combine(service: &str, aggregate: Option<&[u8]>, minus: &[&[u8]], plus: &[&[u8]]) -> Result<Vec<u8>, String> {
    let (name, environment) = match service.split_once('\u{1f}') {
        Some((name, environment)) => (name, Some(environment)),
        None => (service, None),
    };
    apply((name, environment), aggregate, minus, plus).map_err(|e| e.to_string())
}

fn now_nanos() -> u64 {
    crate::clock::unix_nanos()
}

/// This replica's name: `store.replica`, else the host name (the pod name
/// in Kubernetes), else the process id.
pub fn replica_name(configured: Option<&str>) -> String {
    if let Some(name) = configured.filter(|n| !n.trim().is_empty()) {
        return name.trim().to_owned();
    }
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}
