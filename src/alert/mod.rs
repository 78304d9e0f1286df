//! Alert: tells on-call. Every firing and resolving event becomes one
//! outbox entry per sink that routes it, written durably to the store
//! before any delivery is tried. A dispatcher delivers due entries in
//! groups (one notification per deploy and sink, not one per operation),
//! retries with exponential backoff and jitter, honours `Retry-After`, and
//! gives up — counted as `dead` — at `max_age` (or after `max_attempts`
//! when set), so a sink outage shorter than `max_age` loses nothing.
//! Delivery is at least once; receivers deduplicate on the fingerprint
//! (Alertmanager labels, PagerDuty `dedup_key`, the webhook's event id and
//! `X-Driftwatch-Delivery`).

pub(crate) mod sinks;

pub use sinks::sign;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use crate::blocking::off_runtime;
use crate::clock::WallClock;
use crate::text::error_chain;
use crate::config::AlertsConfig;
use crate::detect::event::EventsView;
use crate::detect::event::{Deploy, DriftEvent, EventKind, EventState};
use crate::telemetry::metrics::Metrics;
use crate::extract::ServiceKey;
use crate::rng::Rng;
use crate::fleet::store::{Claim, DeliveryKey, FleetStore};
use crate::store::{EmbeddedStore, Notice, Notification, OutboxEntry, StoreError};
use sinks::{Sink, SinkKind, deploy_request, drift_request, sinks};

/// Alerts of one deploy (of a service in one environment), kind and status
/// travel together; a deploy marker travels with its own sink's only.
type GroupKey = (String, ServiceKey, Option<EventKind>, Notification, String);

fn group_key(entry: &OutboxEntry) -> GroupKey {
    (
        entry.sink.clone(),
        entry.notice.service_key(),
        entry.notice.event().map(|e| e.kind),
        entry.notice.notification(),
        entry.notice.revision().to_owned(),
    )
}

/// What a delivery attempt came to.
enum Delivery {
    Delivered,
    /// Retry, not before the given delay when the receiver said so.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The receiver refused the request as such: retrying cannot help.
    Rejected {
        error: String,
    },
}

/// Longest the dispatcher goes without reading the outbox: a safety net for
/// entries it was not told about (written back by a store that recovered).
const IDLE_SCAN: Duration = Duration::from_secs(5);

pub(crate) struct Dispatcher {
    store: Arc<EmbeddedStore>,
    sinks: Vec<Sink>,
    config: AlertsConfig,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    events: EventsView,
    base_url: String,
    in_flight: Mutex<HashSet<u64>>,
    limits: HashMap<String, Arc<Semaphore>>,
    wake: Notify,
    /// Counts releases of in-flight entries: a scan of the outbox that a
    /// release overlapped may list entries already settled, so it is read
    /// again instead of dispatched.
    released: AtomicU64,
    rng: Mutex<Rng>,
    /// The outbox's times (creation, next attempt) are read on this.
    clock: WallClock,
    /// Fleet mode: the database that decides which replica delivers.
    fleet: Option<(Arc<FleetStore>, Duration)>,
}

impl Dispatcher {
    pub(crate) fn new(
        config: &AlertsConfig,
        store: Arc<EmbeddedStore>,
        metrics: Arc<Metrics>,
        events: EventsView,
        base_url: String,
    ) -> Result<Dispatcher, reqwest::Error> {
        let client = crate::tls::http_client()
            .timeout(config.request_timeout)
            .user_agent(concat!("driftwatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let sinks = sinks(config);
        let limits = sinks
            .iter()
            .map(|s| (s.name.clone(), Arc::new(Semaphore::new(config.concurrency))))
            .collect();
        Ok(Dispatcher {
            store,
            sinks,
            config: config.clone(),
            client,
            metrics,
            events,
            base_url,
            in_flight: Mutex::new(HashSet::new()),
            limits,
            wake: Notify::new(),
            released: AtomicU64::new(0),
            rng: Mutex::new(Rng::new(crate::clock::unix_millis())),
            clock: WallClock::default(),
            fleet: None,
        })
    }

    /// Keeps the schedule on `clock` instead of the system's.
    #[cfg(test)]
    fn with_clock(mut self, clock: WallClock) -> Dispatcher {
        self.clock = clock;
        self
    }

    /// Delivers only what this replica wins in `fleet` (see `FleetStore`):
    /// replicas that detect the same drift alert once.
    pub(crate) fn with_fleet(mut self, fleet: Arc<FleetStore>, lease: Duration) -> Dispatcher {
        self.fleet = Some((fleet, lease));
        self
    }

    /// Writes one outbox entry per routed sink for the event's current
    /// state, durably, before returning.
    pub(crate) fn notify(&self, event: &DriftEvent) -> Result<usize, StoreError> {
        self.notify_sinks(event, 0, |_| true)
    }

    /// Writes one outbox entry per sink that announces deploys of the
    /// service, durably, before returning.
    pub(crate) fn announce(&self, deploy: &Deploy) -> Result<usize, StoreError> {
        let sinks: Vec<&Sink> = self.sinks.iter().filter(|s| s.accepts_deploy(deploy)).collect();
        let notice = Notice::Deploy { deploy: deploy.clone() };
        self.enqueue(sinks, &deploy.id, notice, 0)
    }

    fn notify_sinks(&self, event: &DriftEvent, round: u64, filter: impl Fn(&Sink) -> bool) -> Result<usize, StoreError> {
        let sinks: Vec<&Sink> = self.sinks.iter().filter(|s| s.accepts(event) && filter(s)).collect();
        let notice = Notice::Drift {
            status: event.state,
            event: event.clone(),
        };
        self.enqueue(sinks, &event.fingerprint, notice, round)
    }

    fn enqueue(&self, sinks: Vec<&Sink>, fingerprint: &str, notice: Notice, round: u64) -> Result<usize, StoreError> {
        let now = self.clock.unix_millis();
        let mut entries: Vec<OutboxEntry> = sinks
            .into_iter()
            .map(|s| OutboxEntry {
                id: 0,
                sink: s.name.clone(),
                fingerprint: fingerprint.to_owned(),
                notice: notice.clone(),
                attempts: 0,
                created_at_ms: now,
                next_attempt_ms: now,
                last_error: None,
                round,
            })
            .collect();
        if entries.is_empty() {
            return Ok(0);
        }
        self.store.enqueue(&mut entries)?;
        self.update_pending();
        self.wake.notify_one();
        Ok(entries.len())
    }

    fn update_pending(&self) {
        if let Ok(n) = self.store.outbox_len() {
            self.metrics.alert.outbox_pending.set(n as i64);
        }
    }

    /// Delivers until `stop` turns true. The outbox is read when something
    /// changed (an alert was queued, a delivery settled) or when the next
    /// entry falls due, not on a fixed beat; at most [`IDLE_SCAN`] passes
    /// without a read.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut last_refresh = tokio::time::Instant::now();
        self.blocking(Dispatcher::update_pending).await;
        loop {
            if *stop.borrow() {
                break;
            }
            if last_refresh.elapsed() >= self.config.repeat_interval {
                last_refresh = tokio::time::Instant::now();
                self.blocking(Dispatcher::refresh_alertmanager).await;
            }
            // A read of the whole outbox: off the async threads. A delivery
            // that settles meanwhile may have removed entries the read still
            // lists (and no longer marks them in flight): read again.
            let store = self.store.clone();
            let released = self.released.load(Ordering::SeqCst);
            let scan = off_runtime("the alert outbox read", move || store.outbox()).await;
            if self.released.load(Ordering::SeqCst) != released {
                continue;
            }
            let next_due = match scan {
                Some(Ok(entries)) => self.dispatch_due(entries),
                Some(Err(error)) => {
                    tracing::error!(%error, "cannot read the alert outbox");
                    None
                }
                None => None,
            };
            let until_due = next_due.map_or(IDLE_SCAN, |due| Duration::from_millis(due.saturating_sub(self.clock.unix_millis())));
            let until_refresh = self.config.repeat_interval.saturating_sub(last_refresh.elapsed());
            let wait = until_due.min(until_refresh).min(IDLE_SCAN).max(Duration::from_millis(1));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Runs `work` — outbox writes, which are redb commits that sync to
    /// disk — on the blocking pool and waits for it, so a slow disk never
    /// stalls the async threads.
    async fn blocking(self: &Arc<Self>, work: impl FnOnce(&Dispatcher) + Send + 'static) {
        let this = self.clone();
        off_runtime("an alert outbox write", move || work(&this)).await;
    }

    /// Re-sends firing alerts to Alertmanager, which expires alerts that
    /// are not repeated.
    fn refresh_alertmanager(&self) {
        let firing: Vec<DriftEvent> = {
            let log = self.events.current();
            log.list().iter().filter(|e| e.state == EventState::Firing).map(|e| (**e).clone()).collect()
        };
        let round = self.clock.unix_millis() / (self.config.repeat_interval.as_millis() as u64).max(1) + 1;
        for event in firing {
            if let Err(error) = self.notify_sinks(&event, round, |s| matches!(s.kind, SinkKind::Alertmanager { .. })) {
                tracing::error!(%error, "cannot queue an Alertmanager refresh");
            }
        }
    }

    /// Starts delivering the groups that are due; returns when the next of
    /// the others falls due (a group's wait ends, a retry's backoff ends).
    /// Groups waiting for a sink's concurrency slot are woken when a
    /// delivery settles.
    fn dispatch_due(self: &Arc<Self>, entries: Vec<OutboxEntry>) -> Option<u64> {
        let now = self.clock.unix_millis();
        let mut next_due: Option<u64> = None;
        let mut due_at = |at: u64| next_due = Some(next_due.map_or(at, |n| n.min(at)));
        let group_wait = self.config.group_wait.as_millis() as u64;
        let mut groups: HashMap<GroupKey, Vec<OutboxEntry>> = HashMap::new();
        {
            let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for entry in entries.into_iter().filter(|e| !in_flight.contains(&e.id)) {
                groups.entry(group_key(&entry)).or_default().push(entry);
            }
        }
        for (_, group) in groups {
            let oldest = group.iter().map(|e| e.created_at_ms).min().unwrap_or(now);
            let fresh = group.iter().all(|e| e.attempts == 0);
            if fresh && oldest + group_wait > now {
                due_at(oldest + group_wait);
                continue;
            }
            let (due, later): (Vec<OutboxEntry>, Vec<OutboxEntry>) =
                group.into_iter().partition(|e| e.next_attempt_ms <= now);
            if let Some(at) = later.iter().map(|e| e.next_attempt_ms).min() {
                due_at(at);
            }
            if due.is_empty() {
                continue;
            }
            let Some(sink) = self.sinks.iter().find(|s| s.name == due[0].sink).cloned() else {
                // The sink was removed from the configuration: its entries
                // can never be delivered.
                tracing::warn!(sink = %due[0].sink, entries = due.len(), "dropping alerts for a sink no longer configured");
                self.mark_in_flight(&due);
                let this = self.clone();
                tokio::spawn(async move { this.blocking(move |d| d.finish(&due, "dead")).await });
                continue;
            };
            let Some(permit) = self.limits.get(&sink.name).and_then(|s| s.clone().try_acquire_owned().ok()) else {
                continue;
            };
            self.mark_in_flight(&due);
            let this = self.clone();
            tokio::spawn(async move {
                let (due, keys) = this.arbitrate(&sink, due).await;
                if !due.is_empty() {
                    let outcome = this.deliver(&sink, &due).await;
                    if matches!(outcome, Delivery::Delivered) {
                        this.record_delivered(&keys).await;
                    }
                    this.blocking(move |d| d.settle(&sink, due, outcome)).await;
                }
                drop(permit);
            });
        }
        next_due
    }

    /// In fleet mode, claims the entries in the database and keeps those
    /// this replica won; entries another replica delivered leave the
    /// outbox (`deduplicated`), entries another live replica holds wait.
    /// When the database is unreachable for longer than the lease, entries
    /// are delivered anyway: a duplicate page beats a missing one.
    async fn arbitrate(self: &Arc<Self>, sink: &Sink, entries: Vec<OutboxEntry>) -> (Vec<OutboxEntry>, Vec<DeliveryKey>) {
        let Some((fleet, lease)) = &self.fleet else {
            return (entries, Vec::new());
        };
        let keys: Vec<DeliveryKey> = entries
            .iter()
            .map(|e| DeliveryKey {
                event_id: e.notice.id().to_owned(),
                status: e.notice.notification(),
                sink: e.sink.clone(),
                round: i64::try_from(e.round).unwrap_or(i64::MAX),
            })
            .collect();
        let now = self.clock.unix_millis();
        let lease_ms = lease.as_millis() as u64;
        let claims = match fleet.claim(&keys).await {
            Ok(claims) => claims,
            Err(error) => {
                self.metrics.fleet.errors.with_label_values(&["claim"]).inc();
                let (overdue, waiting): (Vec<OutboxEntry>, Vec<OutboxEntry>) = entries
                    .into_iter()
                    .partition(|e| now.saturating_sub(e.created_at_ms) > lease_ms);
                if !waiting.is_empty() {
                    tracing::warn!(sink = %sink.name, %error, "cannot arbitrate alert delivery in the fleet store; waiting");
                    let error = error.to_string();
                    self.blocking(move |d| d.postpone(waiting, now + 1_000, Some(error))).await;
                }
                if !overdue.is_empty() {
                    tracing::error!(sink = %sink.name, %error, alerts = overdue.len(),
                        "the fleet store stayed unreachable for longer than store.fleet_lease; delivering without arbitration");
                }
                return (overdue, Vec::new());
            }
        };
        let (mut won, mut won_keys, mut done, mut held) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((entry, key), claim) in entries.into_iter().zip(keys).zip(claims) {
            match claim {
                Claim::Won => {
                    won.push(entry);
                    won_keys.push(key);
                }
                Claim::Delivered => done.push(entry),
                Claim::Held => held.push(entry),
            }
        }
        if !done.is_empty() {
            tracing::info!(sink = %sink.name, alerts = done.len(), "alerts already delivered by another replica");
            self.blocking(move |d| d.finish(&done, "deduplicated")).await;
        }
        if !held.is_empty() {
            self.blocking(move |d| d.postpone(held, now + lease_ms / 2, None)).await;
        }
        (won, won_keys)
    }

    /// Puts entries back for later without counting an attempt.
    fn postpone(&self, entries: Vec<OutboxEntry>, at_ms: u64, error: Option<String>) {
        let updated: Vec<OutboxEntry> = entries
            .into_iter()
            .map(|mut e| {
                e.next_attempt_ms = at_ms;
                if error.is_some() {
                    e.last_error = error.clone();
                }
                e
            })
            .collect();
        if let Err(error) = self.store.update_outbox(&updated) {
            tracing::error!(%error, "cannot record a postponed delivery");
        }
        self.release(&updated);
    }

    async fn record_delivered(&self, keys: &[DeliveryKey]) {
        let Some((fleet, _)) = &self.fleet else { return };
        if keys.is_empty() {
            return;
        }
        if let Err(error) = fleet.delivered(keys).await {
            // The lease still holds the claim; should it lapse first,
            // another replica may deliver again (at least once).
            self.metrics.fleet.errors.with_label_values(&["delivered"]).inc();
            tracing::warn!(%error, "cannot record a delivery in the fleet store");
        }
    }

    async fn deliver(&self, sink: &Sink, entries: &[OutboxEntry]) -> Delivery {
        let delivery_id = entries.iter().map(|e| e.id.to_string()).collect::<Vec<_>>().join(",");
        let (url, value, secret, bearer) = match &entries[0].notice {
            Notice::Deploy { deploy } => match deploy_request(sink, deploy, &self.base_url) {
                Some((url, value, secret)) => (url, value, secret, None),
                None => {
                    return Delivery::Rejected {
                        error: format!("{} does not announce deploys", sink.label()),
                    };
                }
            },
            Notice::Drift { status, .. } => {
                let events: Vec<&DriftEvent> = entries.iter().filter_map(|e| e.notice.event()).collect();
                if self.holds_open(sink, *status, &events) {
                    return Delivery::Delivered;
                }
                drift_request(sink, *status, &events, &self.base_url)
            }
        };
        self.post(sink, &url, &value, secret, bearer, &delivery_id).await
    }

    /// Whether a resolution must not be sent: a PagerDuty incident is one
    /// per deploy (its dedup key), so resolving it while another drift of
    /// the same deploy still fires would close that one too. The incident
    /// stays open, and the last drift's resolution closes it.
    fn holds_open(&self, sink: &Sink, status: EventState, events: &[&DriftEvent]) -> bool {
        matches!(sink.kind, SinkKind::PagerDuty { .. })
            && status == EventState::Resolved
            && events.first().is_some_and(|first| self.group_still_firing(first))
    }

    /// Posts one notification and reads what the receiver made of it.
    async fn post(
        &self,
        sink: &Sink,
        url: &str,
        value: &serde_json::Value,
        secret: Option<&String>,
        bearer: Option<&str>,
        delivery_id: &str,
    ) -> Delivery {
        // Never an empty body in place of one that could not be written:
        // the entry is refused, logged and counted as dead.
        let body = match serde_json::to_vec(value) {
            Ok(body) => body,
            Err(error) => {
                return Delivery::Rejected {
                    error: format!("cannot encode the {} payload: {error}", sink.label()),
                };
            }
        };
        let signature = secret.map(|key| sign(key, &body));
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-driftwatch-delivery", delivery_id)
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-driftwatch-signature", signature);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Delivery::Delivered,
            Ok(response) => {
                let code = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let text: String = response.text().await.unwrap_or_default().chars().take(300).collect();
                let error = format!("{} answered {code}: {text}", sink.name);
                if code.as_u16() == 429 || code.as_u16() == 408 || code.is_server_error() {
                    Delivery::Retry { error, retry_after }
                } else {
                    Delivery::Rejected { error }
                }
            }
            // The URL is a secret for Slack (and may carry credentials for
            // any sink): the error names the sink, never its address.
            Err(error) => Delivery::Retry {
                error: format!("{} unreachable: {}", sink.name, error_chain(&error.without_url())),
                retry_after: None,
            },
        }
    }

    fn group_still_firing(&self, event: &DriftEvent) -> bool {
        let log = self.events.current();
        log.list().iter().any(|e| {
            e.state == EventState::Firing
                && e.service == event.service
                && e.environment == event.environment
                && e.kind == event.kind
                && e.revision == event.revision
                && e.id != event.id
        })
    }

    /// Records the outcome of a delivery in the outbox and the metrics.
    fn settle(&self, sink: &Sink, mut entries: Vec<OutboxEntry>, outcome: Delivery) {
        let now = self.clock.unix_millis();
        match outcome {
            Delivery::Delivered => {
                tracing::info!(sink = %sink.name, alerts = entries.len(), status = entries[0].notice.notification().as_str(), "alerts delivered");
                self.finish(&entries, "delivered");
            }
            Delivery::Rejected { error } => {
                tracing::error!(sink = %sink.name, %error, alerts = entries.len(), "alerts rejected by the receiver; giving up");
                self.finish(&entries, "dead");
            }
            Delivery::Retry { error, retry_after } => {
                let max_age = self.config.max_age.as_millis() as u64;
                let (dead, retry): (Vec<OutboxEntry>, Vec<OutboxEntry>) = entries.drain(..).partition(|e| {
                    self.config.max_attempts.is_some_and(|max| e.attempts + 1 >= max)
                        || now.saturating_sub(e.created_at_ms) > max_age
                });
                if !dead.is_empty() {
                    tracing::error!(sink = %sink.name, %error, alerts = dead.len(), "alerts undeliverable after retries; giving up");
                    self.finish(&dead, "dead");
                }
                if !retry.is_empty() {
                    let attempts = retry.iter().map(|e| e.attempts).max().unwrap_or(0) + 1;
                    let delay = self.backoff(attempts).max(retry_after.unwrap_or_default());
                    tracing::warn!(sink = %sink.name, %error, attempt = attempts, retry_in = ?delay, "alert delivery failed; will retry");
                    let updated: Vec<OutboxEntry> = retry
                        .into_iter()
                        .map(|mut e| {
                            e.attempts += 1;
                            e.next_attempt_ms = now + delay.as_millis() as u64;
                            e.last_error = Some(error.clone());
                            e
                        })
                        .collect();
                    if let Err(error) = self.store.update_outbox(&updated) {
                        tracing::error!(%error, "cannot record a delivery attempt");
                    }
                    self.metrics
                        .alert
                        .deliveries
                        .with_label_values(&[sink.label(), "retrying"])
                        .inc_by(updated.len() as u64);
                    self.release(&updated);
                }
            }
        }
    }

    /// Removes entries from the outbox with a final outcome.
    fn finish(&self, entries: &[OutboxEntry], outcome: &str) {
        let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
        if let Err(error) = self.store.remove_outbox(&ids) {
            tracing::error!(%error, "cannot remove settled alerts from the outbox");
        }
        let label = entries
            .first()
            .and_then(|e| self.sinks.iter().find(|s| s.name == e.sink))
            .map_or("unknown", Sink::label);
        self.metrics
            .alert
            .deliveries
            .with_label_values(&[label, outcome])
            .inc_by(entries.len() as u64);
        self.update_pending();
        self.release(entries);
    }

    /// Marks entries as being delivered: no scan dispatches them again
    /// until they are released.
    fn mark_in_flight(&self, entries: &[OutboxEntry]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.extend(entries.iter().map(|e| e.id));
    }

    /// Lets settled entries be dispatched again, and wakes the dispatcher:
    /// a sink's concurrency slot or a retry time may have freed up.
    fn release(&self, entries: &[OutboxEntry]) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for entry in entries {
                in_flight.remove(&entry.id);
            }
        }
        self.released.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Exponential backoff with ±50% jitter, capped.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.config.initial_backoff.as_secs_f64() * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        let capped = base.min(self.config.max_backoff.as_secs_f64());
        let jitter = 0.5 + self.rng.lock().unwrap_or_else(|e| e.into_inner()).uniform();
        Duration::from_secs_f64((capped * jitter).min(self.config.max_backoff.as_secs_f64()))
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(3600)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(crate::clock::now())
            .unwrap_or_default()
            .min(Duration::from_secs(3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pagerduty_incident_stays_open_while_another_drift_of_its_deploy_fires() {
        use crate::detect::event::{EventLog, PublishedLog, example_event};
        let config: AlertsConfig = toml::from_str(
            "[[pagerduty]]\nrouting_key = \"rk\"\nurl = \"http://127.0.0.1:9/v2/enqueue\"\n\
             [[slack]]\nwebhook_url = \"http://127.0.0.1:9/hook\"\n",
        )
        .expect("config");
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
        // Two latency drifts of one deploy (service s, revision r): one
        // PagerDuty incident between them.
        let first = example_event("e1", 1);
        let mut second = example_event("e2", 2);
        second.fingerprint = "f2".into();
        second.operation = Some("GET /other".into());
        let mut log = PublishedLog::new(EventLog::new(10));
        log.log_mut().upsert(first.clone());
        log.log_mut().upsert(second.clone());
        log.publish();
        let dispatcher =
            Dispatcher::new(&config, store, Arc::new(Metrics::new()), log.view(), "http://dw".into()).expect("dispatcher");
        let pagerduty = dispatcher.sinks.iter().find(|s| s.label() == "pagerduty").expect("pagerduty");
        let slack = dispatcher.sinks.iter().find(|s| s.label() == "slack").expect("slack");

        let mut resolved = first.clone();
        resolved.state = EventState::Resolved;
        assert!(dispatcher.holds_open(pagerduty, EventState::Resolved, &[&resolved]), "the other drift still fires");
        assert!(!dispatcher.holds_open(slack, EventState::Resolved, &[&resolved]), "Slack hears of each drift");
        assert!(!dispatcher.holds_open(pagerduty, EventState::Firing, &[&first]), "a trigger is never held");

        // A firing drift of another revision or kind is another incident.
        let mut later = example_event("e3", 3);
        (later.fingerprint, later.revision) = ("f3".into(), "r2".into());
        let mut peer = example_event("e4", 4);
        (peer.fingerprint, peer.kind) = ("f4".into(), EventKind::NewOutboundPeer);
        second.state = EventState::Resolved;
        log.log_mut().upsert(second);
        log.log_mut().upsert(later);
        log.log_mut().upsert(peer);
        log.publish();
        assert!(
            !dispatcher.holds_open(pagerduty, EventState::Resolved, &[&resolved]),
            "the deploy's last drift resolved: the incident closes"
        );
    }

    /// Waits (on the system's time: a connection is being refused) until
    /// no delivery is in flight and the outbox satisfies `done`; returns it.
    async fn settled(dispatcher: &Dispatcher, what: &str, done: impl Fn(&[OutboxEntry]) -> bool) -> Vec<OutboxEntry> {
        for _ in 0..500 {
            let outbox = dispatcher.store.outbox().expect("outbox");
            if done(&outbox) && dispatcher.in_flight.lock().expect("lock").is_empty() {
                return outbox;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: {:?}", dispatcher.store.outbox());
    }

    /// The outbox's only entry once it has been attempted `attempts` times.
    async fn attempted(dispatcher: &Dispatcher, attempts: u32) -> OutboxEntry {
        let outbox = settled(dispatcher, &format!("no attempt {attempts}"), |o| matches!(o, [e] if e.attempts == attempts)).await;
        outbox[0].clone()
    }

    #[tokio::test]
    async fn a_group_waits_then_a_failed_delivery_is_retried_after_its_backoff_until_max_age() {
        // A port nothing listens on: every delivery fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let config: AlertsConfig = toml::from_str(&format!(
            "group_wait = \"30s\"\ninitial_backoff = \"1m\"\nmax_backoff = \"10m\"\nmax_age = \"1h\"\n\
             [[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\n"
        ))
        .expect("config");
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
        let log = crate::detect::event::PublishedLog::new(crate::detect::event::EventLog::new(10));
        let t0 = 1_800_000_000_000;
        let clock = WallClock::manual(t0);
        let dispatcher = Arc::new(
            Dispatcher::new(&config, store, Arc::new(Metrics::new()), log.view(), "http://dw".into())
                .expect("dispatcher")
                .with_clock(clock.clone()),
        );
        let outbox = || dispatcher.store.outbox().expect("outbox");
        assert_eq!(dispatcher.notify(&crate::detect::event::example_event("e1", 1)).expect("queued"), 1);

        // A fresh group waits group_wait, on the dispatcher's clock.
        assert_eq!(dispatcher.dispatch_due(outbox()), Some(t0 + 30_000));
        clock.set(t0 + 29_999);
        assert_eq!(dispatcher.dispatch_due(outbox()), Some(t0 + 30_000));
        assert!(dispatcher.in_flight.lock().expect("lock").is_empty(), "nothing sent before group_wait");
        clock.set(t0 + 30_000);
        assert_eq!(dispatcher.dispatch_due(outbox()), None, "sent: nothing else is due");
        let first = attempted(&dispatcher, 1).await;
        assert!(first.last_error.as_deref().is_some_and(|e| e.contains("unreachable")), "{first:?}");
        // initial_backoff with ±50% jitter.
        let wait = first.next_attempt_ms - (t0 + 30_000);
        assert!((30_000..=90_000).contains(&wait), "{wait} ms");

        // Not a millisecond early; then the second backoff, twice as long.
        clock.set(first.next_attempt_ms - 1);
        assert_eq!(dispatcher.dispatch_due(outbox()), Some(first.next_attempt_ms));
        clock.set(first.next_attempt_ms);
        assert_eq!(dispatcher.dispatch_due(outbox()), None);
        let second = attempted(&dispatcher, 2).await;
        let wait = second.next_attempt_ms - first.next_attempt_ms;
        assert!((60_000..=180_000).contains(&wait), "{wait} ms");

        // A Retry-After longer than the backoff is honoured.
        clock.set(second.next_attempt_ms);
        let sink = dispatcher.sinks[0].clone();
        dispatcher.settle(&sink, outbox(), Delivery::Retry { error: "503".into(), retry_after: Some(Duration::from_secs(900)) });
        assert_eq!(outbox()[0].next_attempt_ms, second.next_attempt_ms + 900_000);

        // Past max_age, the next failure gives up: the entry is dead.
        let created = first.created_at_ms;
        clock.set(created + 3_600_001);
        assert_eq!(dispatcher.dispatch_due(outbox()), None);
        settled(&dispatcher, "the entry still in the outbox", <[OutboxEntry]>::is_empty).await;
        let deliveries = |outcome: &str| dispatcher.metrics.alert.deliveries.with_label_values(&["webhook", outcome]).get();
        assert_eq!((deliveries("retrying"), deliveries("dead")), (3, 1));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
