//! The event pipeline: where detect meets persist, attribute and alert.
//!
//! Detector updates arrive in order, through a bounded queue. The
//! pipeline's task owns the event log: it applies each update, writes it to
//! the store, and publishes a snapshot for readers (the API, the pages, the
//! alert dispatcher). A fired event is attributed to commits on a blocking
//! thread (git work is blocking); the task records the result and hands the
//! event to the alert outbox, so alerts carry their suspects. A resolution
//! goes to the outbox at once. Resolved events past `store.event_retention`
//! are retired hourly. A later revision that still shows a firing drift is recorded on
//! the same event (`seen_in`) and pages nobody; Alertmanager's periodic
//! refresh carries the note. In fleet mode an event joins the fleet's event of the same
//! fingerprint (and takes its id), a resolution leaves it, and the fleet's
//! store reports what other replicas resolved.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::alert::Dispatcher;
use crate::blocking::off_runtime;
use crate::attribute::{Attribution, Attributor};
use crate::detect::MAX_EVENTS;
use crate::detect::event::{
    Deploy, DriftEvent, EventKind, EventLog, EventState, EventUpdate, EventsView, PublishedLog, Resolution, Severity,
};
use crate::telemetry::metrics::Metrics;
use crate::store::EmbeddedStore;
use crate::fleet::store::{FleetStore, Leave};

/// What the pipeline feeds.
#[derive(Clone)]
pub(crate) struct Downstream {
    pub attributor: Option<Arc<Attributor>>,
    pub store: Option<Arc<EmbeddedStore>>,
    pub dispatcher: Option<Arc<Dispatcher>>,
    /// Fleet mode: events are shared through this store.
    pub fleet: Option<Arc<FleetStore>>,
    /// Where attribution (blocking work) hands async work back.
    pub runtime: tokio::runtime::Handle,
    /// Resolved events older than this are retired from the log and the
    /// store (`store.event_retention`); `None` keeps them.
    pub event_retention: Option<Duration>,
}

/// Fleet notices queued for the pipeline, at most; the fleet sync waits
/// when the queue is full.
pub(crate) const MAX_QUEUED_NOTICES: usize = 64;

/// The queue of fleet notices, bounded by [`MAX_QUEUED_NOTICES`].
pub(crate) fn notice_queue() -> (mpsc::Sender<FleetNotice>, mpsc::Receiver<FleetNotice>) {
    mpsc::channel(MAX_QUEUED_NOTICES)
}

/// How often resolved events past retention are retired.
const RETIRE_INTERVAL: Duration = Duration::from_secs(3600);

pub(crate) struct EventPipeline {
    view: EventsView,
    task: JoinHandle<()>,
}

impl EventPipeline {
    /// An event log holding `events` (as loaded from the store), ready for
    /// its owner.
    pub(crate) fn log_of(events: Vec<DriftEvent>) -> PublishedLog {
        let mut log = EventLog::new(MAX_EVENTS);
        for event in events {
            log.apply(EventUpdate::Fired(Box::new(event)));
        }
        PublishedLog::new(log)
    }

    /// Starts applying `updates` to `log`, which the pipeline's task owns
    /// from now on; `notices` carries what the fleet's store says other
    /// replicas did (nothing outside fleet mode).
    pub(crate) fn start(
        metrics: Arc<Metrics>,
        downstream: Downstream,
        mut log: PublishedLog,
        mut updates: mpsc::Receiver<EventUpdate>,
        mut notices: mpsc::Receiver<FleetNotice>,
    ) -> EventPipeline {
        update_gauges(log.log(), &metrics);
        let view = log.view();
        let task = tokio::spawn(async move {
            let mut attributions: JoinSet<(DriftEvent, Attribution)> = JoinSet::new();
            let (mut updates_open, mut notices_open) = (true, true);
            let mut retire = tokio::time::interval(RETIRE_INTERVAL);
            retire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Until both queues close: the fleet sync, which may still be
            // sending notices after the shards finished, never waits on a
            // queue nobody reads.
            while updates_open || notices_open {
                tokio::select! {
                    update = updates.recv(), if updates_open => match update {
                        Some(update) => apply_update(&downstream, &mut log, &metrics, &mut attributions, update).await,
                        None => updates_open = false,
                    },
                    notice = notices.recv(), if notices_open => match notice {
                        Some(notice) => apply_notice(&downstream, log.log_mut(), &metrics, notice).await,
                        None => notices_open = false,
                    },
                    Some(done) = attributions.join_next(), if !attributions.is_empty() => {
                        if let Ok((event, attribution)) = done {
                            attributed(&downstream, log.log_mut(), &metrics, event, &attribution).await;
                        }
                    }
                    _ = retire.tick(), if downstream.event_retention.is_some() => {
                        retire_events(&downstream, log.log_mut()).await;
                    }
                }
                update_gauges(log.log(), &metrics);
                metrics.events.updates_queued.set((updates.max_capacity() - updates.capacity()) as i64);
                log.publish();
            }
            while let Some(done) = attributions.join_next().await {
                if let Ok((event, attribution)) = done {
                    attributed(&downstream, log.log_mut(), &metrics, event, &attribution).await;
                }
            }
            update_gauges(log.log(), &metrics);
            log.publish();
        });
        EventPipeline { view, task }
    }

    /// What readers see of the events.
    pub(crate) fn view(&self) -> &EventsView {
        &self.view
    }

    /// Waits until every update sent before the senders closed is applied,
    /// attributed and queued for alerting.
    pub(crate) async fn drain(self) {
        let _ = self.task.await;
    }
}

/// What the fleet's store reports about other replicas' work.
#[derive(Debug)]
pub(crate) enum FleetNotice {
    /// The fleet's events, newest first: this replica's view follows them.
    Events(Vec<DriftEvent>),
    /// A drift this replica resolved for the fleet (its replicas all left
    /// or vanished): it sends the resolution.
    Resolved(Box<DriftEvent>),
}

async fn apply_notice(downstream: &Downstream, log: &mut EventLog, metrics: &Metrics, notice: FleetNotice) {
    match notice {
        FleetNotice::Events(events) => {
            let mut ended = Vec::new();
            {
                for mut event in events {
                    let Some(known) = log.get(&event.id) else {
                        log.upsert(event);
                        continue;
                    };
                    let changed = known.state != event.state
                        || known.resolved_at != event.resolved_at
                        || event.suspects.len() > known.suspects.len();
                    if !changed {
                        continue;
                    }
                    // The fleet's copy may predate this replica's
                    // attribution, which is still on its way there.
                    if event.suspects.is_empty() && !known.suspects.is_empty() {
                        event.suspects = known.suspects.clone();
                        event.owners = known.owners.clone();
                        event.attribution = known.attribution.clone();
                    }
                    if known.state == EventState::Firing && event.state == EventState::Resolved {
                        ended.push(event.clone());
                    }
                    log.upsert(event);
                }
            }
            // Another replica resolved these. Every replica queues the
            // resolution too, so it is sent even if that replica goes away
            // before delivering it; the fleet's claims send it once.
            for event in ended {
                persist(downstream, &event).await;
                suspect_gauge(metrics, &event, false);
                alert(downstream, &event).await;
            }
        }
        FleetNotice::Resolved(event) => {
            let event = *event;
            log.upsert(event.clone());
            persist(downstream, &event).await;
            tracing::info!(id = %event.id, kind = event.kind.as_str(), service = %event.service, "drift resolved in the fleet");
            suspect_gauge(metrics, &event, false);
            alert(downstream, &event).await;
        }
    }
}

/// Records a fired event. In fleet mode the event joins the fleet's firing
/// event of the same fingerprint and takes its id, so every replica names
/// the drift alike; it is returned even when another replica's copy was
/// already known here, so this replica's outbox also holds the alert (the
/// fleet's store decides who sends it).
async fn open(downstream: &Downstream, log: &mut EventLog, metrics: &Metrics, event: DriftEvent) -> Option<DriftEvent> {
    let Some(fleet) = &downstream.fleet else {
        return log.apply(EventUpdate::Fired(Box::new(event)));
    };
    let event = match fleet.open_event(&event).await {
        Ok(fleet_event) => fleet_event,
        Err(error) => {
            metrics.fleet.errors.with_label_values(&["open_event"]).inc();
            tracing::warn!(%error, id = %event.id, "cannot record the event in the fleet store; keeping it local");
            event
        }
    };
    log.upsert(event.clone());
    Some(event)
}

/// The id under which the log holds the detector's event `id`: the same,
/// or in fleet mode the fleet's firing event of its fingerprint.
fn logged_id(log: &EventLog, id: &str) -> Option<String> {
    if log.get(id).is_some() {
        return Some(id.to_owned());
    }
    log.firing_with_fingerprint(crate::detect::event::fingerprint_of(id))
        .map(|e| e.id.clone())
}

/// Where an event's revisions resolve: its service and the repository its
/// spans name.
struct Source {
    service: String,
    repository: Option<String>,
}

impl Source {
    fn of(log: &EventLog, id: &str) -> Option<Source> {
        let event = log.get(id)?;
        Some(Source {
            service: event.service.clone(),
            repository: event.repository.clone(),
        })
    }
}

/// `revision` of the event's service as a full SHA, when its repository
/// knows it (git work runs off the async threads).
async fn full_sha(downstream: &Downstream, source: Source, revision: String) -> String {
    let Some(attributor) = downstream.attributor.clone() else {
        return revision;
    };
    let Source { service, repository } = source;
    let short = revision.clone();
    tokio::task::spawn_blocking(move || attributor.full_revision(&service, repository.as_deref(), &revision))
        .await
        .ok()
        .flatten()
        .unwrap_or(short)
}

/// Records that a later revision still shows a firing drift.
async fn carry(downstream: &Downstream, log: &mut EventLog, id: &str, revision: String) -> Option<DriftEvent> {
    let logged = logged_id(log, id)?;
    let source = Source::of(log, &logged)?;
    let revision = full_sha(downstream, source, revision).await;
    log.apply(EventUpdate::SeenIn {
        id: logged,
        revision,
        at_unix_nanos: 0,
    })
}

/// The resolution with its revision as a full SHA.
async fn full_resolution(downstream: &Downstream, log: &EventLog, id: &str, mut resolution: Resolution) -> Resolution {
    let source = logged_id(log, id).and_then(|id| Source::of(log, &id));
    if let Some(source) = source
        && let Some(revision) = resolution.revision.take()
    {
        resolution.revision = Some(full_sha(downstream, source, revision).await);
    }
    resolution
}

/// Resolves an event this replica's detector saw end. In fleet mode the
/// fleet's event resolves only once no live replica sees it firing.
async fn close(
    downstream: &Downstream,
    log: &mut EventLog,
    metrics: &Metrics,
    id: &str,
    at: u64,
    resolution: Resolution,
) -> Option<DriftEvent> {
    let Some(fleet) = &downstream.fleet else {
        return log.apply(EventUpdate::Resolved {
            id: id.to_owned(),
            at_unix_nanos: at,
            resolution,
        });
    };
    // The detector knows its own id; the log holds the fleet's.
    let fingerprint = crate::detect::event::fingerprint_of(id);
    let known = log.firing_with_fingerprint(fingerprint).cloned();
    // Not in this replica's view (evicted, or the view is behind): the
    // fleet's store still knows it, and this replica must let go of it.
    let known = match known {
        Some(event) => Some(event),
        None => fleet.firing_event(fingerprint).await.unwrap_or_else(|error| {
            metrics.fleet.errors.with_label_values(&["leave_event"]).inc();
            tracing::warn!(%error, fingerprint, "cannot look up the fleet's event");
            None
        }),
    };
    let mut event = known?;
    event.state = EventState::Resolved;
    event.resolved_at = Some(crate::clock::Timestamp::from_unix_nanos(at));
    event.resolution = Some(resolution);
    match fleet.leave_event(&event).await {
        Ok(Leave::Resolved(event)) => {
            log.upsert((*event).clone());
            Some(*event)
        }
        Ok(Leave::StillFiring) => {
            tracing::info!(id = %event.id, "drift ended here; other replicas still see it");
            None
        }
        // Queued here too, so the resolution survives the resolver going
        // away; the fleet's claims send it once.
        Ok(Leave::AlreadyResolved) | Ok(Leave::Unknown) => {
            log.upsert(event.clone());
            Some(event)
        }
        Err(error) => {
            // This replica's hold lapses with the lease; a sweep then
            // resolves the drift unless another replica still sees it.
            metrics.fleet.errors.with_label_values(&["leave_event"]).inc();
            tracing::warn!(%error, id = %event.id, "cannot record the resolution in the fleet store; the fleet resolves it once this replica's hold lapses");
            None
        }
    }
}

fn update_gauges(log: &EventLog, metrics: &Metrics) {
    for kind in EventKind::ALL {
        metrics
            .events
            .drifts_firing
            .with_label_values(&[kind.as_str()])
            .set(log.firing(kind) as i64);
    }
}

async fn persist(downstream: &Downstream, event: &DriftEvent) {
    let Some(store) = downstream.store.clone() else { return };
    let event = event.clone();
    off_runtime("persisting an event", move || {
        if let Err(error) = store.put_events(std::slice::from_ref(&event)) {
            tracing::error!(%error, id = %event.id, "cannot persist an event");
        }
    })
    .await;
}

/// Shares a new version of an event (its suspects) with the fleet.
fn share(downstream: &Downstream, event: &DriftEvent) {
    let Some(fleet) = downstream.fleet.clone() else { return };
    let event = event.clone();
    downstream.runtime.spawn(async move {
        if let Err(error) = fleet.update_event(&event).await {
            tracing::warn!(%error, id = %event.id, "cannot share the event's attribution with the fleet");
        }
    });
}

/// Queues a deploy marker for the sinks that announce deploys, with its
/// revisions as full SHAs.
async fn announce(downstream: &Downstream, mut deploy: Deploy) {
    let Some(dispatcher) = downstream.dispatcher.clone() else {
        return;
    };
    let source = || Source {
        service: deploy.service.clone(),
        repository: deploy.repository.clone(),
    };
    deploy.revision = full_sha(downstream, source(), deploy.revision.clone()).await;
    if let Some(previous) = deploy.previous_revision.clone() {
        deploy.previous_revision = Some(full_sha(downstream, source(), previous).await);
    }
    tracing::info!(service = %deploy.service, revision = %deploy.revision, "new revision serving");
    off_runtime("queueing a deploy marker", move || {
        if let Err(error) = dispatcher.announce(&deploy) {
            tracing::error!(%error, id = %deploy.id, "cannot queue a deploy marker");
        }
    })
    .await;
}

async fn alert(downstream: &Downstream, event: &DriftEvent) {
    let Some(dispatcher) = downstream.dispatcher.clone() else { return };
    let event = event.clone();
    off_runtime("queueing alerts", move || {
        if let Err(error) = dispatcher.notify(&event) {
            tracing::error!(%error, id = %event.id, "cannot queue alerts");
        }
    })
    .await;
}

/// Applies one detector update.
async fn apply_update(
    downstream: &Downstream,
    log: &mut PublishedLog,
    metrics: &Arc<Metrics>,
    attributions: &mut JoinSet<(DriftEvent, Attribution)>,
    update: EventUpdate,
) {
    match update {
        EventUpdate::Deployed(deploy) => announce(downstream, *deploy).await,
        EventUpdate::Fired(event) => {
            let refire = log
                .log()
                .list()
                .iter()
                .any(|e| e.fingerprint == event.fingerprint && e.state == EventState::Resolved);
            let Some(event) = open(downstream, log.log_mut(), metrics, *event).await else {
                return;
            };
            if refire {
                metrics.events.drift_refires.with_label_values(&[event.kind.as_str()]).inc();
            }
            persist(downstream, &event).await;
            tracing::warn!(id = %event.id, kind = event.kind.as_str(), service = %event.service,
                operation = event.operation.as_deref().unwrap_or(""), peer = event.peer.as_deref().unwrap_or(""),
                revision = %event.revision, "drift detected");
            let severity = if event.severity == Severity::Critical {
                "critical"
            } else {
                "warning"
            };
            metrics.events.drift_events.with_label_values(&[event.kind.as_str(), severity]).inc();
            match downstream.attributor.clone() {
                // Git work is blocking: it runs off the async threads, and
                // the result comes back to this task (`attributed`).
                Some(attributor) => {
                    let metrics = metrics.clone();
                    attributions.spawn_blocking(move || {
                        let attribution = attribute(&attributor, &event, &metrics);
                        (event, attribution)
                    });
                }
                None => alert(downstream, &event).await,
            }
        }
        EventUpdate::SeenIn { id, revision, .. } => {
            let Some(event) = carry(downstream, log.log_mut(), &id, revision).await else {
                return;
            };
            persist(downstream, &event).await;
            share(downstream, &event);
            tracing::warn!(id = %event.id, kind = event.kind.as_str(), service = %event.service,
                seen_in = ?event.seen_in, "drift still present in a later revision");
        }
        EventUpdate::Resolved {
            id,
            at_unix_nanos,
            resolution,
        } => {
            let resolution = full_resolution(downstream, log.log(), &id, resolution).await;
            let Some(event) = close(downstream, log.log_mut(), metrics, &id, at_unix_nanos, resolution).await else {
                return;
            };
            persist(downstream, &event).await;
            let reason = event.resolution.as_ref().map_or("unknown", |r| r.reason.as_str());
            metrics
                .events
                .drift_resolutions
                .with_label_values(&[event.kind.as_str(), reason])
                .inc();
            tracing::info!(id = %event.id, kind = event.kind.as_str(), service = %event.service, reason, "drift resolved");
            suspect_gauge(metrics, &event, false);
            alert(downstream, &event).await;
        }
    }
}

/// Records a fired event's attribution (suspects, the note, full SHAs) and
/// queues its alerts, so they carry the suspects. An event the log no
/// longer holds is alerted as it fired.
async fn attributed(downstream: &Downstream, log: &mut EventLog, metrics: &Metrics, event: DriftEvent, attribution: &Attribution) {
    let event = log.set_attribution(&event.id, attribution).unwrap_or(event);
    persist(downstream, &event).await;
    share(downstream, &event);
    suspect_gauge(metrics, &event, event.state == EventState::Firing);
    alert(downstream, &event).await;
}

/// Drops resolved events detected longer than `store.event_retention` ago,
/// from the log and from the store.
async fn retire_events(downstream: &Downstream, log: &mut EventLog) {
    let Some(retention) = downstream.event_retention else { return };
    let cutoff = crate::clock::unix_nanos().saturating_sub(crate::detect::nanos(retention));
    let retired = log.retire_resolved(cutoff);
    if retired.is_empty() {
        return;
    }
    let Some(store) = downstream.store.clone() else { return };
    off_runtime("deleting retired events", move || match store.delete_events(&retired) {
        Ok(()) => tracing::info!(events = retired.len(), "retired resolved events past store.event_retention"),
        Err(error) => tracing::error!(%error, "cannot delete retired events"),
    })
    .await;
}

/// `driftwatch_suspect_info` for the event's top suspect: set while the
/// drift fires, removed when it resolves.
fn suspect_gauge(metrics: &Metrics, event: &DriftEvent, firing: bool) {
    let Some(top) = event.suspects.first() else { return };
    let tool = top.ai.as_ref().map_or("none", |a| a.tool.as_str());
    let commit = &top.commit[..top.commit.len().min(12)];
    let [service, environment] = metrics.labels_of(&event.service, event.environment.as_deref());
    let labels = [
        service,
        environment,
        event.kind.as_str(),
        event.id.as_str(),
        commit,
        tool,
    ];
    if firing {
        metrics.events.suspect_info.with_label_values(&labels).set(1);
    } else {
        let _ = metrics.events.suspect_info.remove_label_values(&labels);
    }
}

fn attribute(attributor: &Attributor, event: &DriftEvent, metrics: &Metrics) -> Attribution {
    let (attribution, outcome) = match attributor.attribute(event) {
        Ok(attribution) => {
            if attribution.unresolved.is_some() {
                metrics
                    .events
                    .revisions_unresolved
                    .with_label_values(&metrics.labels_of(&event.service, event.environment.as_deref()))
                    .inc();
            }
            let outcome = if attribution.shallow {
                "shallow_history"
            } else if attribution.unresolved.is_some() {
                "unresolved_revision"
            } else if !attribution.suspects.is_empty() {
                "suspects"
            } else {
                "no_suspects"
            };
            tracing::info!(id = %event.id, suspects = attribution.suspects.len(), note = attribution.note.as_deref().unwrap_or(""), "attributed");
            (attribution, outcome)
        }
        Err(error) => {
            tracing::warn!(id = %event.id, %error, "attribution failed");
            (
                Attribution {
                    note: Some(format!("attribution failed: {error}")),
                    ..Default::default()
                },
                "error",
            )
        }
    };
    metrics.events.attributions.with_label_values(&[outcome]).inc();
    attribution
}
