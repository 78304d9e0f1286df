//! `SnapshotMailbox`: where shards leave their analysis snapshots for the
//! task that writes them to the embedded store, and in fleet mode for the
//! fleet sync task.
//!
//! A snapshot is a service's whole state, so only the latest one matters:
//! a flush replaces whatever an earlier flush left unpublished. The mailbox
//! therefore holds at most one snapshot per service however long the
//! fleet's database stalls, which a queue of every flush would not. It
//! closes when the last shard's sender is dropped, after that shard's final
//! flush: the reader writes or publishes what is left and stops. The
//! shards thus never wait on a disk or a database.
//!
//! Each shard also marks when its flush was made, after the flush's
//! snapshots. A take hands over the marks with the snapshots, so once the
//! reader has written what it took, every shard's state as of its mark is
//! written: [`SnapshotMailbox::taken_as_of`] is how current the store is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    slots: Mutex<Slots>,
    notify: Notify,
    senders: AtomicUsize,
}

#[derive(Default)]
struct Slots {
    snapshots: HashMap<String, Vec<u8>>,
    /// Each live sender's last flush mark (0 until its first).
    marks: HashMap<usize, u64>,
    next_sender: usize,
    /// The oldest mark at the last take.
    taken_as_of: u64,
}

impl Slots {
    fn oldest_mark(&self) -> u64 {
        self.marks.values().copied().min().unwrap_or(0)
    }
}

/// The sync task's end.
pub(crate) struct SnapshotMailbox {
    shared: Arc<Shared>,
}

/// A shard's end; the mailbox closes when every sender is dropped.
pub(crate) struct SnapshotSender {
    shared: Arc<Shared>,
    id: usize,
}

impl SnapshotMailbox {
    pub(crate) fn new() -> SnapshotMailbox {
        SnapshotMailbox {
            shared: Arc::new(Shared::default()),
        }
    }

    pub(crate) fn sender(&self) -> SnapshotSender {
        let id = {
            let mut slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
            let id = slots.next_sender;
            slots.next_sender += 1;
            slots.marks.insert(id, 0);
            id
        };
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        SnapshotSender {
            shared: self.shared.clone(),
            id,
        }
    }

    /// The oldest of the senders' flush marks when the last
    /// [`take`](Self::take) ran (0 while a sender has not flushed yet):
    /// once what that take returned is written, every shard's state as of
    /// this mark is.
    pub(crate) fn taken_as_of(&self) -> u64 {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner()).taken_as_of
    }

    /// The snapshots left since the last call, by service, once there are
    /// any or the oldest flush mark moved (then possibly none); `None` once
    /// every sender is gone and nothing is left.
    pub(crate) async fn take(&self) -> Option<HashMap<String, Vec<u8>>> {
        loop {
            let (taken, moved) = {
                let mut slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
                let oldest = slots.oldest_mark();
                let moved = oldest > slots.taken_as_of;
                slots.taken_as_of = slots.taken_as_of.max(oldest);
                (std::mem::take(&mut slots.snapshots), moved)
            };
            if !taken.is_empty() || moved {
                return Some(taken);
            }
            if self.shared.senders.load(Ordering::SeqCst) == 0 {
                return None;
            }
            // A put or a drop between the check and here left a permit.
            self.shared.notify.notified().await;
        }
    }
}

impl Default for SnapshotMailbox {
    fn default() -> Self {
        SnapshotMailbox::new()
    }
}

impl SnapshotSender {
    /// Leaves `service`'s snapshot; true if it replaced one not yet taken.
    pub(crate) fn put(&self, service: String, snapshot: Vec<u8>) -> bool {
        let replaced = self
            .shared
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshots
            .insert(service, snapshot)
            .is_some();
        self.shared.notify.notify_one();
        replaced
    }

    /// Marks a flush made at `mark` (any increasing measure, such as the
    /// wall clock) whose snapshots are all put.
    pub(crate) fn flushed(&self, mark: u64) {
        let mut slots = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.marks.insert(self.id, mark);
        drop(slots);
        // A flush of no service still moves the mark along.
        self.shared.notify.notify_one();
    }
}

impl Drop for SnapshotSender {
    fn drop(&mut self) {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner()).marks.remove(&self.id);
        self.shared.senders.fetch_sub(1, Ordering::SeqCst);
        self.shared.notify.notify_one();
    }
}

/// Writes what the shards leave in `mailbox` to the embedded store, on
/// the blocking pool (a redb commit syncs to disk), until the mailbox
/// closes after every shard's final flush.
///
/// `written_as_of` is set, in seconds, to the mark (unix nanoseconds) as
/// of which every shard's state is written, once a take's snapshots are
/// all written; a failed write holds it back.
pub(crate) async fn write_to_store(
    mailbox: SnapshotMailbox,
    store: Arc<crate::store::EmbeddedStore>,
    written_as_of: prometheus::Gauge,
) {
    while let Some(snapshots) = mailbox.take().await {
        let as_of = mailbox.taken_as_of();
        let store = store.clone();
        let written = crate::blocking::off_runtime("writing the analysis snapshots", move || {
            let mut written = true;
            for (key, bytes) in snapshots {
                if let Err(error) = store.put_snapshot(&key, &bytes) {
                    tracing::error!(%error, service = %key.replace('\u{1f}', " "), "cannot write the analysis snapshot");
                    written = false;
                }
            }
            written
        })
        .await;
        if written == Some(true) && as_of > 0 {
            written_as_of.set(as_of as f64 / 1e9);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_later_snapshot_replaces_an_earlier_one_and_the_last_drop_closes() {
        let mailbox = SnapshotMailbox::new();
        let (a, b) = (mailbox.sender(), mailbox.sender());
        assert!(!a.put("cart".into(), b"1".to_vec()));
        assert!(a.put("cart".into(), b"2".to_vec()), "the earlier one was superseded");
        assert!(!b.put("pay".into(), b"3".to_vec()));
        let taken = mailbox.take().await.expect("open");
        assert_eq!(taken.len(), 2);
        assert_eq!(taken["cart"], b"2");
        drop(a);
        b.put("pay".into(), b"4".to_vec());
        drop(b);
        assert_eq!(mailbox.take().await.expect("what was left")["pay"], b"4", "a final flush is not lost");
        assert!(mailbox.take().await.is_none(), "closed");
    }

    #[tokio::test]
    async fn a_take_is_as_current_as_the_oldest_flush_mark() {
        let mailbox = SnapshotMailbox::new();
        let (a, b) = (mailbox.sender(), mailbox.sender());
        a.put("cart".into(), b"1".to_vec());
        a.flushed(10);
        assert_eq!(mailbox.take().await.expect("open")["cart"], b"1");
        assert_eq!(mailbox.taken_as_of(), 0, "b has not flushed yet");
        b.flushed(12);
        assert!(mailbox.take().await.expect("the oldest mark moved").is_empty(), "b flushed no service");
        assert_eq!(mailbox.taken_as_of(), 10);
        // a's next flush is under way: its snapshot is taken, not its mark.
        a.put("cart".into(), b"2".to_vec());
        assert_eq!(mailbox.take().await.expect("open")["cart"], b"2");
        assert_eq!(mailbox.taken_as_of(), 10);
        a.flushed(20);
        b.flushed(21);
        assert!(mailbox.take().await.expect("moved").is_empty());
        assert_eq!(mailbox.taken_as_of(), 20);
        drop(a);
        assert!(mailbox.take().await.expect("moved").is_empty());
        assert_eq!(mailbox.taken_as_of(), 21, "a finished: b's mark is the oldest");
        drop(b);
        assert!(mailbox.take().await.is_none(), "closed");
        assert_eq!(mailbox.taken_as_of(), 21, "never moves back");
    }

    #[tokio::test]
    async fn take_waits_for_a_put() {
        let mailbox = Arc::new(SnapshotMailbox::new());
        let sender = mailbox.sender();
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.take().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        sender.put("cart".into(), b"1".to_vec());
        assert_eq!(waiting.await.expect("no panic").expect("open")["cart"], b"1");
    }
}
