//! `FleetBaseline`: what the other replicas of a service have seen, merged.
//!
//! A sidecar lives and dies with its pod. When revision R rolls out, its
//! pods start with empty sidecars while R-1's baseline lived in the old
//! pods. In fleet mode each replica publishes its own snapshot; every other
//! replica merges them into a `FleetBaseline` and consults it next to its
//! own state: the revisions the fleet ran, their latency histograms and
//! change-point moments (summed), calls per request and unsafe-call counts
//! (summed), and the peers the service is known to call. It is kept apart from the replica's own data and replaced whole at
//! each refresh, so sharing back and forth never counts a span twice.

use std::collections::HashMap;

use crate::analyze::snapshot::{
    CallsSnapshot, PeerSnapshot, RevisionSnapshot, ScopeSnapshot, ServiceSnapshot, Sighting, add_calls, add_repeat_counts,
    histogram_from,
};
use crate::analyze::window::{LatencyWindows, WindowLayout};
use crate::detect::stats::{WindowMoments, new_histogram};
use crate::extract::{ServiceKey, Sym};

/// A series being merged: its histogram and its moments by window start.
type MergedSeries = (crate::detect::stats::LatencyHistogram, HashMap<u64, WindowMoments>);

/// (operation, revision, peer) names.
type CallKey = (Sym, Sym, Sym);

pub struct FleetBaseline {
    pub key: ServiceKey,
    /// The earliest span any other replica saw.
    pub first_seen: Option<u64>,
    pub revisions: Vec<RevisionSnapshot>,
    pub peers: Vec<PeerSnapshot>,
    pub scopes: Vec<ScopeSnapshot>,
    /// Merged latency history by (operation, revision) name.
    series: HashMap<(Sym, Sym), LatencyWindows>,
    /// The most clean comparisons in a row any replica made, by
    /// (operation, revision) name.
    clean: HashMap<(Sym, Sym), u32>,
    /// Calls per request, merged, by (operation, revision, peer) name.
    calls: HashMap<CallKey, CallsSnapshot>,
    /// Unsafe-call counts (as [`crate::analyze::snapshot::RepeatSnapshot`]),
    /// merged, by (operation, revision, peer) name.
    repeats: HashMap<CallKey, [u64; 5]>,
    pub replicas: usize,
}

impl FleetBaseline {
    /// Merges the snapshots of one service published by other replicas.
    pub(crate) fn merge(key: &ServiceKey, snapshots: &[ServiceSnapshot], layout: WindowLayout) -> FleetBaseline {
        let of_service = |s: &&ServiceSnapshot| {
            *s.service == *key.service && s.environment.as_deref() == key.environment.as_deref()
        };
        let mut revisions: HashMap<&str, RevisionSnapshot> = HashMap::new();
        let mut peers: HashMap<&str, PeerSnapshot> = HashMap::new();
        let mut scopes: HashMap<&str, ScopeSnapshot> = HashMap::new();
        let mut histograms: HashMap<(&str, &str), MergedSeries> = HashMap::new();
        let mut clean: HashMap<(Sym, Sym), u32> = HashMap::new();
        let mut calls: HashMap<CallKey, (std::collections::BTreeMap<u64, u64>, f64)> = HashMap::new();
        let mut repeats: HashMap<CallKey, [u64; 5]> = HashMap::new();
        let mut first_seen: Option<u64> = None;
        let mut watermark = 0;
        for snapshot in snapshots.iter().filter(of_service) {
            watermark = watermark.max(snapshot.watermark);
            if let Some(seen) = snapshot.first_seen {
                first_seen = Some(first_seen.map_or(seen, |f| f.min(seen)));
            }
            for r in &snapshot.revisions {
                revisions
                    .entry(&r.revision)
                    .and_modify(|m| {
                        m.first_seen = m.first_seen.min(r.first_seen);
                        m.last_seen = m.last_seen.max(r.last_seen);
                        m.spans += r.spans;
                        if m.repository.is_none() {
                            m.repository.clone_from(&r.repository);
                        }
                    })
                    .or_insert_with(|| r.clone());
            }
            for p in &snapshot.peers {
                peers.entry(&p.peer).and_modify(|m| m.widen(p)).or_insert_with(|| p.clone());
            }
            for s in &snapshot.scopes {
                scopes.entry(&s.scope).and_modify(|m| m.widen(s)).or_insert_with(|| s.clone());
            }
            let key = |operation: &str, revision: &str, peer: &str| (Sym::from(operation), Sym::from(revision), Sym::from(peer));
            for c in &snapshot.calls {
                let (buckets, made) = calls.entry(key(&c.operation, &c.revision, &c.peer)).or_default();
                add_calls(buckets, made, c);
            }
            for r in &snapshot.repeats {
                add_repeat_counts(repeats.entry(key(&r.operation, &r.revision, &r.peer)).or_default(), &r.counts);
            }
            for s in &snapshot.series {
                if s.clean_evaluations > 0 {
                    let most = clean.entry((Sym::from(s.operation.as_str()), Sym::from(s.revision.as_str()))).or_default();
                    *most = (*most).max(s.clean_evaluations);
                }
                let (histogram, moments) = histograms
                    .entry((&s.operation, &s.revision))
                    .or_insert_with(|| (new_histogram(), HashMap::new()));
                histogram.add(&histogram_from(&s.buckets));
                for &(start, count, sum_ln, sum_ln2) in &s.moments {
                    let m = moments.entry(start).or_insert(WindowMoments {
                        start_unix_nanos: start,
                        ..Default::default()
                    });
                    m.count += count;
                    m.sum_ln += sum_ln;
                    m.sum_ln2 += sum_ln2;
                    m.errors += crate::analyze::snapshot::errors_at(&s.errors, start).min(count);
                }
            }
        }
        let series = histograms
            .into_iter()
            .map(|((operation, revision), (histogram, moments))| {
                let mut moments: Vec<WindowMoments> = moments.into_values().collect();
                moments.sort_by_key(|m| m.start_unix_nanos);
                let windows = LatencyWindows::restored(layout, histogram, moments, watermark);
                ((Sym::from(operation), Sym::from(revision)), windows)
            })
            .collect();
        let mut revisions: Vec<RevisionSnapshot> = revisions.into_values().collect();
        revisions.sort_by_key(|r| r.first_seen);
        FleetBaseline {
            key: key.clone(),
            first_seen,
            revisions,
            peers: peers.into_values().collect(),
            scopes: scopes.into_values().collect(),
            series,
            clean,
            calls: calls
                .into_iter()
                .map(|((operation, revision, peer), (buckets, made))| {
                    let merged = CallsSnapshot::summed(&operation, &revision, &peer, &buckets, made);
                    ((operation, revision, peer), merged)
                })
                .collect(),
            repeats,
            replicas: snapshots.iter().filter(of_service).count(),
        }
    }

    /// The other replicas' calls per request to `peer` in `operation` under
    /// `revision`, merged.
    pub(crate) fn calls(&self, operation: &Sym, revision: &Sym, peer: &Sym) -> Option<&CallsSnapshot> {
        self.calls.get(&(operation.clone(), revision.clone(), peer.clone()))
    }

    /// The other replicas' unsafe calls to `peer` in `operation` under
    /// `revision`, merged (as [`crate::analyze::snapshot::RepeatSnapshot`]'s
    /// counts).
    pub(crate) fn repeats(&self, operation: &Sym, revision: &Sym, peer: &Sym) -> Option<[u64; 5]> {
        self.repeats.get(&(operation.clone(), revision.clone(), peer.clone())).copied()
    }

    /// The most clean comparisons in a row another replica made of
    /// `operation` under `revision`.
    pub(crate) fn clean_evaluations(&self, operation: &Sym, revision: &Sym) -> u32 {
        self.clean.get(&(operation.clone(), revision.clone())).copied().unwrap_or(0)
    }

    /// What the other replicas saw of each revision, per operation.
    pub(crate) fn coverage(&self) -> crate::coverage::ServiceCoverage {
        use crate::coverage::{OperationCoverage, RevisionCoverage, ServiceCoverage};
        let samples = |op: &Sym, revision: &str| {
            self.series
                .get(&(op.clone(), Sym::from(revision)))
                .map_or(0, LatencyWindows::total)
        };
        let mut operations: Vec<&Sym> = self.series.keys().map(|(op, _)| op).collect();
        operations.sort();
        operations.dedup();
        let revisions = self
            .revisions
            .iter()
            .enumerate()
            .map(|(i, revision)| RevisionCoverage {
                revision: revision.revision.clone(),
                first_seen_unix_nanos: revision.first_seen,
                last_seen_unix_nanos: revision.last_seen,
                operations: operations
                    .iter()
                    .filter(|op| samples(op, &revision.revision) > 0)
                    .map(|op| {
                        let baseline = self.revisions[..i].iter().rev().find_map(|b| {
                            let n = samples(op, &b.revision);
                            (n > 0).then_some((b, n))
                        });
                        OperationCoverage {
                            operation: op.to_string(),
                            samples: samples(op, &revision.revision),
                            baseline_revision: baseline.map(|(b, _)| b.revision.clone()),
                            baseline_samples: baseline.map_or(0, |(_, n)| n),
                            clean_evaluations: self.clean_evaluations(op, &Sym::from(revision.revision.as_str())),
                        }
                    })
                    .collect(),
            })
            .collect();
        ServiceCoverage {
            service: self.key.service.to_string(),
            environment: self.key.environment.as_deref().map(str::to_owned),
            revisions,
        }
    }

    /// The fleet's latency history of `operation` under `revision`.
    pub fn series(&self, operation: &Sym, revision: &Sym) -> Option<&LatencyWindows> {
        self.series.get(&(operation.clone(), revision.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::analyze::service::AnalysisSettings;
    use crate::analyze::snapshot::SeriesSnapshot;
    use crate::config::Config;

    fn snapshot(revision: &str, first: u64, last: u64, buckets: Vec<(u64, u64)>, peer_calls: u64) -> ServiceSnapshot {
        ServiceSnapshot {
            version: crate::analyze::snapshot::SNAPSHOT_VERSION,
            service: "checkout".into(),
            environment: None,
            watermark: last,
            first_seen: Some(first),
            revisions: vec![RevisionSnapshot {
                revision: revision.into(),
                first_seen: first,
                last_seen: last,
                spans: buckets.iter().map(|b| b.1).sum(),
                repository: None,
            }],
            series: vec![SeriesSnapshot {
                operation: "GET /".into(),
                revision: revision.into(),
                buckets: buckets.clone(),
                moments: vec![(first, buckets.iter().map(|b| b.1).sum(), 1.0, 2.0)],
                clean_evaluations: 0,
                errors: Vec::new(),
            }],
            peers: vec![PeerSnapshot {
                peer: "db:5432".into(),
                first_seen: first,
                last_seen: last,
                calls: peer_calls,
            }],
            scopes: vec![crate::analyze::snapshot::ScopeSnapshot {
                scope: "io.opentelemetry.jdbc".into(),
                first_seen: first,
                last_seen: last,
                spans: peer_calls,
            }],
            firing: Vec::new(),
            calls: Vec::new(),
            repeats: Vec::new(),
            regressed: Vec::new(),
            unsettled: Vec::new(),
        }
    }

    #[test]
    fn replicas_histograms_and_moments_add_up_and_lifetimes_widen() {
        let layout = AnalysisSettings::from_config(&Config::default()).layout;
        let a = snapshot("r1", 100, 200, vec![(10_000, 30), (20_000, 10)], 5);
        let mut b = snapshot("r1", 50, 150, vec![(10_000, 20)], 7);
        b.revisions[0].repository = Some("https://github.com/shop/checkout".into());
        let other = ServiceSnapshot {
            service: "cart".into(),
            ..snapshot("r9", 1, 2, vec![(1, 1)], 1)
        };
        let fleet = FleetBaseline::merge(&ServiceKey::new("checkout", None), &[a, b, other], layout);
        assert_eq!(fleet.replicas, 2);
        assert_eq!(fleet.first_seen, Some(50));
        assert_eq!(fleet.revisions.len(), 1);
        let r = &fleet.revisions[0];
        assert_eq!((r.first_seen, r.last_seen, r.spans), (50, 200, 60));
        assert_eq!(r.repository.as_deref(), Some("https://github.com/shop/checkout"), "one replica named it");
        assert_eq!(fleet.peers[0].calls, 7, "call counts are not summed across replicas");
        let scope = &fleet.scopes[0];
        assert_eq!((scope.first_seen, scope.last_seen, scope.spans), (50, 200, 7));
        let series = fleet.series(&Sym::from("GET /"), &Sym::from("r1")).expect("merged series");
        assert_eq!(series.total(), 60);
        let mut all = new_histogram();
        series.all(&mut all);
        assert_eq!(all.count_between(9_000, 11_000), 50);
        let moments: Vec<_> = series.retired_moments(10).collect();
        assert_eq!(moments.len(), 2, "windows at different starts stay apart");
        assert_eq!(moments.iter().map(|m| m.count).sum::<u64>(), 60);
        assert!(
            fleet.series(&Sym::from("GET /"), &Sym::from("r9")).is_none(),
            "other services are left out"
        );
    }

    #[test]
    fn replicas_calls_per_request_and_unsafe_calls_add_up() {
        use crate::analyze::snapshot::{CallsSnapshot, RepeatSnapshot};
        let layout = AnalysisSettings::from_config(&Config::default()).layout;
        let with_calls = |buckets: Vec<(u64, u64)>, mean: f64, counts: [u64; 5]| ServiceSnapshot {
            calls: vec![CallsSnapshot {
                revision: "r1".into(),
                operation: "GET /".into(),
                peer: "db:5432".into(),
                buckets,
                mean,
            }],
            repeats: vec![RepeatSnapshot {
                revision: "r1".into(),
                operation: "GET /".into(),
                peer: "db:5432".into(),
                counts,
            }],
            ..snapshot("r1", 100, 200, vec![(10_000, 1)], 1)
        };
        let a = with_calls(vec![(1, 30), (2, 10)], 1.25, [40, 0, 1, 0, 0]);
        let b = with_calls(vec![(1, 60)], 1.0, [60, 2, 3, 150, 190]);
        let fleet = FleetBaseline::merge(&ServiceKey::new("checkout", None), &[a, b], layout);
        let (op, r1, db) = (Sym::from("GET /"), Sym::from("r1"), Sym::from("db:5432"));
        let calls = fleet.calls(&op, &r1, &db).expect("merged calls");
        assert_eq!(calls.buckets, [(1, 90), (2, 10)]);
        assert!((calls.mean - 110.0 / 100.0).abs() < 1e-12, "{}", calls.mean);
        assert_eq!(fleet.repeats(&op, &r1, &db), Some([100, 2, 3, 150, 190]));
        assert!(fleet.calls(&op, &Sym::from("r2"), &db).is_none());
    }

    #[test]
    fn a_replica_adopts_the_fleets_revisions_without_churning_a_full_timeline() {
        use crate::analyze::service::ServiceState;
        use crate::extract::{SpanFact, SpanKind};
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("checkout", None), &settings);
        state.record(
            &SpanFact {
                trace_id: 1,
                span_id: 1,
                ..SpanFact::new(
                    Sym::from("checkout"),
                    Sym::from("local"),
                    Sym::from("GET /"),
                    SpanKind::Server,
                    1_000_000,
                    2_000_000,
                )
            },
            &settings,
        );
        let snapshots: Vec<ServiceSnapshot> = (0..settings.max_revisions as u64 * 2)
            .map(|i| snapshot(&format!("r{i}"), 10 + i, 20 + i, vec![(10_000, 5)], 1))
            .collect();
        let fleet = Arc::new(FleetBaseline::merge(&ServiceKey::new("checkout", None), &snapshots, settings.layout));
        state.adopt_fleet(fleet.clone());
        let names =
            |state: &ServiceState| -> Vec<String> { state.timeline.entries().iter().map(|e| e.revision.to_string()).collect() };
        let first = names(&state);
        assert_eq!(first.len(), settings.max_revisions);
        assert!(
            first.contains(&"local".to_string()),
            "this replica's own revision stays: {first:?}"
        );
        let newest = format!("r{}", settings.max_revisions * 2 - 1);
        assert!(first.contains(&newest), "the fleet's newest revisions come in: {first:?}");
        let local = state.timeline.id_of("local").expect("local");
        assert!(
            state.timeline.before(local).any(|e| *e.revision == *newest.as_str()),
            "a revision seen only elsewhere can be the baseline of this one"
        );
        state.adopt_fleet(fleet);
        assert_eq!(names(&state), first, "a second refresh changes nothing");
        assert!(state.peers.known("db:5432").is_some(), "the fleet's peers are known here");
    }
}
