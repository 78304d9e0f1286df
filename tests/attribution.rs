//! Attribution against real repositories built with `git`: the classifier
//! on real commits, monorepo filtering, git-ai notes, revision resolution,
//! and end to end through the receiver.

mod common;

use std::process::Command;
use std::time::Duration;

use common::git::{GitRepo, HUMAN};
use common::{Driftwatch, driftwatch_bin, eventually, http_get, now_nanos};
use driftwatch::tools::simulate::{EndpointTraffic, Rng, SyntheticSpan, encode_request};

fn commits_json(repo: &GitRepo, extra: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new(driftwatch_bin())
        .args(["commits", "--json", "--repo"])
        .arg(repo.path())
        .args(extra)
        .output()
        .expect("run driftwatch commits");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    value["commits"].as_array().cloned().expect("commits")
}

fn by_summary<'a>(commits: &'a [serde_json::Value], summary: &str) -> &'a serde_json::Value {
    commits
        .iter()
        .find(|c| c["summary"] == summary)
        .unwrap_or_else(|| panic!("no commit {summary:?}"))
}

#[test]
fn commits_command_classifies_real_commits() {
    let mut repo = GitRepo::new();
    repo.commit(&[("a", "1")], "Initial import", HUMAN);
    let cases: &[(&str, &str, (&str, &str), Option<(&str, &str)>)] = &[
        (
            "claude trailer",
            "Add retry budget\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
            HUMAN,
            Some(("claude-code", "high")),
        ),
        (
            "claude footer",
            "Tidy\n\n🤖 Generated with [Claude Code](https://claude.com/claude-code)",
            HUMAN,
            Some(("claude-code", "high")),
        ),
        (
            "copilot agent",
            "Initial plan",
            ("copilot-swe-agent[bot]", "198982749+Copilot@users.noreply.github.com"),
            Some(("copilot-agent", "high")),
        ),
        (
            "copilot review",
            "Apply suggestion\n\nCo-authored-by: Copilot <175728472+Copilot@users.noreply.github.com>",
            HUMAN,
            Some(("copilot", "high")),
        ),
        (
            "codex",
            "Refactor\n\nCo-authored-by: Codex <noreply@openai.com>",
            HUMAN,
            Some(("codex", "medium")),
        ),
        (
            "cursor",
            "Cache\n\nCo-authored-by: Cursor Agent <cursoragent@cursor.com>",
            HUMAN,
            Some(("cursor", "high")),
        ),
        ("aider", "aider: add cache", HUMAN, Some(("aider", "high"))),
        (
            "devin",
            "Fix",
            (
                "devin-ai-integration[bot]",
                "158243242+devin-ai-integration[bot]@users.noreply.github.com",
            ),
            Some(("devin", "high")),
        ),
        (
            "jules",
            "Fix",
            (
                "google-labs-jules[bot]",
                "161369871+google-labs-jules[bot]@users.noreply.github.com",
            ),
            Some(("jules", "high")),
        ),
        (
            "gemini",
            "Fix\n\nCo-authored-by: gemini-code-assist[bot] <176961590+gemini-code-assist[bot]@users.noreply.github.com>",
            HUMAN,
            Some(("gemini-code-assist", "high")),
        ),
        (
            "amazon q",
            "Fix",
            (
                "amazon-q-developer[bot]",
                "208079219+amazon-q-developer[bot]@users.noreply.github.com",
            ),
            Some(("amazon-q", "medium")),
        ),
        (
            "windsurf",
            "Fix",
            ("Cascade", "cascade@windsurf.com"),
            Some(("windsurf", "low")),
        ),
        (
            "openhands",
            "Fix\n\nCo-authored-by: openhands <openhands@all-hands.dev>",
            HUMAN,
            Some(("openhands", "high")),
        ),
        (
            "amp",
            "Fix\n\nAmp-Thread-ID: https://ampcode.com/threads/T-1",
            HUMAN,
            Some(("amp", "high")),
        ),
        (
            "factory",
            "Fix",
            ("factory-droid[bot]", "138933559+factory-droid[bot]@users.noreply.github.com"),
            Some(("factory-droid", "high")),
        ),
        (
            "roo",
            "Fix\n\nCo-authored-by: Roomote <roomote@roocode.com>",
            HUMAN,
            Some(("roo-code", "medium")),
        ),
        (
            "replit",
            "Fix\n\nReplit-Commit-Author: Agent",
            HUMAN,
            Some(("replit-agent", "high")),
        ),
        (
            "cline",
            "Fix",
            ("cline[bot]", "205137888+cline[bot]@users.noreply.github.com"),
            Some(("cline", "low")),
        ),
        (
            "kernel",
            "Fix\n\nAssisted-by: Claude:claude-opus-4",
            HUMAN,
            Some(("claude", "high")),
        ),
        ("apache", "Fix\n\nGenerated-by: Gemini 3", HUMAN, Some(("gemini", "high"))),
        ("ad hoc", "Fix\n\nAI-Assisted: true", HUMAN, Some(("ai-assisted", "low"))),
        // Near misses: must not match.
        (
            "human claude",
            "Tune pool sizes",
            ("Claude Shannon", "claude@example.com"),
            None,
        ),
        ("cursor word", "Fix cursor pagination in the list API", HUMAN, None),
        (
            "dependabot",
            "Bump requests from 2.31 to 2.32",
            ("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com"),
            None,
        ),
    ];
    for (name, message, author, _) in cases {
        repo.commit(&[(&format!("f/{}", name.replace(' ', "_")), name)], message, *author);
    }
    let commits = commits_json(&repo, &[]);
    for (name, message, _, want) in cases {
        let summary = message.lines().next().expect("subject");
        let matching: Vec<&serde_json::Value> = commits
            .iter()
            .filter(|c| c["summary"] == summary && c["author"].as_str().is_some())
            .collect();
        assert!(!matching.is_empty(), "{name}: commit not listed");
        let got = matching.iter().find(|c| {
            let ai = &c["ai"];
            match want {
                Some((tool, confidence)) => ai["tool"] == *tool && ai["confidence"] == *confidence,
                None => ai.is_null(),
            }
        });
        assert!(
            got.is_some(),
            "{name}: want {want:?}, got {:?}",
            matching.iter().map(|c| &c["ai"]).collect::<Vec<_>>()
        );
    }
    let bot = commits
        .iter()
        .find(|c| c["summary"] == "Bump requests from 2.31 to 2.32")
        .expect("dependabot");
    assert_eq!(bot["authorship"]["class"], "bot");
    let claude = by_summary(&commits, "Add retry budget");
    assert_eq!(claude["ai"]["marker"], "Co-Authored-By: Claude <noreply@anthropic.com>");

    // The table output names tool and marker too.
    let output = Command::new(driftwatch_bin())
        .args(["commits", "--repo"])
        .arg(repo.path())
        .output()
        .expect("run");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("claude-code") && table.contains("bot: dependabot[bot]"),
        "{table}"
    );
}

#[test]
fn squash_merge_body_and_ranges() {
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("app.py", "x = 1\n")], "Initial", HUMAN);
    let squash = repo.commit(
        &[("app.py", "x = 2\n")],
        "Add fraud scoring (#412)\n\n* Add client\n\n* Wire it in\n\nCo-Authored-By: Claude <noreply@anthropic.com>\n\n---------\n\nCo-authored-by: Lee Park <lee@example.com>",
        ("Lee Park", "lee@example.com"),
    );
    let head = repo.commit(&[("app.py", "x = 3\n")], "Human follow-up", HUMAN);
    let range = commits_json(&repo, &["--range", &format!("{base}..{head}")]);
    assert_eq!(range.len(), 2, "the base itself is outside the range");
    assert!(range.iter().all(|c| c["commit"] != base));
    let squash_row = range.iter().find(|c| c["commit"] == squash).expect("squash commit");
    assert_eq!(squash_row["ai"]["tool"], "claude-code");
    // Abbreviated SHAs and tags resolve.
    repo.git(&["tag", "v1.0", &base]);
    let by_tag = commits_json(&repo, &["--range", &format!("v1.0..{}", &head[..8])]);
    assert_eq!(by_tag.len(), 2);
    let bad = Command::new(driftwatch_bin())
        .args(["commits", "--repo"])
        .arg(repo.path())
        .args(["--range", "nope..HEAD"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"nope\" not found"));
}

#[test]
fn monorepo_subdir_filters_commits() {
    let mut repo = GitRepo::new();
    let base = repo.commit(
        &[("services/checkout/pay.py", "a\n"), ("services/search/q.py", "b\n")],
        "Initial",
        HUMAN,
    );
    repo.commit(&[("services/checkout/pay.py", "a\nc\n")], "Checkout change", HUMAN);
    repo.commit(&[("services/search/q.py", "b\nd\n")], "Search change", HUMAN);
    repo.commit(
        &[("services/checkout-v2/x.py", "e\n")],
        "Sibling directory with a shared prefix",
        HUMAN,
    );
    let checkout = commits_json(&repo, &["--range", &format!("{base}..HEAD"), "--subdir", "services/checkout"]);
    let summaries: Vec<&str> = checkout.iter().filter_map(|c| c["summary"].as_str()).collect();
    assert_eq!(summaries, vec!["Checkout change"]);
    let search = commits_json(&repo, &["--range", &format!("{base}..HEAD"), "--subdir", "services/search/"]);
    assert_eq!(search.len(), 1);
    assert_eq!(search[0]["summary"], "Search change");
}

#[test]
fn git_ai_notes_mark_lines_and_agents() {
    let mut repo = GitRepo::new();
    repo.commit(&[("src/pay.py", "def pay():\n    pass\n")], "Initial", HUMAN);
    let sha = repo.commit(
        &[(
            "src/pay.py",
            "import requests\n\ndef pay():\n    requests.post(\"https://api.fraudscore.io/v1/score\")\n",
        )],
        "Call the fraud scorer",
        HUMAN,
    );
    let note = format!(
        "src/pay.py\n  d9978a8723e02b52 1,4\n---\n{}",
        r#"{"schema_version":"authorship/3.0.0","base_commit_sha":"x","prompts":{"d9978a8723e02b52":{"agent_id":{"tool":"claude-code","id":"s1","model":"claude-opus-4"},"human_author":"Dana Smith"}}}"#
    );
    repo.add_ai_note(&sha, &note);
    let commits = commits_json(&repo, &["--range", "HEAD~1..HEAD"]);
    assert_eq!(commits[0]["ai_notes"], true);
    assert!(commits[0]["ai"].is_null(), "no marker in the message itself");

    // Ranking ties the line that adds the host to the agent that wrote it.
    let config: driftwatch::config::GitRepoConfig = toml::from_str(&format!(
        "service = \"pay\"\npath = {:?}\n",
        repo.path().display().to_string()
    ))
    .expect("config");
    let attributor = driftwatch::attribute::Attributor::new(&[config], Default::default());
    let event: driftwatch::detect::event::DriftEvent = serde_json::from_value(serde_json::json!({
        "id": "e", "fingerprint": "f", "kind": "new_outbound_peer", "state": "firing", "severity": "warning",
        "service": "pay", "operation": "POST /pay", "peer": "api.fraudscore.io:443",
        "revision": &sha[..9], "baseline_revision": "HEAD~1", "onset": "2026-01-01T00:00:00Z", "detected_at": "2026-01-01T00:01:00Z", "resolved_at": null, "suspects": []
    }))
    .expect("event");
    let attribution = attributor.attribute(&event).expect("attribution");
    assert_eq!(attribution.revision.as_deref(), Some(sha.as_str()));
    let suspect = &attribution.suspects[0];
    assert_eq!(suspect.commit, sha);
    assert!(
        suspect
            .evidence
            .contains(&"adds \"api.fraudscore.io\" at src/pay.py:4".to_owned()),
        "{suspect:#?}"
    );
    assert!(
        suspect
            .evidence
            .contains(&"src/pay.py:4 was written by claude-code (claude-opus-4) per git-ai notes".to_owned()),
        "{suspect:#?}"
    );
    assert_eq!(suspect.ai.as_ref().map(|a| a.tool.as_str()), Some("claude-code"));
    // The hunk behind the evidence: the whole four-line file, each line
    // added by the commit and written by the agent.
    let hunk = &suspect.hunks[0];
    assert_eq!((hunk.path.as_str(), hunk.start_line, hunk.lines.len()), ("src/pay.py", 1, 4), "{hunk:#?}");
    let host = &hunk.lines[3];
    assert!(host.text.contains("api.fraudscore.io") && host.added, "{hunk:#?}");
    assert_eq!(host.agent.as_deref(), Some("claude-code"));
}

/// Spans of one revision of `checkout`: `POST /checkout` server spans
/// (with code.*), each calling every peer in `peers` over HTTPS.
fn traffic(revision: &str, start: u64, seconds: u64, slowdown: f64, peers: &[&str], rng: &mut Rng) -> Vec<Vec<SyntheticSpan>> {
    EndpointTraffic {
        service: "checkout",
        revision,
        operation: "POST /checkout",
        route: "/checkout",
        code_function: "shop.pay.charge_card",
        code_filepath: "/app/src/pay.py",
        requests_per_second: 20,
        median_ms: 40.0,
        slowdown,
        peers,
    }
    .generate(start, seconds, rng)
}

fn post(dw: &Driftwatch, batches: Vec<Vec<SyntheticSpan>>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = driftwatch::tls::http_client().build().expect("HTTP client");
        for chunk in batches.chunks(10) {
            let spans: Vec<SyntheticSpan> = chunk.iter().flatten().cloned().collect();
            let response = client
                .post(dw.http_url("/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(encode_request(&spans))
                .send()
                .await
                .expect("send");
            assert!(response.status().is_success(), "{}", response.status());
        }
    });
}

const PAY_V1: &str = "import gateway\n\n\ndef charge_card(card, amount):\n    return gateway.charge(card, amount)\n";
const PAY_V2: &str = "import gateway\nimport time\n\n\ndef charge_card(card, amount):\n    for attempt in range(3):\n        time.sleep(0.02)\n    return gateway.charge(card, amount)\n";
const FRAUD: &str = "import requests\n\nFRAUD_URL = \"https://api.fraudscore.io/v1/score\"\n\n\ndef score_order(order):\n    return requests.post(FRAUD_URL, json=order, timeout=2).json()\n";

#[test]
fn events_name_the_commits_that_caused_them() {
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("src/pay.py", PAY_V1), ("README.md", "shop\n")], "Initial checkout", HUMAN);
    let dw = Driftwatch::start(&format!(
        "[detect.outbound]\nlearning_period = \"1m\"\n[[git.repos]]\nservice = \"checkout\"\npath = {:?}\n",
        repo.path().display().to_string()
    ));
    // The deploy's commits land after driftwatch started (git-sync).
    repo.commit(&[("README.md", "shop\n\nDocs.\n")], "Document the API", HUMAN);
    let ai = repo.commit(
        &[("src/fraud.py", FRAUD)],
        "Score orders for fraud before charging\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
        ("Lee Park", "lee@example.com"),
    );
    let human = repo.commit(&[("src/pay.py", PAY_V2)], "Retry card charges", HUMAN);
    repo.commit(
        &[("src/cart.py", "def cart():\n    return []\n")],
        "Add cart module",
        ("Ann Lee", "ann@example.com"),
    );
    let head = repo.git(&["rev-parse", "HEAD"]);

    let mut rng = Rng::new(3);
    let deploy = now_nanos() / 1_000_000_000 * 1_000_000_000 - 5 * 60 * 1_000_000_000;
    let before = deploy - 12 * 60 * 1_000_000_000;
    post(
        &dw,
        traffic(&base[..10], before, 12 * 60, 1.0, &["payments.internal"], &mut rng),
    );
    post(
        &dw,
        traffic(
            &head[..12],
            deploy,
            4 * 60,
            1.6,
            &["payments.internal", "api.fraudscore.io"],
            &mut rng,
        ),
    );

    let url = format!("http://{}/api/v1/events", dw.admin);
    let mut events: Vec<serde_json::Value> = Vec::new();
    eventually(Duration::from_secs(40), "both events attributed", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        events = value["events"].as_array().cloned().unwrap_or_default();
        events.len() >= 2 && events.iter().all(|e| e["attribution"].is_string() && e["revision"] == head)
    });
    let peer = events.iter().find(|e| e["kind"] == "new_outbound_peer").expect("peer event");
    assert_eq!(peer["peer"], "api.fraudscore.io:443");
    assert_eq!(peer["revision"], head, "reported as the full SHA");
    assert_eq!(peer["baseline_revision"], base);
    let top = &peer["suspects"][0];
    assert_eq!(top["commit"], ai, "{peer:#}");
    assert_eq!(top["ai"]["tool"], "claude-code");
    assert_eq!(top["ai"]["marker"], "Co-Authored-By: Claude <noreply@anthropic.com>");
    assert!(
        top["evidence"]
            .as_array()
            .expect("evidence")
            .iter()
            .any(|e| e == "adds \"api.fraudscore.io\" at src/fraud.py:3"),
        "{top:#}"
    );
    let scores: Vec<f64> = peer["suspects"]
        .as_array()
        .expect("suspects")
        .iter()
        .filter_map(|s| s["score"].as_f64())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by score: {scores:?}");
    assert_eq!(scores.len(), 4, "every commit in range, none outside it");
    // Only the commit that adds the host is linked to the new peer; the
    // rest are in range and score below every linked one.
    let linked: Vec<bool> = peer["suspects"]
        .as_array()
        .expect("suspects")
        .iter()
        .map(|s| s["linked"] == true)
        .collect();
    assert_eq!(linked, [true, false, false, false], "{peer:#}");
    assert!(scores[0] >= 0.5 && scores[1..].iter().all(|s| *s <= 0.1), "{scores:?}");
    assert!(
        peer["suspects"]
            .as_array()
            .expect("suspects")
            .iter()
            .all(|s| s["commit"] != base)
    );

    let latency = events
        .iter()
        .find(|e| e["kind"] == "latency_regression")
        .expect("latency event");
    assert_eq!(latency["operation"], "POST /checkout");
    let top = &latency["suspects"][0];
    assert_eq!(top["commit"], human, "{latency:#}");
    assert!(top["ai"].is_null());
    let evidence: Vec<&str> = top["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        evidence.iter().any(|e| e.starts_with("changes function charge_card")),
        "{evidence:?}"
    );
    assert!(evidence.iter().any(|e| e.starts_with("touches src/pay.py")), "{evidence:?}");
    assert_eq!(
        dw.metrics()
            .value("driftwatch_attributions_total", &[("outcome", "suspects")]),
        2.0
    );
}

/// Five minutes of `before`, then two of `after` calling a new peer; the
/// first event once attributed.
fn new_peer_after_deploy(dw: &Driftwatch, before: &str, after: &str, seed: u64) -> serde_json::Value {
    let mut rng = Rng::new(seed);
    let deploy = now_nanos() / 1_000_000_000 * 1_000_000_000 - 3 * 60 * 1_000_000_000;
    post(
        dw,
        traffic(before, deploy - 5 * 60 * 1_000_000_000, 5 * 60, 1.0, &[], &mut rng),
    );
    post(dw, traffic(after, deploy, 2 * 60, 1.0, &["api.new-vendor.io"], &mut rng));
    let url = format!("http://{}/api/v1/events", dw.admin);
    let mut event = serde_json::Value::Null;
    eventually(Duration::from_secs(40), "attributed event", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        event = value["events"][0].clone();
        event["attribution"].is_string()
    });
    event
}

#[test]
fn unknown_revision_is_kept_verbatim_and_counted() {
    let mut repo = GitRepo::new();
    repo.commit(&[("a.py", "x\n")], "Initial", HUMAN);
    let dw = Driftwatch::start(&format!(
        "[detect.outbound]\nlearning_period = \"1m\"\n[[git.repos]]\nservice = \"*\"\npath = {:?}\n",
        repo.path().display().to_string()
    ));
    let event = new_peer_after_deploy(&dw, "release-2025-01", "release-2025-02", 4);
    assert_eq!(event["revision"], "release-2025-02");
    assert_eq!(event["suspects"], serde_json::json!([]));
    assert!(event["attribution"].as_str().expect("note").contains("not in"), "{event:#}");
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value("driftwatch_revisions_unresolved_total", &[("service_name", "checkout")]),
        1.0
    );
    assert_eq!(
        metrics.value("driftwatch_attributions_total", &[("outcome", "unresolved_revision")]),
        1.0
    );
}

#[test]
fn a_drift_carried_then_fixed_names_every_revision_by_its_full_sha() {
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("src/pay.py", PAY_V1), ("README.md", "shop\n")], "Initial checkout", HUMAN);
    let slow = repo.commit(&[("src/pay.py", PAY_V2)], "Retry card charges", HUMAN);
    let docs = repo.commit(&[("README.md", "shop\n\nDocs.\n")], "Document the API", HUMAN);
    let fix = repo.commit(&[("src/pay.py", PAY_V1)], "Stop sleeping between charge retries", HUMAN);
    let dw = Driftwatch::start(&format!(
        "[[git.repos]]\nservice = \"checkout\"\npath = {:?}\n",
        repo.path().display().to_string()
    ));
    let mut rng = Rng::new(5);
    let minute = 60 * 1_000_000_000;
    let start = now_nanos() / 1_000_000_000 * 1_000_000_000 - 22 * minute;
    // Deploys name their revision abbreviated, each differently.
    post(&dw, traffic(&base[..10], start, 12 * 60, 1.0, &[], &mut rng));
    post(&dw, traffic(&slow[..12], start + 12 * minute, 3 * 60, 1.6, &[], &mut rng));
    post(&dw, traffic(&docs[..9], start + 15 * minute, 3 * 60, 1.6, &[], &mut rng));
    post(&dw, traffic(&fix[..8], start + 18 * minute, 3 * 60, 1.0, &[], &mut rng));

    let url = format!("http://{}/api/v1/events", dw.admin);
    let mut events: Vec<serde_json::Value> = Vec::new();
    eventually(Duration::from_secs(40), "the incident resolved", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        events = value["events"].as_array().cloned().unwrap_or_default();
        events.iter().any(|e| e["state"] == "resolved")
    });
    assert_eq!(events.len(), 1, "one incident: {events:#?}");
    let event = &events[0];
    assert_eq!(event["revision"], slow);
    assert_eq!(event["baseline_revision"], base);
    assert_eq!(event["seen_in"], serde_json::json!([docs]));
    assert_eq!(event["resolution"], serde_json::json!({"reason": "fixed", "revision": fix}));
    assert_eq!(event["suspects"][0]["commit"], slow, "{event:#}");
}

#[test]
fn a_known_baseline_is_reported_in_full_even_when_the_revision_is_unknown() {
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("a.py", "x\n")], "Initial", HUMAN);
    let dw = Driftwatch::start(&format!(
        "[detect.outbound]\nlearning_period = \"1m\"\n[[git.repos]]\nservice = \"*\"\npath = {:?}\n",
        repo.path().display().to_string()
    ));
    let event = new_peer_after_deploy(&dw, &base[..8], "hotfix-unpushed", 6);
    assert_eq!(event["revision"], "hotfix-unpushed", "kept verbatim");
    assert_eq!(event["baseline_revision"], base, "resolved on its own: {event:#}");
}

/// git in `dir`, isolated from the machine's configuration.
fn git_in(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_shallow_checkout_says_what_history_is_missing_and_how_to_fetch_it() {
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("src/pay.py", PAY_V1)], "Initial checkout", HUMAN);
    repo.git(&["tag", "v1"]);
    repo.commit(&[("src/vendor.py", "URL = \"https://api.new-vendor.io/v1\"\n")], "Add the new vendor", HUMAN);
    repo.commit(&[("README.md", "shop\n")], "Document the shop", HUMAN);
    let head = repo.commit(&[("README.md", "shop\n\nMore.\n")], "Document more", HUMAN);
    // A git-sync checkout with --depth 2: the deploy's base and the commit
    // that added the vendor are beyond its history.
    let clones = tempfile::tempdir().expect("dir");
    let source = format!("file://{}", repo.path().display());
    git_in(clones.path(), &["clone", "-q", "--depth", "2", &source, "shallow"]);
    let shallow = clones.path().join("shallow");

    let dw = Driftwatch::start(&format!(
        "[detect.outbound]\nlearning_period = \"1m\"\n[[git.repos]]\nservice = \"*\"\npath = {:?}\n",
        shallow.display().to_string()
    ));
    let event = new_peer_after_deploy(&dw, &base, &head, 7);
    assert_eq!(event["suspects"], serde_json::json!([]), "{event:#}");
    let note = event["attribution"].as_str().expect("note");
    assert!(note.contains("shallow clone") && note.contains("--depth"), "says why and what to change: {note}");
    assert_eq!(
        dw.metrics().value("driftwatch_attributions_total", &[("outcome", "shallow_history")]),
        1.0
    );

    // The base fetched on its own (a tag), its parents still missing: the
    // commits between are cut out of the range, and the note says so.
    git_in(&shallow, &["fetch", "-q", "--depth", "1", "origin", "tag", "v1"]);
    let config: driftwatch::config::GitRepoConfig =
        toml::from_str(&format!("service = \"checkout\"\npath = {:?}\n", shallow.display().to_string())).expect("config");
    let attributor = driftwatch::attribute::Attributor::new(&[config], Default::default());
    let event: driftwatch::detect::event::DriftEvent = serde_json::from_value(serde_json::json!({
        "id": "e", "fingerprint": "f", "kind": "new_outbound_peer", "state": "firing", "severity": "warning",
        "service": "checkout", "operation": "POST /checkout", "peer": "api.new-vendor.io:443",
        "revision": head, "baseline_revision": base, "onset": "2026-01-01T00:00:00Z", "detected_at": "2026-01-01T00:01:00Z", "resolved_at": null, "suspects": []
    }))
    .expect("event");
    let attribution = attributor.attribute(&event).expect("attribution");
    assert!(attribution.shallow, "{attribution:#?}");
    let note = attribution.note.as_deref().expect("note");
    assert!(note.contains("oldest commits of the deploy are missing") && note.contains("--deepen"), "{note}");
    assert!(
        attribution.suspects.iter().all(|s| s.summary != "Add the new vendor"),
        "a commit the clone lacks cannot be named: {attribution:#?}"
    );

    // With the full history the same range names the commit.
    git_in(&shallow, &["fetch", "-q", "--unshallow", "origin"]);
    let attribution = attributor.attribute(&event).expect("attribution");
    assert!(!attribution.shallow, "{attribution:#?}");
    assert_eq!(attribution.suspects[0].summary, "Add the new vendor", "{attribution:#?}");
}

#[test]
fn a_suspect_links_the_pull_request_that_merged_it() {
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("src/pay.py", PAY_V1)], "Initial checkout", HUMAN);
    let head = repo.commit(
        &[("src/vendor.py", "URL = \"https://api.new-vendor.io/v1\"\n")],
        "Add the new vendor (#412)\n\n* call the vendor\n* tests",
        HUMAN,
    );
    let dw = Driftwatch::start(&format!(
        "[detect.outbound]\nlearning_period = \"1m\"\n[[git.repos]]\nservice = \"*\"\npath = {:?}\nweb_url = \"https://github.com/shop/checkout\"\n",
        repo.path().display().to_string()
    ));
    let event = new_peer_after_deploy(&dw, &base, &head, 8);
    let suspect = &event["suspects"][0];
    assert_eq!(suspect["commit"], head, "{event:#}");
    assert_eq!(
        suspect["pull_request"],
        serde_json::json!({"number": 412, "url": "https://github.com/shop/checkout/pull/412"})
    );
    let id = event["id"].as_str().expect("id");
    let (status, page) = http_get(&format!("http://{}/ui/events/{id}", dw.admin)).expect("incident page");
    assert_eq!(status, 200);
    assert!(page.contains("<a href=\"https://github.com/shop/checkout/pull/412\">#412</a>"), "{page}");
}

/// A commit merged with a merge commit ("Merge pull request #77 from …")
/// names no pull request itself: it takes the one of the merge that
/// brought it in.
#[test]
fn a_commit_behind_a_merge_commit_links_the_pull_request_of_that_merge() {
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("src/pay.py", PAY_V1)], "Initial checkout", HUMAN);
    let main = repo.git(&["rev-parse", "--abbrev-ref", "HEAD"]);
    repo.git(&["checkout", "-q", "-b", "vendor"]);
    let feature = repo.commit(
        &[("src/vendor.py", "URL = \"https://api.new-vendor.io/v1\"\n")],
        "Call the new vendor",
        HUMAN,
    );
    repo.git(&["checkout", "-q", &main]);
    repo.commit(&[("README.md", "shop\n")], "Describe the shop", HUMAN);
    repo.git(&["merge", "-q", "--no-ff", "vendor", "-m", "Merge pull request #77 from shop/vendor\n\nCall the new vendor"]);
    let head = repo.git(&["rev-parse", "HEAD"]);
    let dw = Driftwatch::start(&format!(
        "[detect.outbound]\nlearning_period = \"1m\"\n[[git.repos]]\nservice = \"*\"\npath = {:?}\nweb_url = \"https://github.com/shop/checkout\"\n",
        repo.path().display().to_string()
    ));
    let event = new_peer_after_deploy(&dw, &base, &head, 9);
    let suspects = event["suspects"].as_array().expect("suspects");
    assert_eq!(suspects.len(), 2, "the merge itself is no suspect: {event:#}");
    assert_eq!(suspects[0]["commit"], feature, "{event:#}");
    assert_eq!(
        suspects[0]["pull_request"],
        serde_json::json!({"number": 77, "url": "https://github.com/shop/checkout/pull/77"})
    );
    assert!(suspects[1].get("pull_request").is_none(), "the commit on main came in no pull request: {event:#}");
}

const ORDERS_V1: &str = "const db = require('./db');\n\nasync function listOrders(user) {\n  return db.query('SELECT * FROM orders WHERE owner = $1', [user]);\n}\n\nmodule.exports = { listOrders };\n";
const ORDERS_V2: &str = "const db = require('./db');\nconst PAGE = 5000;\n\nasync function listOrders(user) {\n  return db.query('SELECT * FROM orders WHERE owner = $1 LIMIT ' + PAGE, [user]);\n}\n\nmodule.exports = { listOrders };\n";

/// The container runs the service from `/app`, the monorepo keeps it in
/// `services/orders`: the spans' file is found all the same, and an
/// AI-authored commit that nothing links to the drift ranks below the
/// linked human one, marked as only in range.
#[test]
fn a_container_path_finds_the_monorepo_file_and_an_unlinked_ai_commit_ranks_last() {
    let mut repo = GitRepo::new();
    let base = repo.commit(
        &[
            ("services/orders/src/orders.js", ORDERS_V1),
            ("services/orders/README.md", "orders\n"),
            ("services/billing/src/orders.js", "// billing's view of orders\n"),
            (
                ".github/CODEOWNERS",
                "* @shop/platform\n/services/orders/ @shop/orders @dana\n/services/orders/README.md @shop/docs\n",
            ),
        ],
        "Initial import",
        HUMAN,
    );
    let dw = Driftwatch::start(&format!(
        "[[git.repos]]\nservice = \"orders\"\npath = {:?}\nsubdir = \"services/orders\"\n",
        repo.path().display().to_string()
    ));
    let ai = repo.commit(
        &[("services/orders/README.md", "orders\n\nRun it with `npm start`; it listens on 8080.\n")],
        "Document how to run the service\n\nCo-authored-by: Copilot <175728472+Copilot@users.noreply.github.com>",
        ("Lee Park", "lee@example.com"),
    );
    let human = repo.commit(&[("services/orders/src/orders.js", ORDERS_V2)], "Page order listings", HUMAN);
    let head = repo.git(&["rev-parse", "HEAD"]);

    fn orders(revision: &str, slowdown: f64) -> EndpointTraffic<'_> {
        EndpointTraffic {
            service: "orders",
            revision,
            operation: "GET /api/orders",
            route: "/api/orders",
            code_function: "serve",
            code_filepath: "/app/src/orders.js",
            requests_per_second: 20,
            median_ms: 30.0,
            slowdown,
            peers: &[],
        }
    }
    let mut rng = Rng::new(8);
    let deploy = now_nanos() / 1_000_000_000 * 1_000_000_000 - 5 * 60 * 1_000_000_000;
    post(&dw, orders(&base[..10], 1.0).generate(deploy - 12 * 60 * 1_000_000_000, 12 * 60, &mut rng));
    post(&dw, orders(&head[..12], 1.7).generate(deploy, 4 * 60, &mut rng));

    let url = format!("http://{}/api/v1/events", dw.admin);
    let mut event = serde_json::Value::Null;
    eventually(Duration::from_secs(40), "the latency drift attributed", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        match value["events"].as_array().and_then(|e| e.first()) {
            Some(e) if e["attribution"].is_string() => {
                event = e.clone();
                true
            }
            _ => false,
        }
    });
    let suspects = event["suspects"].as_array().expect("suspects");
    assert_eq!(suspects.len(), 2, "{event:#}");
    let top = &suspects[0];
    assert_eq!(top["commit"], human, "{event:#}");
    assert_eq!(top["linked"], true);
    assert!(top["score"].as_f64().expect("score") >= 0.5, "{top:#}");
    assert!(
        top["evidence"]
            .as_array()
            .expect("evidence")
            .iter()
            .any(|e| e == "touches services/orders/src/orders.js (the slow spans' code.file.path /app/src/orders.js)"),
        "{top:#}"
    );
    let last = &suspects[1];
    assert_eq!(last["commit"], ai);
    assert_eq!(last["ai"]["tool"], "copilot");
    assert_eq!(last["linked"], false);
    assert!(last["score"].as_f64().expect("score") <= 0.1, "{last:#}");
    assert!(
        last["evidence"][0].as_str().expect("evidence").starts_with("in range, no link to the drift found"),
        "{last:#}"
    );

    // The incident page greys out the commit that is only in range.
    let id = event["id"].as_str().expect("id");
    let (status, page) = http_get(&format!("http://{}/ui/events/{id}", dw.admin)).expect("page");
    assert_eq!(status, 200);
    assert!(page.contains("in range, no link to the drift found"), "{page}");
    assert!(page.contains("<tr class=\"muted\">"), "{page}");
    // The hunk that links the top suspect, around the first line it added.
    let hunk = &top["hunks"][0];
    assert_eq!(hunk["path"], "services/orders/src/orders.js", "{top:#}");
    assert!(
        hunk["lines"].as_array().expect("lines").iter().any(|l| l["added"] == true && l["text"] == "const PAGE = 5000;"),
        "{hunk:#}"
    );
    assert!(page.contains("<pre class=\"hunk\">"), "{page}");
    // The owners of what the linked suspect changed, not of the README the
    // unlinked one touched.
    assert_eq!(event["owners"], serde_json::json!(["@shop/orders", "@dana"]), "{event:#}");
    assert!(page.contains("const PAGE = 5000;"), "{page}");
}

/// `driftwatch eval --attribution` over the labelled corpus: every case is
/// built with git and attributed as the sidecar would; the culprit ranks
/// first except where nothing links it to the drift.
#[test]
fn the_attribution_corpus_ranks_each_culprit_in_the_top_three() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attribution-cases");
    let output = Command::new(driftwatch_bin())
        .args(["eval", "--attribution"])
        .arg(&corpus)
        .args(["--json", "-"])
        .output()
        .expect("run driftwatch eval");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let cases = report["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10, "{report:#}");
    for case in cases {
        let rank = case["rank"].as_u64().unwrap_or(u64::MAX);
        let hard = case["covers"].as_array().is_some_and(|c| c.iter().any(|c| c == "hard case"));
        if hard {
            assert!(rank <= 3, "{case:#}");
        } else {
            assert_eq!(rank, 1, "{case:#}");
        }
    }
    assert!(report["top3"].as_f64() == Some(1.0), "{report:#}");

    // A case naming a step that does not exist says which.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("broken.toml"),
        "name = \"broken\"\nbaseline = \"base\"\nrevision = \"nope\"\nculprit = \"base\"\n\
         [drift]\nkind = \"latency_regression\"\noperation = \"GET /\"\n\
         [[steps]]\nlabel = \"base\"\nfiles = { \"a.txt\" = \"a\\n\" }\n",
    )
    .expect("case");
    let output = Command::new(driftwatch_bin())
        .args(["eval", "--attribution"])
        .arg(dir.path())
        .output()
        .expect("run driftwatch eval");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken") && stderr.contains("\"nope\""), "{stderr}");
}

/// Several repositories serve every service; the spans say which one they
/// were built from (`vcs.repository.url.full`, as the Python SDK sends it).
/// That one is read, and its pull requests are linked under the web
/// address the attribute gives, since no `web_url` is configured.
#[test]
fn the_repository_the_spans_name_is_the_one_read_and_linked() {
    let mut shop = GitRepo::new();
    shop.commit(&[("README.md", "shop\n")], "Initial shop", HUMAN);
    let mut payments = GitRepo::new();
    payments.git(&["remote", "add", "origin", "git@github.com:acme/payments.git"]);
    let base = payments.commit(&[("src/pay.py", PAY_V1)], "Initial payments", HUMAN);
    let head = payments.commit(
        &[("src/vendor.py", "URL = \"https://api.new-vendor.io/v1\"\n")],
        "Call the new vendor (#412)",
        HUMAN,
    );
    let dw = Driftwatch::start(&format!(
        "[detect.outbound]\nlearning_period = \"1m\"\n\
         [[git.repos]]\nservice = \"*\"\npath = {:?}\nweb_url = \"https://github.com/acme/shop\"\n\
         [[git.repos]]\nservice = \"*\"\npath = {:?}\n",
        shop.path().display().to_string(),
        payments.path().display().to_string()
    ));
    let second = 1_000_000_000u64;
    let start = now_nanos() / second * second - 9 * 60 * second;
    let segment = |revision: &str, from: u64, seconds: u64, host: &str| {
        let spans: Vec<serde_json::Value> = (0..seconds * 2)
            .map(|i| {
                let at = from + i * second / 2;
                serde_json::json!({
                    "name": "POST /pay", "kind": "server", "start_ns": at, "end_ns": at + 30_000_000,
                    "children": [{"name": "POST", "kind": "client", "start_ns": at + 1_000_000, "end_ns": at + 20_000_000,
                                  "attributes": {"url.full": format!("https://{host}/v1/charge"), "server.address": host,
                                                 "server.port": 443, "http.request.method": "POST"}}]
                })
            })
            .collect();
        serde_json::json!({"revision": revision, "spans": spans})
    };
    let plan = serde_json::json!({
        "resource": {"vcs.repository.url.full": "https://github.com/acme/payments"},
        "segments": [segment(&base, start, 6 * 60, "gateway.internal"), segment(&head, start + 6 * 60 * second, 2 * 60, "api.new-vendor.io")]
    });
    common::send_plan(&dw, "pay", &plan);
    let url = format!("http://{}/api/v1/events", dw.admin);
    let mut event = serde_json::Value::Null;
    eventually(Duration::from_secs(40), "an attributed event", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        event = value["events"][0].clone();
        event["attribution"].is_string()
    });
    assert_eq!(event["kind"], "new_outbound_peer", "{event:#}");
    assert_eq!(event["repository"], "https://github.com/acme/payments");
    assert_eq!(event["revision"], head);
    let suspect = &event["suspects"][0];
    assert_eq!(suspect["commit"], head, "the payments repository was read: {event:#}");
    assert_eq!(
        suspect["pull_request"],
        serde_json::json!({"number": 412, "url": "https://github.com/acme/payments/pull/412"})
    );
}

const API_V1: &str = "from shop import pay\n\n\ndef checkout(cart):\n    return pay.charge_card(cart.card, cart.total)\n";
const API_V2: &str = "from shop import pay\n\n\ndef checkout(cart):\n    total = round(cart.total, 2)\n    return pay.charge_card(cart.card, total)\n";
const RAISING_PAY: &str = "class CardDeclined(Exception):\n    pass\n\n\ndef charge_card(card=None, amount=0):\n    if amount >= 0:\n        raise CardDeclined(\"declined\")\n    return amount\n";

/// The failing spans name the handler (`code.*` on the SERVER span), but
/// their exceptions were raised in `charge_card`: the Python SDK's
/// `record_exception` traceback says so, and the commit that changed
/// `charge_card` is blamed, not the one that touched the handler.
#[test]
fn an_error_rate_drift_is_blamed_where_its_exceptions_were_raised() {
    let mut repo = GitRepo::new();
    let base = repo.commit(
        &[("shop/__init__.py", ""), ("shop/api.py", API_V1), ("shop/pay.py", PAY_V1)],
        "Initial checkout",
        HUMAN,
    );
    let culprit = repo.commit(
        &[("shop/pay.py", RAISING_PAY)],
        "Decline cards the gateway flags\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
        ("Lee Park", "lee@example.com"),
    );
    let head = repo.commit(&[("shop/api.py", API_V2)], "Round totals in the handler", HUMAN);
    let dw = Driftwatch::start(&format!(
        "[[git.repos]]\nservice = \"*\"\npath = {:?}\n",
        repo.path().display().to_string()
    ));
    let second = 1_000_000_000u64;
    let start = now_nanos() / second * second - 10 * 60 * second;
    let mut rng = Rng::new(17);
    let mut segment = |revision: &str, from: u64, minutes: u64, errors: f64, raise: bool| {
        let spans: Vec<serde_json::Value> = (0..minutes * 60 * 20)
            .map(|i| {
                let at = from + i * second / 20;
                let mut span = serde_json::json!({
                    "name": "POST /checkout", "kind": "server", "start_ns": at, "end_ns": at + 30_000_000,
                    "attributes": {"code.function.name": "shop.api.checkout", "code.file.path": "/app/shop/api.py"},
                });
                if rng.uniform() < errors {
                    span["error"] = serde_json::json!(true);
                    if raise {
                        span["raise"] = serde_json::json!("shop.pay:charge_card");
                    }
                }
                span
            })
            .collect();
        serde_json::json!({"revision": revision, "spans": spans})
    };
    let plan = serde_json::json!({
        "modules": {"shop/__init__.py": "", "shop/pay.py": RAISING_PAY},
        "segments": [segment(&base, start, 6, 0.002, false), segment(&head, start + 6 * 60 * second, 4, 0.05, true)],
    });
    common::send_plan(&dw, "checkout", &plan);
    let url = format!("http://{}/api/v1/events", dw.admin);
    let mut event = serde_json::Value::Null;
    eventually(Duration::from_secs(60), "an attributed error-rate event", || {
        let Ok((200, body)) = http_get(&url) else { return false };
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        event = value["events"][0].clone();
        event["attribution"].is_string()
    });
    assert_eq!(event["kind"], "error_rate_regression", "{event:#}");
    assert_eq!(event["code"]["function"], "charge_card", "the raise site, from the traceback: {event:#}");
    assert!(event["code"]["filepath"].as_str().is_some_and(|p| p.ends_with("/shop/pay.py")), "{event:#}");
    assert_eq!(event["code"]["lineno"], 7);
    let top = &event["suspects"][0];
    assert_eq!(top["commit"], culprit, "{event:#}");
    let evidence: Vec<&str> = top["evidence"].as_array().expect("evidence").iter().filter_map(|e| e.as_str()).collect();
    assert!(
        evidence.contains(&"changes function charge_card (the failing spans' code.function) at shop/pay.py:5"),
        "{evidence:?}"
    );
    // The handler commit only calls charge_card: a weak link, ranked below.
    let second = &event["suspects"][1];
    assert_eq!(second["commit"], head);
    assert!(second["score"].as_f64() < top["score"].as_f64(), "{event:#}");
}
