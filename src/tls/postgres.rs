//! TLS to PostgreSQL, with libpq's `sslmode` and `sslrootcert`.
//!
//! Managed databases require TLS, and their users write the connection
//! string they would give `psql`. tokio-postgres itself knows only
//! `disable`, `prefer` and `require`, so the two verifying modes and the
//! root certificate are read here and taken out of the string before
//! tokio-postgres parses it:
//!
//! | `sslmode` | encrypted | certificate chain checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | | |
//! | `prefer` (the default) | when the server offers it | no | no |
//! | `require` | yes | only when `sslrootcert` is given (as libpq) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! The chain is checked against `sslrootcert` when given, else against the
//! system's trust store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// What the connection string asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A connection string with its TLS settings taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// What tokio-postgres parses: `sslmode` is one it knows.
    pub url: String,
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// The connection string's TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgTlsError {
    #[error("sslmode={0} is not one of disable, prefer, require, verify-ca, verify-full")]
    Mode(String),
    #[error("cannot read sslrootcert {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("sslrootcert {0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot load the system's trust store: {0}")]
    Roots(String),
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`postgres://…?sslmode=…`)
/// or key-value (`host=… sslmode=…`) connection string.
pub(crate) fn settings(url: &str) -> Result<TlsSettings, PgTlsError> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root_cert = Some(PathBuf::from(value));
            true
        }
        _ => false,
    };
    let rest = if let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(key, &percent_decode(value))
            })
            .collect();
        (base.to_string(), kept.join("&"), '&')
    } else if url.contains("://") {
        (url.to_string(), String::new(), '&')
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(key.trim(), value.trim_matches('\''))
            })
            .collect();
        (String::new(), kept.join(" "), ' ')
    };
    let mode = match mode.as_deref() {
        None | Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(other) => return Err(PgTlsError::Mode(other.to_string())),
    };
    let known = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    let (base, kept, separator) = rest;
    let url = if url.contains("://") {
        let joined = if kept.is_empty() { String::new() } else { format!("{kept}&") };
        format!("{base}?{joined}sslmode={known}")
    } else {
        let joined = if kept.is_empty() {
            String::new()
        } else {
            format!("{kept}{separator}")
        };
        format!("{joined}sslmode={known}")
    };
    Ok(TlsSettings { url, mode, root_cert })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connector for these settings. `disable` never starts TLS, so any
/// connector does; the rustls one is returned for every mode.
pub(crate) fn connector(settings: &TlsSettings) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgTlsError> {
    crate::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check_chain = match settings.mode {
        SslMode::Disable | SslMode::Prefer => false,
        SslMode::Require => settings.root_cert.is_some(),
        SslMode::VerifyCa | SslMode::VerifyFull => true,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if !check_chain {
        Arc::new(Unverified(provider.clone()))
    } else {
        let chain = chain_verifier(settings.root_cert.as_deref(), &provider)?;
        if settings.mode == SslMode::VerifyFull {
            chain
        } else {
            Arc::new(AnyName(chain))
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn chain_verifier(root_cert: Option<&Path>, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, PgTlsError> {
    match root_cert {
        Some(path) => {
            // Read once at connect setup: a small file, before any traffic.
            let pem = std::fs::read(path).map_err(|source| PgTlsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
            if added == 0 {
                return Err(PgTlsError::NoCertificate(path.to_path_buf()));
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| PgTlsError::Roots(e.to_string()))?;
            Ok(verifier)
        }
        None => Ok(Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| PgTlsError::Roots(e.to_string()))?,
        )),
    }
}

/// `prefer` and `require` without a root certificate: encrypted, not
/// authenticated, as libpq does. Signatures are still checked, so the
/// handshake itself is sound.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name on the
/// certificate is not compared with the host.
#[derive(Debug)]
struct AnyName(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_modes_are_taken_out_of_urls_and_key_value_strings() {
        let s = settings("postgres://u:p@db:5432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=dw").unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(s.url, "postgres://u:p@db:5432/x?application_name=dw&sslmode=require");
        s.url.parse::<tokio_postgres::Config>().expect("tokio-postgres parses it");

        let s = settings("postgres://u@db/x").unwrap();
        assert_eq!(
            (s.mode, s.url.as_str()),
            (SslMode::Prefer, "postgres://u@db/x?sslmode=prefer")
        );

        let s = settings("host=db user=u sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.url, "host=db user=u sslmode=require");
        s.url.parse::<tokio_postgres::Config>().expect("tokio-postgres parses it");

        let s = settings("postgres://db/x?sslmode=disable").unwrap();
        assert_eq!(s.mode, SslMode::Disable);
        assert!(matches!(settings("postgres://db/x?sslmode=sometimes"), Err(PgTlsError::Mode(m)) if m == "sometimes"));
    }
}
