//! `driftwatch loadgen`: drives a collector with production-shaped OTLP/gRPC
//! traffic and measures it without flattering it.
//!
//! Production traffic ages: its event time advances with the wall clock, so a
//! collector's analysis windows fill and its evaluations run. The generator
//! therefore pre-encodes a set of request templates for the requested shape
//! (services, operations, peers, attributes and their sizes) and, for every
//! request, shifts each span's timestamps to the moment it is sent and gives
//! it fresh trace ids, by patching the fixed-width fields in place. Encoding
//! stays off the measured path, and no two requests carry the same traces.
//!
//! At a fixed rate each request has a scheduled send time, and its latency
//! is measured from that time, not from when it was actually sent: a
//! collector that stalls is charged for every request that waited behind the
//! stall (no coordinated omission).

use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::receive::codec::RawCodec;
use crate::receive::wire::{ExportTraceServiceResponse, span_kind};
use crate::rng::Rng;
use crate::tools::simulate::{AttrValue, SyntheticSpan, encode_request};

/// The traffic's shape.
#[derive(Debug, Clone, serde::Serialize, clap::Args)]
pub struct Shape {
    /// Distinct services.
    #[arg(long, default_value_t = 4)]
    pub services: usize,
    /// Server operations per service.
    #[arg(long, default_value_t = 10)]
    pub operations: usize,
    /// Outbound peers per service; each server span makes one client call
    /// to one of them. Zero sends server spans only.
    #[arg(long, default_value_t = 4)]
    pub peers: usize,
    /// Attributes per span.
    #[arg(long, default_value_t = 10)]
    pub attributes: usize,
    /// Bytes per value of the attributes beyond the ten semantic-convention
    /// ones.
    #[arg(long, default_value_t = 16)]
    pub attribute_bytes: usize,
    /// Spans per export request.
    #[arg(long, default_value_t = 512)]
    pub spans_per_request: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            services: 4,
            operations: 10,
            peers: 4,
            attributes: 10,
            attribute_bytes: 16,
            spans_per_request: 512,
        }
    }
}

pub struct LoadOptions {
    pub endpoint: String,
    pub streams: usize,
    pub duration: Duration,
    /// Spans per second in total; `None` for as fast as the collector takes.
    pub rate: Option<u64>,
    /// The collector's process, for CPU and memory figures.
    pub pid: Option<u32>,
    pub shape: Shape,
    /// Send the same event times in every request, as a replay would, instead
    /// of advancing them with the wall clock.
    pub frozen_time: bool,
    /// How often to sample the collector's RSS.
    pub sample_every: Duration,
}

#[derive(Debug, serde::Serialize)]
pub struct LoadReport {
    pub shape: Shape,
    pub event_time: &'static str,
    pub streams: usize,
    pub target_spans_per_second: Option<u64>,
    /// "scheduled send" at a fixed rate, "send" at the maximum rate.
    pub latency_measured_from: &'static str,
    pub seconds: f64,
    pub requests: u64,
    pub failed_requests: u64,
    pub accepted_spans: u64,
    pub accepted_spans_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub latency_max_ms: f64,
    pub collector_cpu_seconds: Option<f64>,
    pub collector_cpu_seconds_per_million_spans: Option<f64>,
    pub collector_peak_rss_mib: Option<f64>,
    pub collector_rss_mib: Option<f64>,
    /// (seconds since the start, RSS in MiB) every `sample_every`.
    pub collector_rss_mib_over_time: Vec<(f64, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ShapeError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("spans per request must be at least 2")]
    TooFewSpans,
    #[error("{services} services × {operations} operations is more than the generator's limit of 1,000,000")]
    TooLarge { services: usize, operations: usize },
}

impl Shape {
    pub(crate) fn validate(&self) -> Result<(), ShapeError> {
        if self.services == 0 {
            return Err(ShapeError::Zero("services"));
        }
        if self.operations == 0 {
            return Err(ShapeError::Zero("operations"));
        }
        if self.spans_per_request < 2 {
            return Err(ShapeError::TooFewSpans);
        }
        if self.services.saturating_mul(self.operations) > 1_000_000 {
            return Err(ShapeError::TooLarge {
                services: self.services,
                operations: self.operations,
            });
        }
        Ok(())
    }

    fn spans_per_trace(&self) -> usize {
        if self.peers > 0 { 2 } else { 1 }
    }

    fn traces_per_request(&self) -> usize {
        (self.spans_per_request / self.spans_per_trace()).max(1)
    }

    /// Enough templates that every (service, operation) appears, and at
    /// least 16 so that consecutive requests differ.
    fn template_count(&self) -> usize {
        (self.services * self.operations).div_ceil(self.traces_per_request()).clamp(16, 4096)
    }
}

/// One pre-encoded request and where its patchable fields sit.
struct Template {
    body: Vec<u8>,
    /// Offsets of the 16-byte trace ids.
    trace_ids: Vec<usize>,
    /// Offsets of the 8-byte span and parent span ids.
    span_ids: Vec<usize>,
    /// Offsets of the fixed64 start and end times.
    times: Vec<usize>,
    spans: u64,
}

impl Template {
    /// The request as sent: times shifted by `shift` nanoseconds, trace and
    /// span ids salted so that no two requests share a trace or a span (a
    /// span and its parent get the same salt, so they stay linked).
    fn render(&self, shift: u64, salt: u64) -> Bytes {
        let mut out = BytesMut::from(&self.body[..]);
        for &at in &self.times {
            let field = &mut out[at..at + 8];
            let time = u64::from_le_bytes(<[u8; 8]>::try_from(&field[..]).unwrap_or_default()).wrapping_add(shift);
            field.copy_from_slice(&time.to_le_bytes());
        }
        let salt = salt.to_be_bytes();
        for &at in self.trace_ids.iter().chain(&self.span_ids) {
            for (byte, s) in out[at..at + 8].iter_mut().zip(salt) {
                *byte ^= s;
            }
        }
        out.freeze()
    }
}

const ROUTES: [&str; 10] = [
    "/cart", "/checkout", "/items/{id}", "/search", "/orders/{id}", "/users/{id}", "/pay", "/login", "/stock", "/reviews",
];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

fn operation_name(operation: usize) -> (String, String) {
    let method = METHODS[operation % METHODS.len()];
    let route = ROUTES[operation % ROUTES.len()];
    let route = if operation < ROUTES.len() {
        format!("/api{route}")
    } else {
        format!("/api/v{}{route}", operation / ROUTES.len())
    };
    (format!("{method} {route}"), route)
}

/// The spans of template `index`: whole traces (a server span and, with
/// peers, its client call), grouped by service as an SDK batch is, ending
/// within the second before `base_nanos`.
fn template_spans(shape: &Shape, index: usize, base_nanos: u64) -> Vec<SyntheticSpan> {
    let traces = shape.traces_per_request();
    let pairs = shape.services * shape.operations;
    let mut rng = Rng::new(0x5eed ^ index as u64);
    let filler = "x".repeat(shape.attribute_bytes);
    let mut spans = Vec::with_capacity(shape.spans_per_request);
    for k in 0..traces {
        let global = index * traces + k;
        let pair = global % pairs;
        let (service, operation) = (pair / shape.operations, pair % shape.operations);
        let service_name = format!("svc-{service:04}");
        let (name, route) = operation_name(operation);
        // Each operation has its own typical latency, 5 to 50 ms.
        let median_ms = 5.0 + (operation * 7 % 46) as f64;
        let duration = (rng.log_normal(median_ms, 0.5) * 1e6) as u64;
        let end = base_nanos - 1_000_000_000 + (k as u64 * 1_000_000_000 / traces as u64);
        let start = end.saturating_sub(duration);
        let trace_id = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64() | 1);
        let span_id = rng.next_u64() | 1;
        let error = rng.uniform() < 0.001;
        let mut server = vec![
            ("http.request.method".to_owned(), AttrValue::from(METHODS[operation % METHODS.len()])),
            ("http.route".into(), route.as_str().into()),
            ("http.response.status_code".into(), if error { 500i64 } else { 200 }.into()),
            ("server.address".into(), format!("{service_name}.shop.svc").as_str().into()),
            ("server.port".into(), 8080i64.into()),
            ("user_agent.original".into(), "Mozilla/5.0 (X11; Linux x86_64)".into()),
            ("network.protocol.version".into(), "1.1".into()),
            ("code.function.name".into(), format!("shop.handlers.op_{operation}").as_str().into()),
            ("code.file.path".into(), "/app/shop/handlers.py".into()),
            ("code.line.number".into(), (40 + operation as i64).into()),
        ];
        pad_attributes(&mut server, shape, &filler);
        spans.push(SyntheticSpan {
            service: service_name.clone(),
            revision: "4f2c9a1e".into(),
            scope: None,
            name,
            kind: span_kind::SERVER,
            trace_id,
            span_id,
            parent_span_id: 0,
            start_unix_nanos: start,
            duration_nanos: duration,
            error,
            attributes: server,
        });
        if shape.peers > 0 && spans.len() < shape.spans_per_request {
            let peer = (global / pairs + operation) % shape.peers;
            let host = format!("peer-{peer}.internal");
            let mut client = vec![
                ("http.request.method".to_owned(), AttrValue::from("GET")),
                ("url.full".into(), format!("https://{host}/v1/items/7").as_str().into()),
                ("server.address".into(), host.as_str().into()),
                ("server.port".into(), 443i64.into()),
                ("http.response.status_code".into(), 200i64.into()),
                ("network.protocol.version".into(), "1.1".into()),
                ("user_agent.original".into(), "python-requests/2.32".into()),
                ("code.function.name".into(), format!("shop.clients.call_{peer}").as_str().into()),
                ("code.file.path".into(), "/app/shop/clients.py".into()),
                ("code.line.number".into(), (10 + peer as i64).into()),
            ];
            pad_attributes(&mut client, shape, &filler);
            spans.push(SyntheticSpan {
                service: service_name,
                revision: "4f2c9a1e".into(),
                scope: None,
                name: "GET".into(),
                kind: span_kind::CLIENT,
                trace_id,
                span_id: rng.next_u64() | 1,
                parent_span_id: span_id,
                start_unix_nanos: start + duration / 4,
                duration_nanos: duration / 2,
                error: false,
                attributes: client,
            });
        }
    }
    spans.sort_by(|a, b| a.service.cmp(&b.service));
    spans
}

/// Trims to `attributes`, or pads with `app.attr.N` values of
/// `attribute_bytes` bytes.
fn pad_attributes(attributes: &mut Vec<(String, AttrValue)>, shape: &Shape, filler: &str) {
    attributes.truncate(shape.attributes);
    for i in attributes.len()..shape.attributes {
        attributes.push((format!("app.attr.{i}"), filler.into()));
    }
}

fn build_template(shape: &Shape, index: usize, base_nanos: u64) -> anyhow::Result<Template> {
    let spans = template_spans(shape, index, base_nanos);
    let body = encode_request(&spans);
    let (trace_ids, span_ids, times) = patch_points(&body).context("walk a generated request")?;
    Ok(Template {
        body,
        trace_ids,
        span_ids,
        times,
        spans: spans.len() as u64,
    })
}

/// A generated request that the walker cannot read.
#[derive(Debug, thiserror::Error)]
#[error("malformed request: {0}")]
pub(crate) struct Malformed(String);

impl From<prost::DecodeError> for Malformed {
    fn from(e: prost::DecodeError) -> Self {
        Malformed(e.to_string())
    }
}

/// A length-delimited or fixed field's value range, by field number.
fn fields(buf: &[u8], base: usize) -> Result<Vec<(u32, Range<usize>)>, Malformed> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut rest = buf;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (field, wire) = decode_key(&mut rest)?;
        let len = match wire {
            WireType::Varint => {
                decode_varint(&mut rest)?;
                continue;
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => decode_varint(&mut rest)? as usize,
            WireType::StartGroup | WireType::EndGroup => return Err(Malformed("groups are not used".into())),
        };
        if len > rest.len() {
            return Err(Malformed("truncated field".into()));
        }
        let at = base + buf.len() - rest.len();
        out.push((field, at..at + len));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Offsets of every span's trace id, of its span and parent span ids, and
/// of its start and end times.
type PatchPoints = (Vec<usize>, Vec<usize>, Vec<usize>);

fn patch_points(body: &[u8]) -> Result<PatchPoints, Malformed> {
    let (mut trace_ids, mut span_ids, mut times) = (Vec::new(), Vec::new(), Vec::new());
    let nested = |range: Range<usize>, number: u32| -> Result<Vec<Range<usize>>, Malformed> {
        Ok(fields(&body[range.clone()], range.start)?
            .into_iter()
            .filter(|(field, _)| *field == number)
            .map(|(_, r)| r)
            .collect())
    };
    for resource_spans in nested(0..body.len(), 1)? {
        for scope_spans in nested(resource_spans, 2)? {
            for span in nested(scope_spans, 2)? {
                for (field, range) in fields(&body[span.clone()], span.start)? {
                    match field {
                        1 if range.len() == 16 => trace_ids.push(range.start),
                        2 | 4 if range.len() == 8 => span_ids.push(range.start),
                        7 | 8 if range.len() == 8 => times.push(range.start),
                        _ => {}
                    }
                }
            }
        }
    }
    Ok((trace_ids, span_ids, times))
}

struct StreamResult {
    requests: u64,
    failed: u64,
    accepted: u64,
    latency: hdrhistogram::Histogram<u64>,
}

fn unix_nanos() -> u64 {
    crate::clock::unix_nanos()
}

pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    options.shape.validate()?;
    let base = unix_nanos();
    let shape = options.shape.clone();
    let templates = tokio::task::spawn_blocking(move || {
        (0..shape.template_count())
            .map(|i| build_template(&shape, i, base))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("template builder panicked")??;
    let templates = std::sync::Arc::new(templates);
    let streams = options.streams.max(1);
    let interval = options.rate.map(|rate| {
        let per_stream = (rate as f64 / streams as f64).max(1.0);
        Duration::from_secs_f64(options.shape.spans_per_request as f64 / per_stream)
    });
    let cpu_before = options.pid.and_then(cpu_seconds);
    let started = Instant::now();
    let (stop_sampling, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = options.pid.map(|pid| {
        let every = options.sample_every.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => return samples,
                }
                match memory_mib(pid) {
                    Some((_, rss)) => samples.push((started.elapsed().as_secs_f64(), rss)),
                    None => return samples,
                }
            }
        })
    });
    let mut tasks = Vec::new();
    for stream in 0..streams {
        let run = Stream {
            endpoint: options.endpoint.clone(),
            templates: templates.clone(),
            index: stream,
            duration: options.duration,
            interval,
            base: if options.frozen_time { None } else { Some(base) },
        };
        tasks.push(tokio::spawn(run.drive()));
    }
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).context("histogram")?;
    let (mut requests, mut failed, mut accepted) = (0, 0, 0);
    for task in tasks {
        let result = task.await.context("load stream panicked")??;
        requests += result.requests;
        failed += result.failed;
        accepted += result.accepted;
        latency.add(&result.latency).context("merge latencies")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, options.pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let memory = options.pid.and_then(memory_mib);
    let mut over_time = Vec::new();
    let _ = stop_sampling.send(());
    if let Some(sampler) = sampler {
        over_time = sampler.await.context("RSS sampler panicked")?;
    }
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        shape: options.shape,
        event_time: if options.frozen_time { "frozen" } else { "advancing" },
        streams,
        target_spans_per_second: options.rate,
        latency_measured_from: if interval.is_some() { "scheduled send" } else { "send" },
        seconds,
        requests,
        failed_requests: failed,
        accepted_spans: accepted,
        accepted_spans_per_second: accepted as f64 / seconds,
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        latency_p999_ms: ms(0.999),
        latency_max_ms: latency.max() as f64 / 1000.0,
        collector_cpu_seconds: cpu,
        collector_cpu_seconds_per_million_spans: cpu.filter(|_| accepted > 0).map(|c| c * 1e6 / accepted as f64),
        collector_peak_rss_mib: memory.map(|m| m.0),
        collector_rss_mib: memory.map(|m| m.1),
        collector_rss_mib_over_time: over_time,
    })
}

/// One gRPC connection sending requests back to back, or on a schedule.
struct Stream {
    endpoint: String,
    templates: std::sync::Arc<Vec<Template>>,
    index: usize,
    duration: Duration,
    interval: Option<Duration>,
    /// The templates' event time, when it advances with the wall clock.
    base: Option<u64>,
}

impl Stream {
    async fn drive(self) -> anyhow::Result<StreamResult> {
        let endpoint = &self.endpoint;
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .with_context(|| format!("{endpoint} is not a valid endpoint"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(1 << 20);
        let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
        let mut result = StreamResult {
            requests: 0,
            failed: 0,
            accepted: 0,
            latency: hdrhistogram::Histogram::new(3)?,
        };
        let started = Instant::now();
        let deadline = started + self.duration;
        // Spread the streams' schedules over one interval.
        let mut scheduled = started + self.interval.map_or(Duration::ZERO, |i| i * self.index as u32 / 8);
        let mut sequence = 0u64;
        let mut i = self.index;
        loop {
            let now = Instant::now();
            if self.interval.is_some() {
                if scheduled >= deadline {
                    break;
                }
                if scheduled > now {
                    tokio::time::sleep(scheduled - now).await;
                }
            } else if now >= deadline {
                break;
            }
            // Latency counts from the scheduled time at a fixed rate.
            let from = if self.interval.is_some() { scheduled } else { Instant::now() };
            let template = &self.templates[i % self.templates.len()];
            let shift = self.base.map_or(0, |base| unix_nanos().saturating_sub(base));
            sequence += 1;
            let body = template.render(shift, (self.index as u64) << 48 | sequence);
            client.ready().await.context("gRPC channel")?;
            let answer = client.unary(tonic::Request::new(body), path.clone(), RawCodec).await;
            let _ = result.latency.record(from.elapsed().as_micros().max(1) as u64);
            result.requests += 1;
            i += 1;
            match answer {
                Ok(response) => {
                    let rejected = ExportTraceServiceResponse::decode(response.into_inner())
                        .ok()
                        .and_then(|r| r.partial_success)
                        .map_or(0, |p| p.rejected_spans.max(0) as u64);
                    result.accepted += template.spans - rejected.min(template.spans);
                }
                Err(_) => result.failed += 1,
            }
            if let Some(interval) = self.interval {
                scheduled += interval;
            }
        }
        Ok(result)
    }
}

/// User + system CPU seconds of a process (Linux /proc).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// (peak RSS, current RSS) in MiB.
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

impl LoadReport {
    pub fn text(&self) -> String {
        let s = &self.shape;
        let mut out = format!(
            "{} services × {} operations, {} peers, {} attributes of {} bytes, {} spans per request, event time {}\n\
             {} streams for {:.1} s: {} requests ({} failed), {:.0} accepted spans/s\n\
             latency (from {}): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            s.services,
            s.operations,
            s.peers,
            s.attributes,
            s.attribute_bytes,
            s.spans_per_request,
            self.event_time,
            self.streams,
            self.seconds,
            self.requests,
            self.failed_requests,
            self.accepted_spans_per_second,
            self.latency_measured_from,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_p999_ms,
            self.latency_max_ms,
        );
        if let Some(cpu) = self.collector_cpu_seconds {
            out.push_str(&format!(
                "\ncollector: {cpu:.2} CPU s ({:.2} CPU s per million spans), peak RSS {:.1} MiB, RSS now {:.1} MiB",
                self.collector_cpu_seconds_per_million_spans.unwrap_or(0.0),
                self.collector_peak_rss_mib.unwrap_or(0.0),
                self.collector_rss_mib.unwrap_or(0.0)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receive::wire::ExportTraceServiceRequest;

    #[test]
    fn rendering_shifts_every_time_and_salts_every_trace_without_breaking_the_request() {
        let shape = Shape {
            spans_per_request: 64,
            ..Shape::default()
        };
        let base = 1_800_000_000_000_000_000;
        let template = build_template(&shape, 3, base).expect("template");
        let original = ExportTraceServiceRequest::decode(&template.body[..]).expect("decode");
        let rendered = ExportTraceServiceRequest::decode(template.render(5_000_000_000, 0xabc)).expect("decode");
        let spans = |r: &ExportTraceServiceRequest| -> Vec<crate::receive::wire::Span> {
            r.resource_spans
                .iter()
                .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.clone()))
                .collect()
        };
        let (before, after) = (spans(&original), spans(&rendered));
        assert_eq!(before.len(), 64);
        assert_eq!(template.times.len(), 128);
        assert_eq!(template.trace_ids.len(), 64);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(a.start_time_unix_nano, b.start_time_unix_nano + 5_000_000_000);
            assert_eq!(a.end_time_unix_nano, b.end_time_unix_nano + 5_000_000_000);
            assert!(b.end_time_unix_nano <= base && b.end_time_unix_nano + 2_000_000_000 >= base, "ends just before the base");
            assert_ne!(a.trace_id, b.trace_id);
            assert_eq!(a.trace_id[8..], b.trace_id[8..]);
            assert_ne!(a.span_id, b.span_id, "no two requests share a span id");
            assert_eq!((&a.name, &a.attributes, a.kind), (&b.name, &b.attributes, b.kind));
        }
        // A client span stays in its server span's trace.
        let client = after.iter().find(|s| s.kind == span_kind::CLIENT).expect("a client span");
        let parent = after.iter().find(|s| s.span_id == client.parent_span_id).expect("its parent");
        assert_eq!(parent.trace_id, client.trace_id);
    }

    #[test]
    fn templates_cover_every_service_and_operation_of_the_shape() {
        let shape = Shape {
            services: 30,
            operations: 50,
            attributes: 50,
            attribute_bytes: 64,
            ..Shape::default()
        };
        let mut seen = std::collections::HashSet::new();
        for index in 0..shape.template_count() {
            let spans = template_spans(&shape, index, 1_800_000_000_000_000_000);
            assert_eq!(spans.len(), 512);
            assert!(spans.iter().all(|s| s.attributes.len() == 50));
            assert!(spans.windows(2).all(|w| w[0].service <= w[1].service), "grouped by service");
            seen.extend(spans.iter().filter(|s| s.kind == span_kind::SERVER).map(|s| (s.service.clone(), s.name.clone())));
        }
        assert_eq!(seen.len(), 30 * 50);
    }

    #[test]
    fn a_shape_without_services_or_spans_is_refused() {
        let zero = Shape {
            services: 0,
            ..Shape::default()
        };
        assert_eq!(zero.validate().unwrap_err().to_string(), "services must be at least 1");
        let tiny = Shape {
            spans_per_request: 1,
            ..Shape::default()
        };
        assert!(tiny.validate().is_err());
    }
}
