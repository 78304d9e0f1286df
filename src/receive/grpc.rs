//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`,
//! and the metrics and logs services, which are acknowledged and forwarded
//! but not analysed (see [`Ingest::export_other`]).
//!
//! The service is served through tonic with a pass-through codec rather
//! than a generated prost codec: the handler receives the request's bytes
//! (decompressed by tonic, within `max_decompressed_bytes`), so the same
//! lenient decoder serves gRPC and HTTP, and forwarding can send upstream
//! exactly what arrived. The request body as received (compressed or not)
//! is held to `max_request_bytes` before tonic reads it, and a request over
//! either size limit is answered `RESOURCE_EXHAUSTED` without `RetryInfo`
//! (not retryable), naming the limit.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Status};

use super::codec::RawCodec;
use super::{Ingest, IngestError, Transport, rpc_status};
use crate::forward::Signal;

pub(crate) const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

/// The gRPC trace service, to be added to a `tonic` router.
#[derive(Clone)]
pub(crate) struct TraceExportService {
    ingest: Arc<Ingest>,
    token: Option<Arc<crate::auth::BearerToken>>,
    signal: Signal,
}

impl TraceExportService {
    pub(crate) fn new(ingest: Arc<Ingest>) -> TraceExportService {
        TraceExportService {
            ingest,
            token: None,
            signal: Signal::Traces,
        }
    }

    /// The metrics service, served by the same limits and token.
    pub(crate) fn metrics(&self) -> MetricsExportService {
        MetricsExportService(TraceExportService {
            signal: Signal::Metrics,
            ..self.clone()
        })
    }

    /// The logs service, served by the same limits and token.
    pub(crate) fn logs(&self) -> LogsExportService {
        LogsExportService(TraceExportService {
            signal: Signal::Logs,
            ..self.clone()
        })
    }

    /// Requires exports to carry `token` (`authorization: Bearer …`).
    pub(crate) fn with_token(mut self, token: Option<Arc<crate::auth::BearerToken>>) -> TraceExportService {
        self.token = token;
        self
    }
}

impl NamedService for TraceExportService {
    const NAME: &'static str = SERVICE_NAME;
}

/// `MetricsService/Export`: acknowledged and forwarded.
#[derive(Clone)]
pub(crate) struct MetricsExportService(TraceExportService);

impl NamedService for MetricsExportService {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

/// `LogsService/Export`: acknowledged and forwarded.
#[derive(Clone)]
pub(crate) struct LogsExportService(TraceExportService);

impl NamedService for LogsExportService {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

macro_rules! delegate_service {
    ($service:ty) => {
        impl<B> tower::Service<http::Request<B>> for $service
        where
            B: http_body::Body<Data = Bytes> + Send + 'static,
            B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
        {
            type Response = http::Response<tonic::body::Body>;
            type Error = Infallible;
            type Future = BoxFuture<Result<Self::Response, Infallible>>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<B>) -> Self::Future {
                self.0.call(request)
            }
        }
    };
}

delegate_service!(MetricsExportService);
delegate_service!(LogsExportService);

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for TraceExportService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let ingest = self.ingest.clone();
        let signal = self.signal;
        if request.uri().path() != signal.grpc_path() {
            return Box::pin(async move { Ok(Status::unimplemented(format!("only {} is served here", signal.grpc_path())).into_http()) });
        }
        if let Some(token) = &self.token {
            let authorization = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if !token.accepts(authorization) {
                return Box::pin(async move {
                    Ok(Status::unauthenticated("a bearer token is required (authorization: Bearer …)").into_http())
                });
            }
        }
        Box::pin(async move {
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let limit = ingest.config().max_decompressed_bytes;
            // The body as sent: the message plus gRPC's 5-byte frame header.
            let wire_limit = ingest.config().max_request_bytes.saturating_add(5);
            let over_wire_limit = Arc::new(AtomicBool::new(false));
            let flag = over_wire_limit.clone();
            let request = request.map(move |body| {
                Limited::new(body, wire_limit).map_err(move |error| {
                    if error.is::<LengthLimitError>() {
                        flag.store(true, Ordering::Release);
                    }
                    error
                })
            });
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(limit), None);
            let reached_handler = Arc::new(AtomicBool::new(false));
            let handler = ExportHandler {
                ingest: ingest.clone(),
                reached: reached_handler.clone(),
                signal,
            };
            let response = grpc.unary(handler, request).await;
            if reached_handler.load(Ordering::Acquire) {
                return Ok(response);
            }
            // tonic refused the request before the handler: framing,
            // decompression, or a size limit.
            let refusal = if over_wire_limit.load(Ordering::Acquire) {
                IngestError::TooLarge {
                    limit: ingest.config().max_request_bytes,
                    what: "as received",
                    key: "max_request_bytes",
                }
            } else {
                refusal_of(&response, limit)
            };
            ingest.record_refused(Transport::Grpc, &refusal);
            match refusal {
                IngestError::TooLarge { .. } => Ok(status_of(&refusal).into_http()),
                _ => Ok(response),
            }
        })
    }
}

/// Classifies a refusal that tonic produced, from the status it set.
fn refusal_of(response: &http::Response<tonic::body::Body>, limit: usize) -> IngestError {
    let status = Status::from_header_map(response.headers());
    let message = status.as_ref().map(|s| s.message().to_owned()).unwrap_or_default();
    match status.map(|s| s.code()) {
        Some(Code::ResourceExhausted | Code::OutOfRange) => IngestError::TooLarge {
            limit,
            what: "decompressed",
            key: "max_decompressed_bytes",
        },
        Some(Code::Unimplemented) => IngestError::Unsupported(message),
        _ => IngestError::Malformed(message),
    }
}

struct ExportHandler {
    ingest: Arc<Ingest>,
    reached: Arc<AtomicBool>,
    signal: Signal,
}

impl UnaryService<Bytes> for ExportHandler {
    type Response = Bytes;
    type Future = BoxFuture<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.reached.store(true, Ordering::Release);
        let ingest = self.ingest.clone();
        let signal = self.signal;
        Box::pin(async move {
            if signal != Signal::Traces {
                // An empty Export…ServiceResponse: nothing was rejected.
                return match ingest.export_other(signal, Transport::Grpc, request.into_inner()) {
                    Ok(()) => Ok(tonic::Response::new(Bytes::new())),
                    Err(error) => Err(status_of(&error)),
                };
            }
            match ingest.export(Transport::Grpc, request.into_inner()) {
                Ok(accepted) => Ok(tonic::Response::new(accepted.response().encode_to_vec().into())),
                Err(error) => Err(status_of(&error)),
            }
        })
    }
}

/// The gRPC status OTLP prescribes for each refusal: UNAVAILABLE with
/// RetryInfo for transient overload, non-retryable codes for bad requests.
pub(crate) fn status_of(error: &IngestError) -> Status {
    let code = match error {
        IngestError::Backpressure { .. } | IngestError::Overloaded { .. } | IngestError::MemoryLimit { .. } => Code::Unavailable,
        // Without RetryInfo, RESOURCE_EXHAUSTED is not retried: the
        // exporter must send smaller batches.
        IngestError::TooLarge { .. } | IngestError::TooManySpans { .. } => Code::ResourceExhausted,
        IngestError::Malformed(_) => Code::InvalidArgument,
        IngestError::Unsupported(_) => Code::Unimplemented,
    };
    let message = error.to_string();
    match error.retry_after() {
        Some(delay) => {
            let details = rpc_status(code as i32, &message, Some(delay)).encode_to_vec();
            Status::with_details(code, message, details.into())
        }
        None => Status::new(code, message),
    }
}
