//! The fleet path's cost against a real PostgreSQL, as the number of
//! replicas grows: what one replica and the whole fleet read and write per
//! second, and the CPU the database spends, for N simulated replicas of one
//! service that each publish a changed snapshot and refresh their baseline
//! every flush interval (a fleet under steady traffic).
//!
//! ```text
//! cargo bench --bench fleet_scale -- --replicas 5,50,500 --seconds 20
//! ```
//!
//! The replicas share one process and a pool of sessions (500 separate
//! processes would not fit here); each publishes and reads under its own
//! name, exactly as a sidecar does. It needs a PostgreSQL it may create a
//! database on: `DRIFTWATCH_TEST_POSTGRES_URL`, else the local server as
//! `scripts/test` sets it up. `scripts/fleet-scale` runs it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftwatch::analyze::service::AnalysisSettings;
use driftwatch::analyze::snapshot::{PeerSnapshot, RevisionSnapshot, SNAPSHOT_VERSION, SeriesSnapshot, ServiceSnapshot};
use driftwatch::fleet::{FleetSync, combine};
use driftwatch::fleet::store::FleetStore;

const S: u64 = 1_000_000_000;

struct Options {
    replicas: Vec<usize>,
    seconds: u64,
    flush: Duration,
    operations: usize,
    sessions: usize,
}

fn options() -> Options {
    let mut options = Options {
        replicas: vec![5, 50, 500],
        seconds: 20,
        flush: Duration::from_secs(2),
        operations: 30,
        sessions: 8,
    };
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let Some(list) = value("--replicas") {
        options.replicas = list.split(',').filter_map(|n| n.trim().parse().ok()).collect();
    }
    if let Some(seconds) = value("--seconds").and_then(|s| s.parse().ok()) {
        options.seconds = seconds;
    }
    if let Some(ms) = value("--flush-ms").and_then(|s| s.parse().ok()) {
        options.flush = Duration::from_millis(ms);
    }
    if let Some(n) = value("--operations").and_then(|s| s.parse().ok()) {
        options.operations = n;
    }
    if let Some(n) = value("--sessions").and_then(|s| s.parse().ok()) {
        options.sessions = n;
    }
    options
}

/// Replica `replica`'s snapshot after `round` flushes: `operations`
/// operations of two revisions, every count grown since the last round.
fn snapshot(replica: usize, round: u64, operations: usize) -> Vec<u8> {
    let start = 1_700_000_000 * S;
    let watermark = start + (600 + round * 2) * S;
    let grown = |base: u64| base + round * (1 + replica as u64 % 7);
    let mut series = Vec::new();
    for op in 0..operations {
        for revision in ["rev-1", "rev-2"] {
            let spans = grown(200 + op as u64);
            series.push(SeriesSnapshot {
                operation: format!("GET /api/v1/resource-{op}"),
                revision: revision.into(),
                // About forty buckets, as a real latency spread gives.
                buckets: (0..40u64).map(|b| (1_000 + b * b * 250, 1 + (spans + b) % 17)).collect(),
                moments: (0..10u64)
                    .map(|w| (start + w * 60 * S, spans / 10, spans as f64 * 0.34, spans as f64 * 1.16))
                    .collect(),
                clean_evaluations: (round % 5) as u32,
                errors: vec![(start, 1 + round % 3)],
            });
        }
    }
    let body = ServiceSnapshot {
        version: SNAPSHOT_VERSION,
        service: "checkout".into(),
        environment: Some("production".into()),
        watermark,
        first_seen: Some(start),
        revisions: ["rev-1", "rev-2"]
            .iter()
            .map(|r| RevisionSnapshot {
                revision: (*r).into(),
                first_seen: start,
                last_seen: watermark,
                spans: grown(10_000),
                repository: None,
            })
            .collect(),
        series,
        peers: (0..8)
            .map(|p| PeerSnapshot {
                peer: format!("peer-{p}.internal:443"),
                first_seen: start,
                last_seen: watermark,
                calls: grown(100),
            })
            .collect(),
        scopes: Vec::new(),
        firing: Vec::new(),
        calls: Vec::new(),
        repeats: Vec::new(),
        regressed: Vec::new(),
        unsettled: Vec::new(),
    };
    serde_json::to_vec(&body).expect("JSON")
}

struct Measured {
    replicas: usize,
    rounds: u64,
    seconds: f64,
    rows_read: u64,
    bytes_read: u64,
    rows_written: u64,
    bytes_written: u64,
    cpu: f64,
    slowest_round: Duration,
}

async fn measure(admin_url: &str, replicas: usize, options: &Options) -> Measured {
    let name = format!("driftwatch_fleet_scale_{replicas}");
    let (admin, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    for sql in [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")] {
        admin.batch_execute(&sql).await.expect("create the bench database");
    }
    let url = match admin_url.rfind('/') {
        Some(i) => format!("{}/{name}", &admin_url[..i]),
        None => panic!("DRIFTWATCH_TEST_POSTGRES_URL must name a database"),
    };
    let base = FleetStore::open_sized(&url, "replica-0".into(), Duration::from_secs(30), options.sessions).expect("open");
    let stores: Vec<Arc<FleetStore>> = (0..replicas)
        .map(|i| Arc::new(base.as_replica(format!("replica-{i}"))))
        .collect();
    let layout = AnalysisSettings::from_config(&driftwatch::config::Config::default()).layout;
    let services = vec!["checkout\u{1f}production".to_owned()];
    // Every replica publishes once before the clock starts: the fleet is up.
    for (i, store) in stores.iter().enumerate() {
        store
            .publish(&services[0], &snapshot(i, 0, options.operations), &combine)
            .await
            .expect("publish");
    }
    let totals = |stores: &[Arc<FleetStore>]| {
        stores.iter().fold([0u64; 4], |mut sum, s| {
            for (a, b) in sum.iter_mut().zip(s.io().totals()) {
                *a += b;
            }
            sum
        })
    };
    let before = totals(&stores);
    let cpu_before = common::postgres::server_cpu_seconds();
    let started = Instant::now();
    let mut rounds = 0;
    let mut slowest_round = Duration::ZERO;
    let mut versions: Vec<Vec<(String, i64)>> = vec![Vec::new(); replicas];
    while started.elapsed() < Duration::from_secs(options.seconds) {
        rounds += 1;
        let round_started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, store) in stores.iter().enumerate() {
            let store = store.clone();
            let services = services.clone();
            let known = std::mem::take(&mut versions[i]);
            let operations = options.operations;
            tasks.spawn(async move {
                store
                    .publish(&services[0], &snapshot(i, rounds, operations), &combine)
                    .await
                    .expect("publish");
                let read = FleetSync::baselines(&store, layout, Some(&services), &known)
                    .await
                    .expect("refresh");
                let known: Vec<(String, i64)> = match read.first() {
                    Some((service, version, _, _)) => vec![(service.clone(), *version)],
                    None => known,
                };
                (i, known)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, known) = done.expect("replica");
            versions[i] = known;
        }
        let took = round_started.elapsed();
        slowest_round = slowest_round.max(took);
        if let Some(rest) = options.flush.checked_sub(took) {
            tokio::time::sleep(rest).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = totals(&stores);
    let cpu = common::postgres::server_cpu_seconds() - cpu_before;
    drop(stores);
    drop(base);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    Measured {
        replicas,
        rounds,
        seconds,
        rows_read: after[0] - before[0],
        bytes_read: after[1] - before[1],
        rows_written: after[2] - before[2],
        bytes_written: after[3] - before[3],
        cpu,
        slowest_round,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and starts every bench: this one
        // needs a database and minutes, so it runs only under `cargo bench`.
        println!("fleet_scale: run with `cargo bench --bench fleet_scale` (scripts/fleet-scale)");
        return;
    }
    let options = options();
    let url = std::env::var("DRIFTWATCH_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "fleet scale: one service, {} operations x 2 revisions, a changed snapshot per replica every {:?}, {} s per size",
        options.operations, options.flush, options.seconds
    );
    println!(
        "{:>8} {:>7} {:>14} {:>14} {:>15} {:>15} {:>16} {:>13} {:>11}",
        "replicas", "rounds", "rows read/s", "rows wrtn/s", "KB read/s", "KB wrtn/s", "B read/replica", "db CPU (%)", "slowest (s)"
    );
    for &replicas in &options.replicas {
        let m = runtime.block_on(measure(&url, replicas, &options));
        let per_second = |v: u64| v as f64 / m.seconds;
        println!(
            "{:>8} {:>7} {:>14.1} {:>14.1} {:>15.1} {:>15.1} {:>16.0} {:>13.1} {:>11.2}",
            m.replicas,
            m.rounds,
            per_second(m.rows_read),
            per_second(m.rows_written),
            per_second(m.bytes_read) / 1024.0,
            per_second(m.bytes_written) / 1024.0,
            m.bytes_read as f64 / (m.rounds as f64 * m.replicas as f64),
            100.0 * m.cpu / m.seconds,
            m.slowest_round.as_secs_f64(),
        );
    }
    println!("B read/replica: bytes one replica reads per round (its publish and its refresh)");
}
