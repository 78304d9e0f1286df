//! The OTLP trace request as decoded on the hot path: see
//! `proto/otlp_wire.proto` for why strings are bytes and unused fields are
//! absent.

#![allow(clippy::doc_markdown, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/driftwatch.wire.rs"));

/// The `SpanKind` values of the OTLP protocol.
pub mod span_kind {
    pub const INTERNAL: i32 = 1;
    pub const SERVER: i32 = 2;
    pub const CLIENT: i32 = 3;
    pub const PRODUCER: i32 = 4;
    pub const CONSUMER: i32 = 5;
}
