//! Detect: the drift detectors and the events they raise.
//!
//! Detectors run inside the analysis shards (see `analyze::service`); their
//! updates flow through `crate::pipeline`, whose task owns the
//! [`event::EventLog`]; the API, the pages and the alerting read the
//! snapshots it publishes ([`event::EventsView`]).

pub(crate) mod dependency;
pub(crate) mod details;
pub(crate) mod errors;
pub mod event;
pub(crate) mod fanout;
pub(crate) mod histogram;
pub(crate) mod kind;
pub(crate) mod latency;
pub(crate) mod outbound;
pub(crate) mod repeats;
pub(crate) mod stats;

pub(crate) use crate::clock::nanos;

use crate::analyze::timeline::{RevId, RevisionEntry, RevisionTimeline};

/// The unsettled revisions a comparison after a deploy carries: those
/// between its baseline and the compared revision whose rise had not yet
/// fired, newest first. Their traffic counts as the compared revision's,
/// and the oldest of them brought the rise (see the latency and error-rate
/// detectors' docs).
#[derive(Default)]
pub(crate) struct Carried<'a>(Vec<&'a RevisionEntry>);

impl<'a> Carried<'a> {
    /// The revisions after `baseline` and before `revision` that
    /// `unsettled` holds.
    pub(crate) fn between(
        timeline: &'a RevisionTimeline,
        baseline: RevId,
        revision: RevId,
        unsettled: impl Fn(RevId) -> bool,
    ) -> Carried<'a> {
        Carried(timeline.before(revision).take_while(|r| r.id != baseline).filter(|r| unsettled(r.id)).collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The carried revisions, newest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a RevisionEntry> + '_ {
        self.0.iter().copied()
    }

    /// The revision that brought the rise: the oldest carried, else
    /// `revision`.
    pub(crate) fn introduced(&self, revision: &'a RevisionEntry) -> &'a RevisionEntry {
        self.0.last().copied().unwrap_or(revision)
    }

    /// The carried revisions and then `revision`, oldest first.
    pub(crate) fn with(&self, revision: &'a RevisionEntry) -> impl Iterator<Item = &'a RevisionEntry> + '_ {
        self.0.iter().rev().copied().chain(std::iter::once(revision))
    }
}

/// Sends a fired event, then a `seen_in` update for each of the `later`
/// revisions that already carried the drift when it fired.
pub(crate) fn push_fired(
    out: &mut Vec<event::EventUpdate>,
    event: event::DriftEvent,
    later: &[&RevisionEntry],
    at: u64,
) {
    let id = event.id.clone();
    out.push(event::EventUpdate::Fired(Box::new(event)));
    for revision in later {
        out.push(event::EventUpdate::SeenIn {
            id: id.clone(),
            revision: revision.revision.to_string(),
            at_unix_nanos: at,
        });
    }
}

/// How a drift whose signal stopped for `resolve_after` ended, judged by
/// the newest revision serving within `resolve_after`: `rolled_back` when
/// it ran before the revision that introduced the drift, `fixed` when it is
/// not one of the `carriers` (the introducing revision and those that
/// still showed the drift), else `traffic_gone` — no longer observed,
/// which is not the same as fixed.
pub(crate) fn ended(
    timeline: &crate::analyze::timeline::RevisionTimeline,
    introduced: crate::analyze::timeline::RevId,
    fallback_first_seen: u64,
    carriers: &[crate::analyze::timeline::RevId],
    at: u64,
    resolve_after: u64,
) -> event::Resolution {
    use event::{Resolution, ResolutionReason};
    let introduced_first_seen = timeline
        .get(introduced)
        .map_or(fallback_first_seen, |r| r.first_seen_unix_nanos);
    let serving = timeline
        .entries()
        .iter()
        .filter(|r| r.last_seen_unix_nanos.saturating_add(resolve_after) >= at)
        .max_by_key(|r| (r.first_seen_unix_nanos, r.id));
    match serving {
        Some(r) if r.first_seen_unix_nanos < introduced_first_seen => Resolution {
            reason: ResolutionReason::RolledBack,
            revision: Some(r.revision.to_string()),
        },
        Some(r) if !carriers.contains(&r.id) => Resolution {
            reason: ResolutionReason::Fixed,
            revision: Some(r.revision.to_string()),
        },
        _ => Resolution {
            reason: ResolutionReason::TrafficGone,
            revision: None,
        },
    }
}

/// Sightings (calls, spans) counted per evaluation interval, so that an
/// evaluation at `at` counts exactly those that started before `at`,
/// however the spans were batched.
#[derive(Debug)]
pub(crate) struct Settled {
    /// Not yet evaluated, by evaluation interval: (count, last start).
    unsettled: std::collections::BTreeMap<u64, (u64, u64)>,
    /// Sightings that started before the last evaluation.
    pub total: u64,
    /// The last of those sightings' start.
    pub last: u64,
}

impl Settled {
    /// Nothing counted yet; `last` starts at `first_seen`.
    pub(crate) fn new(first_seen: u64) -> Settled {
        Settled {
            unsettled: std::collections::BTreeMap::new(),
            total: 0,
            last: first_seen,
        }
    }

    pub(crate) fn count(&mut self, start: u64, interval: u64) {
        let slot = self.unsettled.entry(start / interval).or_default();
        slot.0 += 1;
        slot.1 = slot.1.max(start);
    }

    /// Folds the sightings that started before `at` into the totals.
    pub(crate) fn settle(&mut self, at: u64, interval: u64) {
        let later = self.unsettled.split_off(&(at / interval));
        for (_, (count, last)) in std::mem::replace(&mut self.unsettled, later) {
            self.total += count;
            self.last = self.last.max(last);
        }
    }
}

/// Later revisions that carry a firing drift: (revision, first sighting,
/// reported). Each is reported once, at the first evaluation after it was
/// seen.
pub(crate) fn report_seen_in(
    id: &str,
    seen_in: &mut [(crate::analyze::timeline::RevId, u64, bool)],
    timeline: &crate::analyze::timeline::RevisionTimeline,
    at: u64,
    out: &mut Vec<event::EventUpdate>,
) {
    for (revision, first, reported) in seen_in.iter_mut() {
        if !*reported && *first < at {
            *reported = true;
            if let Some(entry) = timeline.get(*revision) {
                out.push(event::EventUpdate::SeenIn {
                    id: id.to_owned(),
                    revision: entry.revision.to_string(),
                    at_unix_nanos: at,
                });
            }
        }
    }
}

/// The revision that introduced a drift and those that carried it since.
pub(crate) fn carriers(
    introduced: crate::analyze::timeline::RevId,
    seen_in: &[(crate::analyze::timeline::RevId, u64, bool)],
) -> Vec<crate::analyze::timeline::RevId> {
    std::iter::once(introduced).chain(seen_in.iter().map(|(r, _, _)| *r)).collect()
}

/// Events kept in memory for the API.
pub(crate) const MAX_EVENTS: usize = 10_000;
