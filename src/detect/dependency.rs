//! The new-dependency detector: spans from an instrumentation scope — a
//! database driver, an HTTP client, a messaging library — that the service
//! has not produced spans from within the lookback. A library pulled in to
//! do something small shows here first: its instrumentation names it on
//! every span it makes, whatever the operation.
//!
//! Like the outbound-call detector, spans are screened as they are
//! recorded, counted per evaluation interval (so an evaluation at event
//! time `at` counts exactly the spans that started before `at`, however
//! they were batched), and the decision waits for the evaluation tick. A
//! scope first seen in the service's only revision is not reported: there
//! is no earlier revision it could be new against.
//!
//! One scope is one incident: a later revision that still uses it joins
//! the firing event (`seen_in`). It resolves once no span has come from the
//! scope for `resolve_after`: `fixed` when a newer revision serves without
//! it, `rolled_back` when an older one does, `traffic_gone` otherwise.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::event::{DriftEvent, EventKind, EventUpdate};
use super::details::{DependencyStats, OperationCount};
use super::nanos;
use crate::analyze::timeline::{RevId, RevisionTimeline};
use crate::config::DependencyConfig;
use crate::extract::{ServiceKey, Sym};

/// Scopes remembered per service, at most: instrumentation libraries are a
/// handful per service; past this, new names are not tracked (and so never
/// reported), which keeps a flood of made-up scope names bounded.
pub(crate) const MAX_SCOPES: usize = 256;
/// Operations named per candidate, at most.
const MAX_OPERATIONS: usize = 5;
/// Later revisions a firing candidate still records, at most.
const MAX_SEEN_IN: usize = 64;

/// When a scope's spans were seen, across revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KnownScope {
    pub first_seen: u64,
    pub last_seen: u64,
    pub spans: u64,
}

#[derive(Debug)]
struct Candidate {
    revision: RevId,
    first_seen: u64,
    firing: Option<String>,
    spans: super::Settled,
    operations: Vec<(Sym, u64)>,
    /// Later revisions that use the scope while it fires: (revision, first
    /// span, reported).
    seen_in: Vec<(RevId, u64, bool)>,
}

impl Candidate {
    fn new(revision: RevId, first_seen: u64, firing: Option<String>) -> Candidate {
        Candidate {
            revision,
            first_seen,
            firing,
            spans: super::Settled::new(first_seen),
            operations: Vec::new(),
            seen_in: Vec::new(),
        }
    }

    fn count(&mut self, start: u64, operation: &Sym, interval: u64) {
        self.spans.count(start, interval);
        if let Some((_, n)) = self.operations.iter_mut().find(|(o, _)| o == operation) {
            *n += 1;
        } else if self.operations.len() < MAX_OPERATIONS {
            self.operations.push((operation.clone(), 1));
        }
    }
}

pub(crate) struct DependencyDetector {
    config: DependencyConfig,
    ignore: Vec<glob::Pattern>,
    /// Looked up once per span: hashed with foldhash.
    known: HashMap<Sym, KnownScope, RandomState>,
    candidates: HashMap<Sym, Candidate, RandomState>,
    interval_nanos: u64,
}

impl DependencyDetector {
    pub(crate) fn new(config: DependencyConfig, interval: std::time::Duration) -> DependencyDetector {
        // Patterns were validated with the configuration.
        let ignore = config.ignore.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect();
        DependencyDetector {
            config,
            ignore,
            known: HashMap::default(),
            candidates: HashMap::default(),
            interval_nanos: nanos(interval).max(1),
        }
    }

    /// Screens one span from `scope` as it is recorded; `service_first_seen`
    /// is when the service's first span started (its learning begins).
    pub(crate) fn on_span(
        &mut self,
        scope: &Sym,
        operation: &Sym,
        revision: RevId,
        start: u64,
        service_first_seen: u64,
    ) {
        if !self.config.enabled {
            return;
        }
        let lookback = nanos(self.config.lookback);
        let full = self.known.len() >= MAX_SCOPES;
        let unseen = match self.known.get_mut(scope) {
            Some(known) => {
                let unseen = known.last_seen.saturating_add(lookback) < start;
                if unseen {
                    known.first_seen = start;
                }
                known.last_seen = known.last_seen.max(start);
                known.spans += 1;
                unseen
            }
            None if !full => {
                self.known.insert(
                    scope.clone(),
                    KnownScope {
                        first_seen: start,
                        last_seen: start,
                        spans: 1,
                    },
                );
                true
            }
            None => return,
        };
        if let Some(candidate) = self.candidates.get_mut(scope) {
            candidate.count(start, operation, self.interval_nanos);
            let carried = candidate.firing.is_some()
                && revision != candidate.revision
                && candidate.seen_in.len() < MAX_SEEN_IN
                && !candidate.seen_in.iter().any(|(r, _, _)| *r == revision);
            if carried {
                candidate.seen_in.push((revision, start, false));
            }
            return;
        }
        let learning = start < service_first_seen.saturating_add(nanos(self.config.learning_period));
        if unseen && !learning && !self.ignore.iter().any(|p| p.matches(scope)) {
            let mut candidate = Candidate::new(revision, start, None);
            candidate.count(start, operation, self.interval_nanos);
            self.candidates.insert(scope.clone(), candidate);
        }
    }

    pub(crate) fn evaluate(&mut self, service: &ServiceKey, timeline: &RevisionTimeline, at: u64, out: &mut Vec<EventUpdate>) {
        if !self.config.enabled {
            return;
        }
        let resolve_after = nanos(self.config.resolve_after);
        let mut done = Vec::new();
        for (scope, candidate) in self.candidates.iter_mut() {
            candidate.spans.settle(at, self.interval_nanos);
            // Spans before a restart are known only to the scope set.
            let known_last = self.known.get(scope).map_or(0, |k| k.last_seen).min(at);
            let last_span = candidate.spans.last.max(known_last);
            if let Some(id) = &candidate.firing {
                super::report_seen_in(id, &mut candidate.seen_in, timeline, at, out);
                if last_span.saturating_add(resolve_after) < at {
                    let carriers = super::carriers(candidate.revision, &candidate.seen_in);
                    out.push(EventUpdate::Resolved {
                        id: id.clone(),
                        at_unix_nanos: at,
                        resolution: super::ended(timeline, candidate.revision, candidate.first_seen, &carriers, at, resolve_after),
                    });
                    done.push(scope.clone());
                }
                continue;
            }
            if candidate.spans.total == 0 {
                continue;
            }
            // New against what? The service's only revision has nothing
            // before it: the scope is part of what the service always was.
            if timeline.before(candidate.revision).next().is_none() {
                done.push(scope.clone());
                continue;
            }
            if candidate.spans.total < self.config.min_spans.max(1) {
                if last_span.saturating_add(resolve_after) < at {
                    done.push(scope.clone());
                }
                continue;
            }
            let event = build_event(service, scope, candidate, timeline, at, self.config.severity);
            candidate.firing = Some(event.id.clone());
            out.push(EventUpdate::Fired(Box::new(event)));
        }
        for scope in done {
            self.candidates.remove(&scope);
        }
        // Forget scopes unseen for the lookback, unless they fire.
        let lookback = nanos(self.config.lookback);
        let candidates = &self.candidates;
        self.known
            .retain(|scope, k| k.last_seen.saturating_add(lookback) >= at || candidates.contains_key(scope));
    }

    /// The scopes the service's spans came from within the lookback.
    pub(crate) fn known(&self) -> impl Iterator<Item = (&Sym, &KnownScope)> {
        self.known.iter()
    }

    /// Learns a scope seen before a restart, or by another replica: the
    /// earliest first and the latest last sighting win.
    pub(crate) fn learn_known(&mut self, scope: Sym, known: KnownScope) {
        if let Some(k) = self.known.get_mut(&scope) {
            k.first_seen = k.first_seen.min(known.first_seen);
            k.last_seen = k.last_seen.max(known.last_seen);
            k.spans = k.spans.max(known.spans);
        } else if self.known.len() < MAX_SCOPES {
            self.known.insert(scope, known);
        }
    }

    /// Firing drifts: (scope, revision, event id, first span).
    pub(crate) fn firing(&self) -> impl Iterator<Item = (&Sym, RevId, &str, u64)> {
        self.candidates
            .iter()
            .filter_map(|(scope, c)| c.firing.as_deref().map(|id| (scope, c.revision, id, c.first_seen)))
    }

    /// Resumes a drift that was firing before a restart.
    pub(crate) fn restore_firing(&mut self, scope: Sym, revision: RevId, event_id: String, first_seen: u64) {
        self.candidates
            .insert(scope, Candidate::new(revision, first_seen, Some(event_id)));
    }

    pub(crate) fn forget_revision(&mut self, revision: RevId) {
        self.candidates.retain(|_, c| c.firing.is_some() || c.revision != revision);
    }
}

fn build_event(
    service: &ServiceKey,
    scope: &Sym,
    candidate: &Candidate,
    timeline: &RevisionTimeline,
    at: u64,
    severity: super::event::Severity,
) -> DriftEvent {
    let revision = timeline
        .get(candidate.revision)
        .map(|r| r.revision.to_string())
        .unwrap_or_default();
    let baseline_revision = timeline.before(candidate.revision).next().map(|r| r.revision.to_string());
    let mut operations: Vec<OperationCount> = candidate
        .operations
        .iter()
        .map(|(operation, spans)| OperationCount {
            operation: operation.to_string(),
            spans: *spans,
        })
        .collect();
    operations.sort_by(|a, b| b.spans.cmp(&a.spans).then_with(|| a.operation.cmp(&b.operation)));
    let onset = candidate.first_seen.min(at);
    DriftEvent {
        severity,
        operation: operations.first().map(|o| o.operation.clone()),
        baseline_revision,
        dependency: Some(DependencyStats {
            scope: scope.to_string(),
            spans: candidate.spans.total,
            operations,
        }),
        ..DriftEvent::firing(EventKind::NewDependency, service, scope, &revision, onset, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const LEARNED: u64 = 3600 * SECOND;

    fn detector(ignore: &[&str]) -> DependencyDetector {
        DependencyDetector::new(
            DependencyConfig {
                ignore: ignore.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            std::time::Duration::from_secs(10),
        )
    }

    fn timeline(revisions: &[(&str, u64, u64)]) -> RevisionTimeline {
        let mut timeline = RevisionTimeline::new(8);
        for (revision, first, last) in revisions {
            timeline.observe(&Sym::from(*revision), *first, *first);
            timeline.observe(&Sym::from(*revision), *last, *last);
        }
        timeline
    }

    fn fired(out: &[EventUpdate]) -> Vec<&DriftEvent> {
        out.iter()
            .filter_map(|u| match u {
                EventUpdate::Fired(e) => Some(&**e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_scope_new_in_a_later_revision_fires_once_and_resolves_when_rolled_back() {
        let service = ServiceKey::new("cart", None);
        let (pg, redis, op) = (Sym::from("opentelemetry.instrumentation.psycopg"), Sym::from("opentelemetry.instrumentation.redis"), Sym::from("GET"));
        let mut d = detector(&[]);
        let mut tl = timeline(&[("r1", 0, LEARNED)]);
        for i in 0..10 {
            d.on_span(&pg, &op, 0, i * SECOND, 0);
        }
        // The learning period hides nothing later: the known scope stays known.
        d.on_span(&pg, &op, 0, LEARNED, 0);
        let r2_start = LEARNED + 10 * SECOND;
        tl.observe(&Sym::from("r2"), r2_start, r2_start + 60 * SECOND);
        let r2 = tl.id_of("r2").expect("r2");
        for i in 0..5 {
            d.on_span(&redis, &Sym::from("HGET"), r2, r2_start + i * SECOND, 0);
            d.on_span(&pg, &op, r2, r2_start + i * SECOND, 0);
        }
        let mut out = Vec::new();
        d.evaluate(&service, &tl, r2_start + 3 * SECOND, &mut out);
        assert!(fired(&out).is_empty(), "three spans started before the evaluation: {out:?}");
        d.evaluate(&service, &tl, r2_start + 10 * SECOND, &mut out);
        let events = fired(&out);
        assert_eq!(events.len(), 1, "{out:?}");
        let event = events[0];
        assert_eq!(event.kind, EventKind::NewDependency);
        assert_eq!(event.severity, super::super::event::Severity::Info);
        assert_eq!(event.revision, "r2");
        assert_eq!(event.baseline_revision.as_deref(), Some("r1"));
        assert_eq!(event.operation.as_deref(), Some("HGET"));
        let stats = event.dependency.as_ref().expect("stats");
        assert_eq!((stats.scope.as_str(), stats.spans), ("opentelemetry.instrumentation.redis", 5));
        // r1 serves again, without the scope: rolled back.
        out.clear();
        let back = r2_start + 120 * SECOND;
        tl.observe(&Sym::from("r1"), back, back + 1000 * SECOND);
        d.evaluate(&service, &tl, back + 1000 * SECOND, &mut out);
        match &out[..] {
            [EventUpdate::Resolved { resolution, .. }] => {
                assert_eq!(resolution.reason, super::super::event::ResolutionReason::RolledBack)
            }
            other => panic!("expected one resolution, got {other:?}"),
        }
    }

    #[test]
    fn the_only_revision_learning_and_ignored_scopes_do_not_fire() {
        let service = ServiceKey::new("cart", None);
        let op = Sym::from("q");
        let mut d = detector(&["io.opentelemetry.runtime-*"]);
        let tl = timeline(&[("r1", 0, 2 * LEARNED)]);
        d.on_span(&Sym::from("early"), &op, 0, SECOND, 0);
        for i in 0..5 {
            d.on_span(&Sym::from("late.but.same.revision"), &op, 0, LEARNED + i, 0);
        }
        let mut out = Vec::new();
        d.evaluate(&service, &tl, 2 * LEARNED, &mut out);
        assert!(out.is_empty(), "{out:?}");

        let mut tl = timeline(&[("r1", 0, LEARNED)]);
        tl.observe(&Sym::from("r2"), LEARNED + 1, 2 * LEARNED);
        let r2 = tl.id_of("r2").expect("r2");
        for i in 0..5 {
            d.on_span(&Sym::from("io.opentelemetry.runtime-metrics"), &op, r2, LEARNED + 1 + i, 0);
        }
        d.evaluate(&service, &tl, 2 * LEARNED, &mut out);
        assert!(out.is_empty(), "an ignored scope: {out:?}");
    }

    #[test]
    fn a_flood_of_scope_names_stays_bounded() {
        let mut d = detector(&[]);
        for i in 0..(MAX_SCOPES as u64 * 4) {
            d.on_span(&Sym::from(format!("scope-{i}")), &Sym::from("op"), 0, LEARNED + i, 0);
        }
        assert_eq!(d.known().count(), MAX_SCOPES);
        assert!(d.candidates.len() <= MAX_SCOPES);
    }
}
