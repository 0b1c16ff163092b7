//! TLS over a TCP stream (direct, or through a proxy's CONNECT), then yamux: the client's
//! and the server's way to a [`TcpConnection`]. TLS failures are numbered as QUIC numbers
//! them (`0x100 + alert`), so the agent classifies a refused certificate the same way on both
//! transports.
//!
//! In TLS 1.3 the client's handshake is over before the server has checked the client's
//! certificate: a refusal arrives as an alert afterwards. So the server speaks first — one
//! [`READY`] byte once it accepted the client — and the client reads it before it writes
//! anything: a refused client reads the alert (and says "refused"), where writing first would
//! often only meet the closed socket (and say "lost").

use super::{Peer, Side, TcpConnection};
use crate::error::ConnectionError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's first byte: it accepted the client.
const READY: u8 = 0x52;

/// The TLS alert an error carries or stands for, as QUIC's crypto error code.
fn tls_error(e: &std::io::Error) -> ConnectionError {
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let alert = match rustls_error {
        Some(rustls::Error::AlertReceived(alert)) => Some(u8::from(*alert)),
        // Refused here: the alert this side sent.
        Some(rustls::Error::InvalidCertificate(_)) => Some(42),
        Some(rustls::Error::NoApplicationProtocol) => Some(120),
        _ => None,
    };
    match alert {
        Some(alert) => ConnectionError::TransportClosed { code: 0x100 + u64::from(alert), reason: e.to_string() },
        None => ConnectionError::Lost(format!("TLS: {e}")),
    }
}

/// Connects as the agent: TLS with `config` (its certificate, the pinned CA, the tunnel's TCP
/// ALPN) to `server_name` over `io`, then the multiplexer.
pub async fn connect<S>(
    io: S,
    remote: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
    keepalive: Duration,
) -> Result<TcpConnection, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| ConnectionError::Lost(format!("{server_name:?} is not a server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, io))
        .await
        .map_err(|_| ConnectionError::TimedOut)?
        .map_err(|e| tls_error(&e))?;
    let mut ready = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.read_exact(&mut ready)).await {
        Err(_) => return Err(ConnectionError::TimedOut),
        Ok(Err(e)) => return Err(tls_error(&e)),
        Ok(Ok(_)) if ready[0] != READY => {
            return Err(ConnectionError::Lost(format!("the hub's first byte was {:#04x}, not ready", ready[0])));
        }
        Ok(Ok(_)) => {}
    }
    let (_, session) = tls.get_ref();
    let peer = Peer {
        remote,
        certificates: session.peer_certificates().map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
    };
    TcpConnection::start(tls, Side::Client, peer, keepalive).await
}

/// Accepts as the hub: the TLS handshake with `config` (the hub's certificate, device
/// certificates verified), then the multiplexer once the client opened its link stream. A
/// client that agreed on one of `certificate_required` without presenting a certificate is
/// dropped at once (TLS 1.3 lets a server take it without one; for these protocols there is
/// nothing to serve it).
pub async fn accept<S>(
    io: S,
    remote: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    certificate_required: &[&[u8]],
    keepalive: Duration,
) -> Result<TcpConnection, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
        .await
        .map_err(|_| ConnectionError::TimedOut)?
        .map_err(|e| tls_error(&e))?;
    let (_, session) = tls.get_ref();
    let peer = Peer {
        remote,
        certificates: session.peer_certificates().map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
    };
    if peer.certificates.is_none() && peer.alpn.as_deref().is_some_and(|a| certificate_required.contains(&a)) {
        // certificate_required (116), as QUIC would number the alert.
        return Err(ConnectionError::TransportClosed { code: 0x100 + 116, reason: "no client certificate".into() });
    }
    tls.write_all(&[READY]).await.map_err(|e| tls_error(&e))?;
    tls.flush().await.map_err(|e| tls_error(&e))?;
    TcpConnection::start(tls, Side::Server, peer, keepalive).await
}
