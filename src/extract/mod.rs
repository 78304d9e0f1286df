//! Extract: turns each received span into a [`SpanFact`], the compact record
//! the analysis keeps, and rejects spans no analysis could trust (invalid
//! UTF-8, impossible timestamps) with a reason.
//!
//! Strings that repeat on every span (service, revision, operation, peer)
//! are interned, so a fact costs a few pointer copies, not string copies.

mod attrs;
mod intern;
pub(crate) mod peer;
pub(crate) mod stack;

use std::sync::Arc;

pub(crate) use attrs::Attrs;
pub(crate) use intern::Interner;

use crate::receive::view::{ExceptionSite, KeyValueView, RequestView, SpanView, WireError};
use crate::receive::wire::span_kind;

pub use crate::service::{ServiceKey, Sym};

/// Resource attributes naming the running revision, in order of preference.
pub(crate) const REVISION_ATTRIBUTES: &[&str] = &["vcs.ref.head.revision", "vcs.repository.ref.revision", "service.version"];

/// The resource attribute naming the repository the running code was built
/// from (`https://github.com/org/repo`).
pub(crate) const REPOSITORY_ATTRIBUTE: &str = "vcs.repository.url.full";

/// Resource attributes naming the deployment environment, in order of
/// preference (the second is the name before semantic conventions 1.27).
pub(crate) const ENVIRONMENT_ATTRIBUTES: &[&str] = &["deployment.environment.name", "deployment.environment"];

/// Service name used when a resource has none (the OTel SDK default).
pub(crate) const UNKNOWN_SERVICE: &str = "unknown_service";
/// Revision used when a resource names none.
pub(crate) const UNKNOWN_REVISION: &str = "unknown";

/// Timestamps before 2000-01-01 are unset clocks or unit mistakes.
const EARLIEST_PLAUSIBLE_NANOS: u64 = 946_684_800 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    fn from_wire(kind: i32) -> SpanKind {
        match kind {
            span_kind::INTERNAL => SpanKind::Internal,
            span_kind::SERVER => SpanKind::Server,
            span_kind::CLIENT => SpanKind::Client,
            span_kind::PRODUCER => SpanKind::Producer,
            span_kind::CONSUMER => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// Spans that call out of the service and so name a peer.
    pub(crate) fn is_outbound(self) -> bool {
        matches!(self, SpanKind::Client | SpanKind::Producer)
    }

    /// Spans that handle work coming into the service.
    pub(crate) fn is_entry(self) -> bool {
        matches!(self, SpanKind::Server | SpanKind::Consumer)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStatus {
    /// Neither set by the instrumentation nor implied by a failed response.
    Unset,
    Ok,
    /// Status ERROR; or a SERVER span that answered HTTP 5xx or a gRPC
    /// status other than OK, which instrumentations leave unset.
    Error,
}

impl SpanStatus {
    pub(crate) fn is_error(self) -> bool {
        self == SpanStatus::Error
    }
}

/// The status of a span: its own, or for a SERVER span, what its response
/// says. A 4xx is the client's fault and stays unset, as the HTTP semantic
/// conventions have it for servers.
fn status(code: i32, kind: SpanKind, attrs: Attrs<'_>) -> SpanStatus {
    match code {
        1 => return SpanStatus::Ok,
        2 => return SpanStatus::Error,
        _ => {}
    }
    if kind != SpanKind::Server {
        return SpanStatus::Unset;
    }
    let http_failed = attrs
        .int(&["http.response.status_code", "http.status_code"])
        .is_some_and(|code| (500..600).contains(&code));
    let grpc_failed = attrs.int(&["rpc.grpc.status_code"]).is_some_and(|code| code != 0)
        || attrs
            .str(&["rpc.response.status_code"])
            .is_some_and(|code| !code.eq_ignore_ascii_case("OK") && code != "0");
    if http_failed || grpc_failed {
        SpanStatus::Error
    } else {
        SpanStatus::Unset
    }
}

/// Where in the source a span was produced (`code.*` attributes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CodeLocation {
    pub function: Option<Sym>,
    pub filepath: Option<Sym>,
    pub lineno: Option<u32>,
}

/// What the analysis needs to know about one span.
#[derive(Debug, Clone)]
pub struct SpanFact {
    /// `service.namespace/service.name`, or `service.name` alone.
    pub service: Sym,
    /// `deployment.environment.name`: kept apart from the service, so one
    /// service's environments are analysed (and alerted on) separately.
    pub environment: Option<Sym>,
    pub revision: Sym,
    pub operation: Sym,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub status: SpanStatus,
    pub trace_id: u128,
    pub span_id: u64,
    /// 0 for a root span.
    pub parent_span_id: u64,
    /// Set for CLIENT and PRODUCER spans that name a destination.
    pub peer: Option<Sym>,
    pub code: Option<Box<CodeLocation>>,
    pub route: Option<Sym>,
    /// For a failed span: its exception's type (`exception.type` of its
    /// `exception` event), else its `error.type`.
    pub error_type: Option<Sym>,
    /// For a failed span: where its exception was raised, per its
    /// `exception` event (`code.*`, else the service's innermost frame of
    /// `exception.stacktrace`).
    pub error_code: Option<Box<CodeLocation>>,
    /// `InstrumentationScope.name`: the library that produced the span.
    pub scope: Option<Sym>,
    /// `vcs.repository.url.full` of the span's resource.
    pub repository: Option<Sym>,
    /// An outbound call that is not safe to repeat: an HTTP POST or PATCH,
    /// a messaging publish, or a resend (`http.request.resend_count` > 0).
    pub non_idempotent: bool,
}

impl SpanFact {
    /// A span of `operation` in `service`'s `revision`, from `start` to
    /// `end` (Unix nanoseconds), with no environment, status, ids, peer or
    /// code location. Synthetic traffic, benches and tests set the rest
    /// with struct update syntax:
    /// `SpanFact { peer: Some(peer), ..SpanFact::new(…) }`.
    pub fn new(
        service: Sym,
        revision: Sym,
        operation: Sym,
        kind: SpanKind,
        start_unix_nanos: u64,
        end_unix_nanos: u64,
    ) -> SpanFact {
        SpanFact {
            service,
            environment: None,
            revision,
            operation,
            kind,
            start_unix_nanos,
            end_unix_nanos,
            status: SpanStatus::Unset,
            trace_id: 0,
            span_id: 0,
            parent_span_id: 0,
            peer: None,
            code: None,
            route: None,
            error_type: None,
            error_code: None,
            scope: None,
            repository: None,
            non_idempotent: false,
        }
    }

    pub(crate) fn key(&self) -> ServiceKey {
        ServiceKey {
            service: self.service.clone(),
            environment: self.environment.clone(),
        }
    }

    /// Whether two facts belong to the same service and environment
    /// (interned, so usually a pointer comparison).
    pub(crate) fn same_service(&self, other: &SpanFact) -> bool {
        let same = |a: &Sym, b: &Sym| Arc::ptr_eq(a, b) || a == b;
        same(&self.service, &other.service)
            && match (&self.environment, &other.environment) {
                (None, None) => true,
                (Some(a), Some(b)) => same(a, b),
                _ => false,
            }
    }

    pub(crate) fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos - self.start_unix_nanos
    }
}

/// Why a span was refused. Each reason is a label of
/// `driftwatch_spans_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SpanRejection {
    InvalidUtf8,
    MissingTimestamp,
    EndBeforeStart,
    FutureTimestamp,
}

impl SpanRejection {
    pub(crate) const ALL: [SpanRejection; 4] = [
        SpanRejection::InvalidUtf8,
        SpanRejection::MissingTimestamp,
        SpanRejection::EndBeforeStart,
        SpanRejection::FutureTimestamp,
    ];

    pub(crate) fn as_label(self) -> &'static str {
        match self {
            SpanRejection::InvalidUtf8 => "invalid_utf8",
            SpanRejection::MissingTimestamp => "missing_timestamp",
            SpanRejection::EndBeforeStart => "end_before_start",
            SpanRejection::FutureTimestamp => "future_timestamp",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            SpanRejection::InvalidUtf8 => "a string (span name, attribute key or value) is not valid UTF-8",
            SpanRejection::MissingTimestamp => "start or end time is unset or before the year 2000",
            SpanRejection::EndBeforeStart => "end time is before start time",
            SpanRejection::FutureTimestamp => "timestamps lie in the future beyond receiver.max_future_skew",
        }
    }
}

/// Spans refused in one request, by reason, with a message for the client.
#[derive(Debug, Default, Clone)]
pub struct Rejections {
    counts: [u32; SpanRejection::ALL.len()],
}

impl Rejections {
    fn add(&mut self, reason: SpanRejection) {
        self.counts[reason as usize] += 1;
    }


    pub fn total(&self) -> u32 {
        self.counts.iter().sum()
    }

    pub(crate) fn by_reason(&self) -> impl Iterator<Item = (SpanRejection, u32)> + '_ {
        SpanRejection::ALL
            .iter()
            .map(|r| (*r, self.counts[*r as usize]))
            .filter(|(_, n)| *n > 0)
    }

    /// The OTLP partial-success `error_message`.
    pub(crate) fn message(&self) -> String {
        let parts: Vec<String> = self
            .by_reason()
            .map(|(r, n)| format!("{n} span(s) rejected: {} [{}]", r.explain(), r.as_label()))
            .collect();
        parts.join("; ")
    }
}

/// Turns wire spans into facts; shared by all receivers.
/// What a resource says of all its spans.
struct Resource<'a> {
    service: &'a Sym,
    environment: Option<&'a Sym>,
    revision: &'a Sym,
    repository: Option<&'a Sym>,
}

pub struct Extractor {
    interner: Interner,
    max_future_skew_nanos: u64,
}

impl Extractor {
    pub fn new(max_future_skew: std::time::Duration, max_interned: usize) -> Extractor {
        Extractor {
            interner: Interner::new(max_interned),
            max_future_skew_nanos: crate::clock::nanos(max_future_skew),
        }
    }

    /// Appends a fact per valid span of `request` to `out` and returns the
    /// rejected ones. `now_unix_nanos` bounds future timestamps.
    ///
    /// A malformed span makes the whole request malformed: nothing of it
    /// should be analysed, so the caller discards `out`.
    pub fn extract<'a>(
        &self,
        request: &RequestView<'a>,
        now_unix_nanos: u64,
        out: &mut Vec<SpanFact>,
    ) -> Result<Rejections, WireError> {
        let mut rejections = Rejections::default();
        let mut scratch = String::new();
        // Reused for every resource and span of the request.
        let mut attributes: Vec<KeyValueView<'a>> = Vec::new();
        let latest = now_unix_nanos.saturating_add(self.max_future_skew_nanos);
        for resource_spans in request.resource_spans() {
            attributes.clear();
            resource_spans.resource_attributes(&mut attributes);
            let resource_attrs = Attrs(&attributes);
            if !resource_attrs.is_valid_utf8() {
                // Every span of the resource is refused, once read: a
                // malformed one still makes the request malformed.
                for span in resource_spans.spans() {
                    attributes.clear();
                    SpanView::read(span, &mut attributes)?;
                    rejections.add(SpanRejection::InvalidUtf8);
                }
                continue;
            }
            let name = resource_attrs.str(&["service.name"]).unwrap_or(UNKNOWN_SERVICE);
            let service = match resource_attrs.str(&["service.namespace"]) {
                Some(namespace) => {
                    scratch.clear();
                    scratch.push_str(namespace.trim());
                    scratch.push('/');
                    scratch.push_str(name);
                    self.interner.intern(&scratch)
                }
                None => self.interner.intern(name),
            };
            let environment = resource_attrs
                .str(ENVIRONMENT_ATTRIBUTES)
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| self.interner.intern(e));
            let revision = self
                .interner
                .intern(resource_attrs.str(REVISION_ATTRIBUTES).unwrap_or(UNKNOWN_REVISION).trim());
            let repository = resource_attrs
                .str(&[REPOSITORY_ATTRIBUTE])
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| self.interner.intern(r));
            let resource = Resource {
                service: &service,
                environment: environment.as_ref(),
                revision: &revision,
                repository: repository.as_ref(),
            };
            for scope_spans in resource_spans.scopes() {
                // A scope name that is not UTF-8 names no library; the
                // spans are still analysed.
                let scope = std::str::from_utf8(scope_spans.scope_name())
                    .ok()
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(|name| self.interner.intern(name));
                for span in scope_spans.spans() {
                    attributes.clear();
                    let span = SpanView::read(span, &mut attributes)?;
                    match self.fact(&span, &resource, latest, Attrs(&attributes), &mut scratch) {
                        Ok(mut fact) => {
                            fact.scope = scope.clone();
                            out.push(fact);
                        }
                        Err(reason) => rejections.add(reason),
                    }
                }
            }
        }
        Ok(rejections)
    }

    fn fact(
        &self,
        span: &SpanView<'_>,
        resource: &Resource<'_>,
        latest: u64,
        attrs: Attrs<'_>,
        scratch: &mut String,
    ) -> Result<SpanFact, SpanRejection> {
        let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
        if start < EARLIEST_PLAUSIBLE_NANOS || end < EARLIEST_PLAUSIBLE_NANOS {
            return Err(SpanRejection::MissingTimestamp);
        }
        if end < start {
            return Err(SpanRejection::EndBeforeStart);
        }
        if end > latest {
            return Err(SpanRejection::FutureTimestamp);
        }
        let name = std::str::from_utf8(span.name).map_err(|_| SpanRejection::InvalidUtf8)?;
        if !attrs.is_valid_utf8() {
            return Err(SpanRejection::InvalidUtf8);
        }
        let kind = SpanKind::from_wire(span.kind);
        let status = status(span.status_code, kind, attrs);
        let (error_type, error_code) = if status.is_error() {
            let error_type = span
                .exception_type
                .and_then(|b| std::str::from_utf8(b).ok())
                .filter(|t| !t.trim().is_empty())
                .or_else(|| attrs.str(&["error.type"]))
                .map(|t| self.interner.intern(t.trim()));
            (error_type, self.raise_site(&span.exception_site))
        } else {
            (None, None)
        };
        let peer = (kind.is_outbound() && peer::peer_identity(attrs, scratch)).then(|| self.interner.intern(scratch));
        Ok(SpanFact {
            service: resource.service.clone(),
            environment: resource.environment.cloned(),
            revision: resource.revision.clone(),
            operation: self.interner.intern(if name.is_empty() { "(unnamed)" } else { name }),
            kind,
            start_unix_nanos: start,
            end_unix_nanos: end,
            status,
            trace_id: id_u128(span.trace_id),
            span_id: id_u64(span.span_id),
            parent_span_id: id_u64(span.parent_span_id),
            peer,
            code: self.code_location(attrs),
            route: attrs.str(&["http.route"]).map(|r| self.interner.intern(r)),
            error_type,
            error_code,
            scope: None,
            repository: resource.repository.cloned(),
            non_idempotent: kind.is_outbound() && non_idempotent(kind, attrs),
        })
    }

    /// Where an exception event says its exception was raised.
    fn raise_site(&self, site: &ExceptionSite<'_>) -> Option<Box<CodeLocation>> {
        fn text(b: Option<&[u8]>) -> Option<&str> {
            b.and_then(|b| std::str::from_utf8(b).ok()).map(str::trim).filter(|s| !s.is_empty())
        }
        let (function, filepath) = (text(site.function), text(site.filepath));
        if function.is_some() || filepath.is_some() {
            return Some(Box::new(CodeLocation {
                function: function.map(|f| self.interner.intern(f)),
                filepath: filepath.map(|f| self.interner.intern(f)),
                lineno: site.lineno.and_then(|n| u32::try_from(n).ok()),
            }));
        }
        let frame = stack::raising_frame(text(site.stacktrace)?)?;
        Some(Box::new(CodeLocation {
            function: frame.function.map(|f| self.interner.intern(f)),
            filepath: Some(self.interner.intern(&frame.file)),
            lineno: frame.line,
        }))
    }

    fn code_location(&self, attrs: Attrs<'_>) -> Option<Box<CodeLocation>> {
        let function = attrs.str(&["code.function.name", "code.function"]);
        let filepath = attrs.str(&["code.file.path", "code.filepath"]);
        let lineno = attrs
            .int(&["code.line.number", "code.lineno"])
            .and_then(|n| u32::try_from(n).ok());
        if function.is_none() && filepath.is_none() {
            return None;
        }
        Some(Box::new(CodeLocation {
            function: function.map(|f| self.interner.intern(f)),
            filepath: filepath.map(|f| self.interner.intern(f)),
            lineno,
        }))
    }
}

/// Whether an outbound span is a call that must not be made twice.
fn non_idempotent(kind: SpanKind, attrs: Attrs<'_>) -> bool {
    let method = attrs.str(&["http.request.method", "http.method"]);
    let writes = method.is_some_and(|m| m.eq_ignore_ascii_case("POST") || m.eq_ignore_ascii_case("PATCH"));
    let publishes = kind == SpanKind::Producer
        || attrs
            .str(&["messaging.operation.type", "messaging.operation"])
            .is_some_and(|o| matches!(o, "publish" | "send" | "create"));
    let resent = attrs.int(&["http.request.resend_count"]).is_some_and(|n| n > 0);
    writes || publishes || resent
}

fn id_u128(bytes: &[u8]) -> u128 {
    <[u8; 16]>::try_from(bytes).map_or(0, u128::from_be_bytes)
}

fn id_u64(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    use crate::extract::attrs::test_support::wire_kv as kv;
    use crate::receive::wire::{ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, Status};

    const NOW: u64 = 1_800_000_000 * 1_000_000_000;

    /// Encodes a request and extracts it as a receiver would.
    fn extract(extractor: &Extractor, resource: Vec<KeyValue>, spans: Vec<Span>, out: &mut Vec<SpanFact>) -> Rejections {
        let bytes = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: resource }),
                scope_spans: vec![ScopeSpans { scope: None, spans }],
            }],
        }
        .encode_to_vec();
        extractor
            .extract(&RequestView::parse(&bytes).expect("valid request"), NOW, out)
            .expect("well-formed spans")
    }

    fn span(name: &str, kind: i32, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![1; 16].into(),
            span_id: vec![2; 8].into(),
            parent_span_id: Default::default(),
            name: name.as_bytes().to_vec().into(),
            kind,
            start_time_unix_nano: NOW - 80_000_000,
            end_time_unix_nano: NOW,
            attributes,
            events: Vec::new(),
            status: Some(Status { code: 2 }),
        }
    }

    fn extract_one(resource: Vec<KeyValue>, span: Span) -> Result<SpanFact, Rejections> {
        let extractor = Extractor::new(std::time::Duration::from_secs(600), 1000);
        let mut out = Vec::new();
        let rejections = extract(&extractor, resource, vec![span], &mut out);
        out.pop().ok_or(rejections)
    }

    #[test]
    fn a_failed_span_knows_where_its_exception_was_raised() {
        use crate::receive::wire::span::Event;
        let server = crate::receive::wire::span_kind::SERVER;
        let with_event = |attributes: Vec<KeyValue>, status: i32| {
            let mut span = span("POST /pay", server, vec![kv("code.file.path", "/app/shop/api.py")]);
            span.status = Some(Status { code: status });
            span.events = vec![Event {
                name: b"exception".to_vec().into(),
                attributes,
            }];
            extract_one(vec![kv("service.name", "checkout")], span).expect("fact")
        };
        let trace = "Traceback (most recent call last):\n  File \"/app/shop/pay.py\", line 7, in charge_card\n    raise CardDeclined()\nshop.pay.CardDeclined\n";
        let fact = with_event(vec![kv("exception.type", "CardDeclined"), kv("exception.stacktrace", trace)], 2);
        let code = fact.error_code.expect("from the traceback");
        assert_eq!(
            (code.function.as_deref(), code.filepath.as_deref(), code.lineno),
            (Some("charge_card"), Some("/app/shop/pay.py"), Some(7))
        );
        assert_eq!(fact.code.and_then(|c| c.filepath).as_deref(), Some("/app/shop/api.py"), "the span's own stays apart");
        // The event's own code.* win over its trace.
        let fact = with_event(
            vec![kv("exception.type", "E"), kv("exception.stacktrace", trace), kv("code.function.name", "retry")],
            2,
        );
        assert_eq!(fact.error_code.and_then(|c| c.function).as_deref(), Some("retry"));
        // A span that did not fail has no raise site.
        let fact = with_event(vec![kv("exception.type", "E"), kv("exception.stacktrace", trace)], 1);
        assert!(fact.error_code.is_none());
    }

    #[test]
    fn each_span_carries_its_instrumentation_scope() {
        use crate::receive::wire::InstrumentationScope;
        let server = crate::receive::wire::span_kind::SERVER;
        let scope = |name: &[u8]| ScopeSpans {
            scope: Some(InstrumentationScope { name: name.to_vec().into() }),
            spans: vec![span("op", server, vec![])],
        };
        let bytes = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout")],
                }),
                scope_spans: vec![
                    scope(b" io.opentelemetry.jdbc "),
                    scope(b""),
                    scope(&[0xff, 0xfe]),
                    ScopeSpans {
                        scope: None,
                        spans: vec![span("op", server, vec![])],
                    },
                ],
            }],
        }
        .encode_to_vec();
        let extractor = Extractor::new(std::time::Duration::from_secs(600), 1000);
        let mut out = Vec::new();
        let rejections = extractor
            .extract(&RequestView::parse(&bytes).expect("valid request"), NOW, &mut out)
            .expect("well-formed spans");
        assert_eq!(rejections.total(), 0, "a scope name that is not UTF-8 names no library, and rejects nothing");
        let scopes: Vec<Option<&str>> = out.iter().map(|f| f.scope.as_deref()).collect();
        assert_eq!(scopes, [Some("io.opentelemetry.jdbc"), None, None, None]);
        // The scope's own fields are checked like any other.
        let mut malformed = bytes.clone();
        let at = malformed.windows(21).position(|w| w == b" io.opentelemetry.jdb").expect("scope name") - 2;
        assert_eq!(malformed[at], 0x0a, "InstrumentationScope.name's key");
        malformed[at] = 0x08;
        assert!(RequestView::parse(&malformed).is_err());
    }

    #[test]
    fn a_service_in_a_namespace_is_namespace_slash_name() {
        let span = || span("op", crate::receive::wire::span_kind::SERVER, vec![]);
        let shop = extract_one(vec![kv("service.namespace", "shop"), kv("service.name", "checkout")], span()).expect("fact");
        let billing = extract_one(vec![kv("service.namespace", "billing"), kv("service.name", "checkout")], span()).expect("fact");
        let plain = extract_one(vec![kv("service.name", "checkout")], span()).expect("fact");
        assert_eq!(&*shop.service, "shop/checkout");
        assert_eq!(&*billing.service, "billing/checkout", "two namespaces' services stay apart");
        assert_eq!(&*plain.service, "checkout");
    }

    #[test]
    fn the_environment_is_kept_apart_from_the_service() {
        let span = || span("op", crate::receive::wire::span_kind::SERVER, vec![]);
        let with = |resource| extract_one(resource, span()).expect("fact");
        let prod = with(vec![kv("service.name", "checkout"), kv("deployment.environment.name", "production")]);
        assert_eq!(&*prod.service, "checkout", "the environment is not part of the name");
        assert_eq!(prod.environment.as_deref(), Some("production"));
        let legacy = with(vec![kv("service.name", "checkout"), kv("deployment.environment", " staging ")]);
        assert_eq!(legacy.environment.as_deref(), Some("staging"), "the pre-1.27 attribute, trimmed");
        let both = with(vec![
            kv("service.name", "checkout"),
            kv("deployment.environment", "old"),
            kv("deployment.environment.name", "new"),
        ]);
        assert_eq!(both.environment.as_deref(), Some("new"), "the current name wins");
        assert_eq!(with(vec![kv("service.name", "checkout"), kv("deployment.environment.name", " ")]).environment, None);
        assert_eq!(with(vec![kv("service.name", "checkout")]).environment, None);
    }

    #[test]
    fn server_spans_that_answered_5xx_or_a_grpc_failure_are_errors() {
        let with = |kind, status: i32, attributes| {
            let mut span = span("op", kind, attributes);
            span.status = Some(Status { code: status });
            extract_one(vec![kv("service.name", "s")], span).expect("accepted").status
        };
        use crate::receive::wire::span_kind::{CLIENT, SERVER};
        assert_eq!(with(SERVER, 2, vec![]), SpanStatus::Error);
        assert_eq!(with(SERVER, 1, vec![kv("http.response.status_code", 503)]), SpanStatus::Ok, "an explicit OK stands");
        assert_eq!(with(SERVER, 0, vec![kv("http.response.status_code", 503)]), SpanStatus::Error);
        assert_eq!(with(SERVER, 0, vec![kv("http.status_code", "500")]), SpanStatus::Error, "legacy, as a string");
        assert_eq!(with(SERVER, 0, vec![kv("http.response.status_code", 404)]), SpanStatus::Unset, "the client's fault");
        assert_eq!(with(SERVER, 0, vec![kv("rpc.grpc.status_code", 14)]), SpanStatus::Error);
        assert_eq!(with(SERVER, 0, vec![kv("rpc.grpc.status_code", 0)]), SpanStatus::Unset);
        assert_eq!(with(SERVER, 0, vec![kv("rpc.response.status_code", "UNAVAILABLE")]), SpanStatus::Error);
        assert_eq!(
            with(CLIENT, 0, vec![kv("http.response.status_code", 503), kv("server.address", "a")]),
            SpanStatus::Unset,
            "a failed call is the callee's error, not this service's"
        );
    }

    #[test]
    fn revision_follows_the_documented_order() {
        let cases = [
            (
                vec![kv("service.version", "1.2.0"), kv("vcs.ref.head.revision", "abc123")],
                "abc123",
            ),
            (
                vec![kv("service.version", "1.2.0"), kv("vcs.repository.ref.revision", "def456")],
                "def456",
            ),
            (vec![kv("service.version", "v1.2.0")], "v1.2.0"),
            (vec![kv("vcs.ref.head.revision", "")], UNKNOWN_REVISION),
            (vec![], UNKNOWN_REVISION),
        ];
        for (resource, want) in cases {
            let mut resource = resource;
            resource.push(kv("service.name", "checkout"));
            let fact = extract_one(resource, span("GET /", span_kind::SERVER, vec![])).expect("valid");
            assert_eq!(&*fact.revision, want);
            assert_eq!(&*fact.service, "checkout");
        }
    }

    #[test]
    fn missing_service_name_is_the_sdk_default() {
        let fact = extract_one(vec![], span("x", span_kind::INTERNAL, vec![])).expect("valid");
        assert_eq!(&*fact.service, UNKNOWN_SERVICE);
    }

    #[test]
    fn server_span_facts() {
        let fact = extract_one(
            vec![kv("service.name", "checkout")],
            span(
                "POST /checkout",
                span_kind::SERVER,
                vec![
                    kv("http.route", "/checkout"),
                    kv("code.function", "checkout"),
                    kv("code.filepath", "src/pay.py"),
                    kv("code.lineno", 88),
                ],
            ),
        )
        .expect("valid");
        assert_eq!(&*fact.operation, "POST /checkout");
        assert_eq!(fact.kind, SpanKind::Server);
        assert_eq!(fact.status, SpanStatus::Error);
        assert_eq!(fact.duration_nanos(), 80_000_000);
        assert_eq!(fact.peer, None, "server spans name no peer");
        assert_eq!(fact.route.as_deref(), Some("/checkout"));
        let code = fact.code.expect("code location");
        assert_eq!(code.function.as_deref(), Some("checkout"));
        assert_eq!(code.filepath.as_deref(), Some("src/pay.py"));
        assert_eq!(code.lineno, Some(88));
        assert_eq!(fact.trace_id, u128::from_be_bytes([1; 16]));
        assert_eq!(fact.parent_span_id, 0);
    }

    #[test]
    fn current_code_semconv_names() {
        let fact = extract_one(
            vec![],
            span(
                "charge",
                span_kind::INTERNAL,
                vec![
                    kv("code.function.name", "shop.pay.charge"),
                    kv("code.file.path", "/app/shop/pay.py"),
                    kv("code.line.number", 12),
                ],
            ),
        )
        .expect("valid");
        let code = fact.code.expect("code");
        assert_eq!(code.function.as_deref(), Some("shop.pay.charge"));
        assert_eq!(code.filepath.as_deref(), Some("/app/shop/pay.py"));
        assert_eq!(code.lineno, Some(12));
    }

    #[test]
    fn client_span_has_peer() {
        let fact = extract_one(
            vec![kv("service.name", "checkout")],
            span(
                "POST",
                span_kind::CLIENT,
                vec![kv("http.url", "https://api.fraudscore.io/score")],
            ),
        )
        .expect("valid");
        assert_eq!(fact.peer.as_deref(), Some("api.fraudscore.io:443"));
    }

    #[test]
    fn impossible_timestamps_are_rejected() {
        let mut end_before_start = span("x", span_kind::SERVER, vec![]);
        end_before_start.end_time_unix_nano = end_before_start.start_time_unix_nano - 1;
        let mut future = span("x", span_kind::SERVER, vec![]);
        future.start_time_unix_nano = NOW + 10 * 365 * 86_400 * 1_000_000_000;
        future.end_time_unix_nano = future.start_time_unix_nano + 1;
        let mut unset = span("x", span_kind::SERVER, vec![]);
        unset.start_time_unix_nano = 0;
        for (span, reason) in [
            (end_before_start, SpanRejection::EndBeforeStart),
            (future, SpanRejection::FutureTimestamp),
            (unset, SpanRejection::MissingTimestamp),
        ] {
            let rejections = extract_one(vec![], span).expect_err("rejected");
            assert_eq!(rejections.by_reason().collect::<Vec<_>>(), vec![(reason, 1)]);
            assert!(rejections.message().contains(reason.as_label()));
        }
    }

    #[test]
    fn invalid_utf8_rejects_only_that_span() {
        let mut bad = kv("http.route", "x");
        bad.value = Some(crate::receive::wire::AnyValue {
            value: Some(crate::receive::wire::any_value::Value::StringValue(
                vec![0x66, 0xff, 0xfe].into(),
            )),
        });
        let extractor = Extractor::new(std::time::Duration::from_secs(600), 1000);
        let mut out = Vec::new();
        let rejections = extract(
            &extractor,
            vec![],
            vec![
                span("bad", span_kind::SERVER, vec![bad]),
                span("good", span_kind::SERVER, vec![]),
            ],
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].operation, "good");
        assert_eq!(
            rejections.by_reason().collect::<Vec<_>>(),
            vec![(SpanRejection::InvalidUtf8, 1)]
        );
    }

    #[test]
    fn repeated_strings_are_shared() {
        let extractor = Extractor::new(std::time::Duration::from_secs(600), 1000);
        let mut out = Vec::new();
        let spans = vec![
            span("GET /a", span_kind::SERVER, vec![]),
            span("GET /a", span_kind::SERVER, vec![]),
        ];
        extract(&extractor, vec![kv("service.name", "s")], spans, &mut out);
        assert!(Arc::ptr_eq(&out[0].operation, &out[1].operation));
    }
}
