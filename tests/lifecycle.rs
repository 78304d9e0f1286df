//! The incident lifecycle end to end, through the real receivers with the
//! Python OpenTelemetry SDK as the client: a deploy slows an endpoint, a
//! documentation-only deploy still serves it slow, a fix deploy ends it.
//! On-call must see one incident — firing from the introducing revision,
//! still present in the next, resolved as fixed by the fix — and the same
//! spans sent in other batches, over the other protocol and at another
//! pace must give the same events, field for field.

mod common;

use std::time::Duration;

use common::now_nanos;
use driftwatch::tools::simulate::Rng;

const S: u64 = 1_000_000_000;

/// Server spans of two endpoints at 20 requests/s each for `minutes`,
/// from `start`; `POST /checkout` is `factor` times slower.
fn segment(revision: &str, start: u64, minutes: u64, factor: f64, rng: &mut Rng) -> serde_json::Value {
    let mut spans = Vec::new();
    for i in 0..minutes * 60 * 20 {
        let begin = start + i * S / 20;
        let ms = rng.log_normal(40.0, 0.4) * factor;
        spans.push(serde_json::json!({
            "name": "POST /checkout", "kind": "server", "start_ns": begin, "end_ns": begin + (ms * 1e6) as u64,
            "attributes": {"http.route": "/checkout"},
        }));
        let begin = begin + S / 40;
        let ms = rng.log_normal(8.0, 0.4);
        spans.push(serde_json::json!({
            "name": "GET /cart", "kind": "server", "start_ns": begin, "end_ns": begin + (ms * 1e6) as u64,
        }));
    }
    serde_json::json!({"revision": revision, "spans": spans})
}

/// Sends the plan to a fresh driftwatch and returns its events once the
/// incident has resolved.
fn replay(plan: &std::path::Path, protocol: &str, batch_size: &str, pace_ms: &str) -> serde_json::Value {
    let (dw, events) = common::replay_until_resolved(plan, protocol, batch_size, pace_ms);
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value(
            "driftwatch_drift_resolutions_total",
            &[("kind", "latency_regression"), ("reason", "fixed")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("driftwatch_drift_refires_total", &[("kind", "latency_regression")]),
        0.0
    );
    events
}

#[test]
fn one_incident_from_introduction_to_fix_the_same_on_every_replay() {
    let dir = tempfile::tempdir().expect("dir");
    let start = now_nanos() / S * S - 16 * 60 * S;
    let mut rng = Rng::new(7);
    let minute = 60 * S;
    let plan = serde_json::json!({"segments": [
        segment("rev-good", start, 6, 1.0, &mut rng),
        segment("rev-slow", start + 6 * minute, 3, 1.8, &mut rng),
        segment("rev-docs", start + 9 * minute, 3, 1.8, &mut rng),
        segment("rev-fix", start + 12 * minute, 3, 1.0, &mut rng),
    ]});
    let path = dir.path().join("plan.json");
    std::fs::write(&path, plan.to_string()).expect("write plan");

    let first = replay(&path, "grpc", "512", "0");
    let list = first["events"].as_array().expect("events");
    assert_eq!(list.len(), 1, "one incident, not one per revision: {first:#}");
    let event = &list[0];
    assert_eq!(event["kind"], "latency_regression");
    assert_eq!(event["operation"], "POST /checkout");
    assert_eq!(event["revision"], "rev-slow", "the revision that introduced it");
    assert_eq!(event["baseline_revision"], "rev-good");
    assert_eq!(
        event["seen_in"],
        serde_json::json!(["rev-docs"]),
        "still present in the docs deploy"
    );
    assert_eq!(
        event["resolution"],
        serde_json::json!({"reason": "fixed", "revision": "rev-fix"})
    );
    let resolved = humantime::parse_rfc3339(event["resolved_at"].as_str().expect("resolved_at")).expect("RFC 3339");
    let fix = std::time::UNIX_EPOCH + Duration::from_nanos(start + 12 * minute);
    assert!(resolved > fix, "resolved at {resolved:?}, before the fix deployed at {fix:?}");
    let onset = humantime::parse_rfc3339(event["onset"].as_str().expect("onset")).expect("RFC 3339");
    assert!(
        onset >= std::time::UNIX_EPOCH + Duration::from_nanos(start + 6 * minute),
        "the onset never precedes the first span of the drifting revision"
    );

    let second = replay(&path, "http", "37", "3");
    assert_eq!(first, second, "other batches, protocol and pace give the same events");
}
