//! The tunnel's QUIC client configuration: the agent's, and the test kit's simulated devices',
//! which must behave on the wire as the agent does.

use crate::PkiError;
use std::sync::Arc;
use std::time::Duration;

/// How long a silent path is kept before the connection is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's `[tunnel] keepalive` when none is set. A restarted hub is found by the next
/// keep-alive (its stateless reset), so after a hub restart a device is back within about one
/// interval; each keep-alive wakes the hub once. 3 s keeps that reconnect under 2 s after a
/// restart that took a second while a hub with 2,000 idle devices stays under 5 % of a core
/// (BENCHMARKS.md, "Tunnel and hub"); 2 s cost the hub half as much again.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(3);

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
    // Ask the hub to acknowledge every ack-eliciting packet at once (the ACK frequency
    // extension, which quinn always accepts). A keep-alive is a lone PING: by default the hub
    // waits out its 25 ms ACK delay and wakes a second time to send the ACK, so each
    // keep-alive costs the hub two wake-ups instead of one: the bulk of a large idle fleet's
    // cost at the hub (BENCHMARKS.md, "Tunnel and hub"). Under load the hub already acknowledged
    // at once (two packets or more since its last ACK), so bulk transfers are unchanged.
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(0u32.into());
    transport.ack_frequency_config(Some(acks));
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}
