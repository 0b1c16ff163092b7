//! The reconnect loop: load the identity, connect, run the session, and after it ends wait out
//! the delay the protocol's reconnect machine (`redtether_proto::session::Link`) decides.

use super::dial::{Dialled, Endpoints, Failure};
use super::forwarded::Forwarding;
use super::hubs::{Candidate, Chooser};
use super::session::{Session, closed_of};
use super::{TunnelState, TunnelStatus};
use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::HubAddress;
use crate::deploy::DeployHandle;
use crate::gate::Pipeline;
use crate::identity::Identity;
use crate::state_dir::StateDir;
use crate::supervisor::SupervisorHandle;
use redtether_proto::backoff::jitter;
use redtether_proto::session::{Ending, Link, Outcome, classify};
use redtether_proto::wire::{ALPN, codes};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// The rest of the agent's view of the tunnel.
#[derive(Clone)]
pub struct TunnelHandle {
    status: watch::Receiver<TunnelStatus>,
    reload: Arc<Notify>,
    connection: watch::Receiver<Option<quinn::Connection>>,
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
        self.connection.borrow().as_ref().map(quinn::Connection::rtt)
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
}

pub struct Tunnel {
    parts: TunnelParts,
    status: watch::Sender<TunnelStatus>,
    reload: Arc<Notify>,
    /// The connection while a session runs on it (for its round-trip time).
    connection: watch::Sender<Option<quinn::Connection>>,
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
        (Tunnel { parts, status, reload, connection }, handle)
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
        let config = match client_config(identity, self.parts.keepalive) {
            Ok(c) => c,
            Err(e) => return Attempt::refused(format!("identity unusable: {e}")),
        };
        let (connection, candidate) =
            match super::dial::race(endpoints, candidates, &config, CONNECT_TIMEOUT, cancel).await {
                Dialled::Connected { connection, candidate } => (connection, candidate),
                Dialled::Cancelled => {
                    let outcome = Outcome::Ended { ending: Ending::Cancelled, lasted: Duration::ZERO };
                    return Attempt { outcome, reason: "agent stopping".into(), hub: None };
                }
                Dialled::Failed(failures) => {
                    chooser.failed_round();
                    return failed_round(failures);
                }
            };
        chooser.connected(&candidate);
        let hub = candidate.hub.clone();
        let addr = candidate.addr.to_string();
        let started = Instant::now();
        self.status.send_modify(|s| {
            s.hub = Some(hub.clone());
            s.hub_addr = Some(addr.clone());
        });
        self.set(TunnelState::Online, Some(identity), None);
        self.status.send_modify(|s| s.connects += 1);
        tracing::info!(%hub, %addr, "tunnel up");
        let event =
            AuditEvent::new(AuditKind::TunnelConnected, Actor::System, hub.as_str()).with("addr", addr.as_str());
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
        let (ending, reason) = session.run(cancel).await;
        self.connection.send_replace(None);
        tracing::info!(%hub, %addr, %reason, "tunnel down");
        let event = AuditEvent::new(AuditKind::TunnelDisconnected, Actor::System, hub.as_str())
            .with("addr", addr.as_str())
            .with("reason", reason.as_str());
        self.parts.audit.record_or_log(event).await;
        Attempt { outcome: Outcome::Ended { ending, lasted: started.elapsed() }, reason, hub: Some(hub) }
    }
}

/// A round in which no hub connected: a refusal if any hub refused the certificate (a TLS alert
/// or a refusal code: the identity is the problem, and hubs of one fleet share their registry),
/// else unreachable; the reason names each hub tried.
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
        all => all.iter().map(|(c, f)| format!("{} ({}): {f}", c.hub, c.addr)).collect::<Vec<_>>().join("; "),
    };
    Attempt::unreachable(reason)
}

pub use redtether_pki::quic::ClientConfigError;

/// The QUIC client configuration of the tunnel (public so the benchmark's simulated agents use
/// exactly the agent's).
pub fn client_config(identity: &Identity, keepalive: Duration) -> Result<quinn::ClientConfig, ClientConfigError> {
    redtether_pki::quic::tunnel_client(&identity.ca_pem, &identity.cert_pem, &identity.key_pem, ALPN, keepalive)
}
