//! The running sidecar: binds the listeners, wires receive → extract →
//! analyze → expose, and shuts down in order — stop accepting, finish the
//! requests in flight, drain the analysis queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alert::Dispatcher;
use crate::analyze::service::AnalysisSettings;
use crate::analyze::snapshot::ServiceSnapshot;
use crate::analyze::{self, AnalysisWorkers, LiveShard, Persistence};
use crate::tls::{Alpn, Listener};
use crate::attribute::Attributor;
use crate::attribute::classify::Classifier;
use crate::config::Config;
use crate::detect::event::EventsView;
use crate::expose::admin::{self, AdminState};
use crate::telemetry::metrics::Metrics;
use crate::fleet::FleetSync;
use crate::fleet::restore::{RestoreError, Restored, at_start, restore};
use crate::forward::Forwarder;
use crate::pipeline::{Downstream, EventPipeline};
use crate::receive::{self, Ingest};
use crate::fleet::store::FleetStore;
use crate::store::{EmbeddedStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({key}): {source}; choose a free address or stop the process using it")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::store::FleetError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("cannot set up alert delivery: {0}")]
    Alerts(String),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Forward(#[from] crate::forward::ForwardError),
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error("{key}: {source}")]
    Tls {
        key: &'static str,
        source: crate::tls::TlsError,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("{listener} server failed: {message}")]
pub struct ServeError {
    listener: &'static str,
    message: String,
}

/// A started driftwatch.
pub struct Server {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    admin_addr: SocketAddr,
    ingest: Arc<Ingest>,
    ready: Arc<AtomicBool>,
    stop_receivers: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    receivers: Vec<JoinHandle<Result<(), ServeError>>>,
    admin: JoinHandle<Result<(), ServeError>>,
    workers: AnalysisWorkers,
    events: EventPipeline,
    stop_alerts: watch::Sender<bool>,
    alerts: JoinHandle<()>,
    fleet_sync: Option<JoinHandle<()>>,
    /// Writes the shards' snapshots to the embedded store.
    snapshot_writer: JoinHandle<()>,
    record_writer: Option<crate::record::Writer>,
}

impl Server {
    /// Binds every listener (port 0 picks a free port) and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::new());
        let grpc_listener = bind(config.receiver.grpc_listen, "receiver.grpc_listen").await?;
        let http_listener = bind(config.receiver.http_listen, "receiver.http_listen").await?;
        let admin_listener = bind(config.admin.listen, "admin.listen").await?;
        let local = |l: &TcpListener, configured: SocketAddr| l.local_addr().unwrap_or(configured);
        let grpc_addr = local(&grpc_listener, config.receiver.grpc_listen);
        let http_addr = local(&http_listener, config.receiver.http_listen);
        let admin_addr = local(&admin_listener, config.admin.listen);

        // Both receivers serve one certificate, read and watched once.
        let receiver_certificate = certificate(config.receiver.tls.as_ref(), "receiver.tls").await?;
        let grpc_tls = receiver_certificate.as_ref().map(|c| Listener::new(c, Alpn::H2));
        let http_tls = receiver_certificate.as_ref().map(|c| Listener::new(c, Alpn::Http1));
        let admin_tls = certificate(config.admin.tls.as_ref(), "admin.tls")
            .await?
            .map(|c| Listener::new(&c, Alpn::Http1));

        let store = Arc::new(EmbeddedStore::open(&config.store.path)?);
        let settings = Arc::new(AnalysisSettings::from_config(&config));
        let fleet = match &config.store.postgres_url {
            Some(url) => {
                let replica = crate::fleet::replica_name(config.store.replica.as_deref());
                let fleet = FleetStore::open_sized(url, replica, config.store.fleet_lease, config.store.fleet_pool_size)?;
                tracing::info!(store = %fleet.target(), replica = %fleet.replica(), "fleet mode: sharing baselines, events and alert delivery");
                Some(Arc::new(fleet))
            }
            None => None,
        };
        let restored = restore(&store, fleet.as_deref()).await?;
        let log = EventPipeline::log_of(restored.events);
        let events_view = log.view();
        let attributor = (!config.git.repos.is_empty()).then(|| {
            Arc::new(Attributor::new(
                &config.git.repos,
                Classifier::with_rules(config.ai.rules.clone()),
            ))
        });
        let base_url = config
            .alerts
            .external_url
            .clone()
            .unwrap_or_else(|| format!("http://{admin_addr}"));
        let mut dispatcher = Dispatcher::new(&config.alerts, store.clone(), metrics.clone(), events_view, base_url)
            .map_err(|e| StartError::Alerts(e.to_string()))?;
        if let Some(fleet) = &fleet {
            dispatcher = dispatcher.with_fleet(fleet.clone(), config.store.fleet_lease);
        }
        let dispatcher = Arc::new(dispatcher);
        let (stop_alerts, alerts_stopped) = watch::channel(false);
        let alerts = tokio::spawn(dispatcher.clone().run(alerts_stopped));
        // Ends with the alert dispatcher, at shutdown.
        tokio::spawn(keep_store_writing(store.clone(), stop_alerts.subscribe()));
        let downstream = Downstream {
            attributor,
            store: Some(store.clone()),
            dispatcher: Some(dispatcher),
            fleet: fleet.clone(),
            runtime: tokio::runtime::Handle::current(),
            event_retention: Some(config.store.event_retention),
        };
        let (updates, updates_rx) = crate::detect::event::update_queue();
        let (notices, notices_rx) = crate::pipeline::notice_queue();
        let events = EventPipeline::start(metrics.clone(), downstream, log, updates_rx, notices_rx);
        let Restored {
            snapshots,
            firing,
            rejoined,
            ..
        } = restored;
        let shards = config.analyze.shards.max(1);
        let mut links: Vec<Option<crate::analyze::ShardLink>> = Vec::new();
        let mut fleet_sync = None;
        if let Some(fleet) = &fleet {
            let (sync, shard_links) = FleetSync::new(
                fleet.clone(),
                settings.layout,
                shards,
                notices,
                metrics.clone(),
                &config.store,
            );
            let mut sync = if rejoined { sync } else { sync.rejoin_later(firing) };
            if let Some(baselines) = at_start(Some(fleet), async |f| FleetSync::baselines(f, settings.layout, None, &[]).await).await? {
                tracing::info!(services = baselines.len(), "fleet baselines loaded");
                sync.seed(baselines);
            }
            links = shard_links.into_iter().map(Some).collect();
            fleet_sync = Some(tokio::spawn(sync.run()));
        } else {
            drop(notices);
        }
        let local_snapshots = analyze::mailbox::SnapshotMailbox::new();
        let (queue, workers, coverage) = analyze::start(&config.analyze, metrics.clone(), |index| {
            let mine: Vec<ServiceSnapshot> = snapshots
                .iter()
                .filter(|s| analyze::shard_index(&s.service, shards) == index)
                .cloned()
                .collect();
            let mut persistence =
                Persistence::new(local_snapshots.sender(), config.store.flush_interval, config.store.baseline_retention);
            if let Some(link) = links.get_mut(index).and_then(Option::take) {
                persistence = persistence.with_fleet(link);
            }
            LiveShard::new(settings.clone(), metrics.clone(), updates.clone()).with_persistence(persistence, &mine)
        });
        drop(updates);
        let snapshot_writer = tokio::spawn(analyze::mailbox::write_to_store(
            local_snapshots,
            store.clone(),
            metrics.store.snapshots_written_as_of.clone(),
        ));
        let forwarder = Forwarder::start(&config.forward, metrics.clone())?.map(|(forwarder, _sender)| forwarder);
        let mut ingest = Ingest::new(config.receiver.clone(), queue, metrics.clone(), forwarder);
        if config.receiver.memory_limit_mib > 0 {
            ingest = ingest.with_memory_limit(crate::memory::Resident::sampled());
        }
        let mut record_writer = None;
        if let Some(path) = &config.record.path {
            let (recorder, writer) = crate::record::start(path, config.record.max_queue_bytes, metrics.clone())?;
            tracing::info!(path = %path.display(), "recording accepted requests as OTLP/JSON lines");
            ingest = ingest.with_recorder(recorder);
            record_writer = Some(writer);
        }
        let ingest = Arc::new(ingest);
        let ready = Arc::new(AtomicBool::new(false));
        let (stop_receivers, receivers_stopped) = watch::channel(false);
        let (stop_admin, admin_stopped) = watch::channel(false);

        let token = |path: &Option<std::path::PathBuf>, key| {
            path.as_deref()
                .map(|p| crate::auth::BearerToken::from_file(p, key).map(Arc::new))
                .transpose()
        };
        let otlp_token = token(&config.receiver.bearer_token_file, "receiver.bearer_token_file")?;
        let api_token = token(&config.admin.api_token_file, "admin.api_token_file")?;
        let metrics_token = token(&config.admin.metrics_token_file, "admin.metrics_token_file")?;
        let grpc = {
            let service = receive::grpc::TraceExportService::new(ingest.clone()).with_token(otlp_token.clone());
            let stopped = wait_for(receivers_stopped.clone());
            let r = &config.receiver;
            let mut builder = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(r.max_concurrent_streams))
                .timeout(r.request_timeout)
                .http2_keepalive_interval(Some(r.keepalive_interval))
                .http2_keepalive_timeout(Some(r.keepalive_interval));
            // Without TCP_NODELAY (set on accept) a small response can wait
            // out the client's delayed ACK: 40 ms at moderate load.
            // A peer silent through two keepalive pings is gone.
            let incoming = crate::serve::capped_incoming(grpc_listener, r.max_connections, 2 * r.keepalive_interval, grpc_tls);
            tokio::spawn(async move {
                let (metrics_service, logs_service) = (service.metrics(), service.logs());
                builder
                    .add_service(service)
                    .add_service(metrics_service)
                    .add_service(logs_service)
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .map_err(|e| ServeError {
                        listener: "OTLP/gRPC",
                        message: e.to_string(),
                    })
            })
        };
        let http = serve_http(
            http_listener,
            crate::auth::require(receive::http::router(ingest.clone()), otlp_token),
            crate::serve::ConnectionLimits {
                max_connections: config.receiver.max_connections,
                header_read_timeout: config.receiver.header_read_timeout,
            },
            http_tls,
            receivers_stopped,
        );
        let admin = serve_http(
            admin_listener,
            admin::router(
                AdminState {
                    metrics: metrics.clone(),
                    ready: ready.clone(),
                    events: events.view().clone(),
                    store: Some(store.clone()),
                    fleet: fleet.clone(),
                    coverage,
                    verdict: crate::verdict::Rules::from_config(&config),
                },
                admin::Tokens {
                    api: api_token,
                    metrics: metrics_token,
                },
            ),
            crate::serve::ConnectionLimits {
                max_connections: config.admin.max_connections,
                header_read_timeout: config.admin.header_read_timeout,
            },
            admin_tls,
            admin_stopped,
        );
        ready.store(true, Ordering::Release);
        tracing::info!(%grpc_addr, %http_addr, %admin_addr, "driftwatch listening");
        Ok(Server {
            grpc_addr,
            http_addr,
            admin_addr,
            ingest,
            ready,
            stop_receivers,
            stop_admin,
            receivers: vec![grpc, http],
            admin,
            workers,
            events,
            stop_alerts,
            alerts,
            fleet_sync,
            snapshot_writer,
            record_writer,
        })
    }

    pub(crate) fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub(crate) fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The drift events raised so far.
    pub(crate) fn events(&self) -> &EventsView {
        self.events.view()
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> Result<(), ServeError> {
        signal.await;
        self.shutdown().await
    }

    /// Stops accepting, finishes in-flight requests, drains the analysis.
    pub(crate) async fn shutdown(self) -> Result<(), ServeError> {
        tracing::info!("shutting down: no longer ready, draining receivers");
        self.ready.store(false, Ordering::Release);
        let _ = self.stop_receivers.send(true);
        let mut result = Ok(());
        for receiver in self.receivers {
            result = result.and(receiver.await.unwrap_or_else(|e| {
                Err(ServeError {
                    listener: "receiver",
                    message: e.to_string(),
                })
            }));
        }
        // Receivers are gone; the last queue handle goes with the ingest,
        // and with it the recorder, whose writer then finishes the file.
        drop(self.ingest);
        if let Some(writer) = self.record_writer {
            let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
        }
        self.workers.drain().await;
        // Ends once the shards' final snapshots are written.
        let _ = self.snapshot_writer.await;
        if let Some(sync) = self.fleet_sync {
            // Ends once the shards' final snapshots are published.
            let _ = sync.await;
        }
        self.events.drain().await;
        tracing::info!("analysis drained");
        // Undelivered alerts stay in the outbox for the next start.
        let _ = self.stop_alerts.send(true);
        let _ = self.alerts.await;
        let _ = self.stop_admin.send(true);
        result.and(self.admin.await.unwrap_or_else(|e| {
            Err(ServeError {
                listener: "admin",
                message: e.to_string(),
            })
        }))
    }
}

/// Every second while the store is degraded (a full disk), reopens it and
/// writes what was kept in memory, until `stop`.
async fn keep_store_writing(store: Arc<EmbeddedStore>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        let health = store.health();
        if health.error.is_some() || health.pending > 0 {
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || store.recover()).await;
        }
    }
}

/// A listener's certificate, when TLS is configured.
async fn certificate(
    config: Option<&crate::config::TlsConfig>,
    key: &'static str,
) -> Result<Option<crate::tls::Certificate>, StartError> {
    let Some(config) = config else { return Ok(None) };
    let files = crate::tls::CertificateFiles {
        cert_file: config.cert_file.clone(),
        key_file: config.key_file.clone(),
        reload_interval: config.reload_interval,
    };
    crate::tls::Certificate::watch(&files, key)
        .await
        .map(Some)
        .map_err(|source| StartError::Tls { key, source })
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, key, source })
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: crate::serve::ConnectionLimits,
    tls: Option<crate::tls::Listener>,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<Result<(), ServeError>> {
    tokio::spawn(async move {
        crate::serve::http(listener, router, limits, tls, stopped).await;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
