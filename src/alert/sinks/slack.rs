//! Slack: a Block Kit message per group, through an incoming webhook.
//! Untrusted text is escaped for mrkdwn and stripped of Slack's formatting
//! characters, so a span name cannot mention a channel, link or bold.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::render::{MAX_FIELD_CHARS, MAX_LISTED, headline, incident_url, lifecycle_note, sanitize, service_of};
use crate::detect::event::{DriftEvent, EventState, Severity};

/// Slack section text limit (Block Kit allows 3000).
const MAX_SLACK_TEXT: usize = 2900;

/// Untrusted text for Slack mrkdwn: sanitised, `& < >` escaped as Slack
/// requires, and formatting characters neutralised so a span name cannot
/// bold, strike, link or mention.
fn slack_text(text: &str) -> String {
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

/// A Slack Block Kit message.
pub(super) fn body(status: EventState, events: &[&DriftEvent], base_url: &str) -> Value {
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

/// The owners of the group's drifts (CODEOWNERS) as a Slack line that
/// mentions them, each through `mentions` when it has an entry there.
pub(super) fn mention_owners(body: &mut Value, events: &[&DriftEvent], mentions: &BTreeMap<String, String>) {
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
pub(super) fn label(body: &mut Value, labels: &BTreeMap<String, String>) {
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
    fn long_text_is_capped() {
        let long = "x".repeat(10_000);
        assert!(slack_text(&long).chars().count() <= MAX_FIELD_CHARS + 1);
    }
}
