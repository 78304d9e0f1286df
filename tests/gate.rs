//! Rollout gates against the running binary: the verdict API and
//! `driftwatch gate` on a good revision (pass), a revision before enough
//! traffic (inconclusive), and a revision with a latency regression
//! (fail), plus the events API's filters.

mod common;

use std::time::Duration;

use common::{Driftwatch, checkout_traffic as checkout, eventually, http_get, now_nanos, send_traffic};
use driftwatch::tools::simulate::Rng;

const S: u64 = 1_000_000_000;

fn verdict(dw: &Driftwatch, query: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(&format!("http://{}/api/v1/verdict?{query}", dw.admin)).expect("verdict");
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body}")))
}

/// Runs `driftwatch gate`; its exit code and output.
fn gate(dw: &Driftwatch, revision: &str, timeout: &str) -> (Option<i32>, String) {
    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["gate", "--admin", &format!("http://{}", dw.admin), "--service", "checkout", "--revision", revision])
        .args(["--timeout", timeout, "--interval", "200ms"])
        .output()
        .expect("run gate");
    (output.status.code(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn a_rollout_gate_passes_a_good_revision_fails_a_regression_and_waits_for_traffic() {
    let dw = Driftwatch::start("");
    let mut rng = Rng::new(5);
    let now = now_nanos() / S * S;
    // rev-1 served for a while; rev-2 has just started.
    send_traffic(&dw, &checkout("rev-1", 1.0), now - 40 * 60 * S, 20 * 60, &mut rng);
    send_traffic(&dw, &checkout("rev-2", 1.0), now - 20 * 60 * S, 3, &mut rng);

    eventually(Duration::from_secs(10), "rev-2 in the coverage", || {
        verdict(&dw, "service=checkout&revision=rev-2").1["seen_as"] == "rev-2"
    });
    let (status, v) = verdict(&dw, "service=checkout&revision=rev-2");
    assert_eq!(status, 200);
    assert_eq!(v["verdict"], "inconclusive", "{v:#}");
    assert!(v["missing_samples"].as_u64().unwrap_or(0) > 0, "{v:#}");
    assert_eq!(v["operations"][0]["baseline_revision"], "rev-1", "{v:#}");
    // Flagger reads the status code.
    assert_eq!(verdict(&dw, "service=checkout&revision=rev-2&status_codes=true").0, 503);
    let (code, output) = gate(&dw, "rev-2", "2s");
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("still inconclusive after 2s") && output.contains("of 100 samples"), "{output}");

    // Enough good traffic of rev-2: it passes.
    send_traffic(&dw, &checkout("rev-2", 1.0), now - 20 * 60 * S + 3 * S, 5 * 60, &mut rng);
    eventually(Duration::from_secs(20), "rev-2 passes", || {
        verdict(&dw, "service=checkout&revision=rev-2").1["verdict"] == "pass"
    });
    let (code, output) = gate(&dw, "rev-2", "10s");
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("pass: revision rev-2"), "{output}");
    assert_eq!(verdict(&dw, "service=checkout&revision=rev-2&status_codes=true").0, 200);
    // The gate can ask for more samples than the detector needs.
    let (_, strict) = verdict(&dw, "service=checkout&revision=rev-2&min_samples=100000");
    assert_eq!(strict["verdict"], "inconclusive", "{strict:#}");

    // rev-3 is 60% slower: it fails, with its event.
    send_traffic(&dw, &checkout("rev-3", 1.6), now - 14 * 60 * S, 5 * 60, &mut rng);
    eventually(Duration::from_secs(30), "rev-3 fails", || {
        verdict(&dw, "service=checkout&revision=rev-3").1["verdict"] == "fail"
    });
    let (_, v) = verdict(&dw, "service=checkout&revision=rev-3");
    assert_eq!(v["events"][0]["kind"], "latency_regression", "{v:#}");
    assert_eq!(v["events"][0]["revision"], "rev-3", "{v:#}");
    assert_eq!(verdict(&dw, "service=checkout&revision=rev-3&status_codes=true").0, 422);
    let (code, output) = gate(&dw, "rev-3", "10s");
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("fail: revision rev-3") && output.contains("latency_regression POST /checkout"), "{output}");
    // Only new peers fail it: this drift does not.
    let (_, v) = verdict(&dw, "service=checkout&revision=rev-3&kind=new_outbound_peer");
    assert_ne!(v["verdict"], "fail", "{v:#}");

    // A question with a typo is refused, never answered with "everything".
    let (status, v) = verdict(&dw, "service=checkout&revison=rev-3");
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap_or("").contains("revison"), "{v:#}");
    let (code, output) = gate(&dw, "rev-3", "1s");
    assert_eq!(code, Some(1), "{output}");
    let bad = std::process::Command::new(common::driftwatch_bin())
        .args(["gate", "--admin", &format!("http://{}", dw.admin), "--service", "checkout", "--revision", "rev-3", "--severity", "fatal"])
        .output()
        .expect("run gate");
    assert_eq!(bad.status.code(), Some(3), "{}", String::from_utf8_lossy(&bad.stderr));
    let unreachable = std::process::Command::new(common::driftwatch_bin())
        .args(["gate", "--admin", "http://127.0.0.1:9", "--service", "checkout", "--revision", "x", "--timeout", "1s", "--interval", "200ms"])
        .output()
        .expect("run gate");
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unreachable.stdout).contains("cannot reach"));

    // The events API filters, and refuses what it does not know.
    let events = |query: &str| -> (u16, serde_json::Value) {
        let (status, body) = http_get(&format!("http://{}/api/v1/events?{query}", dw.admin)).expect("events");
        (status, serde_json::from_str(&body).expect("JSON"))
    };
    let count = |query: &str| events(query).1["events"].as_array().map_or(0, Vec::len);
    assert_eq!(count(""), 1);
    assert_eq!(count("service=checkout&state=firing&kind=latency_regression&revision=rev-3"), 1);
    assert_eq!(count("service=payments"), 0);
    assert_eq!(count("state=resolved"), 0);
    assert_eq!(count("kind=new_outbound_peer"), 0);
    assert_eq!(count("revision=rev-2"), 0);
    assert_eq!(count("since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z&limit=1"), 1);
    assert_eq!(count("until=2000-01-01T00:00:00Z"), 0);
    // An offset is applied: the detection time, written an hour ahead at +01:00.
    let detected = events("").1["events"][0]["detected_at"].as_str().map(str::to_owned).expect("detected_at");
    let detected = driftwatch::clock::Timestamp::parse(&detected).expect("RFC 3339").unix_nanos();
    let at_plus_one = |nanos: u64| driftwatch::clock::Timestamp::from_unix_nanos(nanos + 3_600 * S).rfc3339().replace('Z', "%2B01:00");
    assert_eq!(count(&format!("since={}", at_plus_one(detected))), 1, "since is inclusive");
    assert_eq!(count(&format!("since={}", at_plus_one(detected + 1_000_000))), 0);
    assert_eq!(count(&format!("until={}", at_plus_one(detected))), 0, "until is exclusive");
    for bad in ["servce=checkout", "state=open", "kind=slow", "limit=0", "since=yesterday", "service=a&service=b"] {
        let (status, body) = events(bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
}

/// A plan for `send_spans.py`: `seconds` of a checkout load test at 20
/// requests/s, `factor` times slower than the base.
fn load_test(start: u64, seconds: u64, factor: f64, seed: u64) -> serde_json::Value {
    let mut rng = Rng::new(seed);
    let spans: Vec<serde_json::Value> = (0..seconds * 20)
        .map(|i| {
            let begin = start + i * S / 20;
            let ms = rng.log_normal(40.0, 0.3) * factor;
            serde_json::json!({
                "name": "POST /checkout", "kind": "server", "start_ns": begin, "end_ns": begin + (ms * 1e6) as u64,
                "attributes": {"http.route": "/checkout", "code.function": "charge_card", "code.filepath": "src/pay.py"},
            })
        })
        .collect();
    serde_json::json!({ "spans": spans })
}

/// Runs one load test through the Python SDK into a driftwatch that records
/// what it accepts; returns the recording.
fn record(dir: &std::path::Path, name: &str, factor: f64, seed: u64) -> std::path::PathBuf {
    let recording = dir.join(format!("{name}.jsonl"));
    let mut dw = Driftwatch::start(&format!("[record]\npath = {:?}\n", recording.display().to_string()));
    let plan = dir.join(format!("{name}-plan.json"));
    let start = now_nanos() / S * S - 10 * 60 * S;
    std::fs::write(&plan, load_test(start, 180, factor, seed).to_string()).expect("plan");
    common::run_python(
        "send_spans.py",
        &[
            "--protocol", "grpc", "--endpoint", &format!("http://{}", dw.grpc), "--service", "checkout",
            "--plan", &plan.display().to_string(),
        ],
        &[],
    );
    eventually(Duration::from_secs(20), "every span accepted", || {
        dw.metrics().value("driftwatch_spans_received_total", &[("service_name", "checkout")]) == 3600.0
    });
    assert!(dw.terminate().success(), "a clean shutdown finishes the recording");
    recording
}

fn compare(args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(common::driftwatch_bin())
        .arg("compare")
        .args(args)
        .output()
        .expect("run compare");
    (output.status.code(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn compare_finds_the_planted_regression_names_its_ai_commit_and_stays_silent_on_the_same_code() {
    use common::git::{GitRepo, HUMAN};
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("src/pay.py", "def charge_card(card):\n    return gateway.charge(card)\n")], "Add card payments", HUMAN);
    repo.commit(&[("docs/payments.md", "# Payments\n")], "Document payments", HUMAN);
    let head = repo.commit(
        &[(
            "src/pay.py",
            "def charge_card(card):\n    for attempt in range(3):\n        gateway.verify(card)\n    return gateway.charge(card)\n",
        )],
        "Verify the card before charging\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
        HUMAN,
    );

    let dir = tempfile::tempdir().expect("dir");
    let base_run = record(dir.path(), "base", 1.0, 1);
    let base_again = record(dir.path(), "base-again", 1.0, 2);
    let head_run = record(dir.path(), "head", 1.6, 3);
    let lines = std::fs::read_to_string(&base_run).expect("recording");
    assert!(lines.lines().count() > 1, "one request per line");
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().expect("a line")).expect("OTLP/JSON");
    assert!(first["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"].is_string(), "{first}");

    let (base_path, head_path, again_path) = (
        base_run.display().to_string(),
        head_run.display().to_string(),
        base_again.display().to_string(),
    );
    let range = format!("{base}..{head}");
    let repo_path = repo.path().display().to_string();

    // Two runs of the same code: no drift.
    let (code, output) = compare(&[&base_path, &again_path]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("no drift"), "{output}");

    // The head is 60% slower: drift, and the AI-written commit is the suspect.
    let (code, output) = compare(&[&base_path, &head_path, "--repo", &repo_path, "--range", &range, "--json"]);
    assert_eq!(code, Some(1), "{output}");
    let report: serde_json::Value = serde_json::from_str(&output).unwrap_or_else(|_| panic!("JSON: {output}"));
    assert_eq!(report["drifted"], true);
    let event = &report["events"][0];
    assert_eq!(event["kind"], "latency_regression", "{event:#}");
    assert_eq!(event["operation"], "POST /checkout");
    assert_eq!(event["revision"], head.as_str());
    assert_eq!(event["suspects"][0]["commit"], head.as_str(), "{event:#}");
    assert_eq!(event["suspects"][0]["ai"]["tool"], "claude-code", "{event:#}");

    // The same as Markdown for a pull-request comment, from a gzip file.
    let gz = dir.path().join("head.jsonl.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {head_path:?} > {:?}", gz.display().to_string()))
        .status()
        .expect("gzip");
    assert!(status.success());
    let (code, output) = compare(&[&base_path, &gz.display().to_string(), "--repo", &repo_path, "--range", &range, "--markdown"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.starts_with("### driftwatch: the head drifted"), "{output}");
    assert!(output.contains(&head[..12]) && output.contains("claude-code"), "{output}");

    // A file that is not a recording is an error (exit 3), not a verdict.
    let bogus = dir.path().join("bogus.jsonl");
    std::fs::write(&bogus, "not json\n").expect("write");
    let (code, output) = compare(&[&base_path, &bogus.display().to_string()]);
    assert_eq!(code, Some(3), "{output}");
    assert!(output.contains("bogus.jsonl:1"), "{output}");
}
