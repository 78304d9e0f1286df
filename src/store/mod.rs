//! Store: what must survive a restart — drift events, the alert outbox, and
//! snapshots of the analysis state (baselines, peer sets, timelines).
//!
//! The embedded store is a redb file under `store.path`. Every write is a
//! committed, fsynced transaction, so an event or outbox entry that was
//! acknowledged is never lost, even to kill -9. The file carries a schema
//! version: a newer or corrupt file is an error that names it, never a
//! silent reset.
//!
//! A write that fails (a full disk) leaves the store *degraded*, never
//! silently broken: the events and alerts it could not write are kept in
//! memory (bounded), [`EmbeddedStore::health`] says why for `/readyz` and
//! the metrics, and [`EmbeddedStore::recover`] — run every second —
//! reopens the database (redb refuses every write after an I/O error) and
//! writes what was kept once space returns.


use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::clock::Timestamp;
use crate::detect::event::{Deploy, DriftEvent, EventState};
use crate::telemetry::metrics::StoreMetrics;

/// The schema this build reads and writes.
pub(crate) const SCHEMA_VERSION: u64 = 1;
pub(crate) const FILE_NAME: &str = "driftwatch.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the store directory {path}: {source}; set store.path (DRIFTWATCH_STORE__PATH) to a writable directory"
    )]
    Directory { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot open the store {path}: {message}; if the file is damaged, start with `driftwatch run --reset-store` to move it aside and start afresh (its events and pending alerts stay in the moved file)"
    )]
    Open { path: PathBuf, message: String },
    #[error(
        "the store {path} has schema version {found}, newer than this driftwatch understands ({SCHEMA_VERSION}); run a newer driftwatch or point store.path elsewhere"
    )]
    NewerSchema { path: PathBuf, found: u64 },
    #[error("store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("store {path} cannot be written ({message}); what it could not write is kept in memory and written once it recovers")]
    Deferred { path: PathBuf, message: String },
    #[error("store {path}: a stored record is unreadable ({message})")]
    Decode { path: PathBuf, message: String },
}

/// What a notification tells: a drift fired or resolved, or a revision
/// began serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notification {
    Firing,
    Resolved,
    Deploy,
}

impl Notification {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Notification::Firing => "firing",
            Notification::Resolved => "resolved",
            Notification::Deploy => "deploy",
        }
    }
}

impl From<EventState> for Notification {
    fn from(state: EventState) -> Notification {
        match state {
            EventState::Firing => Notification::Firing,
            EventState::Resolved => Notification::Resolved,
        }
    }
}

/// The subject of an outbox entry. Stored flattened into the entry:
/// `status` and `event` for a drift (as entries always were), `deploy`
/// for a deploy marker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
#[expect(clippy::large_enum_variant, reason = "one per queued alert, never in a hot path; boxing would change nothing a reader sees")]
pub(crate) enum Notice {
    Drift { status: EventState, event: DriftEvent },
    Deploy { deploy: Deploy },
}

impl Notice {
    pub(crate) fn notification(&self) -> Notification {
        match self {
            Notice::Drift { status, .. } => Notification::from(*status),
            Notice::Deploy { .. } => Notification::Deploy,
        }
    }

    /// The id receivers and the fleet deduplicate on: the event's, or the
    /// deploy's.
    pub(crate) fn id(&self) -> &str {
        match self {
            Notice::Drift { event, .. } => &event.id,
            Notice::Deploy { deploy } => &deploy.id,
        }
    }

    pub(crate) fn service_key(&self) -> crate::extract::ServiceKey {
        match self {
            Notice::Drift { event, .. } => event.service_key(),
            Notice::Deploy { deploy } => deploy.service_key(),
        }
    }

    pub(crate) fn revision(&self) -> &str {
        match self {
            Notice::Drift { event, .. } => &event.revision,
            Notice::Deploy { deploy } => &deploy.revision,
        }
    }

    pub(crate) fn event(&self) -> Option<&DriftEvent> {
        match self {
            Notice::Drift { event, .. } => Some(event),
            Notice::Deploy { .. } => None,
        }
    }
}

/// One pending delivery of an alert to one sink.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OutboxEntry {
    /// Unique, increasing: the delivery id sinks can deduplicate on.
    pub id: u64,
    /// Index of the sink in the configuration, with its kind for safety
    /// when the configuration changes between runs.
    pub sink: String,
    pub fingerprint: String,
    #[serde(flatten)]
    pub notice: Notice,
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    pub next_attempt_ms: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// 0 for an event's notification; repeats of a firing alert
    /// (Alertmanager refreshes) carry later rounds, so a fleet arbitrates
    /// each repeat on its own.
    #[serde(default)]
    pub round: u64,
}

/// Events kept in memory while the store cannot be written, at most.
const MAX_PENDING_EVENTS: usize = 10_000;
/// Alert deliveries kept in memory while the store cannot be written.
const MAX_PENDING_OUTBOX: usize = 50_000;

/// The embedded store.
pub struct EmbeddedStore {
    /// `None` only between closing a failed database and reopening it.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// Set by a failed operation: the database is reopened by `recover`.
    broken: AtomicBool,
    /// Why the store is degraded, while it is.
    last_error: Mutex<Option<String>>,
    /// Failed operations since start.
    errors: AtomicU64,
    /// Events and deliveries not written yet, by id / in order.
    pending_events: Mutex<BTreeMap<String, DriftEvent>>,
    pending_outbox: Mutex<Vec<OutboxEntry>>,
    /// Kept items dropped because the memory bound was reached.
    dropped: AtomicU64,
}

/// What `health` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreHealth {
    /// Why writes fail, while they do.
    pub error: Option<String>,
    /// Events and alert deliveries waiting in memory to be written.
    pub pending: usize,
    /// Failed operations since start.
    pub errors: u64,
    /// Kept items given up because the memory bound was reached.
    pub dropped: u64,
}

impl StoreHealth {
    /// Brings the store's gauges and counters up to this.
    pub(crate) fn observe(&self, metrics: &StoreMetrics) {
        metrics.degraded.set(i64::from(self.error.is_some()));
        metrics.pending.set(self.pending as i64);
        metrics.errors.inc_by(self.errors.saturating_sub(metrics.errors.get()));
        metrics.dropped.inc_by(self.dropped.saturating_sub(metrics.dropped.get()));
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) `dir/driftwatch.redb`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        // redb would lay out a fresh database in an empty file: an empty
        // store file was truncated, and starting afresh would hide that.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::Open {
                path: path.clone(),
                message: "the file is empty (truncated?)".into(),
            });
        }
        let damaged = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        // A damaged page can make redb panic rather than fail: whatever
        // happens while opening and checking, the answer is an error that
        // names the file.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut db = open_database(&path).map_err(|e| damaged(e.to_string()))?;
            match db.check_integrity() {
                Ok(true) => {}
                Ok(false) => tracing::warn!(path = %path.display(), "the store failed its integrity check and was repaired"),
                Err(e) => return Err(damaged(format!("integrity check failed: {e}"))),
            }
            let store = EmbeddedStore {
                db: RwLock::new(Some(db)),
                path: path.clone(),
                broken: AtomicBool::new(false),
                last_error: Mutex::new(None),
                errors: AtomicU64::new(0),
                pending_events: Mutex::new(BTreeMap::new()),
                pending_outbox: Mutex::new(Vec::new()),
                dropped: AtomicU64::new(0),
            };
            store.check_schema()?;
            // Every record must read back now, not fail later.
            store.load_events()?;
            store.outbox()?;
            store.snapshots()?;
            Ok(store)
        }));
        opened.unwrap_or_else(|_| Err(damaged("the file is damaged (reading it failed)".into())))
    }

    /// Moves a damaged store file aside (to `driftwatch.redb.damaged-<unix
    /// seconds>`) so the next open starts afresh; returns where it went, or
    /// `None` when there was no file.
    pub fn move_aside(dir: &Path) -> Result<Option<PathBuf>, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let stamp = crate::clock::since_epoch().as_secs();
        let aside = dir.join(format!("{FILE_NAME}.damaged-{stamp}"));
        std::fs::rename(&path, &aside).map_err(|e| StoreError::Io {
            path: path.clone(),
            message: format!("cannot move it aside to {}: {e}", aside.display()),
        })?;
        Ok(Some(aside))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the open database; a failure marks the store degraded.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let result = {
            let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(db) => f(db),
                None => Err(self.io("the database is closed after a failure and not reopened yet")),
            }
        };
        if let Err(error @ StoreError::Io { .. }) = &result {
            self.failed(error);
        }
        result
    }

    fn failed(&self, error: &StoreError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.broken.store(true, Ordering::Release);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none() {
            // Logged once per outage; `health` reports it until recovery.
            tracing::error!(%error, "the store cannot be written: events and alerts are kept in memory until it recovers");
        }
        *last = Some(error.to_string());
    }

    /// Whether the store writes, and what waits in memory.
    pub(crate) fn health(&self) -> StoreHealth {
        let pending = self.pending_events.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self.pending_outbox.lock().unwrap_or_else(|e| e.into_inner()).len();
        StoreHealth {
            error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            pending,
            errors: self.errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// After a failure: reopens the database (redb refuses all writes after
    /// an I/O error) and writes the events and deliveries kept in memory.
    /// Blocking: run it off the async threads.
    pub(crate) fn recover(&self) {
        if !self.broken.load(Ordering::Acquire) {
            return;
        }
        {
            let mut guard = self.db.write().unwrap_or_else(|e| e.into_inner());
            // The old handle must close before the file can open again.
            guard.take();
            match open_database(&self.path) {
                Ok(db) => *guard = Some(db),
                Err(error) => {
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("cannot reopen {}: {error}", self.path.display()));
                    return;
                }
            }
        }
        self.broken.store(false, Ordering::Release);
        let events: Vec<DriftEvent> = self
            .pending_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        if !events.is_empty() && self.put_events(&events).is_err() {
            return;
        }
        let mut entries = std::mem::take(&mut *self.pending_outbox.lock().unwrap_or_else(|e| e.into_inner()));
        if !entries.is_empty() && self.enqueue(&mut entries).is_err() {
            return;
        }
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if last.take().is_some() {
            tracing::warn!(
                events = events.len(),
                "the store recovered; what was kept in memory is written"
            );
        }
    }

    fn deferred(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Io { path, message } => StoreError::Deferred { path, message },
            other => other,
        }
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn decode(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Decode {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        self.with_db(|db| self.check_schema_in(db))
    }

    fn check_schema_in(&self, db: &Database) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            let found = meta.get("schema_version").map_err(|e| self.io(e))?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found: v,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(|e| self.io(e))?;
                }
            }
            txn.open_table(EVENTS).map_err(|e| self.io(e))?;
            txn.open_table(OUTBOX).map_err(|e| self.io(e))?;
            txn.open_table(SNAPSHOTS).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Stores (or replaces) events. When the store cannot be written, they
    /// are kept in memory (`Deferred`) and written by `recover`.
    pub(crate) fn put_events(&self, events: &[DriftEvent]) -> Result<(), StoreError> {
        let result = self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            {
                let mut table = txn.open_table(EVENTS).map_err(|e| self.io(e))?;
                for event in events {
                    let bytes = serde_json::to_vec(&StoredEvent::from(event)).map_err(|e| self.io(e))?;
                    table.insert(event.id.as_str(), bytes.as_slice()).map_err(|e| self.io(e))?;
                }
            }
            txn.commit().map_err(|e| self.io(e))
        });
        let mut pending = self.pending_events.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                for event in events {
                    pending.remove(&event.id);
                }
                Ok(())
            }
            Err(error) => {
                for event in events {
                    if pending.len() >= MAX_PENDING_EVENTS && !pending.contains_key(&event.id) {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    pending.insert(event.id.clone(), event.clone());
                }
                Err(self.deferred(error))
            }
        }
    }

    pub(crate) fn load_events(&self) -> Result<Vec<DriftEvent>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.io(e))?;
            let table = txn.open_table(EVENTS).map_err(|e| self.io(e))?;
            let mut events = Vec::new();
            for row in table.iter().map_err(|e| self.io(e))? {
                let (_, value) = row.map_err(|e| self.io(e))?;
                let stored: StoredEvent = serde_json::from_slice(value.value()).map_err(|e| self.decode(e))?;
                events.push(stored.into());
            }
            Ok(events)
        })
    }

    /// Removes events by id (retention).
    pub(crate) fn delete_events(&self, ids: &[String]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            {
                let mut table = txn.open_table(EVENTS).map_err(|e| self.io(e))?;
                for id in ids {
                    table.remove(id.as_str()).map_err(|e| self.io(e))?;
                }
            }
            txn.commit().map_err(|e| self.io(e))
        })
    }

    /// Appends entries, assigning their ids, in one durable transaction.
    /// When the store cannot be written, they are kept in memory
    /// (`Deferred`) and enqueued by `recover`.
    pub(crate) fn enqueue(&self, entries: &mut [OutboxEntry]) -> Result<(), StoreError> {
        let result = self.with_db(|db| self.enqueue_in(db, entries));
        if let Err(error) = result {
            let mut pending = self.pending_outbox.lock().unwrap_or_else(|e| e.into_inner());
            for entry in entries.iter() {
                if pending.len() >= MAX_PENDING_OUTBOX {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                pending.push(entry.clone());
            }
            return Err(self.deferred(error));
        }
        Ok(())
    }

    fn enqueue_in(&self, db: &Database, entries: &mut [OutboxEntry]) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(|e| self.io(e))?;
        {
            // Ids never repeat, even after the outbox empties: receivers
            // deduplicate on them.
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            let mut next = meta.get("outbox_next_id").map_err(|e| self.io(e))?.map_or(1, |v| v.value());
            let mut table = txn.open_table(OUTBOX).map_err(|e| self.io(e))?;
            for entry in entries.iter_mut() {
                entry.id = next;
                next += 1;
                let bytes = serde_json::to_vec(&StoredOutboxEntry::from(&*entry)).map_err(|e| self.io(e))?;
                table.insert(entry.id, bytes.as_slice()).map_err(|e| self.io(e))?;
            }
            meta.insert("outbox_next_id", next).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Every pending entry, oldest first.
    pub(crate) fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.io(e))?;
            let table = txn.open_table(OUTBOX).map_err(|e| self.io(e))?;
            let mut entries = Vec::new();
            for row in table.iter().map_err(|e| self.io(e))? {
                let (_, value) = row.map_err(|e| self.io(e))?;
                let stored: StoredOutboxEntry = serde_json::from_slice(value.value()).map_err(|e| self.decode(e))?;
                entries.push(stored.into());
            }
            Ok(entries)
        })
    }

    pub(crate) fn outbox_len(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.io(e))?;
            let table = txn.open_table(OUTBOX).map_err(|e| self.io(e))?;
            table.len().map_err(|e| self.io(e))
        })
    }

    /// Records a failed attempt (or any other change) of existing entries.
    pub(crate) fn update_outbox(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            {
                let mut table = txn.open_table(OUTBOX).map_err(|e| self.io(e))?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&StoredOutboxEntry::from(entry)).map_err(|e| self.io(e))?;
                    table.insert(entry.id, bytes.as_slice()).map_err(|e| self.io(e))?;
                }
            }
            txn.commit().map_err(|e| self.io(e))
        })
    }

    /// Removes delivered (or dead) entries.
    pub(crate) fn remove_outbox(&self, ids: &[u64]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            {
                let mut table = txn.open_table(OUTBOX).map_err(|e| self.io(e))?;
                for id in ids {
                    table.remove(*id).map_err(|e| self.io(e))?;
                }
            }
            txn.commit().map_err(|e| self.io(e))
        })
    }

    /// Replaces the analysis snapshot stored under `key`.
    pub(crate) fn put_snapshot(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            {
                let mut table = txn.open_table(SNAPSHOTS).map_err(|e| self.io(e))?;
                table.insert(key, bytes).map_err(|e| self.io(e))?;
            }
            txn.commit().map_err(|e| self.io(e))
        })
    }

    pub(crate) fn snapshots(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.io(e))?;
            let table = txn.open_table(SNAPSHOTS).map_err(|e| self.io(e))?;
            let mut out = Vec::new();
            for row in table.iter().map_err(|e| self.io(e))? {
                let (key, value) = row.map_err(|e| self.io(e))?;
                out.push((key.value().to_owned(), value.value().to_vec()));
            }
            Ok(out)
        })
    }
}

/// Memory redb may use to cache pages, reads and pending writes alike.
/// Its default (1 GiB) lets the cache grow with the file: every service's
/// analysis snapshot, rewritten each flush, would stay resident. Writes are
/// one key at a time and reads happen at start-up, so a small cache costs
/// nothing but a few page reads.
const CACHE_BYTES: usize = 8 << 20;

/// Opens (or creates) the redb file at `path` with a bounded cache.
fn open_database(path: &std::path::Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new().set_cache_size(CACHE_BYTES).create(path)
}

/// An event as stored, in either store.
pub(crate) fn encode_event(event: &DriftEvent) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&StoredEvent::from(event)).map_err(|e| e.to_string())
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<DriftEvent, String> {
    serde_json::from_slice::<StoredEvent>(bytes)
        .map(DriftEvent::from)
        .map_err(|e| e.to_string())
}

/// Events as stored: the public JSON plus the event times the API omits.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEvent {
    #[serde(flatten)]
    event: DriftEvent,
    onset_unix_nanos: u64,
    detected_unix_nanos: u64,
}

impl From<&DriftEvent> for StoredEvent {
    fn from(event: &DriftEvent) -> Self {
        StoredEvent {
            event: event.clone(),
            onset_unix_nanos: event.onset.unix_nanos(),
            detected_unix_nanos: event.detected_at.unix_nanos(),
        }
    }
}

impl From<StoredEvent> for DriftEvent {
    fn from(stored: StoredEvent) -> Self {
        let mut event = stored.event;
        event.onset = Timestamp::from_unix_nanos(stored.onset_unix_nanos);
        event.detected_at = Timestamp::from_unix_nanos(stored.detected_unix_nanos);
        event
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredOutboxEntry {
    #[serde(flatten)]
    entry: OutboxEntry,
    onset_unix_nanos: u64,
    detected_unix_nanos: u64,
}

impl From<&OutboxEntry> for StoredOutboxEntry {
    fn from(entry: &OutboxEntry) -> Self {
        let event = entry.notice.event();
        StoredOutboxEntry {
            entry: entry.clone(),
            onset_unix_nanos: event.map_or(0, |e| e.onset.unix_nanos()),
            detected_unix_nanos: event.map_or(0, |e| e.detected_at.unix_nanos()),
        }
    }
}

impl From<StoredOutboxEntry> for OutboxEntry {
    fn from(stored: StoredOutboxEntry) -> Self {
        let mut entry = stored.entry;
        if let Notice::Drift { event, .. } = &mut entry.notice {
            event.onset = Timestamp::from_unix_nanos(stored.onset_unix_nanos);
            event.detected_at = Timestamp::from_unix_nanos(stored.detected_unix_nanos);
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> DriftEvent {
        let mut event = crate::detect::event::example_event(id, 22);
        event.onset = Timestamp::from_unix_nanos(11);
        event
    }

    #[test]
    fn events_and_outbox_survive_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store.put_events(&[event("a"), event("b")]).expect("put");
            let entry = |notice| OutboxEntry {
                id: 0,
                sink: "webhook[0]".into(),
                fingerprint: "fp".into(),
                notice,
                attempts: 0,
                created_at_ms: 1,
                next_attempt_ms: 1,
                last_error: None,
                round: 0,
            };
            let deploy = Deploy::new(&crate::extract::ServiceKey::new("s", None), "r2", Some("r1"), None, 5);
            let mut entries = vec![
                entry(Notice::Drift {
                    status: EventState::Firing,
                    event: event("a"),
                }),
                entry(Notice::Deploy { deploy }),
            ];
            store.enqueue(&mut entries).expect("enqueue");
            assert_eq!((entries[0].id, entries[1].id), (1, 2));
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let events = store.load_events().expect("load");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].detected_at.unix_nanos(), 22, "event times survive to the nanosecond");
        let outbox = store.outbox().expect("outbox");
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox[0].notice.event().map(|e| e.onset.unix_nanos()), Some(11));
        assert_eq!(outbox[1].notice.notification(), Notification::Deploy);
        assert_eq!(outbox[1].notice.revision(), "r2");
        store.remove_outbox(&[1, 2]).expect("remove");
        assert_eq!(store.outbox_len().expect("len"), 0);
        let mut more = outbox.clone();
        store.enqueue(&mut more).expect("enqueue");
        assert_eq!(more[0].id, 3, "ids never repeat");
    }

    #[test]
    fn an_outbox_entry_keeps_the_shape_it_always_had() {
        let drift = OutboxEntry {
            id: 7,
            sink: "webhook[0]".into(),
            fingerprint: "fp".into(),
            notice: Notice::Drift {
                status: EventState::Resolved,
                event: event("a"),
            },
            attempts: 2,
            created_at_ms: 1,
            next_attempt_ms: 1,
            last_error: None,
            round: 0,
        };
        let json = serde_json::to_value(StoredOutboxEntry::from(&drift)).expect("json");
        assert_eq!(json["status"], "resolved", "drift entries are stored as before: {json}");
        assert_eq!(json["event"]["id"], "a");
        assert!(json.get("notice").is_none() && json.get("deploy").is_none());
        let back: StoredOutboxEntry = serde_json::from_value(json).expect("an entry written before deploy markers");
        assert_eq!(OutboxEntry::from(back), drift);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"this is not a redb file, just text that is long enough",
        )
        .expect("write");
        let err = EmbeddedStore::open(dir.path())
            .err()
            .expect("corrupt file refused")
            .to_string();
        assert!(err.contains(FILE_NAME), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store
                .with_db(|db| {
                    let txn = db.begin_write().expect("txn");
                    txn.open_table(META)
                        .expect("meta")
                        .insert("schema_version", SCHEMA_VERSION + 1)
                        .expect("insert");
                    txn.commit().expect("commit");
                    Ok(())
                })
                .expect("write");
        }
        let err = EmbeddedStore::open(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("newer") && err.contains(FILE_NAME), "{err}");
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = EmbeddedStore::open(&file.join("sub")).err().expect("refused").to_string();
        assert!(err.contains("store.path"), "{err}");
    }
}
