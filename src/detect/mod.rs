//! Detect: the drift detectors and the events they raise.
//!
//! Detectors run inside the analysis shards (see `analyze::service`); their
//! updates flow through [`EventPipeline`] into the shared [`EventLog`] that
//! the API, the metrics and the alerting read.

pub mod event;
pub mod latency;
pub mod outbound;
pub mod stats;

use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::attribute::Attributor;
use crate::expose::metrics::Metrics;
use event::{DriftEvent, EventKind, EventLog, EventUpdate};

/// Events kept in memory for the API.
pub const MAX_EVENTS: usize = 10_000;

/// The shared, readable record of events.
pub type SharedEventLog = Arc<RwLock<EventLog>>;

/// Applies detector updates to the event log, in arrival order.
pub struct EventPipeline {
    pub log: SharedEventLog,
    task: JoinHandle<()>,
}

impl EventPipeline {
    /// Starts applying updates. With an `attributor`, each fired event is
    /// attributed to commits in the background and updated in place.
    pub fn start(metrics: Arc<Metrics>, attributor: Option<Arc<Attributor>>) -> (EventPipeline, mpsc::UnboundedSender<EventUpdate>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<EventUpdate>();
        let log: SharedEventLog = Arc::new(RwLock::new(EventLog::new(MAX_EVENTS)));
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut attributions = tokio::task::JoinSet::new();
                while let Some(update) = rx.recv().await {
                    let applied = log.write().unwrap_or_else(|e| e.into_inner()).apply(update.clone());
                    if let Some(event) = applied {
                        match update {
                            EventUpdate::Fired(_) => {
                                tracing::warn!(id = %event.id, kind = event.kind.as_str(), service = %event.service,
                                    operation = event.operation.as_deref().unwrap_or(""), peer = event.peer.as_deref().unwrap_or(""),
                                    revision = %event.revision, "drift detected");
                                metrics.drift_events.with_label_values(&[event.kind.as_str(), severity_label(&event)]).inc();
                                if let Some(attributor) = attributor.clone() {
                                    let (log, metrics) = (log.clone(), metrics.clone());
                                    attributions.spawn_blocking(move || attribute(&attributor, &event, &log, &metrics));
                                }
                            }
                            EventUpdate::Resolved { .. } => {
                                tracing::info!(id = %event.id, kind = event.kind.as_str(), service = %event.service, "drift resolved");
                            }
                        }
                    }
                    let log = log.read().unwrap_or_else(|e| e.into_inner());
                    for kind in [EventKind::LatencyRegression, EventKind::NewOutboundPeer] {
                        metrics.drifts_firing.with_label_values(&[kind.as_str()]).set(log.firing(kind) as i64);
                    }
                    while attributions.try_join_next().is_some() {}
                }
                while attributions.join_next().await.is_some() {}
            })
        };
        (EventPipeline { log, task }, tx)
    }

    /// Waits until every update sent before the senders closed is applied
    /// and attributed.
    pub async fn drain(self) {
        let _ = self.task.await;
    }
}

/// Attributes one event and records the outcome.
fn attribute(attributor: &Attributor, event: &DriftEvent, log: &SharedEventLog, metrics: &Metrics) {
    let outcome = match attributor.attribute(event) {
        Ok(attribution) => {
            let outcome = if attribution.unresolved.is_some() {
                metrics.revisions_unresolved.with_label_values(&[metrics.service_label(&event.service)]).inc();
                "unresolved_revision"
            } else if !attribution.suspects.is_empty() {
                "suspects"
            } else {
                "no_suspects"
            };
            log.write().unwrap_or_else(|e| e.into_inner()).set_attribution(&event.id, &attribution);
            tracing::info!(id = %event.id, suspects = attribution.suspects.len(), note = attribution.note.as_deref().unwrap_or(""), "attributed");
            outcome
        }
        Err(error) => {
            tracing::warn!(id = %event.id, %error, "attribution failed");
            let failed = crate::attribute::Attribution { note: Some(format!("attribution failed: {error}")), ..Default::default() };
            log.write().unwrap_or_else(|e| e.into_inner()).set_attribution(&event.id, &failed);
            "error"
        }
    };
    metrics.attributions.with_label_values(&[outcome]).inc();
}

fn severity_label(event: &event::DriftEvent) -> &'static str {
    match event.severity {
        event::Severity::Warning => "warning",
        event::Severity::Critical => "critical",
    }
}
