//! driftwatch: an OTLP trace collector that detects runtime drift —
//! latency and error-rate regressions, fan-out, repeated unsafe calls, new
//! outbound peers and new libraries — in the services that send it traces,
//! and names the commits that caused it.
//!
//! The modules follow the data flow: [`receive`] → [`extract`] →
//! [`analyze`] (with the [`detect`]ors) → [`pipeline`] → [`attribute`] →
//! [`alert`] and [`store`]; [`expose`] serves what they found, and
//! [`server`] wires them into the running sidecar. A stage imports the
//! stages it hands data to and the vocabulary below it, never one that
//! hands data to it:
//!
//! * leaves, which import only each other: [`text`], [`rng`], [`clock`],
//!   [`authorship`], [`auth`], [`blocking`], [`memory`], [`coverage`],
//!   [`service`] (the key every stage names a service by), [`tls`],
//!   [`telemetry`] (logs and the self-metrics registry), the wire codec in
//!   [`receive`] (`wire`, `view`, `codec`, `otlp`) and [`detect`]'s `kind`
//!   and `histogram`;
//! * [`config`], then [`extract`], then the event model (`detect::event`,
//!   `detect::details`, `detect::stats`);
//! * [`store`] (with `fleet::store`) → [`analyze`] and [`detect`] (with
//!   `fleet::aggregate`, `fleet::baseline`) → [`attribute`] → [`alert`] →
//!   [`pipeline`] → [`fleet`]'s sync → [`forward`] → [`record`] → [`receive`] →
//!   [`expose`], [`verdict`] and [`serve`] → [`server`];
//! * the commands on top: [`compare`], [`gate`], and the [`tools`] (the
//!   demo, `eval`, the load generator, synthetic traffic), which production
//!   code never imports.
//!
//! `tests/layers.rs` holds this order and fails on an import against it or
//! on a cycle.
//!
//! Visibility is `pub(crate)` by default, for modules and items alike:
//! only what the binary, the integration tests, the benches and the fuzz
//! targets use is `pub`.

#![forbid(unsafe_code)]

pub mod alert;
pub mod analyze;
pub mod attribute;
pub(crate) mod auth;
pub(crate) mod authorship;
pub(crate) mod blocking;
pub mod clock;
pub mod compare;
pub mod config;
pub(crate) mod coverage;
pub mod detect;
pub(crate) mod expose;
pub mod extract;
pub mod fleet;
pub(crate) mod forward;
pub mod gate;
pub(crate) mod memory;
pub(crate) mod pipeline;
pub mod receive;
pub(crate) mod record;
pub(crate) mod rng;
pub(crate) mod serve;
pub mod server;
pub(crate) mod service;
pub mod store;
pub mod telemetry;
pub(crate) mod text;
pub mod tools;
pub mod verdict;
pub mod tls;
