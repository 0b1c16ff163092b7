//! The reconnect loop: load the identity, connect, run the session, and after it ends wait out
//! the delay the protocol's reconnect machine (`redtether_proto::session::Link`) decides.

use super::dial::{self, DialError};
use super::forwarded::Forwarding;
use super::session::Session;
use super::{TunnelState, TunnelStatus};
use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::TransportChoice;
use crate::deploy::DeployHandle;
use crate::gate::Pipeline;
use crate::identity::Identity;
use crate::state_dir::StateDir;
use crate::supervisor::SupervisorHandle;
use redtether_proto::backoff::jitter;
use redtether_proto::session::{Ending, Link, Outcome};
use redtether_proto::wire::{ALPN, codes};
use redtether_transport::{Connection, Transport};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Under `transport = "auto"`, how long a QUIC handshake may take before TCP is tried: UDP
/// that is dropped shows as no answer at all.
const AUTO_QUIC_TIMEOUT: Duration = Duration::from_secs(3);

/// The rest of the agent's view of the tunnel.
#[derive(Clone)]
pub struct TunnelHandle {
    status: watch::Receiver<TunnelStatus>,
    reload: Arc<Notify>,
    connection: watch::Receiver<Option<Connection>>,
}

impl TunnelHandle {
    pub fn status(&self) -> TunnelStatus {
        self.status.borrow().clone()
    }
    /// Re-reads the identity now (after `redtether enroll`).
    pub fn reload(&self) {
        self.reload.notify_one();
    }
    /// QUIC's current estimate of the round trip to the hub, while the tunnel is up.
    pub fn rtt(&self) -> Option<Duration> {
        self.connection.borrow().as_ref().map(Connection::rtt)
    }
}

/// What a tunnel is made from.
pub struct TunnelParts {
    pub dir: StateDir,
    pub supervisor: SupervisorHandle,
    pub deploy: DeployHandle,
    pub audit: Auditor,
    pub gate_listen: String,
    /// Applies the policies the hub sends.
    pub security: Arc<crate::security::SecurityControl>,
    pub keepalive: Duration,
    /// `[tunnel] transport` and `quic_probe`.
    pub transport: TransportChoice,
    pub quic_probe: Duration,
    pub tcp_port: Option<u16>,
    /// Where streams the hub opens are served.
    pub gate: Arc<Pipeline>,
    /// Reads the resource figures each status report carries.
    pub resources: std::sync::Mutex<crate::resources::ResourceSampler>,
    /// Node-RED's recent output, served on `logs` streams.
    pub logs: crate::logbuf::LogBuffer,
}

pub struct Tunnel {
    parts: TunnelParts,
    status: watch::Sender<TunnelStatus>,
    reload: Arc<Notify>,
    /// The connection while a session runs on it (for its round-trip time).
    connection: watch::Sender<Option<Connection>>,
    /// Under `auto`: the last connection needed TCP (tried first until a QUIC probe succeeds).
    on_tcp: AtomicBool,
}

/// What one attempt came to, and why (for the status and the log).
struct Attempt {
    outcome: Outcome,
    reason: String,
}

impl Attempt {
    fn unreachable(reason: impl ToString) -> Attempt {
        Attempt { outcome: Outcome::Unreachable, reason: reason.to_string() }
    }
    fn refused(reason: impl ToString) -> Attempt {
        Attempt { outcome: Outcome::Refused, reason: reason.to_string() }
    }
}

impl Tunnel {
    pub fn new(parts: TunnelParts) -> (Tunnel, TunnelHandle) {
        let (status, rx) = watch::channel(TunnelStatus::initial());
        let reload = Arc::new(Notify::new());
        let (connection, connection_rx) = watch::channel(None);
        let handle = TunnelHandle { status: rx, reload: Arc::clone(&reload), connection: connection_rx };
        (Tunnel { parts, status, reload, connection, on_tcp: AtomicBool::new(false) }, handle)
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
        let mut link = Link::default();
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
            let last_error = self.status.borrow().last_error.clone();
            self.set(link.connecting_state(), Some(&identity), last_error);
            let attempt = self.attempt(&identity, &mut endpoint, &cancel).await;
            let decision = link.on_outcome(attempt.outcome, jitter());
            match attempt.outcome {
                Outcome::Refused | Outcome::Ended { ending: Ending::Refused, .. } => {
                    tracing::error!(hub = %identity.info.hub, reason = %attempt.reason, "the hub refused this device's certificate; re-enroll (`redtether enroll`)");
                }
                Outcome::Unreachable => {
                    tracing::debug!(hub = %identity.info.hub, reason = %attempt.reason, "tunnel connection attempt failed")
                }
                Outcome::Ended { .. } => {}
            }
            // Audited when a refusal spell starts, not at every retry (one every 30 s).
            if decision.audit_refusal {
                let event = AuditEvent::new(AuditKind::TunnelAuthFailed, Actor::System, identity.info.hub.as_str())
                    .with("reason", attempt.reason.as_str());
                self.parts.audit.record_or_log(event).await;
            }
            let Some(delay) = decision.retry_in else { break };
            // While refused, a hub that cannot be reached leaves the refusal as the last error.
            if !(attempt.outcome == Outcome::Unreachable && decision.state == TunnelState::AuthFailed) {
                self.set(decision.state, Some(&identity), Some(attempt.reason));
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
                _ = self.reload.notified() => link.reset(),
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
            Err(e) => return Attempt::unreachable(e),
        };
        // An expired certificate will be refused; say so plainly instead of trying.
        if let Ok(cert) = identity.certificate()
            && cert.not_after <= SystemTime::now()
        {
            let at = redtether_proto::time::format_seconds(cert.not_after);
            return Attempt::refused(format!(
                "the device certificate expired at {at}; re-enroll with `redtether enroll`"
            ));
        }
        let target = Target { identity, addr, server_name };
        let dialled = tokio::select! {
            _ = cancel.cancelled() => {
                let outcome = Outcome::Ended { ending: Ending::Cancelled, lasted: Duration::ZERO };
                return Attempt { outcome, reason: "agent stopping".into() };
            }
            dialled = self.dial(&target, endpoint) => dialled,
        };
        let mut connection = match dialled {
            Ok(c) => c,
            Err(DialError::Refused(e)) => return Attempt::refused(e),
            Err(DialError::Unreachable(e)) => return Attempt::unreachable(e),
        };
        // Sessions follow one another without a backoff when a QUIC probe found the way back
        // while the tunnel was on TCP.
        loop {
            let (ending, reason, lasted, moved) = self.serve(identity, &connection, &target, endpoint, cancel).await;
            match moved {
                Some(quic) if !cancel.is_cancelled() => {
                    tracing::info!(hub = %identity.info.hub, "tunnel moved back to QUIC");
                    connection = quic;
                }
                _ => return Attempt { outcome: Outcome::Ended { ending, lasted }, reason },
            }
        }
    }

    /// Dials as `[tunnel] transport` says. `auto`: QUIC first, TLS over TCP when no QUIC
    /// handshake completes within [`AUTO_QUIC_TIMEOUT`]; once TCP was needed it is tried first
    /// (a probe looks for QUIC meanwhile), so a blocked network does not cost every reconnect
    /// the wait.
    async fn dial(&self, target: &Target<'_>, endpoint: &mut Option<quinn::Endpoint>) -> Result<Connection, DialError> {
        match self.parts.transport {
            TransportChoice::Quic => self.dial_quic(target, endpoint, CONNECT_TIMEOUT).await,
            TransportChoice::Tcp => self.dial_tcp(target).await,
            TransportChoice::Auto if self.on_tcp.load(Ordering::Relaxed) => match self.dial_tcp(target).await {
                Err(DialError::Unreachable(tcp)) => {
                    let quic = self.dial_quic(target, endpoint, AUTO_QUIC_TIMEOUT).await;
                    if quic.is_ok() {
                        self.on_tcp.store(false, Ordering::Relaxed);
                    }
                    quic.map_err(|e| e.after(&tcp))
                }
                other => other,
            },
            TransportChoice::Auto => match self.dial_quic(target, endpoint, AUTO_QUIC_TIMEOUT).await {
                Err(DialError::Unreachable(quic)) => {
                    tracing::info!(hub = %target.identity.info.hub, reason = %quic, "no QUIC handshake; trying TLS over TCP");
                    let tcp = self.dial_tcp(target).await;
                    if tcp.is_ok() {
                        self.on_tcp.store(true, Ordering::Relaxed);
                    }
                    tcp.map_err(|e| e.after(&quic))
                }
                other => other,
            },
        }
    }

    async fn dial_quic(
        &self,
        target: &Target<'_>,
        endpoint: &mut Option<quinn::Endpoint>,
        timeout: Duration,
    ) -> Result<Connection, DialError> {
        let (identity, addr, keepalive) = (target.identity, target.addr, self.parts.keepalive);
        dial::quic(identity, addr, &target.server_name, endpoint, keepalive, timeout).await
    }

    async fn dial_tcp(&self, target: &Target<'_>) -> Result<Connection, DialError> {
        let (identity, mut addr, keepalive) = (target.identity, target.addr, self.parts.keepalive);
        if let Some(port) = self.parts.tcp_port {
            addr.set_port(port);
        }
        dial::tcp(identity, addr, &target.server_name, keepalive, CONNECT_TIMEOUT).await
    }

    /// Runs one session on `connection`. On TCP under `auto`, QUIC is probed every
    /// `[tunnel] quic_probe`; when a probe connects, this session ends and the QUIC connection
    /// is returned for the next (the hub replaces the device's TCP session with it; work in
    /// flight on TCP ends, and the journal's unacknowledged events go again, once).
    async fn serve(
        &self,
        identity: &Identity,
        connection: &Connection,
        target: &Target<'_>,
        endpoint: &mut Option<quinn::Endpoint>,
        cancel: &CancellationToken,
    ) -> (Ending, String, Duration, Option<Connection>) {
        let started = Instant::now();
        let transport = connection.transport();
        self.set(TunnelState::Online, Some(identity), None);
        self.status.send_modify(|s| {
            s.connects += 1;
            s.transport = Some(transport.as_str().to_string());
        });
        tracing::info!(hub = %identity.info.hub, %transport, "tunnel up");
        let event = AuditEvent::new(AuditKind::TunnelConnected, Actor::System, identity.info.hub.as_str())
            .with("transport", transport.as_str());
        self.parts.audit.record_or_log(event).await;
        let session = Session {
            connection: connection.clone(),
            hub: identity.info.hub.clone(),
            forwarding: Arc::new(Forwarding::new(
                Arc::clone(&self.parts.gate),
                self.parts.logs.clone(),
                self.parts.audit.clone(),
                &identity.info.device_id,
                &identity.info.hub_signing_key,
            )),
            streams: TaskTracker::new(),
            parts: &self.parts,
        };
        self.connection.send_replace(Some(connection.clone()));
        let probing = transport == Transport::Tcp && self.parts.transport == TransportChoice::Auto;
        let switch = cancel.child_token();
        let run = session.run(&switch);
        tokio::pin!(run);
        let mut moved = None;
        let (ending, reason) = tokio::select! {
            ended = &mut run => ended,
            quic = self.probe_quic(target, endpoint), if probing => {
                moved = Some(quic);
                switch.cancel();
                let (_, _) = run.await;
                self.on_tcp.store(false, Ordering::Relaxed);
                (Ending::Lost, "moving to QUIC".to_string())
            }
        };
        self.connection.send_replace(None);
        self.status.send_modify(|s| s.transport = None);
        tracing::info!(hub = %identity.info.hub, %reason, "tunnel down");
        let event = AuditEvent::new(AuditKind::TunnelDisconnected, Actor::System, identity.info.hub.as_str())
            .with("reason", reason.as_str())
            .with("transport", transport.as_str());
        self.parts.audit.record_or_log(event).await;
        (ending, reason, started.elapsed(), moved)
    }

    /// Tries QUIC every `[tunnel] quic_probe` until a handshake completes.
    async fn probe_quic(&self, target: &Target<'_>, endpoint: &mut Option<quinn::Endpoint>) -> Connection {
        loop {
            tokio::time::sleep(self.parts.quic_probe).await;
            match self.dial_quic(target, endpoint, AUTO_QUIC_TIMEOUT).await {
                Ok(connection) => return connection,
                Err(e) => {
                    tracing::debug!(hub = %target.identity.info.hub, reason = %e, "QUIC probe: still no way through")
                }
            }
        }
    }
}

/// Where one attempt dials.
struct Target<'a> {
    identity: &'a Identity,
    addr: std::net::SocketAddr,
    server_name: String,
}

pub use redtether_pki::quic::ClientConfigError;

/// The QUIC client configuration of the tunnel (public so the benchmark's simulated agents use
/// exactly the agent's).
pub fn client_config(identity: &Identity, keepalive: Duration) -> Result<quinn::ClientConfig, ClientConfigError> {
    redtether_pki::quic::tunnel_client(&identity.ca_pem, &identity.cert_pem, &identity.key_pem, ALPN, keepalive)
}
