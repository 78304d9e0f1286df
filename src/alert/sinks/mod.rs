//! The sinks: what each configured destination is, which events its route
//! takes, and the request that tells it about a drift or a deploy. Each
//! kind of sink renders its own body in its own file; the wording they
//! share is in `render`.

mod alertmanager;
mod pagerduty;
mod render;
mod slack;
mod webhook;

pub use webhook::sign;

use crate::config::{AlertsConfig, Route};
use crate::detect::event::{Deploy, DriftEvent, EventState};

/// How a sink is reached.
#[derive(Clone)]
pub(crate) enum SinkKind {
    Webhook { url: String, secret: Option<String> },
    Alertmanager { url: String, bearer_token: Option<String> },
    /// `mentions`: CODEOWNERS owner → Slack mention (`<!subteam^S0123>`).
    Slack {
        webhook_url: String,
        mentions: std::collections::BTreeMap<String, String>,
    },
    PagerDuty { routing_key: String, url: String },
}

/// Addresses and keys stay out of debug output: a Slack webhook URL and a
/// PagerDuty routing key are secrets, and any URL may carry credentials.
impl std::fmt::Debug for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SinkKind::Webhook { .. } => "Webhook { .. }",
            SinkKind::Alertmanager { .. } => "Alertmanager { .. }",
            SinkKind::Slack { .. } => "Slack { .. }",
            SinkKind::PagerDuty { .. } => "PagerDuty { .. }",
        })
    }
}

/// One configured destination.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    /// Stable name, e.g. `webhook[0]`: the outbox refers to sinks by it.
    pub(crate) name: String,
    pub(crate) kind: SinkKind,
    route: Route,
    services: Vec<glob::Pattern>,
}

impl Sink {
    pub(crate) fn new(name: String, kind: SinkKind, route: &Route) -> Sink {
        let services = route.services.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect();
        Sink {
            name,
            kind,
            route: route.clone(),
            services,
        }
    }

    /// Whether the sink's route takes this event.
    pub(crate) fn accepts(&self, event: &DriftEvent) -> bool {
        (self.services.is_empty() || self.services.iter().any(|p| p.matches(&event.service)))
            && (self.route.kinds.is_empty() || self.route.kinds.contains(&event.kind))
            && self.route.min_severity.is_none_or(|min| event.severity >= min)
    }

    /// Whether the sink announces deploys of this service.
    pub(crate) fn accepts_deploy(&self, deploy: &Deploy) -> bool {
        self.route.deploys
            && matches!(self.kind, SinkKind::Webhook { .. } | SinkKind::PagerDuty { .. })
            && (self.services.is_empty() || self.services.iter().any(|p| p.matches(&deploy.service)))
    }

    pub(crate) fn label(&self) -> &'static str {
        match self.kind {
            SinkKind::Webhook { .. } => "webhook",
            SinkKind::Alertmanager { .. } => "alertmanager",
            SinkKind::Slack { .. } => "slack",
            SinkKind::PagerDuty { .. } => "pagerduty",
        }
    }
}

/// The configured sinks, in a stable order.
pub(crate) fn sinks(config: &AlertsConfig) -> Vec<Sink> {
    let mut sinks = Vec::new();
    for (i, s) in config.webhook.iter().enumerate() {
        sinks.push(Sink::new(
            format!("webhook[{i}]"),
            SinkKind::Webhook {
                url: s.url.clone(),
                secret: s.secret.clone(),
            },
            &s.route,
        ));
    }
    for (i, s) in config.alertmanager.iter().enumerate() {
        sinks.push(Sink::new(
            format!("alertmanager[{i}]"),
            SinkKind::Alertmanager {
                url: s.url.clone(),
                bearer_token: s.bearer_token.clone(),
            },
            &s.route,
        ));
    }
    for (i, s) in config.slack.iter().enumerate() {
        sinks.push(Sink::new(
            format!("slack[{i}]"),
            SinkKind::Slack {
                webhook_url: s.webhook_url.clone(),
                mentions: s.mentions.clone(),
            },
            &s.route,
        ));
    }
    for (i, s) in config.pagerduty.iter().enumerate() {
        sinks.push(Sink::new(
            format!("pagerduty[{i}]"),
            SinkKind::PagerDuty {
                routing_key: s.routing_key.clone(),
                url: s.url.clone(),
            },
            &s.route,
        ));
    }
    sinks
}

/// A sink's request: the URL, body, signing key and bearer token.
pub(crate) type Request<'a> = (String, serde_json::Value, Option<&'a String>, Option<&'a str>);

/// The request that tells `sink` the drifts `events` changed to `status`.
pub(crate) fn drift_request<'a>(sink: &'a Sink, status: EventState, events: &[&DriftEvent], base_url: &str) -> Request<'a> {
    let mut bearer = None;
    let (url, value, secret) = match &sink.kind {
        SinkKind::Webhook { url, secret } => {
            let mut value = webhook::body(status, events);
            webhook::label(&mut value, &sink.route.labels);
            (url.clone(), value, secret.as_ref())
        }
        SinkKind::Alertmanager { url, bearer_token } => {
            bearer = bearer_token.as_deref();
            let mut value = alertmanager::body(events, base_url, crate::clock::unix_millis());
            alertmanager::label(&mut value, &sink.route.labels);
            (alertmanager::alerts_url(url), value, None)
        }
        SinkKind::Slack { webhook_url, mentions } => {
            let mut value = slack::body(status, events, base_url);
            slack::mention_owners(&mut value, events, mentions);
            slack::label(&mut value, &sink.route.labels);
            (webhook_url.clone(), value, None)
        }
        SinkKind::PagerDuty { routing_key, url } => {
            let dedup_key = pagerduty::dedup_key(events[0]);
            let mut value = pagerduty::body(routing_key, status, &dedup_key, events, base_url);
            pagerduty::label(&mut value, &sink.route.labels);
            (url.clone(), value, None)
        }
    };
    (url, value, secret, bearer)
}

/// The URL, body and signing key that announce `deploy` to `sink`: a
/// webhook `{"status": "deploy"}`, or a PagerDuty Change Event (sent to
/// `/v2/change/enqueue` beside the configured Events API URL).
pub(crate) fn deploy_request<'a>(sink: &'a Sink, deploy: &Deploy, base_url: &str) -> Option<(String, serde_json::Value, Option<&'a String>)> {
    match &sink.kind {
        SinkKind::Webhook { url, secret } => {
            let mut value = webhook::deploy_body(deploy);
            webhook::label(&mut value, &sink.route.labels);
            Some((url.clone(), value, secret.as_ref()))
        }
        SinkKind::PagerDuty { routing_key, url } => {
            let mut value = pagerduty::change(routing_key, deploy, base_url);
            pagerduty::label(&mut value, &sink.route.labels);
            Some((pagerduty::change_events_url(url), value, None))
        }
        SinkKind::Alertmanager { .. } | SinkKind::Slack { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::detect::event::{EventKind, Severity, example_event};

    #[test]
    fn the_environment_is_a_label_and_part_of_every_title() {
        let mut event = example_event("e1", 1_700_000_000_000_000_000);
        event.service = "checkout".into();
        let body = alertmanager::body(&[&event], "http://dw", 0);
        assert!(body[0]["labels"].get("environment").is_none(), "none without one: {body}");
        event.environment = Some("production".into());
        let body = alertmanager::body(&[&event], "http://dw", 0);
        assert_eq!(body[0]["labels"]["environment"], "production", "{body}");
        assert_eq!(body[0]["labels"]["service"], "checkout");
        assert!(render::headline(&event).starts_with("checkout (production) "), "{}", render::headline(&event));
        let slack = slack::body(EventState::Firing, &[&event], "http://dw");
        assert!(slack["text"].as_str().is_some_and(|t| t.contains("checkout (production)")), "{slack}");
        let page = pagerduty::body("key", EventState::Firing, "dedup", &[&event], "http://dw");
        assert_eq!(page["payload"]["source"], "checkout (production)", "{page}");
    }

    #[test]
    fn owners_become_an_alertmanager_label_and_slack_mentions() {
        let mut event = example_event("e1", 1_700_000_000_000_000_000);
        event.owners = vec!["@shop/orders".into(), "@dana".into()];
        let am = alertmanager::body(&[&event], "http://dw", 0);
        assert_eq!(am[0]["labels"]["owners"], "@shop/orders,@dana");
        let mut message = slack::body(EventState::Firing, &[&event], "http://dw");
        let mentions: BTreeMap<String, String> = [("@shop/orders".to_owned(), "<!subteam^S0123>".to_owned())].into();
        slack::mention_owners(&mut message, &[&event], &mentions);
        let last = message["blocks"].as_array().and_then(|b| b.last()).cloned().unwrap_or_default();
        assert_eq!(last["text"]["text"], "*Owners:* <!subteam^S0123>, @dana");
        // No owners: no line, no label.
        event.owners.clear();
        assert!(alertmanager::body(&[&event], "http://dw", 0)[0]["labels"].get("owners").is_none());
        let mut plain = slack::body(EventState::Firing, &[&event], "http://dw");
        let blocks = plain["blocks"].as_array().map(Vec::len);
        slack::mention_owners(&mut plain, &[&event], &mentions);
        assert_eq!(plain["blocks"].as_array().map(Vec::len), blocks);
    }

    #[test]
    fn a_sinks_static_labels_reach_every_kind_of_sink_and_never_replace_an_events_own() {
        let event = example_event("e1", 1_700_000_000_000_000_000);
        let labels: BTreeMap<String, String> =
            [("team", "payments"), ("cluster", "eu-1"), ("service", "not-this")].map(|(k, v)| (k.into(), v.into())).into();
        let mut am = alertmanager::body(&[&event], "http://dw", 0);
        alertmanager::label(&mut am, &labels);
        assert_eq!(am[0]["labels"]["team"], "payments");
        assert_eq!(am[0]["labels"]["cluster"], "eu-1");
        assert_eq!(am[0]["labels"]["service"], event.service, "the event's own label wins");
        let mut hook = webhook::body(EventState::Firing, &[&event]);
        webhook::label(&mut hook, &labels);
        assert_eq!(hook["labels"]["team"], "payments");
        let mut message = slack::body(EventState::Firing, &[&event], "http://dw");
        slack::label(&mut message, &labels);
        let last = message["blocks"].as_array().and_then(|b| b.last()).cloned().unwrap_or_default();
        assert_eq!(last["elements"][0]["text"], "cluster: eu-1 · service: not-this · team: payments");
        let mut page = pagerduty::body("key", EventState::Firing, "dedup", &[&event], "http://dw");
        pagerduty::label(&mut page, &labels);
        assert_eq!(page["payload"]["custom_details"]["labels"]["team"], "payments");
        // None configured: the bodies are as before.
        let mut plain = webhook::body(EventState::Firing, &[&event]);
        webhook::label(&mut plain, &BTreeMap::new());
        assert!(plain.get("labels").is_none());
    }

    #[test]
    fn the_top_suspects_pull_request_is_linked_in_every_sink() {
        let mut event = example_event("e1", 1_700_000_000_000_000_000);
        event.suspects.push(crate::detect::event::Suspect {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            summary: "Add the new vendor (#412)".into(),
            author: "Dana <dana@example.com>".into(),
            committed_at: crate::clock::Timestamp::from_unix_secs(1_767_225_600),
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
        let am = alertmanager::body(&[&event], "http://dw", 0);
        assert_eq!(am[0]["annotations"]["top_suspect_pull_request"], "https://github.com/shop/checkout/pull/412");
        let text = slack::body(EventState::Firing, &[&event], "http://dw").to_string();
        assert!(text.contains("<https://github.com/shop/checkout/pull/412|#412>"), "{text}");
        let page = pagerduty::body("key", EventState::Firing, "dedup", &[&event], "http://dw");
        assert_eq!(page["links"][1]["href"], "https://github.com/shop/checkout/pull/412", "{page}");

        // An address that could break Slack's link syntax is not linked.
        if let Some(pr) = event.suspects[0].pull_request.as_mut() {
            pr.url = Some("https://evil.example/|<!channel>".into());
        }
        let text = slack::body(EventState::Firing, &[&event], "http://dw").to_string();
        assert!(text.contains(" — #412") && !text.contains("evil.example"), "{text}");
    }

    #[test]
    fn routes_filter_by_service_kind_and_severity() {
        let route: Route =
            toml::from_str("services = [\"check*\"]\nkinds = [\"latency_regression\"]\nmin_severity = \"critical\"\n")
                .expect("route");
        let sink = Sink::new(
            "webhook[0]".into(),
            SinkKind::Webhook {
                url: "http://x".into(),
                secret: None,
            },
            &route,
        );
        let mut event = example_event("e", 1);
        event.service = "checkout".into();
        event.severity = Severity::Critical;
        assert!(sink.accepts(&event));
        event.severity = Severity::Warning;
        assert!(!sink.accepts(&event), "below the minimum severity");
        event.severity = Severity::Critical;
        event.service = "search".into();
        assert!(!sink.accepts(&event), "service outside the glob");
        event.service = "checkout".into();
        event.kind = EventKind::NewOutboundPeer;
        assert!(!sink.accepts(&event), "kind not routed");
        let everything = Sink::new(
            "slack[0]".into(),
            SinkKind::Slack {
                webhook_url: "http://x".into(),
                mentions: Default::default(),
            },
            &Route::default(),
        );
        assert!(everything.accepts(&event));
    }
}
