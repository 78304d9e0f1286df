//! `driftwatch eval DIR`: replays every scenario of a corpus through the
//! same analysis and detectors the sidecar runs, in event time, and scores
//! the events against the scenarios' labels: recall, false alerts per
//! service-week, and detection delay (event time from deploy to alert).

pub mod scenario;
pub mod traffic;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::analyze::service::AnalysisSettings;
use crate::analyze::shard::ShardAnalysis;
use crate::detect::event::{DriftEvent, EventKind, EventLog};
use scenario::{Scenario, ScenarioError};
use traffic::{EPOCH_UNIX_NANOS, TrafficGenerator, expected_p95_increase};

/// Regressions of at least this p95 rise, on operations of at least this
/// rate, form the headline recall class.
pub const TARGET_MIN_P95_INCREASE: f64 = 0.295;
pub const TARGET_MIN_RATE: f64 = 20.0;
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
    pub detected: bool,
    /// Event time from the start of the rollout to the alert.
    pub delay_s: Option<f64>,
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
pub fn run_scenario(scenario: &Scenario, settings: &AnalysisSettings) -> ScenarioResult {
    let mut analysis = ShardAnalysis::new(Arc::new(settings.clone()));
    let mut generator = TrafficGenerator::new(scenario);
    let mut log = EventLog::new(usize::MAX);
    let mut facts = Vec::new();
    let mut updates = Vec::new();
    let mut spans = 0u64;
    while generator.next_second(&mut facts) {
        spans += facts.len() as u64;
        analysis.observe(&facts, &mut updates);
        facts.clear();
        for update in updates.drain(..) {
            log.apply(update);
        }
    }
    score(scenario, log.list(), spans)
}

fn seconds(unix_nanos: u64) -> f64 {
    unix_nanos.saturating_sub(EPOCH_UNIX_NANOS) as f64 / 1e9
}

fn score(scenario: &Scenario, all_events: &[DriftEvent], spans: u64) -> ScenarioResult {
    let events: Vec<&DriftEvent> = all_events.iter().filter(|e| e.kind == EventKind::LatencyRegression).collect();
    let peer_events: Vec<&DriftEvent> = all_events.iter().filter(|e| e.kind == EventKind::NewOutboundPeer).collect();
    let mut labels = Vec::new();
    // (service, operation) → start of the earliest labelled regression.
    let mut regressed_since: HashMap<(&str, &str), u64> = HashMap::new();
    for service in &scenario.services {
        for deploy in &service.deploys {
            for change in &deploy.changes {
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
                let hit = events
                    .iter()
                    .filter(|e| {
                        e.service == service.name
                            && e.operation.as_deref() == Some(op.name.as_str())
                            && e.revision == deploy.revision
                    })
                    .map(|e| seconds(e.detected_unix_nanos) - at as f64)
                    .filter(|delay| *delay >= 0.0)
                    .min_by(f64::total_cmp);
                labels.push(LabelResult {
                    service: service.name.clone(),
                    operation: op.name.clone(),
                    revision: deploy.revision.clone(),
                    deploy_at_s: at,
                    rate: op.rate,
                    expected_p95_increase: rise,
                    detected: hit.is_some(),
                    delay_s: hit,
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
                .is_none_or(|since| seconds(e.detected_unix_nanos) < *since as f64)
        })
        .map(|e| FalseAlert {
            kind: e.kind,
            service: e.service.clone(),
            operation: e.operation.clone().unwrap_or_default(),
            peer: None,
            revision: e.revision.clone(),
            detected_at_s: seconds(e.detected_unix_nanos),
            relative_increase: e.stats.as_ref().map_or(0.0, |s| s.relative_increase),
        })
        .collect();
    let (peer_labels, peer_false_alerts) = score_peers(scenario, &peer_events);
    let mut false_alerts: Vec<FalseAlert> = false_alerts;
    false_alerts.extend(peer_false_alerts);
    ScenarioResult {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        services: scenario.services.len(),
        duration_s: scenario.duration.as_secs(),
        spans,
        events: events.len(),
        labels,
        peer_labels,
        false_alerts,
    }
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
                    .map(|e| seconds(e.detected_unix_nanos) - at as f64)
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
            detected_at_s: seconds(e.detected_unix_nanos),
            relative_increase: 0.0,
        })
        .collect();
    (labels, false_alerts)
}

fn summarise(results: &[ScenarioResult]) -> Summary {
    let labels: Vec<&LabelResult> = results.iter().flat_map(|r| &r.labels).collect();
    let detected = labels.iter().filter(|l| l.detected).count();
    let target: Vec<&&LabelResult> = labels
        .iter()
        .filter(|l| l.expected_p95_increase >= TARGET_MIN_P95_INCREASE && l.rate >= TARGET_MIN_RATE)
        .collect();
    let target_detected = target.iter().filter(|l| l.detected).count();
    let latency_false = |r: &&ScenarioResult| {
        r.false_alerts
            .iter()
            .filter(|f| f.kind == EventKind::LatencyRegression)
            .count()
    };
    let false_alerts: usize = results.iter().map(|r| latency_false(&r)).sum();
    let peer_labels: Vec<&PeerLabelResult> = results.iter().flat_map(|r| &r.peer_labels).collect();
    let peer_detected = peer_labels.iter().filter(|l| l.detected).count();
    let peer_false_alerts: usize = results.iter().map(|r| r.false_alerts.len() - latency_false(&r)).sum();
    let mut peer_delays: Vec<f64> = peer_labels.iter().filter_map(|l| l.delay_s).collect();
    peer_delays.sort_by(f64::total_cmp);
    let service_weeks: f64 = results
        .iter()
        .map(|r| r.services as f64 * r.duration_s as f64 / WEEK_SECONDS)
        .sum();
    let mut delays: Vec<f64> = labels.iter().filter_map(|l| l.delay_s).collect();
    delays.sort_by(f64::total_cmp);
    let quantile = |q: f64| (!delays.is_empty()).then(|| delays[((delays.len() - 1) as f64 * q).round() as usize]);
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Summary {
        scenarios: results.len(),
        labels: labels.len(),
        detected,
        recall: ratio(detected, labels.len()),
        target_class_labels: target.len(),
        target_class_recall: ratio(target_detected, target.len()),
        false_alerts,
        service_weeks,
        false_alerts_per_service_week: if service_weeks > 0.0 {
            false_alerts as f64 / service_weeks
        } else {
            0.0
        },
        median_delay_s: quantile(0.5),
        p90_delay_s: quantile(0.9),
        peer_labels: peer_labels.len(),
        peer_recall: ratio(peer_detected, peer_labels.len()),
        peer_false_alerts,
        peer_median_delay_s: peer_delays.get(peer_delays.len().saturating_sub(1) / 2).copied(),
    }
}

impl Report {
    /// A plain-text table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>5} {:>11} {:>7} {:>6} {:>8} {:>9} {:>6}",
            "scenario", "service", "spans", "regressions", "caught", "false", "delay", "new peers", "false"
        );
        for r in &self.scenarios {
            let caught = r.labels.iter().filter(|l| l.detected).count();
            let mut delays: Vec<f64> = r.labels.iter().filter_map(|l| l.delay_s).collect();
            delays.sort_by(f64::total_cmp);
            let delay = delays.get(delays.len() / 2).map_or("-".to_owned(), |d| format!("{d:.0}s"));
            let latency_false = r
                .false_alerts
                .iter()
                .filter(|f| f.kind == EventKind::LatencyRegression)
                .count();
            let peers_caught = r.peer_labels.iter().filter(|l| l.detected).count();
            let _ = writeln!(
                out,
                "{:<34} {:>8} {:>5} {:>11} {:>7} {:>6} {:>8} {:>9} {:>6}",
                r.name,
                format!("{}x{}", r.services, human_duration(r.duration_s)),
                human_count(r.spans),
                r.labels.len(),
                caught,
                latency_false,
                delay,
                format!("{peers_caught}/{}", r.peer_labels.len()),
                r.false_alerts.len() - latency_false
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
        let _ = writeln!(
            out,
            "new outbound peers reported:         {:.1}% of {}, {} false, median delay {}",
            s.peer_recall * 100.0,
            s.peer_labels,
            s.peer_false_alerts,
            fmt(s.peer_median_delay_s)
        );
        out
    }
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
