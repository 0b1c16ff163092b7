//! The hub's QUIC endpoint: one UDP port for enrollment and tunnels, told apart by ALPN.
//! Stateless resets are keyed by a key kept in the state directory, so when the hub restarts,
//! agents' packets for the old connections are answered with a reset they recognise and they
//! reconnect at once instead of waiting out the idle timeout.

use crate::enroll::Enrollment;
use crate::keys::HubKeys;
use crate::registry::Registry;
use crate::session::Session;
use crate::store::HubStore;
use redtether_pki::tls::{Revoked, hub_server};
use redtether_pki::{cert_info, fingerprint};
use redtether_proto::wire::{ALPN, ENROLL_ALPN, codes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

pub fn bind(listen: SocketAddr, keys: &HubKeys, revoked: Revoked) -> Result<HubEndpoint, EndpointError> {
    let tls = hub_server(&keys.server_cert_pem, &keys.server_key_pem, &keys.ca.cert_pem, revoked, &[ALPN, ENROLL_ALPN])
        .map_err(|e| EndpointError::Config(e.to_string()))?;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| EndpointError::Config(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        Duration::from_secs(30)
            .try_into()
            .map_err(|e: quinn::VarIntBoundsExceeded| EndpointError::Config(e.to_string()))?,
    ));
    transport.max_concurrent_bidi_streams(64u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    server.transport_config(Arc::new(transport));
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.reset_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset));
    let cid_key = keys.cid_key;
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let socket = std::net::UdpSocket::bind(listen).map_err(|source| EndpointError::Bind { addr: listen, source })?;
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
    pub async fn run(self, endpoint: quinn::Endpoint, tasks: TaskTracker, cancel: CancellationToken) {
        let this = Arc::new(self);
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
                self.metrics.refused(handshake_refusal(&e));
                return;
            }
        };
        let _open = self.metrics.connection();
        let alpn = connection
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol);
        match alpn.as_deref() {
            Some(a) if a == ENROLL_ALPN => {
                self.metrics.handshake("enroll");
                self.enrollment.serve(connection).await
            }
            Some(a) if a == ALPN => {
                let Some((device, serial)) = self.device_of(&connection) else {
                    tracing::warn!(%addr, "tunnel without a client certificate");
                    self.metrics.refused("no_client_certificate");
                    connection.close(codes::CERTIFICATE_REQUIRED.into(), b"a client certificate is required");
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
                        connection.close(codes::REVOKED.into(), b"device not enrolled or revoked");
                        return;
                    }
                }
                self.metrics.handshake("tunnel");
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
                connection.close(codes::UNEXPECTED_FRAME.into(), b"unknown ALPN")
            }
        }
    }

    /// The device named by the (already verified) client certificate, and its serial.
    fn device_of(&self, connection: &quinn::Connection) -> Option<(String, String)> {
        let certs = connection.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
        let leaf = certs.first()?;
        let info = cert_info(leaf).ok()?;
        tracing::debug!(serial = %info.serial_hex, sha256 = %fingerprint(leaf), "device certificate");
        Some((info.common_name?, info.serial_hex))
    }
}

/// Why a handshake failed, for the refusals metric: the TLS layer refused (a certificate the
/// hub does not accept, or none), the client went quiet, or something else.
fn handshake_refusal(e: &quinn::ConnectionError) -> &'static str {
    use quinn::ConnectionError as E;
    // QUIC carries TLS alerts as the transport error codes 0x100-0x1ff.
    let tls_alert = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        E::TransportError(t) if tls_alert(t.code) => "tls_refused",
        E::ConnectionClosed(c) if tls_alert(c.error_code) => "tls_refused",
        E::TimedOut => "timed_out",
        _ => "handshake_failed",
    }
}
