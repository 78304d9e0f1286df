//! Latency drift end to end: the Python OpenTelemetry SDK sends a deploy
//! with a regression through the real gRPC receiver (explicit span times,
//! so event time is under the test's control), and the event is read back
//! from the API. Also the scenario corpus against the README's targets,
//! the incident lifecycle's included (no false resolve, coverage).

mod common;

use std::time::Duration;

use common::{Driftwatch, eventually, http_get, now_nanos, run_python};
use driftwatch::tools::simulate::Rng;

const S: u64 = 1_000_000_000;

/// A plan for `send_spans.py`: server spans at `rate`/s from `start` for
/// `seconds`, log-normal around `median_ms` times `factor`.
fn plan(start: u64, seconds: u64, rate: u64, median_ms: f64, factor: f64, seed: u64) -> serde_json::Value {
    let mut rng = Rng::new(seed);
    let mut spans = Vec::new();
    for i in 0..seconds * rate {
        let begin = start + i * S / rate;
        let ms = rng.log_normal(median_ms, 0.4) * factor;
        spans.push(serde_json::json!({
            "name": "POST /checkout",
            "kind": "server",
            "start_ns": begin,
            "end_ns": begin + (ms * 1e6) as u64,
            "attributes": {"http.route": "/checkout", "code.function": "charge_card", "code.filepath": "src/pay.py"},
        }));
        let begin = begin + S / rate / 2;
        spans.push(serde_json::json!({
            "name": "GET /cart", "kind": "server", "start_ns": begin, "end_ns": begin + (rng.log_normal(8.0, 0.4) * 1e6) as u64,
        }));
    }
    serde_json::json!({ "spans": spans })
}

/// Sends the plan at `path` as revision `revision` of `checkout` with the
/// Python SDK over gRPC.
fn send_plan(endpoint: &str, revision: &str, path: &std::path::Path) {
    run_python(
        "send_spans.py",
        &[
            "--protocol",
            "grpc",
            "--endpoint",
            endpoint,
            "--service",
            "checkout",
            "--revision",
            revision,
            "--plan",
            path.to_str().expect("utf-8"),
        ],
        &[],
    );
}

#[test]
fn python_sdk_regression_is_detected_and_served_by_the_api() {
    let dw = Driftwatch::start("");
    let dir = tempfile::tempdir().expect("dir");
    let deploy = now_nanos() / S * S - 8 * 60 * S;
    let before = deploy - 10 * 60 * S;
    let endpoint = format!("http://{}", dw.grpc);
    for (name, start, seconds, factor, revision) in [
        ("before.json", before, 600, 1.0, "rev-good"),
        ("after.json", deploy, 240, 1.5, "rev-slow"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, plan(start, seconds, 20, 40.0, factor, start).to_string()).expect("write plan");
        send_plan(&endpoint, revision, &path);
    }

    let url = format!("http://{}/api/v1/events", dw.admin);
    let mut events = serde_json::Value::Null;
    eventually(Duration::from_secs(20), "a latency_regression event", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        events = serde_json::from_str(&body).expect("JSON");
        events["events"].as_array().is_some_and(|e| !e.is_empty())
    });
    let list = events["events"].as_array().expect("events");
    assert_eq!(list.len(), 1, "only the regressed operation fires: {events:#}");
    let event = &list[0];
    assert_eq!(event["kind"], "latency_regression");
    assert_eq!(event["state"], "firing");
    assert_eq!(event["service"], "checkout");
    assert_eq!(event["operation"], "POST /checkout");
    assert_eq!(event["revision"], "rev-slow");
    assert_eq!(event["baseline_revision"], "rev-good");
    assert_eq!(event["suspects"], serde_json::json!([]));
    let stats = &event["stats"];
    assert!(stats["relative_increase"].as_f64().expect("number") > 0.3, "{stats}");
    assert!(stats["p_value"].as_f64().expect("number") < 1e-6, "{stats}");
    assert!(stats["baseline"]["count"].as_u64().expect("count") >= 100);
    assert!(stats["current"]["p95_ms"].as_f64() > stats["baseline"]["p95_ms"].as_f64());
    assert_eq!(event["code"]["function"], "charge_card");

    let onset = humantime::parse_rfc3339(event["onset"].as_str().expect("onset")).expect("RFC 3339");
    let detected = humantime::parse_rfc3339(event["detected_at"].as_str().expect("detected_at")).expect("RFC 3339");
    let deploy_time = std::time::UNIX_EPOCH + Duration::from_nanos(deploy);
    let onset_error = onset.duration_since(deploy_time).unwrap_or_else(|e| e.duration());
    assert!(
        onset_error <= Duration::from_secs(20),
        "onset {onset:?} vs deploy {deploy_time:?}"
    );
    let delay = detected.duration_since(deploy_time).expect("detected after the deploy");
    assert!(delay <= Duration::from_secs(120), "detected {delay:?} after the deploy");

    let id = event["id"].as_str().expect("id");
    let (status, body) = http_get(&format!("{url}/{id}")).expect("get event");
    assert_eq!(status, 200);
    let single: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(&single, event);
    let (status, _) = http_get(&format!("{url}/no-such-event")).expect("get");
    assert_eq!(status, 404);

    let metrics = dw.metrics();
    assert_eq!(
        metrics.value("driftwatch_drifts_firing", &[("kind", "latency_regression")]),
        1.0
    );
}

/// One service in two environments, sent by the Python SDK with
/// `deployment.environment.name`: the same revisions, but only production
/// slows down. The environments are analysed apart, so exactly one drift
/// fires, named for production, and each environment is labelled, filtered
/// and gated on its own.
#[test]
fn environments_of_one_service_drift_apart() {
    let dw = Driftwatch::start("");
    let dir = tempfile::tempdir().expect("dir");
    let deploy = now_nanos() / S * S - 8 * 60 * S;
    let before = deploy - 10 * 60 * S;
    let endpoint = format!("http://{}", dw.grpc);
    for (environment, slowdown) in [("production", 1.5), ("staging", 1.0)] {
        for (start, seconds, factor, revision) in [(before, 600, 1.0, "rev-good"), (deploy, 240, slowdown, "rev-slow")] {
            let path = dir.path().join(format!("{environment}-{revision}.json"));
            let mut spans = plan(start, seconds, 10, 40.0, factor, start);
            spans["resource"] = serde_json::json!({"deployment.environment.name": environment});
            std::fs::write(&path, spans.to_string()).expect("write plan");
            send_plan(&endpoint, revision, &path);
        }
    }

    let api = format!("http://{}/api/v1", dw.admin);
    let events = |query: &str| -> Vec<serde_json::Value> {
        let (status, body) = http_get(&format!("{api}/events{query}")).expect("events");
        assert_eq!(status, 200, "{body}");
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        parsed["events"].as_array().expect("events").clone()
    };
    eventually(Duration::from_secs(20), "a latency_regression event", || !events("").is_empty());
    // Evaluations of staging's rev-slow run too: a merged analysis would
    // show here as a second event or a drift without an environment.
    std::thread::sleep(Duration::from_secs(2));
    let all = events("");
    assert_eq!(all.len(), 1, "only production drifts: {all:#?}");
    let event = &all[0];
    assert_eq!(event["service"], "checkout", "the environment is not part of the service");
    assert_eq!(event["environment"], "production");
    assert_eq!(event["operation"], "POST /checkout");
    assert_eq!(event["baseline_revision"], "rev-good");
    assert!(
        event["stats"]["baseline"]["count"].as_u64().expect("count") < 600 * 10 + 100,
        "the baseline holds production's spans only: {}",
        event["stats"]
    );
    assert_eq!(events("?environment=production").len(), 1);
    assert!(events("?environment=staging").is_empty());

    let verdict = |query: &str| -> serde_json::Value {
        let (status, body) = http_get(&format!("{api}/verdict?service=checkout&revision=rev-slow{query}")).expect("verdict");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    };
    let production = verdict("&environment=production");
    assert_eq!(production["verdict"], "fail", "{production:#}");
    assert_eq!(production["environment"], "production");
    let staging = verdict("&environment=staging");
    assert_ne!(staging["verdict"], "fail", "staging serves rev-slow without the drift: {staging:#}");
    assert!(staging["events"].as_array().is_some_and(|e| e.is_empty()), "{staging:#}");
    assert!(
        staging["operations"].as_array().is_some_and(|ops| !ops.is_empty()),
        "staging's own traffic is judged: {staging:#}"
    );
    assert_eq!(verdict("")["verdict"], "fail", "without an environment, a drift in any fails");

    let metrics = dw.metrics();
    for environment in ["production", "staging"] {
        let analysed = metrics.value(
            "driftwatch_spans_analyzed_total",
            &[("service_name", "checkout"), ("deployment_environment_name", environment)],
        );
        assert!(analysed >= 16_000.0, "{environment}: {analysed}");
    }
    assert_eq!(
        metrics.value(
            "driftwatch_spans_analyzed_total",
            &[("service_name", "checkout"), ("deployment_environment_name", "")],
        ),
        0.0,
        "every span named its environment"
    );
}

#[test]
fn scenario_corpus_meets_the_targets() {
    let dir = tempfile::tempdir().expect("dir");
    let json_path = dir.path().join("report.json");
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let output = std::process::Command::new(common::driftwatch_bin())
        .arg("eval")
        .arg(&corpus)
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run eval");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("false alerts per service-week"), "{table}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("report")).expect("JSON");
    let summary = &report["summary"];
    assert!(summary["target_class_labels"].as_u64().expect("count") >= 20, "{summary}");
    assert!(
        summary["target_class_recall"].as_f64().expect("recall") >= 0.95,
        "{summary}\n{table}"
    );
    assert!(summary["service_weeks"].as_f64().expect("weeks") >= 3.0, "{summary}");
    assert!(
        summary["false_alerts_per_service_week"].as_f64().expect("rate") <= 1.0,
        "{summary}\n{table}"
    );
    assert!(
        summary["median_delay_s"].as_f64().expect("delay") <= 60.0,
        "{summary}\n{table}"
    );
    assert!(summary["peer_labels"].as_u64().expect("count") >= 3, "{summary}");
    assert_eq!(summary["peer_recall"].as_f64(), Some(1.0), "{summary}\n{table}");
    assert_eq!(summary["peer_false_alerts"].as_u64(), Some(0), "{summary}\n{table}");
    assert_eq!(summary["false_resolves"].as_u64(), Some(0), "{summary}\n{table}");
    assert!(summary["coverage"].as_f64().expect("coverage") >= 0.99, "{summary}\n{table}");
    assert!(table.contains("false resolves"), "{table}");
    assert!(summary["error_target_class_labels"].as_u64().expect("count") >= 12, "{summary}");
    assert!(
        summary["error_target_class_recall"].as_f64().expect("recall") >= 0.95,
        "{summary}\n{table}"
    );
    assert!(
        summary["error_false_alerts_per_service_week"].as_f64().expect("rate") <= 1.0,
        "{summary}\n{table}"
    );
    assert!(
        summary["error_median_delay_s"].as_f64().expect("delay") <= 60.0,
        "{summary}\n{table}"
    );
    assert_eq!(summary["error_false_resolves"].as_u64(), Some(0), "{summary}\n{table}");
    assert!(summary["fanout_target_class_labels"].as_u64().expect("count") >= 12, "{summary}");
    assert!(
        summary["fanout_target_class_recall"].as_f64().expect("recall") >= 0.95,
        "{summary}\n{table}"
    );
    assert!(
        summary["fanout_false_alerts_per_service_week"].as_f64().expect("rate") <= 1.0,
        "{summary}\n{table}"
    );
    assert!(
        summary["fanout_median_delay_s"].as_f64().expect("delay") <= 60.0,
        "{summary}\n{table}"
    );
    assert_eq!(summary["fanout_false_resolves"].as_u64(), Some(0), "{summary}\n{table}");
    assert!(table.contains("fan-out regressions caught"), "{table}");
    let kinds = summary["kinds"].as_array().expect("kinds");
    for kind in ["repeated_unsafe_call", "new_dependency"] {
        let measured = kinds.iter().find(|k| k["kind"] == kind).unwrap_or_else(|| panic!("{kind}: {summary}"));
        assert!(measured["labels"].as_u64().expect("count") >= 10, "{measured}");
        assert!(measured["recall"].as_f64().expect("recall") >= 0.95, "{measured}\n{table}");
        assert_eq!(measured["false_alerts"].as_u64(), Some(0), "{measured}\n{table}");
        assert!(measured["median_delay_s"].as_f64().expect("delay") <= 60.0, "{measured}\n{table}");
    }
}

/// Sends 10,000 spans of the service "flood", each with a span name of its
/// own, and waits until all are analysed.
fn flood_of_unique_span_names(dw: &Driftwatch) {
    use driftwatch::tools::simulate::SyntheticSpan;
    let now = now_nanos();
    for batch in 0..20u64 {
        let spans: Vec<SyntheticSpan> = (0..500u64)
            .map(|i| SyntheticSpan {
                service: "flood".into(),
                revision: "r1".into(),
                scope: None,
                name: format!("GET /users/{}", batch * 500 + i),
                kind: 2,
                trace_id: 1,
                span_id: i + 1,
                parent_span_id: 0,
                start_unix_nanos: now - 60 * S + batch * S,
                duration_nanos: 1_000_000,
                error: false,
                attributes: vec![],
            })
            .collect();
        common::post_spans(dw, &spans);
    }
    eventually(Duration::from_secs(10), "all analysed", || {
        dw.metrics().value("driftwatch_spans_analyzed_total", &[("service_name", "flood")]) == 10_000.0
    });
}

#[test]
fn high_cardinality_span_names_stay_bounded() {
    let dw = Driftwatch::start("[analyze]\nmax_operations = 20\n");
    flood_of_unique_span_names(&dw);
    let metrics = dw.metrics();
    assert_eq!(metrics.value("driftwatch_operations_tracked", &[("service_name", "flood")]), 20.0);
    assert_eq!(
        metrics.value("driftwatch_operations_folded_spans_total", &[("service_name", "flood")]),
        9_980.0
    );
}

/// However many operations the analysis may track, a scrape holds at most
/// 1,024 of their duration series; the rest count under `__other__`.
#[test]
fn metrics_stay_bounded_when_max_operations_is_raised() {
    let dw = Driftwatch::start("[analyze]\nmax_operations = 100000\n");
    flood_of_unique_span_names(&dw);
    let metrics = dw.metrics();
    assert_eq!(metrics.value("driftwatch_operations_tracked", &[("service_name", "flood")]), 10_000.0);
    let series: Vec<&str> = metrics
        .0
        .lines()
        .filter(|l| l.starts_with("driftwatch_span_duration_seconds_count{") && l.contains("service_name=\"flood\""))
        .collect();
    assert_eq!(series.len(), 1_025, "1,024 operations and __other__");
    assert_eq!(
        metrics.value("driftwatch_span_duration_seconds_count", &[("operation", "__other__")]),
        10_000.0 - 1_024.0,
        "every span is counted once"
    );
    assert_eq!(metrics.value("driftwatch_operation_series_folded_spans_total", &[]), 10_000.0 - 1_024.0);
    assert_eq!(metrics.value("driftwatch_operation_series", &[]), 1_024.0);
    assert!(metrics.0.len() < 4 << 20, "{} bytes", metrics.0.len());
}

#[test]
fn label_values_are_capped_in_bytes_and_expire_with_their_revisions() {
    use driftwatch::tools::simulate::SyntheticSpan;
    let dw = Driftwatch::start("");
    let now = now_nanos();
    let huge = "s".repeat(300_000);
    let span = |service: &str, revision: &str, name: &str, i: u64| SyntheticSpan {
        service: service.into(),
        revision: revision.into(),
        scope: None,
        name: name.into(),
        kind: 2,
        trace_id: 1,
        span_id: i + 1,
        parent_span_id: 0,
        start_unix_nanos: now - 120 * S + i * 10_000_000,
        duration_nanos: 1_000_000,
        error: false,
        attributes: vec![],
    };
    common::post_spans(&dw, &[span(&huge, &huge, &huge, 0)]);
    // Forty deploys of one service: the timeline keeps eight revisions.
    for r in 0..40u64 {
        let spans: Vec<SyntheticSpan> = (0..5)
            .map(|i| span("deployer", &format!("rev-{r}"), "GET /", r * 5 + i))
            .collect();
        common::post_spans(&dw, &spans);
    }
    eventually(Duration::from_secs(10), "all analysed", || {
        dw.metrics()
            .value("driftwatch_spans_analyzed_total", &[("service_name", "deployer")])
            == 200.0
    });
    let text = dw.metrics().0;
    assert!(text.len() < 1_000_000, "/metrics is {} bytes", text.len());
    assert!(!text.contains(&huge[..200]), "a 300 kB name is exported whole");
    assert!(
        text.contains(&format!("service_name=\"{}\"", &huge[..128])),
        "the name is exported cut to 128 bytes"
    );
    let revisions = text
        .lines()
        .filter(|l| l.starts_with("driftwatch_revision_first_seen_timestamp_seconds{") && l.contains("service_name=\"deployer\""))
        .count();
    assert_eq!(revisions, 8, "only the revisions the timeline keeps:\n{text}");
    let durations = text
        .lines()
        .filter(|l| l.starts_with("driftwatch_span_duration_seconds_count{") && l.contains("service_name=\"deployer\""))
        .count();
    assert_eq!(durations, 8, "duration series go with their revisions");
}
