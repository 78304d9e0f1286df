//! `driftwatch loadgen`: drives a collector with realistic OTLP/gRPC
//! export requests (512 spans of several services and operations, about ten
//! attributes each, one in four a client call) over N concurrent streams, at
//! a fixed or the maximum rate, and reports accepted spans/s, request
//! latency, and — given the collector's pid — its CPU time and peak RSS.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use prost::Message;

use crate::receive::grpc::RawCodec;
use crate::receive::wire::ExportTraceServiceResponse;
use crate::simulate::realistic_request;

pub const SPANS_PER_REQUEST: usize = 512;
const DISTINCT_REQUESTS: usize = 16;

pub struct LoadOptions {
    pub endpoint: String,
    pub streams: usize,
    pub duration: Duration,
    /// Spans per second in total; `None` for as fast as the collector takes.
    pub rate: Option<u64>,
    /// The collector's process, for CPU and memory figures.
    pub pid: Option<u32>,
}

#[derive(Debug, serde::Serialize)]
pub struct LoadReport {
    pub streams: usize,
    pub seconds: f64,
    pub requests: u64,
    pub failed_requests: u64,
    pub accepted_spans: u64,
    pub accepted_spans_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub collector_cpu_seconds: Option<f64>,
    pub collector_peak_rss_mib: Option<f64>,
    pub collector_rss_mib: Option<f64>,
}

struct StreamResult {
    requests: u64,
    failed: u64,
    accepted: u64,
    latency: hdrhistogram::Histogram<u64>,
}

pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let bodies: Vec<Bytes> = (0..DISTINCT_REQUESTS)
        .map(|i| Bytes::from(realistic_request(SPANS_PER_REQUEST, now - 1_000_000_000, i as u64)))
        .collect();
    let cpu_before = options.pid.and_then(cpu_seconds);
    let started = Instant::now();
    let interval = options.rate.map(|rate| {
        let per_stream = (rate as f64 / options.streams.max(1) as f64).max(1.0);
        Duration::from_secs_f64(SPANS_PER_REQUEST as f64 / per_stream)
    });
    let mut tasks = Vec::new();
    for stream in 0..options.streams.max(1) {
        let (endpoint, bodies, duration) = (options.endpoint.clone(), bodies.clone(), options.duration);
        tasks.push(tokio::spawn(async move {
            drive(endpoint, bodies, stream, duration, interval).await
        }));
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
    Ok(LoadReport {
        streams: options.streams,
        seconds,
        requests,
        failed_requests: failed,
        accepted_spans: accepted,
        accepted_spans_per_second: accepted as f64 / seconds,
        latency_p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency_p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        collector_cpu_seconds: cpu,
        collector_peak_rss_mib: memory.map(|m| m.0),
        collector_rss_mib: memory.map(|m| m.1),
    })
}

async fn drive(
    endpoint: String,
    bodies: Vec<Bytes>,
    stream: usize,
    duration: Duration,
    interval: Option<Duration>,
) -> anyhow::Result<StreamResult> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .with_context(|| format!("{endpoint} is not a valid endpoint"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))?;
    let mut client = tonic::client::Grpc::new(channel);
    let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    let mut result = StreamResult {
        requests: 0,
        failed: 0,
        accepted: 0,
        latency: hdrhistogram::Histogram::new(3)?,
    };
    let deadline = Instant::now() + duration;
    let mut next = Instant::now();
    let mut i = stream;
    while Instant::now() < deadline {
        if let Some(interval) = interval {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
            next += interval;
        }
        client.ready().await.context("gRPC channel")?;
        let sent = Instant::now();
        let answer = client
            .unary(tonic::Request::new(bodies[i % bodies.len()].clone()), path.clone(), RawCodec)
            .await;
        let _ = result.latency.record(sent.elapsed().as_micros() as u64);
        result.requests += 1;
        i += 1;
        match answer {
            Ok(response) => {
                let rejected = ExportTraceServiceResponse::decode(response.into_inner())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| p.rejected_spans.max(0) as u64);
                result.accepted += SPANS_PER_REQUEST as u64 - rejected.min(SPANS_PER_REQUEST as u64);
            }
            Err(_) => result.failed += 1,
        }
    }
    Ok(result)
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
        let mut out = format!(
            "{} streams for {:.1} s: {} requests ({} failed), {:.0} accepted spans/s, latency p50 {:.2} ms, p99 {:.2} ms",
            self.streams,
            self.seconds,
            self.requests,
            self.failed_requests,
            self.accepted_spans_per_second,
            self.latency_p50_ms,
            self.latency_p99_ms
        );
        if let Some(cpu) = self.collector_cpu_seconds {
            out.push_str(&format!(
                "\ncollector: {cpu:.2} CPU s ({:.0} spans per CPU second), peak RSS {:.1} MiB, RSS now {:.1} MiB",
                self.accepted_spans as f64 / cpu.max(1e-9),
                self.collector_peak_rss_mib.unwrap_or(0.0),
                self.collector_rss_mib.unwrap_or(0.0)
            ));
        }
        out
    }
}
