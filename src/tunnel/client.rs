//! The reconnect loop: load the identity, connect, run the session, and after it ends wait out
//! the delay the protocol's reconnect machine (`redtether_proto::session::Link`) decides.

use super::dial::{Dialled, Endpoints, Failure, TcpDial};
use super::forwarded::Forwarding;
use super::hubs::{Candidate, Chooser};
use super::session::{Session, closed_of};
use super::{TunnelState, TunnelStatus};
use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::{HubAddress, ProxyChoice, TransportChoice};
use crate::deploy::DeployHandle;
use crate::gate::Pipeline;
use crate::identity::Identity;
use crate::state_dir::StateDir;
use crate::supervisor::SupervisorHandle;
use redtether_proto::backoff::jitter;
use redtether_proto::session::{Ending, Link, Outcome, classify};
use redtether_proto::wire::{ALPN, TCP_ALPN, codes};
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
    /// Where streams the hub opens are served.
    pub gate: Arc<Pipeline>,
    /// Reads the resource figures each status report carries.
    pub resources: std::sync::Mutex<crate::resources::ResourceSampler>,
    /// Node-RED's recent output, served on `logs` streams.
    pub logs: crate::logbuf::LogBuffer,
    /// `[tunnel] hubs`: replaces the hub addresses stored at enrollment when set.
    pub hubs: Option<Vec<HubAddress>>,
    /// `[tunnel] transport`, `quic_probe`, `tcp_port`, `proxy`.
    pub transport: TransportChoice,
    pub quic_probe: Duration,
    pub tcp_port: Option<u16>,
    pub proxy: ProxyChoice,
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
    /// The hub address it is about, when one is (the one that refused, or the one used).
    hub: Option<String>,
}

impl Attempt {
    fn unreachable(reason: impl ToString) -> Attempt {
        Attempt { outcome: Outcome::Unreachable, reason: reason.to_string(), hub: None }
    }
    fn refused(reason: impl ToString) -> Attempt {
        Attempt { outcome: Outcome::Refused, reason: reason.to_string(), hub: None }
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
            // The hub stays the one last used; without an identity there is none.
            if identity.is_none() {
                s.hub = None;
                s.hub_addr = None;
                s.hubs.clear();
            }
            s.device_id = identity.map(|i| i.info.device_id.clone());
            s.last_error = error;
            changed
        });
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut link = Link::default();
        let mut endpoints = Endpoints::default();
        let mut chooser = Chooser::new(rand::random());
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
            let attempt = self.attempt(&identity, &mut endpoints, &mut chooser, &cancel).await;
            let hub = attempt.hub.clone().unwrap_or_else(|| self.status.borrow().hubs.join(", "));
            let decision = link.on_outcome(attempt.outcome, jitter());
            match attempt.outcome {
                Outcome::Refused | Outcome::Ended { ending: Ending::Refused, .. } => {
                    tracing::error!(%hub, reason = %attempt.reason, "the hub refused this device's certificate; re-enroll (`redtether enroll`)");
                }
                Outcome::Unreachable => {
                    tracing::debug!(%hub, reason = %attempt.reason, "tunnel connection attempt failed")
                }
                Outcome::Ended { .. } => {}
            }
            // Audited when a refusal spell starts, not at every retry (one every 30 s).
            if decision.audit_refusal {
                let event = AuditEvent::new(AuditKind::TunnelAuthFailed, Actor::System, hub.as_str())
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
        endpoints.close(codes::SHUTDOWN, b"agent stopping", Duration::from_secs(1)).await;
    }

    async fn attempt(
        &self,
        identity: &Identity,
        endpoints: &mut Endpoints,
        chooser: &mut Chooser,
        cancel: &CancellationToken,
    ) -> Attempt {
        let hubs = match super::hubs::to_dial(self.parts.hubs.as_deref(), &identity.info) {
            Ok(hubs) => hubs,
            Err(e) => {
                return Attempt::unreachable(format!(
                    "the enrolled hub address is unusable ({e}); re-enroll or set [tunnel] hubs"
                ));
            }
        };
        let listed: Vec<String> = hubs.iter().map(ToString::to_string).collect();
        self.status.send_if_modified(|s| {
            let changed = s.hubs != listed;
            s.hubs = listed;
            changed
        });
        let candidates = match super::dial::candidates(&hubs, chooser).await {
            Ok(c) => c,
            // Behind a proxy the network may resolve no outside name: the proxy does.
            Err(_) if self.parts.transport != TransportChoice::Quic && self.proxied(&hubs) => Vec::new(),
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
        let dialled = self.dial(identity, &hubs, candidates, endpoints, cancel).await;
        let (mut connection, mut candidate) = match dialled {
            Ok(Dialled::Connected { connection, candidate }) => (connection, candidate),
            Ok(Dialled::Cancelled) => {
                let outcome = Outcome::Ended { ending: Ending::Cancelled, lasted: Duration::ZERO };
                return Attempt { outcome, reason: "agent stopping".into(), hub: None };
            }
            Ok(Dialled::Failed(failures)) => {
                chooser.failed_round();
                return failed_round(failures);
            }
            Err(attempt) => return attempt,
        };
        // Sessions follow one another without a backoff when a QUIC probe found the way back
        // while the tunnel was on TCP.
        loop {
            chooser.connected(&candidate);
            let served = self.serve(identity, &connection, &candidate, endpoints, cancel).await;
            match served.moved {
                Some((quic, to)) if !cancel.is_cancelled() => {
                    tracing::info!(hub = %to.hub, "tunnel moved back to QUIC");
                    (connection, candidate) = (quic, to);
                }
                _ => {
                    let outcome = Outcome::Ended { ending: served.ending, lasted: served.lasted };
                    return Attempt { outcome, reason: served.reason, hub: Some(candidate.hub) };
                }
            }
        }
    }

    /// Dials as `[tunnel] transport` says, racing the candidates on each transport. `auto`:
    /// QUIC first, TLS over TCP when no QUIC handshake completes within
    /// [`AUTO_QUIC_TIMEOUT`]; once TCP was needed it is tried first (a probe looks for QUIC
    /// meanwhile), so a blocked network does not cost every reconnect the wait. `Err` is an
    /// attempt that ended before any handshake (an unusable identity).
    async fn dial(
        &self,
        identity: &Identity,
        hubs: &[HubAddress],
        candidates: Vec<Candidate>,
        endpoints: &mut Endpoints,
        cancel: &CancellationToken,
    ) -> Result<Dialled, Attempt> {
        let tcp = || self.race_tcp(identity, hubs, candidates.clone(), cancel);
        match self.parts.transport {
            TransportChoice::Quic => {
                self.race_quic(identity, candidates.clone(), endpoints, CONNECT_TIMEOUT, cancel).await
            }
            TransportChoice::Tcp => tcp().await,
            TransportChoice::Auto if self.on_tcp.load(Ordering::Relaxed) => match tcp().await? {
                Dialled::Failed(tcp_failures) if unreachable_only(&tcp_failures) => {
                    let quic =
                        self.race_quic(identity, candidates.clone(), endpoints, AUTO_QUIC_TIMEOUT, cancel).await?;
                    if matches!(quic, Dialled::Connected { .. }) {
                        self.on_tcp.store(false, Ordering::Relaxed);
                    }
                    Ok(quic)
                }
                other => Ok(other),
            },
            TransportChoice::Auto => {
                match self.race_quic(identity, candidates.clone(), endpoints, AUTO_QUIC_TIMEOUT, cancel).await? {
                    Dialled::Failed(quic_failures) if unreachable_only(&quic_failures) => {
                        tracing::info!("no QUIC handshake; trying TLS over TCP");
                        let tcp = tcp().await?;
                        match tcp {
                            Dialled::Connected { .. } => self.on_tcp.store(true, Ordering::Relaxed),
                            Dialled::Failed(mut tcp_failures) => {
                                // Both transports' reasons, so status says why neither worked.
                                let mut all = quic_failures;
                                all.append(&mut tcp_failures);
                                return Ok(Dialled::Failed(all));
                            }
                            Dialled::Cancelled => {}
                        }
                        Ok(tcp)
                    }
                    other => Ok(other),
                }
            }
        }
    }

    /// Whether the hubs are reached through an HTTP proxy (`[tunnel] proxy`, `HTTPS_PROXY`).
    fn proxied(&self, hubs: &[HubAddress]) -> bool {
        let env = super::proxy::ProxyEnv::from_process();
        hubs.first().is_some_and(|h| {
            let port = self.parts.tcp_port.unwrap_or(h.port);
            matches!(super::proxy::choose(&self.parts.proxy, &h.host, port, &env), Ok(Some(_)))
        })
    }

    async fn race_quic(
        &self,
        identity: &Identity,
        candidates: Vec<Candidate>,
        endpoints: &mut Endpoints,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Dialled, Attempt> {
        let config = client_config(identity, self.parts.keepalive)
            .map_err(|e| Attempt::refused(format!("identity unusable: {e}")))?;
        Ok(super::dial::race(candidates, super::dial::quic(endpoints, config, timeout), cancel).await)
    }

    async fn race_tcp(
        &self,
        identity: &Identity,
        hubs: &[HubAddress],
        candidates: Vec<Candidate>,
        cancel: &CancellationToken,
    ) -> Result<Dialled, Attempt> {
        let dial = self.tcp_dial(identity).map_err(Attempt::refused)?;
        // Through a proxy the hub's name goes to the proxy: nothing needs resolving here.
        let candidates = if self.proxied(hubs) { super::dial::unresolved(hubs) } else { candidates };
        Ok(super::dial::race(candidates, dial.one(), cancel).await)
    }

    /// How TLS-over-TCP handshakes are made for `identity`.
    fn tcp_dial(&self, identity: &Identity) -> Result<TcpDial, String> {
        let tls = redtether_pki::tls::agent_client(&identity.ca_pem, &identity.cert_pem, &identity.key_pem, TCP_ALPN)
            .map_err(|e| format!("identity unusable: {e}"))?;
        Ok(TcpDial {
            tls: Arc::new(tls),
            port: self.parts.tcp_port,
            proxy: self.parts.proxy.clone(),
            env: Arc::new(super::proxy::ProxyEnv::from_process()),
            keepalive: self.parts.keepalive,
            timeout: CONNECT_TIMEOUT,
        })
    }

    /// Runs one session on `connection`. On TCP under `auto`, QUIC is probed every
    /// `[tunnel] quic_probe`; when a probe connects, this session ends and the QUIC connection
    /// is returned for the next (the hub replaces the device's TCP session with it; work in
    /// flight on TCP ends, and the journal's unacknowledged events go again, once).
    async fn serve(
        &self,
        identity: &Identity,
        connection: &Connection,
        candidate: &Candidate,
        endpoints: &mut Endpoints,
        cancel: &CancellationToken,
    ) -> Served {
        let hub = candidate.hub.clone();
        let addr = candidate.addr.to_string();
        let transport = connection.transport();
        let started = Instant::now();
        self.status.send_modify(|s| {
            s.hub = Some(hub.clone());
            s.hub_addr = Some(addr.clone());
            s.transport = Some(transport.as_str().to_string());
        });
        self.set(TunnelState::Online, Some(identity), None);
        self.status.send_modify(|s| s.connects += 1);
        tracing::info!(%hub, %addr, %transport, "tunnel up");
        let event = AuditEvent::new(AuditKind::TunnelConnected, Actor::System, hub.as_str())
            .with("addr", addr.as_str())
            .with("transport", transport.as_str());
        self.parts.audit.record_or_log(event).await;
        let session = Session {
            connection: connection.clone(),
            hub: hub.clone(),
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
            quic = self.probe_quic(identity, candidate, endpoints), if probing => {
                moved = Some(quic);
                switch.cancel();
                let _ = run.await;
                self.on_tcp.store(false, Ordering::Relaxed);
                (Ending::Lost, "moving to QUIC".to_string())
            }
        };
        self.connection.send_replace(None);
        self.status.send_modify(|s| s.transport = None);
        tracing::info!(%hub, %addr, %reason, "tunnel down");
        let event = AuditEvent::new(AuditKind::TunnelDisconnected, Actor::System, hub.as_str())
            .with("addr", addr.as_str())
            .with("reason", reason.as_str())
            .with("transport", transport.as_str());
        self.parts.audit.record_or_log(event).await;
        Served { ending, reason, lasted: started.elapsed(), moved }
    }

    /// Tries QUIC to the hub in use every `[tunnel] quic_probe` until a handshake completes.
    async fn probe_quic(
        &self,
        identity: &Identity,
        candidate: &Candidate,
        endpoints: &mut Endpoints,
    ) -> (Connection, Candidate) {
        loop {
            tokio::time::sleep(self.parts.quic_probe).await;
            let Ok(config) = client_config(identity, self.parts.keepalive) else { continue };
            // Through a proxy the candidate has no address: QUIC goes to the hub's name.
            let mut target = candidate.clone();
            if target.addr.ip().is_unspecified()
                && let Ok(Some(addr)) = tokio::net::lookup_host((target.server_name.as_str(), target.addr.port()))
                    .await
                    .map(|mut a| a.next())
            {
                target.addr = addr;
            }
            let never = CancellationToken::new();
            let dial = super::dial::quic(endpoints, config, AUTO_QUIC_TIMEOUT);
            match super::dial::race(vec![target], dial, &never).await {
                Dialled::Connected { connection, candidate } => return (connection, candidate),
                _ => tracing::debug!(hub = %candidate.hub, "QUIC probe: still no way through"),
            }
        }
    }
}

/// How a session ended, and the QUIC connection to go on with when a probe found one.
struct Served {
    ending: Ending,
    reason: String,
    lasted: Duration,
    moved: Option<(Connection, Candidate)>,
}

/// Whether every failure was the network's (a refusal would be the same on another transport).
fn unreachable_only(failures: &[(Candidate, Failure)]) -> bool {
    !failures.iter().any(|(_, f)| matches!(f, Failure::Handshake(e) if classify(closed_of(e)) == Ending::Refused))
}

fn failed_round(failures: Vec<(Candidate, Failure)>) -> Attempt {
    let refused = failures.iter().find(|(_, f)| match f {
        Failure::Handshake(e) => classify(closed_of(e)) == Ending::Refused,
        _ => false,
    });
    if let Some((candidate, failure)) = refused {
        return Attempt { outcome: Outcome::Refused, reason: failure.to_string(), hub: Some(candidate.hub.clone()) };
    }
    let reason = match failures.as_slice() {
        [(_, only)] => only.to_string(),
        all => all
            .iter()
            .map(|(c, f)| match c.addr.ip().is_unspecified() {
                // (A hub reached through a proxy has no address of its own here.)
                true => format!("{}: {f}", c.hub),
                false => format!("{} ({}): {f}", c.hub, c.addr),
            })
            .collect::<Vec<_>>()
            .join("; "),
    };
    Attempt::unreachable(reason)
}

pub use redtether_pki::quic::ClientConfigError;

/// The QUIC client configuration of the tunnel (public so the benchmark's simulated agents use
/// exactly the agent's).
pub fn client_config(identity: &Identity, keepalive: Duration) -> Result<quinn::ClientConfig, ClientConfigError> {
    redtether_pki::quic::tunnel_client(&identity.ca_pem, &identity.cert_pem, &identity.key_pem, ALPN, keepalive)
}
