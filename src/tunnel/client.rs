//! The reconnect loop: load the identity, connect, run the session, and after it ends wait out
//! the backoff before the next attempt.

use super::forwarded::Forwarding;
use super::session::{Session, SessionEnd};
use super::{TunnelState, TunnelStatus};
use crate::audit::{Actor, AuditEvent, Auditor};
use crate::backoff::{Backoff, jitter};
use crate::deploy::DeployHandle;
use crate::gate::Pipeline;
use crate::identity::Identity;
use crate::protocol::{ALPN, codes};
use crate::state_dir::StateDir;
use crate::supervisor::SupervisorHandle;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// The rest of the agent's view of the tunnel.
#[derive(Clone)]
pub struct TunnelHandle {
    status: watch::Receiver<TunnelStatus>,
    reload: Arc<Notify>,
}

impl TunnelHandle {
    pub fn status(&self) -> TunnelStatus {
        self.status.borrow().clone()
    }
    /// Re-reads the identity now (after `redtether enroll`).
    pub fn reload(&self) {
        self.reload.notify_one();
    }
}

/// What a tunnel is made from.
pub struct TunnelParts {
    pub dir: StateDir,
    pub supervisor: SupervisorHandle,
    pub deploy: DeployHandle,
    pub audit: Auditor,
    pub gate_listen: String,
    pub protection: bool,
    pub keepalive: Duration,
    /// Where streams the hub opens are served.
    pub gate: Arc<Pipeline>,
}

pub struct Tunnel {
    parts: TunnelParts,
    status: watch::Sender<TunnelStatus>,
    reload: Arc<Notify>,
}

enum Attempt {
    Ended(SessionEnd, Duration),
    Refused(String),
    Failed(String),
}

impl Tunnel {
    pub fn new(parts: TunnelParts) -> (Tunnel, TunnelHandle) {
        let (status, rx) = watch::channel(TunnelStatus::initial());
        let reload = Arc::new(Notify::new());
        let handle = TunnelHandle { status: rx, reload: Arc::clone(&reload) };
        (Tunnel { parts, status, reload }, handle)
    }

    fn set(&self, state: TunnelState, identity: Option<&Identity>, error: Option<String>) {
        self.status.send_if_modified(|s| {
            let changed = s.state != state || s.last_error != error;
            if s.state != state {
                s.since = SystemTime::now();
            }
            s.state = state;
            s.hub = identity.map(|i| i.info.hub.clone());
            s.device_id = identity.map(|i| i.info.device_id.clone());
            s.last_error = error;
            changed
        });
    }

    pub async fn run(self, cancel: CancellationToken) {
        let backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut attempt = 0u32;
        let mut endpoint: Option<quinn::Endpoint> = None;
        loop {
            let identity = match Identity::load(&self.parts.dir) {
                Ok(Some(identity)) => identity,
                Ok(None) => {
                    self.set(TunnelState::Offline, None, None);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.reload.notified() => continue,
                    }
                }
                Err(e) => {
                    self.set(TunnelState::Offline, None, Some(e.to_string()));
                    tracing::error!(error = %e, "the tunnel identity is unusable; re-enroll");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.reload.notified() => continue,
                    }
                }
            };
            // (The watch's read guard must be gone before `set` takes the write side.)
            let (state, last_error) = {
                let s = self.status.borrow();
                (s.state, s.last_error.clone())
            };
            if state != TunnelState::AuthFailed {
                self.set(TunnelState::Connecting, Some(&identity), last_error);
            }
            let delay = match self.attempt(&identity, &mut endpoint, &cancel).await {
                Attempt::Ended(end, lasted) => {
                    if lasted >= HEALTHY || end == SessionEnd::HubRestarted {
                        attempt = 0;
                    }
                    if end == SessionEnd::Cancelled {
                        break;
                    }
                    let delay = backoff.delay(attempt, jitter());
                    attempt = attempt.saturating_add(1);
                    delay
                }
                Attempt::Refused(reason) => {
                    tracing::error!(hub = %identity.info.hub, %reason, "the hub refused this device's certificate; re-enroll (`redtether enroll`)");
                    // Audited when it starts, not at every retry (one every 30 s while it lasts).
                    let already = self.status.borrow().state == TunnelState::AuthFailed;
                    if !already {
                        let event = AuditEvent::new("tunnel.auth_failed", Actor::System, identity.info.hub.as_str())
                            .with("reason", reason.as_str());
                        self.parts.audit.record_or_log(event).await;
                    }
                    self.set(TunnelState::AuthFailed, Some(&identity), Some(reason));
                    BACKOFF_MAX
                }
                Attempt::Failed(reason) => {
                    tracing::debug!(hub = %identity.info.hub, %reason, "tunnel connection attempt failed");
                    if self.status.borrow().state != TunnelState::AuthFailed {
                        self.set(TunnelState::Connecting, Some(&identity), Some(reason));
                    }
                    let delay = backoff.delay(attempt, jitter());
                    attempt = attempt.saturating_add(1);
                    delay
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
                _ = self.reload.notified() => attempt = 0,
            }
        }
        if let Some(endpoint) = endpoint {
            endpoint.close(codes::SHUTDOWN.into(), b"agent stopping");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }

    async fn attempt(
        &self,
        identity: &Identity,
        endpoint: &mut Option<quinn::Endpoint>,
        cancel: &CancellationToken,
    ) -> Attempt {
        let (addr, server_name) = match super::enroll::resolve(&identity.info.hub).await {
            Ok(pair) => pair,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        // An expired certificate will be refused; say so plainly instead of trying.
        if let Ok(cert) = identity.certificate()
            && cert.not_after <= SystemTime::now()
        {
            let at = crate::rfc3339::format_seconds(cert.not_after);
            return Attempt::Refused(format!(
                "the device certificate expired at {at}; re-enroll with `redtether enroll`"
            ));
        }
        let config = match client_config(identity, self.parts.keepalive) {
            Ok(c) => c,
            Err(e) => return Attempt::Refused(format!("identity unusable: {e}")),
        };
        if endpoint.is_none() {
            match super::enroll::client_endpoint(&addr) {
                Ok(e) => *endpoint = Some(e),
                Err(e) => return Attempt::Failed(e.to_string()),
            }
        }
        let Some(ep) = endpoint.as_ref() else { return Attempt::Failed("no endpoint".into()) };
        let connecting = match ep.connect_with(config, addr, &server_name) {
            Ok(c) => c,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        let connection = tokio::select! {
            _ = cancel.cancelled() => return Attempt::Ended(SessionEnd::Cancelled, Duration::ZERO),
            result = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => match result {
                Err(_) => return Attempt::Failed("no answer from the hub".into()),
                Ok(Err(e)) => return classify(e),
                Ok(Ok(c)) => c,
            },
        };
        let started = Instant::now();
        self.set(TunnelState::Online, Some(identity), None);
        self.status.send_modify(|s| s.connects += 1);
        tracing::info!(hub = %identity.info.hub, "tunnel up");
        self.parts
            .audit
            .record_or_log(AuditEvent::new("tunnel.connected", Actor::System, identity.info.hub.as_str()))
            .await;
        let session = Session {
            connection: connection.clone(),
            forwarding: Arc::new(Forwarding::new(
                Arc::clone(&self.parts.gate),
                &identity.info.device_id,
                &identity.info.hub_signing_key,
            )),
            streams: TaskTracker::new(),
            parts: &self.parts,
        };
        let (end, reason) = session.run(cancel).await;
        tracing::info!(hub = %identity.info.hub, %reason, "tunnel down");
        let event = AuditEvent::new("tunnel.disconnected", Actor::System, identity.info.hub.as_str())
            .with("reason", reason.as_str());
        self.parts.audit.record_or_log(event).await;
        if end == SessionEnd::Refused {
            return Attempt::Refused(reason);
        }
        self.set(TunnelState::Connecting, Some(identity), Some(reason));
        Attempt::Ended(end, started.elapsed())
    }
}

/// The QUIC client configuration of the tunnel (public so the benchmark's simulated agents use
/// exactly the agent's).
pub fn client_config(identity: &Identity, keepalive: Duration) -> Result<quinn::ClientConfig, String> {
    let tls = crate::pki::tls::agent_client(&identity.ca_pem, &identity.cert_pem, &identity.key_pem, ALPN)
        .map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Keep-alives keep NAT bindings open on cellular links, notice a dead path, and reach a
    // restarted hub, whose stateless reset tells the agent to reconnect at once.
    transport.keep_alive_interval(Some(keepalive));
    transport.max_idle_timeout(Some(
        Duration::from_secs(30).try_into().map_err(|e: quinn::VarIntBoundsExceeded| e.to_string())?,
    ));
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A TLS alert (a refused certificate, either way) or the hub's refusal codes mean the
/// identity is the problem; anything else is the network.
fn classify(e: quinn::ConnectionError) -> Attempt {
    use quinn::ConnectionError as E;
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match &e {
        E::TransportError(t) if crypto(t.code) => Attempt::Refused(e.to_string()),
        E::ConnectionClosed(c) if crypto(c.error_code) => Attempt::Refused(e.to_string()),
        E::ApplicationClosed(c)
            if [codes::CERTIFICATE_REQUIRED, codes::REVOKED].map(u64::from).contains(&c.error_code.into_inner()) =>
        {
            Attempt::Refused(e.to_string())
        }
        _ => Attempt::Failed(e.to_string()),
    }
}
