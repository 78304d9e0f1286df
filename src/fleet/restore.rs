//! What a replica restores when it starts: the drift events it shows, the
//! incidents its detectors hold, and the analysis snapshots its shards
//! resume from — from its own embedded store and, in fleet mode, from the
//! fleet's database, whose version of an event wins over this replica's
//! copy. A database that is away at start is not an error: the replica
//! starts on its own and the sync joins once it answers.

use std::collections::HashSet;

use super::store::{FleetError, FleetStore};
use crate::analyze::snapshot::{SNAPSHOT_VERSION, ServiceSnapshot, reconcile};
use crate::detect::MAX_EVENTS;
use crate::detect::event::{DriftEvent, EventState, fingerprint_of};
use crate::store::{EmbeddedStore, StoreError};

/// A starting replica's state.
pub(crate) struct Restored {
    /// Every event the API shows at start.
    pub events: Vec<DriftEvent>,
    /// The shards' snapshots, reconciled with the events: a drift no event
    /// fires for is dropped, a firing event no snapshot holds is held again.
    pub snapshots: Vec<ServiceSnapshot>,
    /// Fingerprints of the drifts the restored detectors see firing.
    pub firing: Vec<String>,
    /// The fleet's database took this replica's holds on `firing` at
    /// start; else the sync takes them once the database answers.
    pub rejoined: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// Reads what this replica restores from `store` and, in fleet mode, from
/// `fleet`.
pub(crate) async fn restore(store: &EmbeddedStore, fleet: Option<&FleetStore>) -> Result<Restored, RestoreError> {
    let mut events = store.load_events()?;
    let local: HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    // The fleet's version of an event wins over this replica's copy.
    if let Some(shared) = at_start(fleet, async |f| f.events(MAX_EVENTS as i64).await).await? {
        let ids: HashSet<&str> = shared.iter().map(|e| e.id.as_str()).collect();
        events.retain(|e| !ids.contains(e.id.as_str()));
        events.extend(shared);
    }
    // Drifts this replica recorded as firing (in a fleet, still firing by
    // the fleet's account) are the ones its detectors must hold.
    let held: Vec<&DriftEvent> = events
        .iter()
        .filter(|e| e.state == EventState::Firing && local.contains(&e.id))
        .collect();
    let mut snapshots = load_snapshots(store)?;
    // A replica that lost its local store (a new volume under the same
    // name) starts from what it last published, so its next flush does not
    // erase that from the fleet.
    if let Some(published) = at_start(fleet, async |f| f.own_snapshots().await).await? {
        for (service, body) in published {
            if snapshots.iter().any(|s| s.store_key() == service) {
                continue;
            }
            match serde_json::from_slice::<ServiceSnapshot>(&body) {
                Ok(snapshot) if snapshot.version <= SNAPSHOT_VERSION => snapshots.push(snapshot),
                _ => tracing::warn!(%service, "this replica's snapshot in the fleet store is unreadable; starting afresh"),
            }
        }
    }
    reconcile(&mut snapshots, &held);
    // Drifts the restored detectors still see firing stay held: now, or by
    // the fleet sync once the database answers.
    let firing: Vec<String> = snapshots
        .iter()
        .flat_map(|s| &s.firing)
        .map(|f| fingerprint_of(&f.event_id).to_owned())
        .collect();
    let rejoined = at_start(fleet, async |f| f.rejoin(&firing).await).await?.is_some();
    Ok(Restored {
        events,
        snapshots,
        firing,
        rejoined,
    })
}

/// `read` from the fleet's database at start: `None` outside fleet mode, or
/// when the database is away (the replica starts on its own); an error that
/// retrying cannot cure (a wrong password, a newer schema) stops the start.
pub(crate) async fn at_start<T>(
    fleet: Option<&FleetStore>,
    read: impl AsyncFnOnce(&FleetStore) -> Result<T, FleetError>,
) -> Result<Option<T>, FleetError> {
    let Some(fleet) = fleet else { return Ok(None) };
    if fleet.health().error.is_some() {
        return Ok(None);
    }
    match read(fleet).await {
        Ok(value) => Ok(Some(value)),
        Err(error) if error.is_transient() => {
            tracing::warn!(%error, "the fleet's database is away: this replica starts on its own, detects locally and joins when it answers");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The analysis snapshots in the store; one this build cannot read is an
/// error naming the store, not a silent reset.
fn load_snapshots(store: &EmbeddedStore) -> Result<Vec<ServiceSnapshot>, StoreError> {
    let mut out = Vec::new();
    for (service, bytes) in store.snapshots()? {
        let snapshot: ServiceSnapshot = serde_json::from_slice(&bytes).map_err(|e| StoreError::Decode {
            path: store.path().to_owned(),
            message: format!("snapshot of service {service:?}: {e}"),
        })?;
        if snapshot.version > SNAPSHOT_VERSION {
            return Err(StoreError::NewerSchema {
                path: store.path().to_owned(),
                found: u64::from(snapshot.version),
            });
        }
        out.push(snapshot);
    }
    Ok(out)
}
