//! `driftwatch gate`: waits for a rollout verdict in a CD pipeline.
//!
//! It polls `GET /api/v1/verdict` until the verdict is pass or fail, or the
//! timeout passes, printing each change of the verdict. The exit code is
//! the answer: 0 pass, 1 fail, 2 still inconclusive at the timeout
//! (including when driftwatch could not be reached all along). A question
//! driftwatch refuses (a bad parameter, a wrong token) is an error, exit 3,
//! so a typo never looks like "not enough traffic yet".

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

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
    let (client, url, query) = (&client, &url, &query);
    let ask = move || async move {
        let mut request = client.get(url).query(query);
        if let Some(token) = &options.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => match response.json::<Verdict>().await {
                Ok(verdict) => Ok(Answer::Verdict(verdict)),
                Err(error) => Ok(Answer::Retry(format!("unreadable verdict from {url}: {error}"))),
            },
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                if status == 503 || status == 502 || status == 504 {
                    Ok(Answer::Retry(format!("driftwatch answered {status}: {message}")))
                } else {
                    Err(GateError::Refused { status, message })
                }
            }
            Err(error) => Ok(Answer::Retry(format!(
                "cannot reach {url}: {}",
                crate::text::error_chain(&error.without_url())
            ))),
        }
    };
    poll(options, out, ask).await
}

/// One answer to a poll.
enum Answer {
    Verdict(Verdict),
    /// Worth asking again: driftwatch unreachable, unavailable, or an
    /// answer that could not be read.
    Retry(String),
}

/// Asks every `interval` until pass, fail or the timeout, on tokio's clock
/// (which a test can pause): the gate's timing, apart from the transport.
async fn poll<F, Fut>(options: &GateOptions, out: &mut impl Write, mut ask: F) -> Result<(Outcome, Option<Verdict>), GateError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Answer, GateError>>,
{
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut last: Option<Verdict> = None;
    let mut last_line = String::new();
    loop {
        let elapsed = started.elapsed().as_secs();
        match ask().await? {
            Answer::Verdict(verdict) => {
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
            Answer::Retry(why) => {
                let _ = writeln!(out, "[{elapsed:>4}s] {why}; retrying");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn options(timeout: u64, interval: u64) -> GateOptions {
        GateOptions {
            admin: "http://driftwatch:9464".into(),
            service: "checkout".into(),
            environment: None,
            revision: "r2".into(),
            timeout: Duration::from_secs(timeout),
            interval: Duration::from_secs(interval),
            min_samples: None,
            severity: None,
            kinds: None,
            token: None,
        }
    }

    fn verdict(outcome: Outcome, reason: &str) -> Verdict {
        Verdict {
            verdict: outcome,
            service: "checkout".into(),
            environment: None,
            revision: "r2".into(),
            seen_as: Some("r2".into()),
            reasons: vec![reason.into()],
            missing_samples: 0,
            operations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Runs the gate against `answers` (the last one repeats), on the
    /// paused clock; returns the outcome, the seconds at which it asked,
    /// and what it printed.
    async fn gate(options: &GateOptions, answers: Vec<Result<Answer, GateError>>) -> (Result<Outcome, GateError>, Vec<u64>, String) {
        let start = Instant::now();
        let asked = RefCell::new(Vec::new());
        let answers = RefCell::new(answers.into_iter().collect::<std::collections::VecDeque<_>>());
        let mut out = Vec::new();
        let (asked_ref, answers) = (&asked, &answers);
        let outcome = poll(options, &mut out, move || async move {
            asked_ref.borrow_mut().push(start.elapsed().as_secs());
            let mut answers = answers.borrow_mut();
            if answers.len() > 1 {
                return answers.pop_front().expect("an answer");
            }
            match &answers[0] {
                Ok(Answer::Verdict(v)) => Ok(Answer::Verdict(v.clone())),
                Ok(Answer::Retry(why)) => Ok(Answer::Retry(why.clone())),
                Err(GateError::Refused { status, message }) => Err(GateError::Refused { status: *status, message: message.clone() }),
                Err(GateError::Client(why)) => Err(GateError::Client(why.clone())),
            }
        })
        .await
        .map(|(outcome, _)| outcome);
        (outcome, asked.into_inner(), String::from_utf8(out).expect("UTF-8"))
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_asks_every_interval_and_answers_inconclusive_at_the_timeout() {
        let answers = vec![
            Ok(Answer::Retry("cannot reach http://driftwatch:9464/api/v1/verdict: connection refused".into())),
            Ok(Answer::Verdict(verdict(Outcome::Inconclusive, "r2 has 12 of 50 samples"))),
        ];
        let (outcome, asked, out) = gate(&options(100, 30), answers).await;
        assert_eq!(outcome.expect("an answer"), Outcome::Inconclusive);
        assert_eq!(asked, [0, 30, 60, 90, 100], "every interval, and once more at the timeout");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "[   0s] cannot reach http://driftwatch:9464/api/v1/verdict: connection refused; retrying",
                "[  30s] inconclusive: r2 has 12 of 50 samples",
                "still inconclusive after 1m 40s: r2 has 12 of 50 samples",
            ],
            "an unchanged verdict is printed once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_stops_at_the_first_pass_or_fail() {
        for outcome in [Outcome::Pass, Outcome::Fail] {
            let answers = vec![
                Ok(Answer::Verdict(verdict(Outcome::Inconclusive, "waiting for samples"))),
                Ok(Answer::Verdict(verdict(Outcome::Inconclusive, "waiting for samples"))),
                Ok(Answer::Verdict(verdict(outcome, "judged"))),
            ];
            let (answer, asked, out) = gate(&options(600, 20), answers).await;
            assert_eq!(answer.expect("an answer"), outcome);
            assert_eq!(asked, [0, 20, 40], "no poll after the answer");
            assert!(out.contains(&format!("[  40s] {}: judged", outcome.as_str())), "{out}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_question_ends_the_gate_at_once() {
        let refused = Err(GateError::Refused { status: 401, message: "a bearer token is required".into() });
        let (outcome, asked, _) = gate(&options(600, 20), vec![refused]).await;
        assert!(matches!(outcome, Err(GateError::Refused { status: 401, .. })), "{outcome:?}");
        assert_eq!(asked, [0]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_longer_than_the_timeout_still_asks_at_the_timeout() {
        let answers = vec![Ok(Answer::Verdict(verdict(Outcome::Inconclusive, "no traffic")))];
        let (outcome, asked, _) = gate(&options(45, 300), answers).await;
        assert_eq!(outcome.expect("an answer"), Outcome::Inconclusive);
        assert_eq!(asked, [0, 45]);
    }
}
