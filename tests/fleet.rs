//! Fleet mode against a real PostgreSQL: replicas share baselines (a pod of
//! revision R detects against R-1's baseline that another pod learned) and
//! alert once per drift however many replicas detect it; the store's
//! arbitration (events by fingerprint, delivery claims with leases,
//! migrations) on its own.

mod common;

use std::time::Duration;

use common::postgres::{PgBouncer, TestDatabase};
use common::{Driftwatch, Receiver, checkout_traffic as checkout, eventually, http_get, now_nanos, send_traffic};
use driftwatch::detect::event::{DriftEvent, EventState, example_event};
use driftwatch::tools::simulate::{EndpointTraffic, Rng};
use driftwatch::fleet::combine;
use driftwatch::fleet::store::{Claim, DeliveryKey, FleetStore, Leave};

const S: u64 = 1_000_000_000;

/// An RFC 3339 time as the core keeps it.
fn at(text: &str) -> driftwatch::clock::Timestamp {
    driftwatch::clock::Timestamp::parse(text).expect("RFC 3339")
}

fn replica_config(db: &TestDatabase, replica: &str, extra: &str) -> String {
    format!(
        "[store]\npostgres_url = {:?}\nreplica = {replica:?}\nflush_interval = \"1s\"\nfleet_lease = \"3s\"\n{extra}",
        db.url
    )
}

fn send(dw: &Driftwatch, traffic: &EndpointTraffic<'_>, start: u64, seconds: u64, seed: u64) {
    send_traffic(dw, traffic, start, seconds, &mut Rng::new(seed));
}

/// A replica's snapshot of `service`: `spans` spans of `revision` on one
/// operation, calling one peer.
fn snapshot_body(service: &str, revision: &str, spans: u64) -> Vec<u8> {
    use driftwatch::analyze::snapshot::*;
    let start = 1_700_000_000 * S;
    let snapshot = ServiceSnapshot {
        version: SNAPSHOT_VERSION,
        service: service.into(),
        environment: None,
        watermark: start + 600 * S,
        first_seen: Some(start),
        revisions: vec![RevisionSnapshot {
            revision: revision.into(),
            first_seen: start,
            last_seen: start + 600 * S,
            spans,
            repository: None,
        }],
        series: vec![SeriesSnapshot {
            operation: "GET /cart".into(),
            revision: revision.into(),
            buckets: vec![(20_000, spans / 2), (40_000, spans - spans / 2)],
            moments: vec![(start, spans, spans as f64 * 3.4, spans as f64 * 11.6)],
            clean_evaluations: 2,
            errors: Vec::new(),
        }],
        peers: vec![PeerSnapshot {
            peer: "db:5432".into(),
            first_seen: start,
            last_seen: start + 600 * S,
            calls: spans,
        }],
        scopes: Vec::new(),
        firing: Vec::new(),
        calls: Vec::new(),
        repeats: Vec::new(),
        regressed: Vec::new(),
        unsettled: Vec::new(),
    };
    serde_json::to_vec(&snapshot).expect("JSON")
}

fn events(dw: &Driftwatch) -> Vec<serde_json::Value> {
    let Ok((200, body)) = http_get(&format!("http://{}/api/v1/events", dw.admin)) else {
        return Vec::new();
    };
    let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    value["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_new_pod_detects_a_regression_against_the_baseline_an_old_pod_learned() {
    let db = TestDatabase::create();
    let deploy = now_nanos() / S * S - 4 * 60 * S;
    {
        let mut old = Driftwatch::start(&replica_config(&db, "checkout-7d9f-old", ""));
        send(&old, &checkout("rev-1", 1.0), deploy - 12 * 60 * S, 12 * 60, 1);
        eventually(Duration::from_secs(10), "rev-1 analysed", || {
            old.metrics()
                .value("driftwatch_spans_analyzed_total", &[("service_name", "checkout")])
                == 14_400.0
        });
        // The pod goes away as in a rollout: SIGTERM, final flush.
        assert!(old.terminate().success(), "{}", old.stderr());
    }
    let new = Driftwatch::start(&replica_config(&db, "checkout-5c4b-new", ""));
    send(&new, &checkout("rev-2", 1.5), deploy, 4 * 60, 2);
    let mut found = Vec::new();
    eventually(Duration::from_secs(30), "a regression against the fleet's baseline", || {
        found = events(&new);
        !found.is_empty()
    });
    let event = &found[0];
    assert_eq!(event["kind"], "latency_regression", "{event}");
    assert_eq!(event["revision"], "rev-2");
    assert_eq!(
        event["baseline_revision"], "rev-1",
        "the new pod never saw rev-1; its baseline came from the old pod through PostgreSQL"
    );
    assert!(
        event["stats"]["baseline"]["count"].as_u64().expect("count") >= 10_000,
        "{event}"
    );
    assert_eq!(
        new.metrics().value("driftwatch_fleet_store_errors_total", &[]),
        0.0,
        "{}",
        new.stderr()
    );
    // Traffic stops: the pod's clock moves on, its data does not. Once the
    // evaluations over its last minute of traffic are done, its flushes go
    // on and it writes nothing more to the database.
    let published = |outcome: &str| new.metrics().value("driftwatch_fleet_publishes_total", &[("outcome", outcome)]);
    let rows_written = || new.metrics().value("driftwatch_fleet_rows_total", &[("direction", "written")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (skipped, writes, rows) = (published("unchanged"), published("written"), rows_written());
        eventually(Duration::from_secs(20), "more flushes", || published("unchanged") >= skipped + 5.0);
        if published("written") == writes && rows_written() == rows {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an idle replica still publishes two minutes after its traffic stopped: {} written",
            published("written")
        );
    }
}

#[test]
fn a_new_pod_detects_a_loop_of_charges_against_the_calls_per_request_an_old_pod_learned() {
    let db = TestDatabase::create();
    let deploy = now_nanos() / S * S - 4 * 60 * S;
    let charges = |revision, peers| EndpointTraffic {
        peers,
        ..checkout(revision, 1.0)
    };
    {
        let mut old = Driftwatch::start(&replica_config(&db, "checkout-7d9f-old", ""));
        // One charge per checkout.
        send(&old, &charges("rev-1", &["payments.example"]), deploy - 12 * 60 * S, 12 * 60, 1);
        eventually(Duration::from_secs(10), "rev-1 analysed", || {
            old.metrics()
                .value("driftwatch_spans_analyzed_total", &[("service_name", "checkout")])
                == 28_800.0
        });
        assert!(old.terminate().success(), "{}", old.stderr());
    }
    // rev-2 charges three times per checkout; this pod never saw rev-1.
    let new = Driftwatch::start(&replica_config(&db, "checkout-5c4b-new", ""));
    let thrice = ["payments.example"; 3];
    send(&new, &charges("rev-2", &thrice), deploy, 4 * 60, 2);
    let mut found = Vec::new();
    eventually(Duration::from_secs(30), "fan-out and repeated charges against the fleet's baseline", || {
        found = events(&new);
        found.len() >= 2
    });
    let mut kinds: Vec<&str> = found.iter().map(|e| e["kind"].as_str().expect("kind")).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["fanout_regression", "repeated_unsafe_call"], "{found:#?}");
    for event in &found {
        assert_eq!(event["revision"], "rev-2", "{event}");
        assert_eq!(event["peer"], "payments.example:443", "{event}");
        assert_eq!(
            event["baseline_revision"], "rev-1",
            "the calls per request of rev-1 came from the old pod through PostgreSQL: {event}"
        );
    }
    let fanout = found.iter().find(|e| e["kind"] == "fanout_regression").expect("fan-out");
    assert!(
        fanout["fanout"]["baseline"]["requests"].as_u64().expect("requests") >= 10_000,
        "{fanout}"
    );
    assert_eq!(fanout["fanout"]["baseline"]["max"], 1, "{fanout}");
    let repeats = found.iter().find(|e| e["kind"] == "repeated_unsafe_call").expect("repeats");
    assert!(repeats["repeats"]["baseline_requests"].as_u64().expect("requests") >= 10_000, "{repeats}");
}

#[test]
fn two_replicas_detecting_the_same_drift_send_one_alert_and_one_resolution() {
    let db = TestDatabase::create();
    let webhook = Receiver::start(&[]);
    let alerts = format!(
        "[alerts]\ngroup_wait = \"200ms\"\n[[alerts.webhook]]\nurl = \"{}\"\n",
        webhook.url("/hook")
    );
    let a = Driftwatch::start(&replica_config(&db, "checkout-a", &alerts));
    let b = Driftwatch::start(&replica_config(&db, "checkout-b", &alerts));
    alert_once_and_resolve_once(&[a, b], &webhook);
}

/// Each replica gets its own share of the same service's traffic: a
/// baseline, a slower revision on every replica, then a rollback. The drift
/// is alerted exactly once and resolved exactly once, by whichever replica
/// wins each claim; the others' copies are deduplicated.
fn alert_once_and_resolve_once(replicas: &[Driftwatch], webhook: &Receiver) {
    let deploy = now_nanos() / S * S - 8 * 60 * S;
    for (i, dw) in replicas.iter().enumerate() {
        send(dw, &checkout("rev-1", 1.0), deploy - 12 * 60 * S, 12 * 60, 10 * (i as u64 + 1));
    }
    for (i, dw) in replicas.iter().enumerate() {
        send(dw, &checkout("rev-2", 1.6), deploy, 4 * 60, 10 * (i as u64 + 1) + 1);
    }
    eventually(Duration::from_secs(30), "every replica detects the drift", || {
        replicas.iter().all(|dw| events(dw).iter().any(|e| e["state"] == "firing"))
    });
    let first = events(&replicas[0]);
    for dw in replicas {
        assert_eq!(events(dw)[0]["id"], first[0]["id"], "the replicas name the drift alike");
    }
    // Every replica queued the alert; those that did not win the claim
    // drop it once the winner has delivered.
    let deduplicated = || -> f64 {
        replicas
            .iter()
            .map(|dw| {
                dw.metrics().value(
                    "driftwatch_alert_deliveries_total",
                    &[("sink", "webhook"), ("outcome", "deduplicated")],
                )
            })
            .sum()
    };
    let others = (replicas.len() - 1) as f64;
    eventually(Duration::from_secs(20), "the other replicas' copies deduplicated", || {
        deduplicated() >= others
    });
    let delivered = |status: &str| -> Vec<serde_json::Value> {
        webhook
            .requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| r.json())
            .filter(|body| body["status"] == status)
            .collect()
    };
    for dw in replicas {
        dw.wait_for_empty_outbox();
    }
    let firing = delivered("firing");
    assert_eq!(firing.len(), 1, "exactly one alert for the fleet: {firing:?}");
    assert_eq!(firing[0]["event"]["id"], first[0]["id"]);

    // A rollback everywhere: the drift ends everywhere and resolves once.
    for (i, dw) in replicas.iter().enumerate() {
        send(dw, &checkout("rev-1", 1.0), deploy + 4 * 60 * S, 3 * 60, 10 * (i as u64 + 1) + 2);
    }
    eventually(Duration::from_secs(30), "a resolution delivered", || {
        !delivered("resolved").is_empty()
    });
    eventually(Duration::from_secs(10), "every replica shows it resolved", || {
        replicas.iter().all(|dw| events(dw).iter().all(|e| e["state"] == "resolved"))
    });
    // The others queued the resolution too, in case the resolver went
    // away; their copies are dropped as already delivered.
    eventually(Duration::from_secs(20), "the resolution's other copies deduplicated", || {
        deduplicated() >= 2.0 * others
    });
    for dw in replicas {
        dw.wait_for_empty_outbox();
    }
    let resolved = delivered("resolved");
    assert_eq!(resolved.len(), 1, "exactly one resolution for the fleet: {resolved:?}");
    assert_eq!(resolved[0]["event"]["id"], first[0]["id"]);
    assert_eq!(delivered("firing").len(), 1, "and no second alert");
}

#[test]
fn replicas_behind_pgbouncer_in_transaction_pooling_alert_once_on_a_few_server_sessions() {
    let db = TestDatabase::create();
    // Three replicas of two sessions each share two server sessions.
    let bouncer = PgBouncer::start(2);
    let webhook = Receiver::start(&[]);
    let config = |replica: &str| {
        format!(
            "[store]\npostgres_url = {:?}\nreplica = {replica:?}\nflush_interval = \"1s\"\nfleet_lease = \"3s\"\nfleet_pool_size = 2\n\
             [alerts]\ngroup_wait = \"200ms\"\n[[alerts.webhook]]\nurl = \"{}\"\n",
            bouncer.url(db.name()),
            webhook.url("/hook")
        )
    };
    let replicas: Vec<Driftwatch> = ["checkout-a", "checkout-b", "checkout-c"]
        .iter()
        .map(|r| Driftwatch::start(&config(r)))
        .collect();
    alert_once_and_resolve_once(&replicas, &webhook);
    for dw in &replicas {
        let metrics = dw.metrics();
        assert_eq!(
            metrics.value("driftwatch_fleet_store_errors_total", &[]),
            0.0,
            "no statement failed behind transaction pooling: {}\n{}",
            dw.stderr(),
            bouncer.log()
        );
        assert_eq!(metrics.value("driftwatch_fleet_degraded", &[]), 0.0);
    }
    let server_sessions = runtime().block_on(TestDatabase::sessions(db.name()));
    assert!(server_sessions <= 2, "{server_sessions} server sessions for six client sessions");
}

/// A firing latency event as a replica's detector would raise it.
fn event(id: &str, fingerprint: &str, detected: u64) -> DriftEvent {
    DriftEvent { fingerprint: fingerprint.into(), ..example_event(id, detected) }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_delivery_claim_has_one_winner_and_passes_on_when_its_lease_lapses() {
    let db = TestDatabase::create();
    runtime().block_on(async {
        let lease = Duration::from_secs(2);
        let a = FleetStore::connect(&db.url, "a".into(), lease).await.expect("a");
        let b = FleetStore::connect(&db.url, "b".into(), lease)
            .await
            .expect("b: migrations are idempotent");
        let key = DeliveryKey {
            event_id: "e1".into(),
            status: driftwatch::store::Notification::Firing,
            sink: "webhook[0]".into(),
            round: 0,
        };
        let keys = std::slice::from_ref(&key);
        assert_eq!(a.claim(keys).await.expect("claim"), vec![Claim::Won]);
        assert_eq!(b.claim(keys).await.expect("claim"), vec![Claim::Held], "a holds the lease");
        assert_eq!(a.claim(keys).await.expect("claim"), vec![Claim::Won], "the owner renews");
        // a dies without delivering: its lease lapses and b takes over.
        tokio::time::sleep(lease + Duration::from_millis(300)).await;
        assert_eq!(b.claim(keys).await.expect("claim"), vec![Claim::Won]);
        b.delivered(keys).await.expect("delivered");
        assert_eq!(
            a.claim(keys).await.expect("claim"),
            vec![Claim::Delivered],
            "never sent twice"
        );
        let repeat = DeliveryKey { round: 1, ..key.clone() };
        assert_eq!(
            a.claim(&[repeat]).await.expect("claim"),
            vec![Claim::Won],
            "a repeat is claimed anew"
        );
    });
}

#[test]
fn replicas_share_one_event_per_fingerprint_until_the_last_one_sees_it_end() {
    let db = TestDatabase::create();
    runtime().block_on(async {
        let lease = Duration::from_secs(30);
        let a = FleetStore::connect(&db.url, "a".into(), lease).await.expect("a");
        let b = FleetStore::connect(&db.url, "b".into(), lease).await.expect("b");
        let first = event("fp1-100", "fp1", 100);
        let second = event("fp1-104", "fp1", 104);
        let opened_a = a.open_event(&first).await.expect("open");
        let opened_b = b.open_event(&second).await.expect("open");
        assert_eq!(opened_a.id, "fp1-100");
        assert_eq!(opened_b.id, "fp1-100", "the second replica joins the first one's event");
        assert_eq!(a.events(10).await.expect("events").len(), 1);

        let mut resolved = opened_a.clone();
        resolved.state = EventState::Resolved;
        resolved.resolved_at = Some(at("2026-11-24T10:00:00.000Z"));
        assert_eq!(
            a.leave_event(&resolved).await.expect("leave"),
            Leave::StillFiring,
            "b still sees it"
        );
        match b.leave_event(&resolved).await.expect("leave") {
            Leave::Resolved(event) => assert_eq!(event.id, "fp1-100"),
            other => panic!("the last replica resolves it: {other:?}"),
        }
        assert_eq!(a.leave_event(&resolved).await.expect("leave"), Leave::AlreadyResolved);
        let stored = a.events(10).await.expect("events");
        assert_eq!(stored[0].state, EventState::Resolved);

        // The same drift again later is a new event.
        let again = event("fp1-900", "fp1", 900);
        assert_eq!(b.open_event(&again).await.expect("open").id, "fp1-900");
    });
}

#[test]
fn a_replica_that_vanished_does_not_hold_an_event_open() {
    let db = TestDatabase::create();
    runtime().block_on(async {
        let lease = Duration::from_secs(2);
        let gone = FleetStore::connect(&db.url, "gone".into(), lease).await.expect("connect");
        let alive = FleetStore::connect(&db.url, "alive".into(), lease).await.expect("connect");
        gone.open_event(&event("fp2-1", "fp2", 1)).await.expect("open");
        assert!(
            alive.sweep(at("2026-11-24T10:00:00.000Z")).await.expect("sweep").is_empty(),
            "the lease holds"
        );
        tokio::time::sleep(lease + Duration::from_millis(500)).await;
        let resolved = alive.sweep(at("2026-11-24T10:00:00.000Z")).await.expect("sweep");
        assert_eq!(resolved.len(), 1, "the lapsed holder's drift resolves");
        assert_eq!(resolved[0].state, EventState::Resolved);
        assert!(
            alive.sweep(at("2026-11-24T10:00:01.000Z")).await.expect("sweep").is_empty(),
            "resolved once"
        );
    });
}

#[test]
fn a_database_migrated_by_a_newer_driftwatch_is_refused() {
    let db = TestDatabase::create();
    runtime().block_on(async {
        FleetStore::connect(&db.url, "a".into(), Duration::from_secs(5))
            .await
            .expect("migrate");
    });
    db.execute("INSERT INTO driftwatch_schema (version) VALUES (99)");
    let error = runtime()
        .block_on(FleetStore::connect(&db.url, "a".into(), Duration::from_secs(5)))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("newer") && error.contains("99"), "{error}");
}

fn readyz(dw: &Driftwatch) -> (u16, String) {
    http_get(&format!("http://{}/readyz", dw.admin)).expect("readyz")
}

#[test]
fn an_unreachable_database_degrades_the_replica_and_says_why_without_the_password() {
    let port = common::free_port();
    let mut dw = Driftwatch::start(&format!(
        "[store]\npostgres_url = \"postgres://dw:secret@127.0.0.1:{port}/fleet\"\nflush_interval = \"1s\"\nfleet_lease = \"3s\"\n"
    ));
    let (status, body) = readyz(&dw);
    assert_eq!(status, 200, "the pod stays in rotation: the application's exports must not fail: {body}");
    assert!(
        body.contains("fleet: degraded") && body.contains("store.postgres_url") && body.contains(&format!("127.0.0.1:{port}/fleet")),
        "{body}"
    );
    assert_eq!(dw.metrics().value("driftwatch_fleet_degraded", &[]), 1.0);
    assert!(dw.terminate().success(), "a degraded replica still stops cleanly: {}", dw.stderr());
    let stderr = dw.stderr();
    assert!(stderr.contains("the fleet's database is away"), "{stderr}");
    assert!(!stderr.contains("secret") && !body.contains("secret"), "the password stays out of messages: {stderr}");
}

#[test]
fn a_replica_starts_without_its_database_detects_alone_and_joins_when_it_appears() {
    let db = TestDatabase::reserve();
    let webhook = Receiver::start(&[]);
    let alerts = format!(
        "[alerts]\ngroup_wait = \"200ms\"\n[[alerts.webhook]]\nurl = \"{}\"\n",
        webhook.url("/hook")
    );
    let dw = Driftwatch::start(&replica_config(&db, "checkout-early", &alerts));
    assert!(readyz(&dw).1.contains("fleet: degraded"), "{}", readyz(&dw).1);
    assert_eq!(dw.metrics().value("driftwatch_fleet_degraded", &[]), 1.0);

    // OTLP is served and drift detected from the first second.
    let deploy = now_nanos() / S * S - 4 * 60 * S;
    send(&dw, &checkout("rev-1", 1.0), deploy - 12 * 60 * S, 12 * 60, 5);
    send(&dw, &checkout("rev-2", 1.6), deploy, 4 * 60, 6);
    eventually(Duration::from_secs(30), "a drift detected alone", || {
        events(&dw).iter().any(|e| e["state"] == "firing")
    });
    eventually(
        Duration::from_secs(20),
        "the alert delivered without arbitration once the lease passed",
        || webhook.requests().iter().any(|r| String::from_utf8_lossy(&r.body).contains("\"firing\"")),
    );

    db.bring_up();
    eventually(Duration::from_secs(20), "joined the fleet", || {
        dw.metrics().value("driftwatch_fleet_degraded", &[]) == 0.0
    });
    assert_eq!(readyz(&dw), (200, "ready\n".to_owned()));
    // Its baselines reach the fleet as its own row, once: a second replica
    // reads them, and the analysed spans are not counted twice.
    let analysed = dw.metrics().value("driftwatch_spans_analyzed_total", &[("service_name", "checkout")]) as u64;
    runtime().block_on(async {
        let other = FleetStore::connect(&db.url, "checkout-late".into(), Duration::from_secs(3))
            .await
            .expect("connect");
        let mut aggregates = Vec::new();
        for _ in 0..50 {
            aggregates = other.aggregates(None, &[]).await.expect("aggregates");
            if !aggregates.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(aggregates.len(), 1, "one aggregate: checkout's");
        assert!(aggregates[0].own.is_none(), "the reader published nothing");
        let aggregate: serde_json::Value = serde_json::from_slice(&aggregates[0].body).expect("JSON");
        assert_eq!(aggregate["replicas"], 1, "{aggregate}");
        let spans: u64 = aggregate["revisions"]
            .as_object()
            .expect("revisions")
            .values()
            .map(|r| r["value"]["spans"].as_u64().expect("spans"))
            .sum();
        assert_eq!(spans, analysed, "every analysed span counted once");
    });
}

#[test]
fn retention_removes_resolved_events_and_stale_snapshots_but_keeps_firing_events() {
    let db = TestDatabase::create();
    runtime().block_on(async {
        let store = FleetStore::connect(&db.url, "a".into(), Duration::from_secs(30))
            .await
            .expect("connect");
        let done = store.open_event(&event("fp3-1", "fp3", 1)).await.expect("open");
        store.open_event(&event("fp4-1", "fp4", 1)).await.expect("open");
        let mut resolved = done.clone();
        resolved.state = EventState::Resolved;
        assert!(matches!(
            store.leave_event(&resolved).await.expect("leave"),
            Leave::Resolved(_)
        ));
        store
            .publish("checkout", &snapshot_body("checkout", "rev-1", 5), &combine)
            .await
            .expect("snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;

        let kept = store
            .maintain(Duration::ZERO, Duration::from_secs(3600), Duration::from_secs(3600), &combine)
            .await
            .expect("maintain")
            .expect("its turn");
        assert_eq!((kept.events, kept.snapshots), (0, 0), "nothing is old enough yet");
        assert!(
            store
                .maintain(Duration::from_secs(3600), Duration::ZERO, Duration::ZERO, &combine)
                .await
                .expect("maintain")
                .is_none(),
            "one turn per period for the whole fleet"
        );
        let expired = store
            .maintain(Duration::ZERO, Duration::ZERO, Duration::ZERO, &combine)
            .await
            .expect("maintain")
            .expect("its turn");
        assert_eq!(
            (expired.events, expired.snapshots, expired.aggregates),
            (1, 1, 1),
            "the resolved event and the stale snapshot go, and the aggregate with it"
        );
        assert!(store.aggregates(None, &[]).await.expect("aggregates").is_empty());
        let left = store.events(10).await.expect("events");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, "fp4-1", "a firing event is never expired");
    });
}

#[test]
fn a_dropped_database_session_is_reopened() {
    let db = TestDatabase::create();
    runtime().block_on(async {
        let store = FleetStore::connect(&db.url, "a".into(), Duration::from_secs(30))
            .await
            .expect("connect");
        let body = snapshot_body("checkout", "rev-1", 5);
        store.publish("checkout", &body, &combine).await.expect("snapshot");
        // The server ends every session of this database (a failover, a
        // restart of PostgreSQL).
        let name = db.url.rsplit('/').next().expect("database name").to_owned();
        let ended = common::postgres::TestDatabase::terminate_sessions(&name).await;
        assert_eq!(ended, 1, "the store's session ended");
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.publish("checkout", &body, &combine).await.expect("a new session");
        assert_eq!(store.events(10).await.expect("events").len(), 0);
    });
}

#[test]
fn a_restarted_replica_holds_only_the_drifts_its_detectors_still_see() {
    let db = TestDatabase::create();
    runtime().block_on(async {
        let lease = Duration::from_secs(2);
        let before = FleetStore::connect(&db.url, "pod-a".into(), lease).await.expect("connect");
        before.open_event(&event("fp5-1", "fp5", 1)).await.expect("open");
        before.open_event(&event("fp6-1", "fp6", 1)).await.expect("open");
        drop(before);
        // The same pod after a restart: its restored detectors still see fp5.
        let after = FleetStore::connect(&db.url, "pod-a".into(), lease).await.expect("connect");
        after.rejoin(&["fp5".to_string()]).await.expect("rejoin");
        let other = FleetStore::connect(&db.url, "pod-b".into(), lease).await.expect("connect");
        let mut resolved = Vec::new();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Either replica's sweep may be the one that resolves.
            resolved.extend(after.sweep(at("2026-11-24T10:00:00.000Z")).await.expect("renew"));
            resolved.extend(other.sweep(at("2026-11-24T10:00:00.000Z")).await.expect("sweep"));
        }
        let ids: Vec<&str> = resolved.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["fp6-1"],
            "the drift nobody sees any more resolves; the held one does not"
        );
        assert!(other.firing_event("fp5").await.expect("lookup").is_some());
    });
}

#[test]
fn leaving_an_event_the_fleet_never_knew_says_so() {
    let db = TestDatabase::create();
    runtime().block_on(async {
        let store = FleetStore::connect(&db.url, "a".into(), Duration::from_secs(5))
            .await
            .expect("connect");
        let mut local = event("fp7-1", "fp7", 1);
        local.state = EventState::Resolved;
        assert_eq!(store.leave_event(&local).await.expect("leave"), Leave::Unknown);
    });
}

#[test]
fn a_replica_on_a_new_volume_resumes_from_what_it_published() {
    let db = TestDatabase::create();
    let deploy = now_nanos() / S * S - 4 * 60 * S;
    {
        let mut first = Driftwatch::start(&replica_config(&db, "checkout-0", ""));
        send(&first, &checkout("rev-1", 1.0), deploy - 12 * 60 * S, 12 * 60, 3);
        eventually(Duration::from_secs(10), "rev-1 analysed", || {
            first
                .metrics()
                .value("driftwatch_spans_analyzed_total", &[("service_name", "checkout")])
                == 14_400.0
        });
        assert!(first.terminate().success(), "{}", first.stderr());
    }
    // Same replica name (a StatefulSet pod), fresh store directory.
    let again = Driftwatch::start(&replica_config(&db, "checkout-0", ""));
    send(&again, &checkout("rev-2", 1.5), deploy, 4 * 60, 4);
    let mut found = Vec::new();
    eventually(
        Duration::from_secs(30),
        "a regression against its own published baseline",
        || {
            found = events(&again);
            !found.is_empty()
        },
    );
    assert_eq!(found[0]["baseline_revision"], "rev-1", "{}", found[0]);
}

#[test]
fn tls_to_postgresql_follows_sslmode_and_verifies_the_server_when_asked() {
    let server = common::postgres::TlsServer::start();
    let url = |host: &str, query: &str| format!("postgres://postgres:s3cret-pw@{host}:{}/postgres?{query}", server.port);
    let ca = server.ca.display().to_string();
    let other = server.other_ca.display().to_string();
    let connect = |url: String| {
        runtime().block_on(async {
            FleetStore::connect(&url, "tls-replica".into(), Duration::from_secs(10))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    // Encrypted and verified: the chain and the name.
    connect(url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"))).expect("verify-full with the right CA");
    // Encrypted without verification, as libpq's require.
    connect(url("localhost", "sslmode=require")).expect("require");
    // The default tries TLS first.
    connect(url("localhost", "")).expect("prefer upgrades to TLS");
    // verify-ca checks the chain but not the name (the certificate names
    // localhost, not 127.0.0.1).
    connect(url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"))).expect("verify-ca by address");
    let refused = [
        (url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")), "certificate"),
        (url("localhost", &format!("sslmode=verify-full&sslrootcert={other}")), "certificate"),
        (url("localhost", &format!("sslmode=require&sslrootcert={other}")), "certificate"),
        (url("localhost", "sslmode=disable"), "pg_hba.conf"),
    ];
    for (url, why) in refused {
        let error = connect(url.clone()).expect_err(&url);
        assert!(error.contains("store.postgres_url") && error.contains(why), "{url}: {error}");
        assert!(!error.contains("s3cret-pw"), "the password stays out of messages: {error}");
    }
}

#[test]
fn any_replicas_verdict_reflects_the_traffic_and_the_drifts_of_the_whole_fleet() {
    let db = TestDatabase::create();
    let a = Driftwatch::start(&replica_config(&db, "checkout-a", ""));
    let b = Driftwatch::start(&replica_config(&db, "checkout-b", ""));
    let verdict = |dw: &Driftwatch, revision: &str| -> serde_json::Value {
        let (_, body) = http_get(&format!("http://{}/api/v1/verdict?service=checkout&revision={revision}", dw.admin)).expect("verdict");
        serde_json::from_str(&body).expect("JSON")
    };
    let now = now_nanos() / S * S;
    // Every request of the service lands on replica a; b served none.
    send(&a, &checkout("rev-1", 1.0), now - 30 * 60 * S, 15 * 60, 1);
    send(&a, &checkout("rev-2", 1.0), now - 15 * 60 * S, 5 * 60, 2);
    eventually(Duration::from_secs(20), "replica a passes rev-2", || verdict(&a, "rev-2")["verdict"] == "pass");
    eventually(Duration::from_secs(20), "replica b passes rev-2 on a's traffic", || {
        verdict(&b, "rev-2")["verdict"] == "pass"
    });
    let from_b = verdict(&b, "rev-2");
    assert!(from_b["operations"][0]["samples"].as_u64().unwrap_or(0) >= 5000, "{from_b:#}");
    assert_eq!(from_b["operations"][0]["baseline_revision"], "rev-1", "{from_b:#}");

    // rev-3 regresses, seen by a alone: b's verdict fails it too.
    send(&a, &checkout("rev-3", 1.6), now - 10 * 60 * S, 5 * 60, 3);
    eventually(Duration::from_secs(30), "replica b fails rev-3", || verdict(&b, "rev-3")["verdict"] == "fail");
    assert_eq!(verdict(&b, "rev-3")["events"][0]["kind"], "latency_regression");
}

#[test]
fn replicas_add_up_in_one_aggregate_that_costs_a_reader_the_same_at_any_fleet_size() {
    use driftwatch::analyze::service::AnalysisSettings;
    use driftwatch::fleet::FleetSync;
    use driftwatch::extract::Sym;
    let layout = AnalysisSettings::from_config(&driftwatch::config::Config::default()).layout;
    let mut cost = Vec::new();
    for replicas in [3u64, 12] {
        let db = TestDatabase::create();
        let lease = Duration::from_secs(30);
        runtime().block_on(async {
            let reader = FleetStore::connect(&db.url, "reader".into(), lease).await.expect("connect");
            reader
                .publish("checkout", &snapshot_body("checkout", "rev-1", 1_000), &combine)
                .await
                .expect("publish");
            // Every replica publishes twice, all at once: its second
            // snapshot replaces its first in the sum.
            let mut tasks = tokio::task::JoinSet::new();
            for i in 1..=replicas {
                let url = db.url.clone();
                tasks.spawn(async move {
                    let store = FleetStore::connect(&url, format!("pod-{i}"), lease).await.expect("connect");
                    for spans in [i, 10 * i] {
                        store
                            .publish("checkout", &snapshot_body("checkout", "rev-1", spans), &combine)
                            .await
                            .expect("publish");
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.expect("publisher");
            }
            let before = reader.io().totals();
            let baselines = FleetSync::baselines(&reader, layout, Some(&["checkout".to_owned()]), &[])
                .await
                .expect("read");
            let after = reader.io().totals();
            assert_eq!(baselines.len(), 1);
            let (service, version, baseline, in_aggregate) = &baselines[0];
            assert_eq!(service, "checkout");
            assert_eq!(*in_aggregate as u64, replicas + 1);
            assert_eq!(baseline.replicas as u64, replicas, "the reader itself is taken out");
            let series = baseline
                .series(&Sym::from("GET /cart"), &Sym::from("rev-1"))
                .expect("the others' series");
            let expected: u64 = (1..=replicas).map(|i| 10 * i).sum();
            assert_eq!(series.total(), expected, "each replica's last snapshot, once; not the reader's");
            assert_eq!(baseline.revisions[0].spans, expected);
            cost.push((after[0] - before[0], after[1] - before[1]));
            // Nothing changed since: a second refresh reads nothing.
            let again = FleetSync::baselines(&reader, layout, Some(&["checkout".to_owned()]), &[("checkout".to_owned(), *version)])
                .await
                .expect("read");
            assert!(again.is_empty());
        });
    }
    let ((rows_small, bytes_small), (rows_large, bytes_large)) = (cost[0], cost[1]);
    assert_eq!((rows_small, rows_large), (1, 1), "one aggregate row whatever the replicas");
    assert!(
        (bytes_large as f64) <= 1.2 * bytes_small as f64,
        "bytes read per refresh: {bytes_small} with 3 replicas, {bytes_large} with 12"
    );
}

#[test]
fn a_replica_opens_no_more_sessions_than_its_pool_allows() {
    let db = TestDatabase::create();
    let name = db.url.rsplit('/').next().expect("database name").to_owned();
    runtime().block_on(async {
        let store = std::sync::Arc::new(
            FleetStore::open_sized(&db.url, "a".into(), Duration::from_secs(30), 2).expect("open"),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16u64 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .publish(&format!("service-{i}"), &snapshot_body(&format!("service-{i}"), "rev-1", 10), &combine)
                    .await
                    .expect("publish");
                store.events(10).await.expect("events");
            });
        }
        let mut most = 0;
        while !tasks.is_empty() {
            most = most.max(TestDatabase::sessions(&name).await);
            if let Some(done) = tasks.try_join_next() {
                done.expect("task");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        most = most.max(TestDatabase::sessions(&name).await);
        assert!((1..=2).contains(&most), "{most} sessions open at once");
        assert_eq!(store.aggregates(None, &[]).await.expect("aggregates").len(), 16, "every publish went through");
    });
}
