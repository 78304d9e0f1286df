//! `driftwatch demo`: the whole job, self-contained, in well under a minute.
//!
//! It makes a temporary git repository with human and AI-authored commits
//! (real markers), starts driftwatch in-process on free loopback ports with
//! the embedded defaults, and drives two synthetic services through an
//! initial revision and two deploys over OTLP/HTTP, in event time: the
//! first deploy's AI-authored commit adds a call to a third-party host, the
//! second's retries declined card charges: checkout gets slower, and some
//! requests charge the card twice. It then prints each alert with its
//! ranked suspects and evidence, and the URL of its incident page.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{Config, GitRepoConfig};
use crate::detect::event::{DriftEvent, EventKind};
use crate::server::Server;
use crate::tools::simulate::{EndpointTraffic, Rng, encode_request};

const S: u64 = 1_000_000_000;

pub struct DemoOptions {
    /// Keep serving the API and pages after the run, until Ctrl-C.
    pub serve: bool,
}

const PAY_V1: &str = "import gateway\n\n\ndef charge_card(card, amount):\n    return gateway.charge(card, amount)\n";
const PAY_V2: &str = "import gateway\nimport time\n\n\ndef charge_card(card, amount):\n    # Retry declined charges, backing off between attempts.\n    for attempt in range(3):\n        result = gateway.charge(card, amount)\n        if result.ok:\n            return result\n        time.sleep(0.03 * (attempt + 1))\n    return result\n";
/// Share of the third release's checkouts whose first charge is declined
/// and retried: the card is charged again.
const RETRIED_SHARE: f64 = 0.05;
/// The payment gateway, a side-effect peer: a repeated charge is critical.
const GATEWAY: &str = "payments.internal";
const FRAUD: &str = "import requests\n\nFRAUD_URL = \"https://api.fraudscore.io/v1/score\"\n\n\ndef score_order(order):\n    return requests.post(FRAUD_URL, json=order, timeout=2).json()\n";

/// The demo's repository and the revisions of its three releases.
struct DemoRepo {
    dir: tempfile::TempDir,
    releases: [String; 3],
}

fn git(dir: &Path, args: &[&str], author: (&str, &str), stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", author.0)
        .env("GIT_AUTHOR_EMAIL", author.1)
        .env("GIT_COMMITTER_NAME", author.0)
        .env("GIT_COMMITTER_EMAIL", author.1)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("the demo needs the `git` command to build its example repository")?;
    if let Some(input) = stdin {
        child.stdin.take().context("git stdin")?.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("git {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

impl DemoRepo {
    fn create() -> anyhow::Result<DemoRepo> {
        let dir = tempfile::Builder::new().prefix("driftwatch-demo-").tempdir()?;
        let path = dir.path();
        let dana = ("Dana Smith", "dana@example.com");
        let lee = ("Lee Park", "lee@example.com");
        git(path, &["init", "-q", "-b", "main"], dana, None)?;
        let commit = |files: &[(&str, &str)], message: &str, author: (&str, &str)| -> anyhow::Result<String> {
            for (file, content) in files {
                let full = path.join(file);
                std::fs::create_dir_all(full.parent().unwrap_or(path))?;
                std::fs::write(&full, content)?;
                git(path, &["add", file], author, None)?;
            }
            git(path, &["commit", "-q", "-F", "-"], author, Some(message))?;
            git(path, &["rev-parse", "HEAD"], author, None)
        };
        let v1 = commit(
            &[("src/pay.py", PAY_V1), ("README.md", "# shop\n")],
            "Initial checkout service",
            dana,
        )?;
        commit(
            &[("README.md", "# shop\n\nRun with `make run`.\n")],
            "Document how to run the service",
            dana,
        )?;
        commit(
            &[("src/fraud.py", FRAUD)],
            "Score orders for fraud before charging\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
            lee,
        )?;
        let v2 = commit(
            &[("src/cart.py", "def cart(user):\n    return []\n")],
            "Add an empty cart endpoint",
            dana,
        )?;
        commit(
            &[("src/cart.py", "def cart(user):\n    return list(user.items)\n")],
            "Return the user's items",
            lee,
        )?;
        let v3 = commit(
            &[("src/pay.py", PAY_V2)],
            "Retry declined card charges\n\nCo-authored-by: Cursor Agent <cursoragent@cursor.com>",
            dana,
        )?;
        Ok(DemoRepo {
            dir,
            releases: [v1, v2, v3],
        })
    }
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("driftwatch demo");
    println!("  building an example git repository with human and AI-authored commits...");
    let repo = DemoRepo::create()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = Config::default();
    config.receiver.grpc_listen = loopback;
    config.receiver.http_listen = loopback;
    config.admin.listen = loopback;
    config.store.path = repo.dir.path().join(".driftwatch-store");
    config.detect.repeated_calls.critical_peers = vec![format!("{GATEWAY}:*")];
    config.git.repos.push(GitRepoConfig {
        service: "*".into(),
        path: repo.dir.path().to_owned(),
        ..Default::default()
    });
    let server = Server::start(config).await?;
    let admin = server.admin_addr();
    println!(
        "  driftwatch listening: OTLP/gRPC {}, OTLP/HTTP {}, admin http://{admin}",
        server.grpc_addr(),
        server.http_addr()
    );

    let client = crate::tls::http_client().build().context("cannot build an HTTP client")?;
    let url = format!("http://{}/v1/traces", server.http_addr());
    let now = crate::clock::unix_nanos() / S * S;
    let mut rng = Rng::new(7);
    // Three releases in event time: 12, 6 and 6 minutes, ending now.
    let plan: [(usize, u64, f64, &[&str]); 3] = [
        (0, 12 * 60, 1.0, &[GATEWAY]),
        (1, 6 * 60, 1.0, &[GATEWAY, "api.fraudscore.io"]),
        (2, 6 * 60, 1.7, &[GATEWAY, "api.fraudscore.io"]),
    ];
    let mut at = now - plan.iter().map(|p| p.1).sum::<u64>() * S;
    let mut sent = 0usize;
    for (release, seconds, slowdown, peers) in plan {
        let revision = &repo.releases[release][..12];
        let checkout = EndpointTraffic {
            service: "checkout",
            revision,
            operation: "POST /checkout",
            route: "/checkout",
            code_function: "shop.pay.charge_card",
            code_filepath: "/app/src/pay.py",
            requests_per_second: 20,
            median_ms: 45.0,
            slowdown,
            peers,
        };
        let inventory = EndpointTraffic {
            service: "inventory",
            revision: "v1.8.2",
            operation: "GET /items/{id}",
            route: "/items/{id}",
            code_function: "items.get",
            code_filepath: "items.py",
            requests_per_second: 15,
            median_ms: 8.0,
            slowdown: 1.0,
            peers: &["postgres.internal"],
        };
        let mut checkout_batches = checkout.generate(at, seconds, &mut rng);
        if release == 2 {
            for batch in &mut checkout_batches {
                retry_some_charges(batch, &mut rng);
            }
        }
        let batches: Vec<_> = checkout_batches
            .into_iter()
            .zip(inventory.generate(at, seconds, &mut rng))
            .collect();
        for chunk in batches.chunks(30) {
            let spans: Vec<_> = chunk.iter().flat_map(|(a, b)| a.iter().chain(b)).cloned().collect();
            let response = client
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .body(encode_request(&spans))
                .send()
                .await
                .context("demo traffic could not reach the OTLP/HTTP receiver")?;
            if !response.status().is_success() {
                bail!("the receiver answered {}", response.status());
            }
            sent += spans.len();
        }
        println!(
            "  release {} of checkout ({}): {} min of traffic sent{}",
            release + 1,
            revision,
            seconds / 60,
            match release {
                0 => " (baseline)",
                1 => " (deploy: an AI-authored commit calls a fraud-scoring API)",
                _ => " (deploy: an AI-authored commit retries card charges)",
            }
        );
        at += seconds * S;
    }

    println!("  waiting for detection and attribution...");
    let deadline = Instant::now() + Duration::from_secs(40);
    let events = loop {
        let events: Vec<DriftEvent> = server.events().current().list().iter().map(|e| (**e).clone()).collect();
        let complete = expected_kinds(&events) && events.iter().all(|e| e.attribution.is_some());
        if complete || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!();
    println!(
        "{} spans replayed in {:.1?}; {} alert(s):",
        sent,
        started.elapsed(),
        events.len()
    );
    for event in events.iter().rev() {
        print_event(event, admin);
    }
    let expected = expected_kinds(&events);
    if options.serve {
        println!("serving the API and incident pages at http://{admin}/ui — press Ctrl-C to stop");
        crate::server::termination_signal().await;
    } else if !events.is_empty() {
        println!();
        println!("the demo's server stops now; run `driftwatch demo --serve` to keep the incident pages open");
    }
    server.shutdown().await?;
    if !expected {
        bail!(
            "the demo expected a latency regression, a new outbound peer and a repeated unsafe call, and {} event(s) were detected; see the logs above",
            events.len()
        );
    }
    Ok(())
}

/// Whether every drift the demo's releases carry was detected.
fn expected_kinds(events: &[DriftEvent]) -> bool {
    [EventKind::NewOutboundPeer, EventKind::LatencyRegression, EventKind::RepeatedUnsafeCall]
        .iter()
        .all(|kind| events.iter().any(|e| e.kind == *kind))
}

/// Charges a declined card again in `RETRIED_SHARE` of the requests of a
/// one-second batch: a second POST to the gateway in the same trace, marked
/// as a resend, after the first.
fn retry_some_charges(batch: &mut Vec<crate::tools::simulate::SyntheticSpan>, rng: &mut Rng) {
    let charges: Vec<usize> = (0..batch.len())
        .filter(|&i| {
            batch[i].attributes.iter().any(|(key, value)| {
                key == "http.url" && matches!(value, crate::tools::simulate::AttrValue::Str(url) if url.contains(GATEWAY))
            })
        })
        .collect();
    for i in charges {
        if rng.uniform() >= RETRIED_SHARE {
            continue;
        }
        let mut again = batch[i].clone();
        again.span_id = rng.next_u64() | 1;
        again.start_unix_nanos += again.duration_nanos;
        again.attributes.push(("http.request.resend_count".into(), 1.into()));
        batch.push(again);
    }
}

fn print_event(event: &DriftEvent, admin: SocketAddr) {
    println!();
    let what = match event.kind {
        EventKind::LatencyRegression => {
            let stats = event.stats.as_ref();
            format!(
                "latency regression: {} {} p95 {:.0} ms -> {:.0} ms (+{:.0}%, {})",
                event.service_key(),
                event.operation.as_deref().unwrap_or(""),
                stats.map_or(0.0, |s| s.baseline.p95_ms),
                stats.map_or(0.0, |s| s.current.p95_ms),
                stats.map_or(0.0, |s| s.relative_increase * 100.0),
                crate::detect::stats::describe_p_value(stats.map_or(1.0, |s| s.p_value))
            )
        }
        EventKind::ErrorRateRegression => {
            let rates = event.stats.as_ref().and_then(|s| s.error_rate.as_ref());
            format!(
                "error-rate regression: {} {} errors {} -> {} ({})",
                event.service_key(),
                event.operation.as_deref().unwrap_or(""),
                crate::text::percent(rates.map_or(0.0, |r| r.baseline)),
                crate::text::percent(rates.map_or(0.0, |r| r.current)),
                crate::detect::stats::describe_p_value(event.stats.as_ref().map_or(1.0, |s| s.p_value))
            )
        }
        EventKind::NewOutboundPeer => format!(
            "new outbound peer: {} now calls {} from {}",
            event.service_key(),
            event.peer.as_deref().unwrap_or(""),
            event.operation.as_deref().unwrap_or("?")
        ),
        EventKind::FanoutRegression => format!(
            "fan-out regression: {} {} calls {} {} times per request, was {}",
            event.service_key(),
            event.operation.as_deref().unwrap_or("?"),
            event.peer.as_deref().unwrap_or("?"),
            event.fanout.as_ref().map_or(0.0, |f| f.current.mean),
            event.fanout.as_ref().map_or(0.0, |f| f.baseline.mean),
        ),
        EventKind::RepeatedUnsafeCall => format!(
            "repeated unsafe call: {} {} called {} more than once in {} of {} requests (up to {} times), never in {} before",
            event.service_key(),
            event.operation.as_deref().unwrap_or("?"),
            event.peer.as_deref().unwrap_or("?"),
            event.repeats.as_ref().map_or(0, |r| r.repeated_requests),
            event.repeats.as_ref().map_or(0, |r| r.requests),
            event.repeats.as_ref().map_or(0, |r| r.max_calls_per_request),
            event.repeats.as_ref().map_or(0, |r| r.baseline_requests),
        ),
        EventKind::NewDependency => format!(
            "new dependency: {} now uses {} in {}",
            event.service_key(),
            event.dependency.as_ref().map_or("?", |d| d.scope.as_str()),
            event.operation.as_deref().unwrap_or("?")
        ),
    };
    let severity = event.severity.as_str().to_ascii_uppercase();
    println!("[{severity}] {what}");
    println!(
        "  revision {} (baseline {}), onset {}, detected {}",
        short(&event.revision),
        event.baseline_revision.as_deref().map_or("-", short),
        event.onset,
        event.detected_at
    );
    if let Some(note) = &event.attribution {
        println!("  {note}");
    }
    for (rank, suspect) in event.suspects.iter().take(3).enumerate() {
        let ai = suspect
            .ai
            .as_ref()
            .map(|ai| {
                format!(
                    " [AI: {} — {}]",
                    ai.tool, ai.marker
                )
            })
            .unwrap_or_default();
        println!(
            "  #{} {:.2} {} {} — {}{ai}",
            rank + 1,
            suspect.score,
            short(&suspect.commit),
            suspect.summary,
            suspect.author
        );
        for evidence in suspect.evidence.iter().filter(|e| !e.starts_with("AI-authored")) {
            println!("       {evidence}");
        }
    }
    println!("  incident page: http://{admin}/ui/events/{}", event.id);
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
