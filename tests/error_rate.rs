//! Error-rate regressions end to end, through the real receivers with the
//! Python OpenTelemetry SDK as the client. A deploy makes `POST /checkout`
//! fail six times as often, some failures marked by span status and some
//! only by a 503 response; a documentation-only deploy still fails; a fix
//! ends it. Meanwhile `GET /cart` calls a flaky dependency and fails 3% of
//! the time in every revision alike: that is no regression, and must not
//! page anyone. The same spans sent in other batches, over the other
//! protocol and at another pace give the same events.

mod common;

use std::time::Duration;

use common::now_nanos;
use driftwatch::tools::simulate::Rng;

const S: u64 = 1_000_000_000;

/// Server spans of two endpoints at 20 requests/s each for `minutes` from
/// `start`: `POST /checkout` fails with probability `checkout_errors`
/// (those marked by status record an `exception` of type `exception`),
/// `GET /cart` with 3%.
fn segment(revision: &str, start: u64, minutes: u64, checkout_errors: f64, exception: &str, rng: &mut Rng) -> serde_json::Value {
    let mut spans = Vec::new();
    for i in 0..minutes * 60 * 20 {
        let begin = start + i * S / 20;
        let ms = rng.log_normal(40.0, 0.4);
        let mut span = serde_json::json!({
            "name": "POST /checkout", "kind": "server", "start_ns": begin, "end_ns": begin + (ms * 1e6) as u64,
            "attributes": {"http.route": "/checkout", "http.response.status_code": 200},
        });
        if rng.uniform() < checkout_errors {
            // Half are marked by status, half only by the response code.
            if rng.uniform() < 0.5 {
                span["error"] = serde_json::json!(true);
                span["exception"] = serde_json::json!(exception);
                span["attributes"]["http.response.status_code"] = serde_json::json!(500);
            } else {
                span["attributes"]["http.response.status_code"] = serde_json::json!(503);
                span["attributes"]["error.type"] = serde_json::json!("503");
            }
        }
        spans.push(span);
        let begin = begin + S / 40;
        let ms = rng.log_normal(8.0, 0.4);
        spans.push(serde_json::json!({
            "name": "GET /cart", "kind": "server", "start_ns": begin, "end_ns": begin + (ms * 1e6) as u64,
            "error": rng.uniform() < 0.03,
        }));
    }
    serde_json::json!({"revision": revision, "spans": spans})
}

/// Sends the plan to a fresh driftwatch and returns its events once every
/// incident has resolved.
fn replay(plan: &std::path::Path, protocol: &str, batch_size: &str, pace_ms: &str) -> serde_json::Value {
    let (dw, events) = common::replay_until_resolved(plan, protocol, batch_size, pace_ms);
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value(
            "driftwatch_drift_resolutions_total",
            &[("kind", "error_rate_regression"), ("reason", "fixed")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("driftwatch_drifts_firing", &[("kind", "error_rate_regression")]),
        0.0
    );
    events
}

#[test]
fn a_deploy_that_fails_more_often_is_one_incident_until_fixed_and_a_flaky_dependency_is_none() {
    let dir = tempfile::tempdir().expect("dir");
    let start = now_nanos() / S * S - 16 * 60 * S;
    let mut rng = Rng::new(11);
    let minute = 60 * S;
    let plan = serde_json::json!({"segments": [
        segment("rev-good", start, 6, 0.005, "TimeoutError", &mut rng),
        segment("rev-bad", start + 6 * minute, 3, 0.03, "DoubleChargeError", &mut rng),
        segment("rev-docs", start + 9 * minute, 3, 0.03, "DoubleChargeError", &mut rng),
        segment("rev-fix", start + 12 * minute, 3, 0.005, "TimeoutError", &mut rng),
    ]});
    let path = dir.path().join("plan.json");
    std::fs::write(&path, plan.to_string()).expect("write plan");

    let first = replay(&path, "grpc", "512", "0");
    let list = first["events"].as_array().expect("events");
    assert_eq!(list.len(), 1, "one incident, and none for the flaky dependency: {first:#}");
    let event = &list[0];
    assert_eq!(event["kind"], "error_rate_regression");
    assert_eq!(event["operation"], "POST /checkout");
    assert_eq!(event["revision"], "rev-bad", "the revision that introduced it");
    assert_eq!(event["baseline_revision"], "rev-good");
    assert_eq!(event["seen_in"], serde_json::json!(["rev-docs"]));
    assert_eq!(
        event["resolution"],
        serde_json::json!({"reason": "fixed", "revision": "rev-fix"})
    );
    let rates = &event["stats"]["error_rate"];
    let (before, after) = (
        rates["baseline"].as_f64().expect("baseline rate"),
        rates["current"].as_f64().expect("current rate"),
    );
    assert!(before < 0.012 && after > 0.018, "rates {before} -> {after}");
    let new_types: Vec<&str> = rates["new_error_types"]
        .as_array()
        .expect("new error types")
        .iter()
        .map(|t| t["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        new_types,
        ["DoubleChargeError"],
        "the exception new in rev-bad; not the 503s nor the timeouts the baseline had too"
    );
    // The rate over time: the baseline's windows, then the deploy's, their
    // rates on each side of the deploy as the totals say.
    let timeline = rates["timeline"].as_array().expect("timeline");
    let side = |current: bool| -> (u64, u64) {
        timeline
            .iter()
            .filter(|p| p["current"] == current)
            .fold((0, 0), |(s, e), p| (s + p["spans"].as_u64().expect("spans"), e + p["errors"].as_u64().expect("errors")))
    };
    let ((base_spans, base_errors), (cur_spans, cur_errors)) = (side(false), side(true));
    assert!(base_spans > 0 && cur_spans > 0, "{timeline:?}");
    assert!((cur_errors as f64 / cur_spans as f64) > 2.0 * (base_errors as f64 / base_spans as f64), "{timeline:?}");
    let starts: Vec<u64> = timeline.iter().map(|p| p["start_ms"].as_u64().expect("start")).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert!(event["stats"]["p_value"].as_f64().expect("p") < 0.005);
    assert!(event["stats"]["current"]["count"].as_u64().expect("count") >= 200);
    assert_eq!(event["code"]["route"], "/checkout");
    let onset = humantime::parse_rfc3339(event["onset"].as_str().expect("onset")).expect("RFC 3339");
    assert!(onset >= std::time::UNIX_EPOCH + Duration::from_nanos(start + 6 * minute));

    let second = replay(&path, "http", "37", "3");
    assert_eq!(first, second, "other batches, protocol and pace give the same events");
}
