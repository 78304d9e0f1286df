//! Forward: sends every accepted export request upstream, as the protobuf
//! bytes that arrived (never re-encoded), so driftwatch can sit inline in
//! front of another collector.
//!
//! The path to the upstream is a bounded byte budget and one reused
//! connection with a bounded number of requests in flight. A slow or dead
//! upstream never blocks the receivers or the analysis: when the budget is
//! spent, requests are dropped and counted — or, with `prefer_no_loss`, the
//! receivers answer clients with a retryable status instead of accepting
//! what could not be forwarded.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::config::{ForwardCompression, ForwardConfig, ForwardProtocol};
use crate::telemetry::metrics::Metrics;
use crate::receive::codec::RawCodec;

/// The OTLP signal of a request: traces are analysed; metrics and logs are
/// only acknowledged and forwarded, so SDKs that export every signal to
/// driftwatch work unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub(crate) fn as_label(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The gRPC method of its export.
    pub(crate) fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// The OTLP/HTTP path of its export.
    pub(crate) fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }
}

/// A place in the forwarding budget, taken before the request is accepted.
pub(crate) struct Reservation {
    bytes: usize,
    budget: Arc<AtomicUsize>,
    sent: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.sent {
            self.budget.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

/// Why a request could not be queued for forwarding.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// The budget is spent; with `prefer_no_loss` the client must retry.
    Full { backpressure: bool },
}

struct Item {
    body: Bytes,
    signal: Signal,
    reservation: Reservation,
}

/// A running forwarder and its task.
pub(crate) type Started = (Arc<Forwarder>, JoinHandle<()>);

/// The handle receivers use.
pub(crate) struct Forwarder {
    queue: mpsc::UnboundedSender<Item>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    prefer_no_loss: bool,
    metrics: Arc<Metrics>,
}

/// The upstream cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forward.endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("forward.ca_file {path}: {source}")]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error("forward.headers: {0}")]
    Header(String),
}

impl Forwarder {
    /// Starts the sender; `None` when forwarding is not configured.
    ///
    /// One task takes queued requests in order and starts each send as its
    /// own task, holding one of `concurrency` permits: the requests in flight
    /// follow the upstream's latency (rate × latency) up to that cap, all
    /// over one reused connection.
    pub(crate) fn start(
        config: &ForwardConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Started>, ForwardError> {
        let Some(endpoint) = config.endpoint.clone() else {
            return Ok(None);
        };
        let upstream = Upstream::new(&endpoint, config)?;
        let (queue, mut rx) = mpsc::unbounded_channel::<Item>();
        let forwarder = Arc::new(Forwarder {
            queue,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes: config.max_queue_bytes,
            prefer_no_loss: config.prefer_no_loss,
            metrics: metrics.clone(),
        });
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let (retries, backoff) = (config.max_retries, config.initial_backoff);
        let sender = {
            let forwarder = forwarder.clone();
            tokio::spawn(async move {
                while let Some(item) = rx.recv().await {
                    let Ok(permit) = permits.clone().acquire_owned().await else { break };
                    let (upstream, metrics, forwarder) = (upstream.clone(), metrics.clone(), forwarder.clone());
                    tokio::spawn(async move {
                        // The whole item moves in, so that its reservation
                        // is marked sent, not a copy of the flag.
                        let (mut item, _permit) = (item, permit);
                        let outcome = upstream.send_with_retries(&item.body, item.signal, retries, backoff).await;
                        metrics.forward.requests.with_label_values(&[outcome]).inc();
                        item.reservation.sent = true;
                        forwarder.queued_bytes.fetch_sub(item.reservation.bytes, Ordering::AcqRel);
                        metrics
                            .forward
                            .queue_bytes
                            .set(forwarder.queued_bytes.load(Ordering::Acquire) as i64);
                    });
                }
            })
        };
        Ok(Some((forwarder, sender)))
    }

    /// Takes room for `bytes` in the budget, or says why not (and counts
    /// the drop when the request will still be accepted).
    pub(crate) fn reserve(&self, bytes: usize) -> Result<Reservation, Refusal> {
        let taken = self.queued_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            (q + bytes <= self.max_bytes).then_some(q + bytes)
        });
        match taken {
            Ok(_) => Ok(Reservation {
                bytes,
                budget: self.queued_bytes.clone(),
                sent: false,
            }),
            Err(_) => {
                if !self.prefer_no_loss {
                    self.metrics.forward.requests.with_label_values(&["dropped_queue_full"]).inc();
                }
                Err(Refusal::Full {
                    backpressure: self.prefer_no_loss,
                })
            }
        }
    }

    /// Queues an accepted request.
    pub(crate) fn send(&self, body: Bytes, signal: Signal, reservation: Reservation) {
        self.metrics
            .forward
            .queue_bytes
            .set(self.queued_bytes.load(Ordering::Acquire) as i64);
        // The senders live as long as the process.
        let _ = self.queue.send(Item {
            body,
            signal,
            reservation,
        });
    }
}

#[derive(Clone)]
enum Upstream {
    /// One channel, connected lazily and reconnected by tonic when it
    /// breaks; HTTP/2 carries every request in flight over it.
    Grpc {
        channel: tonic::transport::Channel,
        metadata: tonic::metadata::MetadataMap,
        gzip: bool,
    },
    /// The collector's base URL; each signal's path is added to it. The
    /// client keeps its connections alive and reuses them.
    Http {
        base: String,
        client: reqwest::Client,
        gzip: bool,
    },
}

impl Upstream {
    fn new(endpoint: &str, config: &ForwardConfig) -> Result<Upstream, ForwardError> {
        let invalid = |reason: String| ForwardError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let ca = match &config.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| ForwardError::CaFile {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let gzip = config.compression == ForwardCompression::Gzip;
        match config.protocol {
            ForwardProtocol::Grpc => {
                let mut channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
                    .map_err(|e| invalid(e.to_string()))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_while_idle(true);
                if endpoint.starts_with("https://") {
                    crate::tls::install_crypto_provider();
                    let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
                    if let Some(pem) = &ca {
                        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                    }
                    channel = channel.tls_config(tls).map_err(|e| invalid(e.to_string()))?;
                }
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &config.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                        .map_err(|e| ForwardError::Header(format!("{name:?}: {e}")))?;
                    let value = value
                        .parse()
                        .map_err(|e| ForwardError::Header(format!("{name:?}: {e}")))?;
                    metadata.insert(key, value);
                }
                Ok(Upstream::Grpc {
                    channel: channel.connect_lazy(),
                    metadata,
                    gzip,
                })
            }
            ForwardProtocol::Http => {
                let mut headers = http::HeaderMap::new();
                for (name, value) in &config.headers {
                    let name = http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|e| ForwardError::Header(format!("{name:?}: {e}")))?;
                    let value = http::HeaderValue::from_str(value)
                        .map_err(|e| ForwardError::Header(format!("{name:?}: {e}")))?;
                    headers.insert(name, value);
                }
                let mut client = crate::tls::http_client()
                    .timeout(config.timeout)
                    .tcp_nodelay(true)
                    .default_headers(headers);
                if let Some(pem) = &ca {
                    for certificate in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| invalid(e.to_string()))? {
                        client = client.add_root_certificate(certificate);
                    }
                }
                Ok(Upstream::Http {
                    base: endpoint.trim_end_matches('/').trim_end_matches("/v1/traces").to_owned(),
                    client: client.build().map_err(|e| invalid(e.to_string()))?,
                    gzip,
                })
            }
        }
    }

    /// Returns the outcome label: `sent`, `dropped_rejected` or
    /// `dropped_retries_exhausted`.
    async fn send_with_retries(&self, body: &Bytes, signal: Signal, retries: u32, backoff: Duration) -> &'static str {
        with_retries(retries, backoff, move || self.send(body.clone(), signal)).await
    }

    async fn send(&self, body: Bytes, signal: Signal) -> Result<(), Failure> {
        match self {
            Upstream::Grpc { channel, metadata, gzip } => {
                let mut client = tonic::client::Grpc::new(channel.clone());
                if *gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                client.ready().await.map_err(|e| Failure::Transient(e.to_string()))?;
                let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                match client.unary(request, path, RawCodec).await {
                    Ok(_) => Ok(()),
                    Err(status) => match status.code() {
                        tonic::Code::Unavailable
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Aborted => Err(Failure::Transient(status.to_string())),
                        _ => Err(Failure::Permanent(status.to_string())),
                    },
                }
            }
            Upstream::Http { base, client, gzip } => {
                let mut request = client
                    .post(format!("{base}{}", signal.http_path()))
                    .header("content-type", "application/x-protobuf");
                let body = if *gzip {
                    request = request.header("content-encoding", "gzip");
                    // Compression is CPU work: off the runtime's threads.
                    tokio::task::spawn_blocking(move || gzip_bytes(&body))
                        .await
                        .map_err(|e| Failure::Permanent(format!("compression failed: {e}")))?
                } else {
                    body
                };
                let response = request.body(body).send().await.map_err(|e| Failure::Transient(e.to_string()))?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else if status.as_u16() == 429 || status.is_server_error() {
                    Err(Failure::Transient(format!("upstream answered {status}")))
                } else {
                    Err(Failure::Permanent(format!("upstream answered {status}")))
                }
            }
        }
    }
}

/// Longest wait between two attempts to forward one request.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Tries `send` until it succeeds, fails for good or has been retried
/// `retries` times, waiting `backoff` after the first failure and twice as
/// long after each next one, up to [`MAX_BACKOFF`]; returns the outcome
/// label. The waits are tokio's, which a test can pause.
async fn with_retries<F, Fut>(retries: u32, backoff: Duration, mut send: F) -> &'static str
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let mut delay = backoff;
    for attempt in 0..=retries {
        match send().await {
            Ok(()) => return "sent",
            Err(Failure::Permanent(error)) => {
                tracing::warn!(%error, "upstream collector rejected a forwarded request; dropping it");
                return "dropped_rejected";
            }
            Err(Failure::Transient(error)) if attempt < retries => {
                tracing::debug!(%error, attempt, "forwarding failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(Failure::Transient(error)) => {
                tracing::warn!(%error, "upstream collector unreachable after retries; dropping a forwarded request");
            }
        }
    }
    "dropped_retries_exhausted"
}

fn gzip_bytes(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

enum Failure {
    Transient(String),
    Permanent(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use tokio::time::Instant;

    /// Forwards against an upstream that fails the first `failures`
    /// attempts with `failure`, on the paused clock; returns the outcome
    /// and the seconds at which each attempt was made.
    async fn forward(retries: u32, backoff: Duration, failures: usize, failure: fn() -> Failure) -> (&'static str, Vec<u64>) {
        let start = Instant::now();
        let attempts = RefCell::new(Vec::new());
        let attempts_ref = &attempts;
        let outcome = with_retries(retries, backoff, move || async move {
            let mut attempts = attempts_ref.borrow_mut();
            attempts.push(start.elapsed().as_secs());
            if attempts.len() <= failures { Err(failure()) } else { Ok(()) }
        })
        .await;
        (outcome, attempts.into_inner())
    }

    fn unavailable() -> Failure {
        Failure::Transient("upstream answered 503 Service Unavailable".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_after_a_doubling_backoff() {
        let (outcome, attempts) = forward(5, Duration::from_secs(1), 3, unavailable).await;
        assert_eq!(outcome, "sent");
        assert_eq!(attempts, [0, 1, 3, 7]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_backoff_is_capped_and_the_request_dropped_after_its_retries() {
        let (outcome, attempts) = forward(7, Duration::from_secs(4), usize::MAX, unavailable).await;
        assert_eq!(outcome, "dropped_retries_exhausted");
        // 4, 8, 16, then 30 s (not 32, 64, 128) between attempts.
        assert_eq!(attempts, [0, 4, 12, 28, 58, 88, 118, 148]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_request_is_dropped_without_a_retry() {
        let (outcome, attempts) =
            forward(5, Duration::from_secs(1), usize::MAX, || Failure::Permanent("upstream answered 400".into())).await;
        assert_eq!(outcome, "dropped_rejected");
        assert_eq!(attempts, [0]);
        let (outcome, attempts) = forward(0, Duration::from_secs(1), usize::MAX, unavailable).await;
        assert_eq!((outcome, attempts.as_slice()), ("dropped_retries_exhausted", &[0][..]), "max_retries = 0");
    }
}
