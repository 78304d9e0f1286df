//! Compiles `proto/*.proto` with protox (pure Rust, no `protoc` needed).
//!
//! Two sets of messages come out of it:
//! * `driftwatch.wire`, the lenient view the hot path decodes, whose `bytes`
//!   fields borrow from the received buffer;
//! * the OTLP trace messages as published (`proto/opentelemetry`, OTLP
//!   1.10.0), with serde derives for the OTLP/JSON encoding: camelCase
//!   keys, hex trace and span ids, 64-bit integers as strings, enums as
//!   numbers, unknown keys ignored.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(
        ["otlp_wire.proto", "opentelemetry/proto/collector/trace/v1/trace_service.proto"],
        ["proto"],
    )?;
    let mut config = prost_build::Config::new();
    config.bytes([".driftwatch"]);
    // Every message but `AnyValue`, whose oneof is written by hand in
    // `receive::otlp::json`.
    for path in [
        ".opentelemetry.proto.collector",
        ".opentelemetry.proto.trace",
        ".opentelemetry.proto.resource",
        ".opentelemetry.proto.common.v1.ArrayValue",
        ".opentelemetry.proto.common.v1.KeyValueList",
        ".opentelemetry.proto.common.v1.KeyValue",
        ".opentelemetry.proto.common.v1.InstrumentationScope",
        ".opentelemetry.proto.common.v1.EntityRef",
    ] {
        config.message_attribute(
            path,
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\", default)]",
        );
    }
    let json = "crate::receive::otlp::json";
    for (path, with) in [
        (".opentelemetry.proto.trace.v1.Span.trace_id", "hex_bytes"),
        (".opentelemetry.proto.trace.v1.Span.span_id", "hex_bytes"),
        (".opentelemetry.proto.trace.v1.Span.parent_span_id", "hex_bytes"),
        (".opentelemetry.proto.trace.v1.Span.start_time_unix_nano", "int_string"),
        (".opentelemetry.proto.trace.v1.Span.end_time_unix_nano", "int_string"),
        (".opentelemetry.proto.trace.v1.Span.Event.time_unix_nano", "int_string"),
        (".opentelemetry.proto.trace.v1.Span.Link.trace_id", "hex_bytes"),
        (".opentelemetry.proto.trace.v1.Span.Link.span_id", "hex_bytes"),
        (".opentelemetry.proto.collector.trace.v1.ExportTracePartialSuccess.rejected_spans", "int_string"),
    ] {
        config.field_attribute(path, format!("#[serde(with = \"{json}::{with}\")]"));
    }
    config.compile_fds(files)?;
    Ok(())
}
