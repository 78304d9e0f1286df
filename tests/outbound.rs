//! Unexpected outbound calls and new libraries end to end: CLIENT spans
//! produced by the Python SDK's real `requests` instrumentation, calling
//! real HTTP servers on loopback, through the gRPC receiver, read back from
//! the API.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::git::{GitRepo, HUMAN};
use common::{Driftwatch, eventually, free_port, http_get, python, run_python};

/// A `python -m http.server` on a free loopback port, killed on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start() -> HttpServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("dir");
        let child = Command::new(python())
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("http.server");
        eventually(Duration::from_secs(10), "http.server listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        HttpServer { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events(dw: &Driftwatch) -> Vec<serde_json::Value> {
    let (_, body) = http_get(&format!("http://{}/api/v1/events", dw.admin)).expect("events");
    let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    value["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_deploy_that_calls_a_new_host_raises_one_event_naming_the_caller() {
    let known = HttpServer::start();
    let new = HttpServer::start();
    let dw = Driftwatch::start("[detect.outbound]\nlearning_period = \"3s\"\nmin_calls = 3\n");
    let endpoint = format!("http://{}", dw.grpc);
    let call = |revision: &str, urls: &[String], env: &[(&str, &str)]| {
        let mut args = vec![
            "--endpoint",
            &endpoint,
            "--service",
            "checkout",
            "--revision",
            revision,
            "--repeat",
            "5",
        ];
        for url in urls {
            args.push("--call");
            args.push(url);
        }
        run_python("call_peers.py", &args, env);
    };
    // First revision: learns its peer; nothing is new for a new service.
    call("rev-1", &[known.url()], &[]);
    // The SDK stamps spans with the wall clock: rev-2 begins after rev-1's
    // learning_period in event time only if it begins after it here.
    std::thread::sleep(Duration::from_secs(4));
    // Second revision, on the stable HTTP conventions (url.full,
    // server.address): the known peer must keep its identity, the new
    // one must be reported.
    call(
        "rev-2",
        &[known.url(), new.url()],
        &[("OTEL_SEMCONV_STABILITY_OPT_IN", "http")],
    );

    let mut found = Vec::new();
    eventually(Duration::from_secs(40), "a new_outbound_peer event", || {
        found = events(&dw);
        !found.is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let found = events(&dw);
    assert_eq!(found.len(), 1, "only the new host: {found:#?}");
    let event = &found[0];
    assert_eq!(event["kind"], "new_outbound_peer");
    assert_eq!(event["state"], "firing");
    assert_eq!(event["service"], "checkout");
    assert_eq!(event["peer"], format!("127.0.0.1:{}", new.port));
    assert_eq!(event["revision"], "rev-2");
    assert_eq!(event["baseline_revision"], "rev-1");
    assert_eq!(
        event["operation"], "POST /checkout",
        "the SERVER span above the INTERNAL parent"
    );
    let outbound = &event["outbound"];
    assert_eq!(outbound["reasons"], serde_json::json!(["new_peer"]));
    assert!(outbound["calls"].as_u64().expect("calls") >= 3);
    let caller = &outbound["callers"][0];
    assert_eq!(caller["operation"], "POST /checkout");
    assert!(caller["p95_call_ms"].as_f64().expect("ms") > 0.0);
    let share = caller["median_share"].as_f64().expect("share");
    assert!(share > 0.0 && share <= 1.0, "{share}");
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value("driftwatch_drifts_firing", &[("kind", "new_outbound_peer")]),
        1.0
    );
    assert_eq!(metrics.value("driftwatch_outbound_peers", &[("service_name", "checkout")]), 2.0);
}

#[test]
fn metadata_endpoint_and_allowlist_are_critical() {
    let allowed = HttpServer::start();
    let outside = HttpServer::start();
    let dw = Driftwatch::start(&format!(
        "[detect.outbound]\nlearning_period = \"1h\"\nallow = [\"127.0.0.1:{}\"]\n",
        allowed.port
    ));
    let endpoint = format!("http://{}", dw.grpc);
    run_python(
        "call_peers.py",
        &[
            "--endpoint",
            &endpoint,
            "--service",
            "pay",
            "--revision",
            "r1",
            "--repeat",
            "2",
            "--call",
            &allowed.url(),
            "--call",
            &outside.url(),
        ],
        &[],
    );
    // The metadata address is unreachable here; send its client span
    // directly, as an SDK would after a timed-out call.
    let now = common::now_nanos();
    let span = driftwatch::tools::simulate::SyntheticSpan {
        service: "pay".into(),
        revision: "r1".into(),
        scope: None,
        name: "GET".into(),
        kind: 3,
        trace_id: 42,
        span_id: 43,
        parent_span_id: 0,
        start_unix_nanos: now - 1_000_000_000,
        duration_nanos: 2_000_000,
        error: true,
        attributes: vec![(
            "http.url".into(),
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/".into(),
        )],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        driftwatch::tls::http_client()
            .build()
            .expect("HTTP client")
            .post(dw.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(driftwatch::tools::simulate::encode_request(&[span]))
            .send()
            .await
            .expect("send")
    });
    let mut found = Vec::new();
    eventually(Duration::from_secs(40), "two critical events", || {
        found = events(&dw);
        found.len() >= 2
    });
    std::thread::sleep(Duration::from_secs(2));
    let found = events(&dw);
    let by_peer = |peer: &str| found.iter().find(|e| e["peer"] == peer).cloned();
    let metadata = by_peer("169.254.169.254:80").expect("metadata event");
    assert_eq!(metadata["severity"], "critical");
    assert_eq!(
        metadata["outbound"]["reasons"],
        serde_json::json!(["not_allowed", "metadata_endpoint"])
    );
    let outside_event = by_peer(&format!("127.0.0.1:{}", outside.port)).expect("allowlist event");
    assert_eq!(outside_event["severity"], "critical");
    assert_eq!(outside_event["outbound"]["reasons"], serde_json::json!(["not_allowed"]));
    assert!(
        by_peer(&format!("127.0.0.1:{}", allowed.port)).is_none(),
        "the allowed peer is quiet"
    );
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn a_deploy_that_brings_in_a_library_is_a_new_dependency_blamed_on_the_manifest_line() {
    let server = HttpServer::start();
    let mut repo = GitRepo::new();
    let v1 = repo.commit(
        &[("requirements.txt", "flask==3.0.3\n"), ("app.py", "import flask\n")],
        "Initial service",
        HUMAN,
    );
    repo.commit(&[("README.md", "Checkout.\n")], "Document the service", HUMAN);
    let adds = repo.commit(
        &[
            ("requirements.txt", "flask==3.0.3\nrequests==2.32.3\n"),
            ("app.py", "import flask\nimport requests\n"),
        ],
        "Fetch fraud scores over HTTP\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
        ("Lee Park", "lee@example.com"),
    );
    let dw = Driftwatch::start(&format!(
        "[detect.dependency]\nlearning_period = \"2s\"\nmin_spans = 3\n[[git.repos]]\nservice = \"checkout\"\npath = {:?}\n",
        repo.path().display().to_string()
    ));
    let endpoint = format!("http://{}", dw.grpc);
    let url = server.url();
    let call = |revision: &str, instrumented: bool| {
        let mut args = vec![
            "--endpoint", &endpoint, "--service", "checkout", "--revision", revision, "--repeat", "5", "--call", &url,
        ];
        if !instrumented {
            args.push("--uninstrumented");
        }
        run_python("call_peers.py", &args, &[]);
    };
    call(&v1, false);
    // Past the learning_period, in the SDK's event time (the wall clock).
    std::thread::sleep(Duration::from_secs(3));
    call(&adds, true);

    let mut found = Vec::new();
    eventually(Duration::from_secs(40), "a new_dependency event with suspects", || {
        found = events(&dw)
            .into_iter()
            .filter(|e| e["kind"] == "new_dependency")
            .collect();
        found.first().is_some_and(|e| !e["suspects"].as_array().is_none_or(|s| s.is_empty()))
    });
    assert_eq!(found.len(), 1, "{found:#?}");
    let event = &found[0];
    assert_eq!(event["severity"], "info");
    assert_eq!(event["dependency"]["scope"], "opentelemetry.instrumentation.requests");
    assert!(event["dependency"]["spans"].as_u64().expect("spans") >= 3);
    assert_eq!(event["operation"], "GET", "the library's own spans");
    assert_eq!(event["revision"], adds);
    assert_eq!(event["baseline_revision"], v1);
    let top = &event["suspects"][0];
    assert_eq!(top["commit"], adds, "{event:#}");
    let evidence: Vec<&str> = top["evidence"].as_array().expect("evidence").iter().filter_map(|e| e.as_str()).collect();
    assert!(
        evidence.iter().any(|e| e.contains("\"requests==2.32.3\" to requirements.txt:2")),
        "{evidence:?}"
    );
    assert_eq!(event["suspects"][1]["linked"], false, "the README commit has no link: {event:#}");
    let metrics = dw.metrics();
    assert_eq!(metrics.value("driftwatch_drifts_firing", &[("kind", "new_dependency")]), 1.0);
    // The scope the service always had is not new, and a verdict at its
    // default severity passes: informational events do not fail rollouts.
    let (status, body) = http_get(&format!(
        "http://{}/api/v1/verdict?service=checkout&revision={adds}",
        dw.admin
    ))
    .expect("verdict");
    let verdict: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_ne!(verdict["verdict"], "fail", "{status} {verdict:#}");
}

#[test]
fn a_retry_that_posts_twice_per_request_is_a_critical_repeated_unsafe_call() {
    let payments = HttpServer::start();
    let dw = Driftwatch::start(
        "[detect.repeated_calls]\ncritical_peers = [\"127.0.0.1:*\"]\nmin_baseline_requests = 5\nmin_repeats = 3\n",
    );
    let endpoint = format!("http://{}", dw.grpc);
    let url = payments.url();
    let call = |revision: &str, repeat: &str, times: &str| {
        let args = [
            "--endpoint", &endpoint, "--service", "checkout", "--revision", revision, "--repeat", repeat, "--call", &url,
            "--method", "POST", "--times", times,
        ];
        run_python("call_peers.py", &args, &[]);
    };
    // One charge per checkout, then a deploy that charges twice.
    call("rev-1", "8", "1");
    // rev-2 deploys later in the SDK's event time (the wall clock).
    std::thread::sleep(Duration::from_secs(2));
    call("rev-2", "5", "2");
    let mut found = Vec::new();
    eventually(Duration::from_secs(90), "a repeated_unsafe_call event", || {
        found = events(&dw).into_iter().filter(|e| e["kind"] == "repeated_unsafe_call").collect();
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "{found:#?}");
    let event = &found[0];
    assert_eq!(event["severity"], "critical", "a payment peer");
    assert_eq!(event["operation"], "POST /checkout");
    assert_eq!(event["peer"], format!("127.0.0.1:{}", payments.port));
    assert_eq!((event["revision"].as_str(), event["baseline_revision"].as_str()), (Some("rev-2"), Some("rev-1")));
    let repeats = &event["repeats"];
    assert_eq!(repeats["repeated_requests"], 5);
    assert_eq!(repeats["requests"], 5);
    assert_eq!(repeats["max_calls_per_request"], 2);
    assert_eq!(repeats["baseline_requests"], 8);
    assert!(events(&dw).iter().all(|e| e["kind"] != "new_outbound_peer"), "the peer was known");
}

/// Real `requests` calls from the Python SDK: revision 1 makes one call
/// per request to the inventory service, revision 2 makes one per item —
/// five — under the same operation. It is a fan-out regression with the
/// calls per request before and after; GETs are idempotent, so it is not
/// a repeated unsafe call.
#[test]
fn a_loop_that_calls_once_per_item_is_a_fanout_regression() {
    let inventory = HttpServer::start();
    let dw = Driftwatch::start("[detect.fanout]\nmin_requests = 8\n");
    let endpoint = format!("http://{}", dw.grpc);
    let url = inventory.url();
    let call = |revision: &str, times: &str| {
        let args = [
            "--endpoint", &endpoint, "--service", "cart", "--revision", revision, "--operation", "GET /cart",
            "--repeat", "10", "--call", &url, "--times", times,
        ];
        run_python("call_peers.py", &args, &[]);
    };
    call("rev-1", "1");
    // rev-2 deploys later in the SDK's event time (the wall clock).
    std::thread::sleep(Duration::from_secs(2));
    call("rev-2", "5");
    let mut found = Vec::new();
    eventually(Duration::from_secs(120), "a fanout_regression event", || {
        found = events(&dw).into_iter().filter(|e| e["kind"] == "fanout_regression").collect();
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "{found:#?}");
    let event = &found[0];
    assert_eq!(event["operation"], "GET /cart");
    assert_eq!(event["peer"], format!("127.0.0.1:{}", inventory.port));
    assert_eq!((event["revision"].as_str(), event["baseline_revision"].as_str()), (Some("rev-2"), Some("rev-1")));
    let fanout = &event["fanout"];
    assert_eq!((fanout["baseline"]["requests"].as_u64(), fanout["baseline"]["max"].as_u64()), (Some(10), Some(1)));
    assert_eq!((fanout["current"]["requests"].as_u64(), fanout["current"]["p50"].as_u64()), (Some(10), Some(5)));
    assert_eq!(fanout["current"]["histogram"], serde_json::json!([[5, 10]]));
    assert!(fanout["p_value"].as_f64().is_some_and(|p| p < 0.01), "{fanout}");
    assert_eq!(fanout["relative_increase"].as_f64(), Some(4.0));
    let (_, page) = http_get(&format!("http://{}/ui/events/{}", dw.admin, event["id"].as_str().unwrap_or_default()))
        .expect("incident page");
    assert!(page.contains("id=\"calls-per-request\""), "the page draws the calls per request");
    assert!(
        events(&dw).iter().all(|e| e["kind"] != "repeated_unsafe_call"),
        "GETs are idempotent"
    );
}
