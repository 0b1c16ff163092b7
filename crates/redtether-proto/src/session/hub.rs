//! The hub's end of one device's control stream, as a state machine.
//!
//! The device must say `hello` (in time, in this protocol version) before anything else; then
//! the hub welcomes it and sends the deployment waiting for it (once per stream), keeps the
//! status it pushes when it changed, takes heartbeats without answering, stores audit batches
//! and acknowledges each once it is durable, records deployment outcomes and SBOMs, sends
//! operators' commands and routes their results back, and renews the device's certificate. A
//! malformed or unexpected frame closes the control stream with a code and is recorded; the
//! device may open a new one.
//!
//! Frames, events and ticks go in; [`HubAction`]s come out, carried out in order by the hub's
//! I/O shell, which answers the asking ones with [`HubEvent`]s.

use super::ControlEnd;
use super::clock::{Instant, Timer};
use crate::audit::{HubEventKind, StoredEvent, check_batch};
use crate::wire::{
    AgentFrame, Command, DeployState, DeviceStatus, FrameError, HubFrame, Message, PolicyReport, VERSION, codes,
};
use serde_json::json;
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

/// How long a device has to send `hello` on a new control stream.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The deployment a device should be sent: the newest one it has not finished.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingDeployment {
    pub id: String,
    pub number: u64,
    pub envelope: String,
    pub state: DeployState,
}

/// The newest policy made for a device: sent after every welcome (the device answers a policy
/// it already enforces with `applied` again) and whenever a newer one is made.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingPolicy {
    pub number: u64,
    pub envelope: String,
}

/// What happened outside the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    /// The answer to [`HubAction::CheckDeployment`].
    DeploymentWaiting(Option<WaitingDeployment>),
    /// A deployment was made for the device: look again.
    DeploymentsChanged,
    /// The answer to [`HubAction::CheckPolicy`].
    PolicyWaiting(Option<WaitingPolicy>),
    /// A policy was made for the device: look again.
    PoliciesChanged,
    /// The answer to [`HubAction::StoreAudit`]: the batch is durable up to `ack`. (A batch that
    /// could not be stored gets no answer: the device sends it again.)
    AuditStored {
        ack: u64,
    },
    /// The answer to [`HubAction::RenewCertificate`]: the new certificate, or why not.
    Renewed(String),
    RenewRefused(String),
}

/// What the shell is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum HubAction {
    Send(HubFrame),
    /// Send an `error` frame with `code`, then close the stream (the connection stays).
    Close {
        code: u32,
        message: String,
    },
    /// Record this event about the device.
    Record {
        kind: HubEventKind,
        detail: serde_json::Value,
    },
    /// The agent's version, from its `hello`.
    AgentVersion(String),
    /// The device's status changed: keep it.
    StoreStatus(DeviceStatus),
    /// Store these events durably (keeping each (seq, id) once), then [`HubEvent::AuditStored`].
    StoreAudit(Vec<StoredEvent>),
    /// What the device says about a deployment; the shell records `deployment.status` if it
    /// changed anything.
    UpdateDeployment {
        id: String,
        state: DeployState,
        detail: serde_json::Value,
    },
    StoreSbom(serde_json::Value),
    /// The result of the command with this id, for whoever asked.
    CommandResult {
        id: u64,
        ok: bool,
        detail: serde_json::Value,
    },
    /// Issue a certificate for this CSR: [`HubEvent::Renewed`] or [`HubEvent::RenewRefused`].
    RenewCertificate {
        csr_pem: String,
    },
    /// Look up the deployment waiting for the device: [`HubEvent::DeploymentWaiting`].
    CheckDeployment,
    /// The deployment went out on this stream: mark it `sent` if it was `pending`.
    DeploymentSent {
        id: String,
        was_pending: bool,
    },
    /// Look up the device's newest policy: [`HubEvent::PolicyWaiting`].
    CheckPolicy,
    /// What the device says about a policy; the shell keeps it (and records `policy.status`
    /// when it changed anything).
    UpdatePolicy(PolicyReport),
}

#[derive(Debug)]
pub struct HubSession {
    hub_version: String,
    outbox: VecDeque<HubAction>,
    greeted: bool,
    closed: bool,
    hello_deadline: Timer,
    last_status: Option<DeviceStatus>,
    /// The deployment last sent on this stream: sent once per stream, again on the next.
    deployment_sent: Option<String>,
    /// The policy number last sent on this stream.
    policy_sent: Option<u64>,
    next_command: u64,
    commands_waiting: BTreeSet<u64>,
}

impl HubSession {
    pub fn new(hub_version: impl Into<String>, now: Instant) -> HubSession {
        HubSession {
            hub_version: hub_version.into(),
            outbox: VecDeque::new(),
            greeted: false,
            closed: false,
            hello_deadline: Timer::at(now + HELLO_TIMEOUT),
            last_status: None,
            deployment_sent: None,
            policy_sent: None,
            next_command: 1,
            commands_waiting: BTreeSet::new(),
        }
    }

    pub fn poll_action(&mut self) -> Option<HubAction> {
        self.outbox.pop_front()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        if self.closed { None } else { self.hello_deadline.deadline() }
    }

    /// Whether the device said `hello`: commands and deployments may go out.
    pub fn is_greeted(&self) -> bool {
        self.greeted
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Commands sent on this stream and not answered yet.
    pub fn commands_waiting(&self) -> impl Iterator<Item = u64> + '_ {
        self.commands_waiting.iter().copied()
    }

    fn frame(&mut self, frame: AgentFrame) {
        if self.closed {
            return;
        }
        if !self.greeted {
            return match frame {
                AgentFrame::Hello { protocol, .. } if protocol != VERSION => {
                    self.fault(codes::VERSION_MISMATCH, format!("protocol {protocol} is not {VERSION}"))
                }
                AgentFrame::Hello { agent_version, .. } => {
                    self.greeted = true;
                    self.hello_deadline.clear();
                    self.outbox.push_back(HubAction::AgentVersion(agent_version));
                    let welcome = HubFrame::Welcome { protocol: VERSION, hub_version: self.hub_version.clone() };
                    self.outbox.push_back(HubAction::Send(welcome));
                    self.outbox.push_back(HubAction::CheckDeployment);
                    self.outbox.push_back(HubAction::CheckPolicy);
                }
                other => self.fault(codes::UNEXPECTED_FRAME, format!("{} before hello", other.kind())),
            };
        }
        match frame {
            // Kept only when it changed: with thousands of devices an idle fleet must not turn
            // into a stream of registry writes.
            AgentFrame::Status { status } => {
                if self.last_status.as_ref() != Some(&status) {
                    self.last_status = Some(status.clone());
                    self.outbox.push_back(HubAction::StoreStatus(status));
                }
            }
            // Not answered: the agent never read the answer, and with thousands of devices each
            // answer was one more packet out and one more acknowledgement in for the hub to wake
            // for. The agent's heartbeat is one-way proof of life; QUIC finds a dead path.
            AgentFrame::Heartbeat { .. } | AgentFrame::HeartbeatAck { .. } => {}
            AgentFrame::RenewRequest { csr_pem } => self.outbox.push_back(HubAction::RenewCertificate { csr_pem }),
            // Stored and synced before the acknowledgement leaves: the agent forgets nothing
            // the hub has not made durable.
            AgentFrame::AuditBatch { events } => match check_batch(&events) {
                Ok(()) => self.outbox.push_back(HubAction::StoreAudit(events)),
                Err(why) => self.fault(codes::MALFORMED_FRAME, format!("audit batch: {why}")),
            },
            AgentFrame::DeployStatus { id, state, detail } => {
                self.outbox.push_back(HubAction::UpdateDeployment { id, state, detail })
            }
            AgentFrame::Sbom { sbom } => self.outbox.push_back(HubAction::StoreSbom(sbom)),
            AgentFrame::PolicyStatus { number, state, reason, hash } => {
                self.outbox.push_back(HubAction::UpdatePolicy(PolicyReport { number, state, reason, hash }))
            }
            AgentFrame::CommandResult { id, ok, detail } => {
                self.commands_waiting.remove(&id);
                let record = json!({ "id": id, "ok": ok, "detail": detail });
                self.outbox.push_back(HubAction::Record { kind: HubEventKind::CommandResult, detail: record });
                self.outbox.push_back(HubAction::CommandResult { id, ok, detail });
            }
            AgentFrame::Error { code, message } => {
                tracing::warn!(code, %message, "device reported a protocol error")
            }
            other @ AgentFrame::Hello { .. } => {
                self.fault(codes::UNEXPECTED_FRAME, format!("unexpected {}", other.kind()))
            }
        }
    }

    pub fn on_event(&mut self, event: HubEvent) {
        if self.closed {
            return;
        }
        match event {
            HubEvent::DeploymentsChanged if self.greeted => self.outbox.push_back(HubAction::CheckDeployment),
            HubEvent::DeploymentsChanged => {}
            HubEvent::DeploymentWaiting(Some(waiting)) if self.greeted => {
                if self.deployment_sent.as_deref() == Some(waiting.id.as_str()) {
                    return;
                }
                self.deployment_sent = Some(waiting.id.clone());
                let was_pending = waiting.state == DeployState::Pending;
                let detail = json!({ "deployment": waiting.id, "number": waiting.number });
                self.outbox.push_back(HubAction::Send(HubFrame::Deploy { deployment: waiting.envelope }));
                self.outbox.push_back(HubAction::DeploymentSent { id: waiting.id, was_pending });
                self.outbox.push_back(HubAction::Record { kind: HubEventKind::DeploymentSent, detail });
            }
            HubEvent::DeploymentWaiting(_) => {}
            HubEvent::PoliciesChanged if self.greeted => self.outbox.push_back(HubAction::CheckPolicy),
            HubEvent::PoliciesChanged => {}
            HubEvent::PolicyWaiting(Some(waiting)) if self.greeted => {
                // Numbers only grow: one already sent on this stream (or an older one, from a
                // lookup that raced a newer policy) is not sent again.
                if self.policy_sent.is_some_and(|sent| sent >= waiting.number) {
                    return;
                }
                self.policy_sent = Some(waiting.number);
                self.outbox.push_back(HubAction::Send(HubFrame::Policy { policy: waiting.envelope }));
                self.outbox.push_back(HubAction::Record {
                    kind: HubEventKind::PolicySent,
                    detail: json!({ "number": waiting.number }),
                });
            }
            HubEvent::PolicyWaiting(_) => {}
            HubEvent::AuditStored { ack } => self.outbox.push_back(HubAction::Send(HubFrame::AuditAck { seq: ack })),
            HubEvent::Renewed(cert_pem) => self.outbox.push_back(HubAction::Send(HubFrame::RenewResponse { cert_pem })),
            HubEvent::RenewRefused(message) => {
                tracing::warn!(error = %message, "certificate renewal refused");
                self.outbox.push_back(HubAction::Send(HubFrame::Error { code: codes::RENEW_REFUSED, message }))
            }
        }
    }

    /// Sends an operator's command; the id its result will carry. Only once greeted (the shell
    /// holds commands back until then).
    pub fn send_command(&mut self, command: Command) -> Option<u64> {
        if self.closed || !self.greeted {
            return None;
        }
        let id = self.next_command;
        self.next_command += 1;
        self.commands_waiting.insert(id);
        let detail = json!({ "id": id, "command": command.as_str() });
        self.outbox.push_back(HubAction::Record { kind: HubEventKind::CommandSent, detail });
        self.outbox.push_back(HubAction::Send(HubFrame::Command { id, command }));
        Some(id)
    }

    pub fn on_tick(&mut self, now: Instant) {
        if !self.closed && self.hello_deadline.fire(now) {
            self.fault(codes::UNEXPECTED_FRAME, "no hello in time".into());
        }
    }

    fn fault(&mut self, code: u32, message: String) {
        tracing::warn!(code, %message, "closing a control stream");
        let detail = json!({ "code": code, "message": message });
        self.outbox.push_back(HubAction::Record { kind: HubEventKind::ProtocolError, detail });
        self.outbox.push_back(HubAction::Close { code, message });
        self.closed = true;
    }
}

impl ControlEnd for HubSession {
    type Incoming = AgentFrame;

    fn on_frame(&mut self, frame: AgentFrame, _now: Instant) {
        self.frame(frame);
    }

    fn on_frame_error(&mut self, error: &FrameError) {
        if !self.closed {
            self.fault(error.code(), error.to_string());
        }
    }
}
