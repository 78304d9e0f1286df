//! Snapshots of a service's analysis state, so a restart (or a new pod of
//! the next revision) keeps the baselines: the revision timeline, every
//! latency series as one histogram plus its per-window moments, and the
//! peers the service is known to call.
//!
//! Histograms are stored as their recorded (value, count) buckets: a few
//! hundred pairs, exact, and independent of the histogram's memory layout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::dependency::KnownScope;
use crate::detect::event::{DriftEvent, EventKind, fingerprint_of};
use crate::detect::stats::{LatencyHistogram, new_histogram};
use crate::extract::ServiceKey;

/// Brings restored detector state in line with the stored events before the
/// shards start, so every firing event resolves after a crash:
///
/// * a drift the snapshot holds whose event is not firing in the store (it
///   resolved after the snapshot, or it fired and was lost before the
///   event was written) is dropped: if it still drifts, it is detected and
///   announced anew;
/// * a firing event that no snapshot holds (it fired after the last flush,
///   then the process died) is held again, judged against the last good
///   revision before it, and resolves like any other.
pub(crate) fn reconcile(snapshots: &mut Vec<ServiceSnapshot>, firing: &[&DriftEvent]) {
    let held = |s: &ServiceSnapshot, fingerprint: &str| s.firing.iter().any(|f| fingerprint_of(&f.event_id) == fingerprint);
    for snapshot in snapshots.iter_mut() {
        let key = snapshot.key();
        snapshot.firing.retain(|f| {
            firing
                .iter()
                .any(|e| e.service_key() == key && e.fingerprint == fingerprint_of(&f.event_id))
        });
    }
    for event in firing {
        if snapshots
            .iter()
            .any(|s| s.holds_service_of(event) && held(s, &event.fingerprint))
        {
            continue;
        }
        let index = match snapshots.iter().position(|s| s.holds_service_of(event)) {
            Some(i) => i,
            None => {
                snapshots.push(ServiceSnapshot::empty(
                    &event.service,
                    event.environment.as_deref(),
                    event.detected_at.unix_nanos(),
                ));
                snapshots.len() - 1
            }
        };
        let snapshot = &mut snapshots[index];
        // Events name full SHAs; spans may name the same commit abbreviated.
        let known = |full: &str| {
            snapshot
                .revisions
                .iter()
                .find(|r| full == r.revision || (r.revision.len() >= 7 && full.starts_with(&r.revision)))
                .map(|r| r.revision.clone())
        };
        let revision = known(&event.revision).unwrap_or_else(|| event.revision.clone());
        let seen_in = event.seen_in.iter().filter_map(|r| known(r)).collect();
        let (operation, peer, reasons, first_seen) = match event.kind {
            EventKind::NewOutboundPeer => (
                None,
                event.peer.clone(),
                event.outbound.as_ref().map(|o| o.reasons.clone()).unwrap_or_default(),
                event.onset.unix_nanos(),
            ),
            EventKind::NewDependency => (None, None, Vec::new(), event.onset.unix_nanos()),
            EventKind::RepeatedUnsafeCall | EventKind::FanoutRegression => {
                (event.operation.clone(), event.peer.clone(), Vec::new(), event.onset.unix_nanos())
            }
            EventKind::LatencyRegression | EventKind::ErrorRateRegression => {
                (event.operation.clone(), None, Vec::new(), event.onset.unix_nanos())
            }
        };
        let scope = event.dependency.as_ref().map(|d| d.scope.clone());
        let baseline = event.stats.as_ref().and_then(baseline_of).or_else(|| {
            let fanout = event.fanout.as_ref()?;
            Some(fanout.baseline.histogram.iter().map(|&(calls, n)| (u64::from(calls), n)).collect())
        });
        let calls_mean = event.fanout.as_ref().map(|f| f.baseline.mean);
        let error_baseline = event
            .stats
            .as_ref()
            .and_then(|s| Some((s.error_rate.as_ref()?.baseline_errors, s.baseline.count)));
        snapshot.firing.push(FiringSnapshot {
            event_id: event.id.clone(),
            kind: Some(event.kind),
            error_baseline,
            revision,
            operation,
            peer,
            reasons,
            first_seen,
            baseline,
            seen_in,
            scope,
            calls_mean,
        });
    }
}

/// The baseline an event fired against, rebuilt from the distribution it
/// carries (shares of the baseline's spans over log-spaced bins, each taken
/// at its bin's geometric middle): close enough to judge whether serving
/// traffic is back within half the margins.
fn baseline_of(stats: &crate::detect::event::LatencyStats) -> Option<Vec<(u64, u64)>> {
    let distribution = stats.distribution.as_ref()?;
    let count = stats.baseline.count as f64;
    let buckets: Vec<(u64, u64)> = distribution
        .baseline
        .iter()
        .zip(distribution.edges_ms.windows(2))
        .filter_map(|(share, edges)| {
            let spans = (share * count).round() as u64;
            let micros = ((edges[0] * edges[1]).max(0.0).sqrt() * 1000.0).round() as u64;
            (spans > 0).then_some((micros.max(1), spans))
        })
        .collect();
    (!buckets.is_empty()).then_some(buckets)
}

/// The snapshot format version, stored inside each snapshot.
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceSnapshot {
    pub version: u32,
    pub service: String,
    /// `deployment.environment.name`, if the service's spans name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub watermark: u64,
    pub first_seen: Option<u64>,
    pub revisions: Vec<RevisionSnapshot>,
    pub series: Vec<SeriesSnapshot>,
    pub peers: Vec<PeerSnapshot>,
    /// Instrumentation scopes seen within the lookback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<ScopeSnapshot>,
    /// Drifts firing when the snapshot was taken, so they resolve after a
    /// restart instead of firing forever.
    #[serde(default)]
    pub firing: Vec<FiringSnapshot>,
    /// Calls per request to each peer, the fan-out detector's baselines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallsSnapshot>,
    /// Requests that made and repeated an unsafe call, the repeated-call
    /// detector's baselines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<RepeatSnapshot>,
    /// What carried a drift, firing or resolved: never a baseline again,
    /// after a restart as before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regressed: Vec<RegressedSnapshot>,
    /// Revisions whose rise in an operation's latency or error rate had
    /// not yet fired: no baseline for the next revision, after a restart
    /// as before it (`peer` is always absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsettled: Vec<RegressedSnapshot>,
}

/// A revision that carried a drift of `kind` in `operation` (and, for
/// fan-out, in its calls to `peer`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegressedSnapshot {
    pub kind: EventKind,
    pub revision: String,
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// Calls per request of one (revision, operation, peer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallsSnapshot {
    pub revision: String,
    pub operation: String,
    pub peer: String,
    /// (calls, requests) per bucket, a bucket named by its smallest value.
    pub buckets: Vec<(u64, u64)>,
    pub mean: f64,
}

/// The unsafe calls of one (revision, operation, peer): requests that made
/// it, those that repeated it, the most calls in one, and the first and
/// last repeat (event time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RepeatSnapshot {
    pub revision: String,
    pub operation: String,
    pub peer: String,
    pub counts: [u64; 5],
}

impl CallsSnapshot {
    /// Requests counted.
    pub(crate) fn requests(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Calls made in them (the mean times the requests).
    pub(crate) fn calls(&self) -> f64 {
        if self.mean.is_finite() { self.mean * self.requests() as f64 } else { 0.0 }
    }

    /// The calls per request of a sum over replicas ([`add_calls`]):
    /// requests per bucket, and the calls made in them.
    pub(crate) fn summed(operation: &str, revision: &str, peer: &str, buckets: &BTreeMap<u64, u64>, calls: f64) -> CallsSnapshot {
        let requests: u64 = buckets.values().sum();
        CallsSnapshot {
            revision: revision.to_owned(),
            operation: operation.to_owned(),
            peer: peer.to_owned(),
            buckets: buckets.iter().map(|(b, n)| (*b, *n)).collect(),
            mean: if requests == 0 { 0.0 } else { calls / requests as f64 },
        }
    }
}

/// Adds `other`'s requests per bucket and calls to a sum over replicas:
/// the sum's mean is then [`CallsSnapshot::summed`]'s, exactly.
pub(crate) fn add_calls(buckets: &mut BTreeMap<u64, u64>, calls: &mut f64, other: &CallsSnapshot) {
    for &(bucket, requests) in &other.buckets {
        *buckets.entry(bucket).or_default() += requests;
    }
    *calls += other.calls();
}

/// Adds `other`'s repeat counts ([`RepeatSnapshot::counts`]) to `into`:
/// requests and repeats add up, the most calls in one request and the last
/// repeat widen, and the first repeat is the earliest of those that
/// repeated.
pub(crate) fn add_repeat_counts(into: &mut [u64; 5], other: &[u64; 5]) {
    let [requests, repeated, max_calls, first, last] = *other;
    into[0] += requests;
    if repeated > 0 {
        into[3] = if into[1] == 0 { first } else { into[3].min(first) };
    }
    into[1] += repeated;
    into[2] = into[2].max(max_calls);
    into[4] = into[4].max(last);
}

impl ServiceSnapshot {
    /// The service and environment the snapshot is of.
    pub(crate) fn key(&self) -> ServiceKey {
        ServiceKey::new(&self.service, self.environment.as_deref())
    }

    /// The key the snapshot is stored under, locally and in the fleet: the
    /// service, with its environment after a unit separator when it has one.
    pub(crate) fn store_key(&self) -> String {
        match &self.environment {
            Some(environment) => format!("{}\u{1f}{environment}", self.service),
            None => self.service.clone(),
        }
    }

    /// Whether `event` is a drift of this snapshot's service and environment.
    pub(crate) fn holds_service_of(&self, event: &DriftEvent) -> bool {
        self.service == event.service && self.environment == event.environment
    }

    /// A service known only from a stored event.
    fn empty(service: &str, environment: Option<&str>, watermark: u64) -> ServiceSnapshot {
        ServiceSnapshot {
            version: SNAPSHOT_VERSION,
            service: service.to_owned(),
            environment: environment.map(str::to_owned),
            watermark,
            first_seen: None,
            revisions: Vec::new(),
            series: Vec::new(),
            peers: Vec::new(),
            scopes: Vec::new(),
            firing: Vec::new(),
            calls: Vec::new(),
            repeats: Vec::new(),
            regressed: Vec::new(),
            unsettled: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FiringSnapshot {
    pub event_id: String,
    /// Absent in older snapshots: a drift with an operation was then a
    /// latency regression, one with a peer a new outbound peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EventKind>,
    pub revision: String,
    /// The operation of a latency regression.
    #[serde(default)]
    pub operation: Option<String>,
    /// The peer of an outbound-call drift, with why and since when.
    #[serde(default)]
    pub peer: Option<String>,
    #[serde(default)]
    pub reasons: Vec<crate::detect::details::PeerReason>,
    #[serde(default)]
    pub first_seen: u64,
    /// The frozen baseline of a latency regression: (value, count) buckets.
    #[serde(default)]
    pub baseline: Option<Vec<(u64, u64)>>,
    /// Later revisions that still show the drift.
    #[serde(default)]
    pub seen_in: Vec<String>,
    /// The frozen baseline of an error-rate regression: (errors, spans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_baseline: Option<(u64, u64)>,
    /// The instrumentation scope of a new-dependency drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The frozen baseline's mean calls per request of a fan-out drift
    /// (its buckets are in `baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_mean: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RevisionSnapshot {
    pub revision: String,
    pub first_seen: u64,
    pub last_seen: u64,
    pub spans: u64,
    /// `vcs.repository.url.full` of the revision's spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesSnapshot {
    pub operation: String,
    pub revision: String,
    /// (microseconds, count) of every recorded bucket.
    pub buckets: Vec<(u64, u64)>,
    /// (window start, count, Σ ln, Σ ln²), oldest first.
    pub moments: Vec<(u64, u64, f64, f64)>,
    /// The latency detector's clean comparisons in a row of this revision
    /// with its baseline, so any replica's verdict can count them.
    #[serde(default)]
    pub clean_evaluations: u32,
    /// (window start, errors) of the windows that had errors, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerSnapshot {
    pub peer: String,
    pub first_seen: u64,
    pub last_seen: u64,
    pub calls: u64,
}

/// An instrumentation scope the service's spans came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScopeSnapshot {
    pub scope: String,
    pub first_seen: u64,
    pub last_seen: u64,
    pub spans: u64,
}

impl ScopeSnapshot {
    pub(crate) fn known(&self) -> KnownScope {
        KnownScope {
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            spans: self.spans,
        }
    }
}

/// Something seen over a stretch of time, as several replicas merge it:
/// the earliest first and the latest last sighting, the largest count.
pub(crate) trait Sighting: Clone {
    fn widen(&mut self, other: &Self);
}

impl Sighting for PeerSnapshot {
    fn widen(&mut self, other: &Self) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.calls = self.calls.max(other.calls);
    }
}

impl Sighting for ScopeSnapshot {
    fn widen(&mut self, other: &Self) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.spans = self.spans.max(other.spans);
    }
}

/// The errors a snapshot's series recorded in the window starting at `start`.
pub(crate) fn errors_at(errors: &[(u64, u64)], start: u64) -> u64 {
    errors.iter().filter(|(s, _)| *s == start).map(|(_, e)| e).sum()
}

pub(crate) fn histogram_buckets(histogram: &LatencyHistogram) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), u64::from(v.count_at_value())))
        .collect()
}

pub(crate) fn histogram_from(buckets: &[(u64, u64)]) -> LatencyHistogram {
    let mut histogram = new_histogram();
    for (value, count) in buckets {
        histogram.record_n((*value).max(1), u32::try_from(*count).unwrap_or(u32::MAX));
    }
    histogram
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analyze::service::{AnalysisSettings, ServiceState};
    use crate::extract::Sym;
    use crate::config::Config;
    use crate::extract::{SpanFact, SpanKind, SpanStatus};

    pub(crate) fn fact(op: &str, revision: &str, end: u64, millis: u64, kind: SpanKind, peer: Option<&str>) -> SpanFact {
        SpanFact {
            trace_id: 1,
            span_id: end,
            peer: peer.map(Sym::from),
            ..SpanFact::new(Sym::from("s"), Sym::from(revision), Sym::from(op), kind, end - millis * 1_000_000, end)
        }
    }

    /// Event time of tick 0 of [`pay`].
    pub(crate) const PAY_T0: u64 = 1_700_000_000_000_000_000;
    /// A tick of [`pay`]: 50 ms.
    pub(crate) const PAY_TICK: u64 = 50_000_000;

    /// 20 requests/s of `POST /pay` by `revision`, from tick `ticks.start`
    /// to `ticks.end` (50 ms each, from [`PAY_T0`]), the requests of the
    /// ticks where `fails` holds failing, each evaluated as it arrives.
    pub(crate) fn pay(
        state: &mut ServiceState,
        settings: &AnalysisSettings,
        updates: &mut Vec<crate::detect::event::EventUpdate>,
        ticks: std::ops::Range<u64>,
        revision: &str,
        fails: impl Fn(u64) -> bool,
    ) {
        for i in ticks {
            let mut span = fact("POST /pay", revision, PAY_T0 + i * PAY_TICK, 20, SpanKind::Server, None);
            if fails(i) {
                span.status = SpanStatus::Error;
            }
            state.record(&span, settings);
            state.evaluate_due(settings, updates);
        }
    }

    #[test]
    fn a_snapshot_round_trips_through_json() {
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let t0 = 1_700_000_000_000_000_000u64;
        state.record(&fact("GET", "r1", t0 + 1, 3, SpanKind::Client, Some("db:5432")), &settings);
        for i in 0..3000u64 {
            state.record(
                &fact("GET /", "r1", t0 + i * 100_000_000, 20 + i % 7, SpanKind::Server, None),
                &settings,
            );
        }
        let snapshot = state.snapshot(u64::MAX);
        let json = serde_json::to_vec(&snapshot).expect("serialise");
        let back: ServiceSnapshot = serde_json::from_slice(&json).expect("parse");
        assert_eq!(back, snapshot);
        let restored = ServiceState::restore(&back, &settings);
        assert_eq!(restored.watermark, state.watermark);
        assert!(restored.peers.known("db:5432").is_some());
        let series = restored.latency.values().next().expect("series");
        let mut all = new_histogram();
        series.all(&mut all);
        assert_eq!(all.len(), 3000);
        // Restored windows are kept compact (window.rs): their sums of
        // log-latencies agree to within 1e-7, everything else exactly, and
        // a second round trip changes nothing.
        let mut again = restored.snapshot(u64::MAX);
        for (series, original) in again.series.iter_mut().zip(&snapshot.series) {
            assert_eq!(series.moments.len(), original.moments.len());
            for (m, o) in series.moments.iter_mut().zip(&original.moments) {
                assert_eq!((m.0, m.1), (o.0, o.1));
                assert!((m.2 - o.2).abs() <= 1e-7 * o.2.abs() && (m.3 - o.3).abs() <= 1e-7 * o.3.abs(), "{m:?} {o:?}");
                *m = *o;
            }
        }
        assert_eq!(again, snapshot, "restoring loses nothing else a snapshot holds");
        let twice = ServiceState::restore(&restored.snapshot(u64::MAX), &settings);
        assert_eq!(twice.snapshot(u64::MAX), restored.snapshot(u64::MAX), "a restored state round-trips exactly");
    }

    #[test]
    fn an_error_rate_drift_survives_a_restart_and_resolves_once_fixed() {
        use crate::detect::event::EventUpdate;
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let mut updates = Vec::new();
        // 20 requests/s: ten minutes of r1 failing one in 200, then r2
        // failing one in 20.
        let send = |state: &mut ServiceState, updates: &mut Vec<EventUpdate>, from: u64, to: u64, revision, every: u64| {
            pay(state, &settings, updates, from..to, revision, |i: u64| i % every == 0)
        };
        send(&mut state, &mut updates, 0, 12_000, "r1", 200);
        send(&mut state, &mut updates, 12_000, 16_000, "r2", 20);
        let fired = updates
            .iter()
            .find_map(|u| match u {
                EventUpdate::Fired(event) if event.kind == EventKind::ErrorRateRegression => Some(event.clone()),
                _ => None,
            })
            .expect("the error rate fires");
        assert_eq!(fired.baseline_revision.as_deref(), Some("r1"));
        let rates = fired.stats.as_ref().and_then(|s| s.error_rate.as_ref()).expect("rates");
        assert!((rates.baseline - 0.005).abs() < 0.001 && (rates.current - 0.05).abs() < 0.01, "{rates:?}");
        let snapshot = state.snapshot(u64::MAX);
        let held = snapshot.firing.iter().find(|f| f.event_id == fired.id).expect("held");
        assert_eq!(held.kind, Some(EventKind::ErrorRateRegression));
        assert!(held.error_baseline.is_some_and(|(errors, spans)| errors > 0 && spans >= 200));
        assert!(snapshot.series.iter().any(|s| !s.errors.is_empty()), "window errors are kept");

        let back: ServiceSnapshot = serde_json::from_slice(&serde_json::to_vec(&snapshot).expect("json")).expect("parse");
        let mut restored = ServiceState::restore(&back, &settings);
        let mut after = Vec::new();
        // r2 goes on failing: still the same incident, nothing new fires.
        send(&mut restored, &mut after, 16_000, 18_000, "r2", 20);
        assert!(!after.iter().any(|u| matches!(u, EventUpdate::Resolved { .. } | EventUpdate::Fired(_))), "{after:?}");
        // r3 fixes it.
        send(&mut restored, &mut after, 18_000, 22_000, "r3", 200);
        let resolution = after.iter().find_map(|u| match u {
            EventUpdate::Resolved { id, resolution, .. } if *id == fired.id => Some(resolution.clone()),
            _ => None,
        });
        assert_eq!(
            resolution.map(|r| (r.reason, r.revision)),
            Some((crate::detect::event::ResolutionReason::Fixed, Some("r3".to_owned()))),
            "{after:?}"
        );
        assert!(!after.iter().any(|u| matches!(u, EventUpdate::Fired(_))), "nothing fires twice");
    }

    #[test]
    fn a_revision_that_regressed_is_no_baseline_after_a_restart() {
        use crate::detect::event::{EventUpdate, ResolutionReason};
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let send = |state: &mut ServiceState, updates: &mut Vec<EventUpdate>, from: u64, to: u64, revision, every: u64| {
            pay(state, &settings, updates, from..to, revision, |i: u64| i % every == 0)
        };
        let fired = |updates: &[EventUpdate]| {
            updates
                .iter()
                .find_map(|u| match u {
                    EventUpdate::Fired(event) if event.kind == EventKind::ErrorRateRegression => Some(event.clone()),
                    _ => None,
                })
        };
        // r1 fails one request in 200; r2 one in 20, and is rolled back.
        let mut updates = Vec::new();
        send(&mut state, &mut updates, 0, 12_000, "r1", 200);
        send(&mut state, &mut updates, 12_000, 16_000, "r2", 20);
        let first = fired(&updates).expect("r2 fires");
        send(&mut state, &mut updates, 16_000, 22_000, "r1", 200);
        let resolution = updates.iter().find_map(|u| match u {
            EventUpdate::Resolved { id, resolution, .. } if *id == first.id => Some(resolution.reason),
            _ => None,
        });
        assert_eq!(resolution, Some(ResolutionReason::RolledBack), "{updates:?}");

        let snapshot = state.snapshot(u64::MAX);
        assert!(
            snapshot.regressed.iter().any(|r| r.kind == EventKind::ErrorRateRegression
                && r.revision == "r2"
                && r.operation == "POST /pay"),
            "{:?}",
            snapshot.regressed
        );
        let back: ServiceSnapshot = serde_json::from_slice(&serde_json::to_vec(&snapshot).expect("json")).expect("parse");
        let mut restored = ServiceState::restore(&back, &settings);
        // r3 brings r2's failures back: judged against r1, the last good
        // revision, not against r2, the most recent one.
        let mut after = Vec::new();
        send(&mut restored, &mut after, 22_000, 26_000, "r3", 20);
        let again = fired(&after).expect("r3 fires after the restart");
        assert_eq!(again.revision, "r3");
        assert_eq!(again.baseline_revision.as_deref(), Some("r1"));
    }

    #[test]
    fn a_new_dependency_survives_a_restart_and_resolves_when_rolled_back() {
        use crate::detect::event::{EventUpdate, ResolutionReason};
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let second = 1_000_000_000u64;
        let t0 = 1_700_000_000_000_000_000u64;
        let send = |state: &mut ServiceState, updates: &mut Vec<EventUpdate>, from: u64, to: u64, revision: &str, redis: bool| {
            for i in from..to {
                let mut span = fact("GET /cart", revision, t0 + i * second, 20, SpanKind::Server, None);
                span.scope = Some(Sym::from("opentelemetry.instrumentation.flask"));
                state.record(&span, &settings);
                if redis {
                    let mut call = fact("HGET", revision, t0 + i * second + 1, 2, SpanKind::Client, Some("redis:6379"));
                    call.scope = Some(Sym::from("opentelemetry.instrumentation.redis"));
                    state.record(&call, &settings);
                }
                state.evaluate_due(&settings, updates);
            }
        };
        let mut updates = Vec::new();
        // Twenty minutes of r1, then r2 brings in a Redis client.
        send(&mut state, &mut updates, 0, 1200, "r1", false);
        send(&mut state, &mut updates, 1200, 1300, "r2", true);
        let fired: Vec<_> = updates
            .iter()
            .filter_map(|u| match u {
                EventUpdate::Fired(event) => Some(event.clone()),
                _ => None,
            })
            .collect();
        let kinds: Vec<_> = fired.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::NewOutboundPeer, EventKind::NewDependency], "the flask scope is not new: {updates:?}");
        let fired = &fired[1];
        assert_eq!(fired.dependency.as_ref().map(|d| d.scope.as_str()), Some("opentelemetry.instrumentation.redis"));
        assert_eq!((fired.revision.as_str(), fired.baseline_revision.as_deref()), ("r2", Some("r1")));

        let snapshot = state.snapshot(u64::MAX);
        assert_eq!(snapshot.scopes.len(), 2, "both scopes are known");
        let back: ServiceSnapshot = serde_json::from_slice(&serde_json::to_vec(&snapshot).expect("json")).expect("parse");
        let mut restored = ServiceState::restore(&back, &settings);
        let mut after = Vec::new();
        // r2 goes on; then r1 is rolled back to.
        send(&mut restored, &mut after, 1300, 1400, "r2", true);
        assert!(!after.iter().any(|u| matches!(u, EventUpdate::Fired(_) | EventUpdate::Resolved { .. })), "{after:?}");
        send(&mut restored, &mut after, 1400, 3000, "r1", false);
        let resolution = after.iter().find_map(|u| match u {
            EventUpdate::Resolved { id, resolution, .. } if *id == fired.id => Some(resolution.clone()),
            _ => None,
        });
        assert_eq!(resolution.map(|r| r.reason), Some(ResolutionReason::RolledBack), "{after:?}");
        assert!(!after.iter().any(|u| matches!(u, EventUpdate::Fired(_))), "nothing fires twice");
    }

    #[test]
    fn a_drift_firing_at_snapshot_time_resolves_after_restore() {
        use crate::detect::event::EventUpdate;
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let second = 1_000_000_000u64;
        let t0 = 1_700_000_000_000_000_000u64;
        let mut updates = Vec::new();
        // Twenty minutes of r1 learning its one peer, then r2 adds another.
        for i in 0..2400u64 {
            let at = t0 + i * second;
            let (revision, peer) = if i < 1200 {
                ("r1", "db:5432")
            } else {
                ("r2", "api.fraudscore.io:443")
            };
            state.record(&fact("GET", revision, at, 3, SpanKind::Client, Some(peer)), &settings);
            state.record(&fact("GET /", revision, at + 1, 20, SpanKind::Server, None), &settings);
            state.evaluate_due(&settings, &mut updates);
        }
        let fired = updates
            .iter()
            .find_map(|u| match u {
                EventUpdate::Fired(event) => Some(event.id.clone()),
                _ => None,
            })
            .expect("the new peer fires");
        let snapshot = state.snapshot(u64::MAX);
        assert_eq!(snapshot.firing.len(), 1, "{:?}", snapshot.firing);

        let mut restored = ServiceState::restore(&snapshot, &settings);
        let mut after = Vec::new();
        // r2 keeps serving but no longer calls the new peer.
        for i in 2400..2400 + 1200u64 {
            let at = t0 + i * second;
            restored.record(&fact("GET /", "r2", at, 20, SpanKind::Server, None), &settings);
            restored.evaluate_due(&settings, &mut after);
        }
        assert!(
            after
                .iter()
                .any(|u| matches!(u, EventUpdate::Resolved { id, .. } if *id == fired)),
            "the restored drift resolves: {after:?}"
        );
        assert!(
            !after.iter().any(|u| matches!(u, EventUpdate::Fired(_))),
            "nothing fires twice"
        );
    }

    #[test]
    fn reconcile_drops_drifts_without_a_firing_event_and_holds_orphan_events() {
        use crate::detect::event::example_event;
        let mut held = ServiceSnapshot::empty("s", None, 10);
        held.firing.push(FiringSnapshot {
            event_id: "aaaa-1".into(),
            kind: None,
            error_baseline: None,
            revision: "r2".into(),
            operation: Some("GET /".into()),
            peer: None,
            reasons: Vec::new(),
            first_seen: 5,
            baseline: None,
            seen_in: Vec::new(),
            scope: None,
            calls_mean: None,
        });
        held.revisions.push(RevisionSnapshot {
            revision: "abc1234".into(),
            first_seen: 1,
            last_seen: 9,
            spans: 3,
            repository: None,
        });
        let mut orphan = example_event("bbbb-7", 7);
        orphan.service = "s".into();
        orphan.fingerprint = "bbbb".into();
        orphan.revision = "abc1234def5678abc1234def5678abc1234def56".into();
        orphan.operation = Some("POST /pay".into());
        let mut other = example_event("cccc-8", 8);
        other.service = "t".into();
        other.fingerprint = "cccc".into();
        let mut snapshots = vec![held];
        reconcile(&mut snapshots, &[&orphan, &other]);
        let s = &snapshots[0];
        assert_eq!(s.firing.len(), 1, "the resolved drift is dropped: {:?}", s.firing);
        assert_eq!(s.firing[0].event_id, "bbbb-7");
        assert_eq!(s.firing[0].revision, "abc1234", "the span revision of the full SHA");
        assert_eq!(s.firing[0].operation.as_deref(), Some("POST /pay"));
        assert_eq!(snapshots[1].service, "t", "a service known only from its event");
        let settings = AnalysisSettings::from_config(&Config::default());
        let restored = ServiceState::restore(&snapshots[1], &settings);
        assert_eq!(restored.latency_firing().count(), 1, "held again after the restart");
    }
}
