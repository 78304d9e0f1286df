//! The unexpected-outbound-call detector: a peer the service never called
//! within the lookback, any peer outside the egress allowlist, and — always —
//! link-local and cloud-metadata addresses.
//!
//! Calls are screened as they are recorded; the decision to fire waits for
//! the evaluation tick, so the event can name the operations that make the
//! call (their parent spans usually arrive after the call itself). Calls
//! are counted per evaluation interval, so an evaluation at event time `at`
//! counts exactly the calls that started before `at`, however the spans were
//! batched.
//!
//! One peer is one incident: a later revision that still calls it joins the
//! firing event (`seen_in`). It resolves once nothing has called the peer
//! for `resolve_after`: `fixed` when a newer revision serves without the
//! call, `rolled_back` when an older one does, `traffic_gone` when the
//! service's traffic (or the calling part of it) stopped.

use std::collections::HashMap;

use super::details::{CallerSummary, OutboundStats, PeerReason};
use super::nanos;
use super::event::{DriftEvent, EventKind, EventUpdate, Severity};
use crate::analyze::peers::{JOIN_WINDOW_NANOS, NO_PARENT, Novelty, PeerSets, is_placeholder_caller};
use crate::analyze::timeline::{RevId, RevisionTimeline};
use crate::config::OutboundConfig;
use crate::extract::{ServiceKey, Sym};
use crate::extract::peer::{is_metadata_endpoint, peer_host};

#[derive(Debug)]
struct Candidate {
    revision: RevId,
    first_seen: u64,
    reasons: Vec<PeerReason>,
    firing: Option<String>,
    calls: super::Settled,
    /// Later revisions that call the peer while it fires: (revision, first
    /// call, reported).
    seen_in: Vec<(RevId, u64, bool)>,
}

impl Candidate {
    fn new(revision: RevId, first_seen: u64, reasons: Vec<PeerReason>, firing: Option<String>) -> Candidate {
        Candidate {
            revision,
            first_seen,
            reasons,
            firing,
            calls: super::Settled::new(first_seen),
            seen_in: Vec::new(),
        }
    }
}

/// Later revisions a firing candidate still records, at most.
const MAX_SEEN_IN: usize = 64;

pub(crate) struct OutboundDetector {
    config: OutboundConfig,
    allow: Vec<(glob::Pattern, bool)>,
    candidates: HashMap<Sym, Candidate>,
    service_first_seen: Option<u64>,
    /// The evaluation interval: calls are counted per interval.
    interval_nanos: u64,
}

impl OutboundDetector {
    pub(crate) fn new(config: OutboundConfig, interval: std::time::Duration) -> OutboundDetector {
        // Patterns were validated with the configuration.
        let allow = config
            .allow
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok().map(|g| (g, has_port(p))))
            .collect();
        OutboundDetector {
            config,
            allow,
            candidates: HashMap::new(),
            service_first_seen: None,
            interval_nanos: nanos(interval).max(1),
        }
    }

    /// Whether the allowlist (if any) admits `peer`.
    pub(crate) fn allowed(&self, peer: &str) -> bool {
        self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|(pattern, with_port)| pattern.matches(peer) || (!with_port && pattern.matches(peer_host(peer))))
    }

    /// Whether `revision`'s calls to `peer` may still be reported: the
    /// event then describes their callers' latency.
    pub(crate) fn awaits_report(&self, peer: &str, revision: RevId) -> bool {
        self.candidates
            .get(peer)
            .is_some_and(|c| c.firing.is_none() && c.revision == revision)
    }

    /// Screens one call as it is recorded.
    pub(crate) fn on_call(&mut self, peer: &Sym, revision: RevId, start: u64, novelty: Novelty) {
        if !self.config.enabled {
            return;
        }
        let first_seen = *self.service_first_seen.get_or_insert(start);
        if let Some(candidate) = self.candidates.get_mut(peer) {
            candidate.calls.count(start, self.interval_nanos);
            let carried = candidate.firing.is_some()
                && revision != candidate.revision
                && candidate.seen_in.len() < MAX_SEEN_IN
                && !candidate.seen_in.iter().any(|(r, _, _)| *r == revision);
            if carried {
                candidate.seen_in.push((revision, start, false));
            }
            return;
        }
        let learning = start < first_seen.saturating_add(nanos(self.config.learning_period));
        let mut reasons = Vec::new();
        if novelty.unseen && !learning {
            reasons.push(PeerReason::NewPeer);
        }
        if !self.allowed(peer) {
            reasons.push(PeerReason::NotAllowed);
        }
        if is_metadata_endpoint(peer) {
            reasons.push(PeerReason::MetadataEndpoint);
        }
        if !reasons.is_empty() {
            let mut candidate = Candidate::new(revision, start, reasons, None);
            candidate.calls.count(start, self.interval_nanos);
            self.candidates.insert(peer.clone(), candidate);
        }
    }

    pub(crate) fn first_seen(&self) -> Option<u64> {
        self.service_first_seen
    }

    /// Notes the service's first span, so learning starts with it.
    pub(crate) fn on_span(&mut self, start: u64) {
        self.service_first_seen.get_or_insert(start);
    }

    /// Notes that the service ran since `first_seen` elsewhere in the fleet:
    /// its learning period is behind it there, so it is here too.
    pub(crate) fn learn_first_seen(&mut self, first_seen: u64) {
        let current = self.service_first_seen.get_or_insert(first_seen);
        *current = (*current).min(first_seen);
    }

    pub(crate) fn evaluate(
        &mut self,
        service: &ServiceKey,
        peers: &PeerSets,
        timeline: &RevisionTimeline,
        at: u64,
        out: &mut Vec<EventUpdate>,
    ) {
        if !self.config.enabled {
            return;
        }
        let resolve_after = nanos(self.config.resolve_after);
        let mut done = Vec::new();
        for (peer, candidate) in self.candidates.iter_mut() {
            candidate.calls.settle(at, self.interval_nanos);
            // Calls before a restart are known only to the peer set.
            let known_last = peers.known(peer).map_or(0, |k| k.last_seen).min(at);
            let last_call = candidate.calls.last.max(known_last);
            if let Some(id) = &candidate.firing {
                super::report_seen_in(id, &mut candidate.seen_in, timeline, at, out);
                if last_call.saturating_add(resolve_after) < at {
                    let carriers = super::carriers(candidate.revision, &candidate.seen_in);
                    out.push(EventUpdate::Resolved {
                        id: id.clone(),
                        at_unix_nanos: at,
                        resolution: super::ended(timeline, candidate.revision, candidate.first_seen, &carriers, at, resolve_after),
                    });
                    done.push(peer.clone());
                }
                continue;
            }
            if candidate.calls.total == 0 {
                continue;
            }
            let Some(usage) = peers.usage(candidate.revision, peer) else {
                done.push(peer.clone());
                continue;
            };
            let critical = candidate.reasons.iter().any(|r| *r != PeerReason::NewPeer);
            let min_calls = if critical { 1 } else { self.config.min_calls.max(1) };
            // Wait for the caller to be known, unless the call has none.
            let callers_known = usage
                .callers
                .iter()
                .any(|c| !is_placeholder_caller(&c.operation) || &*c.operation == NO_PARENT);
            let waited = candidate.first_seen.saturating_add(JOIN_WINDOW_NANOS) < at;
            if candidate.calls.total < min_calls || !(callers_known || waited) {
                if last_call.saturating_add(resolve_after) < at {
                    done.push(peer.clone());
                }
                continue;
            }
            let event = build_event(service, peer, candidate, usage, timeline, at, critical);
            candidate.firing = Some(event.id.clone());
            out.push(EventUpdate::Fired(Box::new(event)));
        }
        for peer in done {
            self.candidates.remove(&peer);
        }
    }

    /// Firing drifts: (peer, revision, event id, reasons, first call).
    pub(crate) fn firing(&self) -> impl Iterator<Item = (&Sym, RevId, &str, &[PeerReason], u64)> {
        self.candidates.iter().filter_map(|(peer, c)| {
            c.firing
                .as_deref()
                .map(|id| (peer, c.revision, id, c.reasons.as_slice(), c.first_seen))
        })
    }

    /// Resumes a drift that was firing before a restart.
    pub(crate) fn restore_firing(&mut self, peer: Sym, revision: RevId, event_id: String, reasons: Vec<PeerReason>, first_seen: u64) {
        self.candidates
            .insert(peer, Candidate::new(revision, first_seen, reasons, Some(event_id)));
    }

    pub(crate) fn forget_revision(&mut self, revision: RevId) {
        self.candidates.retain(|_, c| c.firing.is_some() || c.revision != revision);
    }
}

fn build_event(
    service: &ServiceKey,
    peer: &Sym,
    candidate: &Candidate,
    usage: &crate::analyze::peers::PeerUse,
    timeline: &RevisionTimeline,
    at: u64,
    critical: bool,
) -> DriftEvent {
    let revision = timeline
        .get(candidate.revision)
        .map(|r| r.revision.to_string())
        .unwrap_or_default();
    let baseline_revision = timeline.before(candidate.revision).next().map(|r| r.revision.to_string());
    let mut callers: Vec<CallerSummary> = usage
        .callers
        .iter()
        .map(|c| CallerSummary {
            operation: c.operation.to_string(),
            calls: c.calls,
            p95_call_ms: c.p95_call_ms(),
            median_share: c.median_share(),
        })
        .collect();
    callers.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.operation.cmp(&b.operation)));
    let operation = callers
        .iter()
        .find(|c| !is_placeholder_caller(&c.operation))
        .map(|c| c.operation.clone());
    let onset = candidate.first_seen.min(at);
    DriftEvent {
        severity: if critical { Severity::Critical } else { Severity::Warning },
        operation,
        peer: Some(peer.to_string()),
        attribution: baseline_revision
            .is_none()
            .then(|| "first revision seen: no earlier revision to compare with".to_owned()),
        baseline_revision,
        outbound: Some(OutboundStats {
            reasons: candidate.reasons.clone(),
            calls: candidate.calls.total,
            callers,
        }),
        ..DriftEvent::firing(EventKind::NewOutboundPeer, service, peer, &revision, onset, at)
    }
}

fn has_port(pattern: &str) -> bool {
    pattern
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit() || c == '*'))
}


#[cfg(test)]
mod tests {
    use super::*;

    fn detector(allow: &[&str]) -> OutboundDetector {
        OutboundDetector::new(
            OutboundConfig {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            std::time::Duration::from_secs(10),
        )
    }

    #[test]
    fn allowlist_globs() {
        let d = detector(&["payments.internal:443", "*.svc.cluster.local", "postgresql://pg.internal/*"]);
        assert!(d.allowed("payments.internal:443"));
        assert!(!d.allowed("payments.internal:8443"), "the pattern names a port");
        assert!(d.allowed("orders.svc.cluster.local:8080"), "no port in the pattern: any port");
        assert!(d.allowed("orders.svc.cluster.local"));
        assert!(d.allowed("postgresql://pg.internal/orders"));
        assert!(!d.allowed("api.fraudscore.io:443"));
        assert!(detector(&[]).allowed("anything:1"), "no allowlist admits everything");
    }

    #[test]
    fn reasons_are_screened() {
        let mut d = detector(&["*.internal"]);
        d.on_span(0);
        let after_learning = 3600 * 1_000_000_000;
        d.on_call(&Sym::from("known.internal:443"), 0, after_learning, Novelty { unseen: false });
        d.on_call(&Sym::from("api.new.io:443"), 0, after_learning, Novelty { unseen: true });
        d.on_call(&Sym::from("169.254.169.254:80"), 0, 10, Novelty { unseen: true });
        assert!(!d.candidates.contains_key("known.internal:443"));
        assert_eq!(
            d.candidates["api.new.io:443"].reasons,
            vec![PeerReason::NewPeer, PeerReason::NotAllowed]
        );
        assert_eq!(
            d.candidates["169.254.169.254:80"].reasons,
            vec![PeerReason::NotAllowed, PeerReason::MetadataEndpoint],
            "learning hides novelty, never the metadata endpoint"
        );
    }
}
