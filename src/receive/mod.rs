//! Receive: the OTLP front door. gRPC (`grpc`) and OTLP/HTTP (`http`) both
//! hand raw protobuf bytes to [`Ingest`], which enforces the limits, decodes,
//! extracts facts and admits them to the analysis queue — or answers with
//! the OTLP status that tells the client what to do (partial success, fix the
//! request, or retry later).

pub mod codec;
pub(crate) mod grpc;
pub mod http;
pub(crate) mod otlp;
pub mod view;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::sync::Semaphore;

use crate::analyze::{AnalysisQueue, QueueFull};
use crate::config::ReceiverConfig;
use crate::telemetry::metrics::Metrics;
use crate::extract::{Extractor, Rejections, SpanFact};
use crate::forward::{Forwarder, Refusal};

/// Distinct strings kept by the interner shared by all receivers.
const MAX_INTERNED_STRINGS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Transport {
    pub(crate) fn as_label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::HttpProtobuf => "http_protobuf",
            Transport::HttpJson => "http_json",
        }
    }
}

/// A whole request refused. Each maps to a gRPC code and an HTTP status in
/// its transport module.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("request is not a valid OTLP ExportTraceServiceRequest: {0}")]
    Malformed(String),
    #[error("request body exceeds {limit} bytes ({what}); send smaller batches or raise receiver.{key}")]
    TooLarge {
        limit: usize,
        what: &'static str,
        key: &'static str,
    },
    #[error("request carries {count} spans, more than receiver.max_spans_per_request = {max}; lower the exporter's batch size")]
    TooManySpans { count: usize, max: usize },
    #[error("analysis is saturated ({queued} spans queued); retry after {retry_after:?}")]
    Backpressure { queued: usize, retry_after: Duration },
    #[error("too many export requests in flight (receiver.max_concurrent_requests = {max}); retry after {retry_after:?}")]
    Overloaded { max: usize, retry_after: Duration },
    #[error("memory in use ({rss_mib} MiB) is above receiver.memory_limit_mib = {limit_mib}; retry after {retry_after:?}")]
    MemoryLimit {
        rss_mib: u64,
        limit_mib: u64,
        retry_after: Duration,
    },
    #[error("{0}")]
    Unsupported(String),
}

impl IngestError {
    /// The `outcome` label of `driftwatch_export_requests_total`.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            IngestError::Malformed(_) => "malformed",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::TooManySpans { .. } => "too_many_spans",
            IngestError::Backpressure { .. } => "backpressure",
            IngestError::Overloaded { .. } => "overloaded",
            IngestError::MemoryLimit { .. } => "memory_limit",
            IngestError::Unsupported(_) => "unsupported",
        }
    }

    /// Whether the client should retry the same request later.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Backpressure { retry_after, .. }
            | IngestError::Overloaded { retry_after, .. }
            | IngestError::MemoryLimit { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The result of an accepted request: which spans, if any, were refused.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    pub rejected: Rejections,
}

impl Accepted {
    /// The OTLP response: empty on full success, partial success otherwise.
    pub(crate) fn response(&self) -> wire::ExportTraceServiceResponse {
        let rejected = self.rejected.total();
        wire::ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| wire::ExportTracePartialSuccess {
                rejected_spans: i64::from(rejected),
                error_message: self.rejected.message(),
            }),
        }
    }
}

/// The shared path of every receiver: limits, decode, extract, admit.
pub(crate) struct Ingest {
    config: ReceiverConfig,
    extractor: Extractor,
    analysis: AnalysisQueue,
    metrics: Arc<Metrics>,
    in_flight: Semaphore,
    forwarder: Option<Arc<Forwarder>>,
    /// Resident memory, for `receiver.memory_limit_mib`.
    resident: Option<Arc<crate::memory::Resident>>,
    /// Where accepted requests are recorded (`record.path`).
    recorder: Option<crate::record::Recorder>,
}

impl Ingest {
    pub(crate) fn new(
        config: ReceiverConfig,
        analysis: AnalysisQueue,
        metrics: Arc<Metrics>,
        forwarder: Option<Arc<Forwarder>>,
    ) -> Ingest {
        Ingest {
            extractor: Extractor::new(config.max_future_skew, MAX_INTERNED_STRINGS),
            in_flight: Semaphore::new(config.max_concurrent_requests),
            config,
            analysis,
            metrics,
            forwarder,
            resident: None,
            recorder: None,
        }
    }

    /// Records every accepted request through `recorder`.
    pub(crate) fn with_recorder(mut self, recorder: crate::record::Recorder) -> Ingest {
        self.recorder = Some(recorder);
        self
    }

    /// Refuses new data while `resident` memory is above
    /// `receiver.memory_limit_mib`.
    pub(crate) fn with_memory_limit(mut self, resident: Arc<crate::memory::Resident>) -> Ingest {
        self.resident = Some(resident);
        self
    }

    pub(crate) fn config(&self) -> &ReceiverConfig {
        &self.config
    }

    /// Processes one protobuf-encoded export request and records its outcome.
    pub(crate) fn export(&self, transport: Transport, body: Bytes) -> Result<Accepted, IngestError> {
        let started = Instant::now();
        let result = self.export_inner(transport, body);
        self.record(transport, &result);
        self.metrics
            .receive
            .request_duration
            .with_label_values(&[transport.as_label()])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// A metrics or logs export (protobuf, or OTLP/JSON over HTTP): not
    /// analysed; forwarded as it arrived when forwarding is on, otherwise
    /// acknowledged. Either way it is counted, so nothing disappears
    /// unseen.
    pub(crate) fn export_other(&self, signal: crate::forward::Signal, transport: Transport, body: Bytes) -> Result<(), IngestError> {
        let count = |outcome: &str| {
            self.metrics
                .receive
                .other_signals
                .with_label_values(&[signal.as_label(), transport.as_label(), outcome])
                .inc();
        };
        if body.len() > self.config.max_decompressed_bytes {
            count("too_large");
            return Err(IngestError::TooLarge {
                limit: self.config.max_decompressed_bytes,
                what: "decompressed",
                key: "max_decompressed_bytes",
            });
        }
        let Some(forwarder) = &self.forwarder else {
            count("acknowledged");
            return Ok(());
        };
        if transport == Transport::HttpJson {
            // The upstream is spoken to in protobuf, and metrics and logs
            // are not decoded here: refused rather than lost.
            count("unsupported");
            return Err(IngestError::Unsupported(format!(
                "OTLP/JSON {} cannot be forwarded; export them as http/protobuf or grpc",
                signal.as_label()
            )));
        }
        match forwarder.reserve(body.len()) {
            Ok(reservation) => {
                forwarder.send(body, signal, reservation);
                count("forwarded");
                Ok(())
            }
            Err(Refusal::Full { backpressure: true }) => {
                count("backpressure");
                Err(IngestError::Backpressure {
                    queued: self.analysis.queued(),
                    retry_after: self.config.retry_after,
                })
            }
            Err(Refusal::Full { backpressure: false }) => {
                count("dropped_queue_full");
                Ok(())
            }
        }
    }

    /// Counts a request refused before it reached [`Ingest::export`] (bad
    /// framing, decompression limits), where the transport detected it.
    pub(crate) fn record_refused(&self, transport: Transport, error: &IngestError) {
        self.metrics
            .receive
            .requests
            .with_label_values(&[transport.as_label(), error.outcome()])
            .inc();
    }

    fn export_inner(&self, transport: Transport, body: Bytes) -> Result<Accepted, IngestError> {
        if let Some(resident) = &self.resident {
            let limit = self.config.memory_limit_mib.saturating_mul(1 << 20);
            let rss = resident.bytes();
            if limit > 0 && rss > limit {
                return Err(IngestError::MemoryLimit {
                    rss_mib: rss >> 20,
                    limit_mib: self.config.memory_limit_mib,
                    retry_after: self.config.retry_after,
                });
            }
        }
        let _permit = self.in_flight.try_acquire().map_err(|_| IngestError::Overloaded {
            max: self.config.max_concurrent_requests,
            retry_after: self.config.retry_after,
        })?;
        if body.len() > self.config.max_decompressed_bytes {
            return Err(IngestError::TooLarge {
                limit: self.config.max_decompressed_bytes,
                what: "decompressed",
                key: "max_decompressed_bytes",
            });
        }
        // Room upstream is taken first: a request that could be analysed
        // but not forwarded must not be half-accepted.
        let reservation = match &self.forwarder {
            Some(forwarder) => match forwarder.reserve(body.len()) {
                Ok(reservation) => Some(reservation),
                Err(Refusal::Full { backpressure: true }) => {
                    return Err(IngestError::Backpressure {
                        queued: self.analysis.queued(),
                        retry_after: self.config.retry_after,
                    });
                }
                Err(Refusal::Full { backpressure: false }) => None,
            },
            None => None,
        };
        let forward_body = reservation.as_ref().map(|_| body.clone());
        let request = view::RequestView::parse(&body).map_err(|e| IngestError::Malformed(e.to_string()))?;
        let count = request.span_count();
        if count > self.config.max_spans_per_request {
            self.count_rejected("too_many_spans", transport, count);
            return Err(IngestError::TooManySpans {
                count,
                max: self.config.max_spans_per_request,
            });
        }
        let mut facts: Vec<SpanFact> = Vec::with_capacity(count);
        let rejected = self
            .extractor
            .extract(&request, unix_nanos_now(), &mut facts)
            .map_err(|e| IngestError::Malformed(e.to_string()))?;
        for (reason, n) in rejected.by_reason() {
            self.count_rejected(reason.as_label(), transport, n as usize);
        }
        let accepted = facts.len();
        let received = self.count_received_later(&facts);
        if let Err(QueueFull { queued, .. }) = self.analysis.try_submit(facts) {
            self.count_rejected("backpressure", transport, accepted);
            return Err(IngestError::Backpressure {
                queued,
                retry_after: self.config.retry_after,
            });
        }
        self.count_received(transport, &received);
        if let Some(recorder) = &self.recorder {
            recorder.record(&body);
        }
        if let (Some(forwarder), Some(body), Some(reservation)) = (&self.forwarder, forward_body, reservation) {
            forwarder.send(body, crate::forward::Signal::Traces, reservation);
        }
        Ok(Accepted { rejected })
    }

    /// Spans per service, in runs: facts arrive grouped by resource, so a
    /// request has few runs. Taken before the facts move to the analysis.
    fn count_received_later(&self, facts: &[SpanFact]) -> Vec<(crate::extract::ServiceKey, u64)> {
        facts
            .chunk_by(SpanFact::same_service)
            .map(|run| (run[0].key(), run.len() as u64))
            .collect()
    }

    /// Counts accepted spans per service.
    fn count_received(&self, transport: Transport, runs: &[(crate::extract::ServiceKey, u64)]) {
        for (service, n) in runs {
            let [service, environment] = self.metrics.service_labels(service);
            self.metrics
                .receive
                .spans_received
                .with_label_values(&[service, environment, transport.as_label()])
                .inc_by(*n);
        }
    }

    fn count_rejected(&self, reason: &str, transport: Transport, n: usize) {
        if n > 0 {
            self.metrics
                .receive
                .spans_rejected
                .with_label_values(&[reason, transport.as_label()])
                .inc_by(n as u64);
        }
    }

    fn record(&self, transport: Transport, result: &Result<Accepted, IngestError>) {
        let outcome = match result {
            Ok(accepted) if accepted.rejected.total() > 0 => "partial",
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .receive
            .requests
            .with_label_values(&[transport.as_label(), outcome])
            .inc();
    }
}

fn unix_nanos_now() -> u64 {
    crate::clock::unix_nanos()
}

/// A `google.rpc.Status` carrying `RetryInfo`, as OTLP prescribes for
/// retryable refusals.
pub(crate) fn rpc_status(code: i32, message: &str, retry_after: Option<Duration>) -> wire::RpcStatus {
    wire::RpcStatus {
        code,
        message: message.to_owned(),
        details: retry_after
            .map(|delay| wire::RpcAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: wire::RetryInfo {
                    retry_delay: Some(wire::RpcDuration {
                        seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                        nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
                    }),
                }
                .encode_to_vec()
                .into(),
            })
            .into_iter()
            .collect(),
    }
}
