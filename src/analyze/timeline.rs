//! `RevisionTimeline`: which revisions of a service ran, when (event time),
//! and how much traffic each served. A revision's first appearance is a
//! deploy; the revision that ran before it is its baseline.

use std::collections::HashMap;

use crate::extract::Sym;

pub(crate) type RevId = u32;

#[derive(Debug, Clone)]
pub(crate) struct RevisionEntry {
    pub id: RevId,
    pub revision: Sym,
    pub first_seen_unix_nanos: u64,
    pub last_seen_unix_nanos: u64,
    pub spans: u64,
    /// `vcs.repository.url.full` of the revision's spans, when they name
    /// their repository.
    pub repository: Option<Sym>,
}

pub(crate) struct RevisionTimeline {
    ids: HashMap<Sym, RevId>,
    /// Ordered by first appearance.
    entries: Vec<RevisionEntry>,
    next_id: RevId,
    max_revisions: usize,
}

impl RevisionTimeline {
    pub(crate) fn new(max_revisions: usize) -> RevisionTimeline {
        RevisionTimeline {
            ids: HashMap::new(),
            entries: Vec::new(),
            next_id: 0,
            max_revisions: max_revisions.max(2),
        }
    }

    /// Records a span of `revision`; returns its id and, when this made the
    /// timeline drop its oldest revision, that revision's id.
    pub(crate) fn observe(&mut self, revision: &Sym, start: u64, end: u64) -> (RevId, Option<RevId>) {
        self.extend(revision, start, end, 1)
    }

    /// Widens a revision's known lifetime to `start..end` (creating it if
    /// needed) and adds `spans` to its count. Other replicas' revisions come
    /// in this way, with no spans of this replica.
    pub(crate) fn extend(&mut self, revision: &Sym, start: u64, end: u64, spans: u64) -> (RevId, Option<RevId>) {
        if let Some(&id) = self.ids.get(revision) {
            if let Some(index) = self.entries.iter().rposition(|e| e.id == id) {
                let entry = &mut self.entries[index];
                entry.last_seen_unix_nanos = entry.last_seen_unix_nanos.max(end);
                entry.spans += spans;
                if start < entry.first_seen_unix_nanos {
                    // An earlier first appearance can change the order.
                    let mut entry = self.entries.remove(index);
                    entry.first_seen_unix_nanos = start;
                    let at = self.entries.partition_point(|e| e.first_seen_unix_nanos <= start);
                    self.entries.insert(at, entry);
                }
            }
            return (id, None);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.ids.insert(revision.clone(), id);
        let entry = RevisionEntry {
            id,
            revision: revision.clone(),
            first_seen_unix_nanos: start,
            last_seen_unix_nanos: end,
            spans,
            repository: None,
        };
        let at = self.entries.partition_point(|e| e.first_seen_unix_nanos <= start);
        self.entries.insert(at, entry);
        let mut dropped = None;
        if self.entries.len() > self.max_revisions {
            // Drop the revision that stopped running longest ago.
            if let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.id != id)
                .min_by_key(|(_, e)| e.last_seen_unix_nanos)
                .map(|(i, _)| i)
            {
                let entry = self.entries.remove(oldest);
                self.ids.remove(&entry.revision);
                dropped = Some(entry.id);
            }
        }
        (id, dropped)
    }

    /// Re-creates an entry from a snapshot.
    pub(crate) fn restore(&mut self, revision: &Sym, first_seen: u64, last_seen: u64, spans: u64) {
        let (id, _) = self.observe(revision, first_seen, last_seen);
        if let Some(entry) = self.entries.iter_mut().find(|e| e.id == id) {
            entry.spans = spans;
        }
    }

    /// Whether a revision last seen at `last_seen` would stay in a full
    /// timeline rather than be the one dropped.
    pub(crate) fn has_room_for(&self, last_seen: u64) -> bool {
        self.entries.len() < self.max_revisions || self.entries.iter().any(|e| e.last_seen_unix_nanos < last_seen)
    }

    /// Notes the repository a revision's spans name; the first one named
    /// stays.
    pub(crate) fn note_repository(&mut self, id: RevId, repository: &Sym) {
        if let Some(entry) = self.entries.iter_mut().rev().find(|e| e.id == id)
            && entry.repository.is_none()
        {
            entry.repository = Some(repository.clone());
        }
    }

    pub(crate) fn id_of(&self, revision: &str) -> Option<RevId> {
        self.ids.get(revision).copied()
    }

    pub(crate) fn get(&self, id: RevId) -> Option<&RevisionEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Revisions in order of first appearance.
    pub(crate) fn entries(&self) -> &[RevisionEntry] {
        &self.entries
    }

    /// Revisions that appeared before `id`, most recent first: baseline
    /// candidates.
    pub(crate) fn before(&self, id: RevId) -> impl Iterator<Item = &RevisionEntry> {
        let position = self.entries.iter().position(|e| e.id == id).unwrap_or(0);
        self.entries[..position].iter().rev()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_first_appearance_and_bounds_size() {
        let mut timeline = RevisionTimeline::new(3);
        let (a, _) = timeline.observe(&Sym::from("a"), 10, 11);
        let (b, _) = timeline.observe(&Sym::from("b"), 20, 21);
        timeline.observe(&Sym::from("a"), 30, 31);
        let (c, _) = timeline.observe(&Sym::from("c"), 40, 41);
        assert_eq!(timeline.before(c).map(|e| e.id).collect::<Vec<_>>(), vec![b, a]);
        let (_, dropped) = timeline.observe(&Sym::from("d"), 50, 51);
        assert_eq!(dropped, Some(b), "b stopped running first");
        assert_eq!(timeline.entries().len(), 3);
        assert_eq!(timeline.get(a).map(|e| e.spans), Some(2));
    }

    #[test]
    fn a_revision_learnt_from_elsewhere_takes_its_place_in_the_order() {
        let mut timeline = RevisionTimeline::new(5);
        let (r2, _) = timeline.observe(&Sym::from("r2"), 100, 110);
        let (r1, _) = timeline.extend(&Sym::from("r1"), 10, 90, 0);
        assert_eq!(timeline.before(r2).map(|e| e.id).collect::<Vec<_>>(), vec![r1]);
        assert_eq!(timeline.get(r1).map(|e| e.spans), Some(0));
        timeline.extend(&Sym::from("r2"), 5, 50, 0);
        assert_eq!(
            timeline.before(r1).map(|e| e.id).collect::<Vec<_>>(),
            vec![r2],
            "r2 ran earlier elsewhere"
        );
        assert_eq!(
            timeline
                .get(r2)
                .map(|e| (e.first_seen_unix_nanos, e.last_seen_unix_nanos, e.spans)),
            Some((5, 110, 1))
        );
    }
}
