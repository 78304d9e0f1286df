//! Scenario files: synthetic services with realistic latency and traffic,
//! and the labelled changes (deploys, injected regressions) whose detection
//! `driftwatch eval` scores.
//!
//! Latency is log-normal per operation, with optional heavy tails, bursts of
//! outliers, GC-like pauses, a diurnal rate cycle and traffic-mix shifts.
//! Requests fail at a base rate, with outages of flaky dependencies.
//! Deploys roll out over a configurable period, so for a while both
//! revisions serve traffic, as in Kubernetes.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::humantime_serde;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("scenario {path} is invalid: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Event time simulated.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    pub services: Vec<ServiceSpec>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default = "default_revision")]
    pub initial_revision: String,
    /// When the service starts sending traffic (a new service mid-run).
    #[serde(default, with = "humantime_serde")]
    pub start: Duration,
    pub operations: Vec<OperationSpec>,
    #[serde(default)]
    pub deploys: Vec<DeploySpec>,
    #[serde(default)]
    pub rate_changes: Vec<RateChange>,
}

fn default_revision() -> String {
    "rev-1".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationSpec {
    pub name: String,
    /// Mean requests per second.
    pub rate: f64,
    /// Median latency.
    pub median_ms: f64,
    /// Log-normal shape: 0.3 is tight, 1.0 heavy-tailed.
    #[serde(default = "default_sigma")]
    pub sigma: f64,
    /// Amplitude (0..1) of the daily rate cycle.
    #[serde(default)]
    pub diurnal: f64,
    /// Fraction of requests that are 5–20× slower (cache misses, retries).
    #[serde(default)]
    pub outliers: f64,
    /// Bursts per hour during which 30% of requests are 3× slower for
    /// 5–20 s (a noisy neighbour, a slow dependency).
    #[serde(default)]
    pub bursts_per_hour: f64,
    /// A stop-the-world pause every this often...
    #[serde(default, with = "humantime_serde::option")]
    pub gc_every: Option<Duration>,
    /// ...adding this much to requests in flight during it (up to 1 s).
    #[serde(default)]
    pub gc_pause_ms: f64,
    /// Outbound calls each request makes.
    #[serde(default)]
    pub calls: Vec<CallSpec>,
    /// Share of requests that fail (span status ERROR).
    #[serde(default)]
    pub errors: f64,
    /// Outages of a flaky dependency per hour, during which a quarter of
    /// requests fail for 10–60 s, in every revision alike.
    #[serde(default)]
    pub error_bursts_per_hour: f64,
}

/// An outbound call made while serving an operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    /// Peer identity, as driftwatch names it (`host:port`,
    /// `postgresql://host/db`, `kafka:topic`).
    pub peer: String,
    /// Share of requests making the call.
    #[serde(default = "one")]
    pub probability: f64,
    /// Instead of per request: one call this often (a rare peer).
    #[serde(default, with = "humantime_serde::option")]
    pub every: Option<Duration>,
    /// Duration of the call as a share of the request's.
    #[serde(default = "default_share")]
    pub share: f64,
    /// Times a request that makes the call makes it...
    #[serde(default = "one_call")]
    pub times: u32,
    /// ...plus a uniform 0 to this many more (items in a cart).
    #[serde(default)]
    pub times_spread: u32,
    /// A call that must not be repeated (an HTTP POST, a publish).
    #[serde(default)]
    pub non_idempotent: bool,
    /// Share of the requests making the call that make it once more.
    #[serde(default)]
    pub repeat: f64,
    /// The instrumentation scope (library) its spans come from.
    #[serde(default)]
    pub scope: Option<String>,
}

impl CallSpec {
    /// Mean calls per request that makes the call.
    pub(crate) fn mean_times(&self) -> f64 {
        f64::from(self.times) + f64::from(self.times_spread) / 2.0
    }
}

fn one_call() -> u32 {
    1
}

fn default_share() -> f64 {
    0.3
}

fn default_sigma() -> f64 {
    0.5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// When the rollout starts, from the scenario start.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    pub revision: String,
    /// Time for the new revision to take all traffic.
    #[serde(default = "default_rollout", with = "humantime_serde")]
    pub rollout: Duration,
    /// Latency changes this deploy brings. None: a deploy that changes
    /// nothing (a hard negative).
    #[serde(default)]
    pub changes: Vec<ChangeSpec>,
    /// Outbound calls this deploy introduces (labelled: each peer the
    /// service never called before is expected as a `new_outbound_peer`).
    #[serde(default)]
    pub new_calls: Vec<NewCallSpec>,
    /// Operations whose earlier regressions this deploy removes (a fix).
    #[serde(default)]
    pub fixes: Vec<String>,
}

impl DeploySpec {
    /// A deploy of a revision that ran before is a rollback to it.
    pub(crate) fn rolls_back_to(&self, earlier: &[&str]) -> Option<usize> {
        earlier.iter().position(|r| *r == self.revision)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCallSpec {
    pub operation: String,
    pub peer: String,
    #[serde(default = "one")]
    pub probability: f64,
    #[serde(default = "default_share")]
    pub share: f64,
    #[serde(default)]
    pub non_idempotent: bool,
    /// The library the new call is made with: one the service never used
    /// before is a labelled `new_dependency`.
    #[serde(default)]
    pub scope: Option<String>,
}

impl NewCallSpec {
    pub(crate) fn call(&self) -> CallSpec {
        CallSpec {
            peer: self.peer.clone(),
            probability: self.probability,
            every: None,
            share: self.share,
            times: 1,
            times_spread: 0,
            non_idempotent: self.non_idempotent,
            repeat: 0.0,
            scope: self.scope.clone(),
        }
    }
}

fn default_rollout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSpec {
    pub operation: String,
    /// Multiplies the latency of affected requests.
    #[serde(default = "one")]
    pub latency_factor: f64,
    /// Adds to the latency of affected requests.
    #[serde(default)]
    pub extra_ms: f64,
    /// Share of requests affected.
    #[serde(default = "one")]
    pub fraction: f64,
    /// Share of requests that fail from this deploy on (0: the operation's
    /// own share). A share above the operation's is a labelled error-rate
    /// regression.
    #[serde(default)]
    pub errors: f64,
    /// Calls per request to a peer the operation already calls, from this
    /// deploy on. More than before is a labelled fan-out regression.
    #[serde(default)]
    pub calls: Vec<CallsChange>,
}

/// A change of how many times each request calls a peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsChange {
    pub peer: String,
    /// Calls per request from now on: more than before is a labelled
    /// fan-out regression.
    #[serde(default)]
    pub times: Option<u32>,
    /// Share of requests that make the call once more from now on: on a
    /// non-idempotent call made at most once before, a labelled repeated
    /// unsafe call.
    #[serde(default)]
    pub repeat: Option<f64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateChange {
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    pub operation: String,
    pub factor: f64,
}

impl ServiceSpec {
    /// Revision names by index: the initial one, then one per deploy.
    pub(crate) fn revision_names(&self) -> Vec<&str> {
        std::iter::once(self.initial_revision.as_str())
            .chain(self.deploys.iter().map(|d| d.revision.as_str()))
            .collect()
    }

    /// The regressions each revision (by index) carries, as (deploy index,
    /// change index): a deploy keeps its predecessor's, less those on the
    /// operations it fixes, plus its own; a rollback carries exactly what
    /// the revision it returns to carried.
    pub(crate) fn carried_changes(&self) -> Vec<Vec<(usize, usize)>> {
        let names = self.revision_names();
        let mut carried: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
        for (i, deploy) in self.deploys.iter().enumerate() {
            if let Some(earlier) = deploy.rolls_back_to(&names[..=i]) {
                carried.push(carried[earlier].clone());
                continue;
            }
            let mut next: Vec<(usize, usize)> = carried[i]
                .iter()
                .copied()
                .filter(|(d, c)| !deploy.fixes.contains(&self.deploys[*d].changes[*c].operation))
                .collect();
            next.extend((0..deploy.changes.len()).map(|c| (i, c)));
            carried.push(next);
        }
        carried
    }

    /// For each revision index, the index whose outbound calls it makes
    /// (itself, or for a rollback the revision it returns to).
    pub(crate) fn call_lineage(&self) -> Vec<usize> {
        let names = self.revision_names();
        let mut lineage = vec![0];
        for (i, deploy) in self.deploys.iter().enumerate() {
            let own = deploy.rolls_back_to(&names[..=i]).map_or(i + 1, |earlier| lineage[earlier]);
            lineage.push(own);
        }
        lineage
    }
}

impl Scenario {
    pub(crate) fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: display.clone(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|e| ScenarioError::Invalid {
            path: display.clone(),
            message: e.to_string(),
        })?;
        scenario
            .validate()
            .map_err(|message| ScenarioError::Invalid { path: display, message })?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), String> {
        for service in &self.services {
            for op in &service.operations {
                if !(op.rate >= 0.0 && op.median_ms > 0.0 && op.sigma >= 0.0 && (0.0..=1.0).contains(&op.diurnal)) {
                    return Err(format!(
                        "operation {:?} of {:?}: rate >= 0, median_ms > 0, sigma >= 0, diurnal in 0..1",
                        op.name, service.name
                    ));
                }
            }
            for deploy in &service.deploys {
                let operations = deploy
                    .changes
                    .iter()
                    .map(|c| &c.operation)
                    .chain(deploy.new_calls.iter().map(|c| &c.operation))
                    .chain(deploy.fixes.iter());
                for operation in operations {
                    if !service.operations.iter().any(|o| &o.name == operation) {
                        return Err(format!(
                            "deploy {:?} changes unknown operation {:?}",
                            deploy.revision, operation
                        ));
                    }
                }
                for change in &deploy.changes {
                    let op = service.operations.iter().find(|o| o.name == change.operation);
                    for calls in &change.calls {
                        if !op.is_some_and(|o| o.calls.iter().any(|c| c.peer == calls.peer)) {
                            return Err(format!(
                                "deploy {:?} changes the calls of {:?} to {:?}, which it does not call",
                                deploy.revision, change.operation, calls.peer
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
