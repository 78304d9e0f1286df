//! `ServiceState`: everything the analysis knows about one service — its
//! operations, revisions, latency windows and event-time watermark — and
//! the schedule of its detector evaluations.

use std::collections::HashMap;
use std::sync::Arc;

use crate::fleet::baseline::FleetBaseline;
use super::operations::{OTHER, OpId, OperationTable};
use super::peers::PeerSets;
use super::timeline::{RevId, RevisionTimeline};
use super::view::{ErrorTypes, OperationInfo, ServiceView, hint};
use super::window::{LatencyWindows, WindowLayout};
use crate::config::{
    AnalyzeConfig, DependencyConfig, ErrorRateConfig, FanoutConfig, LatencyConfig, OutboundConfig, RepeatedCallConfig,
};
use crate::detect::fanout::FanoutDetector;
use crate::detect::dependency::DependencyDetector;
use crate::detect::repeats::RepeatDetector;
use crate::detect::errors::{ErrorCount, ErrorRateDetector};
use crate::detect::event::{EventKind, EventUpdate};
use crate::detect::latency::LatencyDetector;
use crate::detect::outbound::OutboundDetector;
use crate::extract::{ServiceKey, SpanFact, Sym};

/// Settings derived once from the configuration and shared by all services.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    pub layout: WindowLayout,
    pub max_operations: usize,
    pub max_revisions: usize,
    pub max_services: usize,
    pub max_lateness_nanos: u64,
    pub operation_idle_nanos: u64,
    pub latency: LatencyConfig,
    pub error_rate: ErrorRateConfig,
    pub outbound: OutboundConfig,
    pub dependency: DependencyConfig,
    pub repeated_calls: RepeatedCallConfig,
    pub fanout: FanoutConfig,
}

impl AnalysisSettings {
    pub(crate) fn new(analyze: &AnalyzeConfig, detect: &crate::config::DetectConfig) -> AnalysisSettings {
        use crate::clock::nanos;
        let latency = &detect.latency;
        let window = nanos(analyze.window).max(1);
        let windows_in = |d: std::time::Duration| nanos(d).div_ceil(window) as usize;
        AnalysisSettings {
            layout: WindowLayout {
                window_nanos: window,
                ring_len: windows_in(latency.current_window).max(1),
                // Spans up to the evaluation delay past the next evaluation
                // are recorded before it runs.
                lead_len: windows_in(latency.evaluation_delay) + 1,
                block_nanos: (nanos(latency.baseline_window) / 2).max(window),
                moments_len: windows_in(latency.baseline_window).max(2) * 2,
            },
            max_operations: analyze.max_operations,
            max_revisions: analyze.max_revisions,
            max_services: analyze.max_services,
            max_lateness_nanos: nanos(analyze.max_lateness),
            operation_idle_nanos: nanos(analyze.operation_idle),
            latency: latency.clone(),
            error_rate: detect.error_rate.clone(),
            outbound: detect.outbound.clone(),
            dependency: detect.dependency.clone(),
            repeated_calls: detect.repeated_calls.clone(),
            fanout: detect.fanout.clone(),
        }
    }

    /// The settings of a configuration.
    pub fn from_config(config: &crate::config::Config) -> AnalysisSettings {
        AnalysisSettings::new(&config.analyze, &config.detect)
    }

    fn interval_nanos(&self) -> u64 {
        crate::clock::nanos(self.latency.evaluation_interval)
            .max(1)
    }

    fn delay_nanos(&self) -> u64 {
        crate::clock::nanos(self.latency.evaluation_delay)
    }
}

/// The outcome of recording one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Analysed,
    /// Ended more than `max_lateness` before the service's newest span.
    TooLate,
}

/// The analysis state of one service.
pub(crate) struct ServiceState {
    pub key: ServiceKey,
    pub operations: OperationTable,
    pub timeline: RevisionTimeline,
    pub latency: HashMap<(OpId, RevId), LatencyWindows>,
    pub op_info: HashMap<OpId, OperationInfo>,
    /// What failed spans failed with, per operation and revision.
    pub error_types: HashMap<(OpId, RevId), ErrorTypes>,
    pub peers: PeerSets,
    /// Set once the service made an outbound call: only then are spans
    /// remembered for caller lookups.
    calls_out: bool,
    /// Newest span end seen (event time).
    pub watermark: u64,
    next_evaluation: Option<u64>,
    /// Wall-clock time since the last span, while idle.
    idle_nanos: u64,
    detector: LatencyDetector,
    errors: ErrorRateDetector,
    outbound: OutboundDetector,
    dependencies: DependencyDetector,
    repeats: RepeatDetector,
    fanout: FanoutDetector,
    /// What the other replicas saw (fleet mode).
    fleet: Option<Arc<FleetBaseline>>,
    /// A revision that began serving after another one, not yet reported.
    deployed: Option<RevId>,
}

/// A service without spans for this long (wall clock) is idle: its event
/// time then advances with the wall clock.
const IDLE_AFTER_NANOS: u64 = 5_000_000_000;

/// Evaluations caught up at once after a jump in event time; older
/// boundaries are skipped (there is no data between them anyway).
const MAX_CATCH_UP_EVALUATIONS: u64 = 64;

impl ServiceState {
    pub(crate) fn new(key: ServiceKey, settings: &AnalysisSettings) -> ServiceState {
        ServiceState {
            key,
            operations: OperationTable::new(settings.max_operations),
            timeline: RevisionTimeline::new(settings.max_revisions),
            latency: HashMap::new(),
            op_info: HashMap::new(),
            error_types: HashMap::new(),
            peers: PeerSets::default(),
            calls_out: false,
            watermark: 0,
            next_evaluation: None,
            idle_nanos: 0,
            detector: LatencyDetector::new(settings.latency.clone(), settings.layout.moments_len / 2),
            errors: ErrorRateDetector::new(
                settings.error_rate.clone(),
                settings.latency.clone(),
                settings.layout.moments_len / 2,
                settings.layout.window_nanos,
            ),
            outbound: OutboundDetector::new(settings.outbound.clone(), settings.latency.evaluation_interval),
            dependencies: DependencyDetector::new(settings.dependency.clone(), settings.latency.evaluation_interval),
            repeats: RepeatDetector::new(settings.repeated_calls.clone()),
            fanout: FanoutDetector::new(settings.fanout.clone()),
            fleet: None,
            deployed: None,
        }
    }

    /// Takes in one span: first runs the evaluations that its end time
    /// makes due (so they see exactly the spans that ended before them, in
    /// whatever batches those came), then records it.
    pub(crate) fn observe(&mut self, fact: &SpanFact, settings: &AnalysisSettings, out: &mut Vec<EventUpdate>) -> Recorded {
        let end = fact.end_unix_nanos;
        if end.saturating_add(settings.max_lateness_nanos) < self.watermark {
            return Recorded::TooLate;
        }
        if end > self.watermark {
            self.evaluate_until(end, settings, out);
        }
        let recorded = self.record(fact, settings);
        self.report_deploy(out);
        recorded
    }

    /// Reports the revision that just began serving after another one.
    fn report_deploy(&mut self, out: &mut Vec<EventUpdate>) {
        let Some(revision) = self.deployed.take() else { return };
        let Some(entry) = self.timeline.get(revision) else { return };
        let previous = self.timeline.before(revision).next().map(|p| &*p.revision);
        out.push(EventUpdate::Deployed(Box::new(crate::detect::event::Deploy::new(
            &self.key,
            &entry.revision,
            previous,
            entry.repository.as_deref(),
            entry.first_seen_unix_nanos,
        ))));
    }

    pub(crate) fn record(&mut self, fact: &SpanFact, settings: &AnalysisSettings) -> Recorded {
        let end = fact.end_unix_nanos;
        if end.saturating_add(settings.max_lateness_nanos) < self.watermark {
            return Recorded::TooLate;
        }
        self.watermark = self.watermark.max(end);
        self.idle_nanos = 0;
        let known = self.timeline.entries().len();
        let (revision, dropped) = self.timeline.observe(&fact.revision, fact.start_unix_nanos, end);
        if let Some(dropped) = dropped {
            self.forget_revision(dropped);
        }
        let new = dropped.is_some() || self.timeline.entries().len() > known;
        if new && self.timeline.before(revision).next().is_some() {
            self.deployed = Some(revision);
        }
        if let Some(repository) = &fact.repository {
            self.timeline.note_repository(revision, repository);
        }
        self.outbound.on_span(fact.start_unix_nanos);
        if let Some(scope) = &fact.scope {
            let first_seen = self.outbound.first_seen().unwrap_or(fact.start_unix_nanos);
            self.dependencies
                .on_span(scope, &fact.operation, revision, fact.start_unix_nanos, first_seen);
        }
        if let Some(peer) = fact.peer.as_ref().filter(|_| fact.kind.is_outbound()) {
            self.calls_out = true;
            let lookback = crate::clock::nanos(settings.outbound.lookback);
            let novelty = self.peers.record_call(fact, peer, revision, lookback);
            self.outbound.on_call(peer, revision, fact.start_unix_nanos, novelty);
            if self.outbound.awaits_report(peer, revision) {
                self.peers.sample_callers(revision, peer);
            }
            return Recorded::Analysed;
        }
        if self.calls_out {
            self.peers.remember(fact);
        }
        if fact.kind.is_outbound() {
            return Recorded::Analysed;
        }
        let op = self.operations.resolve(&fact.operation, end);
        let micros = fact.duration_nanos() / 1000;
        self.latency
            .entry((op, revision))
            .or_insert_with(|| LatencyWindows::new(settings.layout))
            .record(end, micros, fact.status.is_error());
        if let Some(error_type) = &fact.error_type {
            self.error_types.entry((op, revision)).or_default().add(error_type);
        }
        if op != OTHER
            && fact.status.is_error()
            && let Some(code) = fact.error_code.as_deref().or(fact.code.as_deref())
        {
            self.op_info.entry(op).or_default().error_code = Some(code.clone());
        }
        if op != OTHER && (fact.code.is_some() || fact.route.is_some()) {
            let info = self.op_info.entry(op).or_default();
            if let Some(code) = &fact.code {
                info.code = Some((**code).clone());
            }
            if fact.route.is_some() {
                info.route = fact.route.clone();
            }
        }
        Recorded::Analysed
    }

    fn forget_revision(&mut self, dropped: RevId) {
        self.latency.retain(|(_, r), _| *r != dropped);
        self.error_types.retain(|(_, r), _| *r != dropped);
        self.detector.forget_revision(dropped);
        self.errors.forget_revision(dropped);
        self.peers.forget_revision(dropped);
        self.outbound.forget_revision(dropped);
        self.dependencies.forget_revision(dropped);
        self.repeats.forget_revision(dropped);
        self.fanout.forget_revision(dropped);
    }

    /// Takes in what the other replicas of the service saw: their revisions
    /// join the timeline (so a revision this replica never served can be
    /// the baseline of the one it serves), their peers count as known, and
    /// their latency history backs baselines next to this replica's own.
    pub(crate) fn adopt_fleet(&mut self, fleet: Arc<FleetBaseline>) {
        // Newest first, and only while they would stay: a fleet with more
        // revisions than the timeline holds must not churn it at each refresh.
        let mut revisions: Vec<_> = fleet.revisions.iter().collect();
        revisions.sort_by_key(|r| std::cmp::Reverse(r.last_seen));
        for r in revisions {
            let known = self.timeline.id_of(&r.revision).is_some();
            if !known && !self.timeline.has_room_for(r.last_seen) {
                continue;
            }
            let (id, dropped) = self
                .timeline
                .extend(&Sym::from(r.revision.as_str()), r.first_seen, r.last_seen, 0);
            if let Some(dropped) = dropped {
                self.forget_revision(dropped);
            }
            if let Some(repository) = &r.repository {
                self.timeline.note_repository(id, &Sym::from(repository.as_str()));
            }
        }
        for p in &fleet.peers {
            self.peers
                .learn_known(Sym::from(p.peer.as_str()), p.first_seen, p.last_seen, p.calls);
        }
        for s in &fleet.scopes {
            self.dependencies.learn_known(Sym::from(s.scope.as_str()), s.known());
        }
        if let Some(first_seen) = fleet.first_seen {
            self.outbound.learn_first_seen(first_seen);
        }
        self.fleet = Some(fleet);
    }

    /// Latency drifts firing now, by operation.
    pub(crate) fn latency_firing(&self) -> impl Iterator<Item = (OpId, &crate::detect::latency::Incident)> {
        self.detector.incidents()
    }

    /// What carried a drift and is never a baseline again: (kind,
    /// revision, operation, peer), latency and error rates by operation,
    /// fan-out by operation and peer.
    pub(crate) fn regressed(&self) -> Vec<(EventKind, RevId, Sym, Option<Sym>)> {
        let name = |op: OpId| self.operations.name(op).cloned();
        self
            .detector
            .regressed()
            .filter_map(|(op, rev)| Some((EventKind::LatencyRegression, rev, name(op)?, None)))
            .chain(
                self.errors
                    .regressed()
                    .filter_map(|(op, rev)| Some((EventKind::ErrorRateRegression, rev, name(op)?, None))),
            )
            .chain(
                self.fanout
                    .regressed()
                    .map(|(rev, op, peer)| (EventKind::FanoutRegression, *rev, op.clone(), Some(peer.clone()))),
            )
            .collect()
    }

    /// (revision, operation) pairs whose latency or error-rate rise had
    /// not yet fired: no baseline for later revisions while so.
    pub(crate) fn unsettled(&self) -> Vec<(EventKind, RevId, Sym)> {
        let name = |op: OpId| self.operations.name(op).cloned();
        self.detector
            .unsettled()
            .filter_map(|(op, rev)| Some((EventKind::LatencyRegression, rev, name(op)?)))
            .chain(
                self.errors
                    .unsettled()
                    .filter_map(|(op, rev)| Some((EventKind::ErrorRateRegression, rev, name(op)?))),
            )
            .collect()
    }

    /// Restores what [`unsettled`](Self::unsettled) listed; other kinds
    /// have no unsettled revisions and are ignored.
    pub(crate) fn restore_unsettled(&mut self, kind: EventKind, revision: RevId, operation: Sym) {
        let op = self.operations.resolve(&operation, self.watermark);
        match kind {
            EventKind::LatencyRegression => self.detector.restore_unsettled(op, revision),
            EventKind::ErrorRateRegression => self.errors.restore_unsettled(op, revision),
            _ => {}
        }
    }

    /// Restores what [`regressed`](Self::regressed) listed.
    pub(crate) fn restore_regressed(&mut self, kind: EventKind, revision: RevId, operation: Sym, peer: Option<Sym>) {
        match (kind, peer) {
            (EventKind::LatencyRegression, _) => {
                let op = self.operations.resolve(&operation, self.watermark);
                self.detector.restore_regressed(op, revision);
            }
            (EventKind::ErrorRateRegression, _) => {
                let op = self.operations.resolve(&operation, self.watermark);
                self.errors.restore_regressed(op, revision);
            }
            (EventKind::FanoutRegression, Some(peer)) => self.fanout.restore_regressed(revision, operation, peer),
            _ => {}
        }
    }

    /// Error-rate drifts firing now, by operation.
    pub(crate) fn error_rate_firing(&self) -> impl Iterator<Item = (OpId, &crate::detect::errors::Incident)> {
        self.errors.incidents()
    }

    /// Outbound drifts firing now.
    pub(crate) fn outbound_firing(&self) -> impl Iterator<Item = (&Sym, RevId, &str, &[crate::detect::details::PeerReason], u64)> {
        self.outbound.firing()
    }

    /// New-dependency drifts firing now: (scope, revision, event id, first span).
    pub(crate) fn dependency_firing(&self) -> impl Iterator<Item = (&Sym, RevId, &str, u64)> {
        self.dependencies.firing()
    }

    /// The scopes the service's spans came from within the lookback.
    pub(crate) fn known_scopes(&self) -> impl Iterator<Item = (&Sym, &crate::detect::dependency::KnownScope)> {
        self.dependencies.known()
    }

    /// Repeated-unsafe-call drifts firing now: ((operation, peer), incident).
    pub(crate) fn repeats_firing(&self) -> impl Iterator<Item = (&(Sym, Sym), &crate::detect::repeats::Incident)> {
        self.repeats.incidents()
    }

    /// Requests whose calls per peer were not counted (see
    /// `driftwatch_requests_untallied_total`).
    pub(crate) fn requests_untallied(&self) -> u64 {
        self.peers.requests_dropped.saturating_add(self.fanout.overflow)
    }

    /// Mean calls per request to each peer, over each revision's requests
    /// that called it: (revision, operation, peer, mean).
    pub(crate) fn calls_per_request(&self) -> impl Iterator<Item = (&Sym, &Sym, &Sym, f64)> + '_ {
        self.fanout
            .means()
            .filter_map(|(id, operation, peer, mean)| Some((&self.timeline.get(id)?.revision, operation, peer, mean)))
    }

    /// Share of each revision's requests that repeated an unsafe call to a
    /// peer: (revision, operation, peer, share).
    pub(crate) fn repeated_call_shares(&self) -> impl Iterator<Item = (&Sym, &Sym, &Sym, f64)> + '_ {
        self.repeats
            .shares()
            .filter_map(|(id, operation, peer, share)| Some((&self.timeline.get(id)?.revision, operation, peer, share)))
    }

    /// Fan-out drifts firing now: ((operation, peer), incident).
    pub(crate) fn fanout_firing(&self) -> impl Iterator<Item = (&(Sym, Sym), &crate::detect::fanout::Incident)> {
        self.fanout.incidents()
    }

    /// Resumes a fan-out drift of (operation, peer).
    pub(super) fn restore_fanout_firing(
        &mut self,
        key: (Sym, Sym),
        revision: RevId,
        event_id: String,
        onset: u64,
        baseline: crate::detect::fanout::CallsHistogram,
        seen_in: Vec<RevId>,
    ) {
        self.fanout.restore_firing(key, revision, event_id, onset, baseline, seen_in);
    }

    /// The fan-out and repeated-call detectors' series, for the snapshots.
    pub(super) fn calls_series(&self) -> impl Iterator<Item = (RevId, &Sym, &Sym, &crate::detect::fanout::CallsHistogram)> + '_ {
        self.fanout.series_totals()
    }

    pub(super) fn repeat_counts(&self) -> impl Iterator<Item = (RevId, &Sym, &Sym, [u64; 5])> + '_ {
        self.repeats.counts()
    }

    pub(super) fn restore_calls_series(
        &mut self,
        revision: RevId,
        operation: Sym,
        peer: Sym,
        total: crate::detect::fanout::CallsHistogram,
    ) {
        self.fanout.restore_series(revision, operation, peer, total);
    }

    pub(super) fn restore_repeat_counts(&mut self, revision: RevId, operation: Sym, peer: Sym, counts: [u64; 5]) {
        self.repeats.restore_counts(revision, operation, peer, counts);
    }

    pub(super) fn restore_repeat_firing(&mut self, operation: Sym, peer: Sym, revision: RevId, event_id: String, first: u64) {
        self.repeats.restore_firing(operation, peer, revision, event_id, first);
    }

    pub(super) fn restore_dependency_firing(&mut self, scope: Sym, revision: RevId, event_id: String, first_seen: u64) {
        self.dependencies.restore_firing(scope, revision, event_id, first_seen);
    }

    pub(super) fn learn_scope(&mut self, scope: Sym, known: crate::detect::dependency::KnownScope) {
        self.dependencies.learn_known(scope, known);
    }

    pub(super) fn restore_latency_firing(
        &mut self,
        op: OpId,
        revision: RevId,
        event_id: String,
        baseline: Option<crate::detect::stats::LatencyHistogram>,
        seen_in: Vec<RevId>,
    ) {
        if let Some(entry) = self.timeline.get(revision) {
            self.detector.restore_firing(op, entry, event_id, baseline, seen_in);
        }
    }

    pub(super) fn restore_error_rate_firing(
        &mut self,
        op: OpId,
        revision: RevId,
        event_id: String,
        baseline: ErrorCount,
        seen_in: Vec<RevId>,
    ) {
        if let Some(entry) = self.timeline.get(revision) {
            self.errors.restore_firing(op, entry, event_id, baseline, seen_in);
        }
    }

    pub(super) fn restore_outbound_firing(
        &mut self,
        peer: Sym,
        revision: RevId,
        event_id: String,
        reasons: Vec<crate::detect::details::PeerReason>,
        first_seen: u64,
    ) {
        self.outbound.restore_firing(peer, revision, event_id, reasons, first_seen);
    }

    /// When the service's first span was seen (event time).
    /// This replica's clean comparisons in a row of `op` in `revision`.
    pub(crate) fn clean_evaluations(&self, op: OpId, revision: RevId) -> u32 {
        self.detector.clean_evaluations(op, revision)
    }

    /// What this service's revisions served, per operation, with the
    /// detector's clean evaluations: the facts of a rollout verdict.
    pub(crate) fn coverage(&self) -> crate::coverage::ServiceCoverage {
        use crate::coverage::{OperationCoverage, RevisionCoverage, ServiceCoverage};
        let samples = |op: OpId, revision: &super::timeline::RevisionEntry| -> u64 {
            let local = self.latency.get(&(op, revision.id)).map_or(0, LatencyWindows::total);
            let fleet = self
                .fleet
                .as_deref()
                .zip(self.operations.name(op))
                .and_then(|(fleet, name)| fleet.series(name, &revision.revision))
                .map_or(0, LatencyWindows::total);
            local + fleet
        };
        let revisions = self
            .timeline
            .entries()
            .iter()
            .map(|revision| {
                let operations = self
                    .operations
                    .tracked()
                    .filter_map(|(op, name)| {
                        let count = samples(op, revision);
                        if count == 0 {
                            return None;
                        }
                        let baseline = self.timeline.before(revision.id).find_map(|b| {
                            let n = samples(op, b);
                            (n > 0).then_some((b, n))
                        });
                        Some(OperationCoverage {
                            operation: name.to_string(),
                            samples: count,
                            baseline_revision: baseline.map(|(b, _)| b.revision.to_string()),
                            baseline_samples: baseline.map_or(0, |(_, n)| n),
                            clean_evaluations: self.clean_evaluations(op, revision.id).max(
                                self.fleet
                                    .as_deref()
                                    .map_or(0, |fleet| fleet.clean_evaluations(name, &revision.revision)),
                            ),
                        })
                    })
                    .collect();
                RevisionCoverage {
                    revision: revision.revision.to_string(),
                    first_seen_unix_nanos: revision.first_seen_unix_nanos,
                    last_seen_unix_nanos: revision.last_seen_unix_nanos,
                    operations,
                }
            })
            .collect();
        ServiceCoverage {
            service: self.key.service.to_string(),
            environment: self.key.environment.as_deref().map(str::to_owned),
            revisions,
        }
    }

    pub(crate) fn first_seen(&self) -> Option<u64> {
        self.outbound.first_seen()
    }

    /// Resumes the event-time clock of a restored service.
    pub(super) fn restore_clock(&mut self, watermark: u64, first_seen: Option<u64>) {
        self.watermark = watermark;
        if let Some(first_seen) = first_seen {
            self.outbound.on_span(first_seen);
        }
    }

    /// Accounts `elapsed` wall-clock time without spans; once idle, moves
    /// the watermark forward by it. Returns whether the watermark moved.
    pub(crate) fn idle_tick(&mut self, elapsed: u64) -> bool {
        let before = self.idle_nanos;
        self.idle_nanos = self.idle_nanos.saturating_add(elapsed);
        if self.watermark == 0 || self.idle_nanos <= IDLE_AFTER_NANOS {
            return false;
        }
        let advance = self.idle_nanos - before.max(IDLE_AFTER_NANOS);
        self.watermark = self.watermark.saturating_add(advance);
        true
    }

    /// Runs every evaluation whose boundary the watermark has passed (plus
    /// the evaluation delay), in event-time order.
    pub(crate) fn evaluate_due(&mut self, settings: &AnalysisSettings, out: &mut Vec<EventUpdate>) {
        self.evaluate_until(self.watermark, settings, out);
    }

    /// Runs every evaluation due once event time reaches `watermark`.
    fn evaluate_until(&mut self, watermark: u64, settings: &AnalysisSettings, out: &mut Vec<EventUpdate>) {
        if watermark == 0 {
            return;
        }
        let interval = settings.interval_nanos();
        let delay = settings.delay_nanos();
        let mut next = *self
            .next_evaluation
            .get_or_insert_with(|| (watermark / interval + 1) * interval);
        if watermark < next.saturating_add(delay) {
            return;
        }
        let last_due = (watermark - delay) / interval * interval;
        let earliest = last_due.saturating_sub((MAX_CATCH_UP_EVALUATIONS - 1) * interval);
        next = next.max(earliest);
        while next <= last_due {
            self.evaluate_at(next, settings, out);
            next += interval;
        }
        self.next_evaluation = Some(next);
    }

    fn evaluate_at(&mut self, at: u64, settings: &AnalysisSettings, out: &mut Vec<EventUpdate>) {
        self.report_deploy(out);
        let first_new = out.len();
        self.run_detectors(at, settings, out);
        // Each new event names the repository its revision's spans name,
        // and a repeated call or a fan-out the code of the operation that
        // makes it.
        for update in &mut out[first_new..] {
            let EventUpdate::Fired(event) = update else { continue };
            if event.repository.is_none() {
                event.repository = self
                    .timeline
                    .id_of(&event.revision)
                    .and_then(|id| self.timeline.get(id))
                    .and_then(|entry| entry.repository.as_deref().map(str::to_owned));
            }
            let per_call = matches!(
                event.kind,
                crate::detect::kind::EventKind::RepeatedUnsafeCall | crate::detect::kind::EventKind::FanoutRegression
            );
            if per_call
                && let Some(operation) = event.operation.as_deref()
                && let Some((op, _)) = self.operations.tracked().find(|(_, name)| &***name == operation)
                && let Some(info) = self.op_info.get(&op)
            {
                event.code = hint(info.code.as_ref(), info);
            }
        }
    }

    fn run_detectors(&mut self, at: u64, settings: &AnalysisSettings, out: &mut Vec<EventUpdate>) {
        for windows in self.latency.values_mut() {
            windows.settle(at);
        }
        let evicted = self.operations.end_period(at, settings.operation_idle_nanos);
        if !evicted.is_empty() {
            self.latency.retain(|(op, _), _| !evicted.contains(op));
            self.op_info.retain(|op, _| !evicted.contains(op));
            self.error_types.retain(|(op, _), _| !evicted.contains(op));
            self.detector.forget_operations(&evicted);
            self.errors.forget_operations(&evicted);
        }
        self.peers.resolve_pending(at);
        for request in self.peers.take_finished() {
            self.repeats.on_request(&request);
            self.fanout.on_request(&request);
        }
        self.outbound.evaluate(&self.key, &self.peers, &self.timeline, at, out);
        self.repeats.evaluate(&self.key, &self.timeline, self.fleet.as_deref(), at, out);
        self.fanout.evaluate(&self.key, &self.timeline, self.fleet.as_deref(), at, out);
        self.dependencies.evaluate(&self.key, &self.timeline, at, out);
        let ServiceState {
            key,
            operations,
            timeline,
            latency,
            op_info,
            error_types,
            detector,
            errors,
            fleet,
            ..
        } = self;
        let view = ServiceView {
            key,
            operations,
            timeline,
            latency,
            op_info,
            error_types,
            fleet: fleet.as_deref(),
        };
        if settings.latency.enabled {
            detector.evaluate(&view, at, out);
        }
        if errors.enabled() {
            errors.evaluate(&view, at, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::snapshot::tests::{PAY_T0, PAY_TICK, fact, pay};
    use crate::extract::SpanKind;
    use crate::config::Config;
    use crate::detect::event::{DriftEvent, EventUpdate};
    use std::time::Duration;

    /// Ten minutes of r1 failing where `baseline_fails`, then six of r2
    /// failing where `fails`: the error-rate event that fires, if any, and
    /// how long after r2's first request it did.
    fn deploy(baseline_fails: impl Fn(u64) -> bool, fails: impl Fn(u64) -> bool) -> Option<(DriftEvent, Duration)> {
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let mut updates = Vec::new();
        pay(&mut state, &settings, &mut updates, 0..12_000, "r1", baseline_fails);
        pay(&mut state, &settings, &mut updates, 12_000..19_200, "r2", fails);
        let event = updates.into_iter().find_map(|u| match u {
            EventUpdate::Fired(event) if event.kind == EventKind::ErrorRateRegression => Some(*event),
            _ => None,
        })?;
        let deployed = PAY_T0 + 12_000 * PAY_TICK;
        let delay = Duration::from_nanos(event.detected_at.unix_nanos().checked_sub(deployed).expect("after the deploy"));
        Some((event, delay))
    }

    /// A burst of a quarter of requests failing for five seconds every five
    /// minutes, over one request in 200.
    fn flaky(i: u64) -> bool {
        if i % 6_000 < 100 { i % 4 == 0 } else { i % 200 == 0 }
    }

    #[test]
    fn a_steady_rise_after_a_deploy_over_a_steady_baseline_fires_within_a_minute() {
        let (event, delay) = deploy(|i| i % 200 == 0, |i| i % 40 == 0).expect("fires");
        assert_eq!(event.revision, "r2");
        assert_eq!(event.baseline_revision.as_deref(), Some("r1"));
        assert!(delay <= Duration::from_secs(60), "{delay:?}");
    }

    #[test]
    fn a_rise_over_a_baseline_with_bursts_waits_for_the_persistence_span() {
        let persistence = Config::default().detect.error_rate.persistence;
        let (event, delay) = deploy(flaky, |i| i % 25 == 0).expect("fires");
        assert_eq!(event.revision, "r2");
        assert!(delay >= persistence, "{delay:?}: a flaky dependency's baseline needs the whole span");
    }

    #[test]
    fn a_burst_right_after_a_deploy_over_a_steady_baseline_does_not_fire() {
        // Twenty seconds of a quarter failing, ten seconds into r2.
        let burst = |i: u64| if (12_200..12_600).contains(&i) { i % 4 == 0 } else { i % 200 == 0 };
        assert!(deploy(|i| i % 200 == 0, burst).is_none());
    }

    /// Over a baseline with bursts a rise needs the whole persistence span
    /// (four minutes), and r2 serves three before r3 — a deploy that
    /// changes nothing — replaces it: the rise is still one incident,
    /// introduced by r2 and seen in r3, never r3 against r2.
    #[test]
    fn a_rise_a_quick_second_deploy_carries_on_is_one_incident_from_the_revision_that_brought_it() {
        carried_rise(false);
    }

    /// The same, with a restart (a snapshot written and read back) while
    /// r2's rise is still unsettled.
    #[test]
    fn a_rise_carried_across_a_deploy_survives_a_restart_before_it() {
        carried_rise(true);
    }

    /// The events of `kind` that fired among `updates`.
    fn fired(updates: &[EventUpdate], kind: EventKind) -> Vec<&DriftEvent> {
        updates
            .iter()
            .filter_map(|u| match u {
                EventUpdate::Fired(event) if event.kind == kind => Some(&**event),
                _ => None,
            })
            .collect()
    }

    /// Whether `event` lists `revision` in `seen_in`, at firing or later.
    fn seen_in(updates: &[EventUpdate], event: &DriftEvent, revision: &str) -> bool {
        event.seen_in.iter().any(|r| r == revision)
            || updates
                .iter()
                .any(|u| matches!(u, EventUpdate::SeenIn { id, revision: r, .. } if *id == event.id && r == revision))
    }

    /// Where the window boundaries fall must not decide whether a drift is
    /// seen. The spans `tests/error_rate.rs` sends — `POST /checkout`
    /// failing 0.5% of the time, then 3% for three minutes, a deploy that
    /// changes nothing, three more minutes, a fix; beside it `GET /cart`
    /// failing 3% in every revision — shifted second by second across a
    /// minute, are one incident each time, from the bad revision to the fix.
    #[test]
    fn the_same_deploys_shifted_in_time_are_the_same_incident() {
        use crate::analyze::snapshot::tests::fact;
        use crate::detect::event::ResolutionReason;
        use crate::extract::{SpanKind, SpanStatus};
        const S: u64 = 1_000_000_000;
        let settings = AnalysisSettings::from_config(&Config::default());
        let plan = [("good", 6, 0.005), ("bad", 3, 0.03), ("docs", 3, 0.03), ("fix", 10, 0.005)];
        for shift in 0..60 {
            let mut rng = crate::rng::Rng::new(11);
            let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
            let mut updates = Vec::new();
            let mut start = PAY_T0 + shift * S;
            for (revision, minutes, checkout_errors) in plan {
                for i in 0..minutes * 60 * 20 {
                    let begin = start + i * S / 20;
                    let ms = rng.log_normal(40.0, 0.4);
                    let mut checkout = fact("POST /checkout", revision, begin + (ms * 1e6) as u64, 0, SpanKind::Server, None);
                    checkout.start_unix_nanos = begin;
                    if rng.uniform() < checkout_errors {
                        // The status or a 503: an error either way.
                        let _ = rng.uniform();
                        checkout.status = SpanStatus::Error;
                    }
                    let begin = begin + S / 40;
                    let ms = rng.log_normal(8.0, 0.4);
                    let mut cart = fact("GET /cart", revision, begin + (ms * 1e6) as u64, 0, SpanKind::Server, None);
                    cart.start_unix_nanos = begin;
                    if rng.uniform() < 0.03 {
                        cart.status = SpanStatus::Error;
                    }
                    for span in [checkout, cart] {
                        state.record(&span, &settings);
                        state.evaluate_due(&settings, &mut updates);
                    }
                }
                start += minutes * 60 * S;
            }
            let fired = fired(&updates, EventKind::ErrorRateRegression);
            assert_eq!(fired.len(), 1, "shifted {shift} s: {fired:#?}");
            let event = fired[0];
            assert_eq!((event.revision.as_str(), event.baseline_revision.as_deref()), ("bad", Some("good")), "shifted {shift} s");
            assert_eq!(event.operation.as_deref(), Some("POST /checkout"));
            assert!(seen_in(&updates, event, "docs"), "shifted {shift} s");
            let resolution = updates.iter().find_map(|u| match u {
                EventUpdate::Resolved { id, resolution, .. } if *id == event.id => Some(resolution.clone()),
                _ => None,
            });
            assert!(
                resolution.as_ref().is_some_and(|r| r.reason == ResolutionReason::Fixed && r.revision.as_deref() == Some("fix")),
                "shifted {shift} s: {resolution:?}"
            );
        }
    }

    /// A flaky dependency failing a quarter of requests for 40 s every 20
    /// minutes, in every revision alike.
    fn outage(i: u64) -> bool {
        i % 24_000 < 800 && i % 4 == 0
    }

    /// Forty minutes of r1 failing 0.5% of the time besides the outages,
    /// then r2 failing 3% besides them for `r2_minutes`, then r3 (a deploy
    /// that changes nothing) until half an hour after r2's deploy, when
    /// `rise`; without it, r2 fails as r1 did.
    fn rise_over_outages(rise: bool, r2_minutes: u64) -> Vec<EventUpdate> {
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let mut updates = Vec::new();
        let fails = move |i: u64| outage(i) || if rise { i % 33 == 0 } else { i % 200 == 0 };
        pay(&mut state, &settings, &mut updates, 0..48_000, "r1", |i| outage(i) || i % 200 == 0);
        let replaced = 48_000 + r2_minutes * 1_200;
        pay(&mut state, &settings, &mut updates, 48_000..replaced, "r2", fails);
        pay(&mut state, &settings, &mut updates, replaced..84_000, "r3", fails);
        updates
    }

    /// The outages make the baseline's errors overdispersed and lift its
    /// rate, so the scaled tests cannot see a steady rise from 0.5% to 3%
    /// that every revision shares the outages with: the calm rates (without
    /// the worst half of each stretch) do, once r2 has served three
    /// persistence spans — also when r3 replaced r2 after three minutes.
    #[test]
    fn a_steady_rise_over_a_baseline_with_outages_fires_on_the_calm_rates() {
        for r2_minutes in [30, 3] {
            let updates = rise_over_outages(true, r2_minutes);
            let fired = fired(&updates, EventKind::ErrorRateRegression);
            assert_eq!(fired.len(), 1, "r2 for {r2_minutes} min: {fired:#?}");
            let event = fired[0];
            assert_eq!((event.revision.as_str(), event.baseline_revision.as_deref()), ("r2", Some("r1")), "r2 for {r2_minutes} min");
            assert_eq!(r2_minutes < 30, seen_in(&updates, event, "r3"), "r2 for {r2_minutes} min");
            let deployed = PAY_T0 + 48_000 * PAY_TICK;
            let delay = Duration::from_nanos(event.detected_at.unix_nanos() - deployed);
            assert!(delay <= Duration::from_secs(15 * 60), "r2 for {r2_minutes} min: {delay:?}");
        }
        let hard_negative = rise_over_outages(false, 3);
        assert!(fired(&hard_negative, EventKind::ErrorRateRegression).is_empty(), "the outages alone do not fire");
    }

    /// `GET /x` at one request a second, served by each `(revision,
    /// seconds, median ms)` of `plan` in turn from `start`, each span
    /// evaluated as it arrives, with a restart (a snapshot written and read
    /// back) before the last revision when `restart`: every update.
    fn quiet_deploys(plan: &[(&str, u64, f64)], start: u64, restart: bool) -> Vec<EventUpdate> {
        use crate::analyze::snapshot::tests::fact;
        use crate::extract::SpanKind;
        const S: u64 = 1_000_000_000;
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let mut rng = crate::rng::Rng::new(3);
        let mut updates = Vec::new();
        let mut begin = start;
        for (i, (revision, seconds, median)) in plan.iter().enumerate() {
            if restart && i + 1 == plan.len() {
                let bytes = serde_json::to_vec(&state.snapshot(u64::MAX)).expect("json");
                state = ServiceState::restore(&serde_json::from_slice(&bytes).expect("parse"), &settings);
            }
            for _ in 0..*seconds {
                let ms = rng.log_normal(*median, 0.3);
                let mut span = fact("GET /x", revision, begin + (ms * 1e6) as u64, 0, SpanKind::Server, None);
                span.start_unix_nanos = begin;
                state.record(&span, &settings);
                state.evaluate_due(&settings, &mut updates);
                begin += S;
            }
        }
        updates
    }

    /// A quiet endpoint (one request a second) doubles its latency in r2,
    /// which serves just long enough to be a baseline but not to persist,
    /// and r3 carries the rise on: one incident from r2, whatever the
    /// window boundaries and across a restart between the deploys, never
    /// nothing (r3 against r2) and never r3.
    #[test]
    fn a_latency_rise_a_quick_second_deploy_carries_on_is_one_incident_from_the_revision_that_brought_it() {
        for (r2_seconds, restart) in [(110, false), (130, false), (110, true)] {
            for shift in 0..10 {
                let start = PAY_T0 + shift * 1_000_000_000;
                let plan = [("r1", 1800, 50.0), ("r2", r2_seconds, 100.0), ("r3", 1200, 100.0)];
                let updates = quiet_deploys(&plan, start, restart);
                let fired = fired(&updates, EventKind::LatencyRegression);
                let at = format!("r2 for {r2_seconds} s, shifted {shift} s, restart {restart}");
                assert_eq!(fired.len(), 1, "{at}: {fired:#?}");
                let event = fired[0];
                assert_eq!((event.revision.as_str(), event.baseline_revision.as_deref()), ("r2", Some("r1")), "{at}");
                assert!(seen_in(&updates, event, "r3"), "{at}");
            }
        }
    }

    /// Only calls the outbound detector may report keep latency samples:
    /// the new peer's event describes its caller's calls, while the peer
    /// every request already called keeps its callers' counts alone.
    #[test]
    fn callers_keep_latency_samples_only_for_a_call_that_may_be_reported() {
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let mut updates = Vec::new();
        let second = 1_000_000_000;
        // Twenty minutes of r1 calling the database, then ten of r2 that
        // also calls a new host, one request a second.
        for i in 0..1800u64 {
            let (revision, peers): (&str, &[&str]) =
                if i < 1200 { ("r1", &["db:5432"]) } else { ("r2", &["db:5432", "api.new.io:443"]) };
            let end = PAY_T0 + i * second;
            let mut request = fact("POST /pay", revision, end, 40, SpanKind::Server, None);
            request.span_id = 3 * i + 1;
            for (n, peer) in peers.iter().enumerate() {
                let mut call = fact("POST", revision, end - 5_000_000, 12, SpanKind::Client, Some(peer));
                (call.span_id, call.parent_span_id) = (3 * i + 2 + n as u64, request.span_id);
                state.record(&call, &settings);
            }
            state.record(&request, &settings);
            state.evaluate_due(&settings, &mut updates);
        }
        let fired = fired(&updates, EventKind::NewOutboundPeer);
        assert_eq!(fired.len(), 1, "{fired:#?}");
        let callers = &fired[0].outbound.as_ref().expect("details").callers;
        assert_eq!(callers[0].operation, "POST /pay");
        assert!((callers[0].p95_call_ms - 12.0).abs() < 0.01, "{callers:?}");
        assert!((callers[0].median_share - 0.3).abs() < 0.01, "{callers:?}");
        let r2 = state.timeline.id_of("r2").expect("r2");
        let known = state.peers.usage(r2, "db:5432").expect("db calls");
        assert!(!known.sampled);
        assert!(known.callers[0].calls > 500, "{:?}", known.callers);
        assert_eq!(known.callers[0].p95_call_ms(), 0.0, "no samples kept");
    }

    fn carried_rise(restart: bool) {
        let settings = AnalysisSettings::from_config(&Config::default());
        let mut state = ServiceState::new(ServiceKey::new("s", None), &settings);
        let mut updates = Vec::new();
        let rising = |i: u64| i % 25 == 0;
        pay(&mut state, &settings, &mut updates, 0..12_000, "r1", flaky);
        pay(&mut state, &settings, &mut updates, 12_000..15_600, "r2", rising);
        if restart {
            let snapshot = state.snapshot(u64::MAX);
            assert!(
                snapshot.unsettled.iter().any(|r| r.revision == "r2" && r.operation == "POST /pay"),
                "{:?}",
                snapshot.unsettled
            );
            let bytes = serde_json::to_vec(&snapshot).expect("json");
            state = ServiceState::restore(&serde_json::from_slice(&bytes).expect("parse"), &settings);
        }
        pay(&mut state, &settings, &mut updates, 15_600..19_200, "r3", rising);
        let fired = fired(&updates, EventKind::ErrorRateRegression);
        assert_eq!(fired.len(), 1, "{fired:#?}");
        let event = fired[0];
        assert_eq!(event.revision, "r2", "the revision that brought the rise");
        assert_eq!(event.baseline_revision.as_deref(), Some("r1"), "the last good revision, not r2");
        let deployed = PAY_T0 + 12_000 * PAY_TICK;
        assert!(
            (deployed - 1_000_000_000..=deployed).contains(&event.onset.unix_nanos()),
            "onset at r2's first span: {:?}",
            event.onset
        );
        assert!(seen_in(&updates, event, "r3"), "{event:#?}");
        let rates = event.stats.as_ref().and_then(|s| s.error_rate.as_ref()).expect("error rates");
        assert!(rates.current > 0.03 && rates.baseline < 0.01, "{rates:?}");
    }
}
