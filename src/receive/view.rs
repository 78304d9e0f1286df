//! `RequestView`: a zero-copy reading of an OTLP `ExportTraceServiceRequest`.
//!
//! Decoding dominates the cost of a span: a generated decoder materialises
//! every message (a `Vec` of attributes per span, a reference-counted buffer
//! per string) only for extraction to read a handful of fields and drop the
//! rest. This view walks the protobuf wire format instead and hands out
//! slices of the received buffer, reading each byte once:
//!
//! * `RequestView::parse` checks the request's outer levels (resources and
//!   their attributes, scopes) and counts the spans, skipping span bodies by
//!   their length, so the span limit is enforced before any span is read;
//! * `SpanView::read` then reads one span in a single pass — fields,
//!   attributes, status — checking it as it goes. A malformed span makes the
//!   whole request malformed, as with any protobuf decoder.
//!
//! Wire types must match the schema; fields driftwatch does not read are
//! skipped by wire type, as `proto/otlp_wire.proto` describes. Strings stay
//! bytes, so invalid UTF-8 rejects only the span that has it.

use prost::encoding::{WireType, decode_varint};

/// Why a request is not a well-formed OTLP trace request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} is truncated")]
    Truncated(&'static str),
    #[error("invalid varint in {0}")]
    Varint(&'static str),
    #[error("{message}.{field}: wire type {found} where the schema has {expected}")]
    WireType {
        message: &'static str,
        field: u32,
        found: u8,
        expected: u8,
    },
    #[error("invalid field key in {0}")]
    Key(&'static str),
    #[error("{0}: protobuf groups are not part of OTLP")]
    Group(&'static str),
}

/// One field of a message: its number and payload.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl Field<'_> {
    fn wire_type(&self) -> WireType {
        match self {
            Field::Varint(_) => WireType::Varint,
            Field::Fixed64(_) => WireType::SixtyFourBit,
            Field::Bytes(_) => WireType::LengthDelimited,
            Field::Fixed32 => WireType::ThirtyTwoBit,
        }
    }
}

/// The fields of one message, in order.
#[derive(Clone)]
struct Fields<'a> {
    rest: &'a [u8],
    message: &'static str,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Fields<'a> {
        Fields { rest: buf, message }
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        // Keys and most lengths fit in one byte.
        if let Some((&byte, rest)) = self.rest.split_first()
            && byte < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(byte));
        }
        decode_varint(&mut self.rest).map_err(|_| WireError::Varint(self.message))
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated(self.message));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    #[inline]
    fn next_field(&mut self) -> Result<Option<(u32, Field<'a>)>, WireError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        // A key is a 32-bit varint: field number and wire type.
        let key = u32::try_from(self.varint()?).map_err(|_| WireError::Key(self.message))?;
        let number = key >> 3;
        if number == 0 {
            return Err(WireError::Key(self.message));
        }
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default())),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated(self.message))?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            3 | 4 => return Err(WireError::Group(self.message)),
            _ => return Err(WireError::Key(self.message)),
        };
        Ok(Some((number, field)))
    }

    /// Checks that field `number` has the schema's wire type.
    fn expect(&self, number: u32, field: &Field<'_>, expected: WireType) -> Result<(), WireError> {
        if field.wire_type() == expected {
            Ok(())
        } else {
            Err(WireError::WireType {
                message: self.message,
                field: number,
                found: field.wire_type() as u8,
                expected: expected as u8,
            })
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Field<'a>);

    /// After `parse`, fields cannot be malformed; should one be, iteration
    /// simply ends.
    fn next(&mut self) -> Option<(u32, Field<'a>)> {
        self.next_field().ok().flatten()
    }
}

/// A validated request.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    buf: &'a [u8],
    spans: usize,
}

/// One `ResourceSpans`: a resource and its spans.
#[derive(Clone, Copy)]
pub(crate) struct ResourceSpansView<'a> {
    buf: &'a [u8],
}

/// One `ScopeSpans`: an instrumentation scope and its spans.
#[derive(Clone, Copy)]
pub(crate) struct ScopeSpansView<'a> {
    buf: &'a [u8],
}

/// One span's fields; attributes are read on demand.
#[derive(Clone, Copy, Default)]
pub(crate) struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a [u8],
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: i32,
    /// `exception.type` of the span's last `exception` event, if any.
    pub exception_type: Option<&'a [u8]>,
    /// The rest of that event: where the exception was raised.
    pub exception_site: ExceptionSite<'a>,
}

/// Where an exception event says the exception was raised: its `code.*`
/// attributes and its `exception.stacktrace`, still as bytes.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub(crate) struct ExceptionSite<'a> {
    pub stacktrace: Option<&'a [u8]>,
    pub function: Option<&'a [u8]>,
    pub filepath: Option<&'a [u8]>,
    pub lineno: Option<i64>,
}

/// An attribute: key and value still as bytes of the request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct KeyValueView<'a> {
    pub key: &'a [u8],
    pub value: ValueView<'a>,
}

/// The attribute values driftwatch reads; arrays, maps and bytes are
/// `Other`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ValueView<'a> {
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Other,
}

impl<'a> RequestView<'a> {
    /// Checks `buf` as an `ExportTraceServiceRequest` down to its spans,
    /// which are counted, not read.
    pub fn parse(buf: &'a [u8]) -> Result<RequestView<'a>, WireError> {
        let mut spans = 0;
        let mut fields = Fields::new(buf, "ExportTraceServiceRequest");
        while let Some((number, field)) = fields.next_field()? {
            if number == 1 {
                fields.expect(number, &field, WireType::LengthDelimited)?;
                if let Field::Bytes(body) = field {
                    spans += check_resource_spans(body)?;
                }
            }
        }
        Ok(RequestView { buf, spans })
    }

    pub fn span_count(&self) -> usize {
        self.spans
    }

    pub(crate) fn resource_spans(&self) -> impl Iterator<Item = ResourceSpansView<'a>> + 'a {
        Fields::new(self.buf, "ExportTraceServiceRequest").filter_map(|(number, field)| match (number, field) {
            (1, Field::Bytes(buf)) => Some(ResourceSpansView { buf }),
            _ => None,
        })
    }
}

impl<'a> ResourceSpansView<'a> {
    /// Appends the resource's attributes (checked by `parse`) to `out`.
    pub(crate) fn resource_attributes(&self, out: &mut Vec<KeyValueView<'a>>) {
        for (number, field) in Fields::new(self.buf, "ResourceSpans") {
            if let (1, Field::Bytes(resource)) = (number, field) {
                for (number, field) in Fields::new(resource, "Resource") {
                    if let (1, Field::Bytes(kv)) = (number, field)
                        && let Ok(kv) = key_value(kv)
                    {
                        out.push(kv);
                    }
                }
            }
        }
    }

    /// The resource's scopes, each with its spans.
    pub(crate) fn scopes(&self) -> impl Iterator<Item = ScopeSpansView<'a>> + 'a {
        Fields::new(self.buf, "ResourceSpans").filter_map(|(number, field)| match (number, field) {
            (2, Field::Bytes(buf)) => Some(ScopeSpansView { buf }),
            _ => None,
        })
    }

    /// The encoded spans of every scope, to read with `SpanView::read`.
    pub(crate) fn spans(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.scopes().flat_map(|scope| scope.spans())
    }
}

impl<'a> ScopeSpansView<'a> {
    /// `InstrumentationScope.name` (checked by `parse`): the library that
    /// produced the spans; empty when unset.
    pub(crate) fn scope_name(&self) -> &'a [u8] {
        let mut name: &'a [u8] = &[];
        for (number, field) in Fields::new(self.buf, "ScopeSpans") {
            if let (1, Field::Bytes(scope)) = (number, field) {
                for (number, field) in Fields::new(scope, "InstrumentationScope") {
                    if let (1, Field::Bytes(b)) = (number, field) {
                        name = b;
                    }
                }
            }
        }
        name
    }

    /// The encoded spans, to read with `SpanView::read`.
    pub(crate) fn spans(self) -> impl Iterator<Item = &'a [u8]> + 'a {
        Fields::new(self.buf, "ScopeSpans").filter_map(|(number, field)| match (number, field) {
            (2, Field::Bytes(span)) => Some(span),
            _ => None,
        })
    }
}

impl<'a> SpanView<'a> {
    /// Reads an encoded span in one pass, appending its attributes to
    /// `attributes`. Repeated scalars keep the last value, as protobuf
    /// decoders do.
    pub(crate) fn read(buf: &'a [u8], attributes: &mut Vec<KeyValueView<'a>>) -> Result<SpanView<'a>, WireError> {
        let mut span = SpanView::default();
        let mut fields = Fields::new(buf, "Span");
        while let Some((number, field)) = fields.next_field()? {
            match (number, field) {
                (9, Field::Bytes(kv)) => attributes.push(key_value(kv)?),
                (1, Field::Bytes(b)) => span.trace_id = b,
                (2, Field::Bytes(b)) => span.span_id = b,
                (4, Field::Bytes(b)) => span.parent_span_id = b,
                (5, Field::Bytes(b)) => span.name = b,
                (6, Field::Varint(v)) => span.kind = v as i32,
                (7, Field::Fixed64(v)) => span.start_time_unix_nano = v,
                (8, Field::Fixed64(v)) => span.end_time_unix_nano = v,
                (15, Field::Bytes(status)) => {
                    let mut inner = Fields::new(status, "Status");
                    while let Some((number, field)) = inner.next_field()? {
                        match (number, field) {
                            (3, Field::Varint(v)) => span.status_code = v as i32,
                            (3, field) => inner.expect(number, &field, WireType::Varint)?,
                            _ => {}
                        }
                    }
                }
                (11, Field::Bytes(event)) => {
                    if let Some((kind, site)) = exception(event)? {
                        span.exception_type = Some(kind);
                        span.exception_site = site;
                    }
                }
                (1 | 2 | 4 | 5 | 9 | 11 | 15, field) => fields.expect(number, &field, WireType::LengthDelimited)?,
                (6, field) => fields.expect(number, &field, WireType::Varint)?,
                (7 | 8, field) => fields.expect(number, &field, WireType::SixtyFourBit)?,
                _ => {}
            }
        }
        Ok(span)
    }
}

fn check_resource_spans(buf: &[u8]) -> Result<usize, WireError> {
    let mut spans = 0;
    let mut fields = Fields::new(buf, "ResourceSpans");
    while let Some((number, field)) = fields.next_field()? {
        match (number, field) {
            (1, field) => {
                fields.expect(number, &field, WireType::LengthDelimited)?;
                if let Field::Bytes(resource) = field {
                    let mut inner = Fields::new(resource, "Resource");
                    while let Some((number, field)) = inner.next_field()? {
                        if number == 1 {
                            inner.expect(number, &field, WireType::LengthDelimited)?;
                            if let Field::Bytes(kv) = field {
                                key_value(kv)?;
                            }
                        }
                    }
                }
            }
            (2, field) => {
                fields.expect(number, &field, WireType::LengthDelimited)?;
                if let Field::Bytes(scope) = field {
                    let mut inner = Fields::new(scope, "ScopeSpans");
                    while let Some((number, field)) = inner.next_field()? {
                        match (number, field) {
                            (2, field) => {
                                inner.expect(number, &field, WireType::LengthDelimited)?;
                                spans += 1;
                            }
                            (1, field) => {
                                inner.expect(number, &field, WireType::LengthDelimited)?;
                                if let Field::Bytes(instrumentation) = field {
                                    let mut scope = Fields::new(instrumentation, "InstrumentationScope");
                                    while let Some((number, field)) = scope.next_field()? {
                                        if number == 1 {
                                            scope.expect(number, &field, WireType::LengthDelimited)?;
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(spans)
}

/// The `exception.type` of a span event named `exception` (how SDKs record
/// an exception) and where it says it was raised, else `None`.
fn exception(event: &[u8]) -> Result<Option<(&[u8], ExceptionSite<'_>)>, WireError> {
    let (mut name, mut kind, mut site) = (&[][..], None, ExceptionSite::default());
    let mut fields = Fields::new(event, "Span.Event");
    while let Some((number, field)) = fields.next_field()? {
        match (number, field) {
            (2, Field::Bytes(b)) => name = b,
            (3, Field::Bytes(kv)) => match key_value(kv)? {
                KeyValueView {
                    key,
                    value: ValueView::Str(s),
                } => match key {
                    b"exception.type" => kind = Some(s),
                    b"exception.stacktrace" => site.stacktrace = Some(s),
                    b"code.function.name" | b"code.function" => site.function = Some(s),
                    b"code.file.path" | b"code.filepath" => site.filepath = Some(s),
                    _ => {}
                },
                KeyValueView {
                    key: b"code.line.number" | b"code.lineno",
                    value: ValueView::Int(n),
                } => site.lineno = Some(n),
                _ => {}
            },
            (2 | 3, field) => fields.expect(number, &field, WireType::LengthDelimited)?,
            _ => {}
        }
    }
    Ok(kind.filter(|_| name == b"exception").map(|kind| (kind, site)))
}

/// Reads and checks one `KeyValue`; the last value set wins.
#[inline]
fn key_value(buf: &[u8]) -> Result<KeyValueView<'_>, WireError> {
    let mut kv = KeyValueView {
        key: &[],
        value: ValueView::Other,
    };
    let mut fields = Fields::new(buf, "KeyValue");
    while let Some((number, field)) = fields.next_field()? {
        match (number, field) {
            (1, Field::Bytes(key)) => kv.key = key,
            (2, Field::Bytes(value)) => {
                let mut inner = Fields::new(value, "AnyValue");
                while let Some((number, field)) = inner.next_field()? {
                    kv.value = match (number, field) {
                        (1, Field::Bytes(s)) => ValueView::Str(s),
                        (2, Field::Varint(v)) => ValueView::Bool(v != 0),
                        (3, Field::Varint(v)) => ValueView::Int(v as i64),
                        (4, Field::Fixed64(v)) => ValueView::Double(f64::from_bits(v)),
                        (5..=7, Field::Bytes(_)) => ValueView::Other,
                        (1 | 5..=7, field) => {
                            inner.expect(number, &field, WireType::LengthDelimited)?;
                            continue;
                        }
                        (2 | 3, field) => {
                            inner.expect(number, &field, WireType::Varint)?;
                            continue;
                        }
                        (4, field) => {
                            inner.expect(number, &field, WireType::SixtyFourBit)?;
                            continue;
                        }
                        _ => continue,
                    };
                }
            }
            (1 | 2, field) => fields.expect(number, &field, WireType::LengthDelimited)?,
            _ => {}
        }
    }
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::receive::wire::{
        AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, Status, any_value::Value,
    };

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec().into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    fn request() -> ExportTraceServiceRequest {
        let span = |name: &str, attributes| Span {
            trace_id: vec![1; 16].into(),
            span_id: vec![2; 8].into(),
            parent_span_id: vec![3; 8].into(),
            name: name.as_bytes().to_vec().into(),
            kind: 3,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            attributes,
            events: Vec::new(),
            status: Some(Status { code: 2 }),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue(b"checkout".to_vec().into()))],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: b"io.opentelemetry.okhttp-3.0".to_vec().into(),
                        }),
                        spans: vec![span(
                            "GET",
                            vec![
                                kv("http.url", Value::StringValue(b"https://a.io/x".to_vec().into())),
                                kv("server.port", Value::IntValue(-443)),
                                kv("ok", Value::BoolValue(true)),
                                kv("ratio", Value::DoubleValue(0.25)),
                                kv("bad", Value::StringValue(vec![0xff, 0xfe].into())),
                            ],
                        )],
                    },
                    ScopeSpans {
                        scope: None,
                        spans: vec![span("POST", vec![])],
                    },
                ],
            }],
        }
    }

    /// Parses and reads every span, as extraction does.
    fn read_all(bytes: &[u8]) -> Result<Vec<(SpanView<'_>, Vec<KeyValueView<'_>>)>, WireError> {
        let view = RequestView::parse(bytes)?;
        let mut spans = Vec::new();
        for resource in view.resource_spans() {
            for span in resource.spans() {
                let mut attrs = Vec::new();
                spans.push((SpanView::read(span, &mut attrs)?, attrs));
            }
        }
        Ok(spans)
    }

    #[test]
    fn an_exception_event_says_where_it_was_raised() {
        use crate::receive::wire::span::Event;
        let mut request = request();
        let span = &mut request.resource_spans[0].scope_spans[1].spans[0];
        span.events = vec![Event {
            name: b"exception".to_vec().into(),
            attributes: vec![
                kv("exception.type", Value::StringValue(b"CardDeclined".to_vec().into())),
                kv("exception.stacktrace", Value::StringValue(b"Traceback ...".to_vec().into())),
                kv("code.function.name", Value::StringValue(b"charge_card".to_vec().into())),
                kv("code.filepath", Value::StringValue(b"/app/shop/pay.py".to_vec().into())),
                kv("code.line.number", Value::IntValue(88)),
            ],
        }];
        let bytes = request.encode_to_vec();
        let spans = read_all(&bytes).expect("valid");
        assert_eq!(spans[0].0.exception_site, ExceptionSite::default());
        assert_eq!(
            spans[1].0.exception_site,
            ExceptionSite {
                stacktrace: Some(b"Traceback ..."),
                function: Some(b"charge_card"),
                filepath: Some(b"/app/shop/pay.py"),
                lineno: Some(88),
            }
        );
    }

    #[test]
    fn an_exception_event_gives_the_span_its_exception_type() {
        use crate::receive::wire::span::Event;
        let event = |name: &str, kind: &str| Event {
            name: name.as_bytes().to_vec().into(),
            attributes: vec![
                kv("exception.message", Value::StringValue(b"boom".to_vec().into())),
                kv("exception.type", Value::StringValue(kind.as_bytes().to_vec().into())),
            ],
        };
        let mut request = request();
        let span = &mut request.resource_spans[0].scope_spans[1].spans[0];
        span.events = vec![event("retry", "NotAnException"), event("exception", "CardDeclined")];
        let bytes = request.encode_to_vec();
        let spans = read_all(&bytes).expect("valid");
        assert_eq!(spans[0].0.exception_type, None);
        assert_eq!(spans[1].0.exception_type, Some(&b"CardDeclined"[..]));
        // A malformed event makes the span malformed, as any field does.
        let mut broken = request.clone();
        broken.resource_spans[0].scope_spans[1].spans[0].events = vec![event("exception", "X")];
        let mut bytes = broken.encode_to_vec();
        let at = bytes.windows(9).position(|w| w == b"exception").expect("event name") - 1;
        bytes[at] = 0x7f;
        assert!(read_all(&bytes).is_err());
    }

    #[test]
    fn reads_what_the_generated_decoder_reads() {
        let bytes = request().encode_to_vec();
        let view = RequestView::parse(&bytes).expect("valid");
        assert_eq!(view.span_count(), 2);
        let resource = view.resource_spans().next().expect("resource");
        let mut attrs = Vec::new();
        resource.resource_attributes(&mut attrs);
        assert_eq!(
            attrs,
            vec![KeyValueView {
                key: b"service.name",
                value: ValueView::Str(b"checkout")
            }]
        );
        let scopes: Vec<&[u8]> = resource.scopes().map(|s| s.scope_name()).collect();
        assert_eq!(scopes, vec![&b"io.opentelemetry.okhttp-3.0"[..], &b""[..]]);
        let spans = read_all(&bytes).expect("valid spans");
        assert_eq!(spans.len(), 2);
        let (span, attrs) = &spans[0];
        assert_eq!(
            (span.name, span.kind, span.start_time_unix_nano, span.end_time_unix_nano),
            (&b"GET"[..], 3, 10, 20)
        );
        assert_eq!(
            (span.trace_id.len(), span.span_id, span.parent_span_id),
            (16, &[2u8; 8][..], &[3u8; 8][..])
        );
        assert_eq!(span.status_code, 2);
        let values: Vec<ValueView<'_>> = attrs.iter().map(|a| a.value).collect();
        assert_eq!(
            values,
            vec![
                ValueView::Str(b"https://a.io/x"),
                ValueView::Int(-443),
                ValueView::Bool(true),
                ValueView::Double(0.25),
                ValueView::Str(&[0xff, 0xfe]),
            ]
        );
        assert_eq!(spans[1].0.name, b"POST");
    }

    #[test]
    fn malformed_requests_are_refused_like_the_generated_decoder_refuses_them() {
        let bytes = request().encode_to_vec();
        for cut in 1..bytes.len() {
            let truncated = &bytes[..cut];
            let ours = read_all(truncated).is_err();
            let generated = ExportTraceServiceRequest::decode(truncated).is_err();
            assert_eq!(ours, generated, "cut at {cut}");
        }
        // `kind` sent as a string, in a span and in a status.
        for span in [&[0x32u8, 0x01, b'x'][..], &[0x7a, 0x03, 0x1a, 0x01, b'x']] {
            let scope = [&[0x12u8, span.len() as u8][..], span].concat();
            let resource_spans = [&[0x12u8, scope.len() as u8][..], &scope].concat();
            let wrong = [&[0x0au8, resource_spans.len() as u8][..], &resource_spans].concat();
            let error = read_all(&wrong).err().expect("refused");
            assert!(error.to_string().contains("wire type"), "{error}");
            assert!(ExportTraceServiceRequest::decode(&wrong[..]).is_err());
        }
        assert!(RequestView::parse(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        assert!(RequestView::parse(b"this is not protobuf at all").is_err());
    }

    #[test]
    fn corrupted_requests_never_panic_and_are_refused_whenever_the_generated_decoder_refuses_them() {
        let original = crate::tools::simulate::realistic_request(16, 1_800_000_000_000_000_000, 7);
        let mut rng = crate::rng::Rng::new(42);
        let mut refused = 0;
        for _ in 0..20_000 {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.next_u64() % 3 {
                let at = (rng.next_u64() % bytes.len() as u64) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
            let ours = read_all(&bytes).is_err();
            if let Err(error) = ExportTraceServiceRequest::decode(&bytes[..]) {
                assert!(ours, "a request the generated decoder refuses is refused: {error}");
            }
            refused += usize::from(ours);
        }
        assert!(refused > 1000, "the corruption is real: {refused} refused");
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = request().encode_to_vec();
        // Field 99 (fixed32) and field 100 (varint) at the top level.
        bytes.extend_from_slice(&[0x9d, 0x06, 1, 2, 3, 4, 0xa0, 0x06, 0x7f]);
        let view = RequestView::parse(&bytes).expect("valid");
        assert_eq!(view.span_count(), 2);
        assert!(ExportTraceServiceRequest::decode(&bytes[..]).is_ok());
    }

    #[test]
    fn an_empty_request_is_valid() {
        assert_eq!(RequestView::parse(&[]).expect("valid").span_count(), 0);
    }
}
