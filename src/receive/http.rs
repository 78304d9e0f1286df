//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip- or deflate-compressed.
//!
//! The body is read within `max_request_bytes` and inflated within
//! `max_decompressed_bytes`, so a gzip bomb costs at most that much memory
//! before it is refused. JSON is converted to protobuf and takes the same
//! path as every other request.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use prost::Message;

use super::{Accepted, Ingest, IngestError, Transport, rpc_status};
use crate::forward::Signal;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/HTTP routes: traces are analysed; metrics and logs are
/// acknowledged and forwarded when forwarding is on.
pub(crate) fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .route(
            "/v1/metrics",
            post(|state, headers, body| export_other(Signal::Metrics, state, headers, body)),
        )
        .route(
            "/v1/logs",
            post(|state, headers, body| export_other(Signal::Logs, state, headers, body)),
        )
        .with_state(ingest)
}

/// An export body refused before it was read through: what to answer.
struct Refused {
    format: Format,
    transport: Transport,
    error: IngestError,
    status: StatusCode,
}

/// Reads an export request's body: its format from `Content-Type`, at most
/// `max_request_bytes` as sent and `max_decompressed_bytes` inflated.
async fn read_export(ingest: &Ingest, headers: &HeaderMap, body: Body) -> Result<(Format, Transport, Bytes), Refused> {
    let Some(format) = content_type(headers) else {
        return Err(Refused {
            format: Format::Protobuf,
            transport: Transport::HttpProtobuf,
            error: IngestError::Unsupported(format!(
                "unsupported Content-Type {:?}; send {PROTOBUF} or {JSON}",
                headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(none)")
            )),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        });
    };
    let transport = if format == Format::Json {
        Transport::HttpJson
    } else {
        Transport::HttpProtobuf
    };
    let refused = |error: IngestError| Refused {
        format,
        transport,
        status: http_status(&error),
        error,
    };
    let config = ingest.config();
    let body = axum::body::to_bytes(body, config.max_request_bytes).await.map_err(|_| {
        refused(IngestError::TooLarge {
            limit: config.max_request_bytes,
            what: "on the wire",
            key: "max_request_bytes",
        })
    })?;
    let body = decompress(headers, body, config.max_decompressed_bytes).map_err(refused)?;
    Ok((format, transport, body))
}

/// A metrics or logs export: read within the same limits, then handed on.
async fn export_other(signal: Signal, State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let (format, transport, body) = match read_export(&ingest, &headers, body).await {
        Ok(read) => read,
        Err(refused) => return error_response(&refused.error, refused.format, refused.status),
    };
    match ingest.export_other(signal, transport, body) {
        // The export responses of metrics and logs are empty messages
        // when nothing was rejected.
        Ok(()) => match format {
            Format::Protobuf => ([(header::CONTENT_TYPE, PROTOBUF)], Bytes::new()).into_response(),
            Format::Json => ([(header::CONTENT_TYPE, JSON)], "{}").into_response(),
        },
        Err(error) => error_response(&error, format, http_status(&error)),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

async fn export(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let (format, transport, body) = match read_export(&ingest, &headers, body).await {
        Ok(read) => read,
        Err(refused) => {
            ingest.record_refused(refused.transport, &refused.error);
            return error_response(&refused.error, refused.format, refused.status);
        }
    };
    let body = match format {
        Format::Protobuf => body,
        Format::Json => match json_to_protobuf(&body) {
            Ok(body) => body,
            Err(error) => {
                ingest.record_refused(transport, &error);
                return error_response(&error, format, http_status(&error));
            }
        },
    };
    match ingest.export(transport, body) {
        Ok(accepted) => success_response(&accepted, format),
        Err(error) => error_response(&error, format, http_status(&error)),
    }
}

fn content_type(headers: &HeaderMap) -> Option<Format> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
        "application/json" => Some(Format::Json),
        _ => None,
    }
}

/// Inflates a `Content-Encoding: gzip|deflate` body, refusing to produce
/// more than `limit` bytes.
fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let reader: Box<dyn Read + '_> = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(body),
        Some("gzip" | "x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Some("deflate") => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        Some(other) => {
            return Err(IngestError::Unsupported(format!(
                "unsupported Content-Encoding {other:?}; send gzip, deflate or none"
            )));
        }
    };
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Malformed(format!("body is not valid {}: {e}", encoding.as_deref().unwrap_or(""))))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge {
            limit,
            what: "decompressed",
            key: "max_decompressed_bytes",
        });
    }
    Ok(out.into())
}

/// OTLP/JSON (hex ids, camelCase, enums as numbers) to protobuf bytes.
pub fn json_to_protobuf(body: &[u8]) -> Result<Bytes, IngestError> {
    use super::otlp::ExportTraceServiceRequest;
    let request: ExportTraceServiceRequest =
        serde_json::from_slice(body).map_err(|e| IngestError::Malformed(format!("invalid OTLP/JSON: {e}")))?;
    Ok(request.encode_to_vec().into())
}

fn http_status(error: &IngestError) -> StatusCode {
    match error {
        IngestError::Malformed(_) => StatusCode::BAD_REQUEST,
        IngestError::TooLarge { .. } | IngestError::TooManySpans { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        IngestError::Backpressure { .. } | IngestError::MemoryLimit { .. } => StatusCode::SERVICE_UNAVAILABLE,
        IngestError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
        IngestError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
    }
}

fn success_response(accepted: &Accepted, format: Format) -> Response {
    let response = accepted.response();
    match format {
        Format::Protobuf => ([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response(),
        Format::Json => {
            let body = match response.partial_success {
                Some(partial) => serde_json::json!({"partialSuccess": {
                    "rejectedSpans": partial.rejected_spans.to_string(),
                    "errorMessage": partial.error_message,
                }}),
                None => serde_json::json!({}),
            };
            ([(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
        }
    }
}

/// An OTLP/HTTP error: a `google.rpc.Status` body in the request's format,
/// plus `Retry-After` when the client should retry.
fn error_response(error: &IngestError, format: Format, status: StatusCode) -> Response {
    let grpc_code = super::grpc::status_of(error).code() as i32;
    let message = error.to_string();
    let rpc = rpc_status(grpc_code, &message, error.retry_after());
    let mut response = match format {
        Format::Protobuf => (status, [(header::CONTENT_TYPE, PROTOBUF)], rpc.encode_to_vec()).into_response(),
        Format::Json => {
            let body = serde_json::json!({"code": grpc_code, "message": message});
            (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
        }
    };
    if let Some(delay) = error.retry_after() {
        let seconds = delay.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("gzip");
        encoder.finish().expect("gzip").into()
    }

    fn headers(encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_str(encoding).expect("header"));
        headers
    }

    #[test]
    fn gzip_round_trip() {
        let out = decompress(&headers("gzip"), gzip(b"hello"), 100).expect("inflate");
        assert_eq!(&out[..], b"hello");
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100 << 10, "50 MiB of zeros compresses to {} bytes", bomb.len());
        let err = decompress(&headers("gzip"), bomb, 1 << 20).unwrap_err();
        assert!(
            matches!(err, IngestError::TooLarge { limit, .. } if limit == 1 << 20),
            "{err}"
        );
    }

    #[test]
    fn corrupt_gzip_is_malformed() {
        let err = decompress(&headers("gzip"), Bytes::from_static(b"\x1f\x8b\x08garbage"), 100).unwrap_err();
        assert!(matches!(err, IngestError::Malformed(_)), "{err}");
    }

    #[test]
    fn unknown_encoding_is_unsupported() {
        let err = decompress(&headers("br"), Bytes::from_static(b"x"), 100).unwrap_err();
        assert!(matches!(err, IngestError::Unsupported(_)), "{err}");
    }

    #[test]
    fn otlp_json_with_hex_ids_converts() {
        let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
            "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "name":"GET /","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000080000000",
            "attributes":[{"key":"http.status_code","value":{"intValue":"200"}}]}]}]}]}"#;
        let bytes = json_to_protobuf(json).expect("valid OTLP/JSON");
        let request = crate::receive::wire::ExportTraceServiceRequest::decode(bytes).expect("decodes");
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(&span.name[..], b"GET /");
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 80_000_000);
    }

    #[test]
    fn invalid_json_is_malformed() {
        assert!(matches!(
            json_to_protobuf(b"{\"resourceSpans\": [").unwrap_err(),
            IngestError::Malformed(_)
        ));
    }
}
