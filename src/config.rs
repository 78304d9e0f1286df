//! Configuration: built-in defaults, overlaid by a TOML file, overlaid by the
//! environment (`DRIFTWATCH_SECTION__KEY`).
//!
//! Every section rejects unknown keys, so a typo such as `grpc_lisen` is an
//! error that names the key instead of a silently ignored setting.

use std::net::SocketAddr;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Environment variables with this prefix and a `__` section separator
/// override file settings, e.g. `DRIFTWATCH_RECEIVER__GRPC_LISTEN`.
pub(crate) const ENV_PREFIX: &str = "DRIFTWATCH_";

/// Sessions a replica opens at most on the fleet database, unless
/// `store.fleet_pool_size` says.
pub(crate) const DEFAULT_FLEET_POOL_SIZE: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist; pass an existing file to --config or omit it to use the defaults")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        // figment reports one error per bad key; list them all so a user fixes
        // the file in one pass.
        let lines: Vec<String> = err.into_iter().map(|e| describe(&e)).collect();
        ConfigError::Invalid(lines.join("; "))
    }
}

fn describe(err: &figment::Error) -> String {
    let key = err.path.join(".");
    let origin = err
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    match &err.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            // figment's path may or may not end with the unknown key itself.
            let full = if err.path.last() == Some(field) {
                key
            } else if key.is_empty() {
                field.clone()
            } else {
                format!("{key}.{field}")
            };
            format!("unknown key `{full}`{origin}; valid keys here are: {}", expected.join(", "))
        }
        kind if key.is_empty() => format!("{kind}{origin}"),
        kind => format!("bad value for key `{key}`{origin}: {kind}"),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub receiver: ReceiverConfig,
    pub admin: AdminConfig,
    pub analyze: AnalyzeConfig,
    pub detect: DetectConfig,
    pub git: GitConfig,
    pub ai: AiConfig,
    pub store: StoreConfig,
    pub forward: ForwardConfig,
    pub record: RecordConfig,
    pub alerts: AlertsConfig,
}

/// Recording accepted requests for `driftwatch compare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Append every accepted export request to this file as OTLP/JSON
    /// lines (the Collector file exporter's format); unset, nothing is
    /// recorded.
    pub path: Option<PathBuf>,
    /// Bytes of requests waiting to be written, at most; past it requests
    /// are left out of the recording and counted.
    pub max_queue_bytes: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            path: None,
            max_queue_bytes: 64 << 20,
        }
    }
}

fn is_http_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
}

impl Config {
    /// Loads defaults ← `file` (if given) ← environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, Env::prefixed(ENV_PREFIX))
    }

    /// Parses and checks a configuration given as TOML text, without the
    /// environment.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    fn load_with_env(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile { path: path.to_owned() });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only `SECTION__KEY` variables are configuration; others that share
        // the prefix (DRIFTWATCH_LOG_FORMAT) belong to the process itself.
        let env = env.filter(|key| key.as_str().contains("__")).split("__");
        let config: Config = figment.merge(env).extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the secrets the configuration names by file (`*_file` keys,
    /// as Kubernetes mounts Secrets) into their values. Run at start, and
    /// by `check-config` unless it skips file checks. An unreadable or
    /// empty file is an error naming the key and the path, never the
    /// content.
    pub fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        fn read(key: &str, path: &Path) -> Result<String, ConfigError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Invalid(format!("{key}: cannot read {}: {e}", path.display())))?;
            let value = text.trim();
            if value.is_empty() {
                return Err(ConfigError::Invalid(format!("{key}: {} is empty", path.display())));
            }
            Ok(value.to_owned())
        }
        for (i, s) in self.alerts.webhook.iter_mut().enumerate() {
            if let Some(path) = &s.secret_file {
                s.secret = Some(read(&format!("alerts.webhook[{i}].secret_file"), path)?);
            }
        }
        for (i, s) in self.alerts.alertmanager.iter_mut().enumerate() {
            if let Some(path) = &s.bearer_token_file {
                s.bearer_token = Some(read(&format!("alerts.alertmanager[{i}].bearer_token_file"), path)?);
            }
        }
        for (i, s) in self.alerts.slack.iter_mut().enumerate() {
            if let Some(path) = &s.webhook_url_file {
                let key = format!("alerts.slack[{i}].webhook_url_file");
                s.webhook_url = read(&key, path)?;
                if !is_http_url(&s.webhook_url) {
                    return Err(ConfigError::Invalid(format!("{key}: {} does not hold an http(s) URL", path.display())));
                }
            }
        }
        for (i, s) in self.alerts.pagerduty.iter_mut().enumerate() {
            if let Some(path) = &s.routing_key_file {
                s.routing_key = read(&format!("alerts.pagerduty[{i}].routing_key_file"), path)?;
            }
        }
        if let Some(path) = &self.store.postgres_url_file {
            self.store.postgres_url = Some(read("store.postgres_url_file", path)?);
        }
        Ok(())
    }

    /// What `check-config` adds to loading: the files the configuration
    /// names exist (a running sidecar tolerates a repository that git-sync
    /// has not cloned yet; a check before deploying should not).
    pub fn missing_files(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, repo) in self.git.repos.iter().enumerate() {
            if !repo.path.exists() {
                problems.push(format!("git.repos[{i}].path {} does not exist", repo.path.display()));
            } else if !repo.path.join(".git").exists() && !repo.path.join("HEAD").exists() {
                problems.push(format!("git.repos[{i}].path {} is not a git repository", repo.path.display()));
            }
        }
        let files = [
            ("receiver.bearer_token_file", self.receiver.bearer_token_file.as_ref()),
            ("admin.api_token_file", self.admin.api_token_file.as_ref()),
            ("admin.metrics_token_file", self.admin.metrics_token_file.as_ref()),
            ("receiver.tls.cert_file", self.receiver.tls.as_ref().map(|t| &t.cert_file)),
            ("receiver.tls.key_file", self.receiver.tls.as_ref().map(|t| &t.key_file)),
            ("admin.tls.cert_file", self.admin.tls.as_ref().map(|t| &t.cert_file)),
            ("admin.tls.key_file", self.admin.tls.as_ref().map(|t| &t.key_file)),
            ("forward.ca_file", self.forward.ca_file.as_ref()),
        ];
        for (key, path) in files {
            if let Some(path) = path.filter(|p| !p.exists()) {
                problems.push(format!("{key} {} does not exist", path.display()));
            }
        }
        problems
    }

    /// Checks relations between keys that serde alone cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.receiver;
        if r.max_connections == 0
            || self.admin.max_connections == 0
            || r.max_concurrent_streams == 0
            || r.header_read_timeout.is_zero()
            || self.admin.header_read_timeout.is_zero()
            || r.request_timeout.is_zero()
            || r.keepalive_interval.is_zero()
        {
            return Err(ConfigError::Invalid(
                "receiver.max_connections, receiver.max_concurrent_streams, admin.max_connections and every receiver/admin timeout must be above 0".into(),
            ));
        }
        if r.max_request_bytes == 0 || r.max_decompressed_bytes < r.max_request_bytes {
            return Err(ConfigError::Invalid(
                "receiver.max_decompressed_bytes must be at least receiver.max_request_bytes, and both above 0".into(),
            ));
        }
        if r.max_spans_per_request == 0 {
            return Err(ConfigError::Invalid("receiver.max_spans_per_request must be above 0".into()));
        }
        if self.analyze.max_queued_spans < r.max_spans_per_request {
            return Err(ConfigError::Invalid(
                "analyze.max_queued_spans must be at least receiver.max_spans_per_request, or no full request could ever be admitted".into(),
            ));
        }
        if self.analyze.max_queued_bytes < r.max_spans_per_request * QUEUED_SPAN_BYTES_BOUND {
            return Err(ConfigError::Invalid(format!(
                "analyze.max_queued_bytes must be at least {} (receiver.max_spans_per_request × {QUEUED_SPAN_BYTES_BOUND} bytes), or a full request might never be admitted",
                r.max_spans_per_request * QUEUED_SPAN_BYTES_BOUND
            )));
        }
        if let Some(url) = &self.store.postgres_url {
            let parsed = crate::tls::postgres::settings(url)
                .map_err(|e| e.to_string())
                .and_then(|s| s.url.parse::<tokio_postgres::Config>().map_err(|e| e.to_string()));
            if let Err(e) = parsed {
                return Err(ConfigError::Invalid(format!(
                    "store.postgres_url is not a PostgreSQL connection string ({e}); use postgres://user:password@host:5432/database"
                )));
            }
        }
        if let Some(url) = &self.alerts.external_url
            && !is_browser_url(url) {
                return Err(ConfigError::Invalid(format!(
                    "alerts.external_url {url:?} is not an http(s) URL; write the address people open, e.g. https://driftwatch.example.com"
                )));
            }
        if !(1..=64).contains(&self.store.fleet_pool_size) {
            return Err(ConfigError::Invalid("store.fleet_pool_size must be between 1 and 64".into()));
        }
        if self.store.fleet_lease < Duration::from_secs(2) {
            return Err(ConfigError::Invalid("store.fleet_lease must be at least 2s".into()));
        }
        for (i, repo) in self.git.repos.iter().enumerate() {
            if repo.service.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "git.repos[{i}].service is empty; use a service.name or \"*\""
                )));
            }
            if let Some(url) = repo.web_url.as_deref().filter(|u| !is_browser_url(u)) {
                return Err(ConfigError::Invalid(format!(
                    "git.repos[{i}].web_url {url:?} is not an http(s) URL; write the repository's page, e.g. https://github.com/org/repo"
                )));
            }
        }
        let routes = self
            .alerts
            .webhook
            .iter()
            .map(|s| &s.route)
            .chain(self.alerts.alertmanager.iter().map(|s| &s.route))
            .chain(self.alerts.slack.iter().map(|s| &s.route))
            .chain(self.alerts.pagerduty.iter().map(|s| &s.route));
        let quiet = self.alerts.alertmanager.iter().map(|s| ("alertmanager", &s.route));
        let quiet = quiet.chain(self.alerts.slack.iter().map(|s| ("slack", &s.route)));
        for (kind, route) in quiet {
            if route.deploys {
                return Err(ConfigError::Invalid(format!(
                    "alerts.{kind}: deploys = true is for webhook and PagerDuty sinks (Change Events)"
                )));
            }
        }
        for route in routes {
            for name in route.labels.keys() {
                let mut chars = name.chars();
                let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with("__");
                if !valid {
                    return Err(ConfigError::Invalid(format!(
                        "alerts: label name {name:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                    )));
                }
            }
            for pattern in &route.services {
                if let Err(e) = glob::Pattern::new(pattern) {
                    return Err(ConfigError::Invalid(format!(
                        "alerts: services pattern {pattern:?} is not a valid glob: {e}"
                    )));
                }
            }
        }
        let urls = self
            .alerts
            .webhook
            .iter()
            .map(|s| ("alerts.webhook.url", &s.url))
            .chain(self.alerts.alertmanager.iter().map(|s| ("alerts.alertmanager.url", &s.url)))
            .chain(
                self.alerts
                    .slack
                    .iter()
                    .filter(|s| s.webhook_url_file.is_none() && !s.webhook_url.is_empty())
                    .map(|s| ("alerts.slack.webhook_url", &s.webhook_url)),
            )
            .chain(self.alerts.pagerduty.iter().map(|s| ("alerts.pagerduty.url", &s.url)));
        for (key, url) in urls {
            if !is_http_url(url) {
                return Err(ConfigError::Invalid(format!("{key} = {url:?} is not an http(s) URL")));
            }
        }
        // Each secret is given once: as a value or as a file.
        let either = |key: &str, value: bool, file: bool, required: bool| -> Result<(), ConfigError> {
            match (value, file) {
                (true, true) => Err(ConfigError::Invalid(format!("{key}: set either {key} or {key}_file, not both"))),
                (false, false) if required => Err(ConfigError::Invalid(format!("{key} (or {key}_file) is required"))),
                _ => Ok(()),
            }
        };
        for s in &self.alerts.webhook {
            either("alerts.webhook.secret", s.secret.is_some(), s.secret_file.is_some(), false)?;
        }
        for s in &self.alerts.slack {
            either("alerts.slack.webhook_url", !s.webhook_url.is_empty(), s.webhook_url_file.is_some(), true)?;
        }
        for s in &self.alerts.pagerduty {
            either("alerts.pagerduty.routing_key", !s.routing_key.is_empty(), s.routing_key_file.is_some(), true)?;
        }
        either(
            "store.postgres_url",
            self.store.postgres_url.is_some(),
            self.store.postgres_url_file.is_some(),
            false,
        )?;
        if self.alerts.max_attempts == Some(0) || self.alerts.concurrency == 0 {
            return Err(ConfigError::Invalid(
                "alerts.max_attempts (when set) and alerts.concurrency must be above 0".into(),
            ));
        }
        if self.alerts.repeat_interval < Duration::from_secs(1) || self.alerts.max_backoff.is_zero() {
            return Err(ConfigError::Invalid(
                "alerts.repeat_interval must be at least 1s (Alertmanager asks for 30s to 3m) and alerts.max_backoff above 0"
                    .into(),
            ));
        }
        for pattern in &self.detect.outbound.allow {
            if let Err(e) = glob::Pattern::new(pattern) {
                return Err(ConfigError::Invalid(format!(
                    "detect.outbound.allow: pattern {pattern:?} is not a valid glob: {e}"
                )));
            }
        }
        for pattern in &self.detect.repeated_calls.critical_peers {
            if let Err(e) = glob::Pattern::new(pattern) {
                return Err(ConfigError::Invalid(format!(
                    "detect.repeated_calls.critical_peers: pattern {pattern:?} is not a valid glob: {e}"
                )));
            }
        }
        let f = &self.detect.fanout;
        let margins_ok = f.relative_increase.is_finite()
            && f.relative_increase >= 0.0
            && f.absolute_increase.is_finite()
            && f.absolute_increase >= 0.0
            && f.critical_ratio.is_finite();
        // Written so that NaN fails.
        let alpha_ok = f.alpha > 0.0 && f.alpha < 1.0;
        if !margins_ok || !alpha_ok || f.window.is_zero() || f.min_requests == 0 {
            return Err(ConfigError::Invalid(
                "detect.fanout: margins must be finite and not negative, alpha in (0, 1), window above 0 and min_requests at least 1"
                    .into(),
            ));
        }
        for pattern in &self.detect.dependency.ignore {
            if let Err(e) = glob::Pattern::new(pattern) {
                return Err(ConfigError::Invalid(format!(
                    "detect.dependency.ignore: pattern {pattern:?} is not a valid glob: {e}"
                )));
            }
        }
        if let Some(endpoint) = &self.forward.endpoint {
            let ok = endpoint
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "forward.endpoint = {endpoint:?} is not an http(s) URL such as http://collector:4317"
                )));
            }
        }
        for (name, value) in &self.forward.headers {
            let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| n.as_str() == name.as_str())
                && http::HeaderValue::from_str(value).is_ok();
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "forward.headers: {name:?} is not a valid lower-case header name with a printable value"
                )));
            }
        }
        let a = &self.analyze;
        if a.window.is_zero() || a.max_operations == 0 {
            return Err(ConfigError::Invalid(
                "analyze.window and analyze.max_operations must be above 0".into(),
            ));
        }
        let e = &self.detect.error_rate;
        if !(e.alpha > 0.0 && e.alpha < 1.0) {
            return Err(ConfigError::Invalid(format!(
                "detect.error_rate.alpha = {} must lie strictly between 0 and 1",
                e.alpha
            )));
        }
        let rate = |r: f64| (0.0..1.0).contains(&r);
        if !(e.relative_increase >= 0.0 && rate(e.absolute_increase) && rate(e.critical_increase)) {
            return Err(ConfigError::Invalid(
                "detect.error_rate: relative_increase must be >= 0, absolute_increase and critical_increase between 0 and 1".into(),
            ));
        }
        if e.consecutive == 0 || e.resolve_after == 0 || e.min_samples < 2 || e.persistence_windows == 0 {
            return Err(ConfigError::Invalid(
                "detect.error_rate: consecutive, resolve_after and persistence_windows must be >= 1, min_samples >= 2".into(),
            ));
        }
        let l = &self.detect.latency;
        if !(0.0 < l.quantile && l.quantile < 1.0) {
            return Err(ConfigError::Invalid(format!(
                "detect.latency.quantile = {} must lie strictly between 0 and 1",
                l.quantile
            )));
        }
        if !(0.0 < l.alpha && l.alpha < 1.0) {
            return Err(ConfigError::Invalid(format!(
                "detect.latency.alpha = {} must lie strictly between 0 and 1",
                l.alpha
            )));
        }
        if l.relative_increase < 0.0 || l.consecutive == 0 || l.resolve_after == 0 || l.min_samples < 2 {
            return Err(ConfigError::Invalid(
                "detect.latency: relative_increase must be >= 0, consecutive and resolve_after >= 1, min_samples >= 2".into(),
            ));
        }
        if l.current_window < a.window || l.evaluation_interval.is_zero() || l.baseline_window < 2 * a.window {
            return Err(ConfigError::Invalid(
                "detect.latency.current_window must be at least analyze.window, baseline_window at least twice it, and evaluation_interval above 0".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address (`POST /v1/traces`).
    pub http_listen: SocketAddr,
    /// Largest request body accepted on the wire (compressed size).
    pub max_request_bytes: usize,
    /// Largest body after decompression; a gzip bomb stops here.
    pub max_decompressed_bytes: usize,
    /// Largest number of spans in one export request.
    pub max_spans_per_request: usize,
    /// Export requests processed at once; more get a retryable status.
    pub max_concurrent_requests: usize,
    /// Spans whose timestamps lie further in the future than this are
    /// rejected as absurd (clock bugs, unit mix-ups).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Delay suggested to clients when analysis is saturated.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Connections held open at once, per listener (gRPC and HTTP each);
    /// more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A client must send a request's headers within this (slowloris), and
    /// an idle keep-alive connection is closed after it (OTLP/HTTP).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Concurrent HTTP/2 streams per gRPC connection.
    pub max_concurrent_streams: u32,
    /// A gRPC export that takes longer than this is cancelled.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// HTTP/2 keepalive pings on idle gRPC connections; a peer that does
    /// not answer within the same time again is dropped.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Above this resident memory (MiB), new data is refused with a
    /// retryable status (gRPC UNAVAILABLE with RetryInfo, HTTP 503 with
    /// Retry-After) until memory falls back; 0 turns the limit off.
    pub memory_limit_mib: u64,
    /// A file holding the bearer token OTLP exporters must send
    /// (`Authorization: Bearer …`); unset, the receivers are open.
    pub bearer_token_file: Option<PathBuf>,
    /// Serve both receivers over TLS with this certificate.
    pub tls: Option<TlsConfig>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_request_bytes: 4 << 20,
            max_decompressed_bytes: 16 << 20,
            max_spans_per_request: 16_384,
            max_concurrent_requests: 256,
            max_future_skew: Duration::from_secs(600),
            retry_after: Duration::from_secs(1),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 64,
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            memory_limit_mib: 256,
            bearer_token_file: None,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `/metrics`, `/api/v1`, `/ui`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// Connections held open at once: its own bound, so idle admin clients
    /// can never use up the descriptors ingestion needs.
    pub max_connections: usize,
    /// Headers must arrive within this; idle keep-alive connections close
    /// after it.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A file holding the bearer token `/api` and `/ui` require.
    pub api_token_file: Option<PathBuf>,
    /// A file holding the bearer token `/metrics` requires.
    pub metrics_token_file: Option<PathBuf>,
    /// Serve the admin listener over TLS with this certificate.
    pub tls: Option<TlsConfig>,
}

/// A listener's certificate: PEM files, as a Kubernetes TLS Secret mounts
/// them, read again whenever either file changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for a renewed certificate.
    #[serde(with = "humantime_serde", default = "default_tls_reload")]
    pub reload_interval: Duration,
}

fn default_tls_reload() -> Duration {
    Duration::from_secs(10)
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            api_token_file: None,
            metrics_token_file: None,
            tls: None,
        }
    }
}

/// The most bytes one queued span holds, its interned strings aside; the
/// analysis queue checks its span type against it when it compiles.
pub(crate) const QUEUED_SPAN_BYTES_BOUND: usize = 320;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzeConfig {
    /// Analysis shards; each owns a disjoint set of services.
    pub shards: usize,
    /// Spans accepted but not yet analysed, across all shards. When full,
    /// clients get a retryable status instead of memory growing.
    pub max_queued_spans: usize,
    /// Bytes those queued spans may hold (the strings they name are
    /// interned and budgeted apart).
    pub max_queued_bytes: usize,
    /// Holds the analysis workers still; only for exercising backpressure.
    pub pause: bool,
    /// Length of one event-time latency window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Operations tracked exactly per service; the rest fold into
    /// `__other__`.
    pub max_operations: usize,
    /// Revisions remembered per service.
    pub max_revisions: usize,
    /// Services analysed per process; spans of further services are
    /// counted and not analysed.
    pub max_services: usize,
    /// Spans ending this long before the newest span of their service are
    /// too late: counted and dropped.
    #[serde(with = "humantime_serde")]
    pub max_lateness: Duration,
    /// An operation unseen for this long (event time) gives up its slot.
    #[serde(with = "humantime_serde")]
    pub operation_idle: Duration,
}

impl Default for AnalyzeConfig {
    fn default() -> Self {
        AnalyzeConfig {
            shards: 2,
            max_queued_spans: 262_144,
            max_queued_bytes: 64 << 20,
            pause: false,
            window: Duration::from_secs(10),
            max_operations: 50,
            max_revisions: 8,
            max_services: 1000,
            max_lateness: Duration::from_secs(120),
            operation_idle: Duration::from_secs(1800),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub latency: LatencyConfig,
    pub error_rate: ErrorRateConfig,
    pub outbound: OutboundConfig,
    pub dependency: DependencyConfig,
    pub repeated_calls: RepeatedCallConfig,
    pub fanout: FanoutConfig,
}

/// Fan-out (N+1). A `fanout_regression` event fires when the requests of
/// an operation call one peer more times each than under the last revision
/// before: over the last two `window`s of event time, at least
/// `min_requests` requests, a mean of calls per request up by
/// `relative_increase` (1.0 = doubled) and by `absolute_increase` calls,
/// and a one-sided Mann-Whitney p-value below `alpha` divided by the
/// series compared (Bonferroni), in `consecutive` evaluations in a row.
/// It is critical when the mean grew `critical_ratio` times. It resolves
/// after `resolve_after` evaluations in a row in which no serving revision
/// stays above half of either margin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    pub enabled: bool,
    pub min_requests: u64,
    pub relative_increase: f64,
    pub absolute_increase: f64,
    pub alpha: f64,
    pub consecutive: u32,
    pub critical_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub resolve_after: u32,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            enabled: true,
            min_requests: 30,
            relative_increase: 1.0,
            absolute_increase: 1.0,
            alpha: 0.01,
            consecutive: 2,
            critical_ratio: 10.0,
            window: Duration::from_secs(60),
            resolve_after: 6,
        }
    }
}

/// Repeated unsafe calls. A `repeated_unsafe_call` event fires when, in a
/// revision, `min_repeats` requests of one operation made the same
/// non-idempotent call (HTTP POST or PATCH, a messaging publish, a resend)
/// to one peer more than once, while the last revision before it that made
/// the call in at least `min_baseline_requests` requests never made it
/// twice in one. It is critical when the peer matches a glob of
/// `critical_peers` (payment and other side-effect peers), else a warning.
/// It resolves once no request repeated the call for `resolve_after`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepeatedCallConfig {
    pub enabled: bool,
    pub min_repeats: u64,
    pub min_baseline_requests: u64,
    /// Glob patterns over peer identities (`api.stripe.com:443`,
    /// `*.payments.internal:*`).
    pub critical_peers: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
}

impl Default for RepeatedCallConfig {
    fn default() -> Self {
        RepeatedCallConfig {
            enabled: true,
            min_repeats: 3,
            min_baseline_requests: 20,
            critical_peers: Vec::new(),
            resolve_after: Duration::from_secs(900),
        }
    }
}

/// New libraries. A `new_dependency` event fires when spans come from an
/// instrumentation scope (`InstrumentationScope.name`: a database driver,
/// an HTTP client, a messaging library) that the service's spans have not
/// come from within `lookback`, in a revision that has an earlier one to
/// compare with, once `min_spans` spans were seen; never within the
/// service's first `learning_period`. It resolves once no span has come
/// from the scope for `resolve_after`. Scopes matching a glob of `ignore`
/// are never reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DependencyConfig {
    pub enabled: bool,
    /// `info` by default: alert routes without `min_severity` still send
    /// it; verdicts and routes with `min_severity = "warning"` do not.
    pub severity: crate::detect::kind::Severity,
    pub ignore: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    pub min_spans: u64,
    #[serde(with = "humantime_serde")]
    pub learning_period: Duration,
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
}

impl Default for DependencyConfig {
    fn default() -> Self {
        DependencyConfig {
            enabled: true,
            severity: crate::detect::kind::Severity::Info,
            ignore: Vec::new(),
            lookback: Duration::from_secs(7 * 86_400),
            min_spans: 3,
            learning_period: Duration::from_secs(600),
            resolve_after: Duration::from_secs(900),
        }
    }
}

/// Thresholds of the error-rate detector. It reads the same windows as the
/// latency detector (its `current_window`, `evaluation_interval` and
/// `deploy_comparison` apply), with the same choice of baseline. An event
/// fires only when all hold for `consecutive` evaluations: both samples
/// have at least `min_samples` spans and the current one `min_errors`
/// errors; the error rate rose by `relative_increase` AND by
/// `absolute_increase`; the one-sided Fisher exact p-value is below `alpha`
/// divided by the number of operations tested; and two thirds of the groups
/// of 200 spans spanning the last `persistence` of traffic show half the
/// rise on their own. Shortly after a deploy over a baseline without bursts,
/// a rise that came evenly fires at once instead (`steady_persistence`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorRateConfig {
    pub enabled: bool,
    pub min_samples: u64,
    pub min_errors: u64,
    /// Relative rise of the rate (1.0 = doubled).
    pub relative_increase: f64,
    /// Absolute rise of the rate (0.01 = one percentage point).
    pub absolute_increase: f64,
    pub alpha: f64,
    /// The rise must show, by half the margins, in two thirds of the groups
    /// of 200 spans (at least `persistence_windows` groups) that span the
    /// last `persistence` of traffic: an outage of a third of it or less
    /// does not fire.
    #[serde(with = "humantime_serde")]
    pub persistence: Duration,
    pub persistence_windows: usize,
    /// After a deploy whose baseline revision failed steadily (no burst in
    /// its retained traffic), a rise spread evenly over the new revision's
    /// traffic may fire once that revision has served this long, instead of
    /// waiting for `persistence`. Zero turns this off.
    #[serde(with = "humantime_serde")]
    pub steady_persistence: Duration,
    pub consecutive: u32,
    /// Clean evaluations in a row (every serving revision back below half
    /// a margin over the baseline, and not significantly above it raised by
    /// half the relative margin), or evaluations without traffic of the
    /// operation, before a firing event resolves.
    pub resolve_after: u32,
    /// A rise of the rate by this much (absolute) marks the event critical.
    pub critical_increase: f64,
}

impl Default for ErrorRateConfig {
    fn default() -> Self {
        ErrorRateConfig {
            enabled: true,
            min_samples: 200,
            min_errors: 5,
            relative_increase: 1.0,
            absolute_increase: 0.01,
            alpha: 0.01,
            persistence: Duration::from_secs(240),
            persistence_windows: 6,
            steady_persistence: Duration::from_secs(30),
            consecutive: 2,
            resolve_after: 3,
            critical_increase: 0.05,
        }
    }
}

/// Unexpected outbound calls. A `new_outbound_peer` event fires when a
/// service calls a peer it has not called within `lookback` (after its first
/// `learning_period`, so a new service does not report every peer), once
/// `min_calls` calls were seen; and for any peer outside `allow` when an
/// allowlist is set. Link-local and cloud-metadata addresses (169.254.0.0/16,
/// fe80::/10, metadata.google.internal) always fire, as critical.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    pub enabled: bool,
    /// Egress allowlist: glob patterns over peer identities. A pattern
    /// without a port (`*.svc.cluster.local`) matches the host on any port.
    pub allow: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    pub min_calls: u64,
    #[serde(with = "humantime_serde")]
    pub learning_period: Duration,
    /// A firing event resolves once the peer has not been called this long.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            enabled: true,
            allow: Vec::new(),
            lookback: Duration::from_secs(7 * 86_400),
            min_calls: 3,
            learning_period: Duration::from_secs(600),
            resolve_after: Duration::from_secs(900),
        }
    }
}

/// Thresholds of the latency-regression detector. An event fires only when
/// all hold for `consecutive` evaluations: both samples have at least
/// `min_samples`; the `quantile` rose by `relative_increase` AND by
/// `absolute_increase`; the one-sided Mann-Whitney p-value is below `alpha`
/// divided by the number of operations tested (Bonferroni).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    pub enabled: bool,
    pub quantile: f64,
    pub min_samples: u64,
    pub relative_increase: f64,
    #[serde(with = "humantime_serde")]
    pub absolute_increase: Duration,
    pub alpha: f64,
    /// The rise must show in each of this many most recent non-overlapping
    /// stretches of traffic (windows, grouped when sparse).
    pub persistence_windows: usize,
    /// Bad evaluations in a row before an event fires.
    pub consecutive: u32,
    /// Clean evaluations in a row (every serving revision back within half
    /// the margins of the baseline the event fired against, by quantile and
    /// by the shifted rank test), or evaluations without traffic of the
    /// operation, before a firing event resolves.
    pub resolve_after: u32,
    /// Evaluations run each time event time crosses a multiple of this.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// An evaluation waits this long past its boundary for stragglers.
    #[serde(with = "humantime_serde")]
    pub evaluation_delay: Duration,
    /// The current sample: the most recent traffic of this length.
    #[serde(with = "humantime_serde")]
    pub current_window: Duration,
    /// The trailing baseline (no deploy): up to this much older traffic.
    #[serde(with = "humantime_serde")]
    pub baseline_window: Duration,
    /// For this long after a deploy, a revision is compared with the one
    /// before it; afterwards with its own trailing window.
    #[serde(with = "humantime_serde")]
    pub deploy_comparison: Duration,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            enabled: true,
            quantile: 0.95,
            min_samples: 100,
            relative_increase: 0.2,
            absolute_increase: Duration::from_millis(5),
            alpha: 0.01,
            persistence_windows: 4,
            consecutive: 2,
            resolve_after: 3,
            evaluation_interval: Duration::from_secs(10),
            evaluation_delay: Duration::from_secs(5),
            current_window: Duration::from_secs(60),
            baseline_window: Duration::from_secs(1800),
            deploy_comparison: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the embedded store (`driftwatch.redb`).
    pub path: PathBuf,
    /// How often the analysis state is written to the store; after a crash
    /// at most this much analysis (never an event or alert) is lost.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Resolved events detected longer ago than this are deleted.
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
    /// Baselines of revisions that stopped running longer ago than this
    /// are not kept.
    #[serde(with = "humantime_serde")]
    pub baseline_retention: Duration,
    /// Fleet mode: baselines, peer sets and events shared by every replica
    /// through this PostgreSQL database, e.g.
    /// `postgres://driftwatch:secret@db:5432/driftwatch`.
    pub postgres_url: Option<String>,
    /// A file holding the URL instead (a mounted Secret).
    pub postgres_url_file: Option<PathBuf>,
    /// This replica's name in the fleet; defaults to the host name (the pod
    /// name in Kubernetes). Must differ between replicas.
    pub replica: Option<String>,
    /// A replica that has not renewed its claims for this long is gone: its
    /// firing drifts no longer hold the fleet's event open and its pending
    /// deliveries pass to another replica.
    #[serde(with = "humantime_serde")]
    pub fleet_lease: Duration,
    /// Fleet mode: PostgreSQL sessions this replica keeps open at most.
    pub fleet_pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("/var/lib/driftwatch"),
            flush_interval: Duration::from_secs(30),
            event_retention: Duration::from_secs(30 * 86_400),
            baseline_retention: Duration::from_secs(14 * 86_400),
            postgres_url: None,
            postgres_url_file: None,
            replica: None,
            fleet_lease: Duration::from_secs(60),
            fleet_pool_size: DEFAULT_FLEET_POOL_SIZE,
        }
    }
}

/// Forwarding of received traffic, unchanged, to an upstream collector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP).
    pub endpoint: Option<String>,
    pub protocol: ForwardProtocol,
    /// Bytes of requests waiting to be forwarded, at most.
    pub max_queue_bytes: usize,
    /// When the queue is full: false drops (and counts) the request for the
    /// upstream while analysis still takes it; true refuses it with a
    /// retryable status, so nothing is lost but the client waits.
    pub prefer_no_loss: bool,
    /// Requests in flight to the upstream at most, over one reused
    /// connection: as many as its latency needs (rate × latency), up to this.
    pub concurrency: usize,
    pub max_retries: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Headers (gRPC metadata) sent with every forwarded request, such as
    /// an API key the upstream asks for.
    pub headers: BTreeMap<String, String>,
    pub compression: ForwardCompression,
    /// PEM CA certificates trusted for an `https://` upstream, in addition
    /// to the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardCompression {
    #[default]
    None,
    Gzip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardProtocol {
    #[default]
    Grpc,
    Http,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            endpoint: None,
            protocol: ForwardProtocol::Grpc,
            max_queue_bytes: 64 << 20,
            prefer_no_loss: false,
            concurrency: 32,
            max_retries: 5,
            initial_backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(10),
            headers: BTreeMap::new(),
            compression: ForwardCompression::None,
            ca_file: None,
        }
    }
}

/// Which alerts a sink receives.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Route {
    /// Glob patterns over service names; empty means every service.
    pub services: Vec<String>,
    /// Event kinds; empty means every kind.
    pub kinds: Vec<crate::detect::kind::EventKind>,
    /// Only events at least this severe.
    pub min_severity: Option<crate::detect::kind::Severity>,
    /// Static labels this sink adds to every notification (`team`,
    /// `cluster`, `environment`): Alertmanager labels (an event's own
    /// label of the same name wins), the webhook body's `labels`, a Slack
    /// context line and PagerDuty's `custom_details.labels`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Webhook and PagerDuty sinks: also announce each deploy of a routed
    /// service — a revision that begins serving after another one — as a
    /// webhook `{"status": "deploy"}` or a PagerDuty Change Event, so the
    /// deploy shows next to the incidents it causes.
    pub deploys: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    pub url: String,
    /// HMAC-SHA256 key; the signature of the body goes in
    /// `X-Driftwatch-Signature: sha256=<hex>`.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the key instead (a mounted Secret).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default, flatten)]
    pub route: Route,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSinkConfig {
    /// Base URL; alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    /// A file holding a bearer token sent as `Authorization: Bearer …`
    /// (an Alertmanager behind an authenticating proxy).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// The token, read from `bearer_token_file` at start.
    #[serde(skip)]
    pub bearer_token: Option<String>,
    #[serde(default, flatten)]
    pub route: Route,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSinkConfig {
    /// The incoming-webhook URL (a secret), or `webhook_url_file`.
    #[serde(default)]
    pub webhook_url: String,
    #[serde(default)]
    pub webhook_url_file: Option<PathBuf>,
    /// CODEOWNERS owners to Slack mentions: `"@shop/orders" =
    /// "<!subteam^S0123>"`, `"@dana" = "<@U0456>"`; an owner without one is
    /// named as written.
    #[serde(default)]
    pub mentions: std::collections::BTreeMap<String, String>,
    #[serde(default, flatten)]
    pub route: Route,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutySinkConfig {
    /// The Events v2 routing key (a secret), or `routing_key_file`.
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
    #[serde(default, flatten)]
    pub route: Route,
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

/// Alert delivery: every sink may appear any number of times.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub webhook: Vec<WebhookSinkConfig>,
    pub alertmanager: Vec<AlertmanagerSinkConfig>,
    pub slack: Vec<SlackSinkConfig>,
    pub pagerduty: Vec<PagerDutySinkConfig>,
    /// Alerts of one deploy (service, revision, kind) arriving within this
    /// wait go out as one notification per sink.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// Delivery attempts before an alert is given up (counted as dead). Unset
    /// by default: an alert is retried, with backoff capped at
    /// `max_backoff`, until `max_age`, so a sink outage shorter than that
    /// loses nothing.
    pub max_attempts: Option<u32>,
    /// Age at which an undelivered alert is given up.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Requests in flight per sink.
    pub concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Firing alerts are re-sent to Alertmanager this often, so they do not
    /// expire there while the drift lasts (its clients should re-send every
    /// 30 s to 3 min).
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Base URL of the incident pages in alerts (defaults to the admin
    /// listener's address).
    pub external_url: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook: Vec::new(),
            alertmanager: Vec::new(),
            slack: Vec::new(),
            pagerduty: Vec::new(),
            group_wait: Duration::from_secs(10),
            max_attempts: None,
            max_age: Duration::from_secs(24 * 3600),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            concurrency: 2,
            request_timeout: Duration::from_secs(10),
            repeat_interval: Duration::from_secs(60),
            external_url: None,
        }
    }
}

/// Where each service's source lives, for attribution.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitConfig {
    pub repos: Vec<GitRepoConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitRepoConfig {
    /// The service (`namespace/name` for spans with a `service.namespace`;
    /// such a service also matches an entry of its bare name), or `"*"` for
    /// every service without an entry of its own.
    pub service: String,
    /// A git checkout (git-sync keeps it current in Kubernetes).
    pub path: PathBuf,
    /// In a monorepo, only commits touching this directory are suspects.
    #[serde(default)]
    pub subdir: Option<String>,
    /// The repository's web address (`https://github.com/org/repo`, a
    /// GitLab project's URL): suspects link their pull or merge request.
    #[serde(default)]
    pub web_url: Option<String>,
    /// Removed from the start of the spans' `code.file.path` before it is
    /// looked up in the repository (`/app/`); needed only when the longest
    /// shared suffix is ambiguous.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Put before the spans' path, after `strip_prefix` (`services/orders/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// AI-authorship rules added to the built-in set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiConfig {
    /// e.g. `{ tool = "corp-agent", confidence = "high", email = "agent@corp.example" }`;
    /// matchers: email, github_id, github_login, trailer = { key, value_prefix },
    /// line_contains, name_suffix, subject_prefix.
    pub rules: Vec<crate::authorship::Rule>,
}

/// Whether `url` is an absolute http(s) URL with a host, as a browser reads
/// it (international host names included): an address people open, where
/// [`is_http_url`] checks one driftwatch itself calls.
fn is_browser_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// Durations as human strings ("30s", "5m") in TOML and the environment.
pub(crate) mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(&String::deserialize(d)?)
    }

    fn parse<E: serde::de::Error>(text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text)
            .map_err(|e| E::custom(format!("`{text}` is not a duration ({e}); write e.g. \"30s\" or \"5m\"")))
    }

    /// The same for optional durations.
    pub(crate) mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?.map(|text| super::parse(&text)).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        Config::load_with_env(Some(file.path()), Env::prefixed("DRIFTWATCH_TEST_NOTHING_"))
    }

    #[test]
    fn defaults_are_valid() {
        let config = load_toml("").expect("defaults");
        assert_eq!(config.receiver.grpc_listen.port(), 4317);
        assert_eq!(config.receiver.http_listen.port(), 4318);
        assert_eq!(config.admin.listen.port(), 9464);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_toml("[receiver]\ngrpc_lisen = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`receiver.grpc_lisen`") && !err.contains("grpc_lisen.grpc_lisen"), "{err}");
        assert!(err.contains("grpc_listen"), "lists valid keys: {err}");
    }

    #[test]
    fn unknown_section_is_named() {
        let err = load_toml("[recever]\n").unwrap_err().to_string();
        assert!(err.contains("recever"), "{err}");
    }

    #[test]
    fn bad_value_names_key() {
        let err = load_toml("[receiver]\nmax_future_skew = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("receiver.max_future_skew"), "{err}");
        let err = load_toml("[admin]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("admin.listen"), "{err}");
    }

    #[test]
    fn a_bad_postgres_url_is_named_and_a_good_one_accepted() {
        let err = load_toml("[store]\npostgres_url = \"db:5432\"\n").unwrap_err().to_string();
        assert!(err.contains("store.postgres_url"), "{err}");
        let config =
            load_toml("[store]\npostgres_url = \"postgres://dw:pw@db:5432/fleet\"\nreplica = \"pod-1\"\n").expect("valid");
        assert_eq!(config.store.replica.as_deref(), Some("pod-1"));
    }

    #[test]
    fn deploy_markers_go_to_webhooks_and_pagerduty_only() {
        let ok = load_toml("[[alerts.webhook]]\nurl = \"http://127.0.0.1:9/hook\"\ndeploys = true\n").expect("valid");
        assert!(ok.alerts.webhook[0].route.deploys);
        let err = load_toml("[[alerts.slack]]\nwebhook_url = \"https://hooks.slack.com/services/x\"\ndeploys = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("alerts.slack") && err.contains("deploys"), "{err}");
        let err = load_toml("[detect.dependency]\nignore = [\"[unclosed\"]\n").unwrap_err().to_string();
        assert!(err.contains("detect.dependency.ignore"), "{err}");
    }

    #[test]
    fn bad_allowlist_pattern_is_named() {
        let err = load_toml("[detect.outbound]\nallow = [\"[unclosed\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("detect.outbound.allow") && err.contains("[unclosed"), "{err}");
    }

    #[test]
    fn a_sinks_static_label_names_must_be_prometheus_label_names() {
        let ok = load_toml("[[alerts.slack]]\nwebhook_url = \"https://hooks.slack.com/services/x\"\nlabels = { team = \"payments\" }\n")
            .expect("valid");
        assert_eq!(ok.alerts.slack[0].route.labels["team"], "payments");
        for bad in ["team-name", "1team", "__meta"] {
            let err = load_toml(&format!("[[alerts.webhook]]\nurl = \"http://127.0.0.1:9/h\"\nlabels = {{ {bad:?} = \"x\" }}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("label name") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn contract_example_parses() {
        let config = load_toml(
            "[store]\npath = \"/tmp/dw\"\n[forward]\n[detect.latency]\n[detect.outbound]\nallow = [\"payments.internal:443\", \"*.svc.cluster.local\"]\n\
             [[git.repos]]\nservice = \"checkout\"\npath = \"/repos/shop\"\nsubdir = \"services/checkout\"\n\
             [[alerts.webhook]]\nurl = \"http://127.0.0.1:9000/hook\"\nsecret = \"s\"\n\
             [[alerts.alertmanager]]\nurl = \"http://127.0.0.1:9093\"\n\
             [[alerts.slack]]\nwebhook_url = \"https://hooks.slack.com/services/T/B/X\"\n\
             [[alerts.pagerduty]]\nrouting_key = \"k\"\nurl = \"http://127.0.0.1:9999/v2/enqueue\"\nmin_severity = \"critical\"\n",
        )
        .expect("contract example");
        assert_eq!(config.alerts.webhook[0].secret.as_deref(), Some("s"));
        assert_eq!(config.git.repos[0].subdir.as_deref(), Some("services/checkout"));
        assert_eq!(config.detect.outbound.allow.len(), 2);
        let err = load_toml("[[alerts.webhook]]\nurl = \"ftp://x\"\n").unwrap_err().to_string();
        assert!(err.contains("alerts.webhook.url"), "{err}");
        let err = load_toml("[[alerts.slack]]\nwebhook_ur = \"https://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhook_ur"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_once_and_never_show_in_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let toml = format!(
            "[store]\npostgres_url_file = \"{}\"\n\
             [[alerts.webhook]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"{}\"\n\
             [[alerts.slack]]\nwebhook_url_file = \"{}\"\n\
             [[alerts.pagerduty]]\nrouting_key_file = \"{}\"\n\
             [[alerts.alertmanager]]\nurl = \"http://127.0.0.1:9093\"\nbearer_token_file = \"{}\"\n",
            file("pg", "postgres://u:pw@db/x\n"),
            file("hmac", "k3y\n"),
            file("slack", "https://hooks.slack.test/T/B/X\n"),
            file("pd", "rk\n"),
            file("am", "t0ken\n"),
        );
        let mut config = Config::from_toml(&toml).expect("valid before the files are read");
        config.read_secret_files().expect("read");
        assert_eq!(config.store.postgres_url.as_deref(), Some("postgres://u:pw@db/x"));
        assert_eq!(config.alerts.webhook[0].secret.as_deref(), Some("k3y"));
        assert_eq!(config.alerts.slack[0].webhook_url, "https://hooks.slack.test/T/B/X");
        assert_eq!(config.alerts.pagerduty[0].routing_key, "rk");
        assert_eq!(config.alerts.alertmanager[0].bearer_token.as_deref(), Some("t0ken"));

        let both = Config::from_toml(&format!("[[alerts.pagerduty]]\nrouting_key = \"a\"\nrouting_key_file = \"{}\"\n", file("x", "b")))
            .unwrap_err()
            .to_string();
        assert!(both.contains("either alerts.pagerduty.routing_key or"), "{both}");
        let none = Config::from_toml("[[alerts.slack]]\n").unwrap_err().to_string();
        assert!(none.contains("alerts.slack.webhook_url (or alerts.slack.webhook_url_file) is required"), "{none}");

        let mut missing = Config::from_toml("[store]\npostgres_url_file = \"/nonexistent/pg\"\n").expect("valid");
        let err = missing.read_secret_files().unwrap_err().to_string();
        assert!(err.contains("store.postgres_url_file") && err.contains("/nonexistent/pg"), "{err}");
        let mut not_url = Config::from_toml(&format!("[[alerts.slack]]\nwebhook_url_file = \"{}\"\n", file("s2", "hunter2"))).expect("valid");
        let err = not_url.read_secret_files().unwrap_err().to_string();
        assert!(err.contains("does not hold an http(s) URL") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/driftwatch.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }));
    }

    #[test]
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("d.toml", "[receiver]\ngrpc_listen = \"127.0.0.1:1111\"\n")?;
            jail.set_env("DWTEST_RECEIVER__GRPC_LISTEN", "127.0.0.1:2222");
            jail.set_env("DWTEST_LOG_FORMAT", "json");
            let config = Config::load_with_env(Some(Path::new("d.toml")), Env::prefixed("DWTEST_")).map_err(|e| e.to_string())?;
            assert_eq!(config.receiver.grpc_listen.port(), 2222);
            Ok(())
        });
    }

    #[test]
    fn a_repository_web_url_must_be_an_http_url() {
        let config = |web_url: &str| {
            Config::from_toml(&format!(
                "[[git.repos]]\nservice = \"checkout\"\npath = \"/repos/shop\"\nweb_url = {web_url:?}\n"
            ))
        };
        assert!(config("https://github.com/shop/checkout").is_ok());
        let error = config("github.com/shop/checkout").expect_err("no scheme").to_string();
        assert!(error.contains("git.repos[0].web_url"), "{error}");
    }

    #[test]
    fn environment_typo_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DWTEST_RECEIVER__GRPC_LISEN", "127.0.0.1:2222");
            let err = Config::load_with_env(None, Env::prefixed("DWTEST_")).unwrap_err().to_string();
            assert!(err.contains("`receiver.grpc_lisen`") && !err.contains("grpc_lisen.grpc_lisen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/driftwatch.toml");
        Config::load_with_env(Some(&path), Env::prefixed("DRIFTWATCH_TEST_NOTHING_")).expect("example config");
    }
}
