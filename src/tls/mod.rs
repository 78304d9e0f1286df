//! TLS, both ways, on rustls with the ring provider chosen once per process.
//!
//! Outgoing HTTPS (Slack, PagerDuty, webhooks) goes through
//! [`http_client`], because reqwest refuses to build a client before a
//! provider is installed. Listeners take a [`Listener`]: its certificate is
//! read from PEM files at start (a bad file stops startup with the path and
//! the reason) and read again whenever either file changes, so a renewed
//! Kubernetes Secret or cert-manager rotation takes effect without a
//! restart. A renewal that cannot be read is logged and the certificate in
//! use is kept: a half-written file never takes a listener down.

pub(crate) mod postgres;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;


/// Installs ring as the process's rustls provider (idempotent).
pub(crate) fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder, usable after the provider is installed.
pub fn http_client() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A listener's certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The protocol a listener speaks inside TLS, offered by ALPN.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Alpn {
    /// gRPC: HTTP/2 only.
    H2,
    /// OTLP/HTTP and admin: HTTP/1.1.
    Http1,
}

/// Where a listener's certificate lives and how often to look again.
#[derive(Debug, Clone)]
pub(crate) struct CertificateFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub reload_interval: Duration,
}

/// A certificate read from its files and watched for renewals; every
/// listener made from it serves the same, current certificate.
pub(crate) struct Certificate {
    resolver: Arc<Reloading>,
}

impl Certificate {
    /// Loads the certificate and starts watching its files, until the last
    /// listener made from it is gone. `name` says which in logs.
    pub(crate) async fn watch(files: &CertificateFiles, name: &'static str) -> Result<Certificate, TlsError> {
        install_crypto_provider();
        let (key, stamp) = load(&files.cert_file, &files.key_file).await?;
        let resolver = Arc::new(Reloading {
            current: RwLock::new(Arc::new(key)),
        });
        tokio::spawn(watch(Arc::downgrade(&resolver), files.clone(), stamp, name));
        Ok(Certificate { resolver })
    }
}

/// A listener's TLS: the acceptor to wrap accepted connections with.
#[derive(Clone)]
pub(crate) struct Listener {
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl Listener {
    /// Serves `certificate`, offering `alpn`.
    pub(crate) fn new(certificate: &Certificate, alpn: Alpn) -> Listener {
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(certificate.resolver.clone());
        server.alpn_protocols = match alpn {
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
        };
        Listener {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        }
    }
}

/// The certificate in use, swapped whole when the files change.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a complete certificate.
        Some(match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

/// When the two files were last changed, as far as we can tell.
type Stamp = (Option<SystemTime>, Option<SystemTime>, u64, u64);

async fn stamp(cert: &Path, key: &Path) -> Stamp {
    let meta = |path: &Path| {
        let path = path.to_path_buf();
        async move { tokio::fs::metadata(path).await.ok() }
    };
    let (c, k) = (meta(cert).await, meta(key).await);
    (
        c.as_ref().and_then(|m| m.modified().ok()),
        k.as_ref().and_then(|m| m.modified().ok()),
        c.map_or(0, |m| m.len()),
        k.map_or(0, |m| m.len()),
    )
}

/// Checks the files every `reload_interval` until the listener is gone.
async fn watch(resolver: Weak<Reloading>, config: CertificateFiles, mut seen: Stamp, name: &'static str) {
    let mut ticker = tokio::time::interval(config.reload_interval.max(Duration::from_millis(50)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(resolver) = resolver.upgrade() else { return };
        let now = stamp(&config.cert_file, &config.key_file).await;
        if now == seen {
            continue;
        }
        seen = now;
        match load(&config.cert_file, &config.key_file).await {
            Ok((key, stamp)) => {
                seen = stamp;
                match resolver.current.write() {
                    Ok(mut current) => *current = Arc::new(key),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
                }
                tracing::info!(listener = name, cert = %config.cert_file.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                // Logged once per change of the files, not on every tick.
                tracing::warn!(listener = name, %error, "TLS certificate not reloaded; keeping the one in use");
            }
        }
    }
}

async fn load(cert_file: &Path, key_file: &Path) -> Result<(CertifiedKey, Stamp), TlsError> {
    // The stamp is taken first: a change that lands while reading is seen
    // on the next check.
    let stamp = stamp(cert_file, key_file).await;
    let read = |path: &Path| {
        let path = path.to_path_buf();
        async move { tokio::fs::read(&path).await.map_err(|source| TlsError::Read { path, source }) }
    };
    let cert_pem = read(cert_file).await?;
    let key_pem = read(key_file).await?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_file.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key_file.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)?;
    Ok((certified, stamp))
}
