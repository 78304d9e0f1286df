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

use crate::expose::metrics::Metrics;
use event::{EventKind, EventLog, EventUpdate};

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
    pub fn start(metrics: Arc<Metrics>) -> (EventPipeline, mpsc::UnboundedSender<EventUpdate>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<EventUpdate>();
        let log: SharedEventLog = Arc::new(RwLock::new(EventLog::new(MAX_EVENTS)));
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(update) = rx.recv().await {
                    let mut log = log.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(event) = log.apply(update.clone()) {
                        match update {
                            EventUpdate::Fired(_) => {
                                tracing::warn!(id = %event.id, kind = event.kind.as_str(), service = %event.service,
                                    operation = event.operation.as_deref().unwrap_or(""), revision = %event.revision, "drift detected");
                                metrics
                                    .drift_events
                                    .with_label_values(&[event.kind.as_str(), severity_label(&event)])
                                    .inc();
                            }
                            EventUpdate::Resolved { .. } => {
                                tracing::info!(id = %event.id, kind = event.kind.as_str(), service = %event.service, "drift resolved");
                            }
                        }
                    }
                    for kind in [EventKind::LatencyRegression, EventKind::NewOutboundPeer] {
                        metrics.drifts_firing.with_label_values(&[kind.as_str()]).set(log.firing(kind) as i64);
                    }
                }
            })
        };
        (EventPipeline { log, task }, tx)
    }

    /// Waits until every update sent before the senders closed is applied.
    pub async fn drain(self) {
        let _ = self.task.await;
    }
}

fn severity_label(event: &event::DriftEvent) -> &'static str {
    match event.severity {
        event::Severity::Warning => "warning",
        event::Severity::Critical => "critical",
    }
}
