//! `FleetStore`: the PostgreSQL store shared by every replica of a service.
//!
//! Sidecars come and go with their pods, so in fleet mode what must outlive
//! a pod lives in one database:
//!
//! * **snapshots and aggregates** — each replica publishes its analysis
//!   snapshot per service under its own name, and in the same transaction
//!   swaps its contribution in the service's aggregate (the sum of every
//!   replica's snapshot: histograms add). A replica reads one aggregate per
//!   service and takes its own snapshot back out, so a pod of revision R
//!   finds R-1's baseline at a cost that does not grow with the replicas.
//!   A retried publish replaces, it never adds twice;
//! * **events** — one row per drift episode, at most one firing per
//!   fingerprint (a partial unique index), so ten replicas detecting the
//!   same drift share one event. A replica taking part records it in
//!   `event_replicas`; the event resolves when no live replica still sees
//!   it firing;
//! * **deliveries** — before a replica sends an alert it claims the
//!   (event, status, sink, round) row with a lease; a delivered row is never
//!   sent again, and a claim whose owner vanished passes on when its lease
//!   ends. The database arbitrates, so the fleet alerts once.
//!
//! * **upkeep** — retention, and summing anew an aggregate whose rows
//!   changed behind its back, run on one replica per hour, whichever asks
//!   first.
//!
//! Migrations run on the first session, under an advisory lock so replicas
//! starting together do not race; a database migrated by a newer
//! driftwatch is refused, never altered.
//!
//! The store is opened without the database: every operation borrows a
//! session from a small bounded pool (`store.fleet_pool_size`), opened on
//! demand, so a replica starts, serves and detects while the database is
//! away, and joins when it answers. [`FleetStore::health`] says whether the
//! last operation reached it. Nothing depends on a session outliving one
//! transaction (the migration lock is transaction-scoped), so a PgBouncer in
//! transaction pooling mode may stand in front of the database.

use std::collections::HashSet;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::store::Notification;
use crate::detect::event::{DriftEvent, EventState};

/// The schema this build reads and writes.
pub(crate) const FLEET_SCHEMA_VERSION: i32 = 2;

/// How long one operation (and the wait for a session) may take: a third of
/// the lease, so a stuck database cannot let a replica's holds lapse.
fn session_deadline(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_secs(1))
}

/// Taken during migrations (an arbitrary constant: "driftwat").
const MIGRATION_LOCK: i64 = 0x6472_6966_7477_6174;

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE driftwatch_snapshots (
    service     text NOT NULL,
    replica     text NOT NULL,
    body        bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, replica)
);
CREATE TABLE driftwatch_events (
    id           text PRIMARY KEY,
    fingerprint  text NOT NULL,
    state        text NOT NULL,
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX driftwatch_events_one_firing ON driftwatch_events (fingerprint) WHERE state = 'firing';
CREATE INDEX driftwatch_events_updated ON driftwatch_events (updated_at);
CREATE TABLE driftwatch_event_replicas (
    event_id  text NOT NULL REFERENCES driftwatch_events (id) ON DELETE CASCADE,
    replica   text NOT NULL,
    firing    boolean NOT NULL,
    seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, replica)
);
CREATE TABLE driftwatch_deliveries (
    event_id      text NOT NULL,
    status        text NOT NULL,
    sink          text NOT NULL,
    round         bigint NOT NULL,
    owner         text NOT NULL,
    lease_until   timestamptz NOT NULL,
    delivered_at  timestamptz,
    PRIMARY KEY (event_id, status, sink, round)
);
"#, r#"
CREATE TABLE driftwatch_aggregates (
    service     text PRIMARY KEY,
    body        bytea,
    version     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE driftwatch_snapshots ADD COLUMN aggregated_at timestamptz;
CREATE TABLE driftwatch_maintenance (
    task      text PRIMARY KEY,
    last_run  timestamptz NOT NULL
);
"#];

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "cannot connect to PostgreSQL at {target} (store.postgres_url): {message}; check the URL, the credentials and that the server accepts connections"
    )]
    Connect { target: String, message: String },
    #[error(
        "the PostgreSQL database at {target} has driftwatch schema version {found}, newer than this driftwatch understands ({FLEET_SCHEMA_VERSION}); upgrade every replica"
    )]
    NewerSchema { target: String, found: i32 },
    #[error("PostgreSQL at {target}: {message}")]
    Query { target: String, message: String },
    #[error("PostgreSQL at {target}: a stored record is unreadable ({message})")]
    Decode { target: String, message: String },
}

/// How the caller adds snapshots up: (service, the aggregate as stored or
/// `None` for an empty one, snapshots to take back, snapshots to add) → the
/// new aggregate. The store keeps the sums; the caller knows their format.
pub(crate) type Combine<'a> = &'a (dyn Fn(&str, Option<&[u8]>, &[&[u8]], &[&[u8]]) -> Result<Vec<u8>, String> + Send + Sync);

/// A service's aggregate as read, with this replica's own snapshot in it.
#[derive(Debug, Clone)]
pub struct AggregateRow {
    pub service: String,
    /// Bumped at each change: a reader that has this version skips the row.
    pub version: i64,
    pub body: Vec<u8>,
    /// This replica's snapshot, which the aggregate holds; `None` if it
    /// published none.
    pub own: Option<Vec<u8>>,
}

/// What one round of upkeep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintained {
    pub events: u64,
    pub snapshots: u64,
    /// Aggregates summed anew (or deleted with their last snapshot).
    pub aggregates: u64,
}

/// Rows and bytes this replica read from and wrote to the database, since
/// it started: the cost of the fleet path, as its metrics report it.
#[derive(Debug, Default)]
pub struct FleetIo {
    pub rows_read: std::sync::atomic::AtomicU64,
    pub bytes_read: std::sync::atomic::AtomicU64,
    pub rows_written: std::sync::atomic::AtomicU64,
    pub bytes_written: std::sync::atomic::AtomicU64,
}

impl FleetIo {
    fn read(&self, rows: usize, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.rows_read.fetch_add(rows as u64, Relaxed);
        self.bytes_read.fetch_add(bytes as u64, Relaxed);
    }

    fn write(&self, rows: usize, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.rows_written.fetch_add(rows as u64, Relaxed);
        self.bytes_written.fetch_add(bytes as u64, Relaxed);
    }

    /// (rows read, bytes read, rows written, bytes written).
    pub fn totals(&self) -> [u64; 4] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            self.rows_read.load(Relaxed),
            self.bytes_read.load(Relaxed),
            self.rows_written.load(Relaxed),
            self.bytes_written.load(Relaxed),
        ]
    }
}

/// One alert delivery to arbitrate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub event_id: String,
    pub status: Notification,
    pub sink: String,
    /// 0 for the notification itself; repeats (Alertmanager refreshes) use
    /// later rounds.
    pub round: i64,
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This replica holds the lease: deliver.
    Won,
    /// Some replica already delivered it: drop it.
    Delivered,
    /// Another live replica holds the lease: wait.
    Held,
}

/// What leaving a firing event did to the fleet's event.
#[derive(Debug, Clone, PartialEq)]
pub enum Leave {
    /// No live replica sees it firing any more: it is resolved now, and
    /// this replica sends the resolution.
    Resolved(Box<DriftEvent>),
    /// Other replicas still see it firing.
    StillFiring,
    /// It was resolved already.
    AlreadyResolved,
    /// The fleet never knew it (this replica could not record it when it
    /// fired): it resolves here alone.
    Unknown,
}

pub struct FleetStore {
    /// At most `store.fleet_pool_size` sessions, each lent to one operation
    /// at a time, reopened when they drop.
    pool: deadpool_postgres::Pool,
    /// `host:port/database`, for messages (never the password).
    target: String,
    replica: String,
    lease: Duration,
    /// Whether this build's migrations ran on the database.
    migrated: std::sync::atomic::AtomicBool,
    /// What the last operation came to.
    health: std::sync::Mutex<FleetHealth>,
    /// Events this replica sees firing: only these are renewed.
    held: std::sync::Mutex<HashSet<String>>,
    io: FleetIo,
}

/// Whether the fleet's database answers, as `/readyz` and
/// `driftwatch_fleet_degraded` report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FleetHealth {
    /// An operation has reached the database since the start.
    pub joined: bool,
    /// The last operation's failure; `None` once one succeeds again.
    pub error: Option<String>,
}

impl FleetHealth {
    pub(crate) fn degraded(&self) -> bool {
        !self.joined || self.error.is_some()
    }

    /// Brings `driftwatch_fleet_degraded` up to this.
    pub(crate) fn observe(&self, metrics: &crate::telemetry::metrics::FleetMetrics) {
        metrics.degraded.set(i64::from(self.degraded()));
    }
}

impl FleetError {
    /// Whether waiting may cure it (the server is away or slow), rather
    /// than a configuration or version that must change.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, FleetError::Connect { .. } | FleetError::Query { .. })
    }
}

impl FleetStore {
    /// Opens the store and reaches the database once, migrating its schema.
    pub async fn connect(url: &str, replica: String, lease: Duration) -> Result<FleetStore, FleetError> {
        let store = FleetStore::open(url, replica, lease)?;
        store.run(async |_| Ok(())).await?;
        Ok(store)
    }

    /// [`FleetStore::open_sized`] with [`DEFAULT_FLEET_POOL_SIZE`](crate::config::DEFAULT_FLEET_POOL_SIZE) sessions.
    pub(crate) fn open(url: &str, replica: String, lease: Duration) -> Result<FleetStore, FleetError> {
        FleetStore::open_sized(url, replica, lease, crate::config::DEFAULT_FLEET_POOL_SIZE)
    }

    /// Opens the store without reaching the database: only a malformed URL
    /// or TLS setting fails here. The first operation connects and migrates.
    /// At most `pool_size` sessions are open at once.
    pub fn open_sized(url: &str, replica: String, lease: Duration, pool_size: usize) -> Result<FleetStore, FleetError> {
        let target = describe(url);
        let tls_error = |e: crate::tls::postgres::PgTlsError| FleetError::Connect {
            target: target.clone(),
            message: e.to_string(),
        };
        let settings = crate::tls::postgres::settings(url).map_err(tls_error)?;
        let tls = crate::tls::postgres::connector(&settings).map_err(tls_error)?;
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(|e: tokio_postgres::Error| FleetError::Connect {
            target: target.clone(),
            message: error_text(&e),
        })?;
        // A dead server or a half-open connection must fail fast, not hang
        // the replica behind it.
        config
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let wait = session_deadline(lease);
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .recycle_timeout(Some(wait))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| FleetError::Connect {
                target: target.clone(),
                message: e.to_string(),
            })?;
        let store = FleetStore {
            pool,
            target,
            replica,
            lease,
            migrated: std::sync::atomic::AtomicBool::new(false),
            health: std::sync::Mutex::new(FleetHealth::default()),
            held: std::sync::Mutex::new(HashSet::new()),
            io: FleetIo::default(),
        };
        Ok(store)
    }

    /// The store as another replica sees it, over the same sessions: for a
    /// process that stands in for many replicas (the fleet scale bench).
    pub fn as_replica(&self, replica: String) -> FleetStore {
        FleetStore {
            pool: self.pool.clone(),
            target: self.target.clone(),
            replica,
            lease: self.lease,
            migrated: std::sync::atomic::AtomicBool::new(self.migrated.load(std::sync::atomic::Ordering::Acquire)),
            health: std::sync::Mutex::new(FleetHealth::default()),
            held: std::sync::Mutex::new(HashSet::new()),
            io: FleetIo::default(),
        }
    }

    /// Whether the database answered the last operation.
    pub(crate) fn health(&self) -> FleetHealth {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What this replica read and wrote so far.
    pub fn io(&self) -> &FleetIo {
        &self.io
    }

    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    fn query_error(&self, e: impl std::fmt::Display) -> FleetError {
        FleetError::Query {
            target: self.target.clone(),
            message: e.to_string(),
        }
    }

    fn q(&self) -> impl Fn(tokio_postgres::Error) -> FleetError + '_ {
        |e| self.query_error(error_text(&e))
    }

    /// Runs `op` on the session (reconnecting if it closed) within a
    /// deadline; a session that misses it is dropped, so the next operation
    /// starts afresh instead of waiting on a dead connection.
    async fn run<T>(&self, op: impl AsyncFnOnce(&mut Client) -> Result<T, FleetError>) -> Result<T, FleetError> {
        let result = self.run_on_session(op).await;
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => {
                if !health.joined {
                    tracing::info!(store = %self.target, replica = %self.replica, "joined the fleet");
                }
                *health = FleetHealth {
                    joined: true,
                    error: None,
                };
            }
            Err(error) => health.error = Some(error.to_string()),
        }
        result
    }

    async fn run_on_session<T>(&self, op: impl AsyncFnOnce(&mut Client) -> Result<T, FleetError>) -> Result<T, FleetError> {
        use std::sync::atomic::Ordering;
        let deadline = session_deadline(self.lease);
        let mut session = self.pool.get().await.map_err(|e| FleetError::Connect {
            target: self.target.clone(),
            message: match &e {
                deadpool_postgres::PoolError::Backend(e) => error_text(e),
                deadpool_postgres::PoolError::Timeout(_) => format!("no session within {deadline:?}"),
                other => other.to_string(),
            },
        })?;
        let migrated = self.migrated.load(Ordering::Acquire);
        let work = async {
            let client: &mut Client = &mut session;
            if !migrated {
                self.migrate(client).await?;
                self.migrated.store(true, Ordering::Release);
            }
            op(client).await
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => {
                // Never lent again: it may be stuck behind a dead peer.
                drop(deadpool_postgres::Object::take(session));
                Err(self.query_error(format!("no answer within {deadline:?}; the session is dropped")))
            }
        }
    }

    async fn migrate(&self, client: &mut Client) -> Result<(), FleetError> {
        let q = self.q();
        let txn = client.transaction().await.map_err(&q)?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(&q)?;
        txn.batch_execute("CREATE TABLE IF NOT EXISTS driftwatch_schema (version integer NOT NULL)")
            .await
            .map_err(&q)?;
        let found: Option<i32> = txn
            .query_opt("SELECT max(version) FROM driftwatch_schema", &[])
            .await
            .map_err(&q)?
            .and_then(|row| row.get(0));
        let found = found.unwrap_or(0);
        if found > FLEET_SCHEMA_VERSION {
            return Err(FleetError::NewerSchema {
                target: self.target.clone(),
                found,
            });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            let version = index as i32 + 1;
            if version <= found {
                continue;
            }
            txn.batch_execute(migration).await.map_err(&q)?;
            txn.execute("INSERT INTO driftwatch_schema (version) VALUES ($1)", &[&version])
                .await
                .map_err(&q)?;
            tracing::info!(target = %self.target, version, "fleet store migrated");
        }
        txn.commit().await.map_err(&q)
    }

    /// Publishes this replica's snapshot of `service` and, in the same
    /// transaction, replaces its contribution to the service's aggregate:
    /// the aggregate minus the snapshot it published before plus this one.
    /// The aggregate's row lock orders the replicas of a service, so each
    /// contribution is counted once however publishes interleave or retry.
    /// An aggregate that is missing, or that a row changed behind its back
    /// (a replica of an older driftwatch), is summed anew from every row.
    pub async fn publish(&self, service: &str, body: &[u8], combine: Combine<'_>) -> Result<(), FleetError> {
        self.run(async |client| {
            let q = self.q();
            let txn = client.transaction().await.map_err(&q)?;
            let aggregate = self.lock_aggregate(&txn, service).await?;
            let own = txn
                .query_opt(
                    "SELECT body, aggregated_at IS NULL OR updated_at > aggregated_at
                     FROM driftwatch_snapshots WHERE service = $1 AND replica = $2",
                    &[&service, &self.replica],
                )
                .await
                .map_err(&q)?;
            let own_stale = own.as_ref().is_some_and(|row| row.get::<_, bool>(1));
            let own: Option<Vec<u8>> = own.map(|row| row.get(0));
            self.io.read(1 + usize::from(own.is_some()), aggregate.as_ref().map_or(0, Vec::len) + own.as_ref().map_or(0, Vec::len));
            let summed = match aggregate {
                Some(aggregate) if !own_stale => combine(service, Some(&aggregate), own.as_slice().iter().map(Vec::as_slice).collect::<Vec<_>>().as_slice(), &[body]),
                _ => {
                    let others = self.rows_of(&txn, service).await?;
                    let mut plus: Vec<&[u8]> = others.iter().filter(|(replica, _)| *replica != self.replica).map(|(_, b)| b.as_slice()).collect();
                    plus.push(body);
                    self.mark_aggregated(&txn, service).await?;
                    combine(service, None, &[], &plus)
                }
            }
            .map_err(|message| FleetError::Decode {
                target: self.target.clone(),
                message,
            })?;
            self.write_aggregate(&txn, service, &summed).await?;
            txn.execute(
                "INSERT INTO driftwatch_snapshots (service, replica, body, aggregated_at) VALUES ($1, $2, $3, now())
                 ON CONFLICT (service, replica) DO UPDATE SET body = excluded.body, updated_at = now(), aggregated_at = now()",
                &[&service, &self.replica, &body],
            )
            .await
            .map_err(&q)?;
            txn.commit().await.map_err(&q)?;
            self.io.write(2, summed.len() + body.len());
            Ok(())
        })
        .await
    }

    /// Locks `service`'s aggregate row for this transaction, creating it
    /// empty if missing, and returns its body: every replica's contribution
    /// to the service goes through this lock.
    async fn lock_aggregate(&self, txn: &tokio_postgres::Transaction<'_>, service: &str) -> Result<Option<Vec<u8>>, FleetError> {
        let q = self.q();
        txn.execute(
            "INSERT INTO driftwatch_aggregates (service) VALUES ($1) ON CONFLICT (service) DO NOTHING",
            &[&service],
        )
        .await
        .map_err(&q)?;
        Ok(txn
            .query_one("SELECT body FROM driftwatch_aggregates WHERE service = $1 FOR UPDATE", &[&service])
            .await
            .map_err(&q)?
            .get(0))
    }

    /// Replaces the locked aggregate of `service` with `summed`, under a
    /// new version that tells readers to fetch it again.
    async fn write_aggregate(&self, txn: &tokio_postgres::Transaction<'_>, service: &str, summed: &[u8]) -> Result<(), FleetError> {
        txn.execute(
            "UPDATE driftwatch_aggregates SET body = $2, version = version + 1, updated_at = now() WHERE service = $1",
            &[&service, &summed],
        )
        .await
        .map_err(self.q())
        .map(|_| ())
    }

    /// Records that every snapshot of `service` is in its aggregate as it
    /// stands, after the aggregate was summed anew from them.
    async fn mark_aggregated(&self, txn: &tokio_postgres::Transaction<'_>, service: &str) -> Result<(), FleetError> {
        txn.execute(
            "UPDATE driftwatch_snapshots SET aggregated_at = updated_at WHERE service = $1",
            &[&service],
        )
        .await
        .map_err(self.q())
        .map(|_| ())
    }

    /// Every replica's snapshot of `service`: (replica, body).
    async fn rows_of(&self, txn: &tokio_postgres::Transaction<'_>, service: &str) -> Result<Vec<(String, Vec<u8>)>, FleetError> {
        let rows = txn
            .query("SELECT replica, body FROM driftwatch_snapshots WHERE service = $1", &[&service])
            .await
            .map_err(self.q())?;
        let rows: Vec<(String, Vec<u8>)> = rows.into_iter().map(|row| (row.get(0), row.get(1))).collect();
        self.io.read(rows.len(), rows.iter().map(|(_, b)| b.len()).sum());
        Ok(rows)
    }

    /// The aggregates of `services` (all of them when `None`) whose version
    /// differs from the one in `known`, each with this replica's own
    /// snapshot, which the reader takes back out. One statement reads both,
    /// so they are consistent: the aggregate holds exactly that snapshot.
    pub async fn aggregates(&self, services: Option<&[String]>, known: &[(String, i64)]) -> Result<Vec<AggregateRow>, FleetError> {
        let services: Option<Vec<String>> = services.map(<[String]>::to_vec);
        let (known_services, known_versions): (Vec<String>, Vec<i64>) = known.iter().cloned().unzip();
        self.run(async |client| {
            let rows = client
                .query_typed(
                    "SELECT a.service, a.version, a.body, s.body
                     FROM driftwatch_aggregates a
                     LEFT JOIN driftwatch_snapshots s ON s.service = a.service AND s.replica = $1
                     WHERE a.body IS NOT NULL
                       AND ($2::text[] IS NULL OR a.service = ANY($2))
                       AND (a.service, a.version) NOT IN (SELECT * FROM unnest($3::text[], $4::int8[]))",
                    &[
                        (&self.replica, Type::TEXT),
                        (&services, Type::TEXT_ARRAY),
                        (&known_services, Type::TEXT_ARRAY),
                        (&known_versions, Type::INT8_ARRAY),
                    ],
                )
                .await
                .map_err(self.q())?;
            let rows: Vec<AggregateRow> = rows
                .into_iter()
                .map(|row| AggregateRow {
                    service: row.get(0),
                    version: row.get(1),
                    body: row.get(2),
                    own: row.get(3),
                })
                .collect();
            self.io.read(
                rows.len(),
                rows.iter().map(|r| r.body.len() + r.own.as_ref().map_or(0, Vec::len)).sum(),
            );
            Ok(rows)
        })
        .await
    }

    /// Snapshots published by this replica: (service, body).
    pub(crate) async fn own_snapshots(&self) -> Result<Vec<(String, Vec<u8>)>, FleetError> {
        self.run(async |client| {
            let rows = client
                .query_typed(
                    "SELECT service, body FROM driftwatch_snapshots WHERE replica = $1",
                    &[(&self.replica, Type::TEXT)],
                )
                .await
                .map_err(self.q())?;
            let rows: Vec<(String, Vec<u8>)> = rows.into_iter().map(|row| (row.get(0), row.get(1))).collect();
            self.io.read(rows.len(), rows.iter().map(|(_, b)| b.len()).sum());
            Ok(rows)
        })
        .await
    }

    /// After a restart: this replica holds again the fleet's firing events
    /// of `fingerprints` (the drifts its restored detectors still see) and
    /// lets go of any other hold a previous life of it left behind.
    pub async fn rejoin(&self, fingerprints: &[String]) -> Result<(), FleetError> {
        let held: Vec<String> = self
            .run(async |client| {
                let q = self.q();
                let txn = client.transaction().await.map_err(&q)?;
                let rows = txn
                    .query(
                        "SELECT id FROM driftwatch_events WHERE state = 'firing' AND fingerprint = ANY($1)",
                        &[&fingerprints],
                    )
                    .await
                    .map_err(&q)?;
                let ids: Vec<String> = rows.into_iter().map(|row| row.get(0)).collect();
                txn.execute(
                    "UPDATE driftwatch_event_replicas SET firing = false WHERE replica = $1 AND NOT (event_id = ANY($2))",
                    &[&self.replica, &ids],
                )
                .await
                .map_err(&q)?;
                txn.execute(
                    "INSERT INTO driftwatch_event_replicas (event_id, replica, firing)
                     SELECT id, $1, true FROM unnest($2::text[]) AS id
                     ON CONFLICT (event_id, replica) DO UPDATE SET firing = true, seen_at = now()",
                    &[&self.replica, &ids],
                )
                .await
                .map_err(&q)?;
                txn.commit().await.map_err(&q)?;
                Ok(ids)
            })
            .await?;
        self.held.lock().unwrap_or_else(|e| e.into_inner()).extend(held);
        Ok(())
    }

    /// Joins the fleet's firing event for `event`'s fingerprint, creating
    /// it from `event` when none fires. Returns the fleet's event: its id
    /// is the one every replica uses.
    pub async fn open_event(&self, event: &DriftEvent) -> Result<DriftEvent, FleetError> {
        let body = crate::store::encode_event(event).map_err(|e| self.query_error(e))?;
        let opened = self
            .run(async |client| {
                let q = self.q();
                for _ in 0..3 {
                    let txn = client.transaction().await.map_err(&q)?;
                    // The lock orders this join against a leave that would
                    // otherwise miss it and resolve the event under it.
                    let existing = txn
                        .query_opt(
                            "SELECT id, body FROM driftwatch_events WHERE fingerprint = $1 AND state = 'firing' FOR UPDATE",
                            &[&event.fingerprint],
                        )
                        .await
                        .map_err(&q)?;
                    let (id, body) = match existing {
                        Some(row) => (row.get::<_, String>(0), row.get::<_, Vec<u8>>(1)),
                        None => {
                            // A concurrent insert of the same fingerprint
                            // (or a re-fire reusing a resolved id) inserts
                            // nothing: look again.
                            let inserted = txn
                                .execute(
                                    "INSERT INTO driftwatch_events (id, fingerprint, state, body) VALUES ($1, $2, 'firing', $3)
                                     ON CONFLICT DO NOTHING",
                                    &[&event.id, &event.fingerprint, &body],
                                )
                                .await
                                .map_err(&q)?;
                            if inserted == 0 {
                                let reopened = txn
                                    .execute(
                                        "UPDATE driftwatch_events SET state = 'firing', body = $2, updated_at = now()
                                         WHERE id = $1 AND state = 'resolved'
                                           AND NOT EXISTS (SELECT 1 FROM driftwatch_events WHERE fingerprint = $3 AND state = 'firing')",
                                        &[&event.id, &body, &event.fingerprint],
                                    )
                                    .await
                                    .map_err(&q)?;
                                if reopened == 0 {
                                    txn.rollback().await.map_err(&q)?;
                                    continue;
                                }
                                // Its earlier deliveries must not mark this
                                // episode's alerts as sent.
                                txn.execute("DELETE FROM driftwatch_deliveries WHERE event_id = $1", &[&event.id])
                                    .await
                                    .map_err(&q)?;
                            }
                            (event.id.clone(), body.clone())
                        }
                    };
                    txn.execute(
                        "INSERT INTO driftwatch_event_replicas (event_id, replica, firing) VALUES ($1, $2, true)
                         ON CONFLICT (event_id, replica) DO UPDATE SET firing = true, seen_at = now()",
                        &[&id, &self.replica],
                    )
                    .await
                    .map_err(&q)?;
                    txn.commit().await.map_err(&q)?;
                    return self.event_from(id, &body, "firing");
                }
                Err(self.query_error(format!("could not settle the event of fingerprint {}", event.fingerprint)))
            })
            .await?;
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(opened.id.clone());
        Ok(opened)
    }

    /// The fleet's firing event with this fingerprint, if any.
    pub async fn firing_event(&self, fingerprint: &str) -> Result<Option<DriftEvent>, FleetError> {
        self.run(async |client| {
            let row = client
                .query_typed_opt(
                    "SELECT id, body FROM driftwatch_events WHERE fingerprint = $1 AND state = 'firing'",
                    &[(&fingerprint, Type::TEXT)],
                )
                .await
                .map_err(self.q())?;
            let Some(row) = row else { return Ok(None) };
            self.event_from(row.get(0), row.get(1), "firing").map(Some)
        })
        .await
    }

    /// Records a new version of an event (suspects after attribution).
    pub(crate) async fn update_event(&self, event: &DriftEvent) -> Result<(), FleetError> {
        let body = crate::store::encode_event(event).map_err(|e| self.query_error(e))?;
        self.run(async |client| {
            client
                .execute_typed(
                    "UPDATE driftwatch_events SET body = $2, updated_at = now() WHERE id = $1 AND state = $3",
                    &[(&event.id, Type::TEXT), (&body, Type::BYTEA), (&state_name(event.state), Type::TEXT)],
                )
                .await
                .map_err(self.q())
                .map(|_| ())
        })
        .await
    }

    /// This replica no longer sees `resolved` (the fleet's event, in its
    /// resolved form) firing. Resolves the fleet's event if no other live
    /// replica does.
    pub async fn leave_event(&self, resolved: &DriftEvent) -> Result<Leave, FleetError> {
        // Whatever the database says, this replica holds it no more: should
        // the leave fail, the hold lapses with the lease.
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&resolved.id);
        let body = crate::store::encode_event(resolved).map_err(|e| self.query_error(e))?;
        let lease = self.lease.as_secs_f64();
        self.run(async |client| {
            let q = self.q();
            let txn = client.transaction().await.map_err(&q)?;
            // Joins and leaves of this event take turns (see open_event);
            // each statement below then sees the others' committed holds.
            let state: Option<String> = txn
                .query_opt("SELECT state FROM driftwatch_events WHERE id = $1 FOR UPDATE", &[&resolved.id])
                .await
                .map_err(&q)?
                .map(|row| row.get(0));
            let outcome = match state.as_deref() {
                None => Leave::Unknown,
                Some("firing") => {
                    txn.execute(
                        "UPDATE driftwatch_event_replicas SET firing = false, seen_at = now() WHERE event_id = $1 AND replica = $2",
                        &[&resolved.id, &self.replica],
                    )
                    .await
                    .map_err(&q)?;
                    let resolved_now = txn
                        .execute(
                            "UPDATE driftwatch_events e SET state = 'resolved', body = $2, updated_at = now()
                             WHERE e.id = $1
                               AND NOT EXISTS (SELECT 1 FROM driftwatch_event_replicas r
                                               WHERE r.event_id = e.id AND r.firing AND r.seen_at > now() - make_interval(secs => $3))",
                            &[&resolved.id, &body, &lease],
                        )
                        .await
                        .map_err(&q)?;
                    if resolved_now > 0 {
                        Leave::Resolved(Box::new(resolved.clone()))
                    } else {
                        Leave::StillFiring
                    }
                }
                Some(_) => Leave::AlreadyResolved,
            };
            txn.commit().await.map_err(&q)?;
            Ok(outcome)
        })
        .await
    }

    /// Renews this replica's hold on the events it sees firing, then
    /// resolves firing events that no live replica holds any more (their
    /// replicas left, or died). Returns the events this call resolved: the
    /// caller sends their resolutions.
    pub async fn sweep(&self, now: crate::clock::Timestamp) -> Result<Vec<DriftEvent>, FleetError> {
        let lease = self.lease.as_secs_f64();
        let held: Vec<String> = self.held.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        self.run(async |client| {
            let q = self.q();
            client
                .execute_typed(
                    "UPDATE driftwatch_event_replicas SET seen_at = now() WHERE replica = $1 AND firing AND event_id = ANY($2)",
                    &[(&self.replica, Type::TEXT), (&held, Type::TEXT_ARRAY)],
                )
                .await
                .map_err(&q)?;
            // Resolution and new bodies commit together: a failure leaves
            // the events firing for the next sweep, never half resolved.
            let txn = client.transaction().await.map_err(&q)?;
            let rows = txn
                .query(
                    "SELECT e.id, e.body FROM driftwatch_events e
                     WHERE e.state = 'firing'
                       AND e.updated_at < now() - make_interval(secs => $1)
                       AND NOT EXISTS (SELECT 1 FROM driftwatch_event_replicas r
                                       WHERE r.event_id = e.id AND r.firing AND r.seen_at > now() - make_interval(secs => $1))
                     FOR UPDATE SKIP LOCKED",
                    &[&lease],
                )
                .await
                .map_err(&q)?;
            let mut resolved = Vec::with_capacity(rows.len());
            for row in rows {
                let id: String = row.get(0);
                let body: Vec<u8> = row.get(1);
                // The lock is held: recheck, a join may have committed since.
                let still_orphaned = txn
                    .query_opt(
                        "SELECT 1 FROM driftwatch_event_replicas r
                         WHERE r.event_id = $1 AND r.firing AND r.seen_at > now() - make_interval(secs => $2)",
                        &[&id, &lease],
                    )
                    .await
                    .map_err(&q)?
                    .is_none();
                if !still_orphaned {
                    continue;
                }
                let event = match self.event_from(id.clone(), &body, "resolved") {
                    Ok(mut event) => {
                        event.resolved_at = Some(now);
                        // No live replica observes it any more.
                        event.resolution.get_or_insert(crate::detect::event::Resolution {
                            reason: crate::detect::event::ResolutionReason::TrafficGone,
                            revision: None,
                        });
                        let body = crate::store::encode_event(&event).map_err(|e| self.query_error(e))?;
                        txn.execute(
                            "UPDATE driftwatch_events SET state = 'resolved', body = $2, updated_at = now() WHERE id = $1",
                            &[&id, &body],
                        )
                        .await
                        .map_err(&q)?;
                        Some(event)
                    }
                    Err(error) => {
                        // Written by a newer driftwatch: resolve it, that
                        // replica's alerts are its own.
                        tracing::warn!(%id, %error, "resolving an unreadable fleet event without notifying");
                        txn.execute(
                            "UPDATE driftwatch_events SET state = 'resolved', updated_at = now() WHERE id = $1",
                            &[&id],
                        )
                        .await
                        .map_err(&q)?;
                        None
                    }
                };
                resolved.extend(event);
            }
            txn.commit().await.map_err(&q)?;
            Ok(resolved)
        })
        .await
    }

    /// Events created or changed by any replica, newest first, at most
    /// `limit`. Unreadable ones (from a newer driftwatch) are left out.
    pub async fn events(&self, limit: i64) -> Result<Vec<DriftEvent>, FleetError> {
        self.events_changed(None, limit).await.map(|(events, _)| events)
    }

    /// Events changed after `since` (the database's clock, as a previous
    /// call returned it), most recently changed first, at most `limit`; and
    /// the latest change among them. A caller that asks again from a little
    /// before that moment misses no transaction that committed late.
    pub(crate) async fn events_changed(&self, since: Option<f64>, limit: i64) -> Result<(Vec<DriftEvent>, Option<f64>), FleetError> {
        self.run(async |client| {
            let rows = client
                .query_typed(
                    "SELECT id, body, state, extract(epoch FROM updated_at)::float8 FROM driftwatch_events
                     WHERE $1::float8 IS NULL OR updated_at > to_timestamp($1)
                     ORDER BY updated_at DESC LIMIT $2",
                    &[(&since, Type::FLOAT8), (&limit, Type::INT8)],
                )
                .await
                .map_err(self.q())?;
            self.io.read(rows.len(), rows.iter().map(|row| row.get::<_, &[u8]>(1).len()).sum());
            let latest = rows.first().map(|row| row.get::<_, f64>(3));
            let events = rows
                .into_iter()
                .filter_map(|row| {
                    let state: String = row.get(2);
                    self.event_from(row.get(0), row.get(1), &state)
                        .inspect_err(|error| tracing::warn!(%error, "an unreadable event in the fleet store is skipped"))
                        .ok()
                })
                .collect();
            Ok((events, latest))
        })
        .await
    }

    /// Claims deliveries for this replica (see the module docs).
    pub async fn claim(&self, keys: &[DeliveryKey]) -> Result<Vec<Claim>, FleetError> {
        let lease = self.lease.as_secs_f64();
        self.run(async |client| {
            let q = self.q();
            let mut claims = Vec::with_capacity(keys.len());
            for key in keys {
                let won = client
                    .query_typed_opt(
                        "INSERT INTO driftwatch_deliveries (event_id, status, sink, round, owner, lease_until)
                         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
                         ON CONFLICT (event_id, status, sink, round) DO UPDATE
                            SET owner = excluded.owner, lease_until = excluded.lease_until
                            WHERE driftwatch_deliveries.delivered_at IS NULL
                              AND (driftwatch_deliveries.owner = excluded.owner OR driftwatch_deliveries.lease_until < now())
                         RETURNING owner",
                        &[
                            (&key.event_id, Type::TEXT),
                            (&key.status.as_str(), Type::TEXT),
                            (&key.sink, Type::TEXT),
                            (&key.round, Type::INT8),
                            (&self.replica, Type::TEXT),
                            (&lease, Type::FLOAT8),
                        ],
                    )
                    .await
                    .map_err(&q)?;
                let claim = if won.is_some() {
                    Claim::Won
                } else {
                    let delivered: Option<bool> = client
                        .query_typed_opt(
                            "SELECT delivered_at IS NOT NULL FROM driftwatch_deliveries
                             WHERE event_id = $1 AND status = $2 AND sink = $3 AND round = $4",
                            &[
                                (&key.event_id, Type::TEXT),
                                (&key.status.as_str(), Type::TEXT),
                                (&key.sink, Type::TEXT),
                                (&key.round, Type::INT8),
                            ],
                        )
                        .await
                        .map_err(&q)?
                        .map(|row| row.get(0));
                    if delivered == Some(true) {
                        Claim::Delivered
                    } else {
                        Claim::Held
                    }
                };
                claims.push(claim);
            }
            Ok(claims)
        })
        .await
    }

    /// Marks claimed deliveries done: no replica sends them again.
    pub async fn delivered(&self, keys: &[DeliveryKey]) -> Result<(), FleetError> {
        self.run(async |client| {
            for key in keys {
                client
                    .execute_typed(
                        "UPDATE driftwatch_deliveries SET delivered_at = now()
                         WHERE event_id = $1 AND status = $2 AND sink = $3 AND round = $4",
                        &[
                            (&key.event_id, Type::TEXT),
                            (&key.status.as_str(), Type::TEXT),
                            (&key.sink, Type::TEXT),
                            (&key.round, Type::INT8),
                        ],
                    )
                    .await
                    .map_err(self.q())?;
            }
            Ok(())
        })
        .await
    }

    /// Retention and upkeep, by one replica of the fleet per `every`: the
    /// first to ask after that long wins the turn, the others get `None`.
    /// Deletes resolved events (and their deliveries) older than
    /// `event_retention` and snapshots not renewed for `baseline_retention`,
    /// and sums anew the aggregates of the services whose snapshots were
    /// deleted or changed behind the aggregate's back.
    pub async fn maintain(
        &self,
        every: Duration,
        event_retention: Duration,
        baseline_retention: Duration,
        combine: Combine<'_>,
    ) -> Result<Option<Maintained>, FleetError> {
        let every = every.as_secs_f64();
        let events_age = event_retention.as_secs_f64();
        let snapshots_age = baseline_retention.as_secs_f64();
        self.run(async |client| {
            let q = self.q();
            let turn = client
                .query_typed_opt(
                    "INSERT INTO driftwatch_maintenance (task, last_run) VALUES ('retention', now())
                     ON CONFLICT (task) DO UPDATE SET last_run = now()
                        WHERE driftwatch_maintenance.last_run < now() - make_interval(secs => $1)
                     RETURNING task",
                    &[(&every, Type::FLOAT8)],
                )
                .await
                .map_err(&q)?;
            if turn.is_none() {
                return Ok(None);
            }
            let mut done = Maintained::default();
            // Deliveries go with their events.
            client
                .execute_typed(
                    "DELETE FROM driftwatch_deliveries d WHERE EXISTS (
                        SELECT 1 FROM driftwatch_events e WHERE e.id = d.event_id AND e.state = 'resolved'
                          AND e.updated_at < now() - make_interval(secs => $1))",
                    &[(&events_age, Type::FLOAT8)],
                )
                .await
                .map_err(&q)?;
            done.events = client
                .execute_typed(
                    "DELETE FROM driftwatch_events WHERE state = 'resolved' AND updated_at < now() - make_interval(secs => $1)",
                    &[(&events_age, Type::FLOAT8)],
                )
                .await
                .map_err(&q)?;
            let services: Vec<String> = client
                .query_typed(
                    "SELECT DISTINCT service FROM driftwatch_snapshots
                     WHERE updated_at < now() - make_interval(secs => $1)
                        OR aggregated_at IS NULL OR updated_at > aggregated_at
                     UNION
                     SELECT a.service FROM driftwatch_aggregates a
                     WHERE NOT EXISTS (SELECT 1 FROM driftwatch_snapshots s WHERE s.service = a.service)",
                    &[(&snapshots_age, Type::FLOAT8)],
                )
                .await
                .map_err(&q)?
                .into_iter()
                .map(|row| row.get(0))
                .collect();
            for service in services {
                let txn = client.transaction().await.map_err(&q)?;
                self.lock_aggregate(&txn, &service).await?;
                done.snapshots += txn
                    .execute(
                        "DELETE FROM driftwatch_snapshots WHERE service = $1 AND updated_at < now() - make_interval(secs => $2)",
                        &[&service, &snapshots_age],
                    )
                    .await
                    .map_err(&q)?;
                let rows = self.rows_of(&txn, &service).await?;
                if rows.is_empty() {
                    txn.execute("DELETE FROM driftwatch_aggregates WHERE service = $1", &[&service])
                        .await
                        .map_err(&q)?;
                } else {
                    let bodies: Vec<&[u8]> = rows.iter().map(|(_, b)| b.as_slice()).collect();
                    let summed = combine(&service, None, &[], &bodies).map_err(|message| FleetError::Decode {
                        target: self.target.clone(),
                        message,
                    })?;
                    self.write_aggregate(&txn, &service, &summed).await?;
                    self.mark_aggregated(&txn, &service).await?;
                    self.io.write(1, summed.len());
                }
                txn.commit().await.map_err(&q)?;
                done.aggregates += 1;
            }
            Ok(Some(done))
        })
        .await
    }

    /// An event as stored, under its fleet id and in its row's state.
    fn event_from(&self, id: String, body: &[u8], state: &str) -> Result<DriftEvent, FleetError> {
        let mut event = crate::store::decode_event(body).map_err(|message| FleetError::Decode {
            target: self.target.clone(),
            message,
        })?;
        event.id = id;
        event.state = if state == "firing" {
            EventState::Firing
        } else {
            EventState::Resolved
        };
        Ok(event)
    }
}

fn state_name(state: EventState) -> &'static str {
    match state {
        EventState::Firing => "firing",
        EventState::Resolved => "resolved",
    }
}

/// `host:port/database` of a connection string, without credentials.
fn describe(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let host = config
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = config.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
        }
        Err(_) => "an unparsable URL".into(),
    }
}

/// The server's message when there is one (the `Display` of a database
/// error is only "db error").
fn error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => crate::text::error_chain(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_database_but_never_the_password() {
        assert_eq!(
            describe("postgres://dw:s3cret@db.internal:6432/fleet"),
            "db.internal:6432/fleet"
        );
        assert!(!describe("postgres://dw:s3cret@db/fleet").contains("s3cret"));
    }
}
