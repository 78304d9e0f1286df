//! Alertmanager: one alert per drift, posted to `/api/v2/alerts`. Labels
//! identify the drift (Alertmanager groups and deduplicates on them), the
//! annotations carry the headline, the top suspect and the incident link,
//! and `endsAt` keeps a firing alert alive while driftwatch re-sends it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::render::{MAX_FIELD_CHARS, headline, incident_url, lifecycle_note, sanitize, severity, top_suspect};
use crate::clock::Timestamp;
use crate::detect::event::{DriftEvent, EventKind, EventState};

/// The alerts endpoint under the configured Alertmanager URL.
pub(super) fn alerts_url(url: &str) -> String {
    format!("{}/api/v2/alerts", url.trim_end_matches('/'))
}

/// Alertmanager v2 `POST /api/v2/alerts` body: one alert per event.
pub(super) fn body(events: &[&DriftEvent], base_url: &str, now_ms: u64) -> Value {
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
                EventState::Resolved => event.resolved_at.unwrap_or_else(|| Timestamp::from_unix_nanos(now_ms * 1_000_000)),
                EventState::Firing => Timestamp::from_unix_nanos((now_ms + 3_600_000) * 1_000_000),
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
pub(super) fn label(alerts: &mut Value, labels: &BTreeMap<String, String>) {
    for alert in alerts.as_array_mut().into_iter().flatten() {
        if let Some(own) = alert["labels"].as_object_mut() {
            for (name, value) in labels {
                own.entry(name.clone())
                    .or_insert_with(|| json!(sanitize(value, MAX_FIELD_CHARS)));
            }
        }
    }
}
