//! Faults driftwatch must survive without losing anything or hiding it: a
//! disk that fills up under a running sidecar and later gets space back (a
//! real 4 MiB tmpfs; mounting it needs root, as CI and the development
//! machines run), kill -9 at random moments of alert delivery to a sink that
//! flaps and goes away, slowloris and idle floods, and floods of huge names.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Driftwatch, Receiver, eventually, http_get, metadata_call, post_spans};

/// A small tmpfs, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs at {} needs root", dir.path().display());
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full; returns it.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0x5au8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn firing_alerts(receiver: &Receiver) -> std::collections::HashSet<String> {
    receiver
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| r.json()["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["state"] == "firing")
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_full_disk_degrades_the_store_loudly_and_loses_nothing_once_space_returns() {
    let disk = SmallDisk::mount("4m");
    let receiver = Receiver::start(&[]);
    let config = format!(
        "[store]\npath = {:?}\n[alerts]\ngroup_wait = \"100ms\"\n[[alerts.webhook]]\nurl = \"{}\"\n",
        disk.path().join("store").display().to_string(),
        receiver.url("/hook")
    );
    let mut dw = Driftwatch::start(&config);
    let filler = disk.fill();

    let services: Vec<String> = (0..20).map(|i| format!("svc-{i}")).collect();
    for service in &services {
        metadata_call(&dw, service);
    }
    let readyz = |dw: &Driftwatch| http_get(&format!("http://{}/readyz", dw.admin)).expect("readyz");
    eventually(Duration::from_secs(40), "the degraded store reported", || {
        let (status, body) = readyz(&dw);
        status == 503 && body.contains("store cannot be written")
    });
    let metrics = dw.metrics();
    assert_eq!(metrics.value("driftwatch_store_degraded", &[]), 1.0);
    assert!(metrics.value("driftwatch_store_errors_total", &[]) >= 1.0);
    eventually(Duration::from_secs(40), "every drift in the API", || {
        http_get(&format!("http://{}/api/v1/events", dw.admin))
            .is_ok_and(|(_, body)| services.iter().all(|s| body.contains(&format!("\"service\":\"{s}\""))))
    });

    // Space returns.
    std::fs::remove_file(&filler).expect("free the disk");
    eventually(Duration::from_secs(30), "every alert delivered", || {
        firing_alerts(&receiver).len() == services.len()
    });
    eventually(Duration::from_secs(10), "ready again", || readyz(&dw).0 == 200);
    let metrics = dw.metrics();
    assert_eq!(metrics.value("driftwatch_store_degraded", &[]), 0.0);
    assert_eq!(metrics.value("driftwatch_store_pending_writes", &[]), 0.0);
    assert_eq!(metrics.value("driftwatch_store_dropped_total", &[]), 0.0);
    assert!(dw.stderr().contains("the store recovered"), "{}", dw.stderr());

    // What the full disk held back is on disk now: a restart finds it.
    dw.terminate();
    let restarted = Driftwatch::start(&config);
    let (_, body) = http_get(&format!("http://{}/api/v1/events", restarted.admin)).expect("events");
    let events: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(events["events"].as_array().map(Vec::len), Some(services.len()), "{events:#}");
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn a_slowloris_is_cut_off_and_idle_floods_cannot_starve_ingestion() {
    use std::io::{Read, Write};
    let dw = Driftwatch::start(
        "[receiver]\nheader_read_timeout = \"1s\"\nmax_connections = 32\n[admin]\nmax_connections = 8\nheader_read_timeout = \"1s\"\n",
    );
    // Slowloris: headers one byte at a time.
    let mut slow = std::net::TcpStream::connect(dw.http).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = std::time::Instant::now();
    for byte in b"POST /v1/traces HTTP/1.1\r\nHost: driftwatch\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".iter() {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut buf = [0u8; 512];
    let served = slow.read(&mut buf).is_ok_and(|n| n > 0 && buf.starts_with(b"HTTP/1.1 2"));
    assert!(!served, "the slow client was served");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "cut off late: {:?}",
        started.elapsed()
    );

    // A connection that sends nothing is closed.
    let mut silent = std::net::TcpStream::connect(dw.http).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = std::time::Instant::now();
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(5), "idle for {:?}", started.elapsed());

    // Hundreds of idle connections on the admin and gRPC listeners; past
    // their caps and the kernel's accept queue, connecting times out.
    let idle: Vec<std::net::TcpStream> = (0..300)
        .flat_map(|_| [dw.admin, dw.grpc])
        .filter_map(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok())
        .collect();
    assert!(idle.len() >= 150, "connections made: {}", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let fds = open_fds(dw.child.id());
    assert!(fds < 150, "{fds} descriptors held for {} idle connections", idle.len());
    // Ingestion is served at once.
    let started = std::time::Instant::now();
    metadata_call(&dw, "still-served");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ingestion waited {:?}",
        started.elapsed()
    );
    drop(idle);
    eventually(Duration::from_secs(30), "the admin listener drained its idle clients", || {
        http_get(&format!("http://{}/metrics", dw.admin)).is_ok_and(|(_, body)| {
            body.lines()
                .any(|l| l.starts_with("driftwatch_spans_received_total{") && l.contains("service_name=\"still-served\""))
        })
    });
}

/// Resident memory of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn distinct_huge_names_cost_bounded_memory() {
    use driftwatch::tools::simulate::{AttrValue, SyntheticSpan};
    let dw = Driftwatch::start("");
    let now = common::now_nanos();
    // 100 requests, each a span with its own 1 MiB route and name.
    for i in 0..100u64 {
        let huge = format!("/{i}/{}", "r".repeat(1 << 20));
        let span = SyntheticSpan {
            service: "flood".into(),
            revision: "r1".into(),
            scope: None,
            name: huge.clone(),
            kind: 2,
            trace_id: u128::from(i) + 1,
            span_id: i + 1,
            parent_span_id: 0,
            start_unix_nanos: now - 60_000_000_000 + i * 1_000_000,
            duration_nanos: 1_000_000,
            error: false,
            attributes: vec![("http.route".into(), AttrValue::Str(huge))],
        };
        post_spans(&dw, &[span]);
    }
    eventually(Duration::from_secs(20), "all analysed", || {
        dw.metrics().value("driftwatch_spans_analyzed_total", &[("service_name", "flood")]) == 100.0
    });
    let rss = rss_bytes(dw.child.id());
    // 100 MiB of names were sent; what is kept of them is cut to 256 bytes.
    assert!(rss < 64 << 20, "RSS {} MiB after 100 MiB of distinct names", rss >> 20);
}

/// Delivered (200) webhook notifications of `service` with `status`.
fn delivered(requests: &[common::Received], service: &str, status: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.status == 200)
        .filter(|r| {
            let body = r.json();
            body["status"] == status && body["event"]["service"] == service
        })
        .count()
}

#[test]
fn kill_9_at_random_moments_of_delivery_to_a_flapping_sink_loses_no_alert_or_resolution() {
    use common::{checkout_traffic, now_nanos, send_traffic};
    use driftwatch::tools::simulate::Rng;
    const S: u64 = 1_000_000_000;
    let store = tempfile::tempdir().expect("store");
    // The sink fails about half of the time, then is down altogether for a
    // while, then flaps again.
    let flapping = [500, 200, 503, 500, 200, 429, 500, 200, 200, 503, 500, 200, 500, 200];
    let first = Receiver::start(&flapping);
    let port = first.addr.port();
    let config = format!(
        "[store]\npath = {:?}\nflush_interval = \"1h\"\n[alerts]\ngroup_wait = \"100ms\"\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n\
         [[alerts.webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\n",
        store.path().display().to_string()
    );
    let services = ["svc-a", "svc-b", "svc-c", "svc-d"];
    // Other moments on every run; the seed is printed to replay one.
    let seed = now_nanos() % 1_000_000;
    eprintln!("kill moments seeded with {seed}");
    let mut rng = Rng::new(seed);
    let mut kill_delays = Vec::new();
    let mut history = Vec::new();
    let mut first = Some(first);
    for (i, service) in services.iter().enumerate() {
        if i == 2
            && let Some(receiver) = first.take()
        {
            // The sink goes away: deliveries fail to connect.
            history.extend(receiver.requests());
            drop(receiver);
        }
        let mut dw = Driftwatch::start(&config);
        let now = now_nanos() / S * S;
        if i > 0 {
            // The fix of the previous service's drift rolls out.
            let previous = services[i - 1];
            let fix = driftwatch::tools::simulate::EndpointTraffic { service: previous, ..checkout_traffic("rev-3", 1.0) };
            send_traffic(&dw, &fix, now - 3 * 60 * S, 3 * 60, &mut rng);
        }
        let base = driftwatch::tools::simulate::EndpointTraffic { service, ..checkout_traffic("rev-1", 1.0) };
        let slow = driftwatch::tools::simulate::EndpointTraffic { service, ..checkout_traffic("rev-2", 1.6) };
        send_traffic(&dw, &base, now - 16 * 60 * S, 10 * 60, &mut rng);
        send_traffic(&dw, &slow, now - 6 * 60 * S, 3 * 60, &mut rng);
        let events_url = format!("http://{}/api/v1/events", dw.admin);
        eventually(Duration::from_secs(30), "the drift detected (and the previous one resolved)", || {
            let Ok((200, body)) = http_get(&events_url) else { return false };
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            let state = |s: &str| {
                json["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["service"] == s)
                    .map(|e| e["state"].as_str().unwrap_or("").to_string())
            };
            state(service).is_some() && (i == 0 || state(services[i - 1]).as_deref() == Some("resolved"))
        });
        // Somewhere in the delivery: before the group wait ends, during
        // retries, or after.
        let delay = rng.next_u64() % 1500;
        kill_delays.push(delay);
        std::thread::sleep(Duration::from_millis(delay));
        dw.child.kill().expect("kill -9");
        dw.child.wait().expect("wait");
    }
    let last = Receiver::start_on(port, &[503, 200, 500]);
    let _dw = Driftwatch::start(&config);
    let all = || history.iter().cloned().chain(last.requests()).collect::<Vec<_>>();
    eventually(Duration::from_secs(60), "every alert and every resolution delivered", || {
        let requests = all();
        services.iter().all(|s| delivered(&requests, s, "firing") >= 1)
            && services[..3].iter().all(|s| delivered(&requests, s, "resolved") >= 1)
    });
    assert_eq!(delivered(&all(), "svc-d", "resolved"), 0, "the last drift still serves");
    eprintln!("killed after {kill_delays:?} ms");
}

#[test]
fn hanging_grpc_streams_are_capped_per_connection_and_cut_at_the_request_timeout() {
    let dw = Driftwatch::start("[receiver]\nmax_concurrent_streams = 16\nrequest_timeout = \"2s\"\n");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = dw.grpc;
    let (opened, limits, started, pending) = runtime.block_on(async move {
        let mut limits = Vec::new();
        let mut pending = Vec::new();
        let mut opened = Vec::new();
        let mut senders = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..20 {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
            tokio::spawn(connection);
            clients.push(client);
        }
        // The server's SETTINGS, with its stream limit, arrive meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for mut client in clients {
            let mut streams = 0;
            // The server announces its limit; the client holds back streams
            // beyond it until earlier ones end.
            limits.push(client.current_max_send_streams());
            for _ in 0..40 {
                match tokio::time::timeout(Duration::from_millis(300), client.clone().ready()).await {
                    Ok(Ok(ready)) => client = ready,
                    _ => break,
                }
                let request = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .expect("request");
                let Ok((response, mut body)) = client.send_request(request, false) else { break };
                // A frame header promising 1 MiB, and then nothing.
                let _ = body.send_data(bytes::Bytes::from_static(&[0, 0, 16, 0, 0]), false);
                senders.push(body);
                pending.push(response);
                streams += 1;
            }
            opened.push(streams);
        }
        (opened, limits, std::time::Instant::now(), (pending, senders))
    });
    assert!(limits.iter().all(|&n| n == 16), "announced stream limits: {limits:?}");
    assert_eq!(opened.iter().sum::<usize>(), 800, "streams opened: {opened:?}");
    // Ingestion is served while they hang.
    metadata_call(&dw, "beside-hanging-streams");
    // Every hanging stream gets an answer once the request timeout passes:
    // 40 streams through 16 slots take three rounds of two seconds.
    let (responses, senders) = pending;
    let answered = runtime.block_on(async move {
        let mut answered = 0;
        for response in responses {
            if tokio::time::timeout(Duration::from_secs(20), response).await.is_ok() {
                answered += 1;
            }
        }
        drop(senders);
        answered
    });
    assert_eq!(answered, 800, "hanging streams left unanswered");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "three rounds of the 2 s timeout took {took:?}"
    );
    let rss = rss_bytes(dw.child.id());
    assert!(rss < 128 << 20, "RSS {} MiB with hundreds of hanging streams", rss >> 20);
}
