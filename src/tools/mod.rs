//! The workshop, apart from the product: the demo, the scenario corpus
//! runner (`eval`), the load generator and the synthetic traffic they share.
//! Production code never imports these (`tests/layers.rs` checks it); they
//! import the product like any client.

pub mod demo;
pub mod eval;
pub mod loadgen;
pub mod simulate;
