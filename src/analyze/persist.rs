//! `ServiceState` to and from its `ServiceSnapshot`: what a restart (or a
//! new pod of the next revision) keeps of a service's analysis, and how it
//! is rebuilt. The snapshot records themselves live in `snapshot`, below
//! the state, so that the fleet merge reads them without the state.

use super::service::{AnalysisSettings, ServiceState};
use super::snapshot::{
    CallsSnapshot, FiringSnapshot, PeerSnapshot, RegressedSnapshot, RepeatSnapshot, RevisionSnapshot, ScopeSnapshot,
    SeriesSnapshot,
    SNAPSHOT_VERSION, ServiceSnapshot, errors_at, histogram_buckets, histogram_from,
};
use super::window::LatencyWindows;
use crate::detect::event::EventKind;
use crate::detect::stats::{WindowMoments, new_histogram};
use crate::extract::Sym;

impl ServiceState {
    /// The state worth keeping across restarts. Revisions whose last span
    /// is older than `retention_nanos` before the watermark are left out.
    pub(crate) fn snapshot(&self, retention_nanos: u64) -> ServiceSnapshot {
        let horizon = self.watermark.saturating_sub(retention_nanos);
        let kept: Vec<_> = self
            .timeline
            .entries()
            .iter()
            .filter(|r| r.last_seen_unix_nanos >= horizon)
            .collect();
        let mut series: Vec<SeriesSnapshot> = self
            .latency
            .iter()
            .filter_map(|((op, rev), windows)| {
                let revision = kept.iter().find(|r| r.id == *rev)?;
                let operation = self.operations.name(*op)?;
                let mut all = new_histogram();
                windows.retained(&mut all);
                if all.is_empty() {
                    return None;
                }
                Some(SeriesSnapshot {
                    operation: operation.to_string(),
                    revision: revision.revision.to_string(),
                    buckets: histogram_buckets(&all),
                    moments: windows
                        .retained_moments()
                        .filter(|m| m.count > 0)
                        .map(|m| (m.start_unix_nanos, m.count, m.sum_ln, m.sum_ln2))
                        .collect(),
                    clean_evaluations: self.clean_evaluations(*op, *rev),
                    errors: windows
                        .retained_moments()
                        .filter(|m| m.errors > 0)
                        .map(|m| (m.start_unix_nanos, m.errors))
                        .collect(),
                })
            })
            .collect();
        series.sort_by(|a, b| (&a.operation, &a.revision).cmp(&(&b.operation, &b.revision)));
        let mut peers: Vec<PeerSnapshot> = self
            .peers
            .known_peers()
            .filter(|(_, k)| k.last_seen >= horizon)
            .map(|(peer, k)| PeerSnapshot {
                peer: peer.to_string(),
                first_seen: k.first_seen,
                last_seen: k.last_seen,
                calls: k.calls,
            })
            .collect();
        peers.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut scopes: Vec<ScopeSnapshot> = self
            .known_scopes()
            .filter(|(_, k)| k.last_seen >= horizon)
            .map(|(scope, k)| ScopeSnapshot {
                scope: scope.to_string(),
                first_seen: k.first_seen,
                last_seen: k.last_seen,
                spans: k.spans,
            })
            .collect();
        scopes.sort_by(|a, b| a.scope.cmp(&b.scope));
        let revision_name = |id| kept.iter().find(|r| r.id == id).map(|r| r.revision.to_string());
        let mut firing: Vec<FiringSnapshot> = self
            .latency_firing()
            .filter_map(|(op, incident)| {
                Some(FiringSnapshot {
                    event_id: incident.event_id.clone(),
                    kind: Some(EventKind::LatencyRegression),
                    revision: revision_name(incident.introduced)?,
                    operation: Some(self.operations.name(op)?.to_string()),
                    peer: None,
                    reasons: Vec::new(),
                    first_seen: 0,
                    baseline: incident.baseline.as_ref().map(histogram_buckets),
                    seen_in: incident.seen_in.iter().filter_map(|r| revision_name(*r)).collect(),
                    error_baseline: None,
                    scope: None,
                    calls_mean: None,
                })
            })
            .chain(self.error_rate_firing().filter_map(|(op, incident)| {
                Some(FiringSnapshot {
                    event_id: incident.event_id.clone(),
                    kind: Some(EventKind::ErrorRateRegression),
                    revision: revision_name(incident.introduced)?,
                    operation: Some(self.operations.name(op)?.to_string()),
                    peer: None,
                    reasons: Vec::new(),
                    first_seen: 0,
                    baseline: None,
                    seen_in: incident.seen_in.iter().filter_map(|r| revision_name(*r)).collect(),
                    error_baseline: Some((incident.baseline.errors, incident.baseline.spans)),
                    scope: None,
                    calls_mean: None,
                })
            }))
            .chain(
                self.outbound_firing()
                    .filter_map(|(peer, rev, event_id, reasons, first_seen)| {
                        Some(FiringSnapshot {
                            event_id: event_id.to_owned(),
                            kind: Some(EventKind::NewOutboundPeer),
                            error_baseline: None,
                            revision: revision_name(rev)?,
                            operation: None,
                            peer: Some(peer.to_string()),
                            reasons: reasons.to_vec(),
                            first_seen,
                            baseline: None,
                            seen_in: Vec::new(),
                            scope: None,
                            calls_mean: None,
                        })
                    }),
            )
            .chain(self.repeats_firing().filter_map(|((operation, peer), incident)| {
                Some(FiringSnapshot {
                    event_id: incident.event_id.clone(),
                    kind: Some(EventKind::RepeatedUnsafeCall),
                    error_baseline: None,
                    revision: revision_name(incident.revision)?,
                    operation: Some(operation.to_string()),
                    peer: Some(peer.to_string()),
                    reasons: Vec::new(),
                    first_seen: incident.first_repeat,
                    baseline: None,
                    seen_in: Vec::new(),
                    scope: None,
                    calls_mean: None,
                })
            }))
            .chain(self.fanout_firing().filter_map(|((operation, peer), incident)| {
                let baseline = &incident.baseline;
                Some(FiringSnapshot {
                    event_id: incident.event_id.clone(),
                    kind: Some(EventKind::FanoutRegression),
                    error_baseline: None,
                    revision: revision_name(incident.introduced)?,
                    operation: Some(operation.to_string()),
                    peer: Some(peer.to_string()),
                    reasons: Vec::new(),
                    first_seen: incident.onset,
                    baseline: Some(baseline.buckets().map(|(calls, n)| (u64::from(calls), n)).collect()),
                    seen_in: crate::detect::fanout::FanoutDetector::seen_in(incident)
                        .iter()
                        .filter_map(|r| revision_name(*r))
                        .collect(),
                    scope: None,
                    calls_mean: Some(baseline.mean()),
                })
            }))
            .chain(
                self.dependency_firing()
                    .filter_map(|(scope, rev, event_id, first_seen)| {
                        Some(FiringSnapshot {
                            event_id: event_id.to_owned(),
                            kind: Some(EventKind::NewDependency),
                            error_baseline: None,
                            revision: revision_name(rev)?,
                            operation: None,
                            peer: None,
                            reasons: Vec::new(),
                            first_seen,
                            baseline: None,
                            seen_in: Vec::new(),
                            scope: Some(scope.to_string()),
                            calls_mean: None,
                        })
                    }),
            )
            .collect();
        firing.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        let mut regressed: Vec<RegressedSnapshot> = self
            .regressed()
            .into_iter()
            .filter_map(|(kind, rev, operation, peer)| {
                Some(RegressedSnapshot {
                    kind,
                    revision: revision_name(rev)?,
                    operation: operation.to_string(),
                    peer: peer.map(|p| p.to_string()),
                })
            })
            .collect();
        regressed.sort_by(|a, b| {
            (a.kind.as_str(), &a.revision, &a.operation, &a.peer).cmp(&(b.kind.as_str(), &b.revision, &b.operation, &b.peer))
        });
        let mut unsettled: Vec<RegressedSnapshot> = self
            .unsettled()
            .into_iter()
            .filter_map(|(kind, rev, operation)| {
                Some(RegressedSnapshot {
                    kind,
                    revision: revision_name(rev)?,
                    operation: operation.to_string(),
                    peer: None,
                })
            })
            .collect();
        unsettled.sort_by(|a, b| (a.kind.as_str(), &a.revision, &a.operation).cmp(&(b.kind.as_str(), &b.revision, &b.operation)));
        ServiceSnapshot {
            version: SNAPSHOT_VERSION,
            service: self.key.service.to_string(),
            environment: self.key.environment.as_deref().map(str::to_owned),
            watermark: self.watermark,
            first_seen: self.first_seen(),
            revisions: kept
                .iter()
                .map(|r| RevisionSnapshot {
                    revision: r.revision.to_string(),
                    first_seen: r.first_seen_unix_nanos,
                    last_seen: r.last_seen_unix_nanos,
                    spans: r.spans,
                    repository: r.repository.as_deref().map(str::to_owned),
                })
                .collect(),
            series,
            peers,
            scopes,
            firing,
            calls: self
                .calls_series()
                .filter_map(|(rev, operation, peer, total)| {
                    Some(CallsSnapshot {
                        revision: revision_name(rev)?,
                        operation: operation.to_string(),
                        peer: peer.to_string(),
                        buckets: total.buckets().map(|(calls, n)| (u64::from(calls), n)).collect(),
                        mean: total.mean(),
                    })
                })
                .collect(),
            repeats: self
                .repeat_counts()
                .filter_map(|(rev, operation, peer, counts)| {
                    Some(RepeatSnapshot {
                        revision: revision_name(rev)?,
                        operation: operation.to_string(),
                        peer: peer.to_string(),
                        counts,
                    })
                })
                .collect(),
            regressed,
            unsettled,
        }
    }

    /// A service state rebuilt from a snapshot: its baselines hold the
    /// snapshot's traffic as older-than-current data.
    pub(crate) fn restore(snapshot: &ServiceSnapshot, settings: &AnalysisSettings) -> ServiceState {
        let mut state = ServiceState::new(snapshot.key(), settings);
        for r in &snapshot.revisions {
            let revision = Sym::from(r.revision.as_str());
            state.timeline.restore(&revision, r.first_seen, r.last_seen, r.spans);
            if let (Some(repository), Some(id)) = (&r.repository, state.timeline.id_of(&revision)) {
                state.timeline.note_repository(id, &Sym::from(repository.as_str()));
            }
        }
        for s in &snapshot.series {
            let Some(revision) = state.timeline.id_of(&s.revision) else {
                continue;
            };
            let op = state.operations.resolve(&Sym::from(s.operation.as_str()), snapshot.watermark);
            let moments: Vec<WindowMoments> = s
                .moments
                .iter()
                .map(|&(start, count, sum_ln, sum_ln2)| WindowMoments {
                    start_unix_nanos: start,
                    count,
                    sum_ln,
                    sum_ln2,
                    errors: errors_at(&s.errors, start).min(count),
                })
                .collect();
            let windows = LatencyWindows::restored(settings.layout, histogram_from(&s.buckets), moments, snapshot.watermark);
            state.latency.insert((op, revision), windows);
        }
        for p in &snapshot.peers {
            state
                .peers
                .restore_known(Sym::from(p.peer.as_str()), p.first_seen, p.last_seen, p.calls);
        }
        for s in &snapshot.scopes {
            state.learn_scope(Sym::from(s.scope.as_str()), s.known());
        }
        for c in &snapshot.calls {
            if let Some(revision) = state.timeline.id_of(&c.revision) {
                let total = crate::detect::fanout::CallsHistogram::from_buckets(&c.buckets, c.mean);
                state.restore_calls_series(revision, Sym::from(c.operation.as_str()), Sym::from(c.peer.as_str()), total);
            }
        }
        for r in &snapshot.repeats {
            if let Some(revision) = state.timeline.id_of(&r.revision) {
                state.restore_repeat_counts(revision, Sym::from(r.operation.as_str()), Sym::from(r.peer.as_str()), r.counts);
            }
        }
        for r in &snapshot.regressed {
            if let Some(revision) = state.timeline.id_of(&r.revision) {
                let peer = r.peer.as_deref().map(Sym::from);
                state.restore_regressed(r.kind, revision, Sym::from(r.operation.as_str()), peer);
            }
        }
        for r in &snapshot.unsettled {
            if let Some(revision) = state.timeline.id_of(&r.revision) {
                state.restore_unsettled(r.kind, revision, Sym::from(r.operation.as_str()));
            }
        }
        for f in &snapshot.firing {
            // A drift held again from its stored event may name a revision
            // the snapshot never saw.
            let revision = match state.timeline.id_of(&f.revision) {
                Some(id) => id,
                None => {
                    let at = f.first_seen.max(1);
                    state.timeline.restore(&Sym::from(f.revision.as_str()), at, at, 0);
                    let Some(id) = state.timeline.id_of(&f.revision) else {
                        continue;
                    };
                    id
                }
            };
            if let (Some(EventKind::FanoutRegression), Some(operation), Some(peer)) = (f.kind, &f.operation, &f.peer) {
                let buckets = f.baseline.as_deref().unwrap_or_default();
                let baseline = crate::detect::fanout::CallsHistogram::from_buckets(buckets, f.calls_mean.unwrap_or(f64::NAN));
                let seen_in = f.seen_in.iter().filter_map(|r| state.timeline.id_of(r)).collect();
                state.restore_fanout_firing(
                    (Sym::from(operation.as_str()), Sym::from(peer.as_str())),
                    revision,
                    f.event_id.clone(),
                    f.first_seen,
                    baseline,
                    seen_in,
                );
                continue;
            }
            if let (Some(EventKind::RepeatedUnsafeCall), Some(operation), Some(peer)) = (f.kind, &f.operation, &f.peer) {
                state.restore_repeat_firing(
                    Sym::from(operation.as_str()),
                    Sym::from(peer.as_str()),
                    revision,
                    f.event_id.clone(),
                    f.first_seen,
                );
                continue;
            }
            if let Some(operation) = &f.operation {
                let op = state.operations.resolve(&Sym::from(operation.as_str()), snapshot.watermark);
                let seen_in = f.seen_in.iter().filter_map(|r| state.timeline.id_of(r)).collect();
                if f.kind == Some(EventKind::ErrorRateRegression) {
                    // Without its baseline (an event that fired and was
                    // stored but never snapshotted, from an older store), a
                    // baseline without errors: it resolves once errors stop.
                    let (errors, spans) = f.error_baseline.unwrap_or((0, 1));
                    let baseline = crate::detect::errors::ErrorCount { errors, spans };
                    state.restore_error_rate_firing(op, revision, f.event_id.clone(), baseline, seen_in);
                } else {
                    let baseline = f.baseline.as_deref().map(histogram_from);
                    state.restore_latency_firing(op, revision, f.event_id.clone(), baseline, seen_in);
                }
            }
            if let (Some(EventKind::NewDependency), Some(scope)) = (f.kind, &f.scope) {
                state.restore_dependency_firing(Sym::from(scope.as_str()), revision, f.event_id.clone(), f.first_seen);
            }
            if let Some(peer) = &f.peer {
                state.restore_outbound_firing(
                    Sym::from(peer.as_str()),
                    revision,
                    f.event_id.clone(),
                    f.reasons.clone(),
                    f.first_seen,
                );
            }
        }
        state.restore_clock(snapshot.watermark, snapshot.first_seen);
        state
    }
}
