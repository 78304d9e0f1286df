//! PagerDuty: Events API v2 triggers and resolves, one incident per deploy
//! and kind (the `dedup_key` ties them together), and Change Events that
//! put each deploy on the service's timeline.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::render::{MAX_FIELD_CHARS, MAX_LISTED, headline, incident_url, lifecycle_note, sanitize, service_of, severity, top_suspect};
use crate::detect::event::{Deploy, DriftEvent, EventState, fingerprint};

/// PagerDuty summary limit.
const MAX_PAGERDUTY_SUMMARY: usize = 1024;

/// The incident key of a group: one per service, kind and deployed
/// revision, so every drift of a deploy of one kind pages once.
pub(super) fn dedup_key(first: &DriftEvent) -> String {
    fingerprint(&first.service_key(), first.kind, "deploy", &first.revision)
}

/// A PagerDuty Events API v2 body for a group. `dedup_key` ties trigger
/// and resolve together.
pub(super) fn body(routing_key: &str, status: EventState, dedup_key: &str, events: &[&DriftEvent], base_url: &str) -> Value {
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

/// A PagerDuty Change Event for a deploy: it shows on the service's
/// timeline next to the incidents that follow.
pub(super) fn change(routing_key: &str, deploy: &Deploy, base_url: &str) -> Value {
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

/// PagerDuty's Change Events endpoint beside its Events API endpoint.
pub(super) fn change_events_url(events_url: &str) -> String {
    let base = events_url.trim_end_matches('/');
    match base.strip_suffix("/v2/enqueue") {
        Some(root) => format!("{root}/v2/change/enqueue"),
        None => format!("{base}/change/enqueue"),
    }
}

/// A sink's static labels on a PagerDuty trigger, in `custom_details`.
pub(super) fn label(body: &mut Value, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    if let Some(details) = body.pointer_mut("/payload/custom_details").and_then(Value::as_object_mut) {
        details.insert("labels".into(), json!(labels));
    }
}
