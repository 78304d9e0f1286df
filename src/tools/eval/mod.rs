//! `driftwatch eval DIR`: replays every scenario of a corpus through the
//! same analysis and detectors the sidecar runs, in event time, and scores
//! the events against the scenarios' labels: recall, false alerts per
//! service-week, detection delay (event time from deploy to alert), and the
//! lifecycle: **false resolves** (a resolution while the labelled drift
//! still serves) and **coverage** (the share of the drift's serving time
//! after detection during which its incident fires).
//!
//! A labelled drift serves from its deploy until a later deploy that no
//! longer carries it (a fix or a rollback) has rolled out, until its
//! operation's traffic stops (a rate change to 0), or until the scenario
//! ends.

pub mod attribution;
pub(crate) mod scenario;
pub(crate) mod traffic;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::analyze::service::AnalysisSettings;
use crate::analyze::shard::ShardAnalysis;
use crate::detect::event::{DriftEvent, EventKind, EventLog};
use scenario::{Scenario, ScenarioError, ServiceSpec};
use traffic::{EPOCH_UNIX_NANOS, TrafficGenerator, expected_p95_increase};

/// Regressions of at least this p95 rise, on operations of at least this
/// rate, form the headline recall class.
pub(crate) const TARGET_MIN_P95_INCREASE: f64 = 0.295;
pub(crate) const TARGET_MIN_RATE: f64 = 20.0;
const WEEK_SECONDS: f64 = 7.0 * 86_400.0;

/// One labelled regression and whether it was caught.
#[derive(Debug, Clone, Serialize)]
pub struct LabelResult {
    pub service: String,
    pub operation: String,
    pub revision: String,
    pub deploy_at_s: u64,
    pub rate: f64,
    pub expected_p95_increase: f64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Whether a labelled drift was caught, how soon, and how its incident
/// followed it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub detected: bool,
    /// Event time from the start of the rollout to the alert.
    pub delay_s: Option<f64>,
    /// Until when (scenario seconds) the drift served.
    pub serving_until_s: u64,
    /// Share of the serving time after detection during which an incident
    /// of the operation fired.
    pub coverage: Option<f64>,
    /// Resolutions while the drift still served.
    pub false_resolves: usize,
    /// How the incident ended, if it did.
    pub resolution: Option<String>,
}

/// Error-rate rises from at most this share to at least `TARGET_MIN_ERRORS`
/// on operations of at least `TARGET_MIN_RATE` form the error-rate recall
/// class.
pub(crate) const TARGET_MAX_BASE_ERRORS: f64 = 0.005;
pub(crate) const TARGET_MIN_ERRORS: f64 = 0.02;

/// One labelled error-rate regression and whether it was caught.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorLabelResult {
    pub service: String,
    pub operation: String,
    pub revision: String,
    pub deploy_at_s: u64,
    pub rate: f64,
    /// Share of requests failing before and after.
    pub errors_before: f64,
    pub errors_after: f64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Fan-out rises from at most `TARGET_MAX_BASE_CALLS` to at least
/// `TARGET_MIN_CALLS` calls per request, on operations of at least
/// `TARGET_MIN_RATE`, form the fan-out recall class.
pub(crate) const TARGET_MAX_BASE_CALLS: f64 = 1.0;
pub(crate) const TARGET_MIN_CALLS: f64 = 5.0;

/// One labelled fan-out regression and whether it was caught.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutLabelResult {
    pub service: String,
    pub operation: String,
    pub peer: String,
    pub revision: String,
    pub deploy_at_s: u64,
    pub rate: f64,
    /// Mean calls per request to the peer before and after.
    pub calls_before: f64,
    pub calls_after: f64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// One labelled repeated unsafe call (`subject`: the peer) or new
/// dependency (`subject`: the instrumentation scope), and whether it was
/// reported.
#[derive(Debug, Clone, Serialize)]
pub struct KindLabelResult {
    pub kind: EventKind,
    pub service: String,
    pub operation: String,
    pub subject: String,
    pub revision: String,
    pub deploy_at_s: u64,
    pub detected: bool,
    pub delay_s: Option<f64>,
}

/// What eval measured of one kind scored by [`KindLabelResult`]s.
#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub kind: EventKind,
    pub labels: usize,
    pub detected: usize,
    pub recall: f64,
    pub false_alerts: usize,
    /// Over every service-week of the corpus.
    pub false_alerts_per_service_week: f64,
    pub median_delay_s: Option<f64>,
}

/// One labelled new outbound peer and whether it was reported.
#[derive(Debug, Clone, Serialize)]
pub struct PeerLabelResult {
    pub service: String,
    pub peer: String,
    pub revision: String,
    pub deploy_at_s: u64,
    pub detected: bool,
    pub delay_s: Option<f64>,
}

/// A fired event that matches no label.
#[derive(Debug, Clone, Serialize)]
pub struct FalseAlert {
    pub kind: EventKind,
    pub service: String,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub revision: String,
    pub detected_at_s: f64,
    pub relative_increase: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub description: String,
    pub services: usize,
    pub duration_s: u64,
    pub spans: u64,
    pub events: usize,
    pub labels: Vec<LabelResult>,
    pub peer_labels: Vec<PeerLabelResult>,
    pub error_labels: Vec<ErrorLabelResult>,
    pub fanout_labels: Vec<FanoutLabelResult>,
    /// Repeated unsafe calls and new dependencies.
    pub kind_labels: Vec<KindLabelResult>,
    /// Services whose requests fail at all (the only ones an error-rate
    /// detector can misjudge).
    pub error_services: usize,
    pub false_alerts: Vec<FalseAlert>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenarios: usize,
    pub labels: usize,
    pub detected: usize,
    pub recall: f64,
    /// Recall on regressions of p95 ≥ +30% at ≥ 20 requests/s.
    pub target_class_labels: usize,
    pub target_class_recall: f64,
    pub false_alerts: usize,
    pub service_weeks: f64,
    pub false_alerts_per_service_week: f64,
    pub median_delay_s: Option<f64>,
    pub p90_delay_s: Option<f64>,
    pub peer_labels: usize,
    pub peer_recall: f64,
    pub peer_false_alerts: usize,
    pub peer_median_delay_s: Option<f64>,
    /// Resolutions while a labelled drift still served.
    pub false_resolves: usize,
    /// Firing time over serving time after detection, all detected drifts.
    pub coverage: f64,
    /// The lowest coverage of one drift.
    pub min_coverage: Option<f64>,
    pub error_labels: usize,
    pub error_recall: f64,
    /// Recall on error-rate rises from ≤ 0.5% to ≥ 2% at ≥ 20 requests/s.
    pub error_target_class_labels: usize,
    pub error_target_class_recall: f64,
    pub error_false_alerts: usize,
    /// Service-weeks of traffic with failing requests.
    pub error_service_weeks: f64,
    pub error_false_alerts_per_service_week: f64,
    pub error_median_delay_s: Option<f64>,
    /// Resolutions while a labelled error-rate drift still served.
    pub error_false_resolves: usize,
    pub fanout_labels: usize,
    pub fanout_recall: f64,
    /// Recall on fan-out rises from ≤ 1 to ≥ 5 calls per request at ≥ 20
    /// requests/s.
    pub fanout_target_class_labels: usize,
    pub fanout_target_class_recall: f64,
    pub fanout_false_alerts: usize,
    /// Over every service-week of the corpus.
    pub fanout_false_alerts_per_service_week: f64,
    pub fanout_median_delay_s: Option<f64>,
    /// Resolutions while a labelled fan-out drift still served.
    pub fanout_false_resolves: usize,
    /// Repeated unsafe calls, then new dependencies.
    pub kinds: Vec<KindSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub scenarios: Vec<ScenarioResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read scenario directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("no scenario files (*.toml) in {0}")]
    Empty(String),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

/// Loads every `*.toml` in `dir`, sorted by name.
pub fn load_corpus(dir: &Path) -> Result<Vec<Scenario>, EvalError> {
    let display = dir.display().to_string();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| EvalError::Dir {
            path: display.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(EvalError::Empty(display));
    }
    paths.iter().map(|p| Scenario::load(p).map_err(EvalError::from)).collect()
}

/// Runs every scenario and scores the corpus.
pub fn evaluate(scenarios: &[Scenario], settings: &AnalysisSettings, mut progress: impl FnMut(&ScenarioResult)) -> Report {
    let results: Vec<ScenarioResult> = scenarios
        .iter()
        .map(|s| {
            let result = run_scenario(s, settings);
            progress(&result);
            result
        })
        .collect();
    Report {
        summary: summarise(&results),
        scenarios: results,
    }
}

/// Replays one scenario and scores its events.
pub(crate) fn run_scenario(scenario: &Scenario, settings: &AnalysisSettings) -> ScenarioResult {
    let mut analysis = ShardAnalysis::new(Arc::new(settings.clone()));
    let mut generator = TrafficGenerator::new(scenario);
    let mut log = EventLog::new(usize::MAX);
    let mut facts = Vec::new();
    let mut updates = Vec::new();
    let mut spans = 0u64;
    let mut resolved_at = HashMap::new();
    while generator.next_second(&mut facts) {
        spans += facts.len() as u64;
        analysis.observe(&facts, &mut updates);
        facts.clear();
        for update in updates.drain(..) {
            if let crate::detect::event::EventUpdate::Resolved { id, at_unix_nanos, .. } = &update {
                resolved_at.insert(id.clone(), *at_unix_nanos);
            }
            log.apply(update);
        }
    }
    score(scenario, &log.into_events(), &resolved_at, spans)
}

/// Until when (scenario seconds) the change `(deploy, change)` of
/// `operation` serves: the end of the rollout of the first later deploy
/// that does not carry it, the time the operation's traffic stops, or the
/// scenario's end.
fn serving_until(scenario: &Scenario, service: &ServiceSpec, deploy: usize, change: usize, operation: &str) -> u64 {
    let carried = service.carried_changes();
    let mut until = scenario.duration.as_secs();
    if let Some((_, d)) = service
        .deploys
        .iter()
        .enumerate()
        .skip(deploy + 1)
        .find(|(i, _)| !carried[i + 1].contains(&(deploy, change)))
    {
        until = until.min((d.at + d.rollout).as_secs());
    }
    let start = service.deploys[deploy].at;
    if let Some(stop) = service
        .rate_changes
        .iter()
        .filter(|r| r.operation == operation && r.factor <= 0.0 && r.at >= start)
        .map(|r| r.at.as_secs())
        .min()
    {
        until = until.min(stop);
    }
    until
}

fn seconds(unix_nanos: u64) -> f64 {
    unix_nanos.saturating_sub(EPOCH_UNIX_NANOS) as f64 / 1e9
}

fn score(scenario: &Scenario, all_events: &[DriftEvent], resolved_at: &HashMap<String, u64>, spans: u64) -> ScenarioResult {
    let events: Vec<&DriftEvent> = all_events.iter().filter(|e| e.kind == EventKind::LatencyRegression).collect();
    let peer_events: Vec<&DriftEvent> = all_events.iter().filter(|e| e.kind == EventKind::NewOutboundPeer).collect();
    let mut labels = Vec::new();
    // (service, operation) → start of the earliest labelled regression.
    let mut regressed_since: HashMap<(&str, &str), u64> = HashMap::new();
    for service in &scenario.services {
        for (d, deploy) in service.deploys.iter().enumerate() {
            for (c, change) in deploy.changes.iter().enumerate() {
                let Some(op) = service.operations.iter().find(|o| o.name == change.operation) else {
                    continue;
                };
                let rise = expected_p95_increase(op, change, scenario.seed);
                if rise <= 0.0 {
                    continue;
                }
                let at = deploy.at.as_secs();
                let entry = regressed_since.entry((service.name.as_str(), op.name.as_str())).or_insert(at);
                *entry = (*entry).min(at);
                let until = serving_until(scenario, service, d, c, &op.name);
                let outcome = detection(&events, &service.name, &op.name, &deploy.revision, at, until, resolved_at);
                labels.push(LabelResult {
                    service: service.name.clone(),
                    operation: op.name.clone(),
                    revision: deploy.revision.clone(),
                    deploy_at_s: at,
                    rate: op.rate,
                    expected_p95_increase: rise,
                    outcome,
                });
            }
        }
    }
    let false_alerts = events
        .iter()
        .filter(|e| {
            let op = e.operation.as_deref().unwrap_or("");
            // An event is true while a labelled regression of its
            // operation is in force (it may repeat for later revisions).
            regressed_since
                .get(&(e.service.as_str(), op))
                .is_none_or(|since| seconds(e.detected_at.unix_nanos()) < *since as f64)
        })
        .map(|e| FalseAlert {
            kind: e.kind,
            service: e.service.clone(),
            operation: e.operation.clone().unwrap_or_default(),
            peer: None,
            revision: e.revision.clone(),
            detected_at_s: seconds(e.detected_at.unix_nanos()),
            relative_increase: e.stats.as_ref().map_or(0.0, |s| s.relative_increase),
        })
        .collect();
    let (peer_labels, peer_false_alerts) = score_peers(scenario, &peer_events);
    let error_events: Vec<&DriftEvent> = all_events
        .iter()
        .filter(|e| e.kind == EventKind::ErrorRateRegression)
        .collect();
    let (error_labels, error_false_alerts) = score_errors(scenario, &error_events, resolved_at);
    let fanout_events: Vec<&DriftEvent> = all_events.iter().filter(|e| e.kind == EventKind::FanoutRegression).collect();
    let (fanout_labels, fanout_false_alerts) = score_fanout(scenario, &fanout_events, resolved_at);
    let (kind_labels, kind_false_alerts) = score_kinds(scenario, all_events);
    let mut false_alerts: Vec<FalseAlert> = false_alerts;
    false_alerts.extend(kind_false_alerts);
    false_alerts.extend(peer_false_alerts);
    false_alerts.extend(error_false_alerts);
    false_alerts.extend(fanout_false_alerts);
    ScenarioResult {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        services: scenario.services.len(),
        duration_s: scenario.duration.as_secs(),
        spans,
        events: events.len(),
        labels,
        peer_labels,
        error_labels,
        fanout_labels,
        kind_labels,
        error_services: scenario
            .services
            .iter()
            .filter(|s| {
                s.operations.iter().any(|o| o.errors > 0.0 || o.error_bursts_per_hour > 0.0)
                    || s.deploys.iter().flat_map(|d| &d.changes).any(|c| c.errors > 0.0)
            })
            .count(),
        false_alerts,
    }
}

/// When the events of `service`'s `operation` caught the labelled drift
/// that `revision` brought at `at` (seconds after it), and how its
/// incidents covered it until `until`.
fn detection(
    events: &[&DriftEvent],
    service: &str,
    operation: &str,
    revision: &str,
    at: u64,
    until: u64,
    resolved_at: &HashMap<String, u64>,
) -> Outcome {
    let of_operation = |e: &&&DriftEvent| e.service == service && e.operation.as_deref() == Some(operation);
    let hit = events
        .iter()
        .filter(of_operation)
        .filter(|e| e.revision == revision)
        .map(|e| seconds(e.detected_at.unix_nanos()) - at as f64)
        .filter(|delay| *delay >= 0.0)
        .min_by(f64::total_cmp);
    let incidents: Vec<(f64, Option<f64>, Option<String>)> = events
        .iter()
        .filter(of_operation)
        .map(|e| {
            (
                seconds(e.detected_at.unix_nanos()),
                resolved_at.get(&e.id).map(|r| seconds(*r)),
                e.resolution.as_ref().map(|r| r.reason.as_str().to_owned()),
            )
        })
        .collect();
    let lifecycle = hit.map(|delay| lifecycle(&incidents, at as f64 + delay, until as f64));
    Outcome {
        detected: hit.is_some(),
        delay_s: hit,
        serving_until_s: until,
        coverage: lifecycle.as_ref().and_then(|l| l.coverage),
        false_resolves: lifecycle.as_ref().map_or(0, |l| l.false_resolves),
        resolution: lifecycle.and_then(|l| l.resolution),
    }
}

struct Lifecycle {
    coverage: Option<f64>,
    false_resolves: usize,
    resolution: Option<String>,
}

/// Scores the incidents of one operation, (detected, resolved, reason) in
/// scenario seconds, against a drift detected at `detected` that served
/// until `until`.
fn lifecycle(incidents: &[(f64, Option<f64>, Option<String>)], detected: f64, until: f64) -> Lifecycle {
    let false_resolves = incidents
        .iter()
        .filter(|(_, resolved, _)| resolved.is_some_and(|r| r >= detected && r < until))
        .count();
    let coverage = (until > detected).then(|| {
        let firing: f64 = incidents
            .iter()
            .map(|(from, to, _)| {
                let (from, to) = (from.max(detected), to.unwrap_or(f64::INFINITY).min(until));
                (to - from).max(0.0)
            })
            .sum();
        (firing / (until - detected)).min(1.0)
    });
    let resolution = incidents
        .iter()
        .filter(|(fired, _, _)| *fired >= detected)
        .find_map(|(_, _, reason)| reason.clone());
    Lifecycle {
        coverage,
        false_resolves,
        resolution,
    }
}

/// Labels are the changes that raise an operation's share of failing
/// requests; any other `error_rate_regression` event, or one detected
/// before its label's deploy, is a false alert.
fn score_errors(
    scenario: &Scenario,
    events: &[&DriftEvent],
    resolved_at: &HashMap<String, u64>,
) -> (Vec<ErrorLabelResult>, Vec<FalseAlert>) {
    let mut labels = Vec::new();
    let mut raised_since: HashMap<(&str, &str), u64> = HashMap::new();
    for service in &scenario.services {
        for (d, deploy) in service.deploys.iter().enumerate() {
            for (c, change) in deploy.changes.iter().enumerate() {
                let Some(op) = service.operations.iter().find(|o| o.name == change.operation) else {
                    continue;
                };
                if change.errors <= op.errors {
                    continue;
                }
                let at = deploy.at.as_secs();
                let since = raised_since.entry((service.name.as_str(), op.name.as_str())).or_insert(at);
                *since = (*since).min(at);
                let until = serving_until(scenario, service, d, c, &op.name);
                let outcome = detection(events, &service.name, &op.name, &deploy.revision, at, until, resolved_at);
                labels.push(ErrorLabelResult {
                    service: service.name.clone(),
                    operation: op.name.clone(),
                    revision: deploy.revision.clone(),
                    deploy_at_s: at,
                    rate: op.rate,
                    errors_before: op.errors,
                    errors_after: change.errors,
                    outcome,
                });
            }
        }
    }
    let false_alerts = events
        .iter()
        .filter(|e| {
            raised_since
                .get(&(e.service.as_str(), e.operation.as_deref().unwrap_or("")))
                .is_none_or(|since| seconds(e.detected_at.unix_nanos()) < *since as f64)
        })
        .map(|e| FalseAlert {
            kind: e.kind,
            service: e.service.clone(),
            operation: e.operation.clone().unwrap_or_default(),
            peer: None,
            revision: e.revision.clone(),
            detected_at_s: seconds(e.detected_at.unix_nanos()),
            relative_increase: e.stats.as_ref().map_or(0.0, |s| s.relative_increase),
        })
        .collect();
    (labels, false_alerts)
}

/// Labels are the changes that make an operation's requests call a peer
/// more times each; any other `fanout_regression` event, or one detected
/// before its label's deploy, is a false alert.
fn score_fanout(
    scenario: &Scenario,
    events: &[&DriftEvent],
    resolved_at: &HashMap<String, u64>,
) -> (Vec<FanoutLabelResult>, Vec<FalseAlert>) {
    let mut labels = Vec::new();
    let mut raised_since: HashMap<(&str, &str, &str), u64> = HashMap::new();
    for service in &scenario.services {
        for (d, deploy) in service.deploys.iter().enumerate() {
            for (c, change) in deploy.changes.iter().enumerate() {
                let Some(op) = service.operations.iter().find(|o| o.name == change.operation) else {
                    continue;
                };
                for calls in &change.calls {
                    let Some(call) = op.calls.iter().find(|call| call.peer == calls.peer) else {
                        continue;
                    };
                    let before = call.mean_times();
                    let Some(times) = calls.times.filter(|t| f64::from(*t) > before) else {
                        continue;
                    };
                    let at = deploy.at.as_secs();
                    let since = raised_since
                        .entry((service.name.as_str(), op.name.as_str(), calls.peer.as_str()))
                        .or_insert(at);
                    *since = (*since).min(at);
                    let until = serving_until(scenario, service, d, c, &op.name);
                    let of_peer: Vec<&DriftEvent> =
                        events.iter().filter(|e| e.peer.as_deref() == Some(calls.peer.as_str())).copied().collect();
                    let outcome = detection(&of_peer, &service.name, &op.name, &deploy.revision, at, until, resolved_at);
                    labels.push(FanoutLabelResult {
                        service: service.name.clone(),
                        operation: op.name.clone(),
                        peer: calls.peer.clone(),
                        revision: deploy.revision.clone(),
                        deploy_at_s: at,
                        rate: op.rate,
                        calls_before: before,
                        calls_after: f64::from(times),
                        outcome,
                    });
                }
            }
        }
    }
    let false_alerts = events
        .iter()
        .filter(|e| {
            let key = (e.service.as_str(), e.operation.as_deref().unwrap_or(""), e.peer.as_deref().unwrap_or(""));
            raised_since
                .get(&key)
                .is_none_or(|since| seconds(e.detected_at.unix_nanos()) < *since as f64)
        })
        .map(|e| FalseAlert {
            kind: e.kind,
            service: e.service.clone(),
            operation: e.operation.clone().unwrap_or_default(),
            peer: e.peer.clone(),
            revision: e.revision.clone(),
            detected_at_s: seconds(e.detected_at.unix_nanos()),
            relative_increase: e.fanout.as_ref().map_or(0.0, |f| f.relative_increase),
        })
        .collect();
    (labels, false_alerts)
}

/// Labels: a change that makes requests repeat a non-idempotent call they
/// made at most once (`repeated_unsafe_call`, by peer), and a new call made
/// with a library the service never used (`new_dependency`, by scope). An
/// event of either kind that matches no label, by service, subject and
/// revision, is a false alert.
fn score_kinds(scenario: &Scenario, events: &[DriftEvent]) -> (Vec<KindLabelResult>, Vec<FalseAlert>) {
    let subject = |e: &DriftEvent| -> Option<String> {
        match e.kind {
            EventKind::RepeatedUnsafeCall => e.peer.clone(),
            EventKind::NewDependency => e.dependency.as_ref().map(|d| d.scope.clone()),
            _ => None,
        }
    };
    let mut labels = Vec::new();
    for service in &scenario.services {
        let mut scopes: std::collections::HashSet<&str> =
            service.operations.iter().flat_map(|o| &o.calls).filter_map(|c| c.scope.as_deref()).collect();
        for deploy in &service.deploys {
            let mut found = Vec::new();
            for change in &deploy.changes {
                let Some(op) = service.operations.iter().find(|o| o.name == change.operation) else {
                    continue;
                };
                for calls in change.calls.iter().filter(|c| c.repeat.is_some_and(|r| r > 0.0)) {
                    let once = op.calls.iter().any(|c| {
                        c.peer == calls.peer && c.non_idempotent && c.times == 1 && c.times_spread == 0 && c.repeat == 0.0
                    });
                    if once {
                        found.push((EventKind::RepeatedUnsafeCall, &change.operation, calls.peer.as_str()));
                    }
                }
            }
            for call in &deploy.new_calls {
                if let Some(scope) = call.scope.as_deref()
                    && scopes.insert(scope)
                {
                    found.push((EventKind::NewDependency, &call.operation, scope));
                }
            }
            let at = deploy.at.as_secs();
            for (kind, operation, what) in found {
                let hit = events
                    .iter()
                    .filter(|e| {
                        e.kind == kind
                            && e.service == service.name
                            && e.revision == deploy.revision
                            && subject(e).as_deref() == Some(what)
                    })
                    .map(|e| seconds(e.detected_at.unix_nanos()) - at as f64)
                    .filter(|delay| *delay >= 0.0)
                    .min_by(f64::total_cmp);
                labels.push(KindLabelResult {
                    kind,
                    service: service.name.clone(),
                    operation: operation.clone(),
                    subject: what.to_owned(),
                    revision: deploy.revision.clone(),
                    deploy_at_s: at,
                    detected: hit.is_some(),
                    delay_s: hit,
                });
            }
        }
    }
    let false_alerts = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RepeatedUnsafeCall | EventKind::NewDependency))
        .filter(|e| {
            !labels.iter().any(|l| {
                l.kind == e.kind && l.service == e.service && l.revision == e.revision && subject(e).as_deref() == Some(&l.subject)
            })
        })
        .map(|e| FalseAlert {
            kind: e.kind,
            service: e.service.clone(),
            operation: e.operation.clone().unwrap_or_default(),
            peer: subject(e),
            revision: e.revision.clone(),
            detected_at_s: seconds(e.detected_at.unix_nanos()),
            relative_increase: 0.0,
        })
        .collect();
    (labels, false_alerts)
}

/// Labels are the peers each deploy's `new_calls` introduce that the
/// service had not called before; any other `new_outbound_peer` event is a
/// false alert.
fn score_peers(scenario: &Scenario, events: &[&DriftEvent]) -> (Vec<PeerLabelResult>, Vec<FalseAlert>) {
    let mut labels = Vec::new();
    for service in &scenario.services {
        let mut called: std::collections::HashSet<&str> = service
            .operations
            .iter()
            .flat_map(|o| &o.calls)
            .map(|c| c.peer.as_str())
            .collect();
        for deploy in &service.deploys {
            for new_call in &deploy.new_calls {
                if !called.insert(new_call.peer.as_str()) {
                    continue;
                }
                let at = deploy.at.as_secs();
                let hit = events
                    .iter()
                    .filter(|e| {
                        e.service == service.name
                            && e.peer.as_deref() == Some(new_call.peer.as_str())
                            && e.revision == deploy.revision
                    })
                    .map(|e| seconds(e.detected_at.unix_nanos()) - at as f64)
                    .filter(|delay| *delay >= 0.0)
                    .min_by(f64::total_cmp);
                labels.push(PeerLabelResult {
                    service: service.name.clone(),
                    peer: new_call.peer.clone(),
                    revision: deploy.revision.clone(),
                    deploy_at_s: at,
                    detected: hit.is_some(),
                    delay_s: hit,
                });
            }
        }
    }
    let false_alerts = events
        .iter()
        .filter(|e| {
            !labels
                .iter()
                .any(|l| l.service == e.service && Some(l.peer.as_str()) == e.peer.as_deref() && l.revision == e.revision)
        })
        .map(|e| FalseAlert {
            kind: e.kind,
            service: e.service.clone(),
            operation: e.operation.clone().unwrap_or_default(),
            peer: e.peer.clone(),
            revision: e.revision.clone(),
            detected_at_s: seconds(e.detected_at.unix_nanos()),
            relative_increase: 0.0,
        })
        .collect();
    (labels, false_alerts)
}

fn summarise(results: &[ScenarioResult]) -> Summary {
    let labels: Vec<&LabelResult> = results.iter().flat_map(|r| &r.labels).collect();
    let detected = labels.iter().filter(|l| l.outcome.detected).count();
    let target: Vec<&&LabelResult> = labels
        .iter()
        .filter(|l| l.expected_p95_increase >= TARGET_MIN_P95_INCREASE && l.rate >= TARGET_MIN_RATE)
        .collect();
    let target_detected = target.iter().filter(|l| l.outcome.detected).count();
    let latency_false = |r: &&ScenarioResult| {
        r.false_alerts
            .iter()
            .filter(|f| f.kind == EventKind::LatencyRegression)
            .count()
    };
    let false_alerts: usize = results.iter().map(|r| latency_false(&r)).sum();
    let peer_labels: Vec<&PeerLabelResult> = results.iter().flat_map(|r| &r.peer_labels).collect();
    let peer_detected = peer_labels.iter().filter(|l| l.detected).count();
    let false_of = |kind: EventKind| -> usize {
        results
            .iter()
            .flat_map(|r| &r.false_alerts)
            .filter(|f| f.kind == kind)
            .count()
    };
    let peer_false_alerts = false_of(EventKind::NewOutboundPeer);
    let error_labels: Vec<&ErrorLabelResult> = results.iter().flat_map(|r| &r.error_labels).collect();
    let error_detected = error_labels.iter().filter(|l| l.outcome.detected).count();
    let error_target: Vec<&&ErrorLabelResult> = error_labels
        .iter()
        .filter(|l| l.errors_before <= TARGET_MAX_BASE_ERRORS && l.errors_after >= TARGET_MIN_ERRORS && l.rate >= TARGET_MIN_RATE)
        .collect();
    let error_false_alerts = false_of(EventKind::ErrorRateRegression);
    let error_service_weeks: f64 = results
        .iter()
        .map(|r| r.error_services as f64 * r.duration_s as f64 / WEEK_SECONDS)
        .sum();
    let service_weeks: f64 = results
        .iter()
        .map(|r| r.services as f64 * r.duration_s as f64 / WEEK_SECONDS)
        .sum();
    let mut delays: Vec<f64> = labels.iter().filter_map(|l| l.outcome.delay_s).collect();
    delays.sort_by(f64::total_cmp);
    let quantile = |q: f64| (!delays.is_empty()).then(|| delays[((delays.len() - 1) as f64 * q).round() as usize]);
    let (mut covered, mut serving) = (0.0, 0.0);
    for l in &labels {
        if let (Some(coverage), Some(delay)) = (l.outcome.coverage, l.outcome.delay_s) {
            let time = l.outcome.serving_until_s as f64 - (l.deploy_at_s as f64 + delay);
            covered += coverage * time;
            serving += time;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let fanout_labels: Vec<&FanoutLabelResult> = results.iter().flat_map(|r| &r.fanout_labels).collect();
    let fanout_target: Vec<&&FanoutLabelResult> = fanout_labels
        .iter()
        .filter(|l| l.calls_before <= TARGET_MAX_BASE_CALLS && l.calls_after >= TARGET_MIN_CALLS && l.rate >= TARGET_MIN_RATE)
        .collect();
    let fanout_false_alerts = false_of(EventKind::FanoutRegression);
    let kinds = [EventKind::RepeatedUnsafeCall, EventKind::NewDependency]
        .into_iter()
        .map(|kind| {
            let labels: Vec<&KindLabelResult> =
                results.iter().flat_map(|r| &r.kind_labels).filter(|l| l.kind == kind).collect();
            let detected = labels.iter().filter(|l| l.detected).count();
            let false_alerts = false_of(kind);
            KindSummary {
                kind,
                labels: labels.len(),
                detected,
                recall: ratio(detected, labels.len()),
                false_alerts,
                false_alerts_per_service_week: per_week(false_alerts, service_weeks),
                median_delay_s: median(labels.iter().filter_map(|l| l.delay_s)),
            }
        })
        .collect();
    Summary {
        scenarios: results.len(),
        labels: labels.len(),
        detected,
        recall: ratio(detected, labels.len()),
        target_class_labels: target.len(),
        target_class_recall: ratio(target_detected, target.len()),
        false_alerts,
        service_weeks,
        false_alerts_per_service_week: per_week(false_alerts, service_weeks),
        median_delay_s: quantile(0.5),
        p90_delay_s: quantile(0.9),
        peer_labels: peer_labels.len(),
        peer_recall: ratio(peer_detected, peer_labels.len()),
        peer_false_alerts,
        peer_median_delay_s: median(peer_labels.iter().filter_map(|l| l.delay_s)),
        false_resolves: labels.iter().map(|l| l.outcome.false_resolves).sum(),
        coverage: if serving > 0.0 { covered / serving } else { 1.0 },
        min_coverage: labels.iter().filter_map(|l| l.outcome.coverage).min_by(f64::total_cmp),
        error_labels: error_labels.len(),
        error_recall: ratio(error_detected, error_labels.len()),
        error_target_class_labels: error_target.len(),
        error_target_class_recall: ratio(error_target.iter().filter(|l| l.outcome.detected).count(), error_target.len()),
        error_false_alerts,
        error_service_weeks,
        error_false_alerts_per_service_week: per_week(error_false_alerts, error_service_weeks),
        error_median_delay_s: median(error_labels.iter().filter_map(|l| l.outcome.delay_s)),
        error_false_resolves: error_labels.iter().map(|l| l.outcome.false_resolves).sum(),
        fanout_labels: fanout_labels.len(),
        fanout_recall: ratio(fanout_labels.iter().filter(|l| l.outcome.detected).count(), fanout_labels.len()),
        fanout_target_class_labels: fanout_target.len(),
        fanout_target_class_recall: ratio(fanout_target.iter().filter(|l| l.outcome.detected).count(), fanout_target.len()),
        fanout_false_alerts,
        fanout_false_alerts_per_service_week: per_week(fanout_false_alerts, service_weeks),
        fanout_median_delay_s: median(fanout_labels.iter().filter_map(|l| l.outcome.delay_s)),
        fanout_false_resolves: fanout_labels.iter().map(|l| l.outcome.false_resolves).sum(),
        kinds,
    }
}

impl Report {
    /// A plain-text table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>5} {:>11} {:>7} {:>6} {:>8} {:>9} {:>6} {:>7} {:>6} {:>7} {:>6}",
            "scenario",
            "service",
            "spans",
            "regressions",
            "caught",
            "false",
            "delay",
            "new peers",
            "false",
            "errors",
            "false",
            "fan-out",
            "false"
        );
        for r in &self.scenarios {
            let caught = r.labels.iter().filter(|l| l.outcome.detected).count();
            let mut delays: Vec<f64> = r.labels.iter().filter_map(|l| l.outcome.delay_s).collect();
            delays.sort_by(f64::total_cmp);
            let delay = delays.get(delays.len() / 2).map_or("-".to_owned(), |d| format!("{d:.0}s"));
            let latency_false = r
                .false_alerts
                .iter()
                .filter(|f| f.kind == EventKind::LatencyRegression)
                .count();
            let peers_caught = r.peer_labels.iter().filter(|l| l.detected).count();
            let errors_caught = r.error_labels.iter().filter(|l| l.outcome.detected).count();
            let fanout_caught = r.fanout_labels.iter().filter(|l| l.outcome.detected).count();
            let false_of = |kind| r.false_alerts.iter().filter(|f| f.kind == kind).count();
            let _ = writeln!(
                out,
                "{:<34} {:>8} {:>5} {:>11} {:>7} {:>6} {:>8} {:>9} {:>6} {:>7} {:>6} {:>7} {:>6}",
                r.name,
                format!("{}x{}", r.services, human_duration(r.duration_s)),
                human_count(r.spans),
                r.labels.len(),
                caught,
                latency_false,
                delay,
                format!("{peers_caught}/{}", r.peer_labels.len()),
                false_of(EventKind::NewOutboundPeer),
                format!("{errors_caught}/{}", r.error_labels.len()),
                false_of(EventKind::ErrorRateRegression),
                format!("{fanout_caught}/{}", r.fanout_labels.len()),
                false_of(EventKind::FanoutRegression)
            );
        }
        let s = &self.summary;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "recall (all labelled regressions):    {:.1}% ({}/{})",
            s.recall * 100.0,
            s.detected,
            s.labels
        );
        let _ = writeln!(
            out,
            "recall (p95 >= +30% at >= 20 req/s):  {:.1}% of {}",
            s.target_class_recall * 100.0,
            s.target_class_labels
        );
        let _ = writeln!(
            out,
            "false alerts per service-week:        {:.2} ({} in {:.2} service-weeks)",
            s.false_alerts_per_service_week, s.false_alerts, s.service_weeks
        );
        let fmt = |d: Option<f64>| d.map_or("-".to_owned(), |d| format!("{d:.0}s"));
        let _ = writeln!(
            out,
            "detection delay after deploy:         median {}, p90 {}",
            fmt(s.median_delay_s),
            fmt(s.p90_delay_s)
        );
        let _ = writeln!(out, "false resolves (drift still serving): {}", s.false_resolves);
        let _ = writeln!(
            out,
            "coverage after detection:             {:.2}% of serving time (lowest {})",
            s.coverage * 100.0,
            s.min_coverage.map_or("-".to_owned(), |c| format!("{:.2}%", c * 100.0))
        );
        let _ = writeln!(
            out,
            "new outbound peers reported:         {:.1}% of {}, {} false, median delay {}",
            s.peer_recall * 100.0,
            s.peer_labels,
            s.peer_false_alerts,
            fmt(s.peer_median_delay_s)
        );
        let _ = writeln!(
            out,
            "error-rate regressions caught:        {:.1}% of {}; rises from <= 0.5% to >= 2% at >= 20 req/s: {:.1}% of {}",
            s.error_recall * 100.0,
            s.error_labels,
            s.error_target_class_recall * 100.0,
            s.error_target_class_labels
        );
        let _ = writeln!(
            out,
            "error-rate false alerts:              {:.2} per service-week with failing requests ({} in {:.2}), median delay {}, {} false resolves",
            s.error_false_alerts_per_service_week,
            s.error_false_alerts,
            s.error_service_weeks,
            fmt(s.error_median_delay_s),
            s.error_false_resolves
        );
        let _ = writeln!(
            out,
            "fan-out regressions caught:           {:.1}% of {}; rises from <= 1 to >= 5 calls at >= 20 req/s: {:.1}% of {}",
            s.fanout_recall * 100.0,
            s.fanout_labels,
            s.fanout_target_class_recall * 100.0,
            s.fanout_target_class_labels
        );
        let _ = writeln!(
            out,
            "fan-out false alerts:                 {:.2} per service-week ({} in {:.2}), median delay {}, {} false resolves",
            s.fanout_false_alerts_per_service_week,
            s.fanout_false_alerts,
            s.service_weeks,
            fmt(s.fanout_median_delay_s),
            s.fanout_false_resolves
        );
        for kind in &s.kinds {
            let _ = writeln!(
                out,
                "{:<38}{:.1}% of {}, {} false ({:.2} per service-week), median delay {}",
                format!("{} reported:", kind.kind.as_str()),
                kind.recall * 100.0,
                kind.labels,
                kind.false_alerts,
                kind.false_alerts_per_service_week,
                fmt(kind.median_delay_s)
            );
        }
        out
    }
}

/// Events per service-week, 0 without any.
fn per_week(count: usize, service_weeks: f64) -> f64 {
    if service_weeks > 0.0 { count as f64 / service_weeks } else { 0.0 }
}

/// The median of `delays` (the lower one of an even count).
fn median(delays: impl Iterator<Item = f64>) -> Option<f64> {
    let mut delays: Vec<f64> = delays.collect();
    delays.sort_by(f64::total_cmp);
    delays.get(delays.len().saturating_sub(1) / 2).copied()
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{}m", s / 60),
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.0}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.0}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays a corpus scenario and returns its events.
    fn events_of(name: &str) -> Vec<DriftEvent> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(name);
        let scenario = Scenario::load(&path).expect("scenario");
        let settings = AnalysisSettings::from_config(&crate::config::Config::default());
        let mut analysis = ShardAnalysis::new(Arc::new(settings));
        let mut generator = TrafficGenerator::new(&scenario);
        let (mut facts, mut updates, mut log) = (Vec::new(), Vec::new(), EventLog::new(usize::MAX));
        while generator.next_second(&mut facts) {
            analysis.observe(&facts, &mut updates);
            facts.clear();
            for update in updates.drain(..) {
                log.apply(update);
            }
        }
        log.into_events()
    }

    fn only(events: &[DriftEvent]) -> &DriftEvent {
        assert_eq!(events.len(), 1, "one incident: {events:#?}");
        &events[0]
    }

    #[test]
    fn a_tail_only_regression_keeps_firing_while_it_serves() {
        let events = events_of("lifecycle-tail-regression-20rps.toml");
        let event = only(&events);
        assert_eq!(event.state, crate::detect::event::EventState::Firing, "{event:#?}");
        assert_eq!(event.revision, "cart-v2");
    }

    #[test]
    fn a_later_revision_that_still_drifts_joins_the_incident() {
        let events = events_of("lifecycle-carried-across-deploy.toml");
        let event = only(&events);
        assert_eq!(event.state, crate::detect::event::EventState::Firing);
        assert_eq!(event.revision, "cart-v2", "the revision that introduced it");
        assert_eq!(event.seen_in, vec!["cart-v3".to_owned()]);
    }

    #[test]
    fn resolutions_say_how_the_drift_ended() {
        use crate::detect::event::{Resolution, ResolutionReason};
        for (scenario, reason, revision, not_before_s) in [
            ("lifecycle-fix-deploy.toml", ResolutionReason::Fixed, Some("cart-v3"), 56 * 60),
            (
                "lifecycle-rollback.toml",
                ResolutionReason::RolledBack,
                Some("rev-1"),
                51 * 60,
            ),
            ("lifecycle-traffic-stops.toml", ResolutionReason::TrafficGone, None, 50 * 60),
        ] {
            let events = events_of(scenario);
            let event = only(&events);
            assert_eq!(
                event.resolution,
                Some(Resolution {
                    reason,
                    revision: revision.map(str::to_owned)
                }),
                "{scenario}: {event:#?}"
            );
            let resolved = event.resolved_at.expect("resolved").unix_nanos();
            let resolved_s = resolved.checked_sub(EPOCH_UNIX_NANOS).expect("after the epoch") / 1_000_000_000;
            assert!(
                resolved_s >= not_before_s,
                "{scenario}: resolved at {resolved_s}s, while the drift still served"
            );
        }
    }
}
