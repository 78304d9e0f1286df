//! The process's own logs: human-readable by default, JSON lines when
//! `DRIFTWATCH_LOG_FORMAT=json`; the filter comes from `DRIFTWATCH_LOG`
//! (then `RUST_LOG`), default `info`. Colours only when stderr is a
//! terminal, so files and log collectors get plain text.

pub(crate) mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// A log filter that does not parse: named, never silently replaced.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not a log filter ({reason}); write e.g. \"info\" or \"driftwatch=debug,info\"")]
pub struct FilterError {
    variable: &'static str,
    value: String,
    reason: String,
}

/// `default_filter` applies when neither variable is set.
pub fn init_logging(default_filter: &str) -> Result<(), FilterError> {
    let given = ["DRIFTWATCH_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|variable| std::env::var(variable).ok().map(|value| (variable, value)));
    let filter = match given {
        Some((variable, value)) => EnvFilter::try_new(&value).map_err(|e| FilterError {
            variable,
            value: value.clone(),
            reason: e.to_string(),
        })?,
        None => EnvFilter::new(default_filter),
    };
    let json = std::env::var("DRIFTWATCH_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second initialisation (tests, the demo) keeps the first subscriber.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
    Ok(())
}
