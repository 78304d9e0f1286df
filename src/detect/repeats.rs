//! The repeated-unsafe-call detector: one request that makes the same
//! non-idempotent call to a peer — an HTTP POST or PATCH, a publish, a
//! resend — more than once, where the revision before made it at most once
//! per request. This is the retry that charges a card twice: review and
//! unit tests pass, and only a request's trace shows the second charge.
//!
//! Requests arrive as closed tallies from the peer sets (`RequestCalls`),
//! in event-time order, so the same spans give the same events however
//! they are batched. A drift fires once `min_repeats` requests of a
//! revision repeated the call and the last good revision served at least
//! `min_baseline_requests` requests making it, none of them twice. Counts
//! are kept in the snapshots, so they survive a restart, and in fleet mode
//! the other replicas' counts of a revision join this replica's own.
//!
//! One (operation, peer) is one incident: later revisions that still
//! repeat the call join it (`seen_in`); it resolves once no request
//! repeated it for `resolve_after`.

use std::collections::HashMap;

use super::event::{DriftEvent, EventKind, EventUpdate, Severity};
use super::details::RepeatStats;
use super::nanos;
use crate::analyze::peers::RequestCalls;
use crate::analyze::snapshot::add_repeat_counts;
use crate::analyze::timeline::{RevId, RevisionTimeline};
use crate::config::RepeatedCallConfig;
use crate::extract::{ServiceKey, Sym};
use crate::fleet::baseline::FleetBaseline;

/// (revision, operation, peer) series counted per service, at most.
const MAX_SERIES: usize = 4096;
/// Later revisions an incident records, at most.
const MAX_SEEN_IN: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    requests: u64,
    repeated: u64,
    max_calls: u32,
    first_repeat: u64,
    last_repeat: u64,
}

impl Counts {
    /// As the snapshots hold them: (requests, repeated requests, most calls
    /// in one, first and last repeat).
    fn as_array(&self) -> [u64; 5] {
        [self.requests, self.repeated, u64::from(self.max_calls), self.first_repeat, self.last_repeat]
    }

    fn from_array(counts: [u64; 5]) -> Counts {
        let [requests, repeated, max_calls, first_repeat, last_repeat] = counts;
        Counts {
            requests,
            repeated,
            max_calls: u32::try_from(max_calls).unwrap_or(u32::MAX),
            first_repeat,
            last_repeat,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Incident {
    pub revision: RevId,
    pub event_id: String,
    pub first_repeat: u64,
    last_repeat: u64,
    /// Later revisions that repeat the call: (revision, first repeat, reported).
    seen_in: Vec<(RevId, u64, bool)>,
}

pub(crate) struct RepeatDetector {
    config: RepeatedCallConfig,
    critical: Vec<glob::Pattern>,
    counts: HashMap<(RevId, Sym, Sym), Counts>,
    incidents: HashMap<(Sym, Sym), Incident>,
}

impl RepeatDetector {
    /// Share of each (revision, operation, peer)'s requests that made the
    /// unsafe call more than once, for the dashboards.
    pub(crate) fn shares(&self) -> impl Iterator<Item = (RevId, &Sym, &Sym, f64)> + '_ {
        self.counts
            .iter()
            .filter(|(_, counts)| counts.requests > 0)
            .map(|((revision, operation, peer), counts)| {
                (*revision, operation, peer, counts.repeated as f64 / counts.requests as f64)
            })
    }

    pub(crate) fn new(config: RepeatedCallConfig) -> RepeatDetector {
        // Patterns were validated with the configuration.
        let critical = config.critical_peers.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect();
        RepeatDetector {
            config,
            critical,
            counts: HashMap::new(),
            incidents: HashMap::new(),
        }
    }

    /// Each (revision, operation, peer)'s counts, for the snapshots:
    /// (requests, repeated requests, most calls in one, first and last
    /// repeat).
    pub(crate) fn counts(&self) -> impl Iterator<Item = (RevId, &Sym, &Sym, [u64; 5])> + '_ {
        self.counts
            .iter()
            .map(|((revision, operation, peer), c)| (*revision, operation, peer, c.as_array()))
    }

    /// Restores counts [`RepeatDetector::counts`] gave.
    pub(crate) fn restore_counts(&mut self, revision: RevId, operation: Sym, peer: Sym, counts: [u64; 5]) {
        if self.counts.len() >= MAX_SERIES {
            return;
        }
        self.counts.insert((revision, operation, peer), Counts::from_array(counts));
    }

    /// Counts one request's unsafe calls.
    pub(crate) fn on_request(&mut self, request: &RequestCalls) {
        if !self.config.enabled {
            return;
        }
        for tally in request.calls.iter().filter(|c| c.unsafe_calls > 0) {
            let (peer, calls) = (&tally.peer, &tally.unsafe_calls);
            let key = (request.revision, request.operation.clone(), peer.clone());
            if !self.counts.contains_key(&key) && self.counts.len() >= MAX_SERIES {
                continue;
            }
            let counts = self.counts.entry(key).or_default();
            counts.requests += 1;
            if *calls < 2 {
                continue;
            }
            if counts.repeated == 0 {
                counts.first_repeat = request.at;
            }
            counts.repeated += 1;
            counts.last_repeat = counts.last_repeat.max(request.at);
            counts.max_calls = counts.max_calls.max(*calls);
            if let Some(incident) = self.incidents.get_mut(&(request.operation.clone(), peer.clone())) {
                incident.last_repeat = incident.last_repeat.max(request.at);
                let carried = request.revision != incident.revision
                    && incident.seen_in.len() < MAX_SEEN_IN
                    && !incident.seen_in.iter().any(|(r, _, _)| *r == request.revision);
                if carried {
                    incident.seen_in.push((request.revision, request.at, false));
                }
            }
        }
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
        let resolve_after = nanos(self.config.resolve_after);
        let mut ended = Vec::new();
        for (key, incident) in self.incidents.iter_mut() {
            super::report_seen_in(&incident.event_id, &mut incident.seen_in, timeline, at, out);
            if incident.last_repeat.saturating_add(resolve_after) < at {
                let carriers = super::carriers(incident.revision, &incident.seen_in);
                out.push(EventUpdate::Resolved {
                    id: incident.event_id.clone(),
                    at_unix_nanos: at,
                    resolution: super::ended(timeline, incident.revision, incident.first_repeat, &carriers, at, resolve_after),
                });
                ended.push(key.clone());
            }
        }
        for key in ended {
            self.incidents.remove(&key);
        }
        let mut fired = Vec::new();
        for ((revision, operation, peer), counts) in &self.counts {
            let key = (operation.clone(), peer.clone());
            // Repeats that stopped for `resolve_after` are an incident that
            // ended (or never started): they do not fire again.
            let recent = counts.last_repeat.saturating_add(resolve_after) >= at;
            if counts.repeated < self.config.min_repeats.max(1)
                || !recent
                || self.incidents.contains_key(&key)
                || counts.first_repeat >= at
            {
                continue;
            }
            // The last revision before this one that made the call often
            // enough (here and, in fleet mode, on the other replicas): it
            // must never have repeated it.
            let baseline = timeline.before(*revision).find_map(|b| {
                let local = self.counts.get(&(b.id, operation.clone(), peer.clone())).map(|c| c.as_array());
                let elsewhere = fleet.and_then(|f| f.repeats(operation, &b.revision, peer));
                let mut merged = local.or(elsewhere)?;
                if let (Some(_), Some(elsewhere)) = (local, elsewhere) {
                    add_repeat_counts(&mut merged, &elsewhere);
                }
                let c = Counts::from_array(merged);
                (c.requests >= self.config.min_baseline_requests).then_some((b, c))
            });
            let Some((baseline, base)) = baseline.filter(|(_, c)| c.repeated == 0) else { continue };
            let Some(entry) = timeline.get(*revision) else { continue };
            let critical = self.critical.iter().any(|p| p.matches(peer));
            let onset = counts.first_repeat.min(at);
            let event = DriftEvent {
                severity: if critical { Severity::Critical } else { Severity::Warning },
                operation: Some(operation.to_string()),
                peer: Some(peer.to_string()),
                baseline_revision: Some(baseline.revision.to_string()),
                repeats: Some(RepeatStats {
                    requests: counts.requests,
                    repeated_requests: counts.repeated,
                    max_calls_per_request: counts.max_calls,
                    baseline_requests: base.requests,
                }),
                ..DriftEvent::firing(EventKind::RepeatedUnsafeCall, service, &format!("{operation}\u{1f}{peer}"), &entry.revision, onset, at)
            };
            fired.push((key, *revision, onset, counts.last_repeat, event));
        }
        // Fixed order, whatever the maps' order.
        fired.sort_by(|a, b| a.4.fingerprint.cmp(&b.4.fingerprint));
        for (key, revision, onset, last_repeat, event) in fired {
            self.incidents.insert(
                key,
                Incident {
                    revision,
                    event_id: event.id.clone(),
                    first_repeat: onset,
                    last_repeat,
                    seen_in: Vec::new(),
                },
            );
            out.push(EventUpdate::Fired(Box::new(event)));
        }
    }

    /// Firing drifts: ((operation, peer), incident).
    pub(crate) fn incidents(&self) -> impl Iterator<Item = (&(Sym, Sym), &Incident)> {
        self.incidents.iter()
    }

    /// Resumes a drift that was firing before a restart.
    pub(crate) fn restore_firing(&mut self, operation: Sym, peer: Sym, revision: RevId, event_id: String, first_repeat: u64) {
        self.incidents.insert(
            (operation, peer),
            Incident {
                revision,
                event_id,
                first_repeat,
                last_repeat: first_repeat,
                seen_in: Vec::new(),
            },
        );
    }

    pub(crate) fn forget_revision(&mut self, revision: RevId) {
        self.counts.retain(|(r, _, _), _| *r != revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn request(revision: RevId, at: u64, calls: u32) -> RequestCalls {
        RequestCalls {
            operation: Sym::from("POST /checkout"),
            revision,
            at,
            calls: vec![crate::analyze::peers::PeerCalls {
                peer: Sym::from("api.stripe.com:443"),
                calls,
                unsafe_calls: calls,
            }],
        }
    }

    fn detector() -> RepeatDetector {
        RepeatDetector::new(RepeatedCallConfig {
            critical_peers: vec!["*.stripe.com:*".into()],
            ..Default::default()
        })
    }

    #[test]
    fn a_charge_made_twice_per_request_after_a_deploy_fires_critical_then_resolves_when_rolled_back() {
        let service = ServiceKey::new("checkout", None);
        let mut timeline = RevisionTimeline::new(8);
        timeline.observe(&Sym::from("r1"), 0, 100 * SECOND);
        let (r2, _) = timeline.observe(&Sym::from("r2"), 100 * SECOND, 200 * SECOND);
        let mut d = detector();
        for i in 0..30 {
            d.on_request(&request(0, i * SECOND, 1));
        }
        let mut out = Vec::new();
        for i in 0..10 {
            // Half of r2's requests charge twice.
            d.on_request(&request(r2, 100 * SECOND + i * SECOND, 1 + (i % 2) as u32));
        }
        d.evaluate(&service, &timeline, None, 111 * SECOND, &mut out);
        let event = match &out[..] {
            [EventUpdate::Fired(event)] => event,
            other => panic!("one event: {other:?}"),
        };
        assert_eq!(event.kind, EventKind::RepeatedUnsafeCall);
        assert_eq!(event.severity, Severity::Critical, "a payment peer");
        assert_eq!((event.operation.as_deref(), event.peer.as_deref()), (Some("POST /checkout"), Some("api.stripe.com:443")));
        assert_eq!((event.revision.as_str(), event.baseline_revision.as_deref()), ("r2", Some("r1")));
        let stats = event.repeats.as_ref().expect("stats");
        assert_eq!((stats.requests, stats.repeated_requests, stats.max_calls_per_request, stats.baseline_requests), (10, 5, 2, 30));
        // Nothing fires twice; r1 serves again and no request repeats.
        out.clear();
        timeline.observe(&Sym::from("r1"), 300 * SECOND, 2000 * SECOND);
        d.evaluate(&service, &timeline, None, 200 * SECOND, &mut out);
        assert!(out.is_empty(), "{out:?}");
        d.evaluate(&service, &timeline, None, 2000 * SECOND, &mut out);
        match &out[..] {
            [EventUpdate::Resolved { resolution, .. }] => {
                assert_eq!(resolution.reason, super::super::event::ResolutionReason::RolledBack)
            }
            other => panic!("one resolution: {other:?}"),
        }
    }

    #[test]
    fn a_baseline_that_already_repeated_or_was_never_seen_fires_nothing() {
        let service = ServiceKey::new("checkout", None);
        let mut timeline = RevisionTimeline::new(8);
        timeline.observe(&Sym::from("r1"), 0, 100 * SECOND);
        let (r2, _) = timeline.observe(&Sym::from("r2"), 100 * SECOND, 200 * SECOND);
        // No baseline counts at all (it ran before driftwatch started).
        let mut d = detector();
        for i in 0..10 {
            d.on_request(&request(r2, 100 * SECOND + i * SECOND, 2));
        }
        let mut out = Vec::new();
        d.evaluate(&service, &timeline, None, 111 * SECOND, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // A baseline that repeated too: the behaviour is not new.
        let mut d = detector();
        for i in 0..30 {
            d.on_request(&request(0, i * SECOND, 1 + (i == 7) as u32));
        }
        for i in 0..10 {
            d.on_request(&request(r2, 100 * SECOND + i * SECOND, 2));
        }
        d.evaluate(&service, &timeline, None, 111 * SECOND, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
