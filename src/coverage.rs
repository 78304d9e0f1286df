//! What the analysis has seen of each revision, per operation: the sample
//! counts and clean evaluations a rollout verdict rests on.
//!
//! The shards own the analysis state. A reader asks the shard that owns a
//! service, which answers with these plain values (a snapshot, never a
//! reference into its state) between two batches. Shared types only: no
//! logic that needs the analysis or the API.

use serde::{Deserialize, Serialize};

/// One service as the analysis saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServiceCoverage {
    pub service: String,
    /// `deployment.environment.name` of the spans, if they name one.
    #[serde(default)]
    pub environment: Option<String>,
    /// Ordered by first appearance.
    pub revisions: Vec<RevisionCoverage>,
}

/// One revision of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RevisionCoverage {
    /// As the spans name it (full or abbreviated SHA, or a tag).
    pub revision: String,
    pub first_seen_unix_nanos: u64,
    pub last_seen_unix_nanos: u64,
    pub operations: Vec<OperationCoverage>,
}

/// One operation served by a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OperationCoverage {
    pub operation: String,
    /// Spans of this operation in this revision (in fleet mode, across the
    /// replicas whose snapshots this one merged).
    pub samples: u64,
    /// The revision that served the operation before this one, if any.
    pub baseline_revision: Option<String>,
    pub baseline_samples: u64,
    /// Evaluations in a row in which the latency detector compared this
    /// revision with its baseline, both with enough samples, and found no
    /// regression.
    pub clean_evaluations: u32,
}

/// A question to the shard that owns `service`.
pub(crate) struct CoverageQuery {
    pub service: String,
    /// `None`: the service's spans that name no environment, or its only
    /// environment.
    pub environment: Option<String>,
    pub reply: tokio::sync::oneshot::Sender<Option<ServiceCoverage>>,
}

/// The readers' side: asks the shard that owns a service, which answers
/// between two batches. Nothing is computed unless someone asks.
#[derive(Clone, Default)]
pub(crate) struct CoverageBoard {
    shards: Vec<tokio::sync::mpsc::Sender<CoverageQuery>>,
    route: Option<fn(&str, usize) -> usize>,
}

/// How long a shard may take to answer.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

impl CoverageBoard {
    /// `route` names the shard of a service among `shards.len()`.
    pub(crate) fn new(shards: Vec<tokio::sync::mpsc::Sender<CoverageQuery>>, route: fn(&str, usize) -> usize) -> CoverageBoard {
        CoverageBoard {
            shards,
            route: Some(route),
        }
    }

    /// The coverage of `service` in `environment` (see [`CoverageQuery`]),
    /// if a shard analyses it; `None` too when the shard is gone (shutdown)
    /// or does not answer in time.
    pub(crate) async fn service(&self, service: &str, environment: Option<&str>) -> Option<ServiceCoverage> {
        let route = self.route?;
        let shard = self.shards.get(route(service, self.shards.len()))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let query = CoverageQuery {
            service: service.to_owned(),
            environment: environment.map(str::to_owned),
            reply,
        };
        tokio::time::timeout(ANSWER_WITHIN, async {
            shard.send(query).await.ok()?;
            answer.await.ok().flatten()
        })
        .await
        .ok()
        .flatten()
    }
}
