//! The latency-regression detector.
//!
//! At each evaluation (event time), every tracked operation of every
//! revision that is serving traffic is compared with its baseline:
//!
//! * **deploy mode** — for `deploy_comparison` after a revision first
//!   appears (and for as long as its regression fires), the baseline is the
//!   most recent earlier revision that served the operation and was not
//!   itself regressed: the last good revision;
//! * **trailing mode** — otherwise, or when there is no earlier revision,
//!   the baseline is the same revision's own older traffic.
//!
//! A comparison is *bad* when both samples hold `min_samples`, the
//! configured quantile rose by the relative AND the absolute margin, and the
//! one-sided Mann-Whitney p-value is below `alpha / m`, `m` being the number
//! of operations tested in this evaluation (Bonferroni); and the rise
//! persists: each of the last `persistence_windows` non-overlapping stretches
//! of traffic shows it on its own. Overlapping evaluation windows alone would
//! let one short burst look persistent for a whole window length. An event
//! fires after `consecutive` bad evaluations and resolves after
//! `resolve_after` clean ones, or once its revision has stopped serving
//! traffic as long.

use std::collections::{HashMap, HashSet};

use super::event::{
    CodeHint, DriftEvent, EventKind, EventState, EventUpdate, LatencyStats, Severity, event_id, fingerprint, rfc3339,
};
use super::stats::{
    LatencyHistogram, Summary, WindowMoments, change_point, mann_whitney_greater, new_histogram, persistent_shift,
};
use crate::analyze::operations::{OTHER, OpId};
use crate::analyze::service::ServiceView;
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

#[derive(Debug, Default)]
struct Track {
    bad_streak: u32,
    good_streak: u32,
    /// The firing event's id.
    firing: Option<String>,
}

pub struct LatencyDetector {
    config: LatencyConfig,
    /// Windows in the baseline span, for the persistence test's baseline.
    baseline_windows: usize,
    tracks: HashMap<(OpId, RevId), Track>,
    /// (operation, revision) pairs that regressed: never a baseline again.
    regressed: HashSet<(OpId, RevId)>,
}

struct Comparison<'a> {
    op: OpId,
    revision: &'a RevisionEntry,
    baseline_revision: Option<&'a RevisionEntry>,
    baseline: LatencyHistogram,
    current: LatencyHistogram,
    /// Every recent non-overlapping stretch of traffic shows the rise.
    persistent: bool,
}

impl LatencyDetector {
    pub fn new(config: LatencyConfig, baseline_windows: usize) -> LatencyDetector {
        LatencyDetector {
            config,
            baseline_windows,
            tracks: HashMap::new(),
            regressed: HashSet::new(),
        }
    }

    /// Firing drifts: (operation, revision, event id).
    pub fn firing(&self) -> impl Iterator<Item = (OpId, RevId, &str)> {
        self.tracks
            .iter()
            .filter_map(|((op, rev), t)| t.firing.as_deref().map(|id| (*op, *rev, id)))
    }

    /// Resumes a drift that was firing before a restart: it resolves like
    /// any other, and its revision is no baseline.
    pub fn restore_firing(&mut self, op: OpId, revision: RevId, event_id: String) {
        self.tracks.insert(
            (op, revision),
            Track {
                bad_streak: 0,
                good_streak: 0,
                firing: Some(event_id),
            },
        );
        self.regressed.insert((op, revision));
    }

    pub fn forget_revision(&mut self, revision: RevId) {
        self.tracks.retain(|(_, r), _| *r != revision);
        self.regressed.retain(|(_, r)| *r != revision);
    }

    pub fn forget_operations(&mut self, ops: &[OpId]) {
        self.tracks.retain(|(op, _), _| !ops.contains(op));
        self.regressed.retain(|(op, _)| !ops.contains(op));
    }

    pub fn evaluate(&mut self, service: &ServiceView<'_>, at: u64, out: &mut Vec<EventUpdate>) {
        let current_window = nanos(self.config.current_window);
        let deploy_comparison = nanos(self.config.deploy_comparison);
        let active: Vec<&RevisionEntry> = service
            .timeline
            .entries()
            .iter()
            .filter(|r| r.last_seen_unix_nanos.saturating_add(current_window) >= at)
            .collect();

        let mut comparisons = Vec::new();
        for revision in &active {
            for (op, _) in service.operations.tracked() {
                if op == OTHER {
                    continue;
                }
                let Some(series) = service.latency.get(&(op, revision.id)) else {
                    continue;
                };
                let firing = self.tracks.get(&(op, revision.id)).is_some_and(|t| t.firing.is_some());
                let recent_deploy = revision.first_seen_unix_nanos.saturating_add(deploy_comparison) > at;
                let earlier = (recent_deploy || firing)
                    .then(|| {
                        service.timeline.before(revision.id).find(|b| {
                            !self.regressed.contains(&(op, b.id))
                                && service.history(op, b).map(|s| s.total()).sum::<u64>() >= self.config.min_samples
                        })
                    })
                    .flatten();
                let mut current = new_histogram();
                let mut baseline = new_histogram();
                let mut baseline_moments = WindowMoments::default();
                let persistent;
                let chunks = self.config.persistence_windows.max(1);
                let min_chunk = (self.config.min_samples / chunks as u64).max(MIN_CHUNK_SPANS);
                match earlier {
                    Some(b) => {
                        // After a deploy everything this revision served is
                        // post-deploy, so a quiet endpoint may use all of it.
                        if series.current().len() >= self.config.min_samples {
                            let _ = current.add(series.current());
                        } else {
                            series.all(&mut current);
                        }
                        for base in service.history(op, b) {
                            base.all(&mut baseline);
                            for m in base.recent_moments().chain(base.retired_moments(self.baseline_windows)) {
                                baseline_moments.merge(&m);
                            }
                        }
                        let recent = series.recent_moments().chain(series.retired_moments(usize::MAX));
                        persistent = persistent_shift(recent, &baseline_moments, chunks, min_chunk, PERSISTENCE_Z);
                    }
                    None => {
                        let _ = current.add(series.current());
                        let _ = baseline.add(series.trailing());
                        for m in series.retired_moments(self.baseline_windows) {
                            baseline_moments.merge(&m);
                        }
                        persistent =
                            persistent_shift(series.recent_moments(), &baseline_moments, chunks, min_chunk, PERSISTENCE_Z);
                    }
                }
                if current.len() >= self.config.min_samples && baseline.len() >= self.config.min_samples {
                    comparisons.push(Comparison {
                        op,
                        revision,
                        baseline_revision: earlier,
                        baseline,
                        current,
                        persistent,
                    });
                }
            }
        }

        let tests = comparisons.len().max(1);
        let threshold = self.config.alpha / tests as f64;
        let mut evaluated: HashSet<(OpId, RevId)> = HashSet::new();
        for comparison in &comparisons {
            let key = (comparison.op, comparison.revision.id);
            evaluated.insert(key);
            let verdict = self.judge(comparison, threshold);
            let track = self.tracks.entry(key).or_default();
            match verdict {
                Some(stats) => {
                    track.bad_streak += 1;
                    track.good_streak = 0;
                    if track.firing.is_none() && track.bad_streak >= self.config.consecutive {
                        let mut stats = stats;
                        stats.tests = tests as u32;
                        let event = build_event(service, comparison, stats, at);
                        track.firing = Some(event.id.clone());
                        self.regressed.insert(key);
                        out.push(EventUpdate::Fired(Box::new(event)));
                    }
                }
                None => {
                    track.bad_streak = 0;
                    track.good_streak += 1;
                    if track.good_streak >= self.config.resolve_after
                        && let Some(id) = track.firing.take()
                    {
                        out.push(EventUpdate::Resolved { id, at_unix_nanos: at });
                    }
                }
            }
        }
        // A firing drift whose revision no longer serves the operation (a
        // rollback, a newer deploy, the endpoint went quiet) has ended.
        for (key, track) in self.tracks.iter_mut() {
            if evaluated.contains(key) || track.firing.is_none() {
                continue;
            }
            track.bad_streak = 0;
            track.good_streak += 1;
            if track.good_streak >= self.config.resolve_after
                && let Some(id) = track.firing.take()
            {
                out.push(EventUpdate::Resolved { id, at_unix_nanos: at });
            }
        }
        self.tracks
            .retain(|key, t| t.firing.is_some() || t.bad_streak > 0 || evaluated.contains(key));
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
            quantile: q,
            effect_size: test.effect_size,
            tests: 0,
            distribution: super::stats::distribution(&c.baseline, &c.current, DISTRIBUTION_BINS),
        })
    }
}

fn build_event(service: &ServiceView<'_>, c: &Comparison<'_>, stats: LatencyStats, at: u64) -> DriftEvent {
    let operation = service.operations.name(c.op).map(|s| s.to_string()).unwrap_or_default();
    let onset = estimate_onset(service, c).min(at);
    let fingerprint = fingerprint(service.name, EventKind::LatencyRegression, &operation, &c.revision.revision);
    let code = service
        .op_info
        .get(&c.op)
        .map(|info| CodeHint {
            function: info.code.as_ref().and_then(|c| c.function.as_deref().map(str::to_owned)),
            filepath: info.code.as_ref().and_then(|c| c.filepath.as_deref().map(str::to_owned)),
            lineno: info.code.as_ref().and_then(|c| c.lineno),
            route: info.route.as_deref().map(str::to_owned),
        })
        .unwrap_or_default();
    let severity = if stats.relative_increase >= CRITICAL_RELATIVE_INCREASE {
        Severity::Critical
    } else {
        Severity::Warning
    };
    DriftEvent {
        id: event_id(&fingerprint, onset),
        fingerprint,
        kind: EventKind::LatencyRegression,
        state: EventState::Firing,
        severity,
        service: service.name.to_string(),
        operation: Some(operation),
        peer: None,
        revision: c.revision.revision.to_string(),
        baseline_revision: c.baseline_revision.map(|b| b.revision.to_string()),
        onset: rfc3339(onset),
        detected_at: rfc3339(at),
        resolved_at: None,
        stats: Some(stats),
        outbound: None,
        code,
        suspects: Vec::new(),
        attribution: c
            .baseline_revision
            .is_none()
            .then(|| "no deploy: compared with the same revision's trailing window, so no commit is in range".to_owned()),
        onset_unix_nanos: onset,
        detected_unix_nanos: at,
    }
}

/// The change point of the operation's latency, over the baseline
/// revision's windows followed by the current revision's, never earlier
/// than the current revision's first span.
fn estimate_onset(service: &ServiceView<'_>, c: &Comparison<'_>) -> u64 {
    let series = |rev: RevId| service.latency.get(&(c.op, rev));
    let mut moments: Vec<WindowMoments> = Vec::new();
    if let Some(base) = c.baseline_revision.and_then(|b| series(b.id)) {
        moments.extend(base.moments().filter(|m| m.count > 0));
    }
    if let Some(current) = series(c.revision.id) {
        moments.extend(current.moments().filter(|m| m.count > 0));
    }
    moments.sort_by_key(|m| m.start_unix_nanos);
    let first_seen = c.revision.first_seen_unix_nanos;
    change_point(&moments).map_or(first_seen, |at| at.max(first_seen))
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
