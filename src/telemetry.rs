//! The process's own logs: human-readable by default, JSON lines when
//! `DRIFTWATCH_LOG_FORMAT=json`; the filter comes from `DRIFTWATCH_LOG`
//! (then `RUST_LOG`), default `info`.

use tracing_subscriber::EnvFilter;

/// `default_filter` applies when neither variable is set.
pub fn init_logging(default_filter: &str) {
    let filter = std::env::var("DRIFTWATCH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let json = std::env::var("DRIFTWATCH_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (tests, the demo) keeps the first subscriber.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
