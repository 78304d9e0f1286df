//! `driftwatch gate`: waits for a rollout verdict in a CD pipeline.
//!
//! It polls `GET /api/v1/verdict` until the verdict is pass or fail, or the
//! timeout passes, printing each change of the verdict. The exit code is
//! the answer: 0 pass, 1 fail, 2 still inconclusive at the timeout
//! (including when driftwatch could not be reached all along). A question
//! driftwatch refuses (a bad parameter, a wrong token) is an error, exit 3,
//! so a typo never looks like "not enough traffic yet".

use std::io::Write;
use std::time::{Duration, Instant};

use crate::verdict::{Outcome, Verdict};

/// What to ask and how long to wait.
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// The admin listener, e.g. `http://driftwatch:9464`.
    pub admin: String,
    pub service: String,
    /// `deployment.environment.name`, when the service runs in several.
    pub environment: Option<String>,
    pub revision: String,
    pub timeout: Duration,
    pub interval: Duration,
    pub min_samples: Option<u64>,
    /// `warning` (every drift fails) or `critical`.
    pub severity: Option<String>,
    /// Comma-separated kinds that fail the revision.
    pub kinds: Option<String>,
    /// Bearer token for `/api` (`admin.api_token_file`).
    pub token: Option<String>,
}

/// Why the gate could not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("driftwatch refused the question ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Polls until pass, fail or the timeout; returns the last verdict seen.
pub async fn run(options: &GateOptions, out: &mut impl Write) -> Result<(Outcome, Option<Verdict>), GateError> {
    let client = crate::tls::http_client()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| GateError::Client(e.to_string()))?;
    let url = format!("{}/api/v1/verdict", options.admin.trim_end_matches('/'));
    let mut query: Vec<(&str, String)> = vec![("service", options.service.clone()), ("revision", options.revision.clone())];
    if let Some(environment) = &options.environment {
        query.push(("environment", environment.clone()));
    }
    if let Some(n) = options.min_samples {
        query.push(("min_samples", n.to_string()));
    }
    if let Some(severity) = &options.severity {
        query.push(("severity", severity.clone()));
    }
    if let Some(kinds) = &options.kinds {
        query.push(("kind", kinds.clone()));
    }
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut last: Option<Verdict> = None;
    let mut last_line = String::new();
    loop {
        let mut request = client.get(&url).query(&query);
        if let Some(token) = &options.token {
            request = request.bearer_auth(token);
        }
        let elapsed = started.elapsed().as_secs();
        match request.send().await {
            Ok(response) if response.status().is_success() => match response.json::<Verdict>().await {
                Ok(verdict) => {
                    let line = format!("[{elapsed:>4}s] {}: {}", verdict.verdict.as_str(), verdict.reasons.join("; "));
                    if line.split_once("] ").map(|(_, rest)| rest) != last_line.split_once("] ").map(|(_, rest)| rest) {
                        let _ = writeln!(out, "{line}");
                        last_line = line;
                    }
                    let outcome = verdict.verdict;
                    last = Some(verdict);
                    if outcome != Outcome::Inconclusive {
                        if let Some(verdict) = &last {
                            report(verdict, out);
                        }
                        return Ok((outcome, last));
                    }
                }
                Err(error) => {
                    let _ = writeln!(out, "[{elapsed:>4}s] unreadable verdict from {url}: {error}; retrying");
                }
            },
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                if status == 503 || status == 502 || status == 504 {
                    let _ = writeln!(out, "[{elapsed:>4}s] driftwatch answered {status}: {message}; retrying");
                } else {
                    return Err(GateError::Refused { status, message });
                }
            }
            Err(error) => {
                let _ = writeln!(
                    out,
                    "[{elapsed:>4}s] cannot reach {url}: {}; retrying",
                    crate::text::error_chain(&error.without_url())
                );
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = writeln!(
                out,
                "still inconclusive after {}: {}",
                humantime::format_duration(options.timeout),
                last.as_ref()
                    .map_or("no verdict was received".to_owned(), |v| v.reasons.join("; "))
            );
            return Ok((Outcome::Inconclusive, last));
        }
        tokio::time::sleep(options.interval.min(deadline - now)).await;
    }
}

/// The events and suspects of a failed revision, or what a pass rests on.
fn report(verdict: &Verdict, out: &mut impl Write) {
    match verdict.verdict {
        Outcome::Pass => {
            let _ = writeln!(
                out,
                "pass: revision {} of {} ({} operations judged)",
                verdict.revision,
                verdict.service,
                verdict.operations.len()
            );
        }
        Outcome::Fail => {
            let _ = writeln!(out, "fail: revision {} of {}", verdict.revision, verdict.service);
            for event in &verdict.events {
                let subject = event.operation.as_deref().or(event.peer.as_deref()).unwrap_or("");
                let _ = writeln!(out, "  {} {subject} (event {})", event.kind.as_str(), event.id);
                if let Some(note) = &event.attribution {
                    let _ = writeln!(out, "    {note}");
                }
                for suspect in event.suspects.iter().take(5) {
                    let commit: String = suspect.commit.chars().take(12).collect();
                    let ai = suspect.ai.as_ref().map_or("no AI marker".to_owned(), |ai| {
                        format!("AI: {} ({})", ai.tool, ai.confidence.as_str())
                    });
                    let _ = writeln!(
                        out,
                        "    suspect {commit} {:.2} \"{}\" by {} [{ai}]",
                        suspect.score, suspect.summary, suspect.author
                    );
                    for evidence in suspect.evidence.iter().take(3) {
                        let _ = writeln!(out, "      - {evidence}");
                    }
                }
            }
        }
        Outcome::Inconclusive => {}
    }
}
