//! Alert delivery against real receivers: a local HTTP receiver that fails,
//! rate-limits and then accepts; a real Alertmanager; kill -9 between the
//! outbox write and delivery; grouping; hostile strings.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Driftwatch, Receiver, client_call, eventually, free_port, http_get, metadata_call, post_spans};

const FAST: &str = "[alerts]\ngroup_wait = \"500ms\"\ninitial_backoff = \"200ms\"\nmax_backoff = \"2s\"\n";

#[test]
fn webhook_retries_through_failures_and_rate_limits_then_delivers_signed() {
    let receiver = Receiver::start(&[500, 503, 429]);
    let dw = Driftwatch::start(&format!(
        "{FAST}[[alerts.webhook]]\nurl = \"{}\"\nsecret = \"s3cret\"\n",
        receiver.url("/hook")
    ));
    metadata_call(&dw, "pay");
    eventually(Duration::from_secs(40), "a delivered alert", || {
        receiver.requests().iter().any(|r| r.status == 200)
    });
    let requests = receiver.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 503, 429, 200],
        "nothing lost, nothing extra"
    );
    let first = requests[0].json();
    for request in &requests {
        let body = request.json();
        assert_eq!(
            body["event"]["fingerprint"], first["event"]["fingerprint"],
            "same alert every time"
        );
        assert_eq!(
            request.headers["x-driftwatch-delivery"],
            requests[0].headers["x-driftwatch-delivery"]
        );
        assert_eq!(
            request.headers["x-driftwatch-signature"],
            driftwatch::alert::sign("s3cret", &request.body),
            "HMAC-SHA256 of the body"
        );
    }
    let body = requests[3].json();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["event"]["kind"], "new_outbound_peer");
    assert_eq!(body["event"]["peer"], "169.254.169.254:80");
    // The 429 asked for one second; the retry honoured it.
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value(
            "driftwatch_alert_deliveries_total",
            &[("sink", "webhook"), ("outcome", "retrying")]
        ),
        3.0
    );
    assert_eq!(
        metrics.value(
            "driftwatch_alert_deliveries_total",
            &[("sink", "webhook"), ("outcome", "delivered")]
        ),
        1.0
    );
    eventually(Duration::from_secs(5), "empty outbox", || {
        dw.metrics().value("driftwatch_outbox_pending", &[]) == 0.0
    });
}

#[test]
fn an_unreachable_sink_gives_up_after_max_attempts_and_counts_dead() {
    let port = free_port();
    let dw = Driftwatch::start(&format!(
        "{FAST}max_attempts = 3\n[[alerts.webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\n"
    ));
    metadata_call(&dw, "pay");
    eventually(Duration::from_secs(40), "a dead alert", || {
        dw.metrics().value(
            "driftwatch_alert_deliveries_total",
            &[("sink", "webhook"), ("outcome", "dead")],
        ) == 1.0
    });
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value(
            "driftwatch_alert_deliveries_total",
            &[("sink", "webhook"), ("outcome", "retrying")]
        ),
        2.0
    );
    assert_eq!(metrics.value("driftwatch_outbox_pending", &[]), 0.0);
    assert!(dw.stderr().contains("unreachable"), "the log names the cause");
}

#[test]
fn a_sink_outage_longer_than_a_dozen_attempts_loses_nothing_before_max_age() {
    // Thirty failures in a row: far past the dozen attempts that used to
    // give up after about twenty minutes.
    let receiver = Receiver::start(&[503; 30]);
    let dw = Driftwatch::start(&format!(
        "[alerts]\ngroup_wait = \"100ms\"\ninitial_backoff = \"20ms\"\nmax_backoff = \"60ms\"\nmax_age = \"1h\"\n\
         [[alerts.webhook]]\nurl = \"{}\"\n",
        receiver.url("/hook")
    ));
    metadata_call(&dw, "pay");
    eventually(Duration::from_secs(40), "delivery once the sink is back", || {
        receiver.requests().iter().any(|r| r.status == 200)
    });
    let metrics = dw.metrics();
    let outcome = |o: &str| metrics.value("driftwatch_alert_deliveries_total", &[("sink", "webhook"), ("outcome", o)]);
    assert_eq!(outcome("dead"), 0.0);
    assert_eq!(outcome("retrying"), 30.0);
    assert_eq!(outcome("delivered"), 1.0);
}

#[test]
fn delivery_errors_never_log_a_sinks_secret_url_or_key() {
    let port = free_port();
    let dw = Driftwatch::start(&format!(
        "{FAST}max_attempts = 2\n[[alerts.slack]]\nwebhook_url = \"http://127.0.0.1:{port}/services/T0/B0/slacksecrettoken\"\n\
         [[alerts.pagerduty]]\nrouting_key = \"pdroutingsecret\"\nurl = \"http://user:pdpassword@127.0.0.1:{port}/enqueue\"\n"
    ));
    metadata_call(&dw, "pay");
    eventually(Duration::from_secs(40), "both sinks given up", || {
        let metrics = dw.metrics();
        ["slack", "pagerduty"]
            .iter()
            .all(|sink| metrics.value("driftwatch_alert_deliveries_total", &[("sink", sink), ("outcome", "dead")]) >= 1.0)
    });
    let log = dw.stderr();
    assert!(log.contains("slack[0] unreachable"), "the log names the sink: {log}");
    for secret in ["slacksecrettoken", "pdroutingsecret", "pdpassword"] {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
    }
}

#[test]
fn kill_9_between_outbox_write_and_delivery_still_delivers_after_restart() {
    let port = free_port();
    let store = tempfile::tempdir().expect("store dir");
    let config = format!(
        "{FAST}[store]\npath = {:?}\n[[alerts.webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\n",
        store.path().display().to_string()
    );
    {
        let mut dw = Driftwatch::start(&config);
        metadata_call(&dw, "pay");
        // The receiver is down: the alert waits in the outbox.
        eventually(Duration::from_secs(30), "an alert in the outbox", || {
            dw.metrics().value("driftwatch_outbox_pending", &[]) >= 1.0
        });
        dw.child.kill().expect("kill -9");
        dw.child.wait().expect("wait");
    }
    let receiver = Receiver::start_on(port, &[]);
    let dw = Driftwatch::start(&config);
    eventually(Duration::from_secs(30), "delivery after restart", || {
        !receiver.requests().is_empty()
    });
    let body = receiver.requests()[0].json();
    assert_eq!(body["event"]["peer"], "169.254.169.254:80");
    // The event itself survived too.
    let (_, events) = http_get(&format!("http://{}/api/v1/events", dw.admin)).expect("events");
    let events: serde_json::Value = serde_json::from_str(&events).expect("JSON");
    assert_eq!(events["events"][0]["id"], body["event"]["id"]);
}

#[test]
fn a_deploy_that_adds_forty_peers_sends_one_notification_per_sink() {
    let webhook = Receiver::start(&[]);
    let slack = Receiver::start(&[]);
    let dw = Driftwatch::start(&format!(
        "{FAST}group_wait = \"3s\"\n[detect.outbound]\nlearning_period = \"1m\"\nmin_calls = 1\n\
         [[alerts.webhook]]\nurl = \"{}\"\n[[alerts.slack]]\nwebhook_url = \"{}\"\n",
        webhook.url("/hook"),
        slack.url("/slack")
    ));
    // A learned baseline, then a deploy calling 40 new hosts.
    let mut spans = vec![client_call("shop", "r1", "https://known.internal/x", 300_000, 1)];
    for i in 0..40u64 {
        spans.push(client_call(
            "shop",
            "r2",
            &format!("https://vendor-{i}.example.com/api"),
            10_000,
            100 + i,
        ));
    }
    post_spans(&dw, &spans);
    let listed = || {
        let (_, events) = http_get(&format!("http://{}/api/v1/events", dw.admin)).expect("events");
        let events: serde_json::Value = serde_json::from_str(&events).expect("JSON");
        events["events"].as_array().map_or(0, Vec::len)
    };
    eventually(Duration::from_secs(40), "every event listed and notified", || {
        listed() == 40 && !webhook.requests().is_empty() && !slack.requests().is_empty()
    });
    // With no repository to attribute to, an event is in the outbox before
    // it is listed: once the outbox is empty, every notification about the
    // listed events has been sent.
    dw.wait_for_empty_outbox();
    assert_eq!(listed(), 40, "the API lists every event");
    let hooks = webhook.requests();
    assert_eq!(hooks.len(), 1, "one webhook notification");
    assert_eq!(hooks[0].json()["events"].as_array().expect("events").len(), 40);
    let slacks = slack.requests();
    assert_eq!(slacks.len(), 1, "one Slack message");
    let message = slacks[0].json();
    assert!(message["text"].as_str().expect("text").contains("40 drifts"), "{message}");
}

#[test]
fn hostile_strings_are_escaped_for_each_sink() {
    let webhook = Receiver::start(&[]);
    let slack = Receiver::start(&[]);
    let pagerduty = Receiver::start(&[]);
    let dw = Driftwatch::start(&format!(
        "{FAST}[[alerts.webhook]]\nurl = \"{}\"\n[[alerts.slack]]\nwebhook_url = \"{}\"\n\
         [[alerts.pagerduty]]\nrouting_key = \"rk\"\nurl = \"{}\"\n",
        webhook.url("/hook"),
        slack.url("/slack"),
        pagerduty.url("/v2/enqueue")
    ));
    let hostile = format!("<!channel> *pwn* `x` <https://evil.example|click> \u{7}{}", "A".repeat(5000));
    post_spans(&dw, &[client_call(&hostile, "r1", "http://169.254.169.254/x", 2_000, 1)]);
    eventually(Duration::from_secs(40), "all three sinks", || {
        !webhook.requests().is_empty() && !slack.requests().is_empty() && !pagerduty.requests().is_empty()
    });
    let slack_body = String::from_utf8(slack.requests()[0].body.clone()).expect("utf-8");
    assert!(!slack_body.contains("<!channel>"), "no mention survives");
    assert!(!slack_body.contains("evil.example|click"), "no link survives");
    assert!(!slack_body.contains("*pwn*"));
    assert!(!slack_body.contains("\\u0007"), "control characters removed");
    assert!(slack_body.len() < 8000, "capped: {} bytes", slack_body.len());
    let pd = pagerduty.requests()[0].json();
    assert_eq!(pd["event_action"], "trigger");
    assert!(pd["dedup_key"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(pd["payload"]["summary"].as_str().expect("summary").chars().count() <= 1025);
    assert_eq!(pd["payload"]["severity"], "critical");
    // The webhook carries the event as JSON: escaped by the encoder, intact.
    let hook = webhook.requests()[0].json();
    assert!(hook["event"]["service"].as_str().expect("service").starts_with("<!channel>"));
}

/// A real Alertmanager from Debian's prometheus-alertmanager, on free ports.
struct Alertmanager {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let binary = ["prometheus-alertmanager", "alertmanager"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
            .expect("prometheus-alertmanager is installed (scripts/test installs it)");
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
        )
        .expect("config");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager { child, port, _dir: dir };
        eventually(Duration::from_secs(20), "alertmanager ready", || {
            http_get(&format!("http://127.0.0.1:{port}/-/ready")).is_ok_and(|(s, _)| s == 200)
        });
        am
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        let (_, body) = http_get(&format!("http://127.0.0.1:{}/api/v2/alerts", self.port)).expect("alerts");
        serde_json::from_str::<serde_json::Value>(&body)
            .expect("JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn real_alertmanager_receives_the_alert_and_its_resolution() {
    let am = Alertmanager::start();
    let dw = Driftwatch::start(&format!(
        "{FAST}[detect.outbound]\nresolve_after = \"3s\"\n[[alerts.alertmanager]]\nurl = \"http://127.0.0.1:{}\"\n\
         labels = {{ team = \"payments\", cluster = \"eu-1\" }}\n",
        am.port
    ));
    metadata_call(&dw, "pay");
    let mut alert = serde_json::Value::Null;
    eventually(Duration::from_secs(40), "an alert in Alertmanager", || {
        alert = am.alerts().into_iter().next().unwrap_or_default();
        !alert.is_null()
    });
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "DriftwatchNewOutboundPeer");
    assert_eq!(labels["service"], "pay");
    assert_eq!(labels["peer"], "169.254.169.254:80");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["team"], "payments", "the sink's static labels, for routing trees");
    assert_eq!(labels["cluster"], "eu-1");
    assert!(labels["fingerprint"].as_str().is_some_and(|f| f.len() == 16));
    assert!(
        alert["generatorURL"].as_str().expect("url").contains("/ui/events/"),
        "{alert}"
    );
    assert_eq!(alert["status"]["state"], "active");
    // No more calls: the drift ends, the resolution reaches Alertmanager
    // and the alert is no longer active.
    eventually(Duration::from_secs(60), "the alert resolved in Alertmanager", || {
        am.alerts().iter().all(|a| a["status"]["state"] != "active")
    });
    let (_, events) = http_get(&format!("http://{}/api/v1/events", dw.admin)).expect("events");
    let events: serde_json::Value = serde_json::from_str(&events).expect("JSON");
    assert_eq!(events["events"][0]["state"], "resolved");
}

#[test]
fn no_secret_reaches_the_log_even_at_debug_level() {
    let port = free_port();
    let secrets = tempfile::tempdir().expect("dir");
    let token_file = |name: &str, token: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, token).expect("token");
        path.display().to_string()
    };
    let failing = Receiver::start(&[500; 64]);
    let dw = Driftwatch::start_with_env(
        &format!(
            "{FAST}max_attempts = 2\n[receiver]\nbearer_token_file = {:?}\n[admin]\napi_token_file = {:?}\nmetrics_token_file = {:?}\n\
             [[alerts.webhook]]\nurl = \"{}\"\nsecret = \"hmacsecretvalue\"\n\
             [[alerts.alertmanager]]\nurl = \"http://amuser:ampassword@127.0.0.1:{port}/\"\n\
             [[alerts.slack]]\nwebhook_url = \"{}\"\n\
             [[alerts.pagerduty]]\nrouting_key = \"pdroutingsecret\"\nurl = \"http://127.0.0.1:{port}/enqueue?token=pdquerysecret\"\n",
            token_file("otlp", "otlptokensecret"),
            token_file("api", "apitokensecret"),
            token_file("metrics", "metricstokensecret"),
            failing.url("/hook?sig=webhookquerysecret"),
            failing.url("/services/T0/B0/slackpathsecret"),
        ),
        &[("DRIFTWATCH_LOG", "debug")],
    );
    // Wrong tokens at every guarded door.
    for (url, token) in [
        (format!("http://{}/v1/traces", dw.http), "otlptokensecreX"),
        (format!("http://{}/api/v1/events", dw.admin), "apitokensecreX"),
        (format!("http://{}/metrics", dw.admin), "metricstokensecreX"),
    ] {
        let output = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("authorization: Bearer {token}")])
            .arg(&url)
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "401", "{url}");
    }
    // A drift, so every sink is tried and fails.
    let span = common::client_call("pay", "r1", "http://169.254.169.254/latest/meta-data/", 1_000, 1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let response = driftwatch::tls::http_client()
            .build()
            .expect("client")
            .post(dw.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .header("authorization", "Bearer otlptokensecret")
            .body(driftwatch::tools::simulate::encode_request(&[span]))
            .send()
            .await
            .expect("send");
        assert!(response.status().is_success());
    });
    let metrics_url = format!("http://{}/metrics", dw.admin);
    eventually(Duration::from_secs(40), "every sink tried and given up", || {
        let output = std::process::Command::new("curl")
            .args(["-s", "-H", "authorization: Bearer metricstokensecret"])
            .arg(&metrics_url)
            .output()
            .expect("curl");
        let metrics = common::Metrics(String::from_utf8_lossy(&output.stdout).into_owned());
        ["webhook", "alertmanager", "slack", "pagerduty"]
            .iter()
            .all(|sink| metrics.value("driftwatch_alert_deliveries_total", &[("sink", sink), ("outcome", "dead")]) >= 1.0)
    });
    let log = dw.stderr();
    assert!(log.contains("DEBUG"), "the log is at debug level");
    for secret in [
        "otlptokensecret",
        "apitokensecret",
        "metricstokensecret",
        "hmacsecretvalue",
        "ampassword",
        "slackpathsecret",
        "pdroutingsecret",
        "pdquerysecret",
        "webhookquerysecret",
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
    }
}

#[test]
fn sink_secrets_are_read_from_mounted_files() {
    let receiver = Receiver::start(&[]);
    let dir = tempfile::tempdir().expect("dir");
    let hmac = dir.path().join("webhook-secret");
    let token = dir.path().join("alertmanager-bearer-token");
    // As a Kubernetes Secret mounts them: one value per file, often with a
    // trailing newline.
    std::fs::write(&hmac, "from-a-file\n").expect("write");
    std::fs::write(&token, "am-t0ken\n").expect("write");
    let dw = Driftwatch::start(&format!(
        "{FAST}[[alerts.webhook]]\nurl = \"{}\"\nsecret_file = {:?}\n\
         [[alerts.alertmanager]]\nurl = \"{}\"\nbearer_token_file = {:?}\n",
        receiver.url("/hook"),
        hmac,
        receiver.url("/am"),
        token
    ));
    metadata_call(&dw, "pay");
    eventually(Duration::from_secs(40), "both sinks delivered", || {
        let requests = receiver.requests();
        requests.iter().any(|r| r.path == "/hook") && requests.iter().any(|r| r.path == "/am/api/v2/alerts")
    });
    for request in receiver.requests() {
        if request.path == "/hook" {
            assert_eq!(
                request.headers["x-driftwatch-signature"],
                driftwatch::alert::sign("from-a-file", &request.body),
                "signed with the file's key, without its newline"
            );
            assert!(!request.headers.contains_key("authorization"));
        } else {
            assert_eq!(request.headers["authorization"], "Bearer am-t0ken");
        }
    }

    // A secret file that cannot be read stops startup, naming the key.
    let output = Command::new(common::driftwatch_bin())
        .args(["check-config", "--config"])
        .arg({
            let path = dir.path().join("bad.toml");
            std::fs::write(&path, "[store]\npostgres_url_file = \"/nonexistent/postgres-url\"\n").expect("write");
            path
        })
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("store.postgres_url_file") && stderr.contains("/nonexistent/postgres-url"), "{stderr}");
}

/// Each deploy — a revision that begins serving after another one — is
/// announced to the sinks that ask for it: a webhook `deploy` notification
/// and a PagerDuty Change Event, sent once each, never for the first
/// revision a service is seen with, never to sinks that did not ask.
#[test]
fn a_new_revision_is_announced_as_a_webhook_deploy_and_a_pagerduty_change_event() {
    let hook = Receiver::start(&[503]);
    let pagerduty = Receiver::start(&[]);
    let quiet = Receiver::start(&[]);
    let dw = Driftwatch::start(&format!(
        "{FAST}[[alerts.webhook]]\nurl = \"{}\"\nsecret = \"k\"\ndeploys = true\nlabels = {{ team = \"payments\" }}\n\
         [[alerts.pagerduty]]\nrouting_key = \"rk\"\nurl = \"{}\"\ndeploys = true\n\
         [[alerts.webhook]]\nurl = \"{}\"\n",
        hook.url("/hook"),
        pagerduty.url("/v2/enqueue"),
        quiet.url("/quiet")
    ));
    let second = 1_000_000_000u64;
    let start = common::now_nanos() / second * second - 120 * second;
    let segment = |revision: &str, from: u64| {
        let spans: Vec<serde_json::Value> = (0..20u64)
            .map(|i| {
                let at = from + i * second;
                serde_json::json!({"name": "GET /cart", "kind": "server", "start_ns": at, "end_ns": at + 20_000_000})
            })
            .collect();
        serde_json::json!({"revision": revision, "spans": spans})
    };
    let plan = serde_json::json!({
        "resource": {"vcs.repository.url.full": "git@github.com:acme/cart.git"},
        "segments": [segment("r1", start), segment("r2", start + 30 * second), segment("r2", start + 50 * second)]
    });
    common::send_plan(&dw, "cart", &plan);
    eventually(Duration::from_secs(30), "the deploy announced to both sinks", || {
        hook.requests().iter().any(|r| r.status == 200) && !pagerduty.requests().is_empty()
    });
    dw.wait_for_empty_outbox();
    let hooks = hook.requests();
    assert_eq!(hooks.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 200], "retried once, sent once");
    let body = hooks[1].json();
    assert_eq!(body["status"], "deploy");
    let deploy = &body["deploy"];
    assert_eq!((deploy["service"].as_str(), deploy["revision"].as_str()), (Some("cart"), Some("r2")));
    assert_eq!(deploy["previous_revision"], "r1");
    assert_eq!(deploy["repository"], "git@github.com:acme/cart.git");
    assert_eq!(body["labels"]["team"], "payments");
    assert_eq!(hooks[1].headers["x-driftwatch-signature"], driftwatch::alert::sign("k", &hooks[1].body));
    let changes = pagerduty.requests();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].path, "/v2/change/enqueue", "Change Events beside the Events API");
    let change = changes[0].json();
    assert_eq!(change["routing_key"], "rk");
    assert_eq!(change["payload"]["summary"], "Deploy: cart now serves r2 (was r1)");
    assert_eq!(change["payload"]["source"], "driftwatch");
    assert!(change["payload"]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(
        change["links"].as_array().expect("links").iter().any(|l| l["href"] == "https://github.com/acme/cart/commit/r2"),
        "{change}"
    );
    assert!(quiet.requests().is_empty(), "a sink without deploys = true hears nothing of deploys");
    let events = http_get(&format!("http://{}/api/v1/events", dw.admin)).expect("events").1;
    assert_eq!(events, "{\"events\":[]}", "a deploy is not a drift");
}
