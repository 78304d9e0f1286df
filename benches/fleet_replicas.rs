//! The fleet with real replicas: N `driftwatch run` processes of one
//! service share a PostgreSQL, each fed its own share of the traffic over
//! OTLP/HTTP, as the pods of one Deployment are. It measures what the fleet
//! path costs while the traffic flows (rows and bytes each replica reads per
//! refresh, the fleet's totals per second, the database's CPU), then
//! deploys a slower revision and rolls it back, and counts the webhook
//! notifications: one firing and one resolved for the drift, however many
//! replicas saw it.
//!
//! ```text
//! cargo bench --bench fleet_replicas -- --replicas 5,50 --seconds 30
//! ```
//!
//! It needs a PostgreSQL it may create databases on
//! (`DRIFTWATCH_TEST_POSTGRES_URL`, else the local server as `scripts/test`
//! sets it up). `scripts/fleet-scale --real` runs it. It exits non-zero
//! when a drift was notified other than exactly once.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::postgres::{TestDatabase, server_cpu_seconds};
use common::{Driftwatch, Receiver, checkout_traffic, http_get, now_nanos, send_traffic};
use driftwatch::tools::simulate::{EndpointTraffic, Rng};

const S: u64 = 1_000_000_000;

struct Options {
    replicas: Vec<usize>,
    seconds: u64,
    flush_ms: u64,
    rate: u64,
}

fn options() -> Options {
    let mut options = Options {
        replicas: vec![5, 50],
        seconds: 30,
        flush_ms: 2_000,
        rate: 10,
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
        options.flush_ms = ms;
    }
    if let Some(rate) = value("--rate").and_then(|s| s.parse().ok()) {
        options.rate = rate;
    }
    options
}

/// One replica's share: `rate` requests/s of `POST /checkout`.
fn traffic(revision: &str, slowdown: f64, rate: u64) -> EndpointTraffic<'_> {
    EndpointTraffic {
        requests_per_second: rate,
        ..checkout_traffic(revision, slowdown)
    }
}

/// Sends `seconds` of traffic from `start` to every replica at once, each
/// with its own seed.
fn to_all(replicas: &[Driftwatch], traffic: &EndpointTraffic<'_>, start: u64, seconds: u64, seed: u64) {
    std::thread::scope(|scope| {
        for (i, dw) in replicas.iter().enumerate() {
            scope.spawn(move || send_traffic(dw, traffic, start, seconds, &mut Rng::new(seed * 1_000 + i as u64)));
        }
    });
}

fn events(dw: &Driftwatch) -> Vec<serde_json::Value> {
    let Ok((200, body)) = http_get(&format!("http://{}/api/v1/events", dw.admin)) else {
        return Vec::new();
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["events"].as_array().cloned())
        .unwrap_or_default()
}

/// Each replica's fleet-path counters: rows read, bytes read, rows
/// written, bytes written, refreshes.
fn counters(replicas: &[Driftwatch]) -> Vec<[f64; 5]> {
    replicas
        .iter()
        .map(|dw| {
            let m = dw.metrics();
            [
                m.value("driftwatch_fleet_rows_total", &[("direction", "read")]),
                m.value("driftwatch_fleet_bytes_total", &[("direction", "read")]),
                m.value("driftwatch_fleet_rows_total", &[("direction", "written")]),
                m.value("driftwatch_fleet_bytes_total", &[("direction", "written")]),
                m.value("driftwatch_fleet_operation_duration_seconds_count", &[("operation", "refresh")]),
            ]
        })
        .collect()
}

/// Polls `check` every 200 ms until it holds; false when `timeout` passes.
fn within(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

struct Measured {
    replicas: usize,
    seconds: f64,
    refreshes: f64,
    totals: [f64; 4],
    cpu: f64,
    detect_seconds: Option<f64>,
    firing: usize,
    resolved: usize,
    replicas_firing: usize,
    replicas_resolved: usize,
}

fn measure(n: usize, options: &Options) -> Measured {
    let db = TestDatabase::create();
    let webhook = Receiver::start(&[]);
    let lease_ms = options.flush_ms * 3;
    let config = |i: usize| {
        format!(
            "[store]\npostgres_url = {:?}\nreplica = \"checkout-{i}\"\nflush_interval = \"{}ms\"\nfleet_lease = \"{lease_ms}ms\"\n\
             [alerts]\ngroup_wait = \"200ms\"\n[[alerts.webhook]]\nurl = \"{}\"\n",
            db.url,
            options.flush_ms,
            webhook.url("/hook")
        )
    };
    // Started a few at a time: each waits for its own /readyz.
    let mut replicas: Vec<Driftwatch> = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let started: Vec<Driftwatch> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk.iter().map(|&i| scope.spawn(move || Driftwatch::start(&config(i)))).collect();
            handles.into_iter().map(|h| h.join().expect("replica start")).collect()
        });
        replicas.extend(started);
    }
    let rate = options.rate;
    // The drift's revision deploys 8 minutes ago; the first 10 minutes of
    // the old revision's 12 go in at once.
    let deploy = now_nanos() / S * S - 8 * 60 * S;
    let learn_from = deploy - 12 * 60 * S;
    to_all(&replicas, &traffic("rev-1", 1.0, rate), learn_from, 10 * 60, 1);

    // Steady traffic, measured: the last 2 minutes of the old revision,
    // paced over `seconds`, so event time advances and snapshots change.
    let before = counters(&replicas);
    let cpu_before = server_cpu_seconds();
    let started = Instant::now();
    let slices = options.seconds.max(1);
    let step = (2 * 60 / slices).max(1);
    let mut at = learn_from + 10 * 60 * S;
    for slice in 0..slices {
        let due = started + Duration::from_secs(slice);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let seconds = if slice + 1 == slices { (deploy - at) / S } else { step };
        to_all(&replicas, &traffic("rev-1", 1.0, rate), at, seconds, 100 + slice);
        at += seconds * S;
    }
    std::thread::sleep(Duration::from_millis(options.flush_ms));
    let seconds = started.elapsed().as_secs_f64();
    let cpu = server_cpu_seconds() - cpu_before;
    let after = counters(&replicas);
    let mut totals = [0.0; 4];
    let mut refreshes = 0.0;
    for (a, b) in after.iter().zip(&before) {
        for k in 0..4 {
            totals[k] += a[k] - b[k];
        }
        refreshes += a[4] - b[4];
    }

    let delivered = |status: &str| {
        webhook
            .requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .filter(|r| r.json()["status"] == status)
            .count()
    };
    let settle = Duration::from_millis(lease_ms * 2);
    // The slower revision on every replica, then the rollback.
    let drift_sent = Instant::now();
    to_all(&replicas, &traffic("rev-2", 1.6, rate), deploy, 4 * 60, 2);
    let detected = within(Duration::from_secs(120), || delivered("firing") > 0);
    let detect_seconds = detected.then(|| drift_sent.elapsed().as_secs_f64());
    within(Duration::from_secs(60), || {
        replicas.iter().all(|dw| events(dw).iter().any(|e| e["state"] == "firing"))
    });
    let replicas_firing = replicas.iter().filter(|dw| events(dw).iter().any(|e| e["state"] == "firing")).count();
    std::thread::sleep(settle);

    to_all(&replicas, &traffic("rev-1", 1.0, rate), deploy + 4 * 60 * S, 3 * 60, 3);
    within(Duration::from_secs(120), || delivered("resolved") > 0);
    within(Duration::from_secs(60), || {
        replicas
            .iter()
            .all(|dw| events(dw).iter().all(|e| e["state"] == "resolved"))
    });
    let replicas_resolved = replicas
        .iter()
        .filter(|dw| {
            let events = events(dw);
            !events.is_empty() && events.iter().all(|e| e["state"] == "resolved")
        })
        .count();
    std::thread::sleep(settle);
    Measured {
        replicas: n,
        seconds,
        refreshes,
        totals,
        cpu,
        detect_seconds,
        firing: delivered("firing"),
        resolved: delivered("resolved"),
        replicas_firing,
        replicas_resolved,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and starts every bench: this one
        // starts dozens of processes for minutes, so only under `cargo bench`.
        println!("fleet_replicas: run with `cargo bench --bench fleet_replicas` (scripts/fleet-scale --real)");
        return;
    }
    let options = options();
    println!(
        "fleet with real replicas: one service, {} requests/s per replica, flush every {} ms, {} s of steady traffic per size",
        options.rate, options.flush_ms, options.seconds
    );
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>14} {:>12} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "replicas",
        "refreshes",
        "rows read/s",
        "KB read/s",
        "B read/round",
        "rows wrtn/s",
        "db CPU (%)",
        "detect s",
        "firing",
        "resolved",
        "saw/ended"
    );
    let mut once = true;
    for &n in &options.replicas {
        let m = measure(n, &options);
        let per_second = |v: f64| v / m.seconds;
        println!(
            "{:>8} {:>10.0} {:>12.1} {:>12.1} {:>14.0} {:>12.1} {:>11.1} {:>9} {:>9} {:>9} {:>9}",
            m.replicas,
            m.refreshes,
            per_second(m.totals[0]),
            per_second(m.totals[1]) / 1024.0,
            if m.refreshes > 0.0 { m.totals[1] / m.refreshes } else { 0.0 },
            per_second(m.totals[2]),
            100.0 * m.cpu / m.seconds,
            m.detect_seconds.map_or("-".to_owned(), |s| format!("{s:.1}")),
            m.firing,
            m.resolved,
            format!("{}/{}", m.replicas_firing, m.replicas_resolved),
        );
        once &= m.firing == 1 && m.resolved == 1;
    }
    println!("B read/round: bytes one replica reads per flush round (its publish and its refresh); saw/ended: replicas that showed the drift firing, then resolved");
    println!("firing, resolved: webhook notifications the fleet delivered for the one drift");
    if !once {
        eprintln!("fleet_replicas: a drift was not notified exactly once firing and once resolved");
        std::process::exit(1);
    }
}
