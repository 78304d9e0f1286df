//! `Aggregate`: the sum of every replica's snapshot of one service, kept in
//! the fleet's database so that a replica reads one row per service instead
//! of one per replica.
//!
//! Each publish replaces a replica's contribution inside one transaction:
//! the aggregate minus that replica's previous snapshot plus its new one.
//! What adds up is subtracted exactly: histogram buckets (of latency and
//! of calls per request), window moments, error, span and request counts
//! are integers or sums; the few quantities
//! that only widen (lifetimes, the largest call count) are kept with the
//! number of snapshots that hold them, so they leave with their last
//! holder (as do the most calls in one request and the first and last
//! repeat of an unsafe call). Clean-evaluation streaks are kept as a count
//! of replicas per streak length, so their maximum stays exact when one
//! replica's streak ends. A replica reads the aggregate minus its own snapshot: the other
//! replicas, merged, as [`super::baseline::FleetBaseline`] wants them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analyze::snapshot::{
    CallsSnapshot, PeerSnapshot, RepeatSnapshot, RevisionSnapshot, SNAPSHOT_VERSION, ScopeSnapshot, SeriesSnapshot,
    ServiceSnapshot, Sighting, add_calls, add_repeat_counts,
};

/// The aggregate format version, stored inside each aggregate.
pub(crate) const AGGREGATE_VERSION: u32 = 1;

/// One series summed over replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SeriesSum {
    operation: String,
    revision: String,
    /// Snapshots that hold the series.
    holders: u32,
    /// (microseconds, count).
    buckets: BTreeMap<u64, u64>,
    /// Window start → (count, Σ ln, Σ ln²).
    moments: BTreeMap<u64, (u64, f64, f64)>,
    /// Window start → errors.
    errors: BTreeMap<u64, u64>,
    /// Streak length → replicas with that streak (zero streaks left out).
    clean: BTreeMap<u32, u32>,
}

/// Calls per request of one (operation, revision, peer), summed over
/// replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CallsSum {
    operation: String,
    revision: String,
    peer: String,
    holders: u32,
    /// Bucket (its smallest call count) → requests.
    buckets: BTreeMap<u64, u64>,
    /// Calls made in those requests (each replica's mean times its
    /// requests).
    calls: f64,
}

/// Unsafe calls of one (operation, revision, peer), summed over replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RepeatSum {
    operation: String,
    revision: String,
    peer: String,
    holders: u32,
    /// As [`RepeatSnapshot::counts`]: requests and repeats add up and are
    /// taken back exactly; the most calls in one request and the first and
    /// last repeat only widen, and leave with their last holder.
    counts: [u64; 5],
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Held<T> {
    value: T,
    holders: u32,
}

/// Adds one holder of `value`, widening what the others hold.
fn hold<T: Sighting>(map: &mut BTreeMap<String, Held<T>>, key: &str, value: &T) {
    match map.get_mut(key) {
        Some(held) => {
            held.holders += 1;
            held.value.widen(value);
        }
        None => {
            map.insert(
                key.to_owned(),
                Held {
                    value: value.clone(),
                    holders: 1,
                },
            );
        }
    }
}

/// Takes one holder away; what no snapshot holds any longer leaves.
fn release<T>(map: &mut BTreeMap<String, Held<T>>, key: &str) {
    if let Some(held) = map.get_mut(key) {
        held.holders = held.holders.saturating_sub(1);
        if held.holders == 0 {
            map.remove(key);
        }
    }
}

/// The sum of a service's snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Aggregate {
    pub version: u32,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Snapshots summed.
    pub replicas: u32,
    watermark: u64,
    first_seen: Option<u64>,
    revisions: BTreeMap<String, Held<RevisionSnapshot>>,
    /// Keyed by operation, then revision, with a unit separator between.
    series: BTreeMap<String, SeriesSum>,
    peers: BTreeMap<String, Held<PeerSnapshot>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    scopes: BTreeMap<String, Held<ScopeSnapshot>>,
    /// The fan-out detector's baselines, keyed as [`calls_key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    calls: BTreeMap<String, CallsSum>,
    /// The repeated-call detector's baselines, keyed as [`calls_key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    repeats: BTreeMap<String, RepeatSum>,
}

/// Why an aggregate could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AggregateError {
    #[error("unreadable {what}: {message}")]
    Unreadable { what: &'static str, message: String },
    #[error("{what} was written by a newer driftwatch (format {found}); upgrade every replica")]
    Newer { what: &'static str, found: u32 },
    #[error("a snapshot of {found} was offered to the aggregate of {expected}")]
    OtherService { expected: String, found: String },
}

impl Aggregate {
    pub(crate) fn empty(service: &str, environment: Option<&str>) -> Aggregate {
        Aggregate {
            version: AGGREGATE_VERSION,
            service: service.to_owned(),
            environment: environment.map(str::to_owned),
            replicas: 0,
            watermark: 0,
            first_seen: None,
            revisions: BTreeMap::new(),
            series: BTreeMap::new(),
            peers: BTreeMap::new(),
            scopes: BTreeMap::new(),
            calls: BTreeMap::new(),
            repeats: BTreeMap::new(),
        }
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Aggregate, AggregateError> {
        let aggregate: Aggregate = serde_json::from_slice(body).map_err(|e| AggregateError::Unreadable {
            what: "fleet aggregate",
            message: e.to_string(),
        })?;
        if aggregate.version > AGGREGATE_VERSION {
            return Err(AggregateError::Newer {
                what: "the fleet aggregate",
                found: aggregate.version,
            });
        }
        Ok(aggregate)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Adds one replica's snapshot.
    pub(crate) fn add(&mut self, snapshot: &ServiceSnapshot) -> Result<(), AggregateError> {
        self.check(snapshot)?;
        self.replicas += 1;
        self.watermark = self.watermark.max(snapshot.watermark);
        if let Some(seen) = snapshot.first_seen {
            self.first_seen = Some(self.first_seen.map_or(seen, |f| f.min(seen)));
        }
        for r in &snapshot.revisions {
            let held = self.revisions.entry(r.revision.clone()).or_insert_with(|| Held {
                value: RevisionSnapshot { spans: 0, ..r.clone() },
                holders: 0,
            });
            held.holders += 1;
            held.value.first_seen = held.value.first_seen.min(r.first_seen);
            held.value.last_seen = held.value.last_seen.max(r.last_seen);
            held.value.spans += r.spans;
            if held.value.repository.is_none() {
                held.value.repository.clone_from(&r.repository);
            }
        }
        for p in &snapshot.peers {
            hold(&mut self.peers, &p.peer, p);
        }
        for s in &snapshot.scopes {
            hold(&mut self.scopes, &s.scope, s);
        }
        for s in &snapshot.series {
            let sum = self.series.entry(series_key(s)).or_insert_with(|| SeriesSum {
                operation: s.operation.clone(),
                revision: s.revision.clone(),
                ..SeriesSum::default()
            });
            sum.holders += 1;
            for &(value, count) in &s.buckets {
                *sum.buckets.entry(value).or_default() += count;
            }
            for &(start, count, sum_ln, sum_ln2) in &s.moments {
                let m = sum.moments.entry(start).or_insert((0, 0.0, 0.0));
                m.0 += count;
                m.1 += sum_ln;
                m.2 += sum_ln2;
            }
            for &(start, errors) in &s.errors {
                *sum.errors.entry(start).or_default() += errors;
            }
            if s.clean_evaluations > 0 {
                *sum.clean.entry(s.clean_evaluations).or_default() += 1;
            }
        }
        for c in &snapshot.calls {
            let sum = self.calls.entry(calls_key(&c.operation, &c.revision, &c.peer)).or_insert_with(|| CallsSum {
                operation: c.operation.clone(),
                revision: c.revision.clone(),
                peer: c.peer.clone(),
                ..CallsSum::default()
            });
            sum.holders += 1;
            add_calls(&mut sum.buckets, &mut sum.calls, c);
        }
        for r in &snapshot.repeats {
            let sum = self.repeats.entry(calls_key(&r.operation, &r.revision, &r.peer)).or_insert_with(|| RepeatSum {
                operation: r.operation.clone(),
                revision: r.revision.clone(),
                peer: r.peer.clone(),
                ..RepeatSum::default()
            });
            sum.holders += 1;
            add_repeat_counts(&mut sum.counts, &r.counts);
        }
        Ok(())
    }

    /// Takes back a snapshot added before. What it alone held leaves.
    pub(crate) fn subtract(&mut self, snapshot: &ServiceSnapshot) -> Result<(), AggregateError> {
        self.check(snapshot)?;
        self.replicas = self.replicas.saturating_sub(1);
        for r in &snapshot.revisions {
            if let Some(held) = self.revisions.get_mut(&r.revision) {
                held.holders = held.holders.saturating_sub(1);
                held.value.spans = held.value.spans.saturating_sub(r.spans);
                if held.holders == 0 {
                    self.revisions.remove(&r.revision);
                }
            }
        }
        for p in &snapshot.peers {
            release(&mut self.peers, &p.peer);
        }
        for s in &snapshot.scopes {
            release(&mut self.scopes, &s.scope);
        }
        for s in &snapshot.series {
            let key = series_key(s);
            let Some(sum) = self.series.get_mut(&key) else { continue };
            sum.holders = sum.holders.saturating_sub(1);
            for &(value, count) in &s.buckets {
                take(&mut sum.buckets, value, count);
            }
            for &(start, count, sum_ln, sum_ln2) in &s.moments {
                if let Some(m) = sum.moments.get_mut(&start) {
                    m.0 = m.0.saturating_sub(count);
                    m.1 -= sum_ln;
                    m.2 -= sum_ln2;
                    if m.0 == 0 {
                        // Sums of nothing are zero, not a rounding residue.
                        sum.moments.remove(&start);
                    }
                }
            }
            for &(start, errors) in &s.errors {
                take(&mut sum.errors, start, errors);
            }
            if s.clean_evaluations > 0
                && let Some(replicas) = sum.clean.get_mut(&s.clean_evaluations) {
                    *replicas = replicas.saturating_sub(1);
                    if *replicas == 0 {
                        sum.clean.remove(&s.clean_evaluations);
                    }
                }
            if sum.holders == 0 || sum.buckets.is_empty() {
                self.series.remove(&key);
            }
        }
        for c in &snapshot.calls {
            let key = calls_key(&c.operation, &c.revision, &c.peer);
            let Some(sum) = self.calls.get_mut(&key) else { continue };
            sum.holders = sum.holders.saturating_sub(1);
            for &(bucket, requests) in &c.buckets {
                take(&mut sum.buckets, bucket, requests);
            }
            sum.calls = (sum.calls - c.calls()).max(0.0);
            if sum.holders == 0 || sum.buckets.is_empty() {
                self.calls.remove(&key);
            }
        }
        for r in &snapshot.repeats {
            let key = calls_key(&r.operation, &r.revision, &r.peer);
            let Some(sum) = self.repeats.get_mut(&key) else { continue };
            sum.holders = sum.holders.saturating_sub(1);
            sum.counts[0] = sum.counts[0].saturating_sub(r.counts[0]);
            sum.counts[1] = sum.counts[1].saturating_sub(r.counts[1]);
            if sum.holders == 0 {
                self.repeats.remove(&key);
            }
        }
        if self.replicas == 0 {
            *self = Aggregate::empty(&self.service, self.environment.as_deref());
        }
        Ok(())
    }

    /// The aggregate as one snapshot, as if one replica had seen it all.
    pub(crate) fn to_snapshot(&self) -> ServiceSnapshot {
        let mut revisions: Vec<RevisionSnapshot> = self.revisions.values().map(|h| h.value.clone()).collect();
        revisions.sort_by_key(|r| r.first_seen);
        ServiceSnapshot {
            version: SNAPSHOT_VERSION,
            service: self.service.clone(),
            environment: self.environment.clone(),
            watermark: self.watermark,
            first_seen: self.first_seen,
            revisions,
            series: self
                .series
                .values()
                .map(|s| SeriesSnapshot {
                    operation: s.operation.clone(),
                    revision: s.revision.clone(),
                    buckets: s.buckets.iter().map(|(v, c)| (*v, *c)).collect(),
                    moments: s
                        .moments
                        .iter()
                        .map(|(start, (count, sum_ln, sum_ln2))| (*start, *count, *sum_ln, *sum_ln2))
                        .collect(),
                    clean_evaluations: s.clean.keys().next_back().copied().unwrap_or(0),
                    errors: s.errors.iter().map(|(start, e)| (*start, *e)).collect(),
                })
                .collect(),
            peers: self.peers.values().map(|h| h.value.clone()).collect(),
            scopes: self.scopes.values().map(|h| h.value.clone()).collect(),
            firing: Vec::new(),
            calls: self
                .calls
                .values()
                .map(|c| CallsSnapshot::summed(&c.operation, &c.revision, &c.peer, &c.buckets, c.calls))
                .collect(),
            repeats: self
                .repeats
                .values()
                .map(|r| RepeatSnapshot {
                    revision: r.revision.clone(),
                    operation: r.operation.clone(),
                    peer: r.peer.clone(),
                    counts: r.counts,
                })
                .collect(),
            regressed: Vec::new(),
            unsettled: Vec::new(),
        }
    }

    fn check(&self, snapshot: &ServiceSnapshot) -> Result<(), AggregateError> {
        if snapshot.service != self.service || snapshot.environment != self.environment {
            return Err(AggregateError::OtherService {
                expected: self.service.clone(),
                found: snapshot.service.clone(),
            });
        }
        Ok(())
    }
}

/// Decodes a published snapshot, refusing a newer format.
pub(crate) fn decode_snapshot(body: &[u8]) -> Result<ServiceSnapshot, AggregateError> {
    let snapshot: ServiceSnapshot = serde_json::from_slice(body).map_err(|e| AggregateError::Unreadable {
        what: "snapshot",
        message: e.to_string(),
    })?;
    if snapshot.version > SNAPSHOT_VERSION {
        return Err(AggregateError::Newer {
            what: "a snapshot",
            found: snapshot.version,
        });
    }
    Ok(snapshot)
}

/// The aggregate stored as `aggregate` (none yet: empty) with the snapshot
/// bodies `minus` taken back and `plus` added, encoded again. Unreadable
/// snapshots in `minus` are skipped: they were never added.
pub(crate) fn apply(
    key: (&str, Option<&str>),
    aggregate: Option<&[u8]>,
    minus: &[&[u8]],
    plus: &[&[u8]],
) -> Result<Vec<u8>, AggregateError> {
    let mut sum = match aggregate {
        Some(body) => Aggregate::decode(body)?,
        None => Aggregate::empty(key.0, key.1),
    };
    for body in minus {
        if let Ok(snapshot) = decode_snapshot(body) {
            sum.subtract(&snapshot)?;
        }
    }
    for body in plus {
        match decode_snapshot(body) {
            Ok(snapshot) => sum.add(&snapshot)?,
            Err(error) => tracing::warn!(%error, service = key.0, "a snapshot the fleet aggregate cannot read is left out"),
        }
    }
    Ok(sum.encode())
}

fn series_key(s: &SeriesSnapshot) -> String {
    format!("{}\u{1f}{}", s.operation, s.revision)
}

/// The key of one (operation, revision, peer), unit separators between.
fn calls_key(operation: &str, revision: &str, peer: &str) -> String {
    format!("{operation}\u{1f}{revision}\u{1f}{peer}")
}

fn take(map: &mut BTreeMap<u64, u64>, key: u64, count: u64) {
    if let Some(have) = map.get_mut(&key) {
        *have = have.saturating_sub(count);
        if *have == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(replica: u64, revision: &str, clean: u32) -> ServiceSnapshot {
        ServiceSnapshot {
            version: SNAPSHOT_VERSION,
            service: "checkout".into(),
            environment: Some("production".into()),
            watermark: 1_000 + replica,
            first_seen: Some(100 + replica),
            revisions: vec![RevisionSnapshot {
                revision: revision.into(),
                first_seen: 100 + replica,
                last_seen: 900 + replica,
                spans: 10 * replica,
                repository: None,
            }],
            series: vec![SeriesSnapshot {
                operation: "GET /cart".into(),
                revision: revision.into(),
                buckets: vec![(1_000, replica), (2_000 + replica, 1)],
                moments: vec![(60, replica, 0.1 * replica as f64, 0.7 * replica as f64), (120 + replica, 1, 0.3, 0.09)],
                clean_evaluations: clean,
                errors: vec![(60, 1)],
            }],
            peers: vec![PeerSnapshot {
                peer: format!("db-{replica}:5432"),
                first_seen: 100,
                last_seen: 900,
                calls: replica,
            }],
            scopes: vec![ScopeSnapshot {
                scope: format!("scope-{}", replica % 2),
                first_seen: 100 + replica,
                last_seen: 900,
                spans: replica,
            }],
            firing: Vec::new(),
            calls: vec![CallsSnapshot {
                revision: revision.into(),
                operation: "GET /cart".into(),
                peer: "db:5432".into(),
                buckets: vec![(1, 10 * replica), (2 + replica % 2, replica)],
                mean: 1.0 + 0.1 * replica as f64,
            }],
            repeats: vec![RepeatSnapshot {
                revision: revision.into(),
                operation: "POST /pay".into(),
                peer: "payments:443".into(),
                counts: [20 * replica, replica % 2, 1 + replica % 2, if replica % 2 == 1 { 300 + replica } else { 0 }, 800 + replica],
            }],
            regressed: Vec::new(),
            unsettled: Vec::new(),
        }
    }

    #[test]
    fn replacing_every_contribution_in_any_order_gives_the_sum_of_the_current_ones() {
        let mut sum = Aggregate::empty("checkout", Some("production"));
        for replica in 1..=5 {
            sum.add(&snapshot(replica, "r1", replica as u32)).expect("same service");
        }
        // Each replica publishes anew: out with the old, in with the new.
        for replica in [3, 1, 5, 2, 4] {
            sum.subtract(&snapshot(replica, "r1", replica as u32)).expect("same service");
            sum.add(&snapshot(replica, "r2", 1)).expect("same service");
        }
        let mut fresh = Aggregate::empty("checkout", Some("production"));
        for replica in 1..=5 {
            fresh.add(&snapshot(replica, "r2", 1)).expect("same service");
        }
        // Float sums may differ in their last bits; everything else exactly.
        let (a, b) = (sum.to_snapshot(), fresh.to_snapshot());
        assert_eq!(a.revisions, b.revisions);
        assert_eq!(a.peers, b.peers);
        assert_eq!(a.scopes, b.scopes);
        assert_eq!(a.series.len(), 1, "r1's series left with its last holder");
        assert_eq!(a.series[0].buckets, b.series[0].buckets);
        assert_eq!(a.series[0].errors, b.series[0].errors);
        assert_eq!(a.series[0].clean_evaluations, 1);
        for (x, y) in a.series[0].moments.iter().zip(&b.series[0].moments) {
            assert_eq!((x.0, x.1), (y.0, y.1));
            assert!((x.2 - y.2).abs() < 1e-9 && (x.3 - y.3).abs() < 1e-9);
        }
        assert_eq!(sum.replicas, 5);
        // Calls per request and unsafe calls: r1's left with their last
        // holder, r2's add up.
        assert_eq!(a.calls.len(), 1, "{:?}", a.calls);
        assert_eq!((a.calls[0].revision.as_str(), &a.calls[0].buckets), ("r2", &b.calls[0].buckets));
        assert_eq!(a.calls[0].buckets, [(1, 150), (2, 6), (3, 9)]);
        // Σ (1 + 0.1 r)(11 r) over r = 1..5, over the 165 requests.
        assert!((a.calls[0].mean - (165.0 + 1.1 * 55.0) / 165.0).abs() < 1e-9, "{}", a.calls[0].mean);
        assert_eq!(a.repeats.len(), 1);
        assert_eq!(a.repeats[0].revision, "r2");
        assert_eq!(a.repeats[0].counts, b.repeats[0].counts);
        assert_eq!(a.repeats[0].counts, [300, 3, 2, 301, 805], "repeats add up; the first is the earliest that repeated");
    }

    #[test]
    fn the_longest_clean_streak_stays_exact_when_its_replica_breaks_it() {
        let mut sum = Aggregate::empty("checkout", Some("production"));
        for (replica, clean) in [(1, 9), (2, 4), (3, 9)] {
            sum.add(&snapshot(replica, "r1", clean)).expect("same service");
        }
        assert_eq!(sum.to_snapshot().series[0].clean_evaluations, 9);
        sum.subtract(&snapshot(1, "r1", 9)).expect("same service");
        sum.add(&snapshot(1, "r1", 0)).expect("same service");
        assert_eq!(sum.to_snapshot().series[0].clean_evaluations, 9, "replica 3 still has 9");
        sum.subtract(&snapshot(3, "r1", 9)).expect("same service");
        assert_eq!(sum.to_snapshot().series[0].clean_evaluations, 4);
    }

    #[test]
    fn the_aggregate_minus_a_replica_is_the_others() {
        let all: Vec<_> = (1..=4).map(|r| snapshot(r, "r1", 2)).collect();
        let mut sum = Aggregate::empty("checkout", Some("production"));
        for s in &all {
            sum.add(s).expect("same service");
        }
        sum.subtract(&all[1]).expect("same service");
        let others = sum.to_snapshot();
        let spans: u64 = others.series[0].buckets.iter().map(|b| b.1).sum();
        assert_eq!(spans, (1 + 1) + (3 + 1) + (4 + 1));
        assert!(!others.peers.iter().any(|p| p.peer == "db-2:5432"), "its own peer left with it");
        let scopes: Vec<_> = others.scopes.iter().map(|s| s.scope.as_str()).collect();
        assert_eq!(scopes, ["scope-0", "scope-1"], "replicas 1 and 3 still hold scope-1");
        assert_eq!(others.calls[0].requests(), 11 * (1 + 3 + 4));
        assert_eq!(others.repeats[0].counts[..2], [20 * (1 + 3 + 4), 2]);
        assert_eq!(sum.replicas, 3);
        sum.subtract(&all[0]).expect("same service");
        sum.subtract(&all[2]).expect("same service");
        sum.subtract(&all[3]).expect("same service");
        assert_eq!(sum, Aggregate::empty("checkout", Some("production")));
    }

    #[test]
    fn bodies_round_trip_and_a_foreign_snapshot_is_refused() {
        let body = apply(
            ("checkout", Some("production")),
            None,
            &[],
            &[&serde_json::to_vec(&snapshot(1, "r1", 0)).expect("json")],
        )
        .expect("applied");
        let decoded = Aggregate::decode(&body).expect("readable");
        assert_eq!(decoded.replicas, 1);
        let mut other = snapshot(2, "r1", 0);
        other.environment = None;
        let mut sum = decoded.clone();
        assert!(matches!(sum.add(&other), Err(AggregateError::OtherService { .. })));
        let newer = br#"{"version":99,"service":"checkout","replicas":0,"watermark":0,"first_seen":null,"revisions":{},"series":{},"peers":{}}"#;
        assert!(matches!(Aggregate::decode(newer), Err(AggregateError::Newer { .. })));
        assert!(Aggregate::decode(b"{").is_err());
    }
}
