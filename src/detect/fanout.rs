//! The fan-out regression detector (N+1): one request of an operation now
//! calls a peer many more times than it did before the deploy — a loop
//! that issues one query per item, `GET /cart` going from one query to
//! twenty. Latency may hide it at low load; the database sees it first.
//!
//! Requests arrive as closed tallies from the peer sets (`RequestCalls`:
//! calls per peer of one request, found by walking each client span to its
//! SERVER or CONSUMER span), in event-time order, so the same spans give
//! the same events however they are batched. Each (revision, operation,
//! peer) keeps the distribution of calls per request — over the revision's
//! whole life, and over its last two `window`s of event time — in
//! [`CallsHistogram`]s, exact up to 16 calls and log-bucketed above. Only
//! requests that called the peer at least once are counted, so a request
//! that takes another branch changes nothing.
//!
//! A comparison is *bad* when the revision's recent requests number at
//! least `min_requests`, the baseline — the last revision before it that
//! made the call in `min_requests` requests (counting, in fleet mode, the
//! other replicas' requests of that revision) and did not regress it — has
//! as many, the mean calls per request rose by the relative AND the
//! absolute margin, and the one-sided Mann-Whitney test (tie-corrected, on
//! the exact counts) gives a p-value below `alpha / m`, `m` the series
//! compared in this evaluation (Bonferroni). It fires after `consecutive`
//! bad evaluations in a row. Comparisons are per operation, so a shift of
//! the traffic mix towards an operation that fans out more changes nothing.
//!
//! One (operation, peer) is one incident, against the baseline frozen when
//! it fired; later revisions that still fan out join it (`seen_in`). It
//! resolves after `resolve_after` evaluations in a row in which no serving
//! revision's recent requests stay above half of either margin — fixed,
//! rolled back, or no longer called.

use std::collections::{HashMap, HashSet};

use super::event::{DriftEvent, EventKind, EventUpdate, Severity};
use super::details::{CallsSummary, FanoutStats};
use super::nanos;
use super::stats::mann_whitney_counts;
use crate::analyze::peers::RequestCalls;
use crate::analyze::timeline::{RevId, RevisionTimeline};
use crate::config::FanoutConfig;
use crate::extract::{ServiceKey, Sym};
use crate::fleet::baseline::FleetBaseline;

/// (revision, operation, peer) series kept per service, at most; requests
/// of further series are counted in `overflow`.
pub(crate) const MAX_SERIES: usize = 256;
/// Buckets of a [`CallsHistogram`].
pub(crate) const BUCKETS: usize = 32;
/// Later revisions an incident records, at most.
const MAX_SEEN_IN: usize = 64;
/// Resolution hysteresis: traffic is clean only below this share of a
/// firing margin.
const RESOLVE_MARGIN_SHARE: f64 = 0.5;

/// Calls per request: exact from 0 to 15, then two buckets per power of
/// two (16–23, 24–31, 32–47, …), the last holding 3072 and above. The mean
/// and the maximum are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CallsHistogram {
    counts: [u32; BUCKETS],
    sum: u64,
    max: u32,
}

impl CallsHistogram {
    fn bucket(calls: u32) -> usize {
        if calls < 16 {
            return calls as usize;
        }
        let power = 31 - calls.leading_zeros() as usize;
        let half = ((calls >> (power - 1)) & 1) as usize;
        (16 + (power - 4) * 2 + half).min(BUCKETS - 1)
    }

    /// The smallest number of calls bucket `index` holds.
    pub(crate) fn lower(index: usize) -> u32 {
        if index < 16 {
            return index as u32;
        }
        let power = 4 + (index - 16) / 2;
        (1 << power) + ((index - 16) % 2) as u32 * (1 << (power - 1))
    }

    pub(crate) fn add(&mut self, calls: u32) {
        self.add_n(calls, 1);
    }

    fn add_n(&mut self, calls: u32, n: u32) {
        let slot = &mut self.counts[Self::bucket(calls)];
        *slot = slot.saturating_add(n);
        self.sum = self.sum.saturating_add(u64::from(calls) * u64::from(n));
        self.max = self.max.max(calls);
    }

    pub(crate) fn merge(&mut self, other: &CallsHistogram) {
        for (slot, n) in self.counts.iter_mut().zip(other.counts) {
            *slot = slot.saturating_add(n);
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    pub(crate) fn mean(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.sum as f64 / n as f64,
        }
    }

    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// The bucket (its smallest value) holding quantile `q`.
    pub(crate) fn quantile(&self, q: f64) -> u32 {
        let n = self.requests();
        if n == 0 {
            return 0;
        }
        let rank = ((n as f64 * q).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Self::lower(index).min(self.max);
            }
        }
        self.max
    }

    /// (smallest value, requests) of each non-empty bucket, in order.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (Self::lower(i), u64::from(*c)))
    }

    /// Rebuilds a histogram from its buckets and mean (a stored baseline).
    /// The sum is restored from the mean, the maximum from the buckets.
    pub(crate) fn from_buckets(buckets: &[(u64, u64)], mean: f64) -> CallsHistogram {
        let mut histogram = CallsHistogram::default();
        for &(calls, n) in buckets {
            let calls = u32::try_from(calls).unwrap_or(u32::MAX);
            histogram.add_n(calls, u32::try_from(n).unwrap_or(u32::MAX));
        }
        if mean.is_finite() && mean >= 0.0 {
            histogram.sum = (mean * histogram.requests() as f64).round() as u64;
        }
        histogram
    }
}

impl CallsSummary {
    pub(crate) fn of(h: &CallsHistogram) -> CallsSummary {
        CallsSummary {
            requests: h.requests(),
            mean: (h.mean() * 100.0).round() / 100.0,
            p50: h.quantile(0.5),
            p95: h.quantile(0.95),
            max: h.max(),
            histogram: h.buckets().collect(),
        }
    }
}

/// Calls per request of one (revision, operation, peer).
#[derive(Debug, Clone, Default)]
struct Series {
    total: CallsHistogram,
    /// Requests in window `slot` and in the window before it.
    recent: [CallsHistogram; 2],
    slot: u64,
}

impl Series {
    fn add(&mut self, calls: u32, slot: u64) {
        self.total.add(calls);
        if slot > self.slot {
            self.recent = if slot == self.slot + 1 {
                [CallsHistogram::default(), self.recent[0]]
            } else {
                Default::default()
            };
            self.slot = slot;
        }
        if slot == self.slot {
            self.recent[0].add(calls);
        } else if slot + 1 == self.slot {
            self.recent[1].add(calls);
        }
    }

    /// Requests of the last two windows before `now_slot`.
    fn recent(&self, now_slot: u64) -> CallsHistogram {
        let mut out = CallsHistogram::default();
        if self.slot >= now_slot.saturating_sub(1) {
            out.merge(&self.recent[0]);
        }
        if self.slot >= now_slot {
            out.merge(&self.recent[1]);
        }
        out
    }
}

#[derive(Debug)]
pub(crate) struct Incident {
    pub event_id: String,
    pub introduced: RevId,
    pub onset: u64,
    /// The calls per request it fired against, frozen then.
    pub baseline: CallsHistogram,
    seen_in: Vec<RevId>,
    clean_streak: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Drifting,
    Unsettled,
    Clean,
}

pub(crate) struct FanoutDetector {
    config: FanoutConfig,
    series: HashMap<(RevId, Sym, Sym), Series>,
    incidents: HashMap<(Sym, Sym), Incident>,
    /// (revision, operation, peer) that carried an incident: never a baseline.
    regressed: HashSet<(RevId, Sym, Sym)>,
    streaks: HashMap<(RevId, Sym, Sym), u32>,
    /// Requests of series beyond `MAX_SERIES`: not counted.
    pub overflow: u64,
}

impl FanoutDetector {
    pub(crate) fn new(config: FanoutConfig) -> FanoutDetector {
        FanoutDetector {
            config,
            series: HashMap::new(),
            incidents: HashMap::new(),
            regressed: HashSet::new(),
            streaks: HashMap::new(),
            overflow: 0,
        }
    }

    fn window(&self) -> u64 {
        nanos(self.config.window).max(1)
    }

    /// Calls per request of each (revision, operation, peer) over the
    /// revision's life, for the snapshots.
    pub(crate) fn series_totals(&self) -> impl Iterator<Item = (RevId, &Sym, &Sym, &CallsHistogram)> + '_ {
        self.series
            .iter()
            .map(|((revision, operation, peer), series)| (*revision, operation, peer, &series.total))
    }

    /// Restores a series' calls per request from a snapshot, as traffic
    /// older than its recent windows: a baseline, not a current sample.
    pub(crate) fn restore_series(&mut self, revision: RevId, operation: Sym, peer: Sym, total: CallsHistogram) {
        if self.series.len() >= MAX_SERIES {
            return;
        }
        self.series.entry((revision, operation, peer)).or_default().total = total;
    }

    /// Mean calls per request of each (revision, operation, peer) over the
    /// revision's requests that called the peer, for the dashboards.
    pub(crate) fn means(&self) -> impl Iterator<Item = (RevId, &Sym, &Sym, f64)> + '_ {
        self.series
            .iter()
            .filter(|(_, series)| series.total.requests() > 0)
            .map(|((revision, operation, peer), series)| (*revision, operation, peer, series.total.mean()))
    }

    /// Counts one request's calls per peer.
    pub(crate) fn on_request(&mut self, request: &RequestCalls) {
        if !self.config.enabled {
            return;
        }
        let slot = request.at / self.window();
        for tally in &request.calls {
            let key = (request.revision, request.operation.clone(), tally.peer.clone());
            if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
                self.overflow += 1;
                continue;
            }
            self.series.entry(key).or_default().add(tally.calls, slot);
        }
    }

    /// Whether `current`'s mean exceeds `baseline`'s by `share` of both
    /// margins.
    fn rose(&self, baseline: &CallsHistogram, current: &CallsHistogram, share: f64) -> bool {
        let (before, after) = (baseline.mean(), current.mean());
        after >= before * (1.0 + self.config.relative_increase * share)
            && after - before >= self.config.absolute_increase * share
    }

    /// The p-value of a bad comparison, or `None` when it is clean.
    fn judge(&self, baseline: &CallsHistogram, current: &CallsHistogram, threshold: f64) -> Option<f64> {
        if current.requests() < self.config.min_requests || !self.rose(baseline, current, 1.0) {
            return None;
        }
        let test = mann_whitney_counts(
            baseline.buckets().map(|(v, c)| (u64::from(v), c)),
            current.buckets().map(|(v, c)| (u64::from(v), c)),
        )?;
        (test.p_value < threshold).then_some(test.p_value)
    }

    fn verdict(&self, baseline: &CallsHistogram, current: &CallsHistogram, threshold: f64) -> Verdict {
        if self.judge(baseline, current, threshold).is_some() {
            Verdict::Drifting
        } else if self.rose(baseline, current, RESOLVE_MARGIN_SHARE) {
            Verdict::Unsettled
        } else {
            Verdict::Clean
        }
    }

    /// The last revision before `revision` that made the call in
    /// `min_requests` requests (here and, in fleet mode, on the other
    /// replicas) and did not regress it.
    fn baseline<'t>(
        &self,
        timeline: &'t RevisionTimeline,
        fleet: Option<&FleetBaseline>,
        revision: RevId,
        operation: &Sym,
        peer: &Sym,
    ) -> Option<(&'t crate::analyze::timeline::RevisionEntry, CallsHistogram)> {
        timeline.before(revision).find_map(|b| {
            let key = (b.id, operation.clone(), peer.clone());
            if self.regressed.contains(&key) {
                return None;
            }
            let local = self.series.get(&key).map(|s| s.total);
            let elsewhere = fleet
                .and_then(|f| f.calls(operation, &b.revision, peer))
                .map(|c| CallsHistogram::from_buckets(&c.buckets, c.mean));
            let mut total = local.or(elsewhere)?;
            if let (Some(_), Some(elsewhere)) = (local, elsewhere) {
                total.merge(&elsewhere);
            }
            (total.requests() >= self.config.min_requests).then_some((b, total))
        })
    }

    pub(crate) fn evaluate(
        &mut self,
        service: &ServiceKey,
        timeline: &RevisionTimeline,
        fleet: Option<&FleetBaseline>,
        at: u64,
        out: &mut Vec<EventUpdate>,
    ) {
        if !self.config.enabled {
            return;
        }
        let now_slot = at / self.window();
        // Every serving series with recent requests: judged against its
        // incident, or compared with its baseline.
        let mut checks: HashMap<(Sym, Sym), Vec<(RevId, CallsHistogram)>> = HashMap::new();
        let mut comparisons = Vec::new();
        for ((revision, operation, peer), series) in &self.series {
            let recent = series.recent(now_slot);
            if recent.requests() == 0 {
                continue;
            }
            let key = (operation.clone(), peer.clone());
            if self.incidents.contains_key(&key) {
                checks.entry(key).or_default().push((*revision, recent));
            } else if recent.requests() >= self.config.min_requests
                && let Some((baseline, base)) = self.baseline(timeline, fleet, *revision, operation, peer)
            {
                comparisons.push((*revision, key, baseline.revision.clone(), base, recent));
            }
        }
        let tests = (comparisons.len() + checks.values().map(Vec::len).sum::<usize>()).max(1);
        let threshold = self.config.alpha / tests as f64;
        self.judge_incidents(&checks, timeline, threshold, at, out);

        // Fixed order, whatever the maps' order; an older revision fires
        // first and a younger one that fans out too joins it.
        comparisons.sort_by(|a, b| {
            let first_seen = |r: RevId| timeline.get(r).map_or(0, |e| e.first_seen_unix_nanos);
            (first_seen(a.0), a.0, &a.1).cmp(&(first_seen(b.0), b.0, &b.1))
        });
        let mut evaluated = HashSet::new();
        for (revision, key, baseline_revision, base, recent) in comparisons {
            let series_key = (revision, key.0.clone(), key.1.clone());
            evaluated.insert(series_key.clone());
            let bad = self.judge(&base, &recent, threshold);
            if let Some(incident) = self.incidents.get_mut(&key) {
                // Fired earlier in this evaluation by an older revision.
                if bad.is_some() && revision != incident.introduced && !incident.seen_in.contains(&revision) {
                    incident.seen_in.push(revision);
                    self.regressed.insert(series_key);
                    if let Some(entry) = timeline.get(revision) {
                        out.push(EventUpdate::SeenIn {
                            id: incident.event_id.clone(),
                            revision: entry.revision.to_string(),
                            at_unix_nanos: at,
                        });
                    }
                }
                continue;
            }
            let Some(p_value) = bad else {
                self.streaks.remove(&series_key);
                continue;
            };
            let streak = self.streaks.entry(series_key.clone()).or_default();
            *streak += 1;
            if *streak < self.config.consecutive.max(1) {
                continue;
            }
            let Some(entry) = timeline.get(revision) else { continue };
            // The drift began with the first window of the revision's
            // requests that rose.
            let onset = entry.first_seen_unix_nanos.min(at);
            let (operation, peer) = &key;
            let before = base.mean();
            let event = DriftEvent {
                severity: if recent.mean() >= before * self.config.critical_ratio.max(1.0) {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                operation: Some(operation.to_string()),
                peer: Some(peer.to_string()),
                baseline_revision: Some(baseline_revision.to_string()),
                fanout: Some(FanoutStats {
                    baseline: CallsSummary::of(&base),
                    current: CallsSummary::of(&recent),
                    relative_increase: if before > 0.0 {
                        ((recent.mean() / before - 1.0) * 1000.0).round() / 1000.0
                    } else {
                        0.0
                    },
                    p_value,
                    tests: tests as u32,
                }),
                ..DriftEvent::firing(EventKind::FanoutRegression, service, &format!("{operation}\u{1f}{peer}"), &entry.revision, onset, at)
            };
            self.incidents.insert(
                key,
                Incident {
                    event_id: event.id.clone(),
                    introduced: revision,
                    onset,
                    baseline: base,
                    seen_in: Vec::new(),
                    clean_streak: 0,
                },
            );
            self.regressed.insert(series_key);
            out.push(EventUpdate::Fired(Box::new(event)));
        }
        self.streaks.retain(|key, _| evaluated.contains(key));
    }

    fn judge_incidents(
        &mut self,
        checks: &HashMap<(Sym, Sym), Vec<(RevId, CallsHistogram)>>,
        timeline: &RevisionTimeline,
        threshold: f64,
        at: u64,
        out: &mut Vec<EventUpdate>,
    ) {
        let recent_span = 2 * self.window();
        let mut keys: Vec<(Sym, Sym)> = self.incidents.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let serving = checks.get(&key).map(Vec::as_slice).unwrap_or_default();
            let Some(incident) = self.incidents.get(&key) else { continue };
            let verdicts: Vec<(RevId, Verdict)> = serving
                .iter()
                .map(|(revision, recent)| (*revision, self.verdict(&incident.baseline, recent, threshold)))
                .collect();
            let Some(incident) = self.incidents.get_mut(&key) else { continue };
            let mut joined = Vec::new();
            for (revision, verdict) in &verdicts {
                if *verdict == Verdict::Drifting
                    && *revision != incident.introduced
                    && !incident.seen_in.contains(revision)
                    && incident.seen_in.len() < MAX_SEEN_IN
                {
                    incident.seen_in.push(*revision);
                    joined.push(*revision);
                    if let Some(entry) = timeline.get(*revision) {
                        out.push(EventUpdate::SeenIn {
                            id: incident.event_id.clone(),
                            revision: entry.revision.to_string(),
                            at_unix_nanos: at,
                        });
                    }
                }
            }
            if verdicts.iter().all(|(_, v)| *v == Verdict::Clean) {
                incident.clean_streak += 1;
            } else {
                incident.clean_streak = 0;
            }
            let done = incident.clean_streak >= self.config.resolve_after.max(1);
            let id = incident.event_id.clone();
            let (introduced, onset) = (incident.introduced, incident.onset);
            let carriers: Vec<RevId> = std::iter::once(introduced).chain(incident.seen_in.iter().copied()).collect();
            for revision in joined {
                self.regressed.insert((revision, key.0.clone(), key.1.clone()));
            }
            if done {
                out.push(EventUpdate::Resolved {
                    id,
                    at_unix_nanos: at,
                    resolution: super::ended(timeline, introduced, onset, &carriers, at, recent_span),
                });
                self.incidents.remove(&key);
            }
        }
    }

    /// Firing drifts: ((operation, peer), incident).
    pub(crate) fn incidents(&self) -> impl Iterator<Item = (&(Sym, Sym), &Incident)> {
        self.incidents.iter()
    }

    /// (revision, operation, peer) series that carried a drift: never a
    /// baseline again, across restarts (they are kept in the snapshot).
    pub(crate) fn regressed(&self) -> impl Iterator<Item = &(RevId, Sym, Sym)> {
        self.regressed.iter()
    }

    /// Restores a series [`regressed`](Self::regressed) listed.
    pub(crate) fn restore_regressed(&mut self, revision: RevId, operation: Sym, peer: Sym) {
        self.regressed.insert((revision, operation, peer));
    }

    /// Resumes a drift that was firing before a restart.
    pub(crate) fn restore_firing(
        &mut self,
        (operation, peer): (Sym, Sym),
        revision: RevId,
        event_id: String,
        onset: u64,
        baseline: CallsHistogram,
        seen_in: Vec<RevId>,
    ) {
        self.regressed.insert((revision, operation.clone(), peer.clone()));
        for r in &seen_in {
            self.regressed.insert((*r, operation.clone(), peer.clone()));
        }
        self.incidents.insert(
            (operation, peer),
            Incident {
                event_id,
                introduced: revision,
                onset,
                baseline,
                seen_in,
                clean_streak: 0,
            },
        );
    }

    /// Later revisions that carry a firing incident.
    pub(crate) fn seen_in(incident: &Incident) -> &[RevId] {
        &incident.seen_in
    }

    pub(crate) fn forget_revision(&mut self, revision: RevId) {
        self.series.retain(|(r, _, _), _| *r != revision);
        self.streaks.retain(|(r, _, _), _| *r != revision);
        self.regressed.retain(|(r, _, _)| *r != revision);
        for incident in self.incidents.values_mut() {
            incident.seen_in.retain(|r| *r != revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::peers::PeerCalls;
    use crate::detect::event::ResolutionReason;

    const SECOND: u64 = 1_000_000_000;

    fn request(revision: RevId, operation: &str, at: u64, calls: u32) -> RequestCalls {
        RequestCalls {
            operation: Sym::from(operation),
            revision,
            at,
            calls: vec![PeerCalls {
                peer: Sym::from("postgresql://db/shop"),
                calls,
                unsafe_calls: 0,
            }],
        }
    }

    fn detector() -> FanoutDetector {
        FanoutDetector::new(FanoutConfig::default())
    }

    #[test]
    fn buckets_are_exact_when_small_and_ordered_when_large() {
        for calls in 0..16 {
            assert_eq!(CallsHistogram::lower(CallsHistogram::bucket(calls)), calls);
        }
        let mut last = 0;
        for calls in 16..100_000u32 {
            let index = CallsHistogram::bucket(calls);
            assert!(index >= last && index < BUCKETS);
            assert!(CallsHistogram::lower(index) <= calls, "{calls}");
            last = index;
        }
        let mut h = CallsHistogram::default();
        for calls in [1, 1, 1, 20, 40] {
            h.add(calls);
        }
        assert_eq!((h.requests(), h.mean(), h.max(), h.quantile(0.5)), (5, 12.6, 40, 1));
        let restored = CallsHistogram::from_buckets(&h.buckets().map(|(v, c)| (u64::from(v), c)).collect::<Vec<_>>(), h.mean());
        assert_eq!((restored.requests(), restored.mean()), (5, 12.6));
    }

    /// r1 serves `GET /cart` for 100 s making one query per request; r2
    /// then serves it making `calls(i)` queries for request i.
    fn deploy(d: &mut FanoutDetector, timeline: &mut RevisionTimeline, calls: impl Fn(u64) -> u32) -> RevId {
        timeline.observe(&Sym::from("r1"), 0, 100 * SECOND);
        let (r2, _) = timeline.observe(&Sym::from("r2"), 100 * SECOND, 200 * SECOND);
        for i in 0..200 {
            d.on_request(&request(0, "GET /cart", i * SECOND / 2, 1 + (i % 7 == 0) as u32));
        }
        for i in 0..200 {
            d.on_request(&request(r2, "GET /cart", 100 * SECOND + i * SECOND / 2, calls(i)));
        }
        r2
    }

    #[test]
    fn one_query_per_item_after_a_deploy_fires_then_resolves_when_fixed() {
        let service = ServiceKey::new("shop", None);
        let mut timeline = RevisionTimeline::new(8);
        let mut d = detector();
        deploy(&mut d, &mut timeline, |i| 3 + (i % 5) as u32);
        let mut out = Vec::new();
        d.evaluate(&service, &timeline, None, 200 * SECOND, &mut out);
        assert!(out.is_empty(), "persistence: {out:?}");
        d.evaluate(&service, &timeline, None, 210 * SECOND, &mut out);
        let event = match &out[..] {
            [EventUpdate::Fired(event)] => event.clone(),
            other => panic!("one event: {other:?}"),
        };
        assert_eq!(event.kind, EventKind::FanoutRegression);
        assert_eq!((event.revision.as_str(), event.baseline_revision.as_deref()), ("r2", Some("r1")));
        assert_eq!(event.peer.as_deref(), Some("postgresql://db/shop"));
        let stats = event.fanout.as_ref().expect("stats");
        assert_eq!((stats.baseline.requests, stats.baseline.p50, stats.baseline.max), (200, 1, 2));
        assert_eq!((stats.current.p50, stats.current.max), (5, 7));
        assert!(stats.current.mean > 4.0 && stats.baseline.mean < 1.2, "{stats:?}");
        assert!(stats.p_value < 1e-6);
        // r3 fixes it: one query per request again.
        out.clear();
        let (r3, _) = timeline.observe(&Sym::from("r3"), 300 * SECOND, 500 * SECOND);
        for i in 0..400 {
            d.on_request(&request(r3, "GET /cart", 300 * SECOND + i * SECOND / 2, 1));
        }
        let mut resolved = None;
        for step in 0..20 {
            d.evaluate(&service, &timeline, None, 400 * SECOND + step * 10 * SECOND, &mut out);
            if let Some(EventUpdate::Resolved { resolution, .. }) = out.last() {
                resolved = Some(resolution.clone());
                break;
            }
        }
        let resolution = resolved.expect("resolves");
        assert_eq!((resolution.reason, resolution.revision.as_deref()), (ResolutionReason::Fixed, Some("r3")));
    }

    #[test]
    fn a_small_rise_or_a_traffic_mix_shift_fires_nothing() {
        let service = ServiceKey::new("shop", None);
        // The same code with slightly bigger carts: +30%, under the margin.
        let mut timeline = RevisionTimeline::new(8);
        let mut d = detector();
        deploy(&mut d, &mut timeline, |i| 1 + (i % 3 == 0) as u32);
        let mut out = Vec::new();
        for step in 0..10 {
            d.evaluate(&service, &timeline, None, 200 * SECOND + step * 10 * SECOND, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // More traffic now goes to an operation that always made ten calls:
        // the service's average fan-out rises, no operation's does.
        let mut timeline = RevisionTimeline::new(8);
        let mut d = detector();
        timeline.observe(&Sym::from("r1"), 0, 100 * SECOND);
        let (r2, _) = timeline.observe(&Sym::from("r2"), 100 * SECOND, 200 * SECOND);
        for i in 0..200 {
            d.on_request(&request(0, "GET /cart", i * SECOND / 2, 1));
            if i % 10 == 0 {
                d.on_request(&request(0, "GET /report", i * SECOND / 2, 10));
            }
        }
        for i in 0..200 {
            d.on_request(&request(r2, "GET /cart", 100 * SECOND + i * SECOND / 2, 1));
            d.on_request(&request(r2, "GET /report", 100 * SECOND + i * SECOND / 2, 10));
        }
        for step in 0..10 {
            d.evaluate(&service, &timeline, None, 200 * SECOND + step * 10 * SECOND, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
    }
}
