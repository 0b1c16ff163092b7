//! One tunnel session on the agent: the I/O shell around the protocol's control-stream state
//! machine (`redtether_proto::session::AgentSession`). It reads frames and feeds them in, feeds
//! in what happens on the agent (Node-RED's state, new journal events, deployment outcomes, SBOMs)
//! and the ticks the machine asks for, and carries out the actions that come out: frames to
//! send, events to record, journal reads and acknowledgements, commands, renewal steps. A
//! stream the machine closes (a malformed or unexpected frame) is replaced by a new one; the
//! connection stays. Streams the hub opens (the remote editor) are served on their own tasks.

use super::client::TunnelParts;
use super::forwarded::Forwarding;
use super::renew::{RenewalKeys, due_in};
use crate::identity::Identity;
use redtether_proto::session::{
    AgentAction, AgentConfig, AgentEvent, AgentSession, Closed, Ending, Instant, classify, feed,
};
use redtether_proto::wire::{AgentFrame, Command, DeviceStatus, FrameDecoder, encode};
use redtether_transport::{Connection, ConnectionError, ReadError, RecvStream, SendStream};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct Session<'a> {
    pub connection: Connection,
    /// The hub as audit events name it.
    pub hub: String,
    /// Streams the hub opens (the remote editor) go to the gate through this.
    pub forwarding: Arc<Forwarding>,
    /// Owns the tasks serving those streams.
    pub streams: TaskTracker,
    /// The agent's parts the session works with (identity renewal in its state dir, the
    /// supervisor, deployments, the journal, what status reports).
    pub parts: &'a TunnelParts,
}

enum StreamEnd {
    Connection(Ending, String),
    Faulted,
}

/// How the transport says a connection ended, in the protocol's terms (one-to-one; the
/// protocol's [`classify`] decides what it means).
pub fn closed_of(e: &ConnectionError) -> Closed {
    match e {
        ConnectionError::Reset => Closed::StatelessReset,
        ConnectionError::TransportClosed { code, .. } => Closed::Transport(*code),
        ConnectionError::ApplicationClosed { code, .. } => Closed::Application(*code),
        ConnectionError::LocallyClosed => Closed::Local,
        ConnectionError::TimedOut | ConnectionError::Lost(_) => Closed::Other,
    }
}

fn end_of(e: &ConnectionError) -> (Ending, String) {
    (classify(closed_of(e)), e.to_string())
}

impl Session<'_> {
    pub async fn run(&self, cancel: &CancellationToken) -> (Ending, String) {
        let end = self.control_streams(cancel).await;
        // Forwarded streams end with the connection (or at `cancel`); wait for their tasks.
        self.streams.close();
        if tokio::time::timeout(Duration::from_secs(2), self.streams.wait()).await.is_err() {
            tracing::warn!("forwarded streams still open after the session ended");
        }
        end
    }

    async fn control_streams(&self, cancel: &CancellationToken) -> (Ending, String) {
        let mut faults = 0u32;
        loop {
            let (send, recv) = match self.connection.open_bi().await {
                Ok(pair) => pair,
                Err(e) => return end_of(&e),
            };
            match self.control(send, recv, cancel).await {
                // A write that failed because the connection closed knows only that it is
                // gone; the connection knows why (a revocation must not look like a lost path).
                StreamEnd::Connection(Ending::Lost, reason) => {
                    return self.connection.close_reason().map_or((Ending::Lost, reason), |e| end_of(&e));
                }
                StreamEnd::Connection(end, reason) => return (end, reason),
                StreamEnd::Faulted => {
                    faults += 1;
                    // A hub that keeps sending garbage is not worth a tight loop.
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(faults.min(25)))).await;
                }
            }
        }
    }

    async fn control(&self, mut send: SendStream, mut recv: RecvStream, cancel: &CancellationToken) -> StreamEnd {
        let origin = tokio::time::Instant::now();
        let now = || Instant::from_origin(origin.elapsed());
        // Read again for every control stream: an earlier one may have renewed it.
        let identity = Identity::load(&self.parts.dir).ok().flatten();
        let cert = identity.as_ref().and_then(|i| i.certificate().ok());
        let mut keys = identity.filter(|_| cert.is_some()).map(RenewalKeys::new);
        let mut reports = self.parts.deploy.reports();
        let mut sboms = self.parts.deploy.sbom();
        // The last outcome is sent at the welcome; an SBOM made before this stream is not news.
        let last_report = reports.borrow_and_update().clone();
        sboms.mark_unchanged();
        let config = AgentConfig::new(crate::VERSION, self.hub.as_str());
        let mut session = AgentSession::new(config, now(), cert.as_ref().map(due_in), last_report)
            .with_policy_report(self.parts.security.last_report().await);
        let mut node_red = self.parts.supervisor.subscribe();
        let mut new_events = self.parts.audit.subscribe();
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 16 * 1024];
        // A source that closed (its task ended with the agent) is not polled again.
        let (mut node_red_open, mut events_open, mut reports_open, mut sboms_open) = (true, true, true, true);
        loop {
            while let Some(action) = session.poll_action() {
                if let Some(end) = self.perform(action, &mut session, &mut send, &mut recv, &mut keys, now()).await {
                    return end;
                }
            }
            if feed(&mut decoder, &mut session, now()) {
                continue;
            }
            let deadline = session.next_deadline().map(|at| origin + at.since_origin());
            let forwarding_idle = session.is_welcomed() && !session.batch_in_flight();
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.connection.close(redtether_proto::wire::codes::SHUTDOWN, b"agent stopping");
                    return StreamEnd::Connection(Ending::Cancelled, "agent stopping".into());
                }
                read = recv.read(&mut buf) => match read {
                    Ok(Some(n)) => decoder.feed(&buf[..n]),
                    Ok(None) => return StreamEnd::Faulted,
                    Err(ReadError::ConnectionLost(e)) => {
                        let (end, reason) = end_of(&e);
                        return StreamEnd::Connection(end, reason);
                    }
                    Err(ReadError::Reset(code)) => {
                        tracing::warn!(%code, "the hub closed the control stream");
                        return StreamEnd::Faulted;
                    }
                    Err(e) => return StreamEnd::Connection(Ending::Lost, e.to_string()),
                },
                changed = node_red.changed(), if node_red_open => match changed {
                    Ok(()) => session.on_event(AgentEvent::NodeRedChanged, now()),
                    Err(_) => node_red_open = false,
                },
                committed = new_events.recv(), if forwarding_idle && events_open => match committed {
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => events_open = false,
                    // (Lagging behind is fine: the journal is read from the cursor, not from here.)
                    _ => session.on_event(AgentEvent::AuditCommitted, now()),
                },
                changed = reports.changed(), if reports_open => match changed {
                    Ok(()) => {
                        let report = reports.borrow_and_update().clone();
                        if let Some(report) = report {
                            session.on_event(AgentEvent::Deployment(report), now());
                        }
                    }
                    Err(_) => reports_open = false,
                },
                changed = sboms.changed(), if sboms_open => match changed {
                    Ok(()) => {
                        let sbom = sboms.borrow_and_update().clone();
                        if let Some(sbom) = sbom {
                            session.on_event(AgentEvent::Sbom((*sbom).clone()), now());
                        }
                    }
                    Err(_) => sboms_open = false,
                },
                _ = redtether_host::deadline::sleep_until(deadline) => session.on_tick(now()),
                stream = self.connection.accept_bi() => match stream {
                    // One operator connection: served by the gate on its own task.
                    Ok((s, r)) => {
                        let (forwarding, hub, cancel) =
                            (Arc::clone(&self.forwarding), self.connection.remote_address(), cancel.child_token());
                        self.streams.spawn(async move { forwarding.serve(s, r, hub, cancel).await });
                    }
                    Err(e) => {
                        let (end, reason) = end_of(&e);
                        return StreamEnd::Connection(end, reason);
                    }
                },
            }
        }
    }

    /// Carries out one action; `Some` when the stream is over.
    async fn perform(
        &self,
        action: AgentAction,
        session: &mut AgentSession,
        send: &mut SendStream,
        recv: &mut RecvStream,
        keys: &mut Option<RenewalKeys>,
        now: Instant,
    ) -> Option<StreamEnd> {
        match action {
            AgentAction::Send(frame) => {
                if let Err(e) = send.write_all(&encode(&frame)).await {
                    return Some(StreamEnd::Connection(Ending::Lost, e.to_string()));
                }
            }
            AgentAction::Close { code, message } => {
                let _ = send.write_all(&encode(&AgentFrame::Error { code, message })).await;
                send.reset(code);
                recv.stop(code);
                return Some(StreamEnd::Faulted);
            }
            AgentAction::Record(event) => self.parts.audit.record_or_log(event).await,
            AgentAction::PollStatus => session.on_event(AgentEvent::Status(self.status().await), now),
            AgentAction::ReadAudit { limit } => match self.parts.audit.unforwarded(limit).await {
                Ok(events) => session.on_event(AgentEvent::AuditRead(events), now),
                Err(e) => {
                    tracing::warn!(error = %e, "audit events could not be read for delivery");
                    session.on_event(AgentEvent::AuditUnreadable, now);
                }
            },
            AgentAction::AckAudit { seq } => {
                if let Err(e) = self.parts.audit.ack(seq).await {
                    tracing::warn!(seq, error = %e, "the hub's audit acknowledgement was not recorded; the events will be sent again");
                }
            }
            AgentAction::Execute { id, command } => {
                let (ok, detail) = self.execute(command).await;
                session.on_event(AgentEvent::CommandDone { id, ok, detail }, now);
            }
            AgentAction::SubmitDeployment(envelope) => {
                if let Err(e) = self.parts.deploy.submit(envelope) {
                    tracing::warn!(error = %e, "deployment not queued; the hub will send it again");
                }
            }
            // Checked, stored and enforced before the answer goes out (a few milliseconds: one
            // signature check and one synced write), so the stream waits for it.
            AgentAction::ApplyPolicy(envelope) => {
                let report = self.parts.security.apply_platform(&envelope).await;
                session.on_event(AgentEvent::Policy(report), now);
            }
            AgentAction::StartRenewal => {
                let started = keys.as_mut().map(RenewalKeys::start);
                let event = match started {
                    Some(Ok(csr_pem)) => AgentEvent::RenewalCsr(csr_pem),
                    Some(Err(e)) => AgentEvent::RenewalFailed(e.to_string()),
                    None => AgentEvent::RenewalFailed("no identity to renew".into()),
                };
                session.on_event(event, now);
            }
            AgentAction::CheckRenewal { cert_pem } => {
                let checked = keys.as_mut().map(|k| k.answered(cert_pem, &self.parts.dir));
                let event = match checked {
                    Some(Ok(cert)) => AgentEvent::Renewed {
                        serial: cert.serial_hex.clone(),
                        not_after: redtether_proto::time::format_seconds(cert.not_after),
                        due_in: due_in(&cert),
                    },
                    Some(Err(e)) => AgentEvent::RenewalFailed(e.to_string()),
                    None => AgentEvent::RenewalFailed("no identity to renew".into()),
                };
                session.on_event(event, now);
            }
        }
        None
    }

    async fn status(&self) -> DeviceStatus {
        let audit = self.parts.audit.status().await.unwrap_or_default();
        let node_red = self.parts.supervisor.status();
        let running = node_red.pid.filter(|_| node_red.state == redtether_proto::wire::NodeRedState::Running);
        let latency = self.parts.supervisor.probe_latency();
        let resources = self.parts.resources.lock().unwrap_or_else(|e| e.into_inner()).sample(running, latency);
        DeviceStatus {
            agent_version: crate::VERSION.to_string(),
            resources: Some(Box::new(resources)),
            node_red,
            audit_backlog: audit.backlog,
            audit_last_seq: audit.last_seq,
            gate_listen: self.parts.gate_listen.clone(),
            protection: self.parts.gate.rules().security.protection,
        }
    }

    async fn execute(&self, command: Command) -> (bool, serde_json::Value) {
        match command {
            Command::RestartNodeRed => match self.parts.supervisor.restart().await {
                Ok(pid) => (true, json!({ "pid": pid })),
                Err(e) => (false, json!({ "error": e.to_string() })),
            },
            Command::Snapshot => match self.parts.deploy.capture().await {
                Ok(snapshot) => (true, json!(snapshot)),
                Err(e) => (false, json!({ "error": redtether_host::error_chain(&e) })),
            },
            Command::PortableSnapshot { seal_to } => match self.parts.deploy.capture_portable(seal_to).await {
                Ok(snapshot) => (true, json!(snapshot)),
                Err(e) => (false, json!({ "error": redtether_host::error_chain(&e) })),
            },
            Command::Sbom => match self.parts.deploy.make_sbom().await {
                Ok(sbom) => (true, sbom),
                Err(e) => (false, json!({ "error": redtether_host::error_chain(&e) })),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_map_onto_the_protocols_endings() {
        use redtether_proto::wire::codes;
        let app = |code: u32| ConnectionError::ApplicationClosed { code: code.into(), reason: String::new() };
        let tls = |alert: u64| ConnectionError::TransportClosed { code: 0x100 + alert, reason: String::new() };
        assert_eq!(end_of(&app(codes::REVOKED)).0, Ending::Refused);
        assert_eq!(end_of(&app(codes::CERTIFICATE_REQUIRED)).0, Ending::Refused);
        // bad_certificate (42) and certificate_revoked (44) alerts after the handshake.
        assert_eq!(end_of(&tls(42)).0, Ending::Refused);
        assert_eq!(end_of(&tls(44)).0, Ending::Refused);
        assert_eq!(end_of(&app(codes::SHUTDOWN)).0, Ending::Lost);
        assert_eq!(end_of(&ConnectionError::TimedOut).0, Ending::Lost);
        assert_eq!(end_of(&ConnectionError::Lost("broken pipe".into())).0, Ending::Lost);
        assert_eq!(end_of(&ConnectionError::Reset).0, Ending::HubRestarted);
        assert_eq!(end_of(&ConnectionError::LocallyClosed).0, Ending::Cancelled);
        // A quinn error comes through the same way.
        let quinn_reset: ConnectionError = quinn::ConnectionError::Reset.into();
        assert_eq!(end_of(&quinn_reset).0, Ending::HubRestarted);
    }
}
