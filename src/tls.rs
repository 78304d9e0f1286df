//! TLS for outgoing HTTPS (Slack, PagerDuty, webhooks): rustls with the
//! ring provider, chosen once per process. reqwest refuses to build a
//! client before a provider is installed, so every client goes through
//! [`http_client`].

/// Installs ring as the process's rustls provider (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder, usable after the provider is installed.
pub fn http_client() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}
