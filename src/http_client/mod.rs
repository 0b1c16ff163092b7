//! The agent's one client stack for the HTTP calls it makes itself: health checks and admin
//! calls to Node-RED on loopback, and `redtether sbom --latest`'s npm registry lookups. (The
//! gate's forwarding to Node-RED is a proxy, not a client of its own, and stays on hyper.)
//!
//! reqwest over rustls with ring, the provider the tunnel uses: reqwest is built without a
//! provider of its own (`rustls-no-provider`) and every client gets its rustls configuration
//! from here, so the binary carries a single crypto provider. Without that configuration a
//! reqwest client would ask rustls for a process-wide default provider, and panic.

use std::sync::Arc;
use std::time::Duration;

/// Why no client for the internet could be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The system's CA certificates could not be loaded (rustls-native-certs: `SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`, else the distribution's bundle, /etc/ssl/certs on Debian).
    #[error("cannot use the system's CA certificates to check servers: {0}")]
    SystemRoots(#[source] rustls::Error),
    /// ring's provider refused the protocol versions (cannot happen with rustls's defaults).
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// A client for Node-RED on loopback, every request bounded by `timeout`. Never uses a proxy:
/// one named in the environment would carry the gate's credential off the machine, and could
/// not reach 127.0.0.1 anyway.
pub fn loopback(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(without_roots())
        .timeout(timeout)
        .no_proxy()
        .build()
        // reqwest's build fails only for a TLS backend it has to make itself, a resolver it
        // has to load, or an invalid setting given earlier: none of these here (a unit test
        // below holds it to that).
        .expect("a loopback client with a ready TLS configuration always builds")
}

/// A client builder for servers on the internet: their certificates are checked against the
/// system's CA certificates (rustls-platform-verifier, which on Linux reads them with
/// rustls-native-certs), and proxies are taken from the environment as curl and npm take them
/// (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, upper or lower case), which is
/// reqwest's default and is left on.
pub fn internet() -> Result<reqwest::ClientBuilder, HttpClientError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(with_system_roots()?))
}

/// [`internet`] for a client that may have no use for TLS (a plain `http` server): without
/// usable system CA certificates it still builds, and only a TLS connection (an `https` proxy,
/// say) then fails, for want of a CA to check the server against.
pub fn internet_plain_http() -> reqwest::ClientBuilder {
    let tls = with_system_roots().unwrap_or_else(|e| {
        tracing::debug!(error = %e, "no system CA certificates; TLS connections will fail");
        without_roots()
    });
    reqwest::Client::builder().tls_backend_preconfigured(tls)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    redtether_pki::tls::provider()
}

/// Checks servers against the system's CA certificates, read once here (rustls-platform-verifier
/// loads them when the verifier is made).
fn with_system_roots() -> Result<rustls::ClientConfig, HttpClientError> {
    let verifier = rustls_platform_verifier::Verifier::new(provider()).map_err(HttpClientError::SystemRoots)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(HttpClientError::Tls)?
        .dangerous() // not dangerous: the platform verifier is a full WebPKI check
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Trusts no server at all: for clients that only speak plain HTTP, which need a TLS
/// configuration only because reqwest makes its connector with one.
fn without_roots() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_client_builds() {
        let _ = loopback(Duration::from_secs(1));
    }
}
