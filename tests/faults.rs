//! Faults the embedded store must survive without losing anything or
//! hiding it: a disk that fills up under a running sidecar and later gets
//! space back. The disk is a real 4 MiB tmpfs (mounting it needs root, as
//! CI and the development machines run).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Driftwatch, Receiver, client_call, eventually, http_get, post_spans};

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

/// A metadata-endpoint call from `service`: a critical drift at once.
fn metadata_call(dw: &Driftwatch, service: &str) {
    post_spans(
        dw,
        &[client_call(
            service,
            "r1",
            "http://169.254.169.254/latest/meta-data/",
            2_000,
            1,
        )],
    );
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
    eventually(Duration::from_secs(20), "the degraded store reported", || {
        let (status, body) = readyz(&dw);
        status == 503 && body.contains("store cannot be written")
    });
    let metrics = dw.metrics();
    assert_eq!(metrics.value("driftwatch_store_degraded", &[]), 1.0);
    assert!(metrics.value("driftwatch_store_errors_total", &[]) >= 1.0);
    eventually(Duration::from_secs(20), "every drift in the API", || {
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
