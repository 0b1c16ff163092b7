//! The agent's end of one control stream, as a state machine.
//!
//! It says `hello`, and once the hub says `welcome`: pushes the device's status when it
//! changed, sends heartbeats, answers the hub's heartbeats and commands, hands deployments to
//! the deployer and reports their outcome (the last one again on every new stream: it may have
//! been reached offline), forwards the SBOM, delivers the audit journal (seq-ordered batches,
//! one in flight; the journal's cursor moves only on the hub's acknowledgement; an
//! unacknowledged batch is sent again after a while, and on the next stream), and renews the
//! certificate at 2/3 of its life with retries. A malformed or unexpected frame closes the
//! stream with a code and is audited.
//!
//! Frames, events and ticks go in; [`AgentAction`]s come out of [`AgentSession::poll_action`],
//! to be carried out in order by the I/O shell (the agent's `tunnel::session`), which feeds the
//! results of the asking actions (status, journal reads, commands, renewal steps) back in as
//! [`AgentEvent`]s. Time is passed in; [`AgentSession::next_deadline`] says when to tick.

use super::ControlEnd;
use super::clock::{Instant, Timer, earliest};
use super::renewal;
use crate::audit::{Actor, AuditEvent, AuditKind, StoredEvent};
use crate::wire::{
    AgentFrame, Command, DeployReport, DeviceStatus, FrameError, HubFrame, Message, PolicyReport, VERSION, codes,
};
use std::collections::VecDeque;
use std::time::Duration;

/// The session's settings; [`AgentConfig::new`] has the protocol's defaults.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub agent_version: String,
    /// The hub as audit events name it (their target).
    pub hub: String,
    pub heartbeat_every: Duration,
    /// How often the status is polled (the journal's backlog changes without a signal); it is
    /// sent only when it changed, so an idle device sends nothing but heartbeats.
    pub status_every: Duration,
    /// How often delivery is retried without a new event (a store error at either end) ...
    pub forward_retry: Duration,
    /// ... and how long an unacknowledged batch waits before it is sent again.
    pub ack_timeout: Duration,
    /// Audit events per batch at most, and bytes (well under the frame limit).
    pub batch_events: usize,
    pub batch_bytes: usize,
}

impl AgentConfig {
    pub fn new(agent_version: impl Into<String>, hub: impl Into<String>) -> AgentConfig {
        AgentConfig {
            agent_version: agent_version.into(),
            hub: hub.into(),
            heartbeat_every: Duration::from_secs(15),
            status_every: Duration::from_secs(10),
            forward_retry: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            batch_events: 512,
            batch_bytes: 256 * 1024,
        }
    }
}

/// What happened outside the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// Node-RED's state changed: the status may be news.
    NodeRedChanged,
    /// The device's status now (the answer to [`AgentAction::PollStatus`]).
    Status(DeviceStatus),
    /// The journal made new events durable.
    AuditCommitted,
    /// The answer to [`AgentAction::ReadAudit`]: events after the forwarding cursor, in order.
    AuditRead(Vec<StoredEvent>),
    /// The answer to [`AgentAction::ReadAudit`] when the journal could not be read.
    AuditUnreadable,
    /// A deployment's state changed.
    Deployment(DeployReport),
    /// The answer to [`AgentAction::ApplyPolicy`]: what became of the policy.
    Policy(PolicyReport),
    /// A new SBOM was made (after a deployment).
    Sbom(serde_json::Value),
    /// The answer to [`AgentAction::Execute`].
    CommandDone { id: u64, ok: bool, detail: serde_json::Value },
    /// The answer to [`AgentAction::StartRenewal`]: a new key was made; this is its CSR.
    RenewalCsr(String),
    /// A renewal step failed: making the key, or checking or storing the answer.
    RenewalFailed(String),
    /// The answer to [`AgentAction::CheckRenewal`]: the certificate is checked and stored for
    /// the next handshake; the next renewal is due in `due_in`.
    Renewed { serial: String, not_after: String, due_in: Duration },
}

/// What the shell is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentAction {
    Send(AgentFrame),
    /// Send an `error` frame with `code`, then close the stream (the session opens a new one).
    Close {
        code: u32,
        message: String,
    },
    /// Record this audit event.
    Record(AuditEvent),
    /// Gather the device's status and feed it back as [`AgentEvent::Status`].
    PollStatus,
    /// Read up to `limit` events after the forwarding cursor: [`AgentEvent::AuditRead`].
    ReadAudit {
        limit: usize,
    },
    /// The hub holds every event up to `seq`: move the forwarding cursor.
    AckAudit {
        seq: u64,
    },
    /// Carry out the hub's command: [`AgentEvent::CommandDone`].
    Execute {
        id: u64,
        command: Command,
    },
    /// Hand a signed deployment envelope to the deployer (it verifies it).
    SubmitDeployment(String),
    /// Verify a signed policy envelope and, if it is to be enforced, enforce it:
    /// [`AgentEvent::Policy`].
    ApplyPolicy(String),
    /// Make a new key and its CSR: [`AgentEvent::RenewalCsr`] or [`AgentEvent::RenewalFailed`].
    StartRenewal,
    /// Check the hub's certificate against the pending key and store it:
    /// [`AgentEvent::Renewed`] or [`AgentEvent::RenewalFailed`].
    CheckRenewal {
        cert_pem: String,
    },
}

#[derive(Debug)]
struct Renewal {
    next: Timer,
    /// A request is out (or being made).
    waiting: bool,
    failures: u32,
}

#[derive(Debug)]
pub struct AgentSession {
    config: AgentConfig,
    outbox: VecDeque<AgentAction>,
    welcomed: bool,
    closed: bool,
    last_status: Option<DeviceStatus>,
    heartbeats: u64,
    heartbeat: Timer,
    status_poll: Timer,
    forward_retry: Timer,
    /// The last seq of the batch awaiting its acknowledgement, and when it left.
    in_flight: Option<(u64, Instant)>,
    reading: bool,
    /// The deployer's last outcome: sent at welcome and on every change after it.
    report: Option<DeployReport>,
    /// What became of the last policy the hub sent: sent again at every welcome.
    policy_report: Option<PolicyReport>,
    /// An SBOM made before the welcome.
    pending_sbom: Option<serde_json::Value>,
    renewal: Option<Renewal>,
}

impl AgentSession {
    /// A new control stream. `renewal_due_in`: when the current certificate is to be renewed
    /// (none: nothing to renew); `last_report`: the deployer's last outcome, if any.
    pub fn new(
        config: AgentConfig,
        now: Instant,
        renewal_due_in: Option<Duration>,
        last_report: Option<DeployReport>,
    ) -> AgentSession {
        let hello = AgentFrame::Hello { protocol: VERSION, agent_version: config.agent_version.clone() };
        AgentSession {
            config,
            outbox: VecDeque::from([AgentAction::Send(hello)]),
            welcomed: false,
            closed: false,
            last_status: None,
            heartbeats: 0,
            heartbeat: Timer::default(),
            status_poll: Timer::default(),
            forward_retry: Timer::default(),
            in_flight: None,
            reading: false,
            report: last_report,
            policy_report: None,
            pending_sbom: None,
            renewal: renewal_due_in.map(|d| Renewal { next: Timer::at(now + d), waiting: false, failures: 0 }),
        }
    }

    /// With the answer to the last policy the hub sent (on an earlier stream), to be sent again
    /// at the welcome.
    pub fn with_policy_report(mut self, report: Option<PolicyReport>) -> AgentSession {
        self.policy_report = report;
        self
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<AgentAction> {
        self.outbox.pop_front()
    }

    /// When [`AgentSession::on_tick`] should next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.closed || !self.welcomed {
            return None;
        }
        earliest([
            self.heartbeat.deadline(),
            self.status_poll.deadline(),
            self.forward_retry.deadline(),
            self.renewal.as_ref().and_then(|r| r.next.deadline()),
        ])
    }

    pub fn is_welcomed(&self) -> bool {
        self.welcomed
    }

    /// Whether the stream is closed (after a fault): nothing more will be done on it.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a batch awaits its acknowledgement.
    pub fn batch_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    fn frame(&mut self, frame: HubFrame, now: Instant) {
        if self.closed {
            return;
        }
        let waiting_for_renewal = self.renewal.as_ref().is_some_and(|r| r.waiting);
        match frame {
            HubFrame::Welcome { protocol, .. } if !self.welcomed && protocol == VERSION => self.welcome(now),
            HubFrame::Welcome { protocol, .. } if !self.welcomed => {
                self.fault(codes::VERSION_MISMATCH, format!("hub speaks protocol {protocol}"))
            }
            HubFrame::HeartbeatAck { .. } => {}
            HubFrame::Heartbeat { n } => self.send(AgentFrame::HeartbeatAck { n }),
            HubFrame::AuditAck { seq } if self.welcomed => {
                self.outbox.push_back(AgentAction::AckAudit { seq });
                self.in_flight = None;
                self.forward();
            }
            // Applied by the deployer, not here: an apply takes minutes and the control stream
            // must keep answering meanwhile.
            HubFrame::Deploy { deployment } if self.welcomed => {
                self.outbox.push_back(AgentAction::SubmitDeployment(deployment))
            }
            // Applied off the stream too: checking it and making it durable is I/O.
            HubFrame::Policy { policy } if self.welcomed => self.outbox.push_back(AgentAction::ApplyPolicy(policy)),
            HubFrame::Command { id, command } if self.welcomed => {
                if command != Command::Sbom {
                    let event = AuditEvent::new(AuditKind::TunnelCommand, Actor::System, "node-red")
                        .with("command", command.as_str());
                    self.outbox.push_back(AgentAction::Record(event));
                }
                self.outbox.push_back(AgentAction::Execute { id, command });
            }
            HubFrame::RenewResponse { cert_pem } if waiting_for_renewal => {
                self.outbox.push_back(AgentAction::CheckRenewal { cert_pem })
            }
            HubFrame::Error { code, message } if code == codes::RENEW_REFUSED && waiting_for_renewal => {
                self.renewal_failed(format!("the hub refused: {message}"), now)
            }
            HubFrame::Error { code, message } => tracing::warn!(code, %message, "the hub reported a protocol error"),
            other => self.fault(codes::UNEXPECTED_FRAME, format!("unexpected {}", other.kind())),
        }
    }

    pub fn on_event(&mut self, event: AgentEvent, now: Instant) {
        if self.closed {
            return;
        }
        match event {
            AgentEvent::NodeRedChanged if self.welcomed => self.outbox.push_back(AgentAction::PollStatus),
            AgentEvent::NodeRedChanged => {}
            AgentEvent::Status(status) => {
                if self.welcomed && self.last_status.as_ref() != Some(&status) {
                    self.last_status = Some(status.clone());
                    self.send(AgentFrame::Status { status });
                }
            }
            AgentEvent::AuditCommitted => {
                if self.welcomed && self.in_flight.is_none() {
                    self.forward();
                }
            }
            AgentEvent::AuditRead(events) => {
                self.reading = false;
                self.send_batch(events, now);
            }
            AgentEvent::AuditUnreadable => self.reading = false,
            AgentEvent::Deployment(report) => {
                if self.welcomed {
                    self.send(report.clone().frame());
                }
                self.report = Some(report);
            }
            AgentEvent::Policy(report) => {
                if self.welcomed {
                    self.send(report.clone().frame());
                }
                self.policy_report = Some(report);
            }
            AgentEvent::Sbom(sbom) if self.welcomed => self.send(AgentFrame::Sbom { sbom }),
            AgentEvent::Sbom(sbom) => self.pending_sbom = Some(sbom),
            AgentEvent::CommandDone { id, ok, detail } => self.send(AgentFrame::CommandResult { id, ok, detail }),
            AgentEvent::RenewalCsr(csr_pem) => {
                tracing::info!("renewing the device certificate");
                self.send(AgentFrame::RenewRequest { csr_pem });
            }
            AgentEvent::RenewalFailed(reason) => self.renewal_failed(reason, now),
            AgentEvent::Renewed { serial, not_after, due_in } => {
                if let Some(r) = self.renewal.as_mut() {
                    r.waiting = false;
                    r.failures = 0;
                    r.next.set(now + due_in);
                }
                tracing::info!(%serial, %not_after, "device certificate renewed");
                let event = AuditEvent::new(AuditKind::TunnelRenewed, Actor::System, self.config.hub.as_str())
                    .with("serial", serial)
                    .with("not_after", not_after);
                self.outbox.push_back(AgentAction::Record(event));
            }
        }
    }

    pub fn on_tick(&mut self, now: Instant) {
        if self.closed || !self.welcomed {
            return;
        }
        if self.heartbeat.fire(now) {
            self.heartbeats += 1;
            self.send(AgentFrame::Heartbeat { n: self.heartbeats });
            self.heartbeat.set(now + self.config.heartbeat_every);
        }
        if self.status_poll.fire(now) {
            self.outbox.push_back(AgentAction::PollStatus);
            self.status_poll.set(now + self.config.status_every);
        }
        if self.forward_retry.fire(now) {
            if self.in_flight.is_none_or(|(_, sent)| now - sent >= self.config.ack_timeout) {
                self.in_flight = None;
                self.forward();
            }
            self.forward_retry.set(now + self.config.forward_retry);
        }
        let renewal_due = self.renewal.as_mut().map(|r| (r.next.fire(now), r.waiting));
        match renewal_due {
            Some((true, true)) => self.renewal_failed("the hub did not answer".into(), now),
            Some((true, false)) => {
                if let Some(r) = self.renewal.as_mut() {
                    r.waiting = true;
                    r.next.set(now + renewal::ANSWER_TIMEOUT);
                }
                self.outbox.push_back(AgentAction::StartRenewal);
            }
            _ => {}
        }
    }

    fn welcome(&mut self, now: Instant) {
        self.welcomed = true;
        self.heartbeat.set(now + self.config.heartbeat_every);
        self.status_poll.set(now + self.config.status_every);
        self.forward_retry.set(now + self.config.forward_retry);
        self.outbox.push_back(AgentAction::PollStatus);
        self.forward();
        if let Some(report) = self.report.clone() {
            self.send(report.frame());
        }
        if let Some(report) = self.policy_report.clone() {
            self.send(report.frame());
        }
        if let Some(sbom) = self.pending_sbom.take() {
            self.send(AgentFrame::Sbom { sbom });
        }
    }

    /// Asks for the next batch, unless one is in flight or being read.
    fn forward(&mut self) {
        if self.in_flight.is_none() && !self.reading {
            self.reading = true;
            self.outbox.push_back(AgentAction::ReadAudit { limit: self.config.batch_events });
        }
    }

    fn send_batch(&mut self, events: Vec<StoredEvent>, now: Instant) {
        if self.in_flight.is_some() || !self.welcomed {
            return;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for event in events.into_iter().take(self.config.batch_events) {
            let size = serde_json::to_vec(&event).map_or(0, |v| v.len());
            if !batch.is_empty() && bytes + size > self.config.batch_bytes {
                break;
            }
            bytes += size;
            batch.push(event);
        }
        let Some(last) = batch.last().map(|e| e.seq) else { return };
        tracing::debug!(events = batch.len(), last, "delivering audit events");
        self.send(AgentFrame::AuditBatch { events: batch });
        self.in_flight = Some((last, now));
    }

    fn renewal_failed(&mut self, reason: String, now: Instant) {
        let Some(r) = self.renewal.as_mut() else { return };
        r.waiting = false;
        r.failures = r.failures.saturating_add(1);
        let retry = renewal::retry_delay(r.failures);
        r.next.set(now + retry);
        tracing::warn!(%reason, retry_in = ?retry, "certificate renewal failed");
        let event = AuditEvent::new(AuditKind::TunnelRenewFailed, Actor::System, "device certificate")
            .with("reason", reason)
            .with("retry_in_secs", retry.as_secs());
        self.outbox.push_back(AgentAction::Record(event));
    }

    fn fault(&mut self, code: u32, message: String) {
        tracing::warn!(code, %message, "closing the tunnel's control stream");
        let event = AuditEvent::new(AuditKind::TunnelProtocolError, Actor::System, "control stream")
            .with("code", code)
            .with("message", message.as_str());
        self.outbox.push_back(AgentAction::Record(event));
        self.outbox.push_back(AgentAction::Close { code, message });
        self.closed = true;
    }

    fn send(&mut self, frame: AgentFrame) {
        self.outbox.push_back(AgentAction::Send(frame));
    }
}

impl ControlEnd for AgentSession {
    type Incoming = HubFrame;

    fn on_frame(&mut self, frame: HubFrame, now: Instant) {
        self.frame(frame, now);
    }

    fn on_frame_error(&mut self, error: &FrameError) {
        if !self.closed {
            self.fault(error.code(), error.to_string());
        }
    }
}
