//! Fleet mode: this replica's link to the PostgreSQL store it shares with
//! the other replicas of its services.
//!
//! A background task, every `store.flush_interval` (and more often for the
//! leases): publishes the snapshots the shards flushed; reads the other
//! replicas' snapshots and hands each shard the merged `FleetBaseline` of
//! its services; renews this replica's hold on the drifts it sees firing
//! and resolves those no live replica holds; brings the fleet's events into
//! this replica's API; and applies retention. It stops once the shards have
//! finished and their last snapshots are published.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::analyze::ShardLink;
use crate::analyze::fleet::FleetBaseline;
use crate::analyze::snapshot::{SNAPSHOT_VERSION, ServiceSnapshot};
use crate::analyze::window::WindowLayout;
use crate::detect::MAX_EVENTS;
use crate::extract::ServiceKey;
use crate::expose::metrics::Metrics;
use crate::pipeline::FleetNotice;
use crate::store::fleet::{FleetError, FleetStore};

pub struct FleetSync {
    store: Arc<FleetStore>,
    layout: WindowLayout,
    shards: Vec<std::sync::mpsc::Sender<Vec<Arc<FleetBaseline>>>>,
    published: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    notices: mpsc::UnboundedSender<FleetNotice>,
    metrics: Arc<Metrics>,
    interval: Duration,
    lease: Duration,
    event_retention: Duration,
    baseline_retention: Duration,
    /// Fingerprints of the drifts this replica's restored detectors hold,
    /// while the database has not yet heard of it (it was away at start).
    rejoin: Option<Vec<String>>,
}

/// How often retention runs.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

impl FleetSync {
    /// A link for each of `shards` shards, and the task's side.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<FleetStore>,
        layout: WindowLayout,
        shards: usize,
        notices: mpsc::UnboundedSender<FleetNotice>,
        metrics: Arc<Metrics>,
        config: &crate::config::StoreConfig,
    ) -> (FleetSync, Vec<ShardLink>) {
        let (publish, published) = mpsc::unbounded_channel();
        let mut senders = Vec::with_capacity(shards);
        let mut links = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = std::sync::mpsc::channel();
            senders.push(tx);
            links.push(ShardLink {
                publish: publish.clone(),
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
        };
        (sync, links)
    }

    /// Holds `firing` in the fleet once the database answers: it was away
    /// when the replica started.
    pub fn rejoin_later(mut self, firing: Vec<String>) -> FleetSync {
        self.rejoin = Some(firing);
        self
    }

    /// The other replicas' view of every service, merged.
    pub async fn baselines(store: &FleetStore, layout: WindowLayout) -> Result<Vec<Arc<FleetBaseline>>, FleetError> {
        let mut by_service: HashMap<ServiceKey, Vec<ServiceSnapshot>> = HashMap::new();
        for (service, body) in store.other_snapshots().await? {
            match serde_json::from_slice::<ServiceSnapshot>(&body) {
                Ok(snapshot) if snapshot.version <= SNAPSHOT_VERSION => by_service.entry(snapshot.key()).or_default().push(snapshot),
                Ok(snapshot) => tracing::warn!(%service, version = snapshot.version,
                    "a replica runs a newer driftwatch; its snapshot is skipped until this one is upgraded"),
                Err(error) => tracing::warn!(%service, %error, "an unreadable snapshot in the fleet store is skipped"),
            }
        }
        Ok(by_service
            .into_iter()
            .map(|(service, snapshots)| Arc::new(FleetBaseline::merge(&service, &snapshots, layout)))
            .collect())
    }

    /// Hands each shard the baselines of its services: at start, before
    /// the shard sees its first span.
    pub fn seed(&self, baselines: Vec<Arc<FleetBaseline>>) {
        for (shard, mine) in self.split(baselines).into_iter().enumerate() {
            if !mine.is_empty() {
                let _ = self.shards[shard].send(mine);
            }
        }
    }

    /// The baselines of each shard's services, by shard.
    pub fn split(&self, baselines: Vec<Arc<FleetBaseline>>) -> Vec<Vec<Arc<FleetBaseline>>> {
        let shards = self.shards.len().max(1);
        let mut split = vec![Vec::new(); shards];
        for baseline in baselines {
            split[crate::analyze::shard_index(&baseline.key.service, shards)].push(baseline);
        }
        split
    }

    pub async fn run(mut self) {
        let beat = self.interval.min(self.lease / 3).max(Duration::from_millis(200));
        let mut ticker = tokio::time::interval(beat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: HashMap<String, Vec<u8>> = HashMap::new();
        let mut last_refresh = tokio::time::Instant::now();
        let mut last_expire: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                message = self.published.recv() => match message {
                    Some((service, body)) => {
                        pending.insert(service, body);
                        continue;
                    }
                    None => {
                        // The shards are done: their final snapshots are in.
                        self.publish(&mut pending).await;
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
            if last_expire.is_none_or(|t| t.elapsed() >= EXPIRE_EVERY) {
                last_expire = Some(tokio::time::Instant::now());
                self.expire().await;
            }
        }
    }

    /// Holds the restored drifts once the database answers, and reports
    /// whether it does.
    async fn join(&mut self) {
        if let Some(firing) = &self.rejoin {
            match self.store.rejoin(firing).await {
                Ok(()) => self.rejoin = None,
                Err(error) => {
                    self.metrics.fleet_errors.with_label_values(&["rejoin"]).inc();
                    tracing::debug!(%error, "the fleet's database is still away");
                }
            }
        }
        self.metrics.fleet_degraded.set(i64::from(self.store.health().degraded()));
    }

    async fn publish(&self, pending: &mut HashMap<String, Vec<u8>>) {
        for (service, body) in pending.drain() {
            if let Err(error) = self.store.put_snapshot(&service, &body).await {
                self.metrics.fleet_errors.with_label_values(&["publish"]).inc();
                tracing::warn!(%service, %error, "cannot publish the analysis snapshot to the fleet");
            }
        }
    }

    async fn refresh(&self) {
        match FleetSync::baselines(&self.store, self.layout).await {
            Ok(baselines) => self.seed(baselines),
            Err(error) => {
                self.metrics.fleet_errors.with_label_values(&["refresh"]).inc();
                tracing::warn!(%error, "cannot read the fleet's baselines");
            }
        }
    }

    async fn sweep(&self) {
        let now = crate::detect::event::rfc3339(now_nanos());
        match self.store.sweep(&now).await {
            Ok(resolved) => {
                for event in resolved {
                    let _ = self.notices.send(FleetNotice::Resolved(Box::new(event)));
                }
            }
            Err(error) => {
                self.metrics.fleet_errors.with_label_values(&["sweep"]).inc();
                tracing::warn!(%error, "cannot renew this replica's drifts in the fleet store");
            }
        }
        match self.store.events(MAX_EVENTS as i64).await {
            Ok(events) => {
                let _ = self.notices.send(FleetNotice::Events(events));
            }
            Err(error) => {
                self.metrics.fleet_errors.with_label_values(&["refresh"]).inc();
                tracing::warn!(%error, "cannot read the fleet's events");
            }
        }
    }

    async fn expire(&self) {
        match self.store.expire(self.event_retention, self.baseline_retention).await {
            Ok((events, snapshots)) if events + snapshots > 0 => {
                tracing::info!(events, snapshots, "fleet store retention applied");
            }
            Ok(_) => {}
            Err(error) => {
                self.metrics.fleet_errors.with_label_values(&["expire"]).inc();
                tracing::warn!(%error, "cannot apply retention in the fleet store");
            }
        }
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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
