//! `redtether enroll`: make a key on the device, send a CSR with the one-time token over the
//! hub's enrollment ALPN, pin the hub's CA by the fingerprint the operator gave, and store the
//! identity.

use crate::config::TransportChoice;
use crate::identity::{HubInfo, Identity, IdentityError};
use crate::state_dir::StateDir;
use redtether_pki::{device_key_and_csr, normalise_fingerprint};
use redtether_proto::wire::{
    ENROLL_ALPN, EnrollRefusal, EnrollRequest, EnrollResponse, FrameDecoder, MAX_FRAME, TCP_ENROLL_ALPN, encode,
};
use redtether_transport::Connection;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0:?} is not a fingerprint (64 hex digits, colons allowed)")]
    BadFingerprint(String),
    #[error("{0:?} is not HOST:PORT")]
    BadAddress(String),
    #[error("cannot reach the hub at {hub}: {reason}")]
    Unreachable { hub: String, reason: String },
    #[error("the hub's certificate does not chain to a CA with the given fingerprint: {0}")]
    NotPinned(String),
    #[error("the hub refused the enrollment: {}", .0.describe())]
    Refused(EnrollRefusal),
    #[error("enrollment failed: {0}")]
    Protocol(String),
    #[error("cannot make the device key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] IdentityError),
}

const TIMEOUT: Duration = Duration::from_secs(15);

/// Splits `host:port`, accepting `[v6]:port`.
pub fn split_hub(hub: &str) -> Option<(String, u16)> {
    let (host, port) = hub.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some(())?;
    Some((host.to_string(), port.parse().ok()?))
}

pub async fn resolve(hub: &str) -> Result<(std::net::SocketAddr, String), EnrollError> {
    let (host, port) = split_hub(hub).ok_or_else(|| EnrollError::BadAddress(hub.to_string()))?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| EnrollError::Unreachable { hub: hub.to_string(), reason: e.to_string() })?
        .next()
        .ok_or_else(|| EnrollError::Unreachable { hub: hub.to_string(), reason: "no address".into() })?;
    Ok((addr, host))
}

pub fn client_endpoint(remote: &std::net::SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let local: std::net::SocketAddr = if remote.is_ipv6() {
        "[::]:0".parse().unwrap_or_else(|_| ([0u16; 8], 0).into())
    } else {
        ([0, 0, 0, 0], 0).into()
    };
    quinn::Endpoint::client(local)
}

pub async fn enroll(
    hub: &str,
    token: &str,
    ca_fingerprint: &str,
    dir: &StateDir,
    transport: TransportChoice,
    tcp_port: Option<u16>,
) -> Result<Identity, EnrollError> {
    let fingerprint =
        normalise_fingerprint(ca_fingerprint).ok_or_else(|| EnrollError::BadFingerprint(ca_fingerprint.to_string()))?;
    let (addr, server_name) = resolve(hub).await?;
    let (key_pem, csr_pem) = device_key_and_csr().map_err(|e| EnrollError::Key(e.to_string()))?;
    let dial = Dial { hub, addr, server_name: &server_name, fingerprint: &fingerprint, tcp_port };
    let (connection, endpoint) = match transport {
        TransportChoice::Quic => dial.quic(TIMEOUT).await?,
        TransportChoice::Tcp => (dial.tcp().await?, None),
        // As the tunnel does: TCP when no QUIC handshake completes in a few seconds.
        TransportChoice::Auto => match dial.quic(Duration::from_secs(3)).await {
            Err(EnrollError::Unreachable { reason, .. }) => {
                tracing::info!(%hub, %reason, "no QUIC handshake; enrolling over TLS over TCP");
                (dial.tcp().await?, None)
            }
            other => other?,
        },
    };
    let result = tokio::time::timeout(TIMEOUT, exchange(&connection, token, &csr_pem))
        .await
        .unwrap_or_else(|_| Err(EnrollError::Protocol("the hub did not answer in time".into())));
    connection.close(0, b"done");
    if let Some(endpoint) = endpoint {
        endpoint.wait_idle().await;
    }
    let (device_id, cert_pem, ca_pem, hub_signing_key) = result?;
    let identity = Identity {
        info: HubInfo { hub: hub.to_string(), server_name, device_id, ca_fingerprint: fingerprint, hub_signing_key },
        key_pem,
        cert_pem,
        ca_pem,
    };
    // The CA sent must be the one pinned: nothing else is trusted later.
    let sent = redtether_pki::pem_to_der(&identity.ca_pem)
        .map(|d| redtether_pki::fingerprint(&d))
        .map_err(|e| EnrollError::Protocol(e.to_string()))?;
    if sent != identity.info.ca_fingerprint {
        return Err(EnrollError::NotPinned("the hub sent a different CA than the one it was verified with".into()));
    }
    identity.save(dir)?;
    Ok(identity)
}

/// Where an enrollment connects, and the CA it pins.
struct Dial<'a> {
    hub: &'a str,
    addr: std::net::SocketAddr,
    server_name: &'a str,
    fingerprint: &'a str,
    /// `[tunnel] tcp_port`, when the hub's TCP port is not its address's.
    tcp_port: Option<u16>,
}

impl Dial<'_> {
    fn unreachable(&self, reason: String) -> EnrollError {
        EnrollError::Unreachable { hub: self.hub.to_string(), reason }
    }

    /// A failed handshake: the pinned CA not matching, or the network.
    fn failed(&self, text: String) -> EnrollError {
        if text.contains("pinned fingerprint") || text.contains("certificate") {
            EnrollError::NotPinned(text)
        } else {
            self.unreachable(text)
        }
    }

    async fn quic(&self, timeout: Duration) -> Result<(Connection, Option<quinn::Endpoint>), EnrollError> {
        let tls = redtether_pki::tls::enroll_client(self.fingerprint, ENROLL_ALPN)
            .map_err(|e| EnrollError::Protocol(e.to_string()))?;
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| EnrollError::Protocol(e.to_string()))?;
        let endpoint = client_endpoint(&self.addr).map_err(|e| self.unreachable(e.to_string()))?;
        let connecting = endpoint
            .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), self.addr, self.server_name)
            .map_err(|e| self.unreachable(e.to_string()))?;
        match tokio::time::timeout(timeout, connecting).await {
            Err(_) => Err(self.unreachable("no answer (is the hub running and the UDP port open?)".into())),
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Ok(Ok(c)) => Ok((Connection::Quic(c), Some(endpoint))),
        }
    }

    async fn tcp(&self) -> Result<Connection, EnrollError> {
        let tls = redtether_pki::tls::enroll_client(self.fingerprint, TCP_ENROLL_ALPN)
            .map_err(|e| EnrollError::Protocol(e.to_string()))?;
        let mut addr = self.addr;
        if let Some(port) = self.tcp_port {
            addr.set_port(port);
        }
        let connected = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| self.unreachable(format!("TCP to {addr}: {e}")))?;
            redtether_transport::tcp::connect(stream, addr, self.server_name, Arc::new(tls), Duration::from_secs(5))
                .await
                .map_err(|e| self.failed(e.to_string()))
        };
        match tokio::time::timeout(TIMEOUT, connected).await {
            Err(_) => Err(self.unreachable("no answer over TCP (is [tcp] listen set on the hub?)".into())),
            Ok(result) => result.map(Connection::Tcp),
        }
    }
}

async fn exchange(
    connection: &Connection,
    token: &str,
    csr_pem: &str,
) -> Result<(String, String, String, String), EnrollError> {
    let protocol = |e: &dyn std::fmt::Display| EnrollError::Protocol(e.to_string());
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| protocol(&e))?;
    send.write_all(&encode(&EnrollRequest::Enroll { token: token.to_string(), csr_pem: csr_pem.to_string() }))
        .await
        .map_err(|e| protocol(&e))?;
    send.finish().await.map_err(|e| protocol(&e))?;
    let bytes = recv.read_to_end(MAX_FRAME + 4).await.map_err(|e| protocol(&e))?;
    let mut decoder = FrameDecoder::default();
    decoder.feed(&bytes);
    match decoder.next_message::<EnrollResponse>().map_err(|e| protocol(&e))? {
        Some(EnrollResponse::Enrolled { device_id, cert_pem, ca_pem, hub_signing_key }) => {
            Ok((device_id, cert_pem, ca_pem, hub_signing_key))
        }
        Some(EnrollResponse::EnrollRefused { reason }) => Err(EnrollError::Refused(reason)),
        None => Err(EnrollError::Protocol("the hub closed the stream without an answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_addresses_split() {
        assert_eq!(split_hub("hub.example:7443"), Some(("hub.example".into(), 7443)));
        assert_eq!(split_hub("[::1]:7443"), Some(("::1".into(), 7443)));
        assert_eq!(split_hub("hub.example"), None);
        assert_eq!(split_hub(":7443"), None);
    }
}
