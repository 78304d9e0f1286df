//! The embedded store across restarts: a baseline learned by one process
//! (killed with SIGKILL after a flush) is the baseline of the next; a drift
//! that fired just before a SIGKILL, before any snapshot held it, still
//! resolves and is announced after the restart.

mod common;

use std::time::Duration;

use common::{
    Driftwatch, Receiver, checkout_traffic as checkout, eventually, free_port, http_get, metadata_call, now_nanos, send_traffic,
};
use driftwatch::tools::simulate::Rng;

const S: u64 = 1_000_000_000;

#[test]
fn a_restarted_sidecar_compares_the_new_revision_with_the_stored_baseline() {
    let store = tempfile::tempdir().expect("store");
    let config = format!(
        "[store]\npath = {:?}\nflush_interval = \"1s\"\n",
        store.path().display().to_string()
    );
    let mut rng = Rng::new(9);
    let deploy = now_nanos() / S * S - 4 * 60 * S;
    {
        let mut old = Driftwatch::start(&config);
        send_traffic(&old, &checkout("rev-1", 1.0), deploy - 12 * 60 * S, 12 * 60, &mut rng);
        eventually(Duration::from_secs(10), "rev-1 analysed", || {
            old.metrics()
                .value("driftwatch_spans_analyzed_total", &[("service_name", "checkout")])
                == 14_400.0
        });
        // A flush after the traffic is written, then no goodbye.
        old.wait_for_snapshots_written();
        old.child.kill().expect("kill -9");
        old.child.wait().expect("wait");
    }
    let new = Driftwatch::start(&config);
    send_traffic(&new, &checkout("rev-2", 1.5), deploy, 4 * 60, &mut rng);
    let url = format!("http://{}/api/v1/events", new.admin);
    let mut events = serde_json::Value::Null;
    eventually(Duration::from_secs(30), "a regression against the stored baseline", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        events = serde_json::from_str(&body).expect("JSON");
        events["events"].as_array().is_some_and(|e| !e.is_empty())
    });
    let event = &events["events"][0];
    assert_eq!(event["kind"], "latency_regression");
    assert_eq!(event["revision"], "rev-2");
    assert_eq!(event["baseline_revision"], "rev-1", "the baseline came from the store");
    assert!(
        event["stats"]["baseline"]["count"].as_u64().expect("count") >= 10_000,
        "{event}"
    );
}

#[test]
fn a_corrupt_store_stops_startup_with_a_clear_error() {
    let store = tempfile::tempdir().expect("store");
    std::fs::write(store.path().join("driftwatch.redb"), vec![0x42u8; 8192]).expect("write");
    let output = std::process::Command::new(common::driftwatch_bin())
        .arg("run")
        .env("DRIFTWATCH_STORE__PATH", store.path())
        .env("DRIFTWATCH_RECEIVER__GRPC_LISTEN", "127.0.0.1:0")
        .env("DRIFTWATCH_RECEIVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("DRIFTWATCH_ADMIN__LISTEN", "127.0.0.1:0")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("driftwatch.redb"), "{stderr}");
}

/// How a `driftwatch run` started by `run_on` stands.
enum Run {
    Exited(std::process::Output),
    Running(std::process::Child),
}

/// `driftwatch run` on `store` with extra arguments, watched for `wait`.
fn run_on(store: &std::path::Path, args: &[&str], admin: u16, wait: Duration) -> Run {
    let mut child = std::process::Command::new(common::driftwatch_bin())
        .arg("run")
        .args(args)
        .env("DRIFTWATCH_STORE__PATH", store)
        .env("DRIFTWATCH_RECEIVER__GRPC_LISTEN", "127.0.0.1:0")
        .env("DRIFTWATCH_RECEIVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("DRIFTWATCH_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return Run::Exited(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Run::Running(child)
}

fn exited(run: Run) -> std::process::Output {
    match run {
        Run::Exited(output) => output,
        Run::Running(mut child) => {
            let _ = child.kill();
            panic!("still running; expected it to refuse to start");
        }
    }
}

#[test]
fn an_empty_store_file_is_refused_and_reset_store_moves_it_aside() {
    let store = tempfile::tempdir().expect("store");
    let file = store.path().join("driftwatch.redb");
    std::fs::write(&file, b"").expect("truncate");
    let output = exited(run_on(store.path(), &[], free_port(), Duration::from_secs(20)));
    assert_eq!(output.status.code(), Some(1), "an error, not a crash");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("driftwatch.redb") && stderr.contains("empty"), "{stderr}");
    assert!(stderr.contains("--reset-store"), "the error says what to do: {stderr}");

    let admin = free_port();
    let mut child = match run_on(store.path(), &["--reset-store"], admin, Duration::from_secs(2)) {
        Run::Running(child) => child,
        Run::Exited(output) => panic!("starts with an empty store: {output:?}"),
    };
    eventually(Duration::from_secs(20), "ready", || {
        http_get(&format!("http://127.0.0.1:{admin}/readyz")).is_ok_and(|(status, _)| status == 200)
    });
    child.kill().expect("kill");
    let _ = child.wait();
    let aside: Vec<String> = std::fs::read_dir(store.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.starts_with("driftwatch.redb.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept, renamed");
}

#[test]
fn a_store_with_damaged_pages_stops_startup_with_an_error_not_a_crash() {
    let store = tempfile::tempdir().expect("store");
    let config = format!("[store]\npath = {:?}\n", store.path().display().to_string());
    {
        let mut dw = Driftwatch::start(&config);
        // An event, so the store holds records.
        metadata_call(&dw, "pay");
        // A lone call fires once event time moves on with the wall clock.
        eventually(Duration::from_secs(40), "an event", || {
            http_get(&format!("http://{}/api/v1/events", dw.admin)).is_ok_and(|(_, body)| body.contains("169.254.169.254"))
        });
        dw.terminate();
    }
    let file = store.path().join("driftwatch.redb");
    let mut bytes = std::fs::read(&file).expect("read");
    let len = bytes.len();
    assert!(len > 8192, "{len}");
    // Garbage over every page past the header.
    let mut rng = Rng::new(13);
    for b in bytes[4096..].iter_mut() {
        *b = rng.next_u64() as u8;
    }
    std::fs::write(&file, bytes).expect("corrupt");
    let output = exited(run_on(store.path(), &[], free_port(), Duration::from_secs(20)));
    assert_eq!(output.status.code(), Some(1), "an error, not a crash: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("driftwatch.redb"), "{stderr}");
}

#[test]
fn a_drift_that_fired_before_a_kill_before_any_flush_resolves_after_the_restart() {
    let store = tempfile::tempdir().expect("store");
    let receiver = Receiver::start(&[]);
    // No snapshot is written while the first process lives.
    let config = format!(
        "[store]\npath = {:?}\nflush_interval = \"1h\"\n[alerts]\ngroup_wait = \"200ms\"\n\
         [[alerts.webhook]]\nurl = \"{}\"\n",
        store.path().display().to_string(),
        receiver.url("/hook")
    );
    let mut rng = Rng::new(11);
    let deploy = now_nanos() / S * S - 8 * 60 * S;
    let url_of = |dw: &Driftwatch| format!("http://{}/api/v1/events", dw.admin);
    let events = |dw: &Driftwatch| -> Vec<serde_json::Value> {
        let Ok((200, body)) = http_get(&url_of(dw)) else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        json["events"].as_array().cloned().unwrap_or_default()
    };
    {
        let mut old = Driftwatch::start(&config);
        send_traffic(&old, &checkout("rev-1", 1.0), deploy - 10 * 60 * S, 10 * 60, &mut rng);
        send_traffic(&old, &checkout("rev-2", 1.6), deploy, 3 * 60, &mut rng);
        eventually(Duration::from_secs(20), "the firing alert delivered", || {
            receiver.requests().iter().any(|r| r.json()["status"] == "firing")
        });
        old.child.kill().expect("kill -9");
        old.child.wait().expect("wait");
    }
    let new = Driftwatch::start(&config);
    let fired = events(&new);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0]["state"], "firing");
    // The fix rolls out after the restart.
    send_traffic(&new, &checkout("rev-3", 1.0), deploy + 3 * 60 * S, 3 * 60, &mut rng);
    eventually(Duration::from_secs(30), "the resolution delivered", || {
        receiver.requests().iter().any(|r| r.json()["status"] == "resolved")
    });
    let after = events(&new);
    assert_eq!(after.len(), 1, "the same incident, not a new one: {after:#?}");
    assert_eq!(after[0]["id"], fired[0]["id"]);
    assert_eq!(after[0]["state"], "resolved");
    assert_eq!(
        after[0]["resolution"],
        serde_json::json!({"reason": "fixed", "revision": "rev-3"})
    );
    let firing_alerts = receiver
        .requests()
        .iter()
        .filter(|r| r.status == 200 && r.json()["status"] == "firing")
        .count();
    assert_eq!(firing_alerts, 1, "nobody is paged twice for one drift");
}

/// The fan-out and repeated-call baselines survive kill -9: after the
/// restart, a revision whose requests call the inventory five times each
/// (POSTs, so repeated unsafe calls too) is judged against the calls per
/// request rev-1 made before the kill, which only the store remembers.
#[test]
fn calls_per_request_baselines_survive_a_kill() {
    let store = tempfile::tempdir().expect("store");
    let config = format!(
        "[store]\npath = {:?}\nflush_interval = \"1s\"\n",
        store.path().display().to_string()
    );
    let traffic = |revision| driftwatch::tools::simulate::EndpointTraffic {
        peers: &["inventory.internal"],
        ..checkout(revision, 1.0)
    };
    let mut rng = Rng::new(12);
    let deploy = now_nanos() / S * S - 3 * 60 * S;
    {
        let mut old = Driftwatch::start(&config);
        send_traffic(&old, &traffic("rev-1"), deploy - 5 * 60 * S, 5 * 60, &mut rng);
        eventually(Duration::from_secs(10), "rev-1 analysed", || {
            old.metrics()
                .value("driftwatch_spans_analyzed_total", &[("service_name", "checkout")])
                == 12_000.0
        });
        old.wait_for_snapshots_written();
        old.child.kill().expect("kill -9");
        old.child.wait().expect("wait");
    }
    let new = Driftwatch::start(&config);
    for batch in traffic("rev-2").generate(deploy, 3 * 60, &mut rng).chunks(60) {
        let mut spans = batch.concat();
        let calls: Vec<_> = spans.iter().filter(|s| s.parent_span_id != 0).cloned().collect();
        for call in calls {
            for _ in 0..4 {
                spans.push(driftwatch::tools::simulate::SyntheticSpan {
                    span_id: rng.next_u64() | 1,
                    ..call.clone()
                });
            }
        }
        common::post_spans(&new, &spans);
    }
    let url = format!("http://{}/api/v1/events", new.admin);
    let mut events = Vec::new();
    eventually(Duration::from_secs(60), "a fan-out and a repeated call against the stored rev-1", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        events = parsed["events"].as_array().cloned().unwrap_or_default();
        ["fanout_regression", "repeated_unsafe_call"]
            .iter()
            .all(|kind| events.iter().any(|e| e["kind"] == *kind))
    });
    for event in events.iter().filter(|e| e["kind"] == "fanout_regression" || e["kind"] == "repeated_unsafe_call") {
        assert_eq!(event["peer"], "inventory.internal:443", "{event}");
        assert_eq!((event["revision"].as_str(), event["baseline_revision"].as_str()), (Some("rev-2"), Some("rev-1")));
    }
    let fanout = events.iter().find(|e| e["kind"] == "fanout_regression").expect("fan-out");
    assert!(fanout["fanout"]["baseline"]["requests"].as_u64().expect("requests") >= 5_000, "{fanout}");
    assert_eq!(fanout["fanout"]["baseline"]["max"], 1, "{fanout}");
    let repeated = events.iter().find(|e| e["kind"] == "repeated_unsafe_call").expect("repeat");
    assert!(repeated["repeats"]["baseline_requests"].as_u64().expect("requests") >= 5_000, "{repeated}");
}
