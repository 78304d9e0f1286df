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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    slots: Mutex<HashMap<String, Vec<u8>>>,
    notify: Notify,
    senders: AtomicUsize,
}

/// The sync task's end.
pub(crate) struct SnapshotMailbox {
    shared: Arc<Shared>,
}

/// A shard's end; the mailbox closes when every sender is dropped.
pub(crate) struct SnapshotSender {
    shared: Arc<Shared>,
}

impl SnapshotMailbox {
    pub(crate) fn new() -> SnapshotMailbox {
        SnapshotMailbox {
            shared: Arc::new(Shared::default()),
        }
    }

    pub(crate) fn sender(&self) -> SnapshotSender {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        SnapshotSender {
            shared: self.shared.clone(),
        }
    }

    /// The snapshots left since the last call, by service, once there are
    /// any; `None` once every sender is gone and nothing is left.
    pub(crate) async fn take(&self) -> Option<HashMap<String, Vec<u8>>> {
        loop {
            let taken = std::mem::take(&mut *self.shared.slots.lock().unwrap_or_else(|e| e.into_inner()));
            if !taken.is_empty() {
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
            .insert(service, snapshot)
            .is_some();
        self.shared.notify.notify_one();
        replaced
    }
}

impl Drop for SnapshotSender {
    fn drop(&mut self) {
        self.shared.senders.fetch_sub(1, Ordering::SeqCst);
        self.shared.notify.notify_one();
    }
}

/// Writes what the shards leave in `mailbox` to the embedded store, on
/// the blocking pool (a redb commit syncs to disk), until the mailbox
/// closes after every shard's final flush.
pub(crate) async fn write_to_store(mailbox: SnapshotMailbox, store: Arc<crate::store::EmbeddedStore>) {
    while let Some(snapshots) = mailbox.take().await {
        let store = store.clone();
        crate::blocking::off_runtime("writing the analysis snapshots", move || {
            for (key, bytes) in snapshots {
                if let Err(error) = store.put_snapshot(&key, &bytes) {
                    tracing::error!(%error, service = %key.replace('\u{1f}', " "), "cannot write the analysis snapshot");
                }
            }
        })
        .await;
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
