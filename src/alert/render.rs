//! Alert payloads for each sink, from a group of events.
//!
//! Span names, peers, commit subjects and author names are untrusted: they
//! come from clients and from commits. Every such string is length-capped,
//! stripped of control characters, and escaped for its destination (Slack
//! mrkdwn, JSON via serde).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::detect::event::{Deploy, DriftEvent, EventKind, EventState, Severity};

/// Longest untrusted string put into any payload.
pub const MAX_FIELD_CHARS: usize = 200;
/// Slack section text limit (Block Kit allows 3000).
const MAX_SLACK_TEXT: usize = 2900;
/// PagerDuty summary limit.
const MAX_PAGERDUTY_SUMMARY: usize = 1024;
/// Events listed in one grouped notification (the rest are counted).
const MAX_LISTED: usize = 10;

/// Caps length and removes control characters (newlines included).
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max_chars).collect();
    if text.chars().filter(|c| !c.is_control()).count() > max_chars {
        out.push('…');
    }
    out
}

/// Untrusted text for Slack mrkdwn: sanitised, `& < >` escaped as Slack
/// requires, and formatting characters neutralised so a span name cannot
/// bold, strike, link or mention.
pub fn slack_text(text: &str) -> String {
    neutralize(
        &sanitize(text, MAX_FIELD_CHARS)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
    )
}

/// Untrusted text for Slack plain_text fields: no entities there, so angle
/// brackets become look-alikes.
fn slack_plain(text: &str, max_chars: usize) -> String {
    neutralize(&sanitize(text, max_chars).replace('<', "‹").replace('>', "›"))
}

/// Replaces Slack's formatting characters with look-alikes.
fn neutralize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '*' => '∗',
            '_' => 'ˍ',
            '~' => '∼',
            '`' => 'ˋ',
            '|' => '¦',
            c => c,
        })
        .collect()
}

/// The service as people read it: `checkout`, or `checkout (production)`.
fn service_of(event: &DriftEvent, max_chars: usize) -> String {
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
pub fn headline(event: &DriftEvent) -> String {
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
pub fn lifecycle_note(event: &DriftEvent) -> Option<String> {
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

fn severity(event: &DriftEvent) -> &'static str {
    event.severity.as_str()
}

/// "Score orders for fraud… (claude-code) abc123def456 by Lee Park".
fn top_suspect(event: &DriftEvent) -> Option<String> {
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

pub fn incident_url(base: &str, event: &DriftEvent) -> String {
    format!("{}/ui/events/{}", base.trim_end_matches('/'), event.id)
}

/// Alertmanager v2 `POST /api/v2/alerts` body: one alert per event.
pub fn alertmanager(events: &[&DriftEvent], base_url: &str, now_ms: u64) -> Value {
    let alerts: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut labels = json!({
                "alertname": match event.kind {
                    EventKind::LatencyRegression => "DriftwatchLatencyRegression",
                    EventKind::NewOutboundPeer => "DriftwatchNewOutboundPeer",
                    EventKind::ErrorRateRegression => "DriftwatchErrorRateRegression",
                    EventKind::NewDependency => "DriftwatchNewDependency",
                    EventKind::RepeatedUnsafeCall => "DriftwatchRepeatedUnsafeCall",
                    EventKind::FanoutRegression => "DriftwatchFanoutRegression",
                },
                "service": sanitize(&event.service, MAX_FIELD_CHARS),
                "revision": sanitize(&event.revision, 64),
                "severity": severity(event),
                "fingerprint": event.fingerprint,
                "source": "driftwatch",
            });
            if let Some(environment) = &event.environment {
                labels["environment"] = json!(sanitize(environment, MAX_FIELD_CHARS));
            }
            if let Some(op) = &event.operation {
                labels["operation"] = json!(sanitize(op, MAX_FIELD_CHARS));
            }
            if let Some(peer) = &event.peer {
                labels["peer"] = json!(sanitize(peer, MAX_FIELD_CHARS));
            }
            if !event.owners.is_empty() {
                // One label a routing tree can match with a regex:
                // owners =~ ".*@shop/orders.*".
                labels["owners"] = json!(sanitize(&event.owners.join(","), MAX_FIELD_CHARS));
            }
            let mut annotations = json!({
                "summary": headline(event),
                "event_id": event.id,
            });
            if let Some(s) = top_suspect(event) {
                annotations["top_suspect"] = json!(s);
            }
            if let Some(pr) = event.suspects.first().and_then(|s| s.pull_request.as_ref()) {
                annotations["top_suspect_pull_request"] = json!(pr.url.clone().unwrap_or_else(|| format!("#{}", pr.number)));
            }
            if let Some(note) = &event.attribution {
                annotations["attribution"] = json!(sanitize(note, 500));
            }
            if let Some(note) = lifecycle_note(event) {
                annotations["lifecycle"] = json!(note);
            }
            // Firing alerts hold for an hour unless re-sent (driftwatch
            // re-sends while the drift lasts); resolved ones end when the
            // drift ended.
            let ends_at = match event.state {
                EventState::Resolved => event
                    .resolved_at
                    .clone()
                    .unwrap_or_else(|| crate::detect::event::rfc3339(now_ms * 1_000_000)),
                EventState::Firing => crate::detect::event::rfc3339((now_ms + 3_600_000) * 1_000_000),
            };
            json!({
                "labels": labels,
                "annotations": annotations,
                "startsAt": event.onset,
                "endsAt": ends_at,
                "generatorURL": incident_url(base_url, event),
            })
        })
        .collect();
    Value::Array(alerts)
}

/// A sink's static labels on its Alertmanager alerts; an event's own
/// label of the same name is kept.
pub fn label_alertmanager(alerts: &mut Value, labels: &BTreeMap<String, String>) {
    for alert in alerts.as_array_mut().into_iter().flatten() {
        if let Some(own) = alert["labels"].as_object_mut() {
            for (name, value) in labels {
                own.entry(name.clone())
                    .or_insert_with(|| json!(sanitize(value, MAX_FIELD_CHARS)));
            }
        }
    }
}

/// A sink's static labels on its webhook body, as `labels`.
pub fn label_webhook(body: &mut Value, labels: &BTreeMap<String, String>) {
    if !labels.is_empty() {
        body["labels"] = json!(labels);
    }
}

/// The owners of the group's drifts (CODEOWNERS) as a Slack line that
/// mentions them, each through `mentions` when it has an entry there.
pub fn mention_owners(body: &mut Value, events: &[&DriftEvent], mentions: &BTreeMap<String, String>) {
    let mut owners: Vec<&str> = Vec::new();
    for owner in events.iter().flat_map(|e| e.owners.iter()) {
        if !owners.contains(&owner.as_str()) {
            owners.push(owner);
        }
    }
    if owners.is_empty() {
        return;
    }
    let named: Vec<String> = owners
        .iter()
        .map(|owner| match mentions.get(*owner) {
            // Configured mentions are the operator's own Slack syntax.
            Some(mention) => mention.clone(),
            None => slack_text(owner),
        })
        .collect();
    if let Some(blocks) = body["blocks"].as_array_mut() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Owners:* {}", named.join(", "))}}));
    }
}

/// A sink's static labels on its Slack message, as a last context line.
pub fn label_slack(body: &mut Value, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    let line = labels
        .iter()
        .map(|(name, value)| format!("{}: {}", slack_text(name), slack_text(value)))
        .collect::<Vec<_>>()
        .join(" · ");
    if let Some(blocks) = body["blocks"].as_array_mut() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}));
    }
}

/// A sink's static labels on a PagerDuty trigger, in `custom_details`.
pub fn label_pagerduty(body: &mut Value, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    if let Some(details) = body.pointer_mut("/payload/custom_details").and_then(Value::as_object_mut) {
        details.insert("labels".into(), json!(labels));
    }
}

/// The generic webhook body: `{"status", "event"}` per the contract, plus
/// `events` holding the whole group.
pub fn webhook(status: EventState, events: &[&DriftEvent]) -> Value {
    json!({
        "status": status,
        "event": events.first(),
        "events": events,
    })
}

/// The webhook body of a deploy marker: `{"status": "deploy", "deploy"}`.
pub fn webhook_deploy(deploy: &Deploy) -> Value {
    json!({"status": "deploy", "deploy": deploy})
}

/// A PagerDuty Change Event for a deploy: it shows on the service's
/// timeline next to the incidents that follow.
pub fn pagerduty_change(routing_key: &str, deploy: &Deploy, base_url: &str) -> Value {
    let service = match &deploy.environment {
        Some(environment) => format!("{} ({})", sanitize(&deploy.service, MAX_FIELD_CHARS), sanitize(environment, MAX_FIELD_CHARS)),
        None => sanitize(&deploy.service, MAX_FIELD_CHARS),
    };
    let short = |r: &str| r[..r.len().min(12)].to_owned();
    let summary = match &deploy.previous_revision {
        Some(previous) => format!("Deploy: {service} now serves {} (was {})", short(&deploy.revision), short(previous)),
        None => format!("Deploy: {service} now serves {}", short(&deploy.revision)),
    };
    let mut links = vec![json!({"href": format!("{}/ui", base_url.trim_end_matches('/')), "text": "driftwatch"})];
    if let Some(web) = deploy.repository.as_deref().and_then(crate::attribute::remote::web_url) {
        links.push(json!({"href": format!("{web}/commit/{}", deploy.revision), "text": "deployed commit"}));
    }
    json!({
        "routing_key": routing_key,
        "payload": {
            "summary": sanitize(&summary, MAX_PAGERDUTY_SUMMARY),
            "timestamp": deploy.first_seen,
            "source": "driftwatch",
            "custom_details": {
                "service": deploy.service,
                "environment": deploy.environment,
                "revision": deploy.revision,
                "previous_revision": deploy.previous_revision,
                "repository": deploy.repository,
            },
        },
        "links": links,
    })
}

/// A Slack Block Kit message.
pub fn slack(status: EventState, events: &[&DriftEvent], base_url: &str) -> Value {
    let first = events[0];
    let resolved = status == EventState::Resolved;
    let title = |service: String| {
        format!(
            "{} {}: {} in {service} ({})",
            if resolved {
                "✅ Resolved"
            } else if first.severity == Severity::Critical {
                "🚨"
            } else {
                "⚠️"
            },
            first.kind.title(),
            if events.len() > 1 {
                format!("{} drifts", events.len())
            } else {
                "1 drift".to_owned()
            },
            sanitize(&first.revision[..first.revision.len().min(12)], 12)
        )
    };
    // The header is plain text; the notification text is mrkdwn.
    let plain_title = slack_plain(&title(service_of(first, 80)), 150);
    let mrkdwn_title = title(slack_text(&service_of(first, 80)));
    let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text", "text": plain_title}})];
    for event in events.iter().take(MAX_LISTED) {
        let mut text = format!("*{}*", slack_text(&headline(event)));
        if let Some(note) = lifecycle_note(event) {
            text.push_str(&format!("\n_{}_", slack_text(&note)));
        }
        if let Some(s) = event.suspects.first() {
            let ai =
                s.ai.as_ref()
                    .map(|a| format!(" — AI: `{}`", slack_text(&a.tool)))
                    .unwrap_or_default();
            text.push_str(&format!(
                "\nTop suspect: `{}` {} by {}{ai}",
                &s.commit[..s.commit.len().min(12)],
                slack_text(&s.summary),
                slack_text(&s.author)
            ));
            if let Some(pr) = &s.pull_request {
                // A link only when the address cannot break out of Slack's
                // <url|text> syntax.
                let linkable = pr.url.as_deref().filter(|u| {
                    u.len() <= 500 && !u.chars().any(|c| matches!(c, '<' | '>' | '|') || c.is_whitespace() || c.is_control())
                });
                match linkable {
                    Some(url) => text.push_str(&format!(" — <{url}|#{}>", pr.number)),
                    None => text.push_str(&format!(" — #{}", pr.number)),
                }
            }
            if let Some(evidence) = s.evidence.first() {
                text.push_str(&format!("\n> {}", slack_text(evidence)));
            }
        } else if let Some(note) = &event.attribution {
            text.push_str(&format!("\n{}", slack_text(note)));
        }
        text.push_str(&format!("\n<{}|Incident page>", incident_url(base_url, event)));
        let text: String = text.chars().take(MAX_SLACK_TEXT).collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
    }
    if events.len() > MAX_LISTED {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("…and {} more", events.len() - MAX_LISTED)}]}));
    }
    json!({ "text": mrkdwn_title, "blocks": blocks })
}

/// A PagerDuty Events API v2 body for a group. `dedup_key` ties trigger
/// and resolve together.
pub fn pagerduty(routing_key: &str, status: EventState, dedup_key: &str, events: &[&DriftEvent], base_url: &str) -> Value {
    let first = events[0];
    if status == EventState::Resolved {
        return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key});
    }
    let summary = if events.len() == 1 {
        format!("{}: {}", first.kind.title(), headline(first))
    } else {
        format!(
            "{}: {} drifts in {} after deploy {}",
            first.kind.title(),
            events.len(),
            service_of(first, 80),
            &first.revision[..first.revision.len().min(12)]
        )
    };
    let details: Vec<Value> = events
        .iter()
        .take(MAX_LISTED)
        .map(|e| {
            json!({"what": headline(e), "top_suspect": top_suspect(e), "lifecycle": lifecycle_note(e), "incident": incident_url(base_url, e)})
        })
        .collect();
    let mut links = vec![json!({"href": incident_url(base_url, first), "text": "driftwatch incident"})];
    if let Some(pr) = first.suspects.first().and_then(|s| s.pull_request.as_ref())
        && let Some(url) = &pr.url
    {
        links.push(json!({"href": url, "text": format!("top suspect's pull request #{}", pr.number)}));
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": sanitize(&summary, MAX_PAGERDUTY_SUMMARY),
            "source": service_of(first, MAX_FIELD_CHARS),
            "severity": severity(first),
            "component": sanitize(first.operation.as_deref().or(first.peer.as_deref()).unwrap_or(""), MAX_FIELD_CHARS),
            "class": first.kind.as_str(),
            "custom_details": {"drifts": details, "revision": first.revision, "baseline_revision": first.baseline_revision},
        },
        "links": links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_neutralised_for_slack() {
        let hostile = "<!channel> *bold* _it_ ~x~ `code` <https://evil.example|click> & \u{0007}\nnext";
        let safe = slack_text(hostile);
        assert!(!safe.contains('<') && !safe.contains('>'), "{safe}");
        assert!(!safe.contains('*') && !safe.contains('`') && !safe.contains('|'), "{safe}");
        assert!(!safe.chars().any(char::is_control), "{safe:?}");
        assert!(safe.contains("&lt;!channel&gt;"));
        assert!(safe.contains("&amp;"));
    }

    #[test]
    fn the_environment_is_a_label_and_part_of_every_title() {
        let mut event = crate::detect::event::example_event("e1", 1_700_000_000_000_000_000);
        event.service = "checkout".into();
        let body = alertmanager(&[&event], "http://dw", 0);
        assert!(body[0]["labels"].get("environment").is_none(), "none without one: {body}");
        event.environment = Some("production".into());
        let body = alertmanager(&[&event], "http://dw", 0);
        assert_eq!(body[0]["labels"]["environment"], "production", "{body}");
        assert_eq!(body[0]["labels"]["service"], "checkout");
        assert!(headline(&event).starts_with("checkout (production) "), "{}", headline(&event));
        let slack = slack(EventState::Firing, &[&event], "http://dw");
        assert!(slack["text"].as_str().is_some_and(|t| t.contains("checkout (production)")), "{slack}");
        let page = pagerduty("key", EventState::Firing, "dedup", &[&event], "http://dw");
        assert_eq!(page["payload"]["source"], "checkout (production)", "{page}");
    }

    #[test]
    fn owners_become_an_alertmanager_label_and_slack_mentions() {
        let mut event = crate::detect::event::example_event("e1", 1_700_000_000_000_000_000);
        event.owners = vec!["@shop/orders".into(), "@dana".into()];
        let am = alertmanager(&[&event], "http://dw", 0);
        assert_eq!(am[0]["labels"]["owners"], "@shop/orders,@dana");
        let mut message = slack(EventState::Firing, &[&event], "http://dw");
        let mentions: BTreeMap<String, String> = [("@shop/orders".to_owned(), "<!subteam^S0123>".to_owned())].into();
        mention_owners(&mut message, &[&event], &mentions);
        let last = message["blocks"].as_array().and_then(|b| b.last()).cloned().unwrap_or_default();
        assert_eq!(last["text"]["text"], "*Owners:* <!subteam^S0123>, @dana");
        // No owners: no line, no label.
        event.owners.clear();
        assert!(alertmanager(&[&event], "http://dw", 0)[0]["labels"].get("owners").is_none());
        let mut plain = slack(EventState::Firing, &[&event], "http://dw");
        let blocks = plain["blocks"].as_array().map(Vec::len);
        mention_owners(&mut plain, &[&event], &mentions);
        assert_eq!(plain["blocks"].as_array().map(Vec::len), blocks);
    }

    #[test]
    fn a_sinks_static_labels_reach_every_kind_of_sink_and_never_replace_an_events_own() {
        let event = crate::detect::event::example_event("e1", 1_700_000_000_000_000_000);
        let labels: BTreeMap<String, String> =
            [("team", "payments"), ("cluster", "eu-1"), ("service", "not-this")].map(|(k, v)| (k.into(), v.into())).into();
        let mut am = alertmanager(&[&event], "http://dw", 0);
        label_alertmanager(&mut am, &labels);
        assert_eq!(am[0]["labels"]["team"], "payments");
        assert_eq!(am[0]["labels"]["cluster"], "eu-1");
        assert_eq!(am[0]["labels"]["service"], event.service, "the event's own label wins");
        let mut hook = webhook(EventState::Firing, &[&event]);
        label_webhook(&mut hook, &labels);
        assert_eq!(hook["labels"]["team"], "payments");
        let mut message = slack(EventState::Firing, &[&event], "http://dw");
        label_slack(&mut message, &labels);
        let last = message["blocks"].as_array().and_then(|b| b.last()).cloned().unwrap_or_default();
        assert_eq!(last["elements"][0]["text"], "cluster: eu-1 · service: not-this · team: payments");
        let mut page = pagerduty("key", EventState::Firing, "dedup", &[&event], "http://dw");
        label_pagerduty(&mut page, &labels);
        assert_eq!(page["payload"]["custom_details"]["labels"]["team"], "payments");
        // None configured: the bodies are as before.
        let mut plain = webhook(EventState::Firing, &[&event]);
        label_webhook(&mut plain, &BTreeMap::new());
        assert!(plain.get("labels").is_none());
    }

    #[test]
    fn the_top_suspects_pull_request_is_linked_in_every_sink() {
        let mut event = crate::detect::event::example_event("e1", 1_700_000_000_000_000_000);
        event.suspects.push(crate::detect::event::Suspect {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            summary: "Add the new vendor (#412)".into(),
            author: "Dana <dana@example.com>".into(),
            committed_at: "2026-01-01T00:00:00Z".into(),
            ai: None,
            score: 0.9,
            linked: true,
            evidence: Vec::new(),
            hunks: Vec::new(),
            pull_request: Some(crate::detect::event::PullRequest {
                number: 412,
                url: Some("https://github.com/shop/checkout/pull/412".into()),
            }),
        });
        let am = alertmanager(&[&event], "http://dw", 0);
        assert_eq!(am[0]["annotations"]["top_suspect_pull_request"], "https://github.com/shop/checkout/pull/412");
        let text = slack(EventState::Firing, &[&event], "http://dw").to_string();
        assert!(text.contains("<https://github.com/shop/checkout/pull/412|#412>"), "{text}");
        let page = pagerduty("key", EventState::Firing, "dedup", &[&event], "http://dw");
        assert_eq!(page["links"][1]["href"], "https://github.com/shop/checkout/pull/412", "{page}");

        // An address that could break Slack's link syntax is not linked.
        if let Some(pr) = event.suspects[0].pull_request.as_mut() {
            pr.url = Some("https://evil.example/|<!channel>".into());
        }
        let text = slack(EventState::Firing, &[&event], "http://dw").to_string();
        assert!(text.contains(" — #412") && !text.contains("evil.example"), "{text}");
    }

    #[test]
    fn long_text_is_capped() {
        let long = "x".repeat(10_000);
        assert_eq!(sanitize(&long, MAX_FIELD_CHARS).chars().count(), MAX_FIELD_CHARS + 1);
        assert!(slack_text(&long).chars().count() <= MAX_FIELD_CHARS + 1);
    }
}
