//! The tunnel's QUIC client configuration: the agent's, and the test kit's simulated devices',
//! which must behave on the wire as the agent does.

use crate::PkiError;
use std::sync::Arc;
use std::time::Duration;

/// How long a silent path is kept before the connection is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error(transparent)]
    Tls(#[from] PkiError),
    #[error("QUIC crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("idle timeout: {0}")]
    Timeout(#[from] quinn::VarIntBoundsExceeded),
}

/// The client configuration of a device's tunnel: mutual TLS with its certificate, pinned to
/// the hub's CA ([`crate::tls::agent_client`]), keep-alives every `keepalive`.
pub fn tunnel_client(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    alpn: &[u8],
    keepalive: Duration,
) -> Result<quinn::ClientConfig, ClientConfigError> {
    let tls = crate::tls::agent_client(ca_pem, cert_pem, key_pem, alpn)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Keep-alives keep NAT bindings open on cellular links, notice a dead path, and reach a
    // restarted hub, whose stateless reset tells the agent to reconnect at once. The hub opens
    // no unidirectional streams.
    transport.keep_alive_interval(Some(keepalive));
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into()?));
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}
