//! The error-rate-regression detector.
//!
//! It reads the windows the latency detector reads: each window counts its
//! spans and, among them, its errors (status ERROR, or a SERVER span that
//! answered 5xx or a failed gRPC status; see `extract`). At each
//! evaluation, every tracked operation of every serving revision is
//! compared with its baseline, chosen as for latency: the last good
//! revision for `deploy_comparison` after a deploy, else the revision's own
//! trailing traffic.
//!
//! A comparison is *bad* when both samples hold `min_samples` spans, the
//! current one `min_errors` errors, the rate rose by the relative AND the
//! absolute margin, the one-sided Fisher exact p-value is below `alpha / m`
//! (`m` the operations tested in this evaluation, Bonferroni), and the rise
//! persists: the last `persistence` of traffic (four minutes), cut into
//! groups of 200 spans (at least `persistence_windows` of them), shows half
//! the rise in two thirds of its groups. So an outage of a flaky
//! dependency (one bad minute), or a 0.1% → 0.2% blip on a small sample,
//! does not fire; nor does a dependency that fails every revision alike,
//! since the baseline fails as often.
//!
//! The steady path: after a deploy whose baseline revision shows no burst
//! of errors in its retained traffic, a rise that came evenly over the new
//! revision's whole life fires once that life reaches
//! `steady_persistence`, without waiting for the persistence span. A flaky
//! dependency's outage is a burst in one of the two unless it covers the
//! new revision's whole life, so the steady path buys detection within a
//! minute of a deploy without paging on outages.
//!
//! The calm path: an endpoint whose baseline fails in bursts (a flaky
//! dependency) has a high overdispersion, which leaves the tests above
//! little power, and a baseline rate its outages inflate, which a steady
//! rise may not double. Once the new revision has served
//! `CALM_SPAN_FACTOR` times the persistence span after a deploy, its calm
//! rate (its traffic since the deploy, in groups of 200 spans, without the
//! worst half of them) is compared with the baseline's calm rate by the
//! same margins and an exact test, and the current window must still show
//! half the rise over that calm baseline. Outages that cover less than half
//! of either stretch drop out of both, so the same flaky dependency in
//! both revisions compares equal, while a rise that lifts every group
//! shows in full. An incident fired this way keeps the calm baseline.
//!
//! A revision replaced while its rise is significant but not yet
//! persistent (*unsettled*) is no baseline for the next: that one is
//! compared with the last good revision over the traffic of both, so a
//! deploy that lands minutes after a bad one (a docs change, a config
//! bump) neither hides the rise nor takes the blame for it. An incident
//! that fires this way names the oldest unsettled revision, which brought
//! the rise, and lists the later ones in `seen_in`.
//!
//! The lifecycle is the latency detector's: one incident per operation,
//! against a frozen baseline; later revisions that still show it join it
//! (`seen_in`); it resolves after `resolve_after` evaluations in which every
//! serving revision's traffic over the persistence span is clean (back
//! below half a margin, and not significantly above the baseline raised by
//! half the relative margin), or as `traffic_gone` when nothing serves the
//! operation.

use std::collections::{HashMap, HashSet};

use super::{Carried, nanos};
use super::event::{
    DriftEvent, ErrorRates, ErrorTypeCount, EventKind, MAX_RATE_POINTS, RatePoint, EventUpdate, LatencyStats, Resolution, ResolutionReason, Severity,
};
use super::stats::{
    Dispersion, Summary, WindowMoments, calm_errors, errors_without_worst_half, fisher_greater, new_histogram, persistent_errors,
};
use crate::analyze::operations::{OTHER, OpId};
use crate::analyze::view::ServiceView;
use crate::analyze::timeline::{RevId, RevisionEntry};
use crate::config::{ErrorRateConfig, LatencyConfig};

/// Spans in each group of the persistence test: enough that a regression
/// from 0.5% to 2% errors shows in most groups (four errors expected
/// against a floor of two).
const GROUP_SPANS: u64 = 200;
/// Spans in each group of the steadiness tests of the steady path.
const STEADY_GROUP_SPANS: u64 = 50;
/// Groups a baseline needs before it can count as steady (five minutes of
/// traffic: groups are at least one window).
const STEADY_BASELINE_GROUPS: usize = 30;
/// Groups the new revision's traffic needs before its errors can count as
/// spread evenly.
const STEADY_CURRENT_GROUPS: usize = 3;
/// A baseline is steady when its errors vary at most this much more than
/// a binomial's (Pearson's χ² over its degrees of freedom): one burst of a
/// flaky dependency in an hour of traffic lifts it far above.
const STEADY_BASELINE_DISPERSION: f64 = 1.5;
/// The new revision's errors are spread evenly when their groups vary at
/// most this much more than a binomial's; about 3% of true steady rises
/// over five groups vary more and wait for `persistence`.
const STEADY_CURRENT_DISPERSION: f64 = 2.5;
/// The calm path needs the new revision to have served this many times
/// the persistence span since its deploy.
const CALM_SPAN_FACTOR: u64 = 3;
/// Groups of 200 spans each calm sample needs.
const CALM_MIN_GROUPS: usize = 10;
/// Resolution hysteresis: traffic is clean only below this share of a
/// firing margin.
const RESOLVE_MARGIN_SHARE: f64 = 0.5;

/// New error types an event lists.
const LISTED_ERROR_TYPES: usize = 5;

/// Errors among spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ErrorCount {
    pub errors: u64,
    pub spans: u64,
}

impl ErrorCount {
    pub(crate) fn rate(self) -> f64 {
        if self.spans == 0 {
            0.0
        } else {
            self.errors as f64 / self.spans as f64
        }
    }

    fn add(&mut self, m: &WindowMoments) {
        self.errors += m.errors.min(m.count);
        self.spans += m.count;
    }
}

/// A firing error-rate drift of one operation.
pub(crate) struct Incident {
    pub event_id: String,
    pub introduced: RevId,
    introduced_first_seen: u64,
    /// The traffic it fired against, frozen then.
    pub baseline: ErrorCount,
    pub seen_in: Vec<RevId>,
    clean_streak: u32,
    gone_streak: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Drifting,
    Unsettled,
    Clean,
}

struct Comparison<'a> {
    op: OpId,
    revision: &'a RevisionEntry,
    baseline_revision: Option<&'a RevisionEntry>,
    baseline: ErrorCount,
    current: ErrorCount,
    persistent: bool,
    /// The baseline's overdispersion (see [`Dispersion`]).
    dispersion: f64,
    /// The persistence span without its worst half of groups.
    trimmed: Option<ErrorCount>,
    /// After a deploy, a baseline revision without bursts and a new
    /// revision whose errors came evenly since it started serving, at
    /// least `steady_persistence` ago: the rise needs no `persistence`.
    steady: bool,
    /// Unsettled revisions between the baseline and `revision`, whose
    /// traffic the comparison counts as `revision`'s.
    carried: Carried<'a>,
    /// After a deploy, everything `revision` (and what it carries) served:
    /// whether it is unsettled is judged on this, so a revision going out
    /// of service, its last windows thinning, stays what it was.
    since_deploy: ErrorCount,
    /// After a deploy, the calm rates (baseline, current) of the calm path
    /// (see the module's docs), with enough groups in both.
    calm: Option<(ErrorCount, ErrorCount)>,
    /// The new revision has served long enough for the calm path to fire.
    calm_served: bool,
}

/// A bad comparison: its p-value, and the baseline it rose over, which a
/// firing incident keeps.
struct Bad {
    p_value: f64,
    against: ErrorCount,
}

impl<'a> Comparison<'a> {
    /// The revision that brought the rise: the oldest carried, else
    /// `revision`.
    fn introduced(&self) -> &'a RevisionEntry {
        self.carried.introduced(self.revision)
    }

    /// The one-sided Fisher p-value of `current` against the baseline.
    /// Errors that come in bursts in the baseline (a flaky dependency)
    /// vary more than a binomial's: both samples count as `dispersion`
    /// times fewer independent spans.
    fn scaled_p(&self, current: ErrorCount) -> f64 {
        let scaled = |n: u64| (n as f64 / self.dispersion).round() as u64;
        fisher_greater(
            scaled(current.errors),
            scaled(current.spans),
            scaled(self.baseline.errors),
            scaled(self.baseline.spans),
        )
    }

    /// Every revision whose traffic is the current sample, oldest first.
    fn current_revisions(&self) -> impl Iterator<Item = &'a RevisionEntry> + '_ {
        self.carried.with(self.revision)
    }
}

pub(crate) struct ErrorRateDetector {
    config: ErrorRateConfig,
    /// The windows' settings: current window and deploy comparison.
    windows: LatencyConfig,
    /// Windows in the baseline span.
    baseline_windows: usize,
    window_nanos: u64,
    streaks: HashMap<(OpId, RevId), u32>,
    incidents: HashMap<OpId, Incident>,
    regressed: HashSet<(OpId, RevId)>,
    /// (operation, revision) pairs whose last comparison after a deploy
    /// showed a significant rise that had not yet persisted: no baseline
    /// for later revisions (see the module's docs).
    unsettled: HashSet<(OpId, RevId)>,
}

impl ErrorRateDetector {
    pub(crate) fn new(config: ErrorRateConfig, windows: LatencyConfig, baseline_windows: usize, window_nanos: u64) -> ErrorRateDetector {
        ErrorRateDetector {
            config,
            windows,
            baseline_windows,
            window_nanos,
            streaks: HashMap::new(),
            incidents: HashMap::new(),
            regressed: HashSet::new(),
            unsettled: HashSet::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Firing drifts, by operation.
    pub(crate) fn incidents(&self) -> impl Iterator<Item = (OpId, &Incident)> {
        self.incidents.iter().map(|(op, incident)| (*op, incident))
    }

    /// (operation, revision) pairs that carried a drift: never a baseline
    /// again, across restarts (they are kept in the snapshot).
    pub(crate) fn regressed(&self) -> impl Iterator<Item = (OpId, RevId)> + '_ {
        self.regressed.iter().copied()
    }

    /// (operation, revision) pairs whose rise had not yet persisted (see
    /// the module's docs), for the snapshot.
    pub(crate) fn unsettled(&self) -> impl Iterator<Item = (OpId, RevId)> + '_ {
        self.unsettled.iter().copied()
    }

    /// Restores a pair [`unsettled`](Self::unsettled) listed.
    pub(crate) fn restore_unsettled(&mut self, op: OpId, revision: RevId) {
        self.unsettled.insert((op, revision));
    }

    /// Restores a pair [`regressed`](Self::regressed) listed.
    pub(crate) fn restore_regressed(&mut self, op: OpId, revision: RevId) {
        self.regressed.insert((op, revision));
    }

    /// Resumes a drift that was firing before a restart.
    pub(crate) fn restore_firing(
        &mut self,
        op: OpId,
        revision: &RevisionEntry,
        event_id: String,
        baseline: ErrorCount,
        seen_in: Vec<RevId>,
    ) {
        self.regressed.insert((op, revision.id));
        for r in &seen_in {
            self.regressed.insert((op, *r));
        }
        self.incidents.insert(
            op,
            Incident {
                event_id,
                introduced: revision.id,
                introduced_first_seen: revision.first_seen_unix_nanos,
                baseline,
                seen_in,
                clean_streak: 0,
                gone_streak: 0,
            },
        );
    }

    pub(crate) fn forget_revision(&mut self, revision: RevId) {
        self.streaks.retain(|(_, r), _| *r != revision);
        self.regressed.retain(|(_, r)| *r != revision);
        self.unsettled.retain(|(_, r)| *r != revision);
        for incident in self.incidents.values_mut() {
            incident.seen_in.retain(|r| *r != revision);
        }
    }

    pub(crate) fn forget_operations(&mut self, ops: &[OpId]) {
        self.streaks.retain(|(op, _), _| !ops.contains(op));
        self.regressed.retain(|(op, _)| !ops.contains(op));
        self.unsettled.retain(|(op, _)| !ops.contains(op));
        self.incidents.retain(|op, _| !ops.contains(op));
    }

    pub(crate) fn evaluate(&mut self, service: &ServiceView<'_>, at: u64, out: &mut Vec<EventUpdate>) {
        let current_window = nanos(self.windows.current_window);
        let mut active: Vec<&RevisionEntry> = service
            .timeline
            .entries()
            .iter()
            .filter(|r| r.last_seen_unix_nanos.saturating_add(current_window) >= at)
            .collect();
        // Oldest first: of two revisions that regress together, the older
        // one introduced the drift.
        active.sort_by_key(|r| (r.first_seen_unix_nanos, r.id));

        let mut comparisons = Vec::new();
        let mut checks: HashMap<OpId, Vec<(&RevisionEntry, ErrorCount)>> = HashMap::new();
        for (op, _) in service.operations.tracked() {
            if op == OTHER {
                continue;
            }
            for revision in &active {
                let Some(series) = service.latency.get(&(op, revision.id)) else {
                    continue;
                };
                if self.incidents.contains_key(&op) {
                    // Judged over the persistence span, as firing was: a
                    // quiet minute does not end a drift.
                    let mut current = ErrorCount::default();
                    for m in series.recent_moments().chain(series.retired_moments(self.beyond_current_window())) {
                        current.add(&m);
                    }
                    checks.entry(op).or_default().push((revision, current));
                } else if let Some(comparison) = self.compare(service, op, revision, at) {
                    comparisons.push(comparison);
                }
            }
        }
        let sufficient = |c: &ErrorCount| c.spans >= self.config.min_samples;
        let tests = (comparisons.len() + checks.values().flatten().filter(|(_, c)| sufficient(c)).count()).max(1);
        let threshold = self.config.alpha / tests as f64;

        self.judge_incidents(&checks, threshold, at, out);

        let mut evaluated: HashSet<(OpId, RevId)> = HashSet::new();
        for comparison in &comparisons {
            let key = (comparison.op, comparison.revision.id);
            evaluated.insert(key);
            let bad = self.judge(comparison, threshold);
            if let Some(incident) = self.incidents.get_mut(&comparison.op) {
                // Fired earlier in this evaluation by an older revision.
                if bad.is_some() && !incident.seen_in.contains(&key.1) {
                    incident.seen_in.push(key.1);
                    self.regressed.insert(key);
                    out.push(EventUpdate::SeenIn {
                        id: incident.event_id.clone(),
                        revision: comparison.revision.revision.to_string(),
                        at_unix_nanos: at,
                    });
                }
                continue;
            }
            if comparison.baseline_revision.is_some() && self.suspected(comparison, threshold) {
                self.unsettled.insert(key);
            } else {
                self.unsettled.remove(&key);
            }
            let Some(Bad { p_value, against }) = bad else {
                self.streaks.remove(&key);
                continue;
            };
            let streak = self.streaks.entry(key).or_default();
            *streak += 1;
            // The steady path's evidence already spans the revision's whole
            // life: it needs no second evaluation over the same traffic.
            if *streak < self.config.consecutive && !comparison.steady {
                continue;
            }
            let event = self.build_event(service, comparison, p_value, tests, at);
            let introduced = comparison.introduced();
            let later: Vec<&RevisionEntry> = comparison.current_revisions().skip(1).collect();
            for revision in comparison.current_revisions() {
                self.regressed.insert((comparison.op, revision.id));
                self.unsettled.remove(&(comparison.op, revision.id));
            }
            self.incidents.insert(
                comparison.op,
                Incident {
                    event_id: event.id.clone(),
                    introduced: introduced.id,
                    introduced_first_seen: introduced.first_seen_unix_nanos,
                    baseline: against,
                    seen_in: later.iter().map(|r| r.id).collect(),
                    clean_streak: 0,
                    gone_streak: 0,
                },
            );
            super::push_fired(out, event, &later, at);
        }
        self.streaks
            .retain(|key, _| evaluated.contains(key) && !self.incidents.contains_key(&key.0));
    }

    /// The comparison of `op` under `revision` with its baseline, when both
    /// have `min_samples` spans.
    fn compare<'a>(&self, service: &ServiceView<'a>, op: OpId, revision: &'a RevisionEntry, at: u64) -> Option<Comparison<'a>> {
        let series = service.latency.get(&(op, revision.id))?;
        let recent: Vec<WindowMoments> = series.recent_moments().collect();
        if !series.served_after(at.saturating_sub(nanos(self.windows.current_window))) {
            // Not serving the operation now: nothing to judge.
            return None;
        }
        let recent_deploy = revision
            .first_seen_unix_nanos
            .saturating_add(nanos(self.windows.deploy_comparison))
            > at;
        let earlier = recent_deploy.then(|| self.last_good(service, op, revision.id)).flatten();
        let mut current = ErrorCount::default();
        let mut baseline = ErrorCount::default();
        let mut dispersion = Dispersion::new(GROUP_SPANS);
        let mut steady = false;
        let mut carried = Carried::default();
        let mut whole = ErrorCount::default();
        let mut calm = None;
        let mut calm_served = false;
        let persistence: Vec<WindowMoments> = match earlier {
            Some(b) => {
                // After a deploy everything this revision served is
                // post-deploy, so a quiet endpoint may use all of it.
                for m in &recent {
                    current.add(m);
                }
                let older: Vec<WindowMoments> = series.retired_moments(usize::MAX).collect();
                if current.spans < self.config.min_samples {
                    for m in &older {
                        current.add(m);
                    }
                }
                for base in service.history(op, b) {
                    for m in base.recent_moments().chain(base.retired_moments(self.baseline_windows)) {
                        baseline.add(&m);
                        dispersion.add(&m);
                    }
                }
                let mut since_deploy: Vec<WindowMoments> = recent.into_iter().chain(older).collect();
                // Unsettled revisions since the baseline: their traffic is
                // this rise's too, newest first after this revision's own.
                carried = Carried::between(service.timeline, b.id, revision.id, |r| self.unsettled.contains(&(op, r)));
                for m in &since_deploy {
                    whole.add(m);
                }
                if carried.is_empty() {
                    steady = self.steady_rise(service, op, b, revision, at, &since_deploy);
                } else {
                    for s in carried.iter().filter_map(|r| service.latency.get(&(op, r.id))) {
                        for m in s.recent_moments().chain(s.retired_moments(usize::MAX)) {
                            whole.add(&m);
                            since_deploy.push(m);
                        }
                    }
                    current = whole;
                }
                let introduced = carried.introduced(revision);
                let served = at.saturating_sub(introduced.first_seen_unix_nanos);
                calm_served = served >= nanos(self.config.persistence).saturating_mul(CALM_SPAN_FACTOR);
                let base_windows = service
                    .history(op, b)
                    .flat_map(|base| base.recent_moments().chain(base.retired_moments(self.baseline_windows)));
                let (spans, errors, base_groups) = calm_errors(base_windows, GROUP_SPANS);
                let calm_base = ErrorCount { errors, spans };
                let (spans, errors, groups) = calm_errors(since_deploy.iter().copied(), GROUP_SPANS);
                let calm_current = ErrorCount { errors, spans };
                calm = (base_groups.min(groups) >= CALM_MIN_GROUPS).then_some((calm_base, calm_current));
                since_deploy
            }
            None => {
                for m in &recent {
                    current.add(m);
                }
                // The stretch of `persistence` beyond the current window is
                // judged, not part of the baseline.
                let judged = self.beyond_current_window();
                let older: Vec<WindowMoments> = series.retired_moments(self.baseline_windows + judged).collect();
                for m in older.iter().skip(judged) {
                    baseline.add(m);
                    dispersion.add(m);
                }
                recent.into_iter().chain(older.into_iter().take(judged)).collect()
            }
        };
        // Each group must rise by half the margins on its own.
        let floor = (baseline.rate() * (1.0 + self.config.relative_increase * RESOLVE_MARGIN_SHARE))
            .max(baseline.rate() + self.config.absolute_increase * RESOLVE_MARGIN_SHARE);
        let trimmed = errors_without_worst_half(
            persistence.iter().copied(),
            self.config.persistence_windows,
            GROUP_SPANS,
            nanos(self.config.persistence),
            self.window_nanos,
        )
        .map(|(spans, errors)| ErrorCount { errors, spans });
        let persistent = persistent_errors(
            persistence.into_iter(),
            floor,
            self.config.persistence_windows,
            GROUP_SPANS,
            nanos(self.config.persistence),
            self.window_nanos,
        );
        (current.spans >= self.config.min_samples && baseline.spans >= self.config.min_samples).then_some(Comparison {
            op,
            revision,
            baseline_revision: earlier,
            baseline,
            current,
            persistent,
            dispersion: dispersion.factor(),
            trimmed,
            steady,
            carried,
            since_deploy: whole,
            calm,
            calm_served,
        })
    }

    /// The calm path's rise (see the module's docs), when it shows one.
    fn calm_rise(&self, c: &Comparison<'_>, threshold: f64) -> Option<Bad> {
        if !c.calm_served || !c.calm.is_some_and(|(baseline, _)| self.rose(baseline, c.current, RESOLVE_MARGIN_SHARE)) {
            return None;
        }
        self.calm_rose(c, threshold)
    }

    /// Whether the calm rates rose significantly, however long the new
    /// revision has served.
    fn calm_rose(&self, c: &Comparison<'_>, threshold: f64) -> Option<Bad> {
        let (baseline, current) = c.calm?;
        if current.errors < self.config.min_errors || !self.rose(baseline, current, 1.0) {
            return None;
        }
        let p_value = fisher_greater(current.errors, current.spans, baseline.errors, baseline.spans);
        (p_value < threshold).then_some(Bad { p_value, against: baseline })
    }

    /// Whether a comparison after a deploy shows a significant rise, the
    /// persistence test (or the calm path's span) aside: the revision is
    /// unsettled while it does.
    fn suspected(&self, c: &Comparison<'_>, threshold: f64) -> bool {
        let served = c.since_deploy;
        if self.calm_rose(c, threshold).is_some() {
            return true;
        }
        if served.errors < self.config.min_errors || !self.rose(c.baseline, served, 1.0) {
            return false;
        }
        c.scaled_p(served) < threshold
    }

    /// Whether a rise since a deploy may skip the persistence span: the
    /// steady path is on, the new revision has served `steady_persistence`
    /// and not yet `persistence`, the retained traffic of `baseline` (the
    /// revision before) shows no burst, and the new revision's errors since
    /// it started serving (`since_deploy`, newest first) came evenly. A
    /// flaky dependency's outage shows as a burst in one or the other
    /// unless it covers the new revision's whole life, so only a regression
    /// that came with the deploy fires this early. Outside that stretch of
    /// the revision's life nothing is read.
    fn steady_rise(
        &self,
        service: &ServiceView<'_>,
        op: OpId,
        baseline: &RevisionEntry,
        revision: &RevisionEntry,
        at: u64,
        since_deploy: &[WindowMoments],
    ) -> bool {
        let span = nanos(self.config.steady_persistence);
        let age = at.saturating_sub(revision.first_seen_unix_nanos);
        if span == 0 || age < span || age >= nanos(self.config.persistence) {
            return false;
        }
        let mut history = Dispersion::new(STEADY_GROUP_SPANS);
        for m in service.history(op, baseline).flat_map(|series| series.retained_moments()) {
            history.add(&m);
        }
        if !history.steady(STEADY_BASELINE_GROUPS, STEADY_BASELINE_DISPERSION) {
            return false;
        }
        let mut current = Dispersion::new(STEADY_GROUP_SPANS);
        for m in since_deploy.iter().rev() {
            current.add(m);
        }
        current.steady(STEADY_CURRENT_GROUPS, STEADY_CURRENT_DISPERSION)
    }

    /// Windows of the persistence span older than the current window.
    fn beyond_current_window(&self) -> usize {
        (nanos(self.config.persistence).saturating_sub(nanos(self.windows.current_window))).div_ceil(self.window_nanos.max(1))
            as usize
    }

    /// The most recent revision before `revision` that served `op` with
    /// enough spans and did not regress it.
    fn last_good<'a>(&self, service: &ServiceView<'a>, op: OpId, revision: RevId) -> Option<&'a RevisionEntry> {
        service.last_good(op, revision, self.config.min_samples, |r| {
            self.regressed.contains(&(op, r)) || self.unsettled.contains(&(op, r))
        })
    }

    /// What makes a comparison bad, or `None` when it is clean.
    fn judge(&self, c: &Comparison<'_>, threshold: f64) -> Option<Bad> {
        if let Some(bad) = self.calm_rise(c, threshold) {
            return Some(bad);
        }
        let bad = |p_value: f64| (p_value < threshold).then_some(Bad { p_value, against: c.baseline });
        if c.current.errors < self.config.min_errors || !self.rose(c.baseline, c.current, 1.0) {
            return None;
        }
        if c.steady {
            return bad(fisher_greater(c.current.errors, c.current.spans, c.baseline.errors, c.baseline.spans));
        }
        if !c.persistent {
            return None;
        }
        // The rise must also show, significantly and by half the margins,
        // in the persistence span without its worst half: an outage of a
        // flaky dependency that fills the current window does not.
        let trimmed = c.trimmed?;
        if !self.rose(c.baseline, trimmed, RESOLVE_MARGIN_SHARE) || c.scaled_p(trimmed) >= threshold {
            return None;
        }
        bad(c.scaled_p(c.current))
    }

    /// Whether `current`'s rate exceeds `baseline`'s by `share` of both
    /// margins.
    fn rose(&self, baseline: ErrorCount, current: ErrorCount, share: f64) -> bool {
        let (before, after) = (baseline.rate(), current.rate());
        after >= before * (1.0 + self.config.relative_increase * share) && after - before >= self.config.absolute_increase * share
    }

    /// Judges serving traffic against a firing incident's baseline.
    fn verdict(&self, baseline: ErrorCount, current: ErrorCount, threshold: f64) -> Verdict {
        let p = || fisher_greater(current.errors, current.spans, baseline.errors, baseline.spans);
        if current.errors >= self.config.min_errors && self.rose(baseline, current, 1.0) && p() < threshold {
            return Verdict::Drifting;
        }
        if self.rose(baseline, current, RESOLVE_MARGIN_SHARE) {
            return Verdict::Unsettled;
        }
        // Still significantly above the baseline raised by half the
        // relative margin: not yet clean.
        let raised = ((baseline.rate() * (1.0 + self.config.relative_increase * RESOLVE_MARGIN_SHARE)).min(1.0)
            * baseline.spans as f64)
            .round() as u64;
        if fisher_greater(current.errors, current.spans, raised, baseline.spans) < threshold {
            Verdict::Unsettled
        } else {
            Verdict::Clean
        }
    }

    fn judge_incidents(
        &mut self,
        checks: &HashMap<OpId, Vec<(&RevisionEntry, ErrorCount)>>,
        threshold: f64,
        at: u64,
        out: &mut Vec<EventUpdate>,
    ) {
        let mut ended = Vec::new();
        let ops: Vec<OpId> = self.incidents.keys().copied().collect();
        for op in ops {
            let serving: Vec<(&RevisionEntry, ErrorCount)> = checks
                .get(&op)
                .into_iter()
                .flatten()
                .filter(|(_, c)| c.spans > 0)
                .copied()
                .collect();
            let judged: Vec<(&RevisionEntry, Verdict)> = match self.incidents.get(&op) {
                Some(incident) => serving
                    .iter()
                    .filter(|(_, c)| c.spans >= self.config.min_samples)
                    .map(|(r, c)| (*r, self.verdict(incident.baseline, *c, threshold)))
                    .collect(),
                None => continue,
            };
            let Some(incident) = self.incidents.get_mut(&op) else {
                continue;
            };
            if serving.is_empty() {
                incident.clean_streak = 0;
                incident.gone_streak += 1;
                if incident.gone_streak >= self.config.resolve_after {
                    ended.push((
                        op,
                        Resolution {
                            reason: ResolutionReason::TrafficGone,
                            revision: None,
                        },
                    ));
                }
                continue;
            }
            incident.gone_streak = 0;
            for (revision, v) in &judged {
                let rev = revision.id;
                if *v == Verdict::Drifting && rev != incident.introduced && !incident.seen_in.contains(&rev) {
                    incident.seen_in.push(rev);
                    self.regressed.insert((op, rev));
                    out.push(EventUpdate::SeenIn {
                        id: incident.event_id.clone(),
                        revision: revision.revision.to_string(),
                        at_unix_nanos: at,
                    });
                }
            }
            if judged.is_empty() {
                continue;
            }
            if judged.iter().all(|(_, v)| *v == Verdict::Clean) {
                incident.clean_streak += 1;
            } else {
                incident.clean_streak = 0;
            }
            if incident.clean_streak < self.config.resolve_after {
                continue;
            }
            let Some((newest, _)) = judged.iter().max_by_key(|(r, _)| (r.first_seen_unix_nanos, r.id)) else {
                continue;
            };
            let reason = if newest.first_seen_unix_nanos < incident.introduced_first_seen {
                ResolutionReason::RolledBack
            } else {
                ResolutionReason::Fixed
            };
            ended.push((
                op,
                Resolution {
                    reason,
                    revision: Some(newest.revision.to_string()),
                },
            ));
        }
        for (op, resolution) in ended {
            if let Some(incident) = self.incidents.remove(&op) {
                out.push(EventUpdate::Resolved {
                    id: incident.event_id,
                    at_unix_nanos: at,
                    resolution,
                });
            }
        }
    }

    fn build_event(&self, service: &ServiceView<'_>, c: &Comparison<'_>, p_value: f64, tests: usize, at: u64) -> DriftEvent {
        let operation = service.operations.name(c.op).map(|s| s.to_string()).unwrap_or_default();
        // Latency context of the same traffic, for the page and the alert.
        let mut current_latency = new_histogram();
        let mut baseline_latency = new_histogram();
        for revision in c.current_revisions() {
            if let Some(series) = service.latency.get(&(c.op, revision.id)) {
                current_latency.add(series.current());
                if c.baseline_revision.is_none() {
                    series.trailing(&mut baseline_latency);
                }
            }
        }
        if let Some(b) = c.baseline_revision {
            for series in service.history(c.op, b) {
                series.all(&mut baseline_latency);
            }
        }
        let summary = |histogram, count: ErrorCount| Summary {
            count: count.spans,
            ..Summary::of(histogram)
        };
        let (before, after) = (c.baseline.rate(), c.current.rate());
        let severity = if after - before >= self.config.critical_increase {
            Severity::Critical
        } else {
            Severity::Warning
        };
        // After a deploy the rate rose with the revision's first span; in
        // its own traffic, within the current window.
        let introduced = c.introduced();
        let first_seen = introduced.first_seen_unix_nanos.min(at);
        let onset = match c.baseline_revision {
            Some(_) => first_seen,
            None => at.saturating_sub(nanos(self.windows.current_window)).max(first_seen),
        };
        let code = service.error_code_hint(c.op);
        DriftEvent {
            severity,
            operation: Some(operation.clone()),
            baseline_revision: c.baseline_revision.map(|b| b.revision.to_string()),
            stats: Some(LatencyStats {
                baseline: summary(&baseline_latency, c.baseline),
                current: summary(&current_latency, c.current),
                relative_increase: relative_increase(c.baseline, c.current),
                p_value,
                quantile: None,
                effect_size: None,
                error_rate: Some(ErrorRates {
                    baseline: before,
                    current: after,
                    baseline_errors: c.baseline.errors,
                    current_errors: c.current.errors,
                    new_error_types: new_error_types(service, c),
                    timeline: timeline(service, c),
                }),
                tests: tests as u32,
                distribution: None,
            }),
            code,
            attribution: c
                .baseline_revision
                .is_none()
                .then(|| "no deploy: compared with the same revision's trailing window, so no commit is in range".to_owned()),
            ..DriftEvent::firing(EventKind::ErrorRateRegression, service.key, &operation, &introduced.revision, onset, at)
        }
    }
}

/// The error rate per window of the baseline and of the drifting revision
/// (merged across replicas in fleet mode), the newest `MAX_RATE_POINTS`.
fn timeline(service: &ServiceView<'_>, c: &Comparison<'_>) -> Vec<RatePoint> {
    let mut points: std::collections::BTreeMap<(u64, bool), (u64, u64)> = std::collections::BTreeMap::new();
    let mut add = |revision: &RevisionEntry, current: bool| {
        for series in service.history(c.op, revision) {
            for m in series.recent_moments().chain(series.retired_moments(usize::MAX)) {
                if m.count > 0 {
                    let point = points.entry((m.start_unix_nanos, current)).or_default();
                    point.0 += m.count;
                    point.1 += m.errors;
                }
            }
        }
    };
    if let Some(b) = c.baseline_revision {
        add(b, false);
    }
    for revision in c.current_revisions() {
        add(revision, true);
    }
    let mut timeline: Vec<RatePoint> = points
        .into_iter()
        .map(|((start, current), (spans, errors))| RatePoint {
            start_ms: start / 1_000_000,
            spans,
            errors: errors.min(spans),
            current,
        })
        .collect();
    timeline.sort_by_key(|p| (p.start_ms, p.current));
    let excess = timeline.len().saturating_sub(MAX_RATE_POINTS);
    timeline.drain(..excess);
    timeline
}

/// The error types the drifting revisions (`c.revision` and those it
/// carries) failed with that their baseline revision never did (after a
/// deploy; nothing to compare with otherwise).
fn new_error_types(service: &ServiceView<'_>, c: &Comparison<'_>) -> Vec<ErrorTypeCount> {
    let Some(baseline) = c.baseline_revision else {
        return Vec::new();
    };
    let before = service.error_types.get(&(c.op, baseline.id));
    let mut counts: HashMap<String, u64> = HashMap::new();
    for revision in c.current_revisions() {
        let Some(current) = service.error_types.get(&(c.op, revision.id)) else {
            continue;
        };
        for (t, count) in current.iter().filter(|(t, _)| before.is_none_or(|b| !b.contains(t))) {
            *counts.entry(t.to_string()).or_default() += count;
        }
    }
    let mut new: Vec<ErrorTypeCount> = counts
        .into_iter()
        .map(|(error_type, count)| ErrorTypeCount { error_type, count })
        .collect();
    new.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error_type.cmp(&b.error_type)));
    new.truncate(LISTED_ERROR_TYPES);
    new
}

/// The relative rise of the rate. A baseline without errors counts as half
/// an error, so the figure stays finite and says how rare errors were.
fn relative_increase(baseline: ErrorCount, current: ErrorCount) -> f64 {
    let before = if baseline.errors == 0 {
        0.5 / baseline.spans.max(1) as f64
    } else {
        baseline.rate()
    };
    (current.rate() - before) / before
}
