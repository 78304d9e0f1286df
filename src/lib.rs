//! driftwatch: an OTLP trace collector that detects runtime drift —
//! latency regressions and unexpected outbound calls — in the services that
//! send it traces.
//!
//! The modules follow the data flow: [`receive`] → [`extract`] →
//! [`analyze`] → [`expose`]. [`server`] wires them into the running sidecar.

pub mod alert;
pub mod analyze;
pub mod attribute;
pub mod auth;
pub mod authorship;
pub mod compare;
pub mod config;
pub mod coverage;
pub mod demo;
pub mod detect;
pub mod eval;
pub mod expose;
pub mod extract;
pub mod fleet;
pub mod forward;
pub mod gate;
pub mod loadgen;
pub mod memory;
pub mod pipeline;
pub mod receive;
pub mod record;
pub mod rng;
pub mod serve;
pub mod server;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod verdict;
pub mod tls;
