//! Drift events: the public record of a detected drift, as served by
//! `/api/v1/events` and sent to alert sinks, and the in-memory log that
//! keeps them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

pub(crate) use super::kind::{EventKind, Severity};
pub(crate) use super::stats::Distribution;
use super::stats::Summary;
use crate::clock::Timestamp;
use crate::extract::ServiceKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    Firing,
    Resolved,
}

/// Why a drift ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionReason {
    /// A revision newer than the one that introduced the drift serves
    /// without it (or the drifting revision itself recovered).
    Fixed,
    /// The serving revision is one that ran before the drift began.
    RolledBack,
    /// Nothing serves the drifting traffic any more: the drift is no
    /// longer observed, which is not the same as fixed.
    TrafficGone,
}

impl ResolutionReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResolutionReason::Fixed => "fixed",
            ResolutionReason::RolledBack => "rolled_back",
            ResolutionReason::TrafficGone => "traffic_gone",
        }
    }
}

/// How a resolved drift ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub reason: ResolutionReason,
    /// The revision serving when it ended (full SHA once resolved), if any.
    pub revision: Option<String>,
}

impl Resolution {
    /// A sentence for people: "fixed in abc123", "rolled back to …".
    pub(crate) fn describe(&self) -> String {
        let short = |r: &str| r[..r.len().min(12)].to_owned();
        match (self.reason, self.revision.as_deref()) {
            (ResolutionReason::Fixed, Some(r)) => format!("fixed in {}", short(r)),
            (ResolutionReason::Fixed, None) => "fixed".to_owned(),
            (ResolutionReason::RolledBack, Some(r)) => format!("rolled back to {}", short(r)),
            (ResolutionReason::RolledBack, None) => "rolled back".to_owned(),
            (ResolutionReason::TrafficGone, _) => "its traffic is gone (not observed, not known to be fixed)".to_owned(),
        }
    }
}

/// Before/after numbers of a latency or error-rate regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub baseline: Summary,
    pub current: Summary,
    /// Relative rise of the compared figure (0.3 = +30%): the latency
    /// detector's quantile, or the error rate.
    pub relative_increase: f64,
    /// One-sided p-value before multiple-testing correction: Mann-Whitney
    /// (latency) or Fisher's exact test (error rate).
    pub p_value: f64,
    /// The quantile the latency detector compares (0.95 = p95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// P(current > baseline) for random draws: the rank effect size of a
    /// latency regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_size: Option<f64>,
    /// The error rates of an error-rate regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRates>,
    /// Operations tested in the same evaluation (the Bonferroni factor).
    pub tests: u32,
    /// Both distributions over shared log-spaced bins, for pictures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
}

/// Error proportions before and after, with the counts behind them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRates {
    pub baseline: f64,
    pub current: f64,
    pub baseline_errors: u64,
    pub current_errors: u64,
    /// After a deploy: the error types (`exception.type`, else
    /// `error.type`) the drifting revision fails with and the baseline
    /// revision never did, most frequent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_error_types: Vec<ErrorTypeCount>,
    /// The error rate over time, one point per analysis window with spans
    /// (the newest `MAX_RATE_POINTS`): the baseline revision's, then the
    /// drifting revision's, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<RatePoint>,
}

/// Points of an error-rate timeline, at most.
pub(crate) const MAX_RATE_POINTS: usize = 180;

/// One analysis window's spans and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatePoint {
    /// The window's start, Unix milliseconds.
    pub start_ms: u64,
    pub spans: u64,
    pub errors: u64,
    /// A window of the drifting revision (else of the baseline).
    pub current: bool,
}

/// How often the drifting revision failed with one error type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorTypeCount {
    #[serde(rename = "type")]
    pub error_type: String,
    pub count: u64,
}

/// Where the drifting spans come from in the code (`code.*`, `http.route`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeHint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filepath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineno: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// A commit suspected of causing a drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    pub commit: String,
    pub summary: String,
    pub author: String,
    pub committed_at: Timestamp,
    pub ai: Option<crate::authorship::AiAuthorship>,
    pub score: f64,
    /// Whether its diff links it to the drift (it touches the peer, the
    /// function, the file or the route); a commit without a link is only
    /// in range, and ranks below every linked one.
    #[serde(default = "linked_by_default")]
    pub linked: bool,
    pub evidence: Vec<String>,
    /// The lines that gave the evidence, with a few around them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hunks: Vec<Hunk>,
    /// The pull or merge request that merged it, when its message names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequest>,
}

/// A few lines of a file as the commit left it, around a line that links
/// the commit to a drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hunk {
    pub path: String,
    /// 1-based number of the first line.
    pub start_line: u32,
    pub lines: Vec<HunkLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HunkLine {
    pub text: String,
    /// Added by the commit (else context).
    pub added: bool,
    /// The agent that wrote it, per git-ai notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// Events stored before `linked` existed ranked by evidence alone.
fn linked_by_default() -> bool {
    true
}

/// A pull (merge) request, linked when the repository's `web_url` is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub url: Option<String>,
}

/// What attribution concluded for one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// The event's revision as a full SHA, when the repository knows it.
    pub revision: Option<String>,
    pub baseline_revision: Option<String>,
    pub suspects: Vec<Suspect>,
    /// A sentence for people: why there are (no) suspects.
    pub note: Option<String>,
    /// A span revision the repository does not know.
    pub unresolved: Option<String>,
    /// Commits of the range are missing because the checkout is shallow.
    pub shallow: bool,
    /// CODEOWNERS owners of the files the linked top suspects changed.
    pub owners: Vec<String>,
}


/// A detected drift (the `Event` of the public API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEvent {
    pub id: String,
    /// Stable across restarts and replicas: service, kind, operation or
    /// peer, revision.
    pub fingerprint: String,
    pub kind: EventKind,
    pub state: EventState,
    pub severity: Severity,
    pub service: String,
    /// `deployment.environment.name` of the drifting spans; `null` when
    /// they name none. One service's environments drift apart.
    #[serde(default)]
    pub environment: Option<String>,
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The revision that introduced the drift.
    pub revision: String,
    /// The repository the revision's spans name (`vcs.repository.url.full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub baseline_revision: Option<String>,
    /// Later revisions that still show the drift (the same incident).
    #[serde(default)]
    pub seen_in: Vec<String>,
    pub onset: Timestamp,
    pub detected_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    /// How the drift ended; `None` while it fires.
    #[serde(default)]
    pub resolution: Option<Resolution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<LatencyStats>,
    /// Details of a `new_outbound_peer` event: why, how often, from where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<super::details::OutboundStats>,
    /// Details of a `new_dependency` event: the scope and where it shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<super::details::DependencyStats>,
    /// Details of a `repeated_unsafe_call` event: how many requests repeated
    /// the call, against the baseline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<super::details::RepeatStats>,
    /// Details of a `fanout_regression` event: calls per request to the
    /// peer before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<super::details::FanoutStats>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub code: CodeHint,
    pub suspects: Vec<Suspect>,
    /// Who owns the files the linked top suspects changed (or the drifting
    /// spans' file), per the repository's CODEOWNERS at the revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Why the suspect list is what it is (e.g. no deploy in range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
}

impl DriftEvent {
    /// A new firing drift of `kind` in `service`'s `revision`: its identity
    /// (the [`fingerprint`] of `subject` — the operation, peer or scope that
    /// drifts — and the [`event_id`] at `detected_unix_nanos`) and its times,
    /// with severity `warning` and every detail empty. A detector sets what
    /// its kind reports with struct update syntax:
    /// `DriftEvent { operation: Some(op), stats: Some(stats), ..DriftEvent::firing(…) }`.
    pub(crate) fn firing(
        kind: EventKind,
        service: &ServiceKey,
        subject: &str,
        revision: &str,
        onset_unix_nanos: u64,
        detected_unix_nanos: u64,
    ) -> DriftEvent {
        let fingerprint = fingerprint(service, kind, subject, revision);
        DriftEvent {
            id: event_id(&fingerprint, detected_unix_nanos),
            fingerprint,
            kind,
            state: EventState::Firing,
            severity: Severity::Warning,
            service: service.service.to_string(),
            environment: service.environment.as_deref().map(str::to_owned),
            operation: None,
            peer: None,
            revision: revision.to_owned(),
            repository: None,
            baseline_revision: None,
            seen_in: Vec::new(),
            onset: Timestamp::from_unix_nanos(onset_unix_nanos),
            detected_at: Timestamp::from_unix_nanos(detected_unix_nanos),
            resolved_at: None,
            resolution: None,
            stats: None,
            outbound: None,
            dependency: None,
            repeats: None,
            fanout: None,
            code: CodeHint::default(),
            suspects: Vec::new(),
            owners: Vec::new(),
            attribution: None,
        }
    }

    /// The service and environment that drifted.
    pub(crate) fn service_key(&self) -> ServiceKey {
        ServiceKey::new(&self.service, self.environment.as_deref())
    }
}

fn is_default(code: &CodeHint) -> bool {
    *code == CodeHint::default()
}

/// The stable identity of a drift. A service without an environment keeps
/// the fingerprint it had before environments were told apart.
pub(crate) fn fingerprint(service: &ServiceKey, kind: EventKind, subject: &str, revision: &str) -> String {
    stable_hash(service, [kind.as_str(), subject, revision])
}

/// FNV-1a of the service and `parts`: stable across processes and
/// versions, unlike std's hasher.
fn stable_hash<'a>(service: &'a ServiceKey, parts: [&'a str; 3]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let environment = service.environment.as_deref();
    for part in environment.into_iter().chain([&*service.service]).chain(parts) {
        for byte in part.as_bytes().iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The event id: fingerprint and detection time (event time, ms). A drift
/// that recurs after resolving is detected at a later evaluation, so it is
/// a new event, and a replay of the same spans gives the same id.
pub(crate) fn event_id(fingerprint: &str, detected_unix_nanos: u64) -> String {
    format!("{fingerprint}-{}", detected_unix_nanos / 1_000_000)
}

/// The fingerprint an event id was made from (see `event_id`).
pub(crate) fn fingerprint_of(id: &str) -> &str {
    id.rsplit_once('-').map_or(id, |(fingerprint, _)| fingerprint)
}

/// A revision of a service that began serving after another one did: the
/// deploy marker that sinks show next to incidents. Not a drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deploy {
    /// The same on every replica that sees the deploy.
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub environment: Option<String>,
    pub revision: String,
    /// The revision that served before it.
    pub previous_revision: Option<String>,
    /// `vcs.repository.url.full` of its spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// When its first span started (event time).
    pub first_seen: Timestamp,
}

impl Deploy {
    pub(crate) fn new(
        service: &ServiceKey,
        revision: &str,
        previous_revision: Option<&str>,
        repository: Option<&str>,
        first_seen_unix_nanos: u64,
    ) -> Deploy {
        Deploy {
            id: format!("deploy-{}", stable_hash(service, ["deploy", revision, ""])),
            service: service.service.to_string(),
            environment: service.environment.as_deref().map(str::to_owned),
            revision: revision.to_owned(),
            previous_revision: previous_revision.map(str::to_owned),
            repository: repository.map(str::to_owned),
            first_seen: Timestamp::from_unix_nanos(first_seen_unix_nanos),
        }
    }

    pub(crate) fn service_key(&self) -> ServiceKey {
        ServiceKey::new(&self.service, self.environment.as_deref())
    }
}

/// What a detector reports.
#[derive(Debug, Clone)]
pub enum EventUpdate {
    /// A new revision began serving: announced, never an event.
    Deployed(Box<Deploy>),
    Fired(Box<DriftEvent>),
    /// A later revision still shows a firing drift: the same incident goes
    /// on, and nobody is paged again.
    SeenIn {
        id: String,
        revision: String,
        at_unix_nanos: u64,
    },
    Resolved {
        id: String,
        at_unix_nanos: u64,
        resolution: Resolution,
    },
}

/// Detector updates queued for the event pipeline, at most. A shard that
/// finds the queue full waits (counted in
/// `driftwatch_event_updates_waited_total`), so no update is dropped: the
/// analysis queue behind it fills, and the receivers answer with a
/// retryable status.
pub(crate) const MAX_QUEUED_UPDATES: usize = 4096;

/// Where the shards send detector updates.
pub(crate) type UpdateSender = mpsc::Sender<EventUpdate>;

/// The queue of detector updates, bounded by [`MAX_QUEUED_UPDATES`].
pub(crate) fn update_queue() -> (UpdateSender, mpsc::Receiver<EventUpdate>) {
    mpsc::channel(MAX_QUEUED_UPDATES)
}

/// All events, newest first by detection time; bounded (resolved events are
/// dropped first when full). Events are shared (`Arc`): a snapshot for
/// readers costs a pointer per event, and a change copies only the event it
/// changes. Lookups by id scan the log, which holds at most `MAX_EVENTS`
/// and changes only when drifts do.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventLog {
    events: Vec<Arc<DriftEvent>>,
    max_events: usize,
}

impl EventLog {
    pub(crate) fn new(max_events: usize) -> EventLog {
        EventLog {
            events: Vec::new(),
            max_events: max_events.max(1),
        }
    }

    /// Applies an update; returns the event as it now stands, or `None`
    /// when nothing changed (an unknown id, an event already known).
    pub(crate) fn apply(&mut self, update: EventUpdate) -> Option<DriftEvent> {
        match update {
            EventUpdate::Deployed(_) => None,
            EventUpdate::Fired(event) => {
                if self.position(&event.id).is_some() {
                    return None;
                }
                if self.events.len() >= self.max_events {
                    self.evict();
                }
                let event = *event;
                self.insert(event.clone());
                Some(event)
            }
            EventUpdate::SeenIn { id, revision, .. } => {
                let i = self.position(&id)?;
                let known = &self.events[i];
                if known.state != EventState::Firing || known.revision == revision || known.seen_in.contains(&revision) {
                    return None;
                }
                let event = Arc::make_mut(&mut self.events[i]);
                event.seen_in.push(revision);
                Some(event.clone())
            }
            EventUpdate::Resolved {
                id,
                at_unix_nanos,
                resolution,
            } => {
                let i = self.position(&id)?;
                if self.events[i].state != EventState::Firing {
                    return None;
                }
                let event = Arc::make_mut(&mut self.events[i]);
                event.state = EventState::Resolved;
                event.resolved_at = Some(Timestamp::from_unix_nanos(at_unix_nanos));
                event.resolution = Some(resolution);
                Some(event.clone())
            }
        }
    }

    /// Inserts `event`, or replaces the event with its id (the fleet's
    /// version of an event wins over this replica's).
    pub(crate) fn upsert(&mut self, event: DriftEvent) {
        match self.position(&event.id) {
            Some(i) if self.events[i].detected_at.unix_nanos() == event.detected_at.unix_nanos() => {
                self.events[i] = Arc::new(event);
            }
            Some(i) => {
                self.events.remove(i);
                self.insert(event);
            }
            None => {
                self.apply(EventUpdate::Fired(Box::new(event)));
            }
        }
    }

    /// The firing event with this fingerprint, if any.
    pub(crate) fn firing_with_fingerprint(&self, fingerprint: &str) -> Option<&DriftEvent> {
        self.events
            .iter()
            .map(|e| &**e)
            .find(|e| e.state == EventState::Firing && e.fingerprint == fingerprint)
    }

    /// Records attribution: suspects, the note, and the revisions as full
    /// SHAs where the repository resolved them.
    pub(crate) fn set_attribution(&mut self, id: &str, attribution: &Attribution) -> Option<DriftEvent> {
        let i = self.position(id)?;
        let event = Arc::make_mut(&mut self.events[i]);
        event.suspects = attribution.suspects.clone();
        event.owners = attribution.owners.clone();
        event.attribution = attribution.note.clone().or(event.attribution.take());
        if let Some(revision) = &attribution.revision {
            event.revision = revision.clone();
        }
        if let Some(baseline) = &attribution.baseline_revision {
            event.baseline_revision = Some(baseline.clone());
        }
        Some(event.clone())
    }

    /// Drops resolved events detected before `cutoff_unix_nanos`; returns
    /// their ids.
    pub(crate) fn retire_resolved(&mut self, cutoff_unix_nanos: u64) -> Vec<String> {
        let retired = |e: &DriftEvent| e.state == EventState::Resolved && e.detected_at.unix_nanos() < cutoff_unix_nanos;
        let ids: Vec<String> = self.events.iter().filter(|e| retired(e)).map(|e| e.id.clone()).collect();
        if !ids.is_empty() {
            self.events.retain(|e| !retired(e));
        }
        ids
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.events.iter().position(|e| e.id == id)
    }

    /// Newest first: by detection time, then by id.
    fn insert(&mut self, event: DriftEvent) {
        use std::cmp::Reverse;
        let new = (Reverse(event.detected_at.unix_nanos()), event.id.as_str());
        let at = self
            .events
            .partition_point(|e| (Reverse(e.detected_at.unix_nanos()), e.id.as_str()) < new);
        self.events.insert(at, Arc::new(event));
    }

    fn evict(&mut self) {
        let victim = self
            .events
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| (e.state == EventState::Firing, e.detected_at.unix_nanos()))
            .map(|(i, _)| i);
        if let Some(i) = victim {
            self.events.remove(i);
        }
    }

    /// Newest first.
    pub(crate) fn list(&self) -> &[Arc<DriftEvent>] {
        &self.events
    }

    /// The events, newest first, as owned records (for tools that replay
    /// traffic into a log of their own).
    pub(crate) fn into_events(self) -> Vec<DriftEvent> {
        self.events.into_iter().map(Arc::unwrap_or_clone).collect()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&DriftEvent> {
        self.position(id).map(|i| &*self.events[i])
    }

    /// Firing events by kind.
    pub(crate) fn firing(&self, kind: EventKind) -> usize {
        self.events
            .iter()
            .filter(|e| e.kind == kind && e.state == EventState::Firing)
            .count()
    }
}

/// What readers (the API, the pages, the alert dispatcher) see of the event
/// log: the snapshot its owner last published. Taking it never waits on
/// the owner, and the owner never waits on a reader.
#[derive(Debug, Clone)]
pub(crate) struct EventsView(watch::Receiver<Arc<EventLog>>);

impl EventsView {
    /// The latest snapshot.
    pub(crate) fn current(&self) -> Arc<EventLog> {
        self.0.borrow().clone()
    }
}

/// The event log with the channel its readers watch: its one owner (the
/// event pipeline's task) changes the log and publishes a snapshot.
pub(crate) struct PublishedLog {
    log: EventLog,
    tx: watch::Sender<Arc<EventLog>>,
    /// The log changed since the last snapshot.
    dirty: bool,
}

impl PublishedLog {
    pub(crate) fn new(log: EventLog) -> PublishedLog {
        let (tx, _) = watch::channel(Arc::new(log.clone()));
        PublishedLog { log, tx, dirty: false }
    }

    pub(crate) fn view(&self) -> EventsView {
        EventsView(self.tx.subscribe())
    }

    pub(crate) fn log(&self) -> &EventLog {
        &self.log
    }

    /// The log, to change; readers see the change at the next [`publish`](Self::publish).
    pub(crate) fn log_mut(&mut self) -> &mut EventLog {
        self.dirty = true;
        &mut self.log
    }

    /// Hands readers a snapshot of the log, if it changed.
    pub(crate) fn publish(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.tx.send_replace(Arc::new(self.log.clone()));
        }
    }
}

/// A plain firing latency event, for tests (the unit tests, and through the
/// `test-util` feature the integration tests and benches).
#[cfg(any(test, feature = "test-util"))]
pub fn example_event(id: &str, detected: u64) -> DriftEvent {
    DriftEvent {
        id: id.into(),
        fingerprint: "f".into(),
        operation: Some("op".into()),
        ..DriftEvent::firing(EventKind::LatencyRegression, &ServiceKey::new("s", None), "op", "r", detected, detected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, detected: u64) -> DriftEvent {
        example_event(id, detected)
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        let service = |name: &str| ServiceKey::new(name, None);
        let checkout = service("checkout");
        let a = fingerprint(&checkout, EventKind::LatencyRegression, "POST /checkout", "abc");
        assert_eq!(a, "48af8796d698a6d2", "stored events and fleet holds keep their fingerprints");
        assert_ne!(
            a,
            fingerprint(&checkout, EventKind::NewOutboundPeer, "POST /checkout", "abc")
        );
        assert_ne!(
            fingerprint(&service("ab"), EventKind::LatencyRegression, "c", "r"),
            fingerprint(&service("a"), EventKind::LatencyRegression, "bc", "r")
        );
        let production = ServiceKey::new("checkout", Some("production"));
        let staging = ServiceKey::new("checkout", Some("staging"));
        let in_production = fingerprint(&production, EventKind::LatencyRegression, "POST /checkout", "abc");
        assert_ne!(in_production, a, "an environment is a different drift");
        assert_ne!(
            in_production,
            fingerprint(&staging, EventKind::LatencyRegression, "POST /checkout", "abc")
        );
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn log_lists_newest_first_and_resolves() {
        let mut log = EventLog::new(10);
        log.apply(EventUpdate::Fired(Box::new(event("old", 1_000_000_000))));
        log.apply(EventUpdate::Fired(Box::new(event("new", 2_000_000_000))));
        assert_eq!(
            log.list().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            vec!["new", "old"]
        );
        let seen = log
            .apply(EventUpdate::SeenIn {
                id: "old".into(),
                revision: "r2".into(),
                at_unix_nanos: 2_500_000_000,
            })
            .expect("known");
        assert_eq!(seen.seen_in, vec!["r2".to_owned()]);
        assert!(
            log.apply(EventUpdate::SeenIn {
                id: "old".into(),
                revision: "r2".into(),
                at_unix_nanos: 2_600_000_000,
            })
            .is_none(),
            "a revision is listed once"
        );
        let resolved = log
            .apply(EventUpdate::Resolved {
                id: "old".into(),
                at_unix_nanos: 3_000_000_000,
                resolution: Resolution {
                    reason: ResolutionReason::Fixed,
                    revision: Some("r3".into()),
                },
            })
            .expect("known");
        assert_eq!(resolved.state, EventState::Resolved);
        assert_eq!(resolved.resolution.as_ref().map(|r| r.reason), Some(ResolutionReason::Fixed));
        assert_eq!(resolved.resolved_at.map(Timestamp::rfc3339).as_deref(), Some("1970-01-01T00:00:03.000Z"));
        assert_eq!(log.firing(EventKind::LatencyRegression), 1);
    }

    #[test]
    fn an_event_id_names_its_fingerprint() {
        let fp = fingerprint(&ServiceKey::new("checkout", None), EventKind::LatencyRegression, "POST /pay", "abc");
        assert_eq!(fingerprint_of(&event_id(&fp, 1_700_000_000_000_000_000)), fp);
    }

    #[test]
    fn readers_see_a_snapshot_until_the_owner_publishes() {
        let mut published = PublishedLog::new(EventLog::new(10));
        let view = published.view();
        published.log_mut().apply(EventUpdate::Fired(Box::new(event("a", 1))));
        assert!(view.current().get("a").is_none(), "not before it is published");
        published.publish();
        let before = view.current();
        assert_eq!(before.get("a").map(|e| e.state), Some(EventState::Firing));
        published.log_mut().apply(EventUpdate::Resolved {
            id: "a".into(),
            at_unix_nanos: 2,
            resolution: Resolution {
                reason: ResolutionReason::Fixed,
                revision: None,
            },
        });
        published.publish();
        assert_eq!(before.get("a").map(|e| e.state), Some(EventState::Firing), "a snapshot never changes");
        assert_eq!(view.current().get("a").map(|e| e.state), Some(EventState::Resolved));
    }

    #[test]
    fn the_log_stays_ordered_newest_first_whatever_the_arrival_order() {
        let mut log = EventLog::new(10);
        for (id, at) in [("b", 5), ("a", 9), ("c", 5), ("d", 1)] {
            log.apply(EventUpdate::Fired(Box::new(event(id, at))));
        }
        let ids: Vec<&str> = log.list().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        let mut moved = (*log.list()[3]).clone();
        moved.detected_at = Timestamp::from_unix_nanos(7);
        log.upsert(moved);
        let ids: Vec<&str> = log.list().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "d", "b", "c"], "a replaced event takes its new place");
    }

    #[test]
    fn full_log_drops_resolved_first() {
        let mut log = EventLog::new(2);
        log.apply(EventUpdate::Fired(Box::new(event("a", 1))));
        log.apply(EventUpdate::Fired(Box::new(event("b", 2))));
        log.apply(EventUpdate::Resolved {
            id: "b".into(),
            at_unix_nanos: 3,
            resolution: Resolution {
                reason: ResolutionReason::TrafficGone,
                revision: None,
            },
        });
        log.apply(EventUpdate::Fired(Box::new(event("c", 4))));
        assert!(log.get("b").is_none());
        assert!(log.get("a").is_some() && log.get("c").is_some());
    }

    #[test]
    fn serialises_to_the_contract_shape() {
        let json = serde_json::to_value(event("x", 1_700_000_000_000_000_000)).expect("json");
        for key in [
            "id",
            "kind",
            "state",
            "service",
            "operation",
            "revision",
            "baseline_revision",
            "seen_in",
            "resolution",
            "onset",
            "detected_at",
            "resolved_at",
            "suspects",
        ] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
        assert_eq!(json["kind"], "latency_regression");
        assert_eq!(json["state"], "firing");
        assert_eq!(json["onset"], "2023-11-14T22:13:20.000Z");
    }
}
