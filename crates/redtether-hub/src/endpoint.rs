//! The hub's QUIC endpoint: one UDP port for enrollment and tunnels, told apart by ALPN.
//! Stateless resets are keyed by a key kept in the state directory, so when the hub restarts,
//! agents' packets for the old connections are answered with a reset they recognise and they
//! reconnect at once instead of waiting out the idle timeout.

use crate::enroll::Enrollment;
use crate::keys::HubKeys;
use crate::registry::Registry;
use crate::session::Session;
use crate::store::HubStore;
use crate::store::prelude::*;
use redtether_pki::tls::{Revoked, hub_server};
use redtether_pki::{cert_info, fingerprint};
use redtether_proto::wire::{ALPN, ENROLL_ALPN, TCP_ALPN, TCP_ENROLL_ALPN, codes};
use redtether_transport::{Connection, ConnectionError, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the hub pings a device over TCP (QUIC's keep-alives are the agent's).
const TCP_KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen on {addr} (listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("QUIC configuration: {0}")]
    Config(String),
}

pub struct HubEndpoint {
    pub endpoint: quinn::Endpoint,
}

/// The TLS-over-TCP listener's configuration: the same certificates and device verification as
/// QUIC's, the TCP ALPNs.
pub fn tcp_tls(keys: &HubKeys, revoked: Revoked) -> Result<Arc<rustls::ServerConfig>, EndpointError> {
    let tls = hub_server(
        &keys.server_cert_pem,
        &keys.server_key_pem,
        &keys.ca.cert_pem,
        revoked,
        &[TCP_ALPN, TCP_ENROLL_ALPN],
    )
    .map_err(|e| EndpointError::Config(e.to_string()))?;
    Ok(Arc::new(tls))
}

/// How long a silent connection lasts. Devices send keep-alives every few seconds, so this is
/// how long a device takes to notice its hub is gone when nothing tells it (a hub killed, a
/// path cut): generous on one hub (a device has nowhere else to go, and a flaky link should not
/// cost a reconnect), short in a cluster, where the device has another hub to go to.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const CLUSTER_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn bind(
    listen: SocketAddr,
    keys: &HubKeys,
    revoked: Revoked,
    idle_timeout: Duration,
) -> Result<HubEndpoint, EndpointError> {
    let tls = hub_server(&keys.server_cert_pem, &keys.server_key_pem, &keys.ca.cert_pem, revoked, &[ALPN, ENROLL_ALPN])
        .map_err(|e| EndpointError::Config(e.to_string()))?;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| EndpointError::Config(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        idle_timeout.try_into().map_err(|e: quinn::VarIntBoundsExceeded| EndpointError::Config(e.to_string()))?,
    ));
    transport.max_concurrent_bidi_streams(64u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    server.transport_config(Arc::new(transport));
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.reset_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset));
    let cid_key = keys.cid_key;
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let (socket, buffer) =
        redtether_host::udp::bind_wide(listen).map_err(|source| EndpointError::Bind { addr: listen, source })?;
    tracing::debug!(buffer, "QUIC socket receive buffer");
    let endpoint = quinn::Endpoint::new(config, Some(server), socket, Arc::new(quinn::TokioRuntime))
        .map_err(|source| EndpointError::Bind { addr: listen, source })?;
    Ok(HubEndpoint { endpoint })
}

pub struct Accepting {
    pub store: Arc<HubStore>,
    pub registry: Registry,
    pub enrollment: Arc<Enrollment>,
    pub metrics: Arc<crate::metrics::HubMetrics>,
}

impl Accepting {
    /// Accepts connections until `cancel`; each is served in a tracked task.
    pub async fn run(self: Arc<Self>, endpoint: quinn::Endpoint, tasks: TaskTracker, cancel: CancellationToken) {
        let this = self;
        loop {
            let incoming = tokio::select! {
                _ = cancel.cancelled() => break,
                incoming = endpoint.accept() => match incoming {
                    Some(i) => i,
                    None => break,
                },
            };
            let (this, cancel) = (Arc::clone(&this), cancel.clone());
            tasks.spawn(async move { this.connection(incoming, cancel).await });
        }
        endpoint.close(codes::SHUTDOWN.into(), b"hub shutting down");
    }

    async fn connection(&self, incoming: quinn::Incoming, cancel: CancellationToken) {
        let addr = incoming.remote_address();
        let connection = match incoming.await {
            Ok(c) => c,
            Err(e) => {
                // A refused certificate ends here, in the TLS handshake, with an alert.
                tracing::info!(%addr, error = %e, "handshake failed");
                self.metrics.refused(handshake_refusal(&e.into()));
                return;
            }
        };
        self.serve(Connection::Quic(connection), cancel).await
    }

    /// Accepts TLS-over-TCP connections until `cancel`; each is served in a tracked task.
    pub async fn run_tcp(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) {
        loop {
            let (stream, addr) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "tunnel over TCP: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (this, tls, cancel) = (Arc::clone(&self), Arc::clone(&tls), cancel.clone());
            tasks.spawn(async move {
                let accepted = tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = redtether_transport::tcp::accept(stream, addr, tls, &[TCP_ALPN], TCP_KEEPALIVE) => accepted,
                };
                match accepted {
                    Ok(connection) => this.serve(Connection::Tcp(connection), cancel).await,
                    Err(e) => {
                        tracing::info!(%addr, error = %e, "handshake over TCP failed");
                        this.metrics.refused(handshake_refusal(&e));
                    }
                }
            });
        }
    }

    /// Serves a connection whose TLS handshake completed, on either transport: enrollment or
    /// a device's tunnel, by ALPN.
    async fn serve(&self, connection: Connection, cancel: CancellationToken) {
        let addr = connection.remote_address();
        let _open = self.metrics.connection();
        let alpn = connection.alpn();
        let (enroll, tunnel) = match connection.transport() {
            Transport::Quic => (ENROLL_ALPN, ALPN),
            Transport::Tcp => (TCP_ENROLL_ALPN, TCP_ALPN),
        };
        match alpn.as_deref() {
            Some(a) if a == enroll => {
                self.metrics.handshake("enroll");
                self.enrollment.serve(connection).await
            }
            Some(a) if a == tunnel => {
                let Some((device, serial)) = self.device_of(&connection) else {
                    tracing::warn!(%addr, "tunnel without a client certificate");
                    self.metrics.refused("no_client_certificate");
                    connection.close(codes::CERTIFICATE_REQUIRED, b"a client certificate is required");
                    return;
                };
                // Only the device's current certificate: one replaced by a later enrollment
                // (or renewal) is refused even before it reaches the revocation list.
                match self.store.device(&device) {
                    Ok(Some(record)) if !record.revoked && record.cert_serial == serial => {
                        if record.previous_serial.is_some() {
                            // The renewed certificate is in use: the one it replaced is done.
                            let _ = self.store.update_device(&device, |d| d.previous_serial = None);
                        }
                    }
                    Ok(Some(record))
                        if !record.revoked && record.previous_serial.as_deref() == Some(serial.as_str()) => {}
                    _ => {
                        tracing::warn!(%addr, %device, "tunnel from an unknown or revoked device");
                        self.metrics.refused("unknown_or_revoked");
                        connection.close(codes::REVOKED, b"device not enrolled or revoked");
                        return;
                    }
                }
                self.metrics.handshake(match connection.transport() {
                    Transport::Quic => "tunnel",
                    Transport::Tcp => "tunnel_tcp",
                });
                Session {
                    device,
                    connection,
                    store: Arc::clone(&self.store),
                    registry: self.registry.clone(),
                    issuer: Arc::clone(&self.enrollment),
                    metrics: Arc::clone(&self.metrics),
                    stored_status: std::sync::Mutex::new(None),
                }
                .serve(cancel)
                .await
            }
            _ => {
                self.metrics.refused("unknown_alpn");
                connection.close(codes::UNEXPECTED_FRAME, b"unknown ALPN")
            }
        }
    }

    /// The device named by the (already verified) client certificate, and its serial.
    fn device_of(&self, connection: &Connection) -> Option<(String, String)> {
        let certs = connection.peer_certificates()?;
        let leaf = certs.first()?;
        let info = cert_info(leaf).ok()?;
        tracing::debug!(serial = %info.serial_hex, sha256 = %fingerprint(leaf), "device certificate");
        Some((info.common_name?, info.serial_hex))
    }
}

/// Why a handshake failed, for the refusals metric: the TLS layer refused (a certificate the
/// hub does not accept, or none), the client went quiet, or something else.
fn handshake_refusal(e: &ConnectionError) -> &'static str {
    match e {
        // QUIC and TLS over TCP both carry TLS alerts as 0x100-0x1ff.
        ConnectionError::TransportClosed { code, .. } if (0x100..0x200).contains(code) => "tls_refused",
        ConnectionError::TimedOut => "timed_out",
        _ => "handshake_failed",
    }
}
