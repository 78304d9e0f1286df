//! The event pipeline: where detect meets persist, attribute and alert.
//!
//! Detector updates arrive in order. Each is applied to the shared event
//! log and written to the store; a fired event is attributed to commits in
//! the background (git work is blocking) and then handed to the alert
//! outbox, so alerts carry their suspects; a resolution goes to the outbox
//! at once. A later revision that still shows a firing drift is recorded on
//! the same event (`seen_in`) and pages nobody; Alertmanager's periodic
//! refresh carries the note. In fleet mode an event joins the fleet's event of the same
//! fingerprint (and takes its id), a resolution leaves it, and the fleet's
//! store reports what other replicas resolved.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alert::Dispatcher;
use crate::attribute::{Attribution, Attributor};
use crate::detect::event::{Deploy, DriftEvent, EventKind, EventLog, EventState, EventUpdate, Resolution, Severity};
use crate::detect::{MAX_EVENTS, SharedEventLog};
use crate::telemetry::metrics::Metrics;
use crate::store::EmbeddedStore;
use crate::fleet::store::{FleetStore, Leave};

/// What the pipeline feeds.
#[derive(Clone)]
pub struct Downstream {
    pub attributor: Option<Arc<Attributor>>,
    pub store: Option<Arc<EmbeddedStore>>,
    pub dispatcher: Option<Arc<Dispatcher>>,
    /// Fleet mode: events are shared through this store.
    pub fleet: Option<Arc<FleetStore>>,
    /// Where attribution (blocking work) hands async work back.
    pub runtime: tokio::runtime::Handle,
}

pub struct EventPipeline {
    pub log: SharedEventLog,
    task: JoinHandle<()>,
}

impl EventPipeline {
    /// An event log holding `events` (as loaded from the store).
    pub fn log_of(events: Vec<DriftEvent>) -> SharedEventLog {
        let mut log = EventLog::new(MAX_EVENTS);
        for event in events {
            log.apply(EventUpdate::Fired(Box::new(event)));
        }
        Arc::new(std::sync::RwLock::new(log))
    }

    /// Starts applying updates to `log`.
    pub fn start(
        metrics: Arc<Metrics>,
        downstream: Downstream,
        log: SharedEventLog,
    ) -> (EventPipeline, mpsc::UnboundedSender<EventUpdate>) {
        let (tx, rx) = mpsc::unbounded_channel::<EventUpdate>();
        let (_, notices) = mpsc::unbounded_channel();
        (EventPipeline::start_with(metrics, downstream, log, rx, notices), tx)
    }

    /// Like `start`, in fleet mode: `notices` carries what the fleet's
    /// store says other replicas did.
    pub fn start_with(
        metrics: Arc<Metrics>,
        downstream: Downstream,
        log: SharedEventLog,
        mut updates: mpsc::UnboundedReceiver<EventUpdate>,
        mut notices: mpsc::UnboundedReceiver<FleetNotice>,
    ) -> EventPipeline {
        update_gauges(&log, &metrics);
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut attributions = tokio::task::JoinSet::new();
                let mut notices_open = true;
                loop {
                    let update = tokio::select! {
                        update = updates.recv() => match update {
                            Some(update) => update,
                            None => break,
                        },
                        notice = notices.recv(), if notices_open => {
                            match notice {
                                Some(notice) => apply_notice(&downstream, &log, &metrics, notice),
                                None => notices_open = false,
                            }
                            update_gauges(&log, &metrics);
                            continue;
                        }
                    };
                    match update {
                        EventUpdate::Deployed(deploy) => announce(&downstream, *deploy).await,
                        EventUpdate::Fired(event) => {
                            let refire = log
                                .read()
                                .unwrap_or_else(|e| e.into_inner())
                                .list()
                                .iter()
                                .any(|e| e.fingerprint == event.fingerprint && e.state == EventState::Resolved);
                            let Some(event) = open(&downstream, &log, &metrics, *event).await else {
                                continue;
                            };
                            if refire {
                                metrics.drift_refires.with_label_values(&[event.kind.as_str()]).inc();
                            }
                            persist(&downstream, &event);
                            tracing::warn!(id = %event.id, kind = event.kind.as_str(), service = %event.service,
                                operation = event.operation.as_deref().unwrap_or(""), peer = event.peer.as_deref().unwrap_or(""),
                                revision = %event.revision, "drift detected");
                            let severity = if event.severity == Severity::Critical {
                                "critical"
                            } else {
                                "warning"
                            };
                            metrics.drift_events.with_label_values(&[event.kind.as_str(), severity]).inc();
                            let (log, metrics, downstream) = (log.clone(), metrics.clone(), downstream.clone());
                            attributions.spawn_blocking(move || attribute_and_alert(&downstream, event, &log, &metrics));
                        }
                        EventUpdate::SeenIn { id, revision, .. } => {
                            let Some(event) = carry(&downstream, &log, &id, revision).await else {
                                continue;
                            };
                            persist(&downstream, &event);
                            share(&downstream, &event);
                            tracing::warn!(id = %event.id, kind = event.kind.as_str(), service = %event.service,
                                seen_in = ?event.seen_in, "drift still present in a later revision");
                        }
                        EventUpdate::Resolved {
                            id,
                            at_unix_nanos,
                            resolution,
                        } => {
                            let resolution = full_resolution(&downstream, &log, &id, resolution).await;
                            let Some(event) = close(&downstream, &log, &metrics, &id, at_unix_nanos, resolution).await else {
                                continue;
                            };
                            persist(&downstream, &event);
                            let reason = event.resolution.as_ref().map_or("unknown", |r| r.reason.as_str());
                            metrics
                                .drift_resolutions
                                .with_label_values(&[event.kind.as_str(), reason])
                                .inc();
                            tracing::info!(id = %event.id, kind = event.kind.as_str(), service = %event.service, reason, "drift resolved");
                            suspect_gauge(&metrics, &event, false);
                            alert(&downstream, &event);
                        }
                    }
                    update_gauges(&log, &metrics);
                    while attributions.try_join_next().is_some() {}
                }
                while attributions.join_next().await.is_some() {}
            })
        };
        EventPipeline { log, task }
    }

    /// Waits until every update sent before the senders closed is applied,
    /// attributed and queued for alerting.
    pub async fn drain(self) {
        let _ = self.task.await;
    }
}

/// What the fleet's store reports about other replicas' work.
#[derive(Debug)]
pub enum FleetNotice {
    /// The fleet's events, newest first: this replica's view follows them.
    Events(Vec<DriftEvent>),
    /// A drift this replica resolved for the fleet (its replicas all left
    /// or vanished): it sends the resolution.
    Resolved(Box<DriftEvent>),
}

fn apply_notice(downstream: &Downstream, log: &SharedEventLog, metrics: &Metrics, notice: FleetNotice) {
    match notice {
        FleetNotice::Events(events) => {
            let mut ended = Vec::new();
            {
                let mut log = log.write().unwrap_or_else(|e| e.into_inner());
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
                persist(downstream, &event);
                suspect_gauge(metrics, &event, false);
                alert(downstream, &event);
            }
        }
        FleetNotice::Resolved(event) => {
            let event = *event;
            log.write().unwrap_or_else(|e| e.into_inner()).upsert(event.clone());
            persist(downstream, &event);
            tracing::info!(id = %event.id, kind = event.kind.as_str(), service = %event.service, "drift resolved in the fleet");
            suspect_gauge(metrics, &event, false);
            alert(downstream, &event);
        }
    }
}

/// Records a fired event. In fleet mode the event joins the fleet's firing
/// event of the same fingerprint and takes its id, so every replica names
/// the drift alike; it is returned even when another replica's copy was
/// already known here, so this replica's outbox also holds the alert (the
/// fleet's store decides who sends it).
async fn open(downstream: &Downstream, log: &SharedEventLog, metrics: &Metrics, event: DriftEvent) -> Option<DriftEvent> {
    let Some(fleet) = &downstream.fleet else {
        return log
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(EventUpdate::Fired(Box::new(event)));
    };
    let event = match fleet.open_event(&event).await {
        Ok(fleet_event) => fleet_event,
        Err(error) => {
            metrics.fleet_errors.with_label_values(&["open_event"]).inc();
            tracing::warn!(%error, id = %event.id, "cannot record the event in the fleet store; keeping it local");
            event
        }
    };
    log.write().unwrap_or_else(|e| e.into_inner()).upsert(event.clone());
    Some(event)
}

/// The id under which the log holds the detector's event `id`: the same,
/// or in fleet mode the fleet's firing event of its fingerprint.
fn logged_id(log: &SharedEventLog, id: &str) -> Option<String> {
    let log = log.read().unwrap_or_else(|e| e.into_inner());
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
    fn of(log: &SharedEventLog, id: &str) -> Option<Source> {
        let log = log.read().unwrap_or_else(|e| e.into_inner());
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
async fn carry(downstream: &Downstream, log: &SharedEventLog, id: &str, revision: String) -> Option<DriftEvent> {
    let logged = logged_id(log, id)?;
    let source = Source::of(log, &logged)?;
    let revision = full_sha(downstream, source, revision).await;
    log.write().unwrap_or_else(|e| e.into_inner()).apply(EventUpdate::SeenIn {
        id: logged,
        revision,
        at_unix_nanos: 0,
    })
}

/// The resolution with its revision as a full SHA.
async fn full_resolution(downstream: &Downstream, log: &SharedEventLog, id: &str, mut resolution: Resolution) -> Resolution {
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
    log: &SharedEventLog,
    metrics: &Metrics,
    id: &str,
    at: u64,
    resolution: Resolution,
) -> Option<DriftEvent> {
    let Some(fleet) = &downstream.fleet else {
        return log.write().unwrap_or_else(|e| e.into_inner()).apply(EventUpdate::Resolved {
            id: id.to_owned(),
            at_unix_nanos: at,
            resolution,
        });
    };
    // The detector knows its own id; the log holds the fleet's.
    let fingerprint = crate::detect::event::fingerprint_of(id);
    let known = {
        let log = log.read().unwrap_or_else(|e| e.into_inner());
        log.firing_with_fingerprint(fingerprint).cloned()
    };
    // Not in this replica's view (evicted, or the view is behind): the
    // fleet's store still knows it, and this replica must let go of it.
    let known = match known {
        Some(event) => Some(event),
        None => fleet.firing_event(fingerprint).await.unwrap_or_else(|error| {
            metrics.fleet_errors.with_label_values(&["leave_event"]).inc();
            tracing::warn!(%error, fingerprint, "cannot look up the fleet's event");
            None
        }),
    };
    let mut event = known?;
    event.state = EventState::Resolved;
    event.resolved_at = Some(crate::detect::event::rfc3339(at));
    event.resolution = Some(resolution);
    match fleet.leave_event(&event).await {
        Ok(Leave::Resolved(event)) => {
            log.write().unwrap_or_else(|e| e.into_inner()).upsert((*event).clone());
            Some(*event)
        }
        Ok(Leave::StillFiring) => {
            tracing::info!(id = %event.id, "drift ended here; other replicas still see it");
            None
        }
        // Queued here too, so the resolution survives the resolver going
        // away; the fleet's claims send it once.
        Ok(Leave::AlreadyResolved) | Ok(Leave::Unknown) => {
            log.write().unwrap_or_else(|e| e.into_inner()).upsert(event.clone());
            Some(event)
        }
        Err(error) => {
            // This replica's hold lapses with the lease; a sweep then
            // resolves the drift unless another replica still sees it.
            metrics.fleet_errors.with_label_values(&["leave_event"]).inc();
            tracing::warn!(%error, id = %event.id, "cannot record the resolution in the fleet store; the fleet resolves it once this replica's hold lapses");
            None
        }
    }
}

fn update_gauges(log: &SharedEventLog, metrics: &Metrics) {
    let log = log.read().unwrap_or_else(|e| e.into_inner());
    for kind in EventKind::ALL {
        metrics
            .drifts_firing
            .with_label_values(&[kind.as_str()])
            .set(log.firing(kind) as i64);
    }
}

fn persist(downstream: &Downstream, event: &DriftEvent) {
    if let Some(store) = &downstream.store
        && let Err(error) = store.put_events(std::slice::from_ref(event))
    {
        tracing::error!(%error, id = %event.id, "cannot persist an event");
    }
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
    if let Err(error) = dispatcher.announce(&deploy) {
        tracing::error!(%error, id = %deploy.id, "cannot queue a deploy marker");
    }
}

fn alert(downstream: &Downstream, event: &DriftEvent) {
    if let Some(dispatcher) = &downstream.dispatcher
        && let Err(error) = dispatcher.notify(event)
    {
        tracing::error!(%error, id = %event.id, "cannot queue alerts");
    }
}

/// Attributes a fired event (when a repository is configured), records the
/// result, and queues its alerts.
fn attribute_and_alert(downstream: &Downstream, event: DriftEvent, log: &SharedEventLog, metrics: &Metrics) {
    let event = match &downstream.attributor {
        Some(attributor) => {
            let attribution = attribute(attributor, &event, metrics);
            let updated = log
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .set_attribution(&event.id, &attribution);
            let updated = updated.unwrap_or(event);
            persist(downstream, &updated);
            share(downstream, &updated);
            suspect_gauge(metrics, &updated, updated.state == crate::detect::event::EventState::Firing);
            updated
        }
        None => event,
    };
    alert(downstream, &event);
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
        metrics.suspect_info.with_label_values(&labels).set(1);
    } else {
        let _ = metrics.suspect_info.remove_label_values(&labels);
    }
}

fn attribute(attributor: &Attributor, event: &DriftEvent, metrics: &Metrics) -> Attribution {
    let (attribution, outcome) = match attributor.attribute(event) {
        Ok(attribution) => {
            if attribution.unresolved.is_some() {
                metrics
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
    metrics.attributions.with_label_values(&[outcome]).inc();
    attribution
}
