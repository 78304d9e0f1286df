//! `driftwatch demo`: a self-contained run on free loopback ports. It starts
//! driftwatch in-process, drives synthetic services through OTLP/HTTP, and
//! reports what was received and analysed.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::config::Config;
use crate::server::Server;
use crate::simulate::{Rng, SyntheticSpan, encode_request};

const SERVICES: &[(&str, &[&str])] = &[
    ("checkout", &["POST /checkout", "GET /cart"]),
    ("inventory", &["GET /items/{id}", "PUT /items/{id}/reserve"]),
];
const REVISIONS: &[&str] = &["rev-a", "rev-b", "rev-c"];
const SPANS_PER_BATCH: usize = 256;
const BATCHES_PER_REVISION: usize = 20;

pub async fn run() -> anyhow::Result<()> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = Config::default();
    config.receiver.grpc_listen = loopback;
    config.receiver.http_listen = loopback;
    config.admin.listen = loopback;
    let server = Server::start(config).await?;
    println!("driftwatch demo: OTLP/gRPC on {}, OTLP/HTTP on {}, admin on http://{}", server.grpc_addr(), server.http_addr(), server.admin_addr());

    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/traces", server.http_addr());
    let mut rng = Rng::new(7);
    let started = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let mut event_time = now - 3_600 * 1_000_000_000;
    let mut sent = 0usize;
    for revision in REVISIONS {
        for _ in 0..BATCHES_PER_REVISION {
            for (service, operations) in SERVICES {
                let spans: Vec<SyntheticSpan> = (0..SPANS_PER_BATCH)
                    .map(|i| {
                        event_time += 5_000_000;
                        SyntheticSpan {
                            service: (*service).into(),
                            revision: (*revision).into(),
                            name: operations[i % operations.len()].into(),
                            kind: crate::receive::wire::span_kind::SERVER,
                            trace_id: u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()),
                            span_id: rng.next_u64() | 1,
                            parent_span_id: 0,
                            start_unix_nanos: event_time,
                            duration_nanos: (rng.log_normal(40.0, 0.4) * 1e6) as u64,
                            error: false,
                            attributes: vec![],
                        }
                    })
                    .collect();
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(encode_request(&spans))
                    .send()
                    .await
                    .context("demo traffic could not reach the OTLP/HTTP receiver")?;
                anyhow::ensure!(response.status().is_success(), "receiver answered {}", response.status());
                sent += spans.len();
            }
        }
        println!("  sent revision {revision}: {sent} spans so far");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.ingest().metrics().analysis_queue_spans.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (service, _) in SERVICES {
        let analyzed = server.ingest().metrics().spans_analyzed.with_label_values(&[service]).get();
        println!("  {service}: {analyzed} spans analysed");
    }
    println!("driftwatch demo: {sent} spans in {:.1?}", started.elapsed());
    server.shutdown().await?;
    Ok(())
}
