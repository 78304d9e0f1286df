//! The event pipeline: where detect meets persist, attribute and alert.
//!
//! Detector updates arrive in order. Each is applied to the shared event
//! log and written to the store; a fired event is attributed to commits in
//! the background (git work is blocking) and then handed to the alert
//! outbox, so alerts carry their suspects; a resolution goes to the outbox
//! at once.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alert::Dispatcher;
use crate::attribute::{Attribution, Attributor};
use crate::detect::event::{DriftEvent, EventKind, EventLog, EventUpdate, Severity};
use crate::detect::{MAX_EVENTS, SharedEventLog};
use crate::expose::metrics::Metrics;
use crate::store::EmbeddedStore;

/// What the pipeline feeds.
#[derive(Clone, Default)]
pub struct Downstream {
    pub attributor: Option<Arc<Attributor>>,
    pub store: Option<Arc<EmbeddedStore>>,
    pub dispatcher: Option<Arc<Dispatcher>>,
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
        let (tx, mut rx) = mpsc::unbounded_channel::<EventUpdate>();
        update_gauges(&log, &metrics);
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut attributions = tokio::task::JoinSet::new();
                while let Some(update) = rx.recv().await {
                    let applied = log.write().unwrap_or_else(|e| e.into_inner()).apply(update.clone());
                    let Some(event) = applied else { continue };
                    persist(&downstream, &event);
                    match update {
                        EventUpdate::Fired(_) => {
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
                        EventUpdate::Resolved { .. } => {
                            tracing::info!(id = %event.id, kind = event.kind.as_str(), service = %event.service, "drift resolved");
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
        (EventPipeline { log, task }, tx)
    }

    /// Waits until every update sent before the senders closed is applied,
    /// attributed and queued for alerting.
    pub async fn drain(self) {
        let _ = self.task.await;
    }
}

fn update_gauges(log: &SharedEventLog, metrics: &Metrics) {
    let log = log.read().unwrap_or_else(|e| e.into_inner());
    for kind in [EventKind::LatencyRegression, EventKind::NewOutboundPeer] {
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
    let tool = top.ai.as_ref().and_then(|a| a["tool"].as_str()).unwrap_or("none");
    let commit = &top.commit[..top.commit.len().min(12)];
    let labels = [
        metrics.service_label(&event.service),
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
            let outcome = if attribution.unresolved.is_some() {
                metrics
                    .revisions_unresolved
                    .with_label_values(&[metrics.service_label(&event.service)])
                    .inc();
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
