//! Shared helpers for the integration tests: a driftwatch process on free
//! loopback ports, Prometheus text parsing, and the Python OpenTelemetry SDK
//! from the venv that `scripts/test` creates.

#![allow(dead_code, reason = "each test crate includes this module and uses a part of it")]

pub mod git;
pub mod postgres;
pub mod tls;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn driftwatch_bin() -> &'static str {
    env!("CARGO_BIN_EXE_driftwatch")
}

/// A `driftwatch run` child process, killed on drop.
pub struct Driftwatch {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub stderr_path: PathBuf,
}

impl Driftwatch {
    /// Starts driftwatch with `extra_toml` appended to a config that puts
    /// every listener on a free port, and waits until `/readyz` answers.
    pub fn start(extra_toml: &str) -> Driftwatch {
        Self::start_with_env(extra_toml, &[])
    }

    pub fn start_with_env(extra_toml: &str, env: &[(&str, &str)]) -> Driftwatch {
        // A port picked free can be taken by a parallel test before the
        // child binds it: start again on other ports.
        for _ in 0..5 {
            let running = Self::spawn(extra_toml, env);
            match running.wait_ready() {
                Ok(()) => return running,
                Err(stderr) if stderr.contains("Address already in use") => continue,
                Err(stderr) => panic!("driftwatch did not become ready; stderr:\n{stderr}"),
            }
        }
        panic!("driftwatch found no free ports in five attempts");
    }

    fn spawn(extra_toml: &str, env: &[(&str, &str)]) -> Driftwatch {
        let dir = tempfile::tempdir().expect("temp dir");
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let store = dir.path().join("store");
        let config = format!(
            "[receiver]\ngrpc_listen = \"127.0.0.1:{grpc}\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[store]\npath = {store:?}\n{extra_toml}"
        );
        let config = merge_sections(&config);
        let config_path = dir.path().join("driftwatch.toml");
        std::fs::write(&config_path, config).expect("write config");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut command = Command::new(driftwatch_bin());
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn driftwatch");
        Driftwatch {
            child,
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            dir,
            stderr_path,
        }
    }

    /// Waits until `/readyz` answers 200; the child's stderr when it exits
    /// or never gets ready.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(body) = http_get(&format!("http://{}/readyz", self.admin))
                && body.0 == 200
            {
                return Ok(());
            }
            // An admin listener on TLS cannot be probed in plain text.
            if self.stderr().contains("driftwatch listening") {
                return Ok(());
            }
            if self.stderr().contains("cannot listen") {
                return Err(self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.stderr())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = http_get(&format!("http://{}/metrics", self.admin)).expect("scrape /metrics");
        assert_eq!(status, 200);
        Metrics(body)
    }

    /// Waits until the embedded store holds every shard's analysis state
    /// as of now: all that the metrics counted as analysed before this
    /// call survives a kill -9 after it.
    pub fn wait_for_snapshots_written(&self) {
        let now = now_nanos() as f64 / 1e9;
        eventually(Duration::from_secs(30), "the analysis state written to the store", || {
            self.metrics().value("driftwatch_store_snapshots_written_as_of_timestamp_seconds", &[]) >= now
        });
    }

    /// Waits until the alert outbox is empty: every notification queued so
    /// far has been delivered or given up, and none is in flight, so no
    /// sink hears more unless an event changes.
    pub fn wait_for_empty_outbox(&self) {
        eventually(Duration::from_secs(30), "an empty alert outbox", || {
            self.metrics().value("driftwatch_outbox_pending", &[]) == 0.0
        });
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "driftwatch did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Driftwatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Merges repeated `[section]` headers, later keys replacing earlier ones,
/// so tests can append overrides to the base configuration.
fn merge_sections(toml_text: &str) -> String {
    let mut sections: Vec<(String, Vec<String>)> = vec![(String::new(), vec![])];
    for line in toml_text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("[[") {
            sections.push((trimmed.to_owned(), vec![]));
        } else if trimmed.starts_with('[') {
            let existing = sections.iter().position(|(name, _)| name == trimmed);
            match existing {
                Some(i) => {
                    let section = sections.remove(i);
                    sections.push(section);
                }
                None => sections.push((trimmed.to_owned(), vec![])),
            }
        } else if let Some(last) = sections.last_mut() {
            let key = trimmed.split('=').next().unwrap_or("").trim().to_owned();
            if !key.is_empty() && trimmed.contains('=') {
                last.1.retain(|l| l.split('=').next().unwrap_or("").trim() != key);
            }
            last.1.push(line.to_owned());
        }
    }
    let mut out = String::new();
    for (name, lines) in sections {
        if !name.is_empty() {
            out.push_str(&name);
            out.push('\n');
        }
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// A blocking HTTP GET returning status and body.
/// Runs `driftwatch run` on `extra_toml` (over listeners on ports the
/// kernel picks and a fresh store) until it exits: for startups that must
/// fail. Returns the exit code and stderr.
pub fn run_until_exit(extra_toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("driftwatch.toml");
    let text = format!(
        "[receiver]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [store]\npath = {:?}\n{extra_toml}",
        dir.path().join("store")
    );
    std::fs::write(&config, merge_sections(&text)).expect("write config");
    let output = Command::new(driftwatch_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run driftwatch");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let response = driftwatch::tls::http_client()
            .build()
            .expect("HTTP client")
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(|e| e.to_string())?))
    })
}

/// A Prometheus text exposition.
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels include all `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                (metric == name && labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// The Python interpreter of the venv made by `scripts/test`, which holds
/// the OpenTelemetry SDK. Missing is a failure, never a skip.
pub fn python() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which creates the venv with the OpenTelemetry SDK",
        path.display()
    );
    path
}

/// Sends a `send_spans.py` plan as `service` over gRPC with the Python SDK.
pub fn send_plan(dw: &Driftwatch, service: &str, plan: &serde_json::Value) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("plan.json");
    std::fs::write(&path, plan.to_string()).expect("write plan");
    let (path, endpoint) = (path.display().to_string(), format!("http://{}", dw.grpc));
    run_python(
        "send_spans.py",
        &["--protocol", "grpc", "--endpoint", &endpoint, "--service", service, "--plan", &path],
        &[],
    );
}

/// Runs `tests/python/<script>` with the venv's Python.
pub fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let mut command = Command::new(python());
    command.arg(script).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run python");
    if !output.status.success() {
        let _ = std::io::stderr().write_all(&output.stderr);
        panic!("python {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    output
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// A request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
    /// The status the receiver answered with.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A local HTTP receiver for alert sinks. It answers the first requests
/// with the `script` statuses (a 429 carries `Retry-After: 1`), then 200.
pub struct Receiver {
    pub addr: SocketAddr,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on a port the kernel picks (no race with other tests).
    pub fn start(script: &[u16]) -> Receiver {
        Self::start_on(0, script)
    }

    pub fn start_on(port: u16, script: &[u16]) -> Receiver {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode, Uri};
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
        let script = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(script.to_vec())));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let store = received.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                    let (store, script) = (store.clone(), script.clone());
                    async move {
                        let status = script.lock().expect("lock").pop_front().unwrap_or(200);
                        let headers = headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        store.lock().expect("lock").push(Received {
                            path: uri.path().to_owned(),
                            headers,
                            body: body.to_vec(),
                            status,
                        });
                        let code = StatusCode::from_u16(status).expect("status");
                        let mut response = axum::response::IntoResponse::into_response((code, "{}"));
                        if status == 429 {
                            response
                                .headers_mut()
                                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
                        }
                        response
                    }
                });
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind receiver");
                let bound = listener.local_addr().expect("bound address");
                ready_tx.send(bound).expect("ready");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(10)).expect("receiver started");
        Receiver {
            addr,
            received,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `checkout` service's `POST /checkout` at 20 requests/s around 40 ms,
/// `slowdown` times slower, in `revision`.
pub fn checkout_traffic(revision: &str, slowdown: f64) -> driftwatch::tools::simulate::EndpointTraffic<'_> {
    driftwatch::tools::simulate::EndpointTraffic {
        service: "checkout",
        revision,
        operation: "POST /checkout",
        route: "/checkout",
        code_function: "charge_card",
        code_filepath: "src/pay.py",
        requests_per_second: 20,
        median_ms: 40.0,
        slowdown,
        peers: &[],
    }
}

/// Sends `seconds` of `traffic` from `start`, a minute per request.
pub fn send_traffic(
    dw: &Driftwatch,
    traffic: &driftwatch::tools::simulate::EndpointTraffic<'_>,
    start: u64,
    seconds: u64,
    rng: &mut driftwatch::tools::simulate::Rng,
) {
    for batch in traffic.generate(start, seconds, rng).chunks(60) {
        post_spans(dw, &batch.concat());
    }
}

/// Posts spans to driftwatch's OTLP/HTTP receiver.
pub fn post_spans(dw: &Driftwatch, spans: &[driftwatch::tools::simulate::SyntheticSpan]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let response = driftwatch::tls::http_client()
            .build()
            .expect("HTTP client")
            .post(dw.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(driftwatch::tools::simulate::encode_request(spans))
            .send()
            .await
            .expect("send spans");
        assert!(response.status().is_success(), "{}", response.status());
    });
}

/// A CLIENT span of `service` calling `url` (no parent), ending `ago_ms` ago.
pub fn client_call(service: &str, revision: &str, url: &str, ago_ms: u64, id: u64) -> driftwatch::tools::simulate::SyntheticSpan {
    driftwatch::tools::simulate::SyntheticSpan {
        service: service.into(),
        revision: revision.into(),
        scope: None,
        name: "GET".into(),
        kind: 3,
        trace_id: u128::from(id) << 64 | 7,
        span_id: id,
        parent_span_id: 0,
        start_unix_nanos: now_nanos() - ago_ms * 1_000_000,
        duration_nanos: 1_000_000,
        error: false,
        attributes: vec![("http.url".into(), url.into())],
    }
}

/// A metadata-endpoint call from `service`: a critical event that fires at
/// the first evaluation, without learning or minimum counts.
pub fn metadata_call(dw: &Driftwatch, service: &str) {
    post_spans(
        dw,
        &[client_call(
            service,
            "r1",
            "http://169.254.169.254/latest/meta-data/",
            2_000,
            1,
        )],
    );
}

/// Sends a `send_spans.py` plan for the service `checkout` to a fresh
/// driftwatch with the Python SDK, over `protocol` in batches of
/// `batch_size` spans paced by `pace_ms`, and returns the events once every
/// one has resolved, with the driftwatch still running (for its metrics).
pub fn replay_until_resolved(
    plan: &std::path::Path,
    protocol: &str,
    batch_size: &str,
    pace_ms: &str,
) -> (Driftwatch, serde_json::Value) {
    let dw = Driftwatch::start("");
    let endpoint = match protocol {
        "grpc" => format!("http://{}", dw.grpc),
        _ => format!("http://{}", dw.http),
    };
    run_python(
        "send_spans.py",
        &[
            "--protocol",
            protocol,
            "--endpoint",
            &endpoint,
            "--service",
            "checkout",
            "--plan",
            plan.to_str().expect("utf-8"),
            "--batch-size",
            batch_size,
            "--pace-ms",
            pace_ms,
        ],
        &[],
    );
    let url = format!("http://{}/api/v1/events", dw.admin);
    let mut events = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, body)) = http_get(&url) {
            events = serde_json::from_str(&body).expect("JSON");
            if events["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["state"] == "resolved"))
            {
                return (dw, events);
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for every incident to resolve; the events: {events:#}\n{}\n{}",
            dw.stderr(),
            http_get(&format!("http://{}/metrics", dw.admin))
                .map(|(_, m)| m.lines().filter(|l| l.contains("spans_")).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
