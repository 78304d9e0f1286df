//! `FleetStore`: the PostgreSQL store shared by every replica of a service.
//!
//! Sidecars come and go with their pods, so in fleet mode what must outlive
//! a pod lives in one database:
//!
//! * **snapshots** — each replica publishes its analysis snapshot per
//!   service under its own name; a replica reads the others' and merges
//!   them (histograms add), so a pod of revision R finds R-1's baseline.
//!   Each replica writing only its own row makes a flush idempotent: a
//!   retried write replaces, it never adds twice;
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
//! Migrations run on connect, under an advisory lock so replicas starting
//! together do not race; a database migrated by a newer driftwatch is
//! refused, never altered.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use crate::detect::event::{DriftEvent, EventState};

/// The schema this build reads and writes.
pub const FLEET_SCHEMA_VERSION: i32 = 1;

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

/// One alert delivery to arbitrate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub event_id: String,
    pub status: String,
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
    /// It was resolved already (or is unknown).
    AlreadyResolved,
}

pub struct FleetStore {
    url: String,
    /// `host:port/database`, for messages (never the password).
    target: String,
    replica: String,
    lease: Duration,
    /// One session, reconnected when it drops. Statements of a transaction
    /// must not interleave with other tasks' statements, hence the lock.
    client: Mutex<Option<Client>>,
}

impl FleetStore {
    /// Connects and migrates the schema.
    pub async fn connect(url: &str, replica: String, lease: Duration) -> Result<FleetStore, FleetError> {
        let target = describe(url);
        let store = FleetStore {
            url: url.to_owned(),
            target,
            replica,
            lease,
            client: Mutex::new(None),
        };
        {
            let mut guard = store.client.lock().await;
            let client = store.session(&mut guard).await?;
            store.migrate(client).await?;
        }
        Ok(store)
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    fn query_error(&self, e: impl std::fmt::Display) -> FleetError {
        FleetError::Query {
            target: self.target.clone(),
            message: e.to_string(),
        }
    }

    /// The open session, reconnecting if it closed.
    async fn session<'a>(&self, guard: &'a mut Option<Client>) -> Result<&'a mut Client, FleetError> {
        if guard.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|e| FleetError::Connect {
                    target: self.target.clone(),
                    message: error_text(&e),
                })?;
            let target = self.target.clone();
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%target, error = %error_text(&error), "PostgreSQL connection closed");
                }
            });
            *guard = Some(client);
        }
        guard.as_mut().ok_or_else(|| self.query_error("no session"))
    }

    async fn migrate(&self, client: &mut Client) -> Result<(), FleetError> {
        let txn = client.transaction().await.map_err(|e| self.query_error(error_text(&e)))?;
        let q = |e: tokio_postgres::Error| self.query_error(error_text(&e));
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(q)?;
        txn.batch_execute("CREATE TABLE IF NOT EXISTS driftwatch_schema (version integer NOT NULL)")
            .await
            .map_err(q)?;
        let found: Option<i32> = txn
            .query_opt("SELECT max(version) FROM driftwatch_schema", &[])
            .await
            .map_err(q)?
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
            txn.batch_execute(migration).await.map_err(q)?;
            txn.execute("INSERT INTO driftwatch_schema (version) VALUES ($1)", &[&version])
                .await
                .map_err(q)?;
            tracing::info!(target = %self.target, version, "fleet store migrated");
        }
        txn.commit().await.map_err(q)
    }

    /// Publishes this replica's snapshot of `service`.
    pub async fn put_snapshot(&self, service: &str, body: &[u8]) -> Result<(), FleetError> {
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        client
            .execute(
                "INSERT INTO driftwatch_snapshots (service, replica, body) VALUES ($1, $2, $3)
                 ON CONFLICT (service, replica) DO UPDATE SET body = excluded.body, updated_at = now()",
                &[&service, &self.replica, &body],
            )
            .await
            .map_err(|e| self.query_error(error_text(&e)))?;
        Ok(())
    }

    /// Every other replica's snapshots: (service, body).
    pub async fn other_snapshots(&self) -> Result<Vec<(String, Vec<u8>)>, FleetError> {
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        let rows = client
            .query(
                "SELECT service, body FROM driftwatch_snapshots WHERE replica <> $1",
                &[&self.replica],
            )
            .await
            .map_err(|e| self.query_error(error_text(&e)))?;
        Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Joins the fleet's firing event for `event`'s fingerprint, creating
    /// it from `event` when none fires. Returns the fleet's event: its id
    /// is the one every replica uses.
    pub async fn open_event(&self, event: &DriftEvent) -> Result<DriftEvent, FleetError> {
        let body = super::encode_event(event).map_err(|e| self.query_error(e))?;
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        let q = |e: tokio_postgres::Error| self.query_error(error_text(&e));
        for _ in 0..3 {
            let txn = client.transaction().await.map_err(q)?;
            let existing = txn
                .query_opt(
                    "SELECT id, body FROM driftwatch_events WHERE fingerprint = $1 AND state = 'firing'",
                    &[&event.fingerprint],
                )
                .await
                .map_err(q)?;
            let (id, body) = match existing {
                Some(row) => (row.get::<_, String>(0), row.get::<_, Vec<u8>>(1)),
                None => {
                    // A concurrent insert of the same fingerprint (or a
                    // re-fire reusing a resolved id) inserts nothing: look
                    // again.
                    let inserted = txn
                        .execute(
                            "INSERT INTO driftwatch_events (id, fingerprint, state, body) VALUES ($1, $2, 'firing', $3)
                             ON CONFLICT DO NOTHING",
                            &[&event.id, &event.fingerprint, &body],
                        )
                        .await
                        .map_err(q)?;
                    if inserted == 0 {
                        let reopened = txn
                            .execute(
                                "UPDATE driftwatch_events SET state = 'firing', body = $2, updated_at = now()
                                 WHERE id = $1 AND state = 'resolved'
                                   AND NOT EXISTS (SELECT 1 FROM driftwatch_events WHERE fingerprint = $3 AND state = 'firing')",
                                &[&event.id, &body, &event.fingerprint],
                            )
                            .await
                            .map_err(q)?;
                        if reopened == 0 {
                            txn.rollback().await.map_err(q)?;
                            continue;
                        }
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
            .map_err(q)?;
            txn.commit().await.map_err(q)?;
            return self.event_from(id, &body);
        }
        Err(self.query_error(format!("could not settle the event of fingerprint {}", event.fingerprint)))
    }

    /// The fleet's firing event with this fingerprint, if any.
    pub async fn firing_event(&self, fingerprint: &str) -> Result<Option<DriftEvent>, FleetError> {
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        let row = client
            .query_opt(
                "SELECT id, body FROM driftwatch_events WHERE fingerprint = $1 AND state = 'firing'",
                &[&fingerprint],
            )
            .await
            .map_err(|e| self.query_error(error_text(&e)))?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.get(0);
        let body: Vec<u8> = row.get(1);
        self.event_from(id, &body).map(Some)
    }

    /// Records a new version of an event (suspects after attribution).
    pub async fn update_event(&self, event: &DriftEvent) -> Result<(), FleetError> {
        let body = super::encode_event(event).map_err(|e| self.query_error(e))?;
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        client
            .execute(
                "UPDATE driftwatch_events SET body = $2, updated_at = now() WHERE id = $1 AND state = $3",
                &[&event.id, &body, &state_name(event.state)],
            )
            .await
            .map_err(|e| self.query_error(error_text(&e)))?;
        Ok(())
    }

    /// This replica no longer sees `resolved` (the fleet's event, in its
    /// resolved form) firing. Resolves the fleet's event if no other live
    /// replica does.
    pub async fn leave_event(&self, resolved: &DriftEvent) -> Result<Leave, FleetError> {
        let body = super::encode_event(resolved).map_err(|e| self.query_error(e))?;
        let lease = self.lease_seconds();
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        let q = |e: tokio_postgres::Error| self.query_error(error_text(&e));
        let txn = client.transaction().await.map_err(q)?;
        txn.execute(
            "UPDATE driftwatch_event_replicas SET firing = false, seen_at = now() WHERE event_id = $1 AND replica = $2",
            &[&resolved.id, &self.replica],
        )
        .await
        .map_err(q)?;
        let row = txn
            .query_opt(
                "UPDATE driftwatch_events e SET state = 'resolved', body = $2, updated_at = now()
                 WHERE e.id = $1 AND e.state = 'firing'
                   AND NOT EXISTS (SELECT 1 FROM driftwatch_event_replicas r
                                   WHERE r.event_id = e.id AND r.firing AND r.seen_at > now() - make_interval(secs => $3))
                 RETURNING e.id",
                &[&resolved.id, &body, &lease],
            )
            .await
            .map_err(q)?;
        let outcome = match row {
            Some(_) => Leave::Resolved(Box::new(resolved.clone())),
            None => {
                let state: Option<String> = txn
                    .query_opt("SELECT state FROM driftwatch_events WHERE id = $1", &[&resolved.id])
                    .await
                    .map_err(q)?
                    .map(|row| row.get(0));
                if state.as_deref() == Some("firing") {
                    Leave::StillFiring
                } else {
                    Leave::AlreadyResolved
                }
            }
        };
        txn.commit().await.map_err(q)?;
        Ok(outcome)
    }

    /// Renews this replica's hold on the events it sees firing, then
    /// resolves firing events that no live replica holds any more (their
    /// replicas left, or died). Returns the events this call resolved: the
    /// caller sends their resolutions.
    pub async fn sweep(&self, now_rfc3339: &str) -> Result<Vec<DriftEvent>, FleetError> {
        let lease = self.lease_seconds();
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        let q = |e: tokio_postgres::Error| self.query_error(error_text(&e));
        client
            .execute(
                "UPDATE driftwatch_event_replicas SET seen_at = now() WHERE replica = $1 AND firing",
                &[&self.replica],
            )
            .await
            .map_err(q)?;
        let rows = client
            .query(
                "UPDATE driftwatch_events e SET state = 'resolved', updated_at = now()
                 WHERE e.state = 'firing'
                   AND e.updated_at < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM driftwatch_event_replicas r
                                   WHERE r.event_id = e.id AND r.firing AND r.seen_at > now() - make_interval(secs => $1))
                 RETURNING e.id, e.body",
                &[&lease],
            )
            .await
            .map_err(q)?;
        let mut resolved = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.get(0);
            let body: Vec<u8> = row.get(1);
            let mut event = self.event_from(id, &body)?;
            event.state = EventState::Resolved;
            event.resolved_at = Some(now_rfc3339.to_owned());
            let body = super::encode_event(&event).map_err(|e| self.query_error(e))?;
            client
                .execute("UPDATE driftwatch_events SET body = $2 WHERE id = $1", &[&event.id, &body])
                .await
                .map_err(q)?;
            resolved.push(event);
        }
        Ok(resolved)
    }

    /// Events created or changed by any replica, newest first, at most
    /// `limit`.
    pub async fn events(&self, limit: i64) -> Result<Vec<DriftEvent>, FleetError> {
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        let rows = client
            .query(
                "SELECT id, body FROM driftwatch_events ORDER BY created_at DESC LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(|e| self.query_error(error_text(&e)))?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.get(0);
                let body: Vec<u8> = row.get(1);
                self.event_from(id, &body)
            })
            .collect()
    }

    /// Claims deliveries for this replica (see the module docs).
    pub async fn claim(&self, keys: &[DeliveryKey]) -> Result<Vec<Claim>, FleetError> {
        let lease = self.lease_seconds();
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        let q = |e: tokio_postgres::Error| self.query_error(error_text(&e));
        let mut claims = Vec::with_capacity(keys.len());
        for key in keys {
            let won = client
                .query_opt(
                    "INSERT INTO driftwatch_deliveries (event_id, status, sink, round, owner, lease_until)
                     VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
                     ON CONFLICT (event_id, status, sink, round) DO UPDATE
                        SET owner = excluded.owner, lease_until = excluded.lease_until
                        WHERE driftwatch_deliveries.delivered_at IS NULL
                          AND (driftwatch_deliveries.owner = excluded.owner OR driftwatch_deliveries.lease_until < now())
                     RETURNING owner",
                    &[&key.event_id, &key.status, &key.sink, &key.round, &self.replica, &lease],
                )
                .await
                .map_err(q)?;
            let claim = if won.is_some() {
                Claim::Won
            } else {
                let delivered: Option<bool> = client
                    .query_opt(
                        "SELECT delivered_at IS NOT NULL FROM driftwatch_deliveries
                         WHERE event_id = $1 AND status = $2 AND sink = $3 AND round = $4",
                        &[&key.event_id, &key.status, &key.sink, &key.round],
                    )
                    .await
                    .map_err(q)?
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
    }

    /// Marks claimed deliveries done: no replica sends them again.
    pub async fn delivered(&self, keys: &[DeliveryKey]) -> Result<(), FleetError> {
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        for key in keys {
            client
                .execute(
                    "UPDATE driftwatch_deliveries SET delivered_at = now()
                     WHERE event_id = $1 AND status = $2 AND sink = $3 AND round = $4",
                    &[&key.event_id, &key.status, &key.sink, &key.round],
                )
                .await
                .map_err(|e| self.query_error(error_text(&e)))?;
        }
        Ok(())
    }

    /// Deletes resolved events (and their deliveries) older than
    /// `event_retention`, and snapshots not renewed for
    /// `baseline_retention`. Returns (events, snapshots) deleted.
    pub async fn expire(&self, event_retention: Duration, baseline_retention: Duration) -> Result<(u64, u64), FleetError> {
        let events_age = event_retention.as_secs_f64();
        let snapshots_age = baseline_retention.as_secs_f64();
        let mut guard = self.client.lock().await;
        let client = self.session(&mut guard).await?;
        // Deliveries go with their events; snapshots on their own age.
        let statements = [
            (
                "DELETE FROM driftwatch_deliveries d WHERE EXISTS (
                    SELECT 1 FROM driftwatch_events e WHERE e.id = d.event_id AND e.state = 'resolved'
                      AND e.updated_at < now() - make_interval(secs => $1))",
                events_age,
            ),
            (
                "DELETE FROM driftwatch_events WHERE state = 'resolved' AND updated_at < now() - make_interval(secs => $1)",
                events_age,
            ),
            (
                "DELETE FROM driftwatch_snapshots WHERE updated_at < now() - make_interval(secs => $1)",
                snapshots_age,
            ),
        ];
        let mut deleted = [0u64; 3];
        for ((sql, age), count) in statements.iter().zip(deleted.iter_mut()) {
            *count = client
                .execute(*sql, &[age])
                .await
                .map_err(|e| self.query_error(error_text(&e)))?;
        }
        Ok((deleted[1], deleted[2]))
    }

    /// An event as stored, under its fleet id.
    fn event_from(&self, id: String, body: &[u8]) -> Result<DriftEvent, FleetError> {
        let mut event = super::decode_event(body).map_err(|message| FleetError::Decode {
            target: self.target.clone(),
            message,
        })?;
        event.id = id;
        Ok(event)
    }

    fn lease_seconds(&self) -> f64 {
        self.lease.as_secs_f64()
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
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
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
