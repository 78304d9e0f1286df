//! Listeners with bounds, whatever clients do.
//!
//! Every accepted connection holds a permit of its listener's own
//! semaphore: past `max_connections`, new connections wait in the kernel's
//! accept queue, and the admin listener's cap is separate from the
//! receivers', so idle admin clients can never use up the descriptors that
//! ingestion needs. An HTTP/1 connection must send a request's headers
//! within `header_read_timeout` once it starts them (slowloris), and is
//! closed when it neither sends nor receives anything for as long (idle
//! floods, idle keep-alive connections, stalled uploads). A gRPC connection
//! is closed after `idle_timeout` without traffic either way (the server's
//! HTTP/2 keepalive pings count, so only a peer that stopped answering, or
//! never spoke HTTP/2, is cut); its stream cap, request timeout and
//! keepalive come from the tonic server that `server.rs` builds.
//!
//! With TLS, the handshake runs in the connection's own task and must end
//! within the header-read timeout (or the gRPC idle cut), so a client that
//! opens connections and never finishes a handshake holds only its permit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

/// How many connections a listener holds, and how long headers may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Serves `router` over HTTP/1 on `listener` until `stopped` turns true;
/// then stops accepting and lets requests in flight finish.
pub(crate) async fn http(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    tls: Option<crate::tls::Listener>,
    mut stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, _) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.ok(),
            _ = until_true(&mut stopped) => None,
        };
        let Some(permit) = permit else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors or a connection reset before it
                    // was accepted: keep serving the others.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = until_true(&mut stopped) => break,
        };
        // No Nagle delay on small responses.
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let close = closing.subscribe();
        let timeout = limits.header_read_timeout;
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            let stream = Idle::new(stream, timeout);
            match tls {
                None => serve_http1(stream, service, timeout, close).await,
                Some(tls) => {
                    if let Some(stream) = handshake(&tls, stream, timeout).await {
                        serve_http1(stream, service, timeout, close).await;
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_http1<S>(
    stream: S,
    service: hyper_util::service::TowerToHyperService<axum::Router>,
    timeout: Duration,
    mut close: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(timeout);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = close.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The TLS handshake, bounded by `timeout`; a failed one is logged at debug
/// (scanners and plain-text clients are routine, not news).
async fn handshake(
    tls: &crate::tls::Listener,
    stream: Idle,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<Idle>> {
    match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not finished in time");
            None
        }
    }
}

async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|stopped| *stopped).await;
}

/// Accepted connections for tonic, each holding a permit of a semaphore of
/// `max_connections`, with TCP_NODELAY set, closed after `idle_timeout`
/// without traffic, and wrapped in TLS when `tls` is set.
pub(crate) fn capped_incoming(
    listener: TcpListener,
    max_connections: usize,
    idle_timeout: Duration,
    tls: Option<crate::tls::Listener>,
) -> Incoming {
    let (tx, rx) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let stream = Idle::new(stream, idle_timeout);
            match &tls {
                None => {
                    let connection = Capped {
                        stream: Stream::Plain(stream),
                        _permit: permit,
                    };
                    if tx.send(Ok(connection)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    // Handshakes run beside the accept loop: a slow one
                    // holds its own permit, not the listener.
                    let (tls, tx) = (tls.clone(), tx.clone());
                    tokio::spawn(async move {
                        if let Some(stream) = handshake(&tls, stream, idle_timeout).await {
                            let connection = Capped {
                                stream: Stream::Tls(Box::new(stream)),
                                _permit: permit,
                            };
                            let _ = tx.send(Ok(connection)).await;
                        }
                    });
                }
            }
        }
    });
    Incoming { rx }
}

/// The stream of connections `capped_incoming` accepts.
pub(crate) struct Incoming {
    rx: mpsc::Receiver<std::io::Result<Capped>>,
}

impl futures_core::Stream for Incoming {
    type Item = std::io::Result<Capped>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A connection that gives its permit back when it closes.
pub(crate) struct Capped {
    stream: Stream,
    _permit: OwnedSemaphorePermit,
}

enum Stream {
    Plain(Idle),
    Tls(Box<tokio_rustls::server::TlsStream<Idle>>),
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.stream {
            Stream::Plain(idle) => idle.stream.connect_info(),
            Stream::Tls(tls) => tls.get_ref().0.stream.connect_info(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Capped {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A connection that fails once nothing moved either way for `timeout`.
struct Idle<S = TcpStream> {
    stream: S,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Idle<S> {
    fn new(stream: S, timeout: Duration) -> Idle<S> {
        Idle {
            stream,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        let next = tokio::time::Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection idle for longer than the header read timeout",
            ))),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    /// Within a millisecond of `expected` after `start` (the timer wheel's
    /// resolution; the paused clock jumps straight to each deadline).
    fn at(start: Instant, expected: Duration) {
        let elapsed = start.elapsed();
        assert!(elapsed >= expected && elapsed <= expected + Duration::from_millis(1), "{elapsed:?}, not {expected:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_cut_after_the_timeout_without_traffic_and_traffic_either_way_defers_the_cut() {
        let timeout = Duration::from_secs(10);
        let (mut client, server) = tokio::io::duplex(64);
        let mut connection = Idle::new(server, timeout);
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"GET").await.expect("write");
            client
        });
        let mut buf = [0u8; 8];
        let n = connection.read(&mut buf).await.expect("the request's first bytes, before the cut");
        assert_eq!(&buf[..n], b"GET");
        at(start, Duration::from_secs(6));
        // An answer at 12 s counts as traffic too: the cut moves to 22 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        connection.write_all(b"HTTP").await.expect("answer");
        let _client = sender.await.expect("sender");
        let error = connection.read(&mut buf).await.expect_err("silent for the whole timeout");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        at(start, Duration::from_secs(22));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_sends_is_cut_at_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let mut connection = Idle::new(server, Duration::from_secs(10));
        let start = Instant::now();
        let error = connection.read(&mut [0u8; 8]).await.expect_err("nothing arrives");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        at(start, Duration::from_secs(10));
    }
}
