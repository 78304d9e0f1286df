//! Forward: sends every accepted export request upstream, as the protobuf
//! bytes that arrived (never re-encoded), so driftwatch can sit inline in
//! front of another collector.
//!
//! The path to the upstream is a bounded byte budget and a few sender
//! tasks. A slow or dead upstream never blocks the receivers or the
//! analysis: when the budget is spent, requests are dropped and counted —
//! or, with `prefer_no_loss`, the receivers answer clients with a retryable
//! status instead of accepting what could not be forwarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{ForwardConfig, ForwardProtocol};
use crate::expose::metrics::Metrics;
use crate::receive::grpc::RawCodec;

/// The OTLP signal of a request: traces are analysed; metrics and logs are
/// only acknowledged and forwarded, so SDKs that export every signal to
/// driftwatch work unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub fn as_label(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The gRPC method of its export.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// The OTLP/HTTP path of its export.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }
}

/// A place in the forwarding budget, taken before the request is accepted.
pub struct Reservation {
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
pub enum Refusal {
    /// The budget is spent; with `prefer_no_loss` the client must retry.
    Full { backpressure: bool },
}

struct Item {
    body: Bytes,
    signal: Signal,
    reservation: Reservation,
}

/// The handle receivers use.
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Item>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    prefer_no_loss: bool,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// Starts the sender tasks; `None` when forwarding is not configured.
    pub fn start(config: &ForwardConfig, metrics: Arc<Metrics>) -> Option<(Arc<Forwarder>, Vec<JoinHandle<()>>)> {
        let endpoint = config.endpoint.clone()?;
        let (queue, rx) = mpsc::unbounded_channel::<Item>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let forwarder = Arc::new(Forwarder {
            queue,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes: config.max_queue_bytes,
            prefer_no_loss: config.prefer_no_loss,
            metrics: metrics.clone(),
        });
        let upstream = Upstream::new(&endpoint, config.protocol, config.timeout);
        let tasks = (0..config.concurrency.max(1))
            .map(|_| {
                let (rx, upstream, metrics, forwarder) = (rx.clone(), upstream.clone(), metrics.clone(), forwarder.clone());
                let (retries, backoff) = (config.max_retries, config.initial_backoff);
                tokio::spawn(async move {
                    loop {
                        let item = rx.lock().await.recv().await;
                        let Some(mut item) = item else { break };
                        let outcome = upstream.send_with_retries(&item.body, item.signal, retries, backoff).await;
                        metrics.forward_requests.with_label_values(&[outcome]).inc();
                        item.reservation.sent = true;
                        forwarder.queued_bytes.fetch_sub(item.reservation.bytes, Ordering::AcqRel);
                        metrics
                            .forward_queue_bytes
                            .set(forwarder.queued_bytes.load(Ordering::Acquire) as i64);
                    }
                })
            })
            .collect();
        Some((forwarder, tasks))
    }

    /// Takes room for `bytes` in the budget, or says why not (and counts
    /// the drop when the request will still be accepted).
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, Refusal> {
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
                    self.metrics.forward_requests.with_label_values(&["dropped_queue_full"]).inc();
                }
                Err(Refusal::Full {
                    backpressure: self.prefer_no_loss,
                })
            }
        }
    }

    /// Queues an accepted request.
    pub fn send(&self, body: Bytes, signal: Signal, reservation: Reservation) {
        self.metrics
            .forward_queue_bytes
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
    Grpc { endpoint: String, timeout: Duration },
    /// The collector's base URL; each signal's path is added to it.
    Http { base: String, client: reqwest::Client },
}

impl Upstream {
    fn new(endpoint: &str, protocol: ForwardProtocol, timeout: Duration) -> Upstream {
        match protocol {
            ForwardProtocol::Grpc => Upstream::Grpc {
                endpoint: endpoint.to_owned(),
                timeout,
            },
            ForwardProtocol::Http => Upstream::Http {
                base: endpoint.trim_end_matches('/').trim_end_matches("/v1/traces").to_owned(),
                client: crate::tls::http_client().timeout(timeout).build().unwrap_or_default(),
            },
        }
    }

    /// Returns the outcome label: `sent`, `dropped_rejected` or
    /// `dropped_retries_exhausted`.
    async fn send_with_retries(&self, body: &Bytes, signal: Signal, retries: u32, backoff: Duration) -> &'static str {
        let mut delay = backoff;
        for attempt in 0..=retries {
            match self.send(body.clone(), signal).await {
                Ok(()) => return "sent",
                Err(Failure::Permanent(error)) => {
                    tracing::warn!(%error, "upstream collector rejected a forwarded request; dropping it");
                    return "dropped_rejected";
                }
                Err(Failure::Transient(error)) if attempt < retries => {
                    tracing::debug!(%error, attempt, "forwarding failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(Failure::Transient(error)) => {
                    tracing::warn!(%error, "upstream collector unreachable after retries; dropping a forwarded request");
                }
            }
        }
        "dropped_retries_exhausted"
    }

    async fn send(&self, body: Bytes, signal: Signal) -> Result<(), Failure> {
        match self {
            Upstream::Grpc { endpoint, timeout } => {
                let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| Failure::Permanent(e.to_string()))?
                    .timeout(*timeout)
                    .connect_timeout(*timeout)
                    .connect()
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()))?;
                let mut client = tonic::client::Grpc::new(channel);
                client.ready().await.map_err(|e| Failure::Transient(e.to_string()))?;
                let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
                match client.unary(tonic::Request::new(body), path, RawCodec).await {
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
            Upstream::Http { base, client } => {
                let response = client
                    .post(format!("{base}{}", signal.http_path()))
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()))?;
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

enum Failure {
    Transient(String),
    Permanent(String),
}
