//! One connection of a simulated device: the I/O shell around the protocol's control-stream
//! machine (`redtether_proto::session::AgentSession`), as the agent's `src/tunnel/session.rs`
//! drives it. Frames are fed in, ticks given when asked, and the actions carried out: frames
//! sent, status and commands answered from the simulated device, deployments and policies
//! handed to its deployer and policy keeper. A stream the machine closes (a bad frame) is
//! replaced by a new one after a pause; the connection stays.

use super::answers;
use super::task::{DeviceTask, sleep_until};
use redtether_proto::session::{
    AgentAction, AgentConfig, AgentEvent, AgentSession, Closed, Ending, Instant, classify, feed,
};
use redtether_proto::wire::{AgentFrame, FrameDecoder, codes, encode};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(super) enum ConnectionEnd {
    Stopped,
    WentOffline,
    Ended(Ending),
}

enum StreamEnd {
    Connection(ConnectionEnd),
    /// The stream is unusable (closed by either side); the connection may still be fine.
    Faulted,
}

/// How quinn says a connection ended, in the protocol's terms (as the agent maps it).
pub(super) fn closed_of(e: &quinn::ConnectionError) -> Closed {
    use quinn::ConnectionError as E;
    match e {
        E::Reset => Closed::StatelessReset,
        E::TransportError(t) => Closed::Transport(t.code.into()),
        E::ConnectionClosed(c) => Closed::Transport(c.error_code.into()),
        E::ApplicationClosed(c) => Closed::Application(c.error_code.into_inner()),
        E::LocallyClosed => Closed::Local,
        _ => Closed::Other,
    }
}

fn lost(e: &quinn::ConnectionError) -> StreamEnd {
    StreamEnd::Connection(ConnectionEnd::Ended(classify(closed_of(e))))
}

impl DeviceTask {
    pub(super) async fn connection(
        &mut self,
        connection: &quinn::Connection,
        cancel: &CancellationToken,
        online: &mut watch::Receiver<bool>,
    ) -> ConnectionEnd {
        let mut faults = 0u32;
        loop {
            let (send, recv) = match connection.open_bi().await {
                Ok(pair) => pair,
                Err(e) => return ConnectionEnd::Ended(classify(closed_of(&e))),
            };
            match self.control(connection, send, recv, cancel, online).await {
                // A write that failed knows only that the connection is gone; the connection
                // knows why (a revocation must not look like a lost path).
                StreamEnd::Connection(ConnectionEnd::Ended(Ending::Lost)) => {
                    let ending = connection.close_reason().map_or(Ending::Lost, |e| classify(closed_of(&e)));
                    return ConnectionEnd::Ended(ending);
                }
                StreamEnd::Connection(end) => return end,
                StreamEnd::Faulted => {
                    faults += 1;
                    self.shared.connected.store(false, Ordering::SeqCst);
                    // A hub that keeps sending garbage is not worth a tight loop.
                    let pause = Duration::from_millis(200 * u64::from(faults.min(25)));
                    tokio::select! {
                        _ = cancel.cancelled() => return ConnectionEnd::Stopped,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    async fn control(
        &mut self,
        connection: &quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        cancel: &CancellationToken,
        online: &mut watch::Receiver<bool>,
    ) -> StreamEnd {
        let origin = tokio::time::Instant::now();
        let now = || Instant::from_origin(origin.elapsed());
        let mut config = AgentConfig::new(self.config.agent_version.as_str(), self.config.hub.as_str());
        config.status_every = self.config.status_every;
        // No renewal: a simulated device lives far shorter than its certificate. The last
        // outcomes go out again at the welcome, as the agent's do.
        let mut session = AgentSession::new(config, now(), None, self.deployer.last_report())
            .with_policy_report(self.policy.last_report());
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(action) = session.poll_action() {
                if let Some(end) = self.perform(action, &mut session, &mut send, &mut recv, now()).await {
                    return end;
                }
            }
            if feed(&mut decoder, &mut session, now()) {
                continue;
            }
            if session.is_welcomed() {
                self.shared.connected.store(true, Ordering::SeqCst);
            }
            let deadline = session.next_deadline().map(|at| origin + at.since_origin());
            let due = self.deployer.due();
            tokio::select! {
                _ = cancel.cancelled() => {
                    connection.close(codes::SHUTDOWN.into(), b"simulator stopping");
                    return StreamEnd::Connection(ConnectionEnd::Stopped);
                }
                _ = online.wait_for(|up| !*up) => {
                    connection.close(codes::SHUTDOWN.into(), b"simulated device going offline");
                    return StreamEnd::Connection(ConnectionEnd::WentOffline);
                }
                read = recv.read(&mut buf) => match read {
                    Ok(Some(n)) => decoder.feed(&buf[..n]),
                    Ok(None) => return StreamEnd::Faulted,
                    Err(quinn::ReadError::ConnectionLost(e)) => return lost(&e),
                    Err(quinn::ReadError::Reset(_)) => return StreamEnd::Faulted,
                    Err(_) => return StreamEnd::Connection(ConnectionEnd::Ended(Ending::Lost)),
                },
                _ = sleep_until(deadline) => session.on_tick(now()),
                _ = sleep_until(due) => {
                    for report in self.finish_due() {
                        session.on_event(AgentEvent::Deployment(report), now());
                    }
                }
                stream = connection.accept_bi() => match stream {
                    // The remote editor: a simulated device has no Node-RED to forward to, so
                    // the stream is dropped (quinn resets it) and the operator sees it fail.
                    Ok(_) => {}
                    Err(e) => return lost(&e),
                },
            }
        }
    }

    /// Carries out one action; `Some` when the stream is over.
    async fn perform(
        &mut self,
        action: AgentAction,
        session: &mut AgentSession,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        now: Instant,
    ) -> Option<StreamEnd> {
        match action {
            AgentAction::Send(frame) => {
                if send.write_all(&encode(&frame)).await.is_err() {
                    return Some(StreamEnd::Connection(ConnectionEnd::Ended(Ending::Lost)));
                }
            }
            AgentAction::Close { code, message } => {
                let _ = send.write_all(&encode(&AgentFrame::Error { code, message })).await;
                let _ = send.reset(code.into());
                let _ = recv.stop(code.into());
                return Some(StreamEnd::Faulted);
            }
            // A simulated device keeps no journal: nothing is recorded, nothing is waiting.
            AgentAction::Record(_) | AgentAction::AckAudit { .. } => {}
            AgentAction::ReadAudit { .. } => session.on_event(AgentEvent::AuditRead(Vec::new()), now),
            AgentAction::PollStatus => {
                self.polls += 1;
                let resources = self.config.resources.then(|| Box::new(answers::resources(self.polls)));
                let status = answers::status(&self.config.agent_version, self.since, self.restarts, resources);
                session.on_event(AgentEvent::Status(status), now);
            }
            AgentAction::Execute { id, command } => {
                let restarted = command == redtether_proto::wire::Command::RestartNodeRed;
                let (ok, detail) = answers::execute(command, &self.shared, &mut self.restarts);
                session.on_event(AgentEvent::CommandDone { id, ok, detail }, now);
                // A restart changes the status (pid, restarts): pushed as the agent's supervisor
                // would.
                if restarted {
                    session.on_event(AgentEvent::NodeRedChanged, now);
                }
            }
            AgentAction::SubmitDeployment(envelope) => {
                let (config, id) = (&self.config, &self.shared.id);
                let reports = self.deployer.submit(envelope, &self.shared, |n| config.apply_delay_of(id, n));
                for report in reports {
                    session.on_event(AgentEvent::Deployment(report), now);
                }
            }
            AgentAction::ApplyPolicy(envelope) => {
                let report = self.policy.apply(&envelope, &self.shared);
                session.on_event(AgentEvent::Policy(report), now);
            }
            // Never asked for (no renewal is scheduled), answered anyway so the machine moves on.
            AgentAction::StartRenewal | AgentAction::CheckRenewal { .. } => {
                session.on_event(AgentEvent::RenewalFailed("a simulated device does not renew".into()), now);
            }
        }
        None
    }
}
