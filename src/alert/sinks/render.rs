//! The wording every sink shares: headlines, lifecycle notes, the top
//! suspect, incident links, and the sanitising of untrusted text.
//!
//! Span names, peers, commit subjects and author names are untrusted: they
//! come from clients and from commits. Every such string is length-capped,
//! stripped of control characters, and escaped for its destination (Slack
//! mrkdwn, JSON via serde).

use crate::detect::event::{DriftEvent, EventKind};

/// Longest untrusted string put into any payload.
pub(crate) const MAX_FIELD_CHARS: usize = 200;
/// Events listed in one grouped notification (the rest are counted).
pub(super) const MAX_LISTED: usize = 10;

/// Caps length and removes control characters (newlines included).
pub(super) fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max_chars).collect();
    if text.chars().filter(|c| !c.is_control()).count() > max_chars {
        out.push('…');
    }
    out
}

/// The service as people read it: `checkout`, or `checkout (production)`.
pub(super) fn service_of(event: &DriftEvent, max_chars: usize) -> String {
    match &event.environment {
        Some(environment) => format!(
            "{} ({})",
            sanitize(&event.service, max_chars),
            sanitize(environment, max_chars)
        ),
        None => sanitize(&event.service, max_chars),
    }
}

/// One line describing what drifted, in plain text.
pub(crate) fn headline(event: &DriftEvent) -> String {
    let service = service_of(event, MAX_FIELD_CHARS);
    match event.kind {
        EventKind::LatencyRegression => {
            let operation = sanitize(event.operation.as_deref().unwrap_or(""), MAX_FIELD_CHARS);
            match &event.stats {
                Some(s) => format!(
                    "{service} {operation}: p95 {:.0} ms -> {:.0} ms (+{:.0}%)",
                    s.baseline.p95_ms,
                    s.current.p95_ms,
                    s.relative_increase * 100.0
                ),
                None => format!("{service} {operation}: latency regression"),
            }
        }
        EventKind::ErrorRateRegression => {
            let operation = sanitize(event.operation.as_deref().unwrap_or(""), MAX_FIELD_CHARS);
            match event.stats.as_ref().and_then(|s| s.error_rate.as_ref()) {
                Some(rates) => format!(
                    "{service} {operation}: errors {} -> {}",
                    crate::text::percent(rates.baseline),
                    crate::text::percent(rates.current)
                ),
                None => format!("{service} {operation}: error-rate regression"),
            }
        }
        EventKind::NewOutboundPeer => format!(
            "{service} calls {}{}",
            sanitize(event.peer.as_deref().unwrap_or(""), MAX_FIELD_CHARS),
            event
                .operation
                .as_deref()
                .map(|o| format!(" from {}", sanitize(o, MAX_FIELD_CHARS)))
                .unwrap_or_default()
        ),
        EventKind::FanoutRegression => {
            let calls = event
                .fanout
                .as_ref()
                .map(|f| format!(": {} -> {} calls per request", f.baseline.mean, f.current.mean))
                .unwrap_or_default();
            format!(
                "{service} {} calls {} more per request{calls}",
                sanitize(event.operation.as_deref().unwrap_or(""), MAX_FIELD_CHARS),
                sanitize(event.peer.as_deref().unwrap_or(""), MAX_FIELD_CHARS),
            )
        }
        EventKind::RepeatedUnsafeCall => {
            let times = event
                .repeats
                .as_ref()
                .map(|r| format!(" ({} of {} requests, up to {} times)", r.repeated_requests, r.requests, r.max_calls_per_request))
                .unwrap_or_default();
            format!(
                "{service} {} calls {} more than once per request{times}",
                sanitize(event.operation.as_deref().unwrap_or(""), MAX_FIELD_CHARS),
                sanitize(event.peer.as_deref().unwrap_or(""), MAX_FIELD_CHARS),
            )
        }
        EventKind::NewDependency => format!(
            "{service} uses a new library: {}{}",
            sanitize(
                event.dependency.as_ref().map_or("", |d| d.scope.as_str()),
                MAX_FIELD_CHARS
            ),
            event
                .operation
                .as_deref()
                .map(|o| format!(" ({})", sanitize(o, MAX_FIELD_CHARS)))
                .unwrap_or_default()
        ),
    }
}

/// "still present in abc123, def456" for a drift later revisions carry;
/// "fixed in …", "rolled back to …" for a resolved one.
pub(super) fn lifecycle_note(event: &DriftEvent) -> Option<String> {
    if let Some(resolution) = &event.resolution {
        return Some(sanitize(&format!("ended: {}", resolution.describe()), MAX_FIELD_CHARS));
    }
    if event.seen_in.is_empty() {
        return None;
    }
    let revisions: Vec<&str> = event.seen_in.iter().map(|r| &r[..r.len().min(12)]).collect();
    Some(sanitize(
        &format!("still present in {}", revisions.join(", ")),
        MAX_FIELD_CHARS,
    ))
}

pub(super) fn severity(event: &DriftEvent) -> &'static str {
    event.severity.as_str()
}

/// "Score orders for fraud… (claude-code) abc123def456 by Lee Park".
pub(super) fn top_suspect(event: &DriftEvent) -> Option<String> {
    let s = event.suspects.first()?;
    let ai =
        s.ai.as_ref()
            .map(|a| format!(" [AI: {}]", sanitize(&a.tool, 40)))
            .unwrap_or_default();
    Some(format!(
        "{} {}{ai} by {}",
        &s.commit[..s.commit.len().min(12)],
        sanitize(&s.summary, MAX_FIELD_CHARS),
        sanitize(&s.author, MAX_FIELD_CHARS)
    ))
}

/// The incident page of `event` under driftwatch's base URL.
pub(super) fn incident_url(base: &str, event: &DriftEvent) -> String {
    format!("{}/ui/events/{}", base.trim_end_matches('/'), event.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_capped() {
        let long = "x".repeat(10_000);
        assert_eq!(sanitize(&long, MAX_FIELD_CHARS).chars().count(), MAX_FIELD_CHARS + 1);
    }
}
