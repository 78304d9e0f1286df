//! Synthetic OTLP traffic: encodes spans as real OTLP export requests, for
//! the demo, the scenario corpus and the load generator.

use prost::Message;

use crate::receive::wire::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, Status,
    any_value::Value,
};

/// One span to encode.
#[derive(Debug, Clone)]
pub struct SyntheticSpan {
    pub service: String,
    pub revision: String,
    /// The instrumentation scope (library) that produced the span.
    pub scope: Option<String>,
    pub name: String,
    pub kind: i32,
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: u64,
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    pub error: bool,
    pub attributes: Vec<(String, AttrValue)>,
}

#[derive(Debug, Clone)]
pub enum AttrValue {
    Str(String),
    Int(i64),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_owned())
    }
}

impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}

fn key_value(key: &str, value: &AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(s) => Value::StringValue(s.clone().into_bytes().into()),
        AttrValue::Int(i) => Value::IntValue(*i),
    };
    KeyValue {
        key: key.as_bytes().to_vec().into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn span(s: &SyntheticSpan) -> Span {
    Span {
        trace_id: s.trace_id.to_be_bytes().to_vec().into(),
        span_id: s.span_id.to_be_bytes().to_vec().into(),
        parent_span_id: if s.parent_span_id == 0 {
            Default::default()
        } else {
            s.parent_span_id.to_be_bytes().to_vec().into()
        },
        name: s.name.clone().into_bytes().into(),
        kind: s.kind,
        start_time_unix_nano: s.start_unix_nanos,
        end_time_unix_nano: s.start_unix_nanos + s.duration_nanos,
        attributes: s.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
        events: Vec::new(),
        status: Some(Status {
            code: if s.error { 2 } else { 0 },
        }),
    }
}

/// Encodes spans as one `ExportTraceServiceRequest`, one resource per
/// consecutive run of (service, revision) and one scope per consecutive run
/// of scope within it, as an SDK batch would.
pub fn encode_request(spans: &[SyntheticSpan]) -> Vec<u8> {
    let mut request = ExportTraceServiceRequest::default();
    for run in spans.chunk_by(|a, b| a.service == b.service && a.revision == b.revision) {
        let resource = Resource {
            attributes: vec![
                key_value("service.name", &AttrValue::Str(run[0].service.clone())),
                key_value("vcs.ref.head.revision", &AttrValue::Str(run[0].revision.clone())),
            ],
        };
        let scope_spans = run
            .chunk_by(|a, b| a.scope == b.scope)
            .map(|group| ScopeSpans {
                scope: group[0].scope.as_ref().map(|name| InstrumentationScope {
                    name: name.clone().into_bytes().into(),
                }),
                spans: group.iter().map(span).collect(),
            })
            .collect();
        request.resource_spans.push(ResourceSpans {
            resource: Some(resource),
            scope_spans,
        });
    }
    request.encode_to_vec()
}

pub use crate::rng::Rng;

/// One service's traffic for a stretch of event time: entry spans of one
/// operation (with `code.*` and `http.route`), each making an HTTP POST
/// client call to every peer, from the scopes of the Python SDK's Flask
/// and `requests` instrumentations.
#[derive(Debug, Clone)]
pub struct EndpointTraffic<'a> {
    pub service: &'a str,
    pub revision: &'a str,
    pub operation: &'a str,
    pub route: &'a str,
    pub code_function: &'a str,
    pub code_filepath: &'a str,
    pub requests_per_second: u64,
    pub median_ms: f64,
    /// Multiplies every request's latency.
    pub slowdown: f64,
    /// Hosts called over HTTPS from each request.
    pub peers: &'a [&'a str],
}

impl EndpointTraffic<'_> {
    /// Spans for `seconds` from `start`, one batch per second.
    pub fn generate(&self, start_unix_nanos: u64, seconds: u64, rng: &mut Rng) -> Vec<Vec<SyntheticSpan>> {
        let rate = self.requests_per_second.max(1);
        (0..seconds)
            .map(|second| {
                let mut batch = Vec::with_capacity((rate as usize) * (1 + self.peers.len()));
                for i in 0..rate {
                    let begin = start_unix_nanos + second * 1_000_000_000 + i * (1_000_000_000 / rate);
                    let duration = (rng.log_normal(self.median_ms, 0.3) * self.slowdown * 1e6) as u64;
                    let span_id = rng.next_u64() | 1;
                    let trace_id = u128::from(rng.next_u64()) << 64 | 1;
                    for peer in self.peers {
                        batch.push(SyntheticSpan {
                            service: self.service.into(),
                            revision: self.revision.into(),
                            scope: Some("opentelemetry.instrumentation.requests".into()),
                            name: "POST".into(),
                            kind: crate::receive::wire::span_kind::CLIENT,
                            trace_id,
                            span_id: rng.next_u64() | 1,
                            parent_span_id: span_id,
                            start_unix_nanos: begin + 1_000_000,
                            duration_nanos: duration / 4,
                            error: false,
                            attributes: vec![
                                ("http.request.method".into(), "POST".into()),
                                (
                                    "http.url".into(),
                                    AttrValue::Str(format!("https://{peer}/v1/{}", rng.next_u64() % 1000)),
                                ),
                            ],
                        });
                    }
                    batch.push(SyntheticSpan {
                        service: self.service.into(),
                        revision: self.revision.into(),
                        scope: Some("opentelemetry.instrumentation.flask".into()),
                        name: self.operation.into(),
                        kind: crate::receive::wire::span_kind::SERVER,
                        trace_id,
                        span_id,
                        parent_span_id: 0,
                        start_unix_nanos: begin,
                        duration_nanos: duration,
                        error: false,
                        attributes: vec![
                            ("http.route".into(), self.route.into()),
                            ("code.function".into(), self.code_function.into()),
                            ("code.filepath".into(), self.code_filepath.into()),
                        ],
                    });
                }
                batch
            })
            .collect()
    }
}

/// A realistic export request as SDKs batch them: `spans` spans across a
/// few services and operations, about ten attributes each, one in four a
/// CLIENT span naming a peer. `seed` varies ids and durations.
pub fn realistic_request(spans: usize, start_unix_nanos: u64, seed: u64) -> Vec<u8> {
    const SERVICES: [&str; 4] = ["checkout", "cart", "search", "payments"];
    const OPERATIONS: [&str; 6] = [
        "POST /checkout",
        "GET /cart",
        "GET /search",
        "POST /pay",
        "GET /items/{id}",
        "PUT /cart/{id}",
    ];
    const PEERS: [&str; 4] = [
        "https://payments.internal/charge",
        "https://api.fraudscore.io/v1/score",
        "http://inventory:8080/items/7",
        "https://cache.internal/k",
    ];
    let mut rng = Rng::new(seed);
    let per_service = spans.div_ceil(SERVICES.len());
    let mut out = Vec::with_capacity(spans);
    for (s, service) in SERVICES.iter().enumerate() {
        for i in 0..per_service.min(spans - out.len()) {
            let client = i % 4 == 3;
            let operation = OPERATIONS[(i + s) % OPERATIONS.len()];
            let mut attributes: Vec<(String, AttrValue)> = vec![
                ("http.request.method".into(), "GET".into()),
                ("http.route".into(), operation.split(' ').nth(1).unwrap_or("/").into()),
                ("http.response.status_code".into(), 200i64.into()),
                ("server.address".into(), "checkout.shop.svc".into()),
                ("server.port".into(), 8080i64.into()),
                ("user_agent.original".into(), "Mozilla/5.0 (X11; Linux x86_64)".into()),
                ("network.protocol.version".into(), "1.1".into()),
                ("code.function.name".into(), "shop.handlers.handle".into()),
                ("code.file.path".into(), "shop/handlers.py".into()),
                ("code.line.number".into(), 42i64.into()),
            ];
            if client {
                attributes[3] = ("url.full".into(), PEERS[i % PEERS.len()].into());
            }
            out.push(SyntheticSpan {
                service: (*service).into(),
                revision: "4f2c9a1e".into(),
                scope: None,
                name: if client { "GET".into() } else { operation.into() },
                kind: if client {
                    crate::receive::wire::span_kind::CLIENT
                } else {
                    crate::receive::wire::span_kind::SERVER
                },
                trace_id: u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()),
                span_id: rng.next_u64() | 1,
                parent_span_id: if client { rng.next_u64() | 1 } else { 0 },
                start_unix_nanos: start_unix_nanos + (i as u64) * 1_000_000,
                duration_nanos: (rng.log_normal(20.0, 0.5) * 1e6) as u64,
                error: false,
                attributes,
            });
        }
    }
    encode_request(&out)
}
