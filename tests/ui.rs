//! The incident page in a real browser: headless Chromium (Debian's
//! `chromium`) renders it, the SVG distribution is in the DOM, hostile
//! strings arrive escaped, and a screenshot is written.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Driftwatch, eventually, http_get, now_nanos, post_spans};
use driftwatch::tools::simulate::{EndpointTraffic, Rng};

const S: u64 = 1_000_000_000;
const HOSTILE: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

fn chromium(args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().expect("profile");
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .args(["--no-first-run", "--disable-sync", "--no-proxy-server"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("chromium is installed (scripts/test installs Debian's chromium)")
}

#[test]
fn the_incident_page_renders_in_chromium_with_its_picture() {
    let dw = Driftwatch::start("");
    let mut rng = Rng::new(5);
    let deploy = now_nanos() / S * S - 3 * 60 * S;
    for (revision, start, seconds, slowdown) in [("good", deploy - 10 * 60 * S, 600, 1.0), ("slow", deploy, 180, 1.6)] {
        let traffic = EndpointTraffic {
            service: "checkout",
            revision,
            operation: HOSTILE,
            route: "/checkout",
            code_function: "charge",
            code_filepath: "pay.py",
            requests_per_second: 20,
            median_ms: 30.0,
            slowdown,
            peers: &[],
        };
        for batch in traffic.generate(start, seconds, &mut rng).chunks(60) {
            post_spans(&dw, &batch.concat());
        }
    }
    let api = format!("http://{}/api/v1/events", dw.admin);
    let mut id = String::new();
    eventually(Duration::from_secs(30), "an event", || {
        let Ok((200, body)) = http_get(&api) else { return false };
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        id = value["events"][0]["id"].as_str().unwrap_or_default().to_owned();
        !id.is_empty()
    });
    let url = format!("http://{}/ui/events/{id}", dw.admin);

    let (status, html) = http_get(&url).expect("page");
    assert_eq!(status, 200);
    assert!(!html.contains("<script>"), "hostile span names are escaped");
    assert!(html.contains("&lt;script&gt;"));

    let dom = chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<svg") && dom.contains("id=\"latency-distribution\""),
        "the picture is in the rendered DOM"
    );
    assert!(dom.contains("class=\"current\"") && dom.contains("class=\"baseline\""));
    assert!(!dom.contains("<title>pwned</title>"), "no script ran");

    let shot = tempfile::tempdir().expect("dir");
    let png = shot.path().join("incident.png");
    let output = chromium(&["--window-size=1100,1300", &format!("--screenshot={}", png.display()), &url]);
    let bytes = std::fs::read(&png).unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&output.stderr)));
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "a real screenshot ({} bytes)",
        bytes.len()
    );
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::copy(&png, out_dir.join("incident-page.png")).expect("keep the screenshot");

    let (status, list) = http_get(&format!("http://{}/ui", dw.admin)).expect("list");
    assert_eq!(status, 200);
    assert!(list.contains(&format!("/ui/events/{id}")));
    let (status, _) = http_get(&format!("http://{}/ui/events/nope", dw.admin)).expect("missing");
    assert_eq!(status, 404);
}
