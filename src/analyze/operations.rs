//! `OperationTable`: bounded cardinality of operation names per service.
//!
//! Up to `max_tracked` operations are tracked exactly; every other name is
//! folded into `__other__` and counted. Untracked names compete as
//! candidates (a bounded, Space-Saving style counter table), so a flood of
//! one-off span names early on cannot lock real endpoints out: at each
//! period end, idle tracked operations are evicted, free slots go to the
//! busiest candidates, and a candidate far busier than the quietest tracked
//! operation takes its place.

use std::collections::HashMap;

use crate::extract::Sym;

pub(crate) type OpId = u32;

/// Id and name of the operation that untracked spans fold into.
pub(crate) const OTHER: OpId = 0;
pub(crate) const OTHER_NAME: &str = "__other__";

/// The name of the fold, as a shared string.
pub(crate) fn other_name() -> Sym {
    thread_local! {
        static OTHER_SYM: Sym = Sym::from(OTHER_NAME);
    }
    OTHER_SYM.with(Sym::clone)
}

/// A candidate must be this many times busier than the quietest tracked
/// operation to displace it.
const DISPLACE_FACTOR: u64 = 10;
/// ... and have at least this many spans in the period.
const DISPLACE_MIN_SPANS: u64 = 20;

struct Slot {
    name: Sym,
    last_seen: u64,
    period_count: u64,
}

pub(crate) struct OperationTable {
    ids: HashMap<Sym, OpId>,
    /// Indexed by `OpId`; slot 0 is `__other__`. `None` is a free id.
    slots: Vec<Option<Slot>>,
    candidates: HashMap<Sym, u64>,
    max_tracked: usize,
    max_candidates: usize,
    folded_spans: u64,
    /// Operations evicted or displaced since the table was created.
    evictions: u64,
}

impl OperationTable {
    pub(crate) fn new(max_tracked: usize) -> OperationTable {
        let other = Slot {
            name: Sym::from(OTHER_NAME),
            last_seen: 0,
            period_count: 0,
        };
        OperationTable {
            ids: HashMap::new(),
            slots: vec![Some(other)],
            candidates: HashMap::new(),
            max_tracked: max_tracked.max(1),
            max_candidates: (max_tracked * 4).max(16),
            folded_spans: 0,
            evictions: 0,
        }
    }

    /// The id of `name`, tracking it if there is room, else [`OTHER`].
    pub(crate) fn resolve(&mut self, name: &Sym, now: u64) -> OpId {
        if let Some(&id) = self.ids.get(name) {
            if let Some(slot) = self.slots[id as usize].as_mut() {
                slot.last_seen = slot.last_seen.max(now);
                slot.period_count += 1;
            }
            return id;
        }
        if self.ids.len() < self.max_tracked {
            return self.track(name.clone(), now, 1);
        }
        self.folded_spans += 1;
        self.count_candidate(name);
        OTHER
    }

    fn track(&mut self, name: Sym, now: u64, count: u64) -> OpId {
        let slot = Slot {
            name: name.clone(),
            last_seen: now,
            period_count: count,
        };
        let id = match self.slots.iter().skip(1).position(Option::is_none) {
            Some(free) => {
                let id = free + 1;
                self.slots[id] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        } as OpId;
        self.candidates.remove(&name);
        self.ids.insert(name, id);
        id
    }

    fn count_candidate(&mut self, name: &Sym) {
        if let Some(count) = self.candidates.get_mut(name) {
            *count += 1;
            return;
        }
        if self.candidates.len() < self.max_candidates {
            self.candidates.insert(name.clone(), 1);
            return;
        }
        // Space-Saving: the newcomer replaces the least counted candidate
        // and inherits its count, which bounds the error of every count.
        if let Some((victim, min)) = self.candidates.iter().min_by_key(|(_, c)| **c).map(|(n, c)| (n.clone(), *c)) {
            self.candidates.remove(&victim);
            self.candidates.insert(name.clone(), min + 1);
        }
    }

    /// Ends a counting period at `now`: evicts operations idle for longer
    /// than `idle_nanos`, promotes busy candidates. Returns the evicted ids,
    /// whose state the caller must drop before they are reused.
    pub(crate) fn end_period(&mut self, now: u64, idle_nanos: u64) -> Vec<OpId> {
        let mut evicted = Vec::new();
        for id in 1..self.slots.len() {
            if self.slots[id]
                .as_ref()
                .is_some_and(|s| s.last_seen.saturating_add(idle_nanos) < now)
            {
                evicted.push(id as OpId);
            }
        }
        let mut candidates: Vec<(Sym, u64)> = self.candidates.drain().collect();
        candidates.sort_unstable_by_key(|c| std::cmp::Reverse(c.1));
        let mut candidates = candidates.into_iter().peekable();
        for id in &evicted {
            self.untrack(*id);
        }
        let mut promoted: Vec<(Sym, u64)> = Vec::new();
        while self.ids.len() < self.max_tracked {
            match candidates.next() {
                Some(candidate) => promoted.push(candidate),
                None => break,
            }
        }
        // Displace the quietest tracked operation by a much busier candidate.
        if let Some((name, count)) = candidates.peek().cloned() {
            let quietest = self
                .slots
                .iter()
                .enumerate()
                .skip(1)
                .filter_map(|(id, s)| s.as_ref().map(|s| (id, s.period_count)))
                .min_by_key(|(_, c)| *c);
            if let Some((id, quiet_count)) = quietest
                && count >= DISPLACE_MIN_SPANS
                && count > quiet_count.saturating_mul(DISPLACE_FACTOR)
            {
                self.untrack(id as OpId);
                evicted.push(id as OpId);
                promoted.push((name, count));
            }
        }
        for (name, count) in promoted {
            self.track(name, now, count);
        }
        for slot in self.slots.iter_mut().flatten() {
            slot.period_count = 0;
        }
        self.evictions += evicted.len() as u64;
        evicted
    }

    fn untrack(&mut self, id: OpId) {
        if let Some(slot) = self.slots[id as usize].take() {
            self.ids.remove(&slot.name);
        }
    }

    pub(crate) fn is_tracked(&self, name: &str) -> bool {
        self.ids.contains_key(name)
    }

    pub(crate) fn name(&self, id: OpId) -> Option<&Sym> {
        self.slots.get(id as usize).and_then(|s| s.as_ref()).map(|s| &s.name)
    }

    /// Tracked operations (not `__other__`).
    pub(crate) fn tracked(&self) -> impl Iterator<Item = (OpId, &Sym)> {
        self.slots
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(id, s)| s.as_ref().map(|s| (id as OpId, &s.name)))
    }

    pub(crate) fn tracked_len(&self) -> usize {
        self.ids.len()
    }

    /// Operations no longer tracked (idle, or displaced by a busier one)
    /// since the table was created: when it moves, names tracked before
    /// may be gone.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Spans folded into `__other__` since the table was created.
    pub(crate) fn folded_spans(&self) -> u64 {
        self.folded_spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Sym {
        Sym::from(s)
    }

    #[test]
    fn folds_past_the_bound() {
        let mut table = OperationTable::new(2);
        assert_ne!(table.resolve(&sym("a"), 1), OTHER);
        assert_ne!(table.resolve(&sym("b"), 1), OTHER);
        assert_eq!(table.resolve(&sym("c"), 1), OTHER);
        assert_eq!(table.folded_spans(), 1);
        assert_eq!(table.tracked_len(), 2);
    }

    #[test]
    fn a_flood_of_unique_names_cannot_lock_out_a_real_endpoint() {
        let mut table = OperationTable::new(10);
        for i in 0..10_000 {
            table.resolve(&sym(&format!("GET /users/{i}")), 1);
        }
        for _ in 0..500 {
            assert_eq!(table.resolve(&sym("POST /checkout"), 2), OTHER);
        }
        // The flood names were each seen once; the endpoint is far busier.
        let evicted = table.end_period(3, u64::MAX);
        assert_eq!(evicted.len(), 1);
        assert_ne!(table.resolve(&sym("POST /checkout"), 4), OTHER);
        assert_eq!(table.tracked_len(), 10, "memory stays bounded");
    }

    #[test]
    fn idle_operations_free_their_slot() {
        let mut table = OperationTable::new(1);
        let a = table.resolve(&sym("a"), 100);
        assert_eq!(table.resolve(&sym("b"), 1000), OTHER);
        let evicted = table.end_period(1000, 500);
        assert_eq!(evicted, vec![a]);
        assert_eq!(
            table.name(a).map(|s| &**s),
            Some("b"),
            "the busiest candidate takes the free slot"
        );
    }

    #[test]
    fn candidate_table_is_bounded() {
        let mut table = OperationTable::new(1);
        table.resolve(&sym("tracked"), 1);
        for i in 0..100_000 {
            table.resolve(&sym(&format!("n{i}")), 1);
        }
        assert!(table.candidates.len() <= 16);
    }
}
