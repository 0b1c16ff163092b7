//! `redtether enroll`: make a key on the device, send a CSR with the one-time token over the
//! hub's enrollment ALPN, pin the hub's CA by the fingerprint the operator gave, and store the
//! identity. With several hub addresses, their handshakes are raced in a random order (as the
//! tunnel does, `dial::race`); the token goes only to the first hub that completes one.

use super::dial::{Dialled, Endpoints, Failure, TcpDial};
use super::hubs::Chooser;
use crate::config::{HubAddressError, ProxyChoice, TransportChoice};
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
    #[error(transparent)]
    BadAddress(#[from] HubAddressError),
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

pub fn client_endpoint(remote: &std::net::SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let local: std::net::SocketAddr = if remote.is_ipv6() {
        "[::]:0".parse().unwrap_or_else(|_| ([0u16; 8], 0).into())
    } else {
        ([0, 0, 0, 0], 0).into()
    };
    quinn::Endpoint::client(local)
}

/// Enrolls through the first of `hubs` (each `HOST:PORT`) that answers, and stores all of them
/// in the identity, the answering one as `hub`. `transport` as the tunnel's: with `auto`, TLS
/// over TCP (`tcp_port`, through `proxy`) when no QUIC handshake completes in a few seconds.
pub async fn enroll(
    hubs: &[String],
    token: &str,
    ca_fingerprint: &str,
    dir: &StateDir,
    transport: TransportChoice,
    tcp_port: Option<u16>,
    proxy: &ProxyChoice,
) -> Result<Identity, EnrollError> {
    let fingerprint =
        normalise_fingerprint(ca_fingerprint).ok_or_else(|| EnrollError::BadFingerprint(ca_fingerprint.to_string()))?;
    let addresses = crate::config::parse_hub_list(hubs)?;
    let listed = addresses.iter().map(ToString::to_string).collect::<Vec<_>>();
    let all = listed.join(", ");
    let tcp = TcpDial {
        tls: Arc::new(
            redtether_pki::tls::enroll_client(&fingerprint, TCP_ENROLL_ALPN)
                .map_err(|e| EnrollError::Protocol(e.to_string()))?,
        ),
        port: tcp_port,
        proxy: proxy.clone(),
        env: Arc::new(super::proxy::ProxyEnv::from_process()),
        keepalive: Duration::from_secs(5),
        timeout: TIMEOUT,
    };
    let proxied = addresses.first().is_some_and(|h| tcp.proxied(&h.host, h.port));
    let candidates = match super::dial::candidates(&addresses, &mut Chooser::new(rand::random())).await {
        Ok(c) => c,
        // Behind a proxy the network may resolve no outside name: the proxy does.
        Err(_) if proxied && transport != TransportChoice::Quic => Vec::new(),
        Err(e) => return Err(EnrollError::Unreachable { hub: all.clone(), reason: e.to_string() }),
    };
    let (key_pem, csr_pem) = device_key_and_csr().map_err(|e| EnrollError::Key(e.to_string()))?;
    let tls = redtether_pki::tls::enroll_client(&fingerprint, ENROLL_ALPN)
        .map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut endpoints = Endpoints::default();
    // Enrollment is a command someone waits for: nothing to cancel it but Ctrl-C.
    let never = tokio_util::sync::CancellationToken::new();
    let tcp_candidates = if proxied { super::dial::unresolved(&addresses) } else { candidates.clone() };
    let dialled = match transport {
        TransportChoice::Quic => {
            super::dial::race(candidates, super::dial::quic(&mut endpoints, config, TIMEOUT), &never).await
        }
        TransportChoice::Tcp => super::dial::race(tcp_candidates, tcp.one(), &never).await,
        TransportChoice::Auto => {
            let quick = Duration::from_secs(3);
            match super::dial::race(candidates, super::dial::quic(&mut endpoints, config, quick), &never).await {
                Dialled::Failed(quic_failures) if !quic_failures.iter().any(|(_, f)| pinned_failure(f)) => {
                    tracing::info!(hubs = %all, "no QUIC handshake; enrolling over TLS over TCP");
                    match super::dial::race(tcp_candidates, tcp.one(), &never).await {
                        Dialled::Failed(mut tcp_failures) => {
                            let mut failures = quic_failures;
                            failures.append(&mut tcp_failures);
                            Dialled::Failed(failures)
                        }
                        other => other,
                    }
                }
                other => other,
            }
        }
    };
    let (connection, candidate) = match dialled {
        Dialled::Connected { connection, candidate } => (connection, candidate),
        Dialled::Cancelled => return Err(EnrollError::Protocol("cancelled".into())),
        Dialled::Failed(failures) => return Err(failed(&all, failures)),
    };
    let result = tokio::time::timeout(TIMEOUT, exchange(&connection, token, &csr_pem))
        .await
        .unwrap_or_else(|_| Err(EnrollError::Protocol("the hub did not answer in time".into())));
    connection.close(0, b"done");
    endpoints.close(0, b"done", TIMEOUT).await;
    let (device_id, cert_pem, ca_pem, hub_signing_key) = result?;
    let identity = Identity {
        info: HubInfo {
            hub: candidate.hub,
            // One address is stored as before, so an identity stays readable by older agents.
            hubs: if listed.len() > 1 { listed } else { Vec::new() },
            server_name: candidate.server_name,
            device_id,
            ca_fingerprint: fingerprint,
            hub_signing_key,
        },
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

/// No hub completed a handshake: a certificate that does not chain to the pinned CA is said so
/// (it is the operator's fingerprint or the wrong hub); otherwise every hub's reason.
fn failed(all: &str, failures: Vec<(super::hubs::Candidate, Failure)>) -> EnrollError {
    let describe = |f: &Failure| match f {
        Failure::Timeout => "no answer (is the hub running and its port open?)".to_string(),
        other => other.to_string(),
    };
    if let Some((_, f)) = failures.iter().find(|(_, f)| pinned_failure(f)) {
        return EnrollError::NotPinned(f.to_string());
    }
    let reason = match failures.as_slice() {
        [(_, only)] => describe(only),
        many => {
            many.iter().map(|(c, f)| format!("{} ({}): {}", c.hub, c.addr, describe(f))).collect::<Vec<_>>().join("; ")
        }
    };
    EnrollError::Unreachable { hub: all.to_string(), reason }
}

/// A handshake that failed on the hub's certificate: the pinned CA does not match.
fn pinned_failure(f: &Failure) -> bool {
    let text = f.to_string();
    matches!(f, Failure::Handshake(_)) && (text.contains("pinned fingerprint") || text.contains("certificate"))
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
