//! The latency-regression detector.
//!
//! At each evaluation (event time), every tracked operation of every
//! revision that is serving traffic is compared with its baseline:
//!
//! * **deploy mode** — for `deploy_comparison` after a revision first
//!   appears, the baseline is the most recent earlier revision that served
//!   the operation and was neither regressed nor unsettled (below): the
//!   last good revision;
//! * **trailing mode** — otherwise, or when there is no earlier revision,
//!   the baseline is the same revision's own older traffic.
//!
//! A comparison is *bad* when both samples hold `min_samples`, the
//! configured quantile rose by the relative AND the absolute margin, and the
//! one-sided Mann-Whitney p-value is below `alpha / m`, `m` being the number
//! of operations tested in this evaluation (Bonferroni); and the rise
//! persists: each of the last `persistence_windows` non-overlapping stretches
//! of traffic shows it on its own. Overlapping evaluation windows alone would
//! let one short burst look persistent for a whole window length. An
//! incident fires after `consecutive` bad evaluations.
//!
//! A revision replaced while its rise is significant but not yet
//! persistent or not yet seen `consecutive` times (*unsettled*; on a quiet
//! endpoint a revision may serve too little traffic for either) is no
//! baseline for the next: that one is compared with the last good revision,
//! its own traffic eked out by the unsettled revisions' when it has too
//! little, so a deploy that lands minutes after a bad one neither hides the
//! rise nor takes the blame for it. An incident that fires this way names
//! the oldest unsettled revision, which brought the rise, and lists the
//! later ones in `seen_in`.
//!
//! **One incident per drift.** A firing incident belongs to the operation,
//! not to a revision: it keeps the baseline it fired against (frozen, so the
//! drifting traffic never becomes its own baseline) and judges every
//! revision that serves the operation against it. A later revision that
//! still shows the rise joins the incident (`seen_in`) and is never a
//! baseline; nobody is paged again.
//!
//! **Resolution is as strict as firing, with hysteresis.** A serving
//! revision's traffic is *clean* only when both hold: the quantile is back
//! below half the margins (relative or absolute) over the baseline, AND the
//! rank test no longer finds the traffic slower than the baseline shifted
//! up by half the relative margin. The quantile catches a tail-only shift
//! that the ranks hardly see; the shifted rank test keeps a noisy quantile
//! from resolving a broad shift. An incident resolves after `resolve_after`
//! consecutive evaluations in which every serving revision with
//! `min_samples` of current traffic is clean (evaluations without enough
//! samples neither count nor reset); the resolution says whether a newer
//! revision fixed it or an older one was rolled back to. When no revision
//! serves the operation for `resolve_after` evaluations, it resolves as
//! `traffic_gone`: no longer observed, not known to be fixed.

use std::collections::{HashMap, HashSet};

use super::{Carried, nanos};
use super::event::{DriftEvent, EventKind, EventUpdate, LatencyStats, Resolution, ResolutionReason, Severity};
use super::stats::{
    LatencyHistogram, Summary, WindowMoments, change_point, mann_whitney_greater, new_histogram, persistent_shift, scaled,
};
use crate::analyze::operations::{OTHER, OpId};
use crate::analyze::view::ServiceView;
use crate::analyze::timeline::{RevId, RevisionEntry};
use crate::config::LatencyConfig;

/// A relative rise at or above this marks the event critical.
const CRITICAL_RELATIVE_INCREASE: f64 = 1.0;
/// Each persistence chunk's mean log-latency must exceed the baseline's by
/// this many standard errors (one-sided 1%).
const PERSISTENCE_Z: f64 = 2.33;
/// Bins of the distributions events carry for pictures.
const DISTRIBUTION_BINS: usize = 40;
/// Smallest persistence chunk, in spans.
const MIN_CHUNK_SPANS: u64 = 10;
/// Resolution hysteresis: traffic is clean only below this share of the
/// firing margins, so a drift hovering at the threshold does not flap.
const RESOLVE_MARGIN_SHARE: f64 = 0.5;

/// A firing drift of one operation.
pub(crate) struct Incident {
    pub event_id: String,
    /// The revision that introduced it.
    pub introduced: RevId,
    introduced_first_seen: u64,
    /// The traffic it fired against, frozen then. `None` only for an
    /// incident restored from a snapshot that did not keep it.
    pub baseline: Option<LatencyHistogram>,
    /// Later revisions that still show it.
    pub seen_in: Vec<RevId>,
    clean_streak: u32,
    gone_streak: u32,
}

/// What one serving revision's traffic says about a firing incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Shows the full drift: every firing margin and the rank test.
    Drifting,
    /// Neither drifting nor clean: within the hysteresis band.
    Unsettled,
    Clean,
}

pub(crate) struct LatencyDetector {
    config: LatencyConfig,
    /// Windows in the baseline span, for the persistence test's baseline.
    baseline_windows: usize,
    /// Consecutive bad evaluations of (operation, revision) pairs whose
    /// operation has no incident.
    streaks: HashMap<(OpId, RevId), u32>,
    /// Clean comparisons in a row of (operation, revision) pairs, for the
    /// rollout verdict: the evaluations that would have fired had the
    /// revision regressed.
    clean: HashMap<(OpId, RevId), u32>,
    incidents: HashMap<OpId, Incident>,
    /// (operation, revision) pairs that regressed: never a baseline again.
    regressed: HashSet<(OpId, RevId)>,
    /// (operation, revision) pairs whose last comparison after a deploy
    /// showed a significant rise that had not yet fired: no baseline for
    /// later revisions (see the module's docs).
    unsettled: HashSet<(OpId, RevId)>,
}

struct Comparison<'a> {
    op: OpId,
    revision: &'a RevisionEntry,
    baseline_revision: Option<&'a RevisionEntry>,
    baseline: LatencyHistogram,
    current: LatencyHistogram,
    /// Every recent non-overlapping stretch of traffic shows the rise.
    persistent: bool,
    /// Unsettled revisions between the baseline and `revision`, whose
    /// traffic the comparison counts as `revision`'s.
    carried: Carried<'a>,
    /// After a deploy, everything `revision` served: whether it is
    /// unsettled is judged on this, so a revision going out of service, its
    /// current window thinning, stays what it was.
    since_deploy: Option<LatencyHistogram>,
}

impl<'a> Comparison<'a> {
    /// The revision that brought the rise: the oldest carried, else
    /// `revision`.
    fn introduced(&self) -> &'a RevisionEntry {
        self.carried.introduced(self.revision)
    }

    /// Every revision whose traffic is the current sample, oldest first.
    fn current_revisions(&self) -> impl Iterator<Item = &'a RevisionEntry> + '_ {
        self.carried.with(self.revision)
    }
}

/// A serving revision's current traffic, judged against an incident.
struct Check<'a> {
    op: OpId,
    revision: &'a RevisionEntry,
    current: LatencyHistogram,
}

impl LatencyDetector {
    pub(crate) fn new(config: LatencyConfig, baseline_windows: usize) -> LatencyDetector {
        LatencyDetector {
            config,
            baseline_windows,
            streaks: HashMap::new(),
            clean: HashMap::new(),
            incidents: HashMap::new(),
            regressed: HashSet::new(),
            unsettled: HashSet::new(),
        }
    }

    /// Clean comparisons in a row of `op` in `revision` with its baseline.
    pub(crate) fn clean_evaluations(&self, op: OpId, revision: RevId) -> u32 {
        self.clean.get(&(op, revision)).copied().unwrap_or(0)
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

    /// Restores a pair [`regressed`](Self::regressed) listed.
    pub(crate) fn restore_regressed(&mut self, op: OpId, revision: RevId) {
        self.regressed.insert((op, revision));
    }

    /// (operation, revision) pairs whose rise had not yet fired (see the
    /// module's docs), for the snapshot.
    pub(crate) fn unsettled(&self) -> impl Iterator<Item = (OpId, RevId)> + '_ {
        self.unsettled.iter().copied()
    }

    /// Restores a pair [`unsettled`](Self::unsettled) listed.
    pub(crate) fn restore_unsettled(&mut self, op: OpId, revision: RevId) {
        self.unsettled.insert((op, revision));
    }

    /// Resumes a drift that was firing before a restart: it resolves like
    /// any other, and its revisions are no baseline.
    pub(crate) fn restore_firing(
        &mut self,
        op: OpId,
        revision: &RevisionEntry,
        event_id: String,
        baseline: Option<LatencyHistogram>,
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
        self.clean.retain(|(_, r), _| *r != revision);
        self.regressed.retain(|(_, r)| *r != revision);
        self.unsettled.retain(|(_, r)| *r != revision);
        for incident in self.incidents.values_mut() {
            incident.seen_in.retain(|r| *r != revision);
        }
    }

    pub(crate) fn forget_operations(&mut self, ops: &[OpId]) {
        self.streaks.retain(|(op, _), _| !ops.contains(op));
        self.clean.retain(|(op, _), _| !ops.contains(op));
        self.regressed.retain(|(op, _)| !ops.contains(op));
        self.unsettled.retain(|(op, _)| !ops.contains(op));
        self.incidents.retain(|op, _| !ops.contains(op));
    }

    pub(crate) fn evaluate(&mut self, service: &ServiceView<'_>, at: u64, out: &mut Vec<EventUpdate>) {
        let current_window = nanos(self.config.current_window);
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
        let mut checks: HashMap<OpId, Vec<Check<'_>>> = HashMap::new();
        for (op, _) in service.operations.tracked() {
            if op == OTHER {
                continue;
            }
            let introduced = self.incidents.get(&op).map(|i| i.introduced_first_seen);
            for revision in &active {
                let Some(series) = service.latency.get(&(op, revision.id)) else {
                    continue;
                };
                if let Some(introduced) = introduced {
                    let mut current = new_histogram();
                    let new_since_drift =
                        revision.first_seen_unix_nanos > introduced && !self.regressed.contains(&(op, revision.id));
                    if series.current().len() >= self.config.min_samples {
                        current.add(series.current());
                    } else if new_since_drift && !series.current().is_empty() {
                        // A revision new since the drift: all it served is
                        // after the deploy, so a quiet endpoint may use it.
                        series.all(&mut current);
                    } else {
                        current.add(series.current());
                    }
                    checks.entry(op).or_default().push(Check { op, revision, current });
                } else if let Some(comparison) = self.compare(service, op, revision, at) {
                    comparisons.push(comparison);
                }
            }
        }
        let sufficient = |c: &Check<'_>| c.current.len() >= self.config.min_samples;
        let tests = (comparisons.len() + checks.values().flatten().filter(|c| sufficient(c)).count()).max(1);
        let threshold = self.config.alpha / tests as f64;

        self.judge_incidents(service, &checks, threshold, at, out);

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
            if self.suspected(comparison, threshold) {
                self.unsettled.insert(key);
            } else {
                self.unsettled.remove(&key);
            }
            match bad {
                Some(mut stats) => {
                    self.clean.remove(&key);
                    let streak = self.streaks.entry(key).or_default();
                    *streak += 1;
                    if *streak >= self.config.consecutive {
                        stats.tests = tests as u32;
                        self.fire(service, comparison, stats, at, out);
                    }
                }
                None => {
                    self.streaks.remove(&key);
                    *self.clean.entry(key).or_default() += 1;
                }
            }
        }
        self.streaks
            .retain(|key, _| evaluated.contains(key) && !self.incidents.contains_key(&key.0));
    }

    /// Opens the incident a comparison shows: it names the revision that
    /// brought the rise and lists the later ones it carried in `seen_in`.
    fn fire(&mut self, service: &ServiceView<'_>, comparison: &Comparison<'_>, stats: LatencyStats, at: u64, out: &mut Vec<EventUpdate>) {
        let op = comparison.op;
        let event = build_event(service, comparison, stats, at);
        let introduced = comparison.introduced();
        let later: Vec<&RevisionEntry> = comparison.current_revisions().skip(1).collect();
        for revision in comparison.current_revisions() {
            self.regressed.insert((op, revision.id));
            self.unsettled.remove(&(op, revision.id));
        }
        self.incidents.insert(
            op,
            Incident {
                event_id: event.id.clone(),
                introduced: introduced.id,
                introduced_first_seen: introduced.first_seen_unix_nanos,
                baseline: Some(comparison.baseline.clone()),
                seen_in: later.iter().map(|r| r.id).collect(),
                clean_streak: 0,
                gone_streak: 0,
            },
        );
        super::push_fired(out, event, &later, at);
    }

    /// The comparison of `op` under `revision` with its baseline, when both
    /// have `min_samples`.
    fn compare<'a>(&self, service: &ServiceView<'a>, op: OpId, revision: &'a RevisionEntry, at: u64) -> Option<Comparison<'a>> {
        let series = service.latency.get(&(op, revision.id))?;
        if !series.served_after(at.saturating_sub(nanos(self.config.current_window))) {
            // Not serving the operation now: nothing to judge.
            return None;
        }
        let recent_deploy = revision
            .first_seen_unix_nanos
            .saturating_add(nanos(self.config.deploy_comparison))
            > at;
        let earlier = recent_deploy.then(|| self.last_good(service, op, revision.id)).flatten();
        let mut current = new_histogram();
        let mut baseline = new_histogram();
        let mut baseline_moments = WindowMoments::default();
        let chunks = self.config.persistence_windows.max(1);
        let min_chunk = (self.config.min_samples / chunks as u64).max(MIN_CHUNK_SPANS);
        let mut carried = Carried::default();
        let mut since_deploy = None;
        let persistent = match earlier {
            Some(b) => {
                // Unsettled revisions since the baseline: their traffic is
                // this rise's too, newest first after this revision's own.
                carried = Carried::between(service.timeline, b.id, revision.id, |r| self.unsettled.contains(&(op, r)));
                let carried_series: Vec<_> = carried.iter().filter_map(|r| service.latency.get(&(op, r.id))).collect();
                // After a deploy everything this revision served is
                // post-deploy, so a quiet endpoint may use all of it, and
                // all the unsettled revisions before it served.
                let mut own = new_histogram();
                series.all(&mut own);
                if series.current().len() >= self.config.min_samples {
                    current.add(series.current());
                } else {
                    current.add(&own);
                    if own.len() < self.config.min_samples {
                        for s in &carried_series {
                            s.all(&mut current);
                        }
                    }
                }
                since_deploy = Some(own);
                for base in service.history(op, b) {
                    base.all(&mut baseline);
                    for m in base.recent_moments().chain(base.retired_moments(self.baseline_windows)) {
                        baseline_moments.merge(&m);
                    }
                }
                let recent = series
                    .recent_moments()
                    .chain(series.retired_moments(usize::MAX))
                    .chain(carried_series.iter().flat_map(|s| s.recent_moments().chain(s.retired_moments(usize::MAX))));
                persistent_shift(recent, &baseline_moments, chunks, min_chunk, PERSISTENCE_Z)
            }
            None => {
                current.add(series.current());
                series.trailing(&mut baseline);
                for m in series.retired_moments(self.baseline_windows) {
                    baseline_moments.merge(&m);
                }
                persistent_shift(series.recent_moments(), &baseline_moments, chunks, min_chunk, PERSISTENCE_Z)
            }
        };
        (current.len() >= self.config.min_samples && baseline.len() >= self.config.min_samples).then_some(Comparison {
            op,
            revision,
            baseline_revision: earlier,
            baseline,
            current,
            persistent,
            carried,
            since_deploy,
        })
    }

    /// Whether a comparison after a deploy shows a significant rise in the
    /// revision's own traffic since it started serving, persistence and
    /// the run of evaluations aside: the revision is unsettled while it
    /// does.
    fn suspected(&self, c: &Comparison<'_>, threshold: f64) -> bool {
        let Some(served) = c.since_deploy.as_ref().filter(|s| s.len() >= self.config.min_samples) else {
            return false;
        };
        let q = self.config.quantile;
        let base_q = c.baseline.value_at_quantile(q) as f64;
        let rise = served.value_at_quantile(q) as f64 - base_q;
        let relative = if base_q > 0.0 { rise / base_q } else { f64::INFINITY };
        relative >= self.config.relative_increase
            && rise >= self.config.absolute_increase.as_micros() as f64
            && mann_whitney_greater(&c.baseline, served).is_some_and(|t| t.p_value < threshold)
    }

    /// The most recent revision before `revision` that served `op` with
    /// enough samples and did not regress it.
    fn last_good<'a>(&self, service: &ServiceView<'a>, op: OpId, revision: RevId) -> Option<&'a RevisionEntry> {
        service.last_good(op, revision, self.config.min_samples, |r| {
            self.regressed.contains(&(op, r)) || self.unsettled.contains(&(op, r))
        })
    }

    /// Advances every firing incident: later revisions that still show it
    /// join it, and it resolves once the serving traffic is clean or gone.
    fn judge_incidents(
        &mut self,
        service: &ServiceView<'_>,
        checks: &HashMap<OpId, Vec<Check<'_>>>,
        threshold: f64,
        at: u64,
        out: &mut Vec<EventUpdate>,
    ) {
        let mut ended = Vec::new();
        let ops: Vec<OpId> = self.incidents.keys().copied().collect();
        for op in ops {
            let serving: Vec<&Check<'_>> = checks
                .get(&op)
                .into_iter()
                .flatten()
                .filter(|c| !c.current.is_empty())
                .collect();
            // A restored incident without its frozen baseline falls back to
            // the last good revision before it, as when it fired.
            let fallback = match self.incidents.get(&op) {
                Some(incident) if incident.baseline.is_none() => self.last_good(service, op, incident.introduced).map(|b| {
                    let mut h = new_histogram();
                    for series in service.history(op, b) {
                        series.all(&mut h);
                    }
                    h
                }),
                _ => None,
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
            let Some(baseline) = incident.baseline.as_ref().or(fallback.as_ref()) else {
                continue;
            };
            let mut judged: Vec<(&Check<'_>, Verdict)> = Vec::new();
            for check in serving.iter().filter(|c| c.current.len() >= self.config.min_samples) {
                judged.push((check, verdict(&self.config, baseline, &check.current, threshold)));
            }
            for (check, v) in &judged {
                let rev = check.revision.id;
                if *v == Verdict::Drifting && rev != incident.introduced && !incident.seen_in.contains(&rev) {
                    incident.seen_in.push(rev);
                    self.regressed.insert((check.op, rev));
                    out.push(EventUpdate::SeenIn {
                        id: incident.event_id.clone(),
                        revision: check.revision.revision.to_string(),
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
            if incident.clean_streak >= self.config.resolve_after {
                // The newest revision serving clean traffic ended it.
                let Some((newest, _)) = judged
                    .iter()
                    .max_by_key(|(c, _)| (c.revision.first_seen_unix_nanos, c.revision.id))
                else {
                    continue;
                };
                let reason = if newest.revision.first_seen_unix_nanos < incident.introduced_first_seen {
                    ResolutionReason::RolledBack
                } else {
                    ResolutionReason::Fixed
                };
                ended.push((
                    op,
                    Resolution {
                        reason,
                        revision: Some(newest.revision.revision.to_string()),
                    },
                ));
            }
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

    /// The statistics of a bad comparison, or `None` when it is clean.
    fn judge(&self, c: &Comparison<'_>, threshold: f64) -> Option<LatencyStats> {
        let q = self.config.quantile;
        let base_q = c.baseline.value_at_quantile(q) as f64;
        let cur_q = c.current.value_at_quantile(q) as f64;
        let rise = cur_q - base_q;
        let relative = if base_q > 0.0 { rise / base_q } else { f64::INFINITY };
        let absolute_micros = self.config.absolute_increase.as_micros() as f64;
        if !c.persistent || relative < self.config.relative_increase || rise < absolute_micros {
            return None;
        }
        let test = mann_whitney_greater(&c.baseline, &c.current)?;
        if test.p_value >= threshold {
            return None;
        }
        Some(LatencyStats {
            baseline: Summary::of(&c.baseline),
            current: Summary::of(&c.current),
            relative_increase: relative,
            p_value: test.p_value,
            quantile: Some(q),
            effect_size: Some(test.effect_size),
            error_rate: None,
            tests: 0,
            distribution: super::stats::distribution(&c.baseline, &c.current, DISTRIBUTION_BINS),
        })
    }
}

/// Judges serving traffic against a firing incident's baseline (see the
/// module documentation for the rule).
fn verdict(config: &LatencyConfig, baseline: &LatencyHistogram, current: &LatencyHistogram, threshold: f64) -> Verdict {
    let q = config.quantile;
    let base_q = baseline.value_at_quantile(q) as f64;
    let rise = current.value_at_quantile(q) as f64 - base_q;
    let relative = if base_q > 0.0 { rise / base_q } else { f64::INFINITY };
    let absolute = config.absolute_increase.as_micros() as f64;
    let ranks_slower = mann_whitney_greater(baseline, current).is_some_and(|t| t.p_value < threshold);
    if relative >= config.relative_increase && rise >= absolute && ranks_slower {
        return Verdict::Drifting;
    }
    let quantile_back = relative < config.relative_increase * RESOLVE_MARGIN_SHARE || rise < absolute * RESOLVE_MARGIN_SHARE;
    if !quantile_back {
        return Verdict::Unsettled;
    }
    let shifted = scaled(baseline, 1.0 + config.relative_increase * RESOLVE_MARGIN_SHARE);
    let slower_than_margin = mann_whitney_greater(&shifted, current).is_some_and(|t| t.p_value < threshold);
    if slower_than_margin {
        Verdict::Unsettled
    } else {
        Verdict::Clean
    }
}

fn build_event(service: &ServiceView<'_>, c: &Comparison<'_>, stats: LatencyStats, at: u64) -> DriftEvent {
    let operation = service.operations.name(c.op).map(|s| s.to_string()).unwrap_or_default();
    let onset = estimate_onset(service, c).min(at);
    let code = service.code_hint(c.op);
    let severity = if stats.relative_increase >= CRITICAL_RELATIVE_INCREASE {
        Severity::Critical
    } else {
        Severity::Warning
    };
    DriftEvent {
        severity,
        operation: Some(operation.clone()),
        baseline_revision: c.baseline_revision.map(|b| b.revision.to_string()),
        stats: Some(stats),
        code,
        attribution: c
            .baseline_revision
            .is_none()
            .then(|| "no deploy: compared with the same revision's trailing window, so no commit is in range".to_owned()),
        ..DriftEvent::firing(EventKind::LatencyRegression, service.key, &operation, &c.introduced().revision, onset, at)
    }
}

/// The change point of the operation's latency, over the baseline
/// revision's windows followed by the drifting revisions', never earlier
/// than the first span of the revision that brought the rise.
fn estimate_onset(service: &ServiceView<'_>, c: &Comparison<'_>) -> u64 {
    let series = |rev: RevId| service.latency.get(&(c.op, rev));
    let mut moments: Vec<WindowMoments> = Vec::new();
    if let Some(base) = c.baseline_revision.and_then(|b| series(b.id)) {
        moments.extend(base.moments().filter(|m| m.count > 0));
    }
    for current in c.current_revisions().filter_map(|r| series(r.id)) {
        moments.extend(current.moments().filter(|m| m.count > 0));
    }
    moments.sort_by_key(|m| m.start_unix_nanos);
    let first_seen = c.introduced().first_seen_unix_nanos;
    change_point(&moments).map_or(first_seen, |at| at.max(first_seen))
}
