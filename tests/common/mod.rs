//! Shared helpers for the integration tests: a driftwatch process on free
//! loopback ports, Prometheus text parsing, and the Python OpenTelemetry SDK
//! from the venv that `scripts/test` creates.

#![allow(dead_code)]

pub mod git;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
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
        let dir = tempfile::tempdir().expect("temp dir");
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let config = format!(
            "[receiver]\ngrpc_listen = \"127.0.0.1:{grpc}\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n{extra_toml}"
        );
        let config = merge_sections(&config);
        let config_path = dir.path().join("driftwatch.toml");
        std::fs::write(&config_path, config).expect("write config");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut command = Command::new(driftwatch_bin());
        command.arg("run").arg("--config").arg(&config_path).stdout(Stdio::null()).stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn driftwatch");
        let running = Driftwatch {
            child,
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            dir,
            stderr_path,
        };
        running.wait_ready();
        running
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(body) = http_get(&format!("http://{}/readyz", self.admin)) {
                if body.0 == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("driftwatch did not become ready; stderr:\n{}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = http_get(&format!("http://{}/metrics", self.admin)).expect("scrape /metrics");
        assert_eq!(status, 200);
        Metrics(body)
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

/// Merges repeated `[section]` headers so tests can append overrides.
fn merge_sections(toml_text: &str) -> String {
    let mut sections: Vec<(String, Vec<String>)> = vec![(String::new(), vec![])];
    for line in toml_text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
            match sections.iter().position(|(name, _)| name == trimmed) {
                Some(i) => {
                    let section = sections.remove(i);
                    sections.push(section);
                }
                None => sections.push((trimmed.to_owned(), vec![])),
            }
        } else if let Some(last) = sections.last_mut() {
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
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
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
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}
