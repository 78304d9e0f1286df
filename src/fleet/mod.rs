//! Fleet mode: the replicas of a service share one PostgreSQL database, so
//! that baselines, incidents and alert deliveries outlive the pods that saw
//! them.
//!
//! The wing has five parts, each at its own layer of the data flow:
//!
//! * [`store`]: the database — snapshots and aggregates, events, leases on
//!   firing drifts, delivery claims; what it guarantees is in its docs;
//! * [`aggregate`]: the sum of every replica's snapshot of a service, kept
//!   in the database and updated by exact subtraction and addition;
//! * [`baseline`]: the other replicas' merged view of a service, which the
//!   analysis consults beside its own state;
//! * [`restore`]: what a replica restores at start, from its own store and
//!   the fleet's database;
//! * [`sync`]: the background task that publishes this replica's snapshots,
//!   reads the aggregates, hands the shards their baselines, keeps the
//!   leases and sweeps events.

pub(crate) mod aggregate;
pub(crate) mod baseline;
pub(crate) mod restore;
pub mod store;
pub(crate) mod sync;

pub use sync::{FleetSync, combine, replica_name};
