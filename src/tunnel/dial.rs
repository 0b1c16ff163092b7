//! Dialling the hub on one transport: QUIC (UDP), or TLS 1.3 over TCP with the same device
//! certificate and pinned CA. Which one, and when to fall back, is the reconnect loop's
//! (`client`) decision under `[tunnel] transport`.

use super::session::closed_of;
use crate::identity::Identity;
use redtether_proto::session::{Ending, classify};
use redtether_proto::wire::TCP_ALPN;
use redtether_transport::{Connection, ConnectionError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why a dial did not give a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// The network: nothing answered, the path broke. Another transport may do better.
    #[error("{0}")]
    Unreachable(String),
    /// The hub (or this device's identity) said no: a TLS alert or a refusal code. Another
    /// transport would hear the same.
    #[error("{0}")]
    Refused(String),
}

impl DialError {
    /// This failure, after an earlier one on another transport (both said, the earlier first).
    pub fn after(self, earlier: &str) -> DialError {
        match self {
            DialError::Unreachable(now) => DialError::Unreachable(format!("{earlier}; {now}")),
            refused => refused,
        }
    }
}

fn classified(e: &ConnectionError) -> DialError {
    match classify(closed_of(e)) {
        Ending::Refused => DialError::Refused(e.to_string()),
        _ => DialError::Unreachable(e.to_string()),
    }
}

/// A QUIC connection to `addr`, on `endpoint` (made on first use and kept: its socket is the
/// tunnel's UDP port across reconnects).
pub async fn quic(
    identity: &Identity,
    addr: SocketAddr,
    server_name: &str,
    endpoint: &mut Option<quinn::Endpoint>,
    keepalive: Duration,
    timeout: Duration,
) -> Result<Connection, DialError> {
    let config =
        super::client_config(identity, keepalive).map_err(|e| DialError::Refused(format!("identity unusable: {e}")))?;
    if endpoint.is_none() {
        *endpoint = Some(super::enroll::client_endpoint(&addr).map_err(|e| DialError::Unreachable(e.to_string()))?);
    }
    let Some(ep) = endpoint.as_ref() else { return Err(DialError::Unreachable("no endpoint".into())) };
    let connecting = ep.connect_with(config, addr, server_name).map_err(|e| DialError::Unreachable(e.to_string()))?;
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(DialError::Unreachable("no answer from the hub over QUIC (UDP)".into())),
        // A TLS alert or the hub's refusal codes mean the identity is the problem; anything
        // else is the network.
        Ok(Err(e)) => Err(classified(&e.into())),
        Ok(Ok(c)) => Ok(Connection::Quic(c)),
    }
}

/// A TLS-over-TCP connection to `addr`.
pub async fn tcp(
    identity: &Identity,
    addr: SocketAddr,
    server_name: &str,
    keepalive: Duration,
    timeout: Duration,
) -> Result<Connection, DialError> {
    let tls = redtether_pki::tls::agent_client(&identity.ca_pem, &identity.cert_pem, &identity.key_pem, TCP_ALPN)
        .map_err(|e| DialError::Refused(format!("identity unusable: {e}")))?;
    let dialled = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| DialError::Unreachable(format!("TCP to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        redtether_transport::tcp::connect(stream, addr, server_name, Arc::new(tls), keepalive)
            .await
            .map_err(|e| classified(&e))
    };
    match tokio::time::timeout(timeout, dialled).await {
        Err(_) => Err(DialError::Unreachable("no answer from the hub over TCP".into())),
        Ok(result) => result.map(Connection::Tcp),
    }
}
