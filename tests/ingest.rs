//! The receivers against real clients and hostile input, through the
//! running binary.

mod common;

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use common::{Driftwatch, eventually, now_nanos, run_python};
use driftwatch::receive::codec::RawCodec;
use driftwatch::tools::simulate::{SyntheticSpan, encode_request};
use prost::Message;

const SERVER: i32 = 2;

fn span(service: &str, name: &str, start: u64, duration: u64) -> SyntheticSpan {
    SyntheticSpan {
        service: service.into(),
        revision: "r1".into(),
        scope: None,
        name: name.into(),
        kind: SERVER,
        trace_id: 1,
        span_id: 2,
        parent_span_id: 0,
        start_unix_nanos: start,
        duration_nanos: duration,
        error: false,
        attributes: vec![],
    }
}

fn post(url: &str, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut request = driftwatch::tls::http_client()
            .build()
            .expect("HTTP client")
            .post(url)
            .header("content-type", content_type)
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.expect("body").to_vec())
    })
}

fn post_protobuf(dw: &Driftwatch, body: Vec<u8>) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    post(&dw.http_url("/v1/traces"), "application/x-protobuf", None, body)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// The OTLP partial-success response, decoded with the reference types.
fn partial_success(body: &[u8]) -> Option<(i64, String)> {
    let response =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(body).expect("OTLP response");
    response.partial_success.map(|p| (p.rejected_spans, p.error_message))
}

#[test]
fn python_sdk_over_grpc_and_http_is_counted_per_service() {
    let dw = Driftwatch::start("");
    run_python(
        "send_spans.py",
        &[
            "--protocol",
            "grpc",
            "--endpoint",
            &format!("http://{}", dw.grpc),
            "--service",
            "py-grpc",
            "--count",
            "37",
        ],
        &[],
    );
    run_python(
        "send_spans.py",
        &[
            "--protocol",
            "http",
            "--endpoint",
            &format!("http://{}", dw.http),
            "--service",
            "py-http",
            "--count",
            "23",
        ],
        &[],
    );
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value(
            "driftwatch_spans_received_total",
            &[("service_name", "py-grpc"), ("transport", "grpc")]
        ),
        37.0
    );
    assert_eq!(
        metrics.value(
            "driftwatch_spans_received_total",
            &[("service_name", "py-http"), ("transport", "http_protobuf")]
        ),
        23.0
    );
    assert!(
        metrics.value(
            "driftwatch_export_requests_total",
            &[("transport", "grpc"), ("outcome", "ok")]
        ) >= 1.0
    );
    eventually(Duration::from_secs(5), "spans analysed", || {
        dw.metrics()
            .value("driftwatch_spans_analyzed_total", &[("service_name", "py-grpc")])
            == 37.0
    });
}

#[test]
fn python_sdk_gzip_over_grpc() {
    let dw = Driftwatch::start("");
    run_python(
        "send_spans.py",
        &[
            "--protocol",
            "grpc",
            "--endpoint",
            &format!("http://{}", dw.grpc),
            "--service",
            "py-gzip",
            "--count",
            "5",
        ],
        &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
    );
    assert_eq!(
        dw.metrics()
            .value("driftwatch_spans_received_total", &[("service_name", "py-gzip")]),
        5.0
    );
}

#[test]
fn rust_opentelemetry_otlp_over_grpc_is_counted() {
    use opentelemetry::trace::{Span, SpanKind, Tracer, TracerProvider};
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};

    let dw = Driftwatch::start("");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = format!("http://{}", dw.grpc);
    runtime.block_on(async move {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .with_timeout(Duration::from_secs(5))
            .build()
            .expect("exporter");
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("rust-svc")
            .with_attribute(opentelemetry::KeyValue::new("vcs.ref.head.revision", "0123abc"))
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("driftwatch-tests");
        for _ in 0..41 {
            let mut span = tracer.span_builder("GET /rust").with_kind(SpanKind::Server).start(&tracer);
            span.set_attribute(opentelemetry::KeyValue::new("http.route", "/rust"));
            span.end();
        }
        tokio::task::spawn_blocking(move || {
            provider.force_flush().expect("flush");
            provider.shutdown().expect("shutdown");
        })
        .await
        .expect("join");
    });
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value(
            "driftwatch_spans_received_total",
            &[("service_name", "rust-svc"), ("transport", "grpc")]
        ),
        41.0
    );
}

#[test]
fn otlp_json_post_is_accepted() {
    let dw = Driftwatch::start("");
    let start = now_nanos() - 1_000_000_000;
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}}]}},
        "scopeSpans":[{{"scope":{{"name":"manual"}},"spans":[
          {{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /json","kind":2,
            "startTimeUnixNano":"{start}","endTimeUnixNano":"{end}"}},
          {{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"bad","kind":2,
            "startTimeUnixNano":"{end}","endTimeUnixNano":"{start}"}}]}}]}}]}}"#,
        end = start + 5_000_000
    );
    // gzip without the header is not JSON: refused, not guessed.
    let (status, _, _) = post(&dw.http_url("/v1/traces"), "application/json", None, gzip(json.as_bytes()));
    assert_eq!(status, 400);
    let (status, headers, body) = post(
        &dw.http_url("/v1/traces"),
        "application/json",
        Some("gzip"),
        gzip(json.as_bytes()),
    );
    let body2 = String::from_utf8(body).expect("utf-8");
    assert_eq!(status, 200, "{body2}");
    assert_eq!(headers["content-type"], "application/json");
    let response: serde_json::Value = serde_json::from_str(&body2).expect("json");
    assert_eq!(response["partialSuccess"]["rejectedSpans"], "1");
    assert!(
        response["partialSuccess"]["errorMessage"]
            .as_str()
            .expect("message")
            .contains("end_before_start")
    );
    let metrics = dw.metrics();
    assert_eq!(
        metrics.value(
            "driftwatch_spans_received_total",
            &[("service_name", "json-svc"), ("transport", "http_json")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("driftwatch_spans_rejected_total", &[("reason", "end_before_start")]),
        1.0
    );
}

#[test]
fn hostile_http_input_gets_specific_errors_and_counters() {
    let dw = Driftwatch::start(
        "[receiver]\nmax_request_bytes = 65536\nmax_decompressed_bytes = 1048576\nmax_spans_per_request = 100\n",
    );
    let now = now_nanos();
    let good = encode_request(&[span("victim", "GET /ok", now - 1_000_000_000, 1_000_000)]);

    // Malformed protobuf: a field header promising more bytes than follow.
    let (status, _, body) = post_protobuf(&dw, vec![0x0a, 0xff, 0xff, 0x03, 0x01]);
    assert_eq!(status, 400);
    let rpc = driftwatch::receive::wire::RpcStatus::decode(&body[..]).expect("error body is a google.rpc.Status");
    assert_eq!(rpc.code, tonic::Code::InvalidArgument as i32);
    assert!(rpc.message.contains("not a valid OTLP"), "{}", rpc.message);
    // Truncated: a valid request cut short.
    let (status, _, _) = post_protobuf(&dw, good[..good.len() - 3].to_vec());
    assert_eq!(status, 400);
    // Invalid JSON.
    let (status, _, body) = post(
        &dw.http_url("/v1/traces"),
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("invalid OTLP/JSON"));
    // Gzip bomb: 64 MiB of zeros in a few KiB.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 65536);
    let (status, _, body) = post(&dw.http_url("/v1/traces"), "application/x-protobuf", Some("gzip"), bomb);
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("max_decompressed_bytes"));
    // Oversize on the wire.
    let (status, _, _) = post_protobuf(&dw, vec![0u8; 200_000]);
    assert_eq!(status, 413);
    // Too many spans.
    let many: Vec<SyntheticSpan> = (0..101)
        .map(|i| span("victim", &format!("op{i}"), now - 1_000_000_000, 1_000))
        .collect();
    let (status, _, body) = post_protobuf(&dw, encode_request(&many));
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("max_spans_per_request"));
    // Wrong content type.
    let (status, _, _) = post(&dw.http_url("/v1/traces"), "text/plain", None, good.clone());
    assert_eq!(status, 415);

    // Span-level problems: partial success, the valid span still counted.
    let mut future = span("victim", "future", now + 10 * 365 * 86_400 * 1_000_000_000, 1_000_000);
    future.span_id = 3;
    let backwards = SyntheticSpan {
        duration_nanos: 0,
        start_unix_nanos: now,
        ..span("victim", "backwards", now, 0)
    };
    let mut request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
        &encode_request(&[span("victim", "fine", now - 2_000_000_000, 1_000_000), future, backwards])[..],
    )
    .expect("decode");
    // Make the third span end before it starts, and give the first an
    // attribute whose value is invalid UTF-8 at the wire level.
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[2].end_time_unix_nano = spans[2].start_time_unix_nano - 1;
    let mut bytes = request.encode_to_vec();
    let bad_attr = invalid_utf8_span(now);
    bytes.extend_from_slice(&bad_attr);
    let (status, _, body) = post_protobuf(&dw, bytes);
    assert_eq!(status, 200);
    let (rejected, message) = partial_success(&body).expect("partial success");
    assert_eq!(rejected, 3, "{message}");
    for reason in ["future_timestamp", "end_before_start", "invalid_utf8"] {
        assert!(message.contains(reason), "{message}");
    }

    // Still serving, and every refusal was counted by reason.
    let (status, _, body) = post_protobuf(&dw, good);
    assert_eq!(status, 200);
    assert_eq!(partial_success(&body), None);
    let metrics = dw.metrics();
    let requests = |outcome| {
        metrics.value(
            "driftwatch_export_requests_total",
            &[("transport", "http_protobuf"), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("malformed"), 2.0);
    assert_eq!(requests("too_large"), 2.0);
    assert_eq!(requests("too_many_spans"), 1.0);
    assert_eq!(requests("partial"), 1.0);
    assert_eq!(requests("ok"), 1.0);
    assert_eq!(
        metrics.value(
            "driftwatch_export_requests_total",
            &[("transport", "http_json"), ("outcome", "malformed")]
        ),
        1.0
    );
    for reason in ["future_timestamp", "end_before_start", "invalid_utf8"] {
        assert_eq!(
            metrics.value("driftwatch_spans_rejected_total", &[("reason", reason)]),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        metrics.value("driftwatch_spans_rejected_total", &[("reason", "too_many_spans")]),
        101.0
    );
    assert_eq!(
        metrics.value("driftwatch_spans_received_total", &[("service_name", "victim")]),
        2.0
    );
}

/// A `ResourceSpans` (field 1 of the request) holding one span whose
/// attribute value bytes are not UTF-8, hand-encoded because no SDK
/// produces it.
fn invalid_utf8_span(now: u64) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u32, payload: &[u8]) {
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
        prost::encoding::encode_varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    let mut any_value = Vec::new();
    field(&mut any_value, 1, &[0x66, 0x6f, 0xff, 0xfe]);
    let mut key_value = Vec::new();
    field(&mut key_value, 1, b"http.route");
    field(&mut key_value, 2, &any_value);
    let mut span = Vec::new();
    field(&mut span, 1, &[7; 16]);
    field(&mut span, 2, &[8; 8]);
    field(&mut span, 5, b"GET /bad");
    prost::encoding::encode_key(7, prost::encoding::WireType::SixtyFourBit, &mut span);
    span.put_u64_le(now - 1_000_000_000);
    prost::encoding::encode_key(8, prost::encoding::WireType::SixtyFourBit, &mut span);
    span.put_u64_le(now - 999_000_000);
    field(&mut span, 9, &key_value);
    let mut scope_spans = Vec::new();
    field(&mut scope_spans, 2, &span);
    let mut resource_spans = Vec::new();
    field(&mut resource_spans, 2, &scope_spans);
    let mut out = Vec::new();
    field(&mut out, 1, &resource_spans);
    out
}

/// Sends raw bytes as a gRPC Export call, so tests can send what no SDK
/// would.
async fn grpc_export(addr: std::net::SocketAddr, body: Vec<u8>, gzip: bool) -> Result<Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = tonic::client::Grpc::new(channel);
    if gzip {
        client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    client.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    client
        .unary(tonic::Request::new(Bytes::from(body)), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

#[test]
fn hostile_grpc_input_gets_specific_status_and_counters() {
    let dw = Driftwatch::start("[receiver]\nmax_decompressed_bytes = 1048576\nmax_request_bytes = 65536\n");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let now = now_nanos();
    runtime.block_on(async {
        let status = grpc_export(dw.grpc, vec![0x0a, 0xff, 0xff, 0x03], false)
            .await
            .expect_err("malformed");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let bomb = vec![0u8; 32 << 20];
        let status = grpc_export(dw.grpc, bomb, true).await.expect_err("bomb");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("max_decompressed_bytes"), "{status:?}");
        // Over max_request_bytes as sent, though within the decompressed
        // limit: refused before it is read whole.
        let status = grpc_export(dw.grpc, vec![0u8; 200_000], false).await.expect_err("too large");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("max_request_bytes"), "{status:?}");
        let mut request = encode_request(&[span("grpc-victim", "ok", now - 1_000_000_000, 1_000)]);
        request.extend_from_slice(&invalid_utf8_span(now));
        let body = grpc_export(dw.grpc, request, false).await.expect("partial success");
        let (rejected, message) = partial_success(&body).expect("partial");
        assert_eq!(rejected, 1);
        assert!(message.contains("invalid_utf8"), "{message}");
    });
    let metrics = dw.metrics();
    let requests = |outcome| {
        metrics.value(
            "driftwatch_export_requests_total",
            &[("transport", "grpc"), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("malformed"), 1.0);
    assert_eq!(requests("too_large"), 2.0);
    assert_eq!(requests("partial"), 1.0);
    assert_eq!(
        metrics.value("driftwatch_spans_received_total", &[("service_name", "grpc-victim")]),
        1.0
    );
}

#[test]
fn stalled_analysis_pushes_back_instead_of_buffering() {
    let dw = Driftwatch::start(
        "[analyze]\npause = true\nmax_queued_spans = 1000\n[receiver]\nmax_spans_per_request = 500\nretry_after = \"2s\"\n",
    );
    let now = now_nanos();
    let batch: Vec<SyntheticSpan> = (0..400)
        .map(|i| span("busy", "GET /", now - 1_000_000_000 + i, 1_000))
        .collect();
    let body = encode_request(&batch);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..10 {
        let (status, headers, _) = post_protobuf(&dw, body.clone());
        if status == 503 {
            retry_after = headers.get("retry-after").map(|v| v.to_str().expect("ascii").to_owned());
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses[2..].iter().all(|s| *s == 503), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("2"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let status = runtime.block_on(grpc_export(dw.grpc, body, false)).expect_err("backpressure");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("retry"), "{}", status.message());
    assert!(!status.details().is_empty(), "carries RetryInfo");

    let metrics = dw.metrics();
    assert_eq!(
        metrics.value("driftwatch_analysis_queue_spans", &[]),
        800.0,
        "queue never exceeds its bound"
    );
    assert_eq!(
        metrics.value("driftwatch_spans_rejected_total", &[("reason", "backpressure")]),
        9.0 * 400.0
    );
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut dw = Driftwatch::start("");
    let now = now_nanos();
    let batch: Vec<SyntheticSpan> = (0..300)
        .map(|i| span("drain", "GET /", now - 1_000_000_000 + i, 1_000))
        .collect();
    for _ in 0..5 {
        let (status, _, _) = post_protobuf(&dw, encode_request(&batch));
        assert_eq!(status, 200);
    }
    let status = dw.terminate();
    assert!(status.success(), "exit status {status:?}; stderr:\n{}", dw.stderr());
    let stderr = dw.stderr();
    assert!(stderr.contains("analysis drained"), "{stderr}");
    assert!(post_result(&dw.http_url("/v1/traces")).is_err(), "no longer accepting");
}

fn post_result(url: &str) -> Result<u16, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        driftwatch::tls::http_client()
            .build()
            .expect("HTTP client")
            .post(url)
            .body(vec![])
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    })
}

#[test]
fn json_logs_on_request() {
    let mut dw = Driftwatch::start_with_env("", &[("DRIFTWATCH_LOG_FORMAT", "json")]);
    dw.terminate();
    let stderr = dw.stderr();
    let first = stderr.lines().next().expect("a log line");
    let line: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(line["level"], "INFO");
}

#[test]
fn logs_are_plain_text_when_stderr_is_not_a_terminal() {
    let dw = Driftwatch::start("");
    let log = dw.stderr();
    assert!(log.contains("driftwatch listening"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in a log file: {log:?}");
}

#[test]
fn commits_reads_a_single_revision_and_stops_quietly_when_the_reader_does() {
    let mut repo = common::git::GitRepo::new();
    for i in 0..50 {
        repo.commit(&[("f.txt", &format!("{i}\n"))], &format!("change {i}"), common::git::HUMAN);
    }
    let repo_path = repo.path().display().to_string();
    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["commits", "--repo", &repo_path, "--range", "HEAD~3", "--json"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(listing["commits"].as_array().map(Vec::len), Some(47), "everything reachable from HEAD~3");
    // `| head -1`: the reader is gone before the first line is written.
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("(sleep 0.3; exec {} commits --repo {repo_path:?}) | true", common::driftwatch_bin()))
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[receiver]\ngrpc_lisen = \"127.0.0.1:1\"\n").expect("write");
    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`receiver.grpc_lisen`") && !stderr.contains("grpc_lisen.grpc_lisen"), "{stderr}");

    // Files it names must exist, and the external URL must be one.
    std::fs::write(
        &path,
        "[[git.repos]]
service = \"checkout\"
path = \"/nonexistent/shop\"
[receiver]
bearer_token_file = \"/nonexistent/token\"
",
    )
    .expect("write");
    let check = |extra: &[&str]| {
        std::process::Command::new(common::driftwatch_bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .args(extra)
            .output()
            .expect("run")
    };
    let output = check(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("git.repos[0].path /nonexistent/shop does not exist"), "{stderr}");
    assert!(stderr.contains("receiver.bearer_token_file /nonexistent/token does not exist"), "{stderr}");
    assert!(check(&["--skip-file-checks"]).status.success(), "a configuration for another machine");
    std::fs::write(&path, "[alerts]\nexternal_url = \"driftwatch dashboard\"\n").expect("write");
    let output = check(&[]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("alerts.external_url"), "{output:?}");

    // A log filter that does not parse is named, not ignored; usage errors exit 64.
    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["check-config"])
        .env("DRIFTWATCH_LOG", "driftwatch=[")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DRIFTWATCH_LOG"), "{output:?}");
    let output = std::process::Command::new(common::driftwatch_bin()).args(["check-config", "--bogus"]).output().expect("run");
    assert_eq!(output.status.code(), Some(64));

    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["check-config"])
        .env("DRIFTWATCH_ADMIN__LISTEN", "not-an-address")
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("admin.listen"));

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/driftwatch.toml");
    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["check-config", "--config"])
        .arg(&example)
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn busy_port_is_a_clear_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let output = std::process::Command::new(common::driftwatch_bin())
        .args(["run"])
        .env("DRIFTWATCH_RECEIVER__GRPC_LISTEN", format!("127.0.0.1:{port}"))
        .env("DRIFTWATCH_RECEIVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("DRIFTWATCH_ADMIN__LISTEN", "127.0.0.1:0")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("receiver.grpc_listen") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
}

/// GET `url` with an optional bearer token: the status and the body.
fn get_with(url: &str, token: Option<&str>) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut request = driftwatch::tls::http_client().build().expect("client").get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    })
}

#[test]
fn bearer_tokens_guard_the_receivers_the_api_and_the_metrics() {
    let secrets = tempfile::tempdir().expect("dir");
    let file = |name: &str, token: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, format!("{token}\n")).expect("write token");
        path.display().to_string()
    };
    let dw = Driftwatch::start(&format!(
        "[receiver]\nbearer_token_file = {:?}\n[admin]\napi_token_file = {:?}\nmetrics_token_file = {:?}\n",
        file("otlp", "otlp-token"),
        file("api", "api-token"),
        file("metrics", "metrics-token"),
    ));
    // The Python SDK, with and without the header its users configure.
    for (service, headers, protocol, endpoint) in [
        ("anon-grpc", None, "grpc", format!("http://{}", dw.grpc)),
        ("anon-http", None, "http", format!("http://{}", dw.http)),
        (
            "auth-grpc",
            Some("authorization=Bearer otlp-token"),
            "grpc",
            format!("http://{}", dw.grpc),
        ),
        (
            "auth-http",
            Some("authorization=Bearer otlp-token"),
            "http",
            format!("http://{}", dw.http),
        ),
    ] {
        let env: Vec<(&str, &str)> = headers.map(|h| ("OTEL_EXPORTER_OTLP_HEADERS", h)).into_iter().collect();
        let output = std::process::Command::new(common::python())
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_spans.py"))
            .args([
                "--protocol",
                protocol,
                "--endpoint",
                &endpoint,
                "--service",
                service,
                "--count",
                "3",
            ])
            .envs(env)
            .output()
            .expect("run the SDK");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if headers.is_none() {
            assert!(
                stderr.contains("401") || stderr.contains("UNAUTHENTICATED") || stderr.contains("Unauthorized"),
                "{service}: {stderr}"
            );
        }
    }
    let admin = |path: &str| format!("http://{}{path}", dw.admin);
    let status = |path: &str, token| get_with(&admin(path), token).0;
    assert_eq!(status("/healthz", None), 200, "probes stay open");
    assert_eq!(status("/readyz", None), 200, "probes stay open");
    assert_eq!(status("/api/v1/events", None), 401);
    assert_eq!(status("/ui", Some("metrics-token")), 401);
    assert_eq!(status("/api/v1/events", Some("api-token")), 200);
    assert_eq!(status("/metrics", None), 401);
    let (code, text) = get_with(&admin("/metrics"), Some("metrics-token"));
    assert_eq!(code, 200);
    let metrics = common::Metrics(text);
    for service in ["auth-grpc", "auth-http"] {
        assert_eq!(
            metrics.value("driftwatch_spans_received_total", &[("service_name", service)]),
            3.0,
            "{service}"
        );
    }
    for service in ["anon-grpc", "anon-http"] {
        assert_eq!(
            metrics.value("driftwatch_spans_received_total", &[("service_name", service)]),
            0.0,
            "{service}"
        );
    }
}

#[test]
fn above_the_memory_limit_new_data_is_refused_with_a_retryable_status() {
    // Any process is above 1 MiB: every export is refused, and says why.
    let dw = Driftwatch::start("[receiver]\nmemory_limit_mib = 1\n");
    let now = now_nanos();
    let request = encode_request(&[span("heavy", "GET /", now - 1_000_000_000, 1_000_000)]);
    let (status, headers, _) = post_protobuf(&dw, request.clone());
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let status = runtime.block_on(grpc_export(dw.grpc, request, false)).expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("memory_limit_mib"), "{status:?}");
    let metrics = dw.metrics();
    for transport in ["grpc", "http_protobuf"] {
        assert_eq!(
            metrics.value(
                "driftwatch_export_requests_total",
                &[("transport", transport), ("outcome", "memory_limit")]
            ),
            1.0,
            "{transport}"
        );
    }
    assert_eq!(metrics.value("driftwatch_spans_received_total", &[("service_name", "heavy")]), 0.0);
}

/// `curl` over TLS trusting only `ca`: the HTTP status, or None when the
/// connection or the handshake failed.
fn curl_status(url: &str, ca: &std::path::Path, body: Option<&[u8]>) -> Option<u16> {
    let mut command = std::process::Command::new("curl");
    command.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert"]).arg(ca);
    if let Some(body) = body {
        let file = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(file.path(), body).expect("write body");
        command
            .args(["-H", "content-type: application/x-protobuf", "--data-binary"])
            .arg(format!("@{}", file.path().display()));
        let output = command.arg(url).output().expect("run curl");
        return output.status.success().then(|| String::from_utf8_lossy(&output.stdout).parse().ok()).flatten();
    }
    let output = command.arg(url).output().expect("run curl");
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).parse().ok()).flatten()
}

/// The environment that makes the SDK trust `ca` alone. requests prefers a
/// CA bundle named in the environment over the exporter's certificate, so
/// those are cleared.
fn sdk_trusting(ca: &str) -> [(&str, &str); 3] {
    [("OTEL_EXPORTER_OTLP_CERTIFICATE", ca), ("REQUESTS_CA_BUNDLE", ""), ("CURL_CA_BUNDLE", "")]
}

#[test]
fn tls_listeners_serve_real_sdks_and_pick_up_a_renewed_certificate() {
    let pki = tempfile::tempdir().expect("dir");
    let (cert, key) = (pki.path().join("tls.crt"), pki.path().join("tls.key"));
    let first_ca = common::tls::issue_certificate(pki.path(), "first", &cert, &key);
    let tls = format!("cert_file = {cert:?}\nkey_file = {key:?}\nreload_interval = \"200ms\"\n");
    let dw = Driftwatch::start(&format!("[receiver.tls]\n{tls}[admin.tls]\n{tls}"));

    // The Python SDK over both transports, verifying the server.
    let ca_env = first_ca.display().to_string();
    for (protocol, service, addr) in [("grpc", "tls-grpc", dw.grpc), ("http", "tls-http", dw.http)] {
        run_python(
            "send_spans.py",
            &["--protocol", protocol, "--endpoint", &format!("https://localhost:{}", addr.port()), "--service", service, "--count", "4"],
            &sdk_trusting(&ca_env),
        );
    }
    let admin = |path: &str| format!("https://localhost:{}{path}", dw.admin.port());
    eventually(Duration::from_secs(10), "spans over TLS counted", || {
        let (status, body) = {
            let output = std::process::Command::new("curl")
                .args(["-s", "--max-time", "5", "--cacert"])
                .arg(&first_ca)
                .arg(admin("/metrics"))
                .output()
                .expect("curl");
            (output.status.success(), String::from_utf8_lossy(&output.stdout).to_string())
        };
        let metrics = common::Metrics(body);
        status
            && metrics.value("driftwatch_spans_received_total", &[("service_name", "tls-grpc")]) == 4.0
            && metrics.value("driftwatch_spans_received_total", &[("service_name", "tls-http")]) == 4.0
    });
    // Plain text is refused on every listener.
    assert!(common::http_get(&format!("http://{}/readyz", dw.admin)).map_or(true, |(status, _)| status != 200));
    assert_eq!(curl_status(&admin("/readyz"), &first_ca, None), Some(200));

    // A renewed certificate from another CA is served without a restart.
    let second_ca = common::tls::issue_certificate(pki.path(), "second", &cert, &key);
    eventually(Duration::from_secs(10), "the renewed certificate is served", || {
        curl_status(&admin("/readyz"), &second_ca, None) == Some(200)
    });
    assert_eq!(curl_status(&admin("/readyz"), &first_ca, None), None, "the old certificate is gone");
    let body = encode_request(&[span("tls-renewed", "GET /", now_nanos() - 1_000_000, 1_000_000)]);
    let receiver = format!("https://localhost:{}/v1/traces", dw.http.port());
    assert_eq!(curl_status(&receiver, &second_ca, Some(&body)), Some(200));
    run_python(
        "send_spans.py",
        &["--protocol", "grpc", "--endpoint", &format!("https://localhost:{}", dw.grpc.port()), "--service", "tls-renewed", "--count", "2"],
        &sdk_trusting(&second_ca.display().to_string()),
    );

    // A broken renewal is reported and the certificate in use stays.
    std::fs::write(&key, "not a key").expect("break the key");
    eventually(Duration::from_secs(10), "the broken renewal is logged", || {
        dw.stderr().contains("TLS certificate not reloaded")
    });
    assert_eq!(curl_status(&admin("/readyz"), &second_ca, None), Some(200));
}

#[test]
fn an_unreadable_certificate_stops_startup_with_the_path() {
    let (code, stderr) =
        common::run_until_exit("[receiver.tls]\ncert_file = \"/nonexistent/tls.crt\"\nkey_file = \"/nonexistent/tls.key\"\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("receiver.tls") && stderr.contains("/nonexistent/tls.crt"), "{stderr}");
}
