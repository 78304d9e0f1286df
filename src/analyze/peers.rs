//! Outbound peers of a service: which destinations each revision calls, how
//! often, since when, and from which of the service's operations.
//!
//! A CLIENT span's caller is found by walking up its parents within the
//! trace to the nearest SERVER or CONSUMER span. Children usually end — and
//! are exported — before their parents, so calls wait in a short, bounded
//! queue until their parent chain arrives; a call still unresolved after
//! `JOIN_WINDOW` is attributed to `(unknown caller)`.
//!
//! Calls are linked to their caller as soon as the chain is there: at the
//! end of each batch for the batch's calls, and again whenever a span that
//! a waiting call misses arrives. The join cache therefore only has to hold
//! spans for the short time until their children are linked (or for
//! children that end after their parent), and its size is a share of a
//! per-shard budget rather than a fixed count per service, so memory does
//! not grow with the number of services. A link records when its chain was
//! complete (its latest span's end); the call is attributed by the first
//! evaluation after that, as if the chain had been walked then, so the
//! result does not depend on batching.
//!
//! Calls are also tallied per request — per entry span — and each
//! request's tally is handed on once the join window after it has passed:
//! how many times one request called each peer, and how many of those calls
//! were non-idempotent (see `SpanFact::non_idempotent`).
//!
//! Everything here is bounded: peers per service, callers per peer, the
//! join cache, the pending queue and the open request tallies.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;

use super::timeline::RevId;
use crate::extract::{SpanFact, SpanKind, Sym};
use crate::rng::Rng;

/// Peers remembered per service; the least recently called is forgotten.
pub(crate) const MAX_PEERS: usize = 512;
/// Calling operations remembered per peer.
pub(crate) const MAX_CALLERS: usize = 16;
/// Spans kept for parent lookups, per shard: every service of the shard
/// holds an equal share of it, at least `MIN_SHARE`.
pub(crate) const JOIN_BUDGET: usize = 65_536;
/// The smallest share of the join and pending budgets a service holds.
pub(crate) const MIN_SHARE: usize = 256;
/// Calls waiting for their caller, per shard, shared out like the join
/// budget: when a service's share is full, its oldest waiting call stops
/// waiting; it stays counted for its peer, with no caller, in
/// `calls_dropped`.
pub(crate) const PENDING_BUDGET: usize = 65_536;
/// How long (event time) a call waits for its parents.
pub(crate) const JOIN_WINDOW_NANOS: u64 = 30_000_000_000;
/// Parents walked at most from a client span to its entry span.
const MAX_HOPS: usize = 16;
/// Samples kept per (peer, caller) for the latency contribution.
const RESERVOIR: usize = 128;

pub(crate) const UNKNOWN_CALLER: &str = "(unknown caller)";
pub(crate) const NO_PARENT: &str = "(no parent span)";

/// Whether a caller name stands for "not found" rather than an operation.
pub(crate) fn is_placeholder_caller(operation: &str) -> bool {
    operation == UNKNOWN_CALLER || operation == NO_PARENT
}

/// A span's place in its trace, for parent lookups.
#[derive(Debug, Clone)]
struct Link {
    parent: u64,
    kind: SpanKind,
    operation: Sym,
    duration_nanos: u64,
    end: u64,
}

/// Latency of calls to a peer from one operation.
#[derive(Debug, Clone)]
pub(crate) struct CallerStats {
    pub operation: Sym,
    pub calls: u64,
    /// (call duration in ms, share of the caller's span duration); kept
    /// only while the peer's use is sampled (see [`PeerUse::sampled`]).
    samples: Vec<(f32, f32)>,
}

impl CallerStats {
    fn new(operation: Sym) -> CallerStats {
        CallerStats {
            operation,
            calls: 0,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, call_ms: f32, share: f32, sampled: bool, rng: &mut Rng) {
        self.calls += 1;
        if !sampled {
            return;
        }
        if self.samples.len() < RESERVOIR {
            self.samples.push((call_ms, share));
        } else {
            // Reservoir sampling keeps a uniform sample of all calls.
            let slot = (rng.next_u64() % self.calls) as usize;
            if slot < RESERVOIR {
                self.samples[slot] = (call_ms, share);
            }
        }
    }

    /// p95 of the call duration, in ms.
    pub(crate) fn p95_call_ms(&self) -> f64 {
        quantile(self.samples.iter().map(|s| s.0), 0.95)
    }

    /// Median share of the caller's duration spent in the call.
    pub(crate) fn median_share(&self) -> f64 {
        quantile(self.samples.iter().map(|s| s.1), 0.5)
    }
}

fn quantile(values: impl Iterator<Item = f32>, q: f64) -> f64 {
    let mut v: Vec<f32> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    f64::from(v[((v.len() - 1) as f64 * q).round() as usize])
}

/// One peer as called by one revision.
#[derive(Debug, Clone)]
pub(crate) struct PeerUse {
    pub calls: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    pub callers: Vec<CallerStats>,
    /// Whether its callers keep latency samples. The samples only describe
    /// a call that may be reported (a new peer, one outside the allowlist,
    /// the cloud metadata address),
    /// so the detector asks for them ([`PeerSets::sample_callers`]); every
    /// other use keeps its callers' counts alone, a reservoir of 128
    /// samples (1 KiB) less per (revision, peer, caller).
    pub sampled: bool,
}

/// One peer across the service's history (all revisions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KnownPeer {
    pub first_seen: u64,
    pub last_seen: u64,
    pub calls: u64,
}

struct PendingCall {
    peer: Sym,
    revision: RevId,
    parent: u64,
    end: u64,
    duration_nanos: u64,
    non_idempotent: bool,
    /// Once linked: the caller's operation and duration, and the end of the
    /// latest span of the chain (the call is attributed after it), and the
    /// entry span's id.
    link: Option<(Sym, u64, u64, u64)>,
    /// The call's place in arrival order: the pending queue is sorted by it.
    seq: u64,
    /// While unlinked: the span id its walk missed.
    awaiting: u64,
}

/// The walk from a call's parent to its entry span.
enum Walk {
    /// (operation, duration, latest end along the chain, entry span id).
    Found(Sym, u64, u64, u64),
    /// The chain breaks at this span id, not (yet) seen.
    Missing(u64),
}

/// What recording a call learned about its peer, before the call was
/// added to the history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Novelty {
    /// The service had not called this peer within the lookback.
    pub unseen: bool,
}

/// The calls one request made, per peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestCalls {
    pub operation: Sym,
    pub revision: RevId,
    /// When the request's calls were linked (event time).
    pub at: u64,
    /// In the order first called.
    pub calls: Vec<PeerCalls>,
}

/// How often one request called one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerCalls {
    pub peer: Sym,
    pub calls: u32,
    /// Of those, the non-idempotent ones.
    pub unsafe_calls: u32,
}

/// Peers tallied per request, at most.
const MAX_REQUEST_PEERS: usize = 8;

pub(crate) struct PeerSets {
    known: HashMap<Sym, KnownPeer>,
    /// Open per-request tallies by entry span id.
    requests: HashMap<u64, RequestCalls, RandomState>,
    /// Tallies closed by the last `resolve_pending`, in event-time order.
    finished: Vec<RequestCalls>,
    /// Requests whose tally could not be kept (too many open).
    pub requests_dropped: u64,
    by_revision: HashMap<RevId, HashMap<Sym, PeerUse>>,
    join: HashMap<u64, Link, RandomState>,
    join_order: VecDeque<(u64, u64)>,
    /// This service's share of the shard's join budget.
    join_cap: usize,
    /// This service's share of the shard's pending-call budget.
    pending_cap: usize,
    pending: VecDeque<PendingCall>,
    /// Pending calls before this index have been tried for a link.
    linked_upto: usize,
    /// The next pending call's `seq`.
    next_seq: u64,
    /// Span ids that waiting calls miss → those calls' `seq`s. A span
    /// arriving re-walks only the calls that waited for it, so calls whose
    /// parents never come (sampled out, lost context) cost nothing more
    /// than their first walk.
    awaited: HashMap<u64, Vec<u64>, RandomState>,
    /// `seq`s of calls whose missing span has arrived, to walk again.
    arrived: Vec<u64>,
    rng: Rng,
    /// Calls whose peer could not be remembered (table full).
    pub overflow: u64,
    /// Calls that waited for their caller while this service's share of
    /// the pending budget was full: counted, with no caller.
    pub calls_dropped: u64,
}

impl Default for PeerSets {
    fn default() -> Self {
        PeerSets {
            known: HashMap::new(),
            requests: HashMap::default(),
            finished: Vec::new(),
            requests_dropped: 0,
            by_revision: HashMap::new(),
            join: HashMap::default(),
            join_order: VecDeque::new(),
            join_cap: JOIN_BUDGET,
            pending_cap: PENDING_BUDGET,
            calls_dropped: 0,
            pending: VecDeque::new(),
            linked_upto: 0,
            next_seq: 0,
            awaited: HashMap::default(),
            arrived: Vec::new(),
            rng: Rng::new(0x5eed),
            overflow: 0,
        }
    }
}

impl PeerSets {
    /// Remembers a span for parent lookups (every span can be a parent).
    pub(crate) fn remember(&mut self, fact: &SpanFact) {
        if fact.span_id == 0 {
            return;
        }
        self.join.insert(
            fact.span_id,
            Link {
                parent: fact.parent_span_id,
                kind: fact.kind,
                operation: fact.operation.clone(),
                duration_nanos: fact.duration_nanos(),
                end: fact.end_unix_nanos,
            },
        );
        self.join_order.push_back((fact.end_unix_nanos, fact.span_id));
        while self.join_order.len() > self.join_cap {
            if let Some((_, id)) = self.join_order.pop_front() {
                self.join.remove(&id);
            }
        }
        if !self.awaited.is_empty()
            && let Some(waiting) = self.awaited.remove(&fact.span_id)
        {
            self.arrived.extend(waiting);
        }
    }

    /// Sets this service's share of the shard's join and pending budgets,
    /// among `services`.
    pub(crate) fn set_share(&mut self, services: usize) {
        let services = services.max(1);
        self.join_cap = (JOIN_BUDGET / services).max(MIN_SHARE);
        self.pending_cap = (PENDING_BUDGET / services).max(MIN_SHARE);
    }

    /// Links the calls recorded since the last time, and the waiting calls
    /// whose missing span has arrived. Run after each batch.
    pub(crate) fn link_new_calls(&mut self) {
        for i in self.linked_upto..self.pending.len() {
            self.link_at(i);
        }
        self.linked_upto = self.pending.len();
        if self.arrived.is_empty() {
            return;
        }
        let mut arrived = std::mem::take(&mut self.arrived);
        arrived.sort_unstable();
        arrived.dedup();
        for seq in arrived.drain(..) {
            // Calls that left the queue meanwhile are not found.
            if let Ok(i) = self.pending.binary_search_by_key(&seq, |c| c.seq) {
                self.link_at(i);
            }
        }
        self.arrived = arrived;
    }

    /// Walks pending call `i` to its entry span, or records what it misses.
    fn link_at(&mut self, i: usize) {
        let call = &self.pending[i];
        if call.link.is_some() || call.parent == 0 {
            return;
        }
        let (seq, end) = (call.seq, call.end);
        match self.walk(call.parent) {
            Walk::Found(operation, duration, ready, entry) => {
                self.pending[i].link = Some((operation, duration, ready.max(end), entry));
            }
            Walk::Missing(id) => {
                self.pending[i].awaiting = id;
                self.awaited.entry(id).or_default().push(seq);
            }
        }
    }

    /// The waiting lists, rebuilt from the calls still pending (those that
    /// left, attributed or dropped, wait no more).
    fn rebuild_awaited(&mut self) {
        self.awaited.clear();
        self.arrived.clear();
        for call in &self.pending {
            if call.link.is_none() && call.parent != 0 {
                self.awaited.entry(call.awaiting).or_default().push(call.seq);
            }
        }
    }

    /// Walks up from `span` to the nearest SERVER/CONSUMER ancestor (or a
    /// root), through the spans seen so far.
    fn walk(&self, mut span: u64) -> Walk {
        let mut latest = 0;
        for _ in 0..MAX_HOPS {
            let Some(link) = self.join.get(&span) else {
                return Walk::Missing(span);
            };
            latest = latest.max(link.end);
            // A root that is not an entry span (a job, a script) is the caller.
            if link.kind.is_entry() || link.parent == 0 {
                return Walk::Found(link.operation.clone(), link.duration_nanos, latest, span);
            }
            span = link.parent;
        }
        // Too deep: treated as a chain that never completes.
        Walk::Missing(0)
    }

    /// Records an outbound call to `peer` by `revision`; `lookback_nanos`
    /// decides whether the peer counts as unseen.
    pub(crate) fn record_call(&mut self, fact: &SpanFact, peer: &Sym, revision: RevId, lookback_nanos: u64) -> Novelty {
        let (start, end) = (fact.start_unix_nanos, fact.end_unix_nanos);
        let unseen = self
            .known
            .get(peer)
            .is_none_or(|k| k.last_seen.saturating_add(lookback_nanos) < start);
        if !self.known.contains_key(peer) && self.known.len() >= MAX_PEERS {
            self.evict_least_recent();
        }
        let known = self.known.entry(peer.clone()).or_insert(KnownPeer {
            first_seen: start,
            last_seen: end,
            calls: 0,
        });
        known.calls += 1;
        known.last_seen = known.last_seen.max(end);
        let uses = self.by_revision.entry(revision).or_default();
        if !uses.contains_key(peer) && uses.len() >= MAX_PEERS {
            self.overflow += 1;
            return Novelty { unseen };
        }
        let usage = uses.entry(peer.clone()).or_insert(PeerUse {
            calls: 0,
            first_seen: start,
            last_seen: end,
            callers: Vec::new(),
            sampled: false,
        });
        usage.calls += 1;
        usage.first_seen = usage.first_seen.min(start);
        usage.last_seen = usage.last_seen.max(end);
        if self.pending.len() >= self.pending_cap {
            self.pending.pop_front();
            self.linked_upto = self.linked_upto.saturating_sub(1);
            self.calls_dropped += 1;
        }
        self.pending.push_back(PendingCall {
            peer: peer.clone(),
            revision,
            parent: fact.parent_span_id,
            end,
            duration_nanos: fact.duration_nanos(),
            non_idempotent: fact.non_idempotent,
            link: None,
            seq: self.next_seq,
            awaiting: 0,
        });
        self.next_seq += 1;
        Novelty { unseen }
    }

    fn evict_least_recent(&mut self) {
        if let Some(victim) = self.known.iter().min_by_key(|(_, k)| k.last_seen).map(|(p, _)| p.clone()) {
            self.known.remove(&victim);
        }
    }

    /// Attributes pending calls whose parents have arrived; gives up on
    /// those older than the join window; ages out old join entries. Only
    /// spans that ended before `at` (event time) take part, and calls are
    /// attributed in event-time order, so the callers an evaluation at `at`
    /// sees do not depend on how the spans were batched.
    pub(crate) fn resolve_pending(&mut self, at: u64) {
        self.link_new_calls();
        let mut ready = Vec::new();
        let mut still_pending = VecDeque::with_capacity(self.pending.len());
        while let Some(mut call) = self.pending.pop_front() {
            if call.end >= at {
                still_pending.push_back(call);
                continue;
            }
            let expired = call.end.saturating_add(JOIN_WINDOW_NANOS) < at;
            if call.parent == 0 {
                ready.push((call, Sym::from(NO_PARENT), 0, None));
                continue;
            }
            match call.link.take() {
                // The chain had ended by `at`.
                Some((caller, duration, complete, entry)) if complete < at => {
                    ready.push((call, caller, duration, Some((entry, complete))))
                }
                _ if expired => ready.push((call, Sym::from(UNKNOWN_CALLER), 0, None)),
                link => {
                    call.link = link;
                    still_pending.push_back(call);
                }
            }
        }
        self.pending = still_pending;
        self.linked_upto = self.pending.len();
        self.rebuild_awaited();
        ready.sort_by(|(a, a_caller, ..), (b, b_caller, ..)| {
            (a.end, a.duration_nanos, a.parent, a_caller).cmp(&(b.end, b.duration_nanos, b.parent, b_caller))
        });
        for (call, caller, caller_duration, entry) in ready {
            if let Some((entry, complete)) = entry {
                self.tally(entry, complete, &call, &caller);
            }
            self.attribute(&call, caller, caller_duration);
        }
        // A request's tally closes once its join window has passed: its
        // calls have all arrived, or count as lost.
        let mut closed: Vec<(u64, RequestCalls)> = Vec::new();
        self.requests.retain(|entry, request| {
            let open = request.at.saturating_add(JOIN_WINDOW_NANOS) >= at;
            if !open {
                closed.push((*entry, request.clone()));
            }
            open
        });
        closed.sort_by_key(|(entry, r)| (r.at, *entry));
        self.finished.extend(closed.into_iter().map(|(_, r)| r));
        let horizon = at.saturating_sub(2 * JOIN_WINDOW_NANOS);
        while self.join_order.front().is_some_and(|(end, _)| *end < horizon) {
            if let Some((_, id)) = self.join_order.pop_front() {
                self.join.remove(&id);
            }
        }
        self.release_spare_room();
    }

    /// Gives back the room the join cache and the open tallies grew into
    /// while this service's share was larger (the shard held fewer
    /// services then): a map never shrinks by itself, so without this the
    /// first services of a shard would keep their early share for good.
    fn release_spare_room(&mut self) {
        if self.join.capacity() > 2 * self.join_cap.max(self.join.len()) {
            self.join.shrink_to(self.join_cap);
        }
        if self.join_order.capacity() > 2 * self.join_cap.max(self.join_order.len()) {
            self.join_order.shrink_to(self.join_cap);
        }
        if self.requests.capacity() > 2 * self.pending_cap.max(self.requests.len()) {
            self.requests.shrink_to(self.pending_cap);
        }
    }

    /// Counts a call in its request's tally.
    fn tally(&mut self, entry: u64, complete: u64, call: &PendingCall, caller: &Sym) {
        if !self.requests.contains_key(&entry) && self.requests.len() >= self.pending_cap {
            self.requests_dropped += 1;
            return;
        }
        let request = self.requests.entry(entry).or_insert_with(|| RequestCalls {
            operation: caller.clone(),
            revision: call.revision,
            at: complete,
            calls: Vec::new(),
        });
        request.at = request.at.max(complete);
        let unsafe_calls = u32::from(call.non_idempotent);
        if let Some(tally) = request.calls.iter_mut().find(|c| c.peer == call.peer) {
            tally.calls = tally.calls.saturating_add(1);
            tally.unsafe_calls = tally.unsafe_calls.saturating_add(unsafe_calls);
        } else if request.calls.len() < MAX_REQUEST_PEERS {
            request.calls.push(PeerCalls {
                peer: call.peer.clone(),
                calls: 1,
                unsafe_calls,
            });
        }
    }

    /// The request tallies closed since the last call, in event-time order.
    pub(crate) fn take_finished(&mut self) -> Vec<RequestCalls> {
        std::mem::take(&mut self.finished)
    }

    fn attribute(&mut self, call: &PendingCall, caller: Sym, caller_duration: u64) {
        let Some(usage) = self.by_revision.get_mut(&call.revision).and_then(|u| u.get_mut(&call.peer)) else {
            return;
        };
        let index = match usage.callers.iter().position(|c| c.operation == caller) {
            Some(i) => i,
            None if usage.callers.len() < MAX_CALLERS => {
                usage.callers.push(CallerStats::new(caller));
                usage.callers.len() - 1
            }
            None => return,
        };
        let call_ms = call.duration_nanos as f32 / 1e6;
        let share = if caller_duration > 0 {
            (call.duration_nanos as f64 / caller_duration as f64).min(1.0) as f32
        } else {
            0.0
        };
        usage.callers[index].add(call_ms, share, usage.sampled, &mut self.rng);
    }

    pub(crate) fn known(&self, peer: &str) -> Option<&KnownPeer> {
        self.known.get(peer)
    }

    pub(crate) fn known_peers(&self) -> impl Iterator<Item = (&Sym, &KnownPeer)> {
        self.known.iter()
    }

    /// Re-creates a known peer from a snapshot.
    pub(crate) fn restore_known(&mut self, peer: Sym, first_seen: u64, last_seen: u64, calls: u64) {
        if self.known.len() < MAX_PEERS {
            self.known.insert(
                peer,
                KnownPeer {
                    first_seen,
                    last_seen,
                    calls,
                },
            );
        }
    }

    /// Learns a peer another replica knows: its lifetime widens, its call
    /// count becomes the larger of the two (counts from other replicas are
    /// not added, so sharing back and forth never inflates them).
    pub(crate) fn learn_known(&mut self, peer: Sym, first_seen: u64, last_seen: u64, calls: u64) {
        match self.known.get_mut(&peer) {
            Some(known) => {
                known.first_seen = known.first_seen.min(first_seen);
                known.last_seen = known.last_seen.max(last_seen);
                known.calls = known.calls.max(calls);
            }
            None => self.restore_known(peer, first_seen, last_seen, calls),
        }
    }

    pub(crate) fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Keeps latency samples of `revision`'s calls to `peer` from now on.
    pub(crate) fn sample_callers(&mut self, revision: RevId, peer: &str) {
        if let Some(usage) = self.by_revision.get_mut(&revision).and_then(|u| u.get_mut(peer)) {
            usage.sampled = true;
        }
    }

    pub(crate) fn usage(&self, revision: RevId, peer: &str) -> Option<&PeerUse> {
        self.by_revision.get(&revision).and_then(|u| u.get(peer))
    }

    /// Peers called by a revision.
    #[cfg(test)]
    pub(crate) fn of_revision(&self, revision: RevId) -> impl Iterator<Item = (&Sym, &PeerUse)> {
        self.by_revision.get(&revision).into_iter().flatten()
    }

    pub(crate) fn forget_revision(&mut self, revision: RevId) {
        self.by_revision.remove(&revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u64, parent: u64, kind: SpanKind, op: &str, start: u64, duration: u64) -> SpanFact {
        SpanFact {
            trace_id: 1,
            span_id: id,
            parent_span_id: parent,
            ..SpanFact::new(Sym::from("s"), Sym::from("r"), Sym::from(op), kind, start, start + duration)
        }
    }

    #[test]
    fn calls_are_attributed_to_the_entry_span_through_internal_spans() {
        let mut peers = PeerSets::default();
        let peer = Sym::from("api.fraudscore.io:443");
        // Exported child first: client (3) → internal (2) → server (1).
        let client = span(3, 2, SpanKind::Client, "POST", 1_000, 30_000_000);
        peers.remember(&client);
        assert!(peers.record_call(&client, &peer, 0, u64::MAX).unseen);
        peers.sample_callers(0, &peer);
        peers.resolve_pending(client.end_unix_nanos + 1);
        assert!(
            peers.usage(0, &peer).expect("usage").callers.is_empty(),
            "waits for its parents"
        );
        let internal = span(2, 1, SpanKind::Internal, "score", 500, 40_000_000);
        let server = span(1, 0, SpanKind::Server, "POST /checkout", 0, 100_000_000);
        peers.remember(&internal);
        peers.remember(&server);
        peers.resolve_pending(server.end_unix_nanos + 1);
        let usage = peers.usage(0, &peer).expect("usage");
        assert_eq!(usage.calls, 1);
        assert_eq!(&*usage.callers[0].operation, "POST /checkout");
        assert!((usage.callers[0].p95_call_ms() - 30.0).abs() < 0.01);
        assert!((usage.callers[0].median_share() - 0.3).abs() < 0.01);
        assert!(!peers.record_call(&client, &peer, 0, u64::MAX).unseen, "known now");
    }

    #[test]
    fn calls_linked_after_their_batch_need_no_join_cache_afterwards() {
        let peer = Sym::from("db:5432");
        let run = |cap: usize| {
            let mut peers = PeerSets::default();
            peers.set_share(JOIN_BUDGET / cap.max(1));
            // Batches of two traces each (client first, as exported), then
            // a flood of unrelated spans before the evaluation.
            for trace in 0..100u64 {
                let server = span(trace * 10 + 1, 0, SpanKind::Server, &format!("GET /{}", trace % 3), trace * 1_000, 50_000);
                let client = span(trace * 10 + 2, trace * 10 + 1, SpanKind::Client, "SELECT", trace * 1_000 + 10, 20_000);
                peers.record_call(&client, &peer, 0, u64::MAX);
                peers.remember(&server);
                if trace % 2 == 1 {
                    peers.link_new_calls();
                }
            }
            for filler in 0..10_000u64 {
                peers.remember(&span(1_000_000 + filler, 0, SpanKind::Server, "GET /other", 200_000, 1));
            }
            peers.resolve_pending(1_000_000);
            let mut callers: Vec<(String, u64)> = peers.usage(0, &peer).expect("usage").callers.iter().map(|c| (c.operation.to_string(), c.calls)).collect();
            callers.sort();
            callers
        };
        let roomy = run(1 << 20);
        assert_eq!(roomy, [("GET /0".to_owned(), 34), ("GET /1".to_owned(), 33), ("GET /2".to_owned(), 33)]);
        assert_eq!(run(MIN_SHARE), roomy, "a small join cache loses nothing already linked");
    }

    #[test]
    fn a_parent_arriving_in_a_later_batch_is_linked_when_it_arrives() {
        let mut peers = PeerSets::default();
        peers.set_share(usize::MAX);
        let peer = Sym::from("api:443");
        let client = span(3, 2, SpanKind::Client, "POST", 1_000, 10);
        peers.record_call(&client, &peer, 0, u64::MAX);
        peers.link_new_calls();
        // The internal span, then the server span, each in its own batch,
        // then enough unrelated spans to push both out of the cache.
        peers.remember(&span(2, 1, SpanKind::Internal, "score", 900, 500));
        peers.link_new_calls();
        peers.remember(&span(1, 0, SpanKind::Server, "POST /checkout", 0, 5_000));
        peers.link_new_calls();
        for filler in 0..1_000u64 {
            peers.remember(&span(100 + filler, 0, SpanKind::Server, "GET /other", 6_000, 1));
        }
        // Not before the chain's last span ended...
        peers.resolve_pending(5_000);
        assert!(peers.usage(0, &peer).expect("usage").callers.is_empty());
        // ...and then to the entry span.
        peers.resolve_pending(5_001);
        assert_eq!(&*peers.usage(0, &peer).expect("usage").callers[0].operation, "POST /checkout");
    }

    #[test]
    fn a_parent_arriving_after_an_evaluation_walks_again_only_the_calls_that_waited_for_it() {
        let mut peers = PeerSets::default();
        peers.set_share(1);
        let peer = Sym::from("db:5432");
        // A thousand orphans, whose parents never come, and one call whose
        // server span comes late.
        for i in 0..1_000u64 {
            peers.record_call(&span(10_000 + i, 50_000 + i, SpanKind::Client, "SELECT", 100, 10), &peer, 0, u64::MAX);
        }
        peers.record_call(&span(2, 1, SpanKind::Client, "SELECT", 100, 10), &peer, 0, u64::MAX);
        peers.link_new_calls();
        assert_eq!(peers.awaited.len(), 1_001, "each waits for its own parent");
        // An evaluation before the parent arrives keeps them all waiting.
        peers.resolve_pending(1_000);
        assert_eq!(peers.awaited.len(), 1_001);
        peers.remember(&span(1, 0, SpanKind::Server, "GET /cart", 50, 500));
        assert_eq!(peers.arrived, vec![1_000u64], "only the call that waited for it is walked again");
        peers.link_new_calls();
        peers.resolve_pending(2_000);
        let callers = &peers.usage(0, &peer).expect("usage").callers;
        assert_eq!(callers.len(), 1);
        assert_eq!(&*callers[0].operation, "GET /cart");
        assert_eq!(peers.awaited.len(), 1_000, "the orphans still wait, until the join window ends");
    }

    #[test]
    fn orphan_calls_give_up_after_the_join_window() {
        let mut peers = PeerSets::default();
        let peer = Sym::from("db");
        let client = span(9, 77, SpanKind::Client, "SELECT", 0, 1_000_000);
        peers.record_call(&client, &peer, 0, u64::MAX);
        peers.resolve_pending(JOIN_WINDOW_NANOS * 2);
        assert_eq!(&*peers.usage(0, &peer).expect("usage").callers[0].operation, UNKNOWN_CALLER);
    }

    #[test]
    fn lookback_decides_novelty() {
        let mut peers = PeerSets::default();
        let peer = Sym::from("rare:443");
        let week = 7 * 86_400 * 1_000_000_000u64;
        let first = span(1, 0, SpanKind::Client, "GET", 1_000, 1);
        assert!(peers.record_call(&first, &peer, 0, week).unseen);
        let six_days_later = span(2, 0, SpanKind::Client, "GET", 1_000 + 6 * 86_400 * 1_000_000_000, 1);
        assert!(!peers.record_call(&six_days_later, &peer, 0, week).unseen, "rare but known");
        let much_later = span(3, 0, SpanKind::Client, "GET", 1_000 + 20 * 86_400 * 1_000_000_000, 1);
        assert!(peers.record_call(&much_later, &peer, 0, week).unseen, "beyond the lookback");
    }

    /// A service whose share of the budgets fell (the shard took on more
    /// services) gives back the room its maps grew into before.
    #[test]
    fn room_grown_under_a_larger_share_is_given_back() {
        let mut peers = PeerSets::default();
        let peer = Sym::from("db:5432");
        for i in 0..4_000u64 {
            let server = span(2 * i + 1, 0, SpanKind::Server, "GET /", i * 1_000, 100);
            let client = span(2 * i + 2, 2 * i + 1, SpanKind::Client, "SELECT", i * 1_000, 10);
            peers.record_call(&client, &peer, 0, u64::MAX);
            peers.remember(&client);
            peers.remember(&server);
        }
        peers.resolve_pending(5_000_000);
        assert!(peers.join.capacity() >= 8_000 && peers.requests.capacity() >= 4_000);
        peers.set_share(JOIN_BUDGET / MIN_SHARE);
        for i in 4_000..4_100u64 {
            peers.remember(&span(2 * i + 1, 0, SpanKind::Server, "GET /", i * 1_000, 100));
        }
        // Past the join window: the open tallies close.
        peers.resolve_pending(JOIN_WINDOW_NANOS + 10_000_000);
        assert_eq!(peers.take_finished().len(), 4_000);
        assert!(peers.join.len() <= MIN_SHARE);
        assert!(peers.join.capacity() <= 2 * MIN_SHARE, "{}", peers.join.capacity());
        assert!(peers.join_order.capacity() <= 2 * MIN_SHARE, "{}", peers.join_order.capacity());
        assert!(peers.requests.capacity() <= 2 * MIN_SHARE, "{}", peers.requests.capacity());
    }

    #[test]
    fn memory_is_bounded() {
        let mut peers = PeerSets::default();
        for i in 0..(MAX_PEERS as u64 * 3) {
            let client = span(i + 1, 0, SpanKind::Client, "GET", i, 1);
            peers.remember(&client);
            peers.record_call(&client, &Sym::from(format!("host-{i}:443").as_str()), 0, u64::MAX);
        }
        assert!(peers.known_len() <= MAX_PEERS);
        assert!(peers.of_revision(0).count() <= MAX_PEERS);
        assert!(peers.overflow > 0);
    }
}
