//! Forwarding to an upstream collector — a second driftwatch acting as one:
//! everything arrives while it is healthy; with it dead, memory stays
//! bounded and drops are counted, or clients are pushed back when no loss
//! is preferred.

mod common;

use std::time::Duration;

use common::{Driftwatch, eventually, free_port, now_nanos};
use driftwatch::tools::simulate::{SyntheticSpan, encode_request};

fn batch(service: &str, n: u64, offset: u64) -> Vec<u8> {
    let now = now_nanos();
    let spans: Vec<SyntheticSpan> = (0..n)
        .map(|i| SyntheticSpan {
            service: service.into(),
            revision: "r1".into(),
            scope: None,
            name: "GET /x".into(),
            kind: 2,
            trace_id: u128::from(offset + i) << 64 | 1,
            span_id: offset + i + 1,
            parent_span_id: 0,
            start_unix_nanos: now - 5_000_000_000 + i * 1000,
            duration_nanos: 2_000_000,
            error: false,
            attributes: vec![("http.route".into(), "/x".into())],
        })
        .collect();
    encode_request(&spans)
}

fn post(dw: &Driftwatch, content_type: &str, body: Vec<u8>) -> (u16, Option<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let response = driftwatch::tls::http_client()
            .build()
            .expect("client")
            .post(dw.http_url("/v1/traces"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        (response.status().as_u16(), retry)
    })
}

#[test]
fn everything_arrives_upstream_over_grpc_and_http() {
    let upstream = Driftwatch::start("");
    let grpc = Driftwatch::start(&format!("[forward]\nendpoint = \"http://{}\"\n", upstream.grpc));
    let http = Driftwatch::start(&format!(
        "[forward]\nendpoint = \"http://{}\"\nprotocol = \"http\"\n",
        upstream.http
    ));
    for i in 0..20 {
        assert_eq!(post(&grpc, "application/x-protobuf", batch("via-grpc", 100, i * 100)).0, 200);
    }
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"via-http"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /j","kind":2,
        "startTimeUnixNano":"START","endTimeUnixNano":"END"}]}]}]}"#
        .replace("START", &(now_nanos() - 2_000_000_000).to_string())
        .replace("END", &(now_nanos() - 1_000_000_000).to_string());
    assert_eq!(post(&http, "application/json", json.into_bytes()).0, 200);
    eventually(Duration::from_secs(20), "all spans upstream", || {
        let m = upstream.metrics();
        m.value(
            "driftwatch_spans_received_total",
            &[("service_name", "via-grpc"), ("transport", "grpc")],
        ) == 2000.0
            && m.value(
                "driftwatch_spans_received_total",
                &[("service_name", "via-http"), ("transport", "http_protobuf")],
            ) == 1.0
    });
    eventually(Duration::from_secs(5), "every forward counted", || {
        grpc.metrics()
            .value("driftwatch_forward_requests_total", &[("outcome", "sent")])
            == 20.0
    });
    // Forwarding does not take anything from the local analysis.
    assert_eq!(
        grpc.metrics()
            .value("driftwatch_spans_received_total", &[("service_name", "via-grpc")]),
        2000.0
    );
}

#[test]
fn forwarding_reaches_a_tls_upstream_with_its_headers_and_gzip_over_one_connection() {
    let pki = tempfile::tempdir().expect("dir");
    let (cert, key) = (pki.path().join("tls.crt"), pki.path().join("tls.key"));
    let ca = common::tls::issue_certificate(pki.path(), "upstream", &cert, &key);
    let token = pki.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let upstream = Driftwatch::start(&format!(
        "[receiver]\nbearer_token_file = {token:?}\n[receiver.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n"
    ));
    let forward = |protocol: &str, port: u16, headers: &str| {
        Driftwatch::start(&format!(
            "[forward]\nendpoint = \"https://127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\ncompression = \"gzip\"\n\
             ca_file = {ca:?}\nmax_retries = 0\n[forward.headers]\n{headers}"
        ))
    };
    let auth = "authorization = \"Bearer s3cret\"\n";
    let grpc = forward("grpc", upstream.grpc.port(), auth);
    let http = forward("http", upstream.http.port(), auth);
    let anonymous = forward("grpc", upstream.grpc.port(), "");
    for i in 0..20 {
        assert_eq!(post(&grpc, "application/x-protobuf", batch("tls-grpc", 100, i * 100)).0, 200);
        assert_eq!(post(&http, "application/x-protobuf", batch("tls-http", 100, i * 100)).0, 200);
    }
    assert_eq!(post(&anonymous, "application/x-protobuf", batch("anonymous", 10, 0)).0, 200);
    eventually(Duration::from_secs(20), "every span upstream", || {
        let m = upstream.metrics();
        m.value("driftwatch_spans_received_total", &[("service_name", "tls-grpc")]) == 2000.0
            && m.value("driftwatch_spans_received_total", &[("service_name", "tls-http")]) == 2000.0
    });
    for dw in [&grpc, &http] {
        assert_eq!(dw.metrics().value("driftwatch_forward_requests_total", &[("outcome", "sent")]), 20.0);
    }
    // Without the header the upstream refuses: counted as rejected, not sent.
    eventually(Duration::from_secs(10), "the refusal counted", || {
        anonymous
            .metrics()
            .value("driftwatch_forward_requests_total", &[("outcome", "dropped_rejected")])
            == 1.0
    });
    assert_eq!(upstream.metrics().value("driftwatch_spans_received_total", &[("service_name", "anonymous")]), 0.0);
    // One reused connection per forwarder, not one per request: a closed
    // connection would linger in TIME_WAIT on the forwarder's side.
    let sockets = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let upstream_port = format!(":{:04X}", upstream.grpc.port());
    let connections = sockets
        .lines()
        .filter(|l| l.split_whitespace().nth(2).is_some_and(|remote| remote.ends_with(&upstream_port)))
        .count();
    assert!(connections <= 2, "{connections} connections to the upstream's gRPC port");
}

#[test]
fn a_dead_upstream_costs_bounded_memory_and_counted_drops() {
    let dead = free_port();
    let dw = Driftwatch::start(&format!(
        "[forward]\nendpoint = \"http://127.0.0.1:{dead}\"\nmax_queue_bytes = 200000\nmax_retries = 50\ninitial_backoff = \"1s\"\n"
    ));
    for i in 0..60 {
        assert_eq!(
            post(&dw, "application/x-protobuf", batch("busy", 200, i * 200)).0,
            200,
            "analysis keeps accepting"
        );
    }
    let metrics = dw.metrics();
    assert!(metrics.value("driftwatch_forward_queue_bytes", &[]) <= 200_000.0);
    assert!(metrics.value("driftwatch_forward_requests_total", &[("outcome", "dropped_queue_full")]) > 0.0);
    eventually(Duration::from_secs(10), "all analysed", || {
        dw.metrics().value("driftwatch_spans_analyzed_total", &[("service_name", "busy")]) == 12_000.0
    });
}

#[test]
fn prefer_no_loss_pushes_back_instead_of_dropping() {
    let dead = free_port();
    let dw = Driftwatch::start(&format!(
        "[forward]\nendpoint = \"http://127.0.0.1:{dead}\"\nmax_queue_bytes = 100000\nprefer_no_loss = true\nmax_retries = 50\ninitial_backoff = \"1s\"\n"
    ));
    let mut refused = None;
    for i in 0..40 {
        let (status, retry) = post(&dw, "application/x-protobuf", batch("careful", 200, i * 200));
        if status == 503 {
            refused = retry;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(refused.is_some(), "a full forward queue answers 503 with Retry-After");
    assert_eq!(
        dw.metrics()
            .value("driftwatch_forward_requests_total", &[("outcome", "dropped_queue_full")]),
        0.0
    );
}

#[test]
fn loadgen_reports_throughput_latency_and_the_collectors_resources() {
    let dw = Driftwatch::start("");
    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["loadgen", "--streams", "2", "--duration", "1s", "--json", "--endpoint"])
        .arg(format!("http://{}", dw.grpc))
        .arg("--pid")
        .arg(dw.child.id().to_string())
        .output()
        .expect("run loadgen");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert!(report["accepted_spans"].as_u64().expect("spans") >= 512, "{report}");
    assert_eq!(report["failed_requests"], 0);
    assert!(report["latency_p99_ms"].as_f64().expect("p99") > 0.0);
    assert!(report["collector_cpu_seconds"].as_f64().expect("cpu") > 0.0);
    assert!(report["collector_peak_rss_mib"].as_f64().expect("rss") > 1.0);
    let received = dw
        .metrics()
        .value("driftwatch_spans_received_total", &[("transport", "grpc")]);
    assert_eq!(
        received,
        report["accepted_spans"].as_f64().expect("spans"),
        "every accepted span was counted by the collector"
    );
    assert_eq!(report["event_time"], "advancing");
    assert_eq!(report["latency_measured_from"], "send");
    assert!(!report["collector_rss_mib_over_time"].as_array().expect("samples").is_empty());

    // At a fixed rate, latency counts from each request's scheduled time, and
    // the shape asked for is the shape sent.
    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["loadgen", "--json", "--rate", "20000", "--duration", "2s", "--services", "3", "--operations", "7"])
        .args(["--attributes", "30", "--attribute-bytes", "100", "--endpoint"])
        .arg(format!("http://{}", dw.grpc))
        .output()
        .expect("run loadgen");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["latency_measured_from"], "scheduled send");
    assert_eq!(report["target_spans_per_second"], 20000);
    let rate = report["accepted_spans_per_second"].as_f64().expect("rate");
    assert!((12_000.0..=24_000.0).contains(&rate), "{report}");
    assert!(report["latency_p999_ms"].as_f64() >= report["latency_p99_ms"].as_f64());
    let metrics = dw.metrics();
    for service in ["svc-0000", "svc-0001", "svc-0002"] {
        assert!(metrics.value("driftwatch_spans_received_total", &[("service_name", service)]) > 0.0, "{service}");
    }
}

#[test]
fn metrics_and_logs_from_the_sdk_are_acknowledged_and_forwarded_not_refused() {
    let upstream = Driftwatch::start("");
    let grpc = Driftwatch::start(&format!("[forward]\nendpoint = \"http://{}\"\n", upstream.grpc));
    let http = Driftwatch::start(&format!(
        "[forward]\nendpoint = \"http://{}\"\nprotocol = \"http\"\n",
        upstream.http
    ));
    // An SDK that sends every signal to the sidecar, over both transports.
    for (dw, protocol, endpoint) in [
        (&grpc, "grpc", format!("http://{}", grpc.grpc)),
        (&http, "http", format!("http://{}", http.http)),
        (&upstream, "grpc", format!("http://{}", upstream.grpc)),
    ] {
        let output = common::run_python("send_signals.py", &["--protocol", protocol, "--endpoint", &endpoint, "--service", "shop"], &[]);
        assert!(String::from_utf8_lossy(&output.stdout).contains("exported"));
        let m = dw.metrics();
        let transport = if protocol == "grpc" { "grpc" } else { "http_protobuf" };
        for signal in ["metrics", "logs"] {
            assert!(
                m.value("driftwatch_other_signal_requests_total", &[("signal", signal), ("transport", transport)]) >= 1.0,
                "{signal} over {protocol}"
            );
        }
    }
    // What the sidecars forwarded reached the upstream, each signal on its path.
    eventually(Duration::from_secs(20), "metrics and logs upstream", || {
        let m = upstream.metrics();
        ["metrics", "logs"].iter().all(|signal| {
            m.value("driftwatch_other_signal_requests_total", &[("signal", signal), ("outcome", "acknowledged"), ("transport", "grpc")]) == 2.0
                && m.value("driftwatch_other_signal_requests_total", &[("signal", signal), ("outcome", "acknowledged"), ("transport", "http_protobuf")]) == 1.0
        })
    });
    assert_eq!(grpc.metrics().value("driftwatch_other_signal_requests_total", &[("outcome", "forwarded")]), 2.0);
    // OTLP/JSON metrics cannot be forwarded as protobuf: refused, not lost.
    let output = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H", "content-type: application/json", "-d", r#"{"resourceMetrics":[]}"#])
        .arg(http.http_url("/v1/metrics"))
        .output()
        .expect("curl");
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(answer.ends_with("415") && answer.contains("http/protobuf"), "{answer}");
}
