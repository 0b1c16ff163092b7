//! Both control sessions against each other on virtual time: every frame goes through the real
//! codec, the journal and the hub's store are small models, and time moves only when a test
//! says so. No socket, no sleep.

use super::agent::{AgentAction, AgentConfig, AgentEvent, AgentSession};
use super::clock::Instant;
use super::hub::{HubAction, HubEvent, HubSession, WaitingDeployment, WaitingPolicy};
use super::{ControlEnd, feed};
use crate::audit::{Actor, AuditEvent, AuditKind, GENESIS, HubEventKind, StoredEvent, new_events};
use crate::wire::{
    AgentFrame, Command, DeployReport, DeployState, DeviceStatus, FrameDecoder, HubFrame, NodeRedState, PolicyReport,
    PolicyState, codes, encode,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// How the model answers a renewal.
#[derive(Clone, Copy, PartialEq)]
enum HubRenews {
    Yes,
    Refuses,
    Silent,
}

/// One device and the hub, joined by one control stream.
struct World {
    now: Instant,
    agent: AgentSession,
    hub: HubSession,
    /// Bytes on their way, as the codec made them.
    to_hub: VecDeque<Vec<u8>>,
    to_agent: VecDeque<Vec<u8>>,
    /// Frames each side sent, in order, for the tests to read.
    agent_sent: Vec<AgentFrame>,
    hub_sent: Vec<HubFrame>,
    /// The network drops what the hub sends while this is set (a lost acknowledgement).
    drop_to_agent: bool,
    drop_to_hub: bool,
    // The agent's side of the world.
    journal: Vec<StoredEvent>,
    cursor: u64,
    status: DeviceStatus,
    recorded: Vec<AuditEvent>,
    executed: Vec<(u64, Command)>,
    submitted: Vec<String>,
    closed_with: Option<u32>,
    csr_fails: bool,
    // The hub's side.
    hub_audit: BTreeMap<(u64, String), StoredEvent>,
    duplicates: usize,
    waiting: Option<WaitingDeployment>,
    hub_records: Vec<(HubEventKind, serde_json::Value)>,
    statuses_stored: usize,
    deploy_updates: Vec<(String, DeployState)>,
    results: Vec<(u64, bool)>,
    marked_sent: Vec<String>,
    renews: HubRenews,
    hub_closed_with: Option<u32>,
    /// The hub store's newest policy for the device.
    policy_waiting: Option<WaitingPolicy>,
    /// Envelopes handed to the agent's policy applier, and the model device's last number.
    policies_applied: Vec<String>,
    device_policy: u64,
    policy_updates: Vec<PolicyReport>,
}

impl World {
    fn new() -> World {
        World::with(None, None)
    }

    fn with(renewal_due_in: Option<Duration>, last_report: Option<DeployReport>) -> World {
        let now = Instant::ZERO;
        World {
            now,
            agent: AgentSession::new(AgentConfig::new("1.0.0", "hub.example:7443"), now, renewal_due_in, last_report),
            hub: HubSession::new("1.0.0", now),
            to_hub: VecDeque::new(),
            to_agent: VecDeque::new(),
            agent_sent: Vec::new(),
            hub_sent: Vec::new(),
            drop_to_agent: false,
            drop_to_hub: false,
            journal: Vec::new(),
            cursor: 0,
            status: DeviceStatus::example(),
            recorded: Vec::new(),
            executed: Vec::new(),
            submitted: Vec::new(),
            closed_with: None,
            csr_fails: false,
            hub_audit: BTreeMap::new(),
            duplicates: 0,
            waiting: None,
            hub_records: Vec::new(),
            statuses_stored: 0,
            deploy_updates: Vec::new(),
            results: Vec::new(),
            marked_sent: Vec::new(),
            renews: HubRenews::Yes,
            hub_closed_with: None,
            policy_waiting: None,
            policies_applied: Vec::new(),
            device_policy: 0,
            policy_updates: Vec::new(),
        }
    }

    /// A new control stream (a reconnect): fresh machines, the same journal, store and hub
    /// state.
    fn reconnect(&mut self, last_report: Option<DeployReport>) {
        self.agent = AgentSession::new(AgentConfig::new("1.0.0", "hub.example:7443"), self.now, None, last_report);
        self.hub = HubSession::new("1.0.0", self.now);
        self.to_hub.clear();
        self.to_agent.clear();
        self.agent_sent.clear();
        self.hub_sent.clear();
    }

    fn record(&mut self, n: usize) {
        for _ in 0..n {
            let seq = self.journal.len() as u64 + 1;
            let prev = self.journal.last().map_or(GENESIS, StoredEvent::hash_bytes);
            let event = AuditEvent::new(AuditKind::AuthFailed, Actor::user("ann"), "/x").with("n", seq);
            let (stored, _) = StoredEvent::seal(event, seq, format!("id-{seq}"), "2026-12-05T00:00:00Z".into(), &prev);
            self.journal.push(stored);
        }
        self.agent.on_event(AgentEvent::AuditCommitted, self.now);
    }

    /// Runs both machines until neither has anything left to do at this instant.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(action) = self.agent.poll_action() {
                busy = true;
                self.agent_does(action);
            }
            while let Some(action) = self.hub.poll_action() {
                busy = true;
                self.hub_does(action);
            }
            if let Some(bytes) = self.to_hub.pop_front() {
                busy = true;
                let mut decoder = FrameDecoder::default();
                decoder.feed(&bytes);
                assert!(feed(&mut decoder, &mut self.hub, self.now), "a whole frame");
            }
            if let Some(bytes) = self.to_agent.pop_front() {
                busy = true;
                let mut decoder = FrameDecoder::default();
                decoder.feed(&bytes);
                assert!(feed(&mut decoder, &mut self.agent, self.now), "a whole frame");
            }
            if !busy {
                return;
            }
        }
    }

    fn agent_does(&mut self, action: AgentAction) {
        let now = self.now;
        match action {
            AgentAction::Send(frame) => {
                self.agent_sent.push(frame.clone());
                if !self.drop_to_hub {
                    self.to_hub.push_back(encode(&frame));
                }
            }
            AgentAction::Close { code, .. } => self.closed_with = Some(code),
            AgentAction::Record(event) => self.recorded.push(event),
            AgentAction::PollStatus => self.agent.on_event(AgentEvent::Status(self.status.clone()), now),
            AgentAction::ReadAudit { limit } => {
                let events = self.journal.iter().filter(|e| e.seq > self.cursor).take(limit).cloned().collect();
                self.agent.on_event(AgentEvent::AuditRead(events), now);
            }
            AgentAction::AckAudit { seq } => self.cursor = self.cursor.max(seq),
            AgentAction::Execute { id, command } => {
                self.executed.push((id, command));
                self.agent
                    .on_event(AgentEvent::CommandDone { id, ok: true, detail: serde_json::json!({"pid": 7}) }, now);
            }
            AgentAction::SubmitDeployment(envelope) => self.submitted.push(envelope),
            AgentAction::ApplyPolicy(envelope) => {
                // The model envelope is "policy-<number>"; the model device keeps numbers rising.
                let number: u64 = envelope.trim_start_matches("policy-").parse().unwrap();
                self.policies_applied.push(envelope);
                let report = if number > self.device_policy {
                    self.device_policy = number;
                    PolicyReport { number, state: PolicyState::Applied, reason: None, hash: Some("h".into()) }
                } else if number == self.device_policy {
                    PolicyReport { number, state: PolicyState::Applied, reason: None, hash: Some("h".into()) }
                } else {
                    PolicyReport { number, state: PolicyState::Refused, reason: Some("replayed".into()), hash: None }
                };
                self.agent.on_event(AgentEvent::Policy(report), now);
            }
            AgentAction::StartRenewal if self.csr_fails => {
                self.agent.on_event(AgentEvent::RenewalFailed("no entropy".into()), now)
            }
            AgentAction::StartRenewal => self.agent.on_event(AgentEvent::RenewalCsr("CSR".into()), now),
            AgentAction::CheckRenewal { cert_pem } => {
                assert_eq!(cert_pem, "CERT for CSR");
                let renewed = AgentEvent::Renewed { serial: "0a".into(), not_after: "later".into(), due_in: secs(600) };
                self.agent.on_event(renewed, now);
            }
        }
    }

    fn hub_does(&mut self, action: HubAction) {
        match action {
            HubAction::Send(frame) => {
                self.hub_sent.push(frame.clone());
                if !self.drop_to_agent {
                    self.to_agent.push_back(encode(&frame));
                }
            }
            HubAction::Close { code, .. } => self.hub_closed_with = Some(code),
            HubAction::Record { kind, detail } => self.hub_records.push((kind, detail)),
            HubAction::AgentVersion(v) => assert_eq!(v, "1.0.0"),
            HubAction::StoreStatus(_) => self.statuses_stored += 1,
            HubAction::StoreAudit(events) => {
                let (fresh, done) = new_events(&events, |seq, id| {
                    Ok::<_, std::convert::Infallible>(self.hub_audit.contains_key(&(seq, id.to_string())))
                })
                .unwrap();
                let fresh: Vec<StoredEvent> = fresh.into_iter().cloned().collect();
                for e in fresh {
                    self.hub_audit.insert((e.seq, e.id.clone()), e);
                }
                self.duplicates += done.duplicates;
                self.hub.on_event(HubEvent::AuditStored { ack: done.ack });
            }
            HubAction::UpdateDeployment { id, state, .. } => self.deploy_updates.push((id, state)),
            HubAction::StoreSbom(_) => {}
            HubAction::CommandResult { id, ok, .. } => self.results.push((id, ok)),
            HubAction::RenewCertificate { csr_pem } => match self.renews {
                HubRenews::Yes => self.hub.on_event(HubEvent::Renewed(format!("CERT for {csr_pem}"))),
                HubRenews::Refuses => self.hub.on_event(HubEvent::RenewRefused("CA offline".into())),
                HubRenews::Silent => {}
            },
            HubAction::CheckDeployment => self.hub.on_event(HubEvent::DeploymentWaiting(self.waiting.clone())),
            HubAction::CheckPolicy => self.hub.on_event(HubEvent::PolicyWaiting(self.policy_waiting.clone())),
            HubAction::UpdatePolicy(report) => self.policy_updates.push(report),
            HubAction::DeploymentSent { id, was_pending } => {
                if was_pending {
                    self.marked_sent.push(id.clone());
                }
                if let Some(w) = self.waiting.as_mut().filter(|w| w.id == id) {
                    w.state = DeployState::Sent;
                }
            }
        }
    }

    /// Moves the clock forward by `d`, firing every deadline on the way in order.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.pump();
        loop {
            let next = [self.agent.next_deadline(), self.hub.next_deadline()].into_iter().flatten().min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.agent.on_tick(self.now);
                    self.hub.on_tick(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
        self.pump();
    }

    fn sent_by_agent(&self, kind: &str) -> usize {
        self.agent_sent.iter().filter(|f| crate::wire::Message::kind(*f) == kind).count()
    }

    fn recorded_kinds(&self) -> Vec<AuditKind> {
        self.recorded.iter().map(|e| e.kind).collect()
    }
}

#[test]
fn hello_then_welcome_then_the_status() {
    let mut w = World::new();
    w.pump();
    assert!(matches!(w.agent_sent[0], AgentFrame::Hello { protocol: 1, .. }));
    assert!(w.agent.is_welcomed() && w.hub.is_greeted());
    assert!(matches!(w.hub_sent[0], HubFrame::Welcome { protocol: 1, .. }));
    assert_eq!(w.sent_by_agent("status"), 1, "the status follows the welcome");
    assert_eq!(w.statuses_stored, 1);
}

#[test]
fn a_hub_of_another_protocol_version_closes_the_stream() {
    let mut w = World::new();
    w.agent.poll_action();
    w.agent.on_frame(HubFrame::Welcome { protocol: 2, hub_version: "9".into() }, w.now);
    w.pump();
    assert_eq!(w.closed_with, Some(codes::VERSION_MISMATCH));
    assert_eq!(w.recorded_kinds(), [AuditKind::TunnelProtocolError]);
    assert_eq!(w.recorded[0].detail["code"], codes::VERSION_MISMATCH);
}

#[test]
fn the_hub_wants_hello_first_in_its_version_and_in_time() {
    let mut hub = HubSession::new("1", Instant::ZERO);
    hub.on_frame(AgentFrame::Heartbeat { n: 1 }, Instant::ZERO);
    let actions: Vec<HubAction> = std::iter::from_fn(|| hub.poll_action()).collect();
    assert!(
        matches!(&actions[0], HubAction::Record { kind: HubEventKind::ProtocolError, detail } if detail["message"] == "heartbeat before hello")
    );
    assert!(matches!(actions[1], HubAction::Close { code: codes::UNEXPECTED_FRAME, .. }));

    let mut hub = HubSession::new("1", Instant::ZERO);
    hub.on_frame(AgentFrame::Hello { protocol: 2, agent_version: "x".into() }, Instant::ZERO);
    assert!(
        std::iter::from_fn(|| hub.poll_action())
            .any(|a| matches!(a, HubAction::Close { code: codes::VERSION_MISMATCH, .. }))
    );

    let mut hub = HubSession::new("1", Instant::ZERO);
    assert_eq!(hub.next_deadline(), Some(Instant::ZERO + secs(10)));
    hub.on_tick(Instant::ZERO + secs(9));
    assert!(hub.poll_action().is_none());
    hub.on_tick(Instant::ZERO + secs(10));
    assert!(std::iter::from_fn(|| hub.poll_action()).any(|a| matches!(a, HubAction::Close { .. })));
    assert!(hub.is_closed());

    // A second hello is unexpected.
    let mut w = World::new();
    w.pump();
    w.hub.on_frame(AgentFrame::Hello { protocol: 1, agent_version: "1.0.0".into() }, w.now);
    w.pump();
    assert_eq!(w.hub_closed_with, Some(codes::UNEXPECTED_FRAME));
}

#[test]
fn the_status_goes_out_only_when_it_changed() {
    let mut w = World::new();
    w.advance(secs(60));
    assert_eq!(w.sent_by_agent("status"), 1, "polled every 10 s, unchanged, not sent again");
    w.status.node_red.state = NodeRedState::Running;
    w.status.node_red.pid = Some(42);
    w.agent.on_event(AgentEvent::NodeRedChanged, w.now);
    w.pump();
    assert_eq!(w.sent_by_agent("status"), 2, "sent at once on a change");
    // A backlog change has no signal of its own: the 10 s poll finds it.
    w.status.audit_backlog = 3;
    w.advance(secs(9));
    assert_eq!(w.sent_by_agent("status"), 2);
    w.advance(secs(1));
    assert_eq!(w.sent_by_agent("status"), 3);
    assert_eq!(w.statuses_stored, 3);
    // The hub keeps a status only when it differs from the last one on this stream.
    w.hub.on_frame(AgentFrame::Status { status: w.status.clone() }, w.now);
    w.pump();
    assert_eq!(w.statuses_stored, 3);
}

#[test]
fn heartbeats_every_fifteen_seconds_taken_by_the_hub_in_silence() {
    let mut w = World::new();
    w.advance(secs(14));
    assert_eq!(w.sent_by_agent("heartbeat"), 0);
    w.advance(secs(1));
    assert_eq!(w.sent_by_agent("heartbeat"), 1);
    w.advance(secs(45));
    let numbers: Vec<u64> =
        w.agent_sent.iter().filter_map(|f| if let AgentFrame::Heartbeat { n } = f { Some(*n) } else { None }).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    let acks = w.hub_sent.iter().filter(|f| matches!(f, HubFrame::HeartbeatAck { .. })).count();
    assert_eq!(acks, 0, "the hub does not answer heartbeats");
    assert_eq!((w.hub_closed_with, w.closed_with), (None, None), "and the stream stays open");
    assert!(!w.hub.is_closed());
    // The protocol lets a hub send heartbeats too: the agent answers them, even before the welcome.
    let mut agent = AgentSession::new(AgentConfig::new("1", "h"), Instant::ZERO, None, None);
    agent.poll_action();
    agent.on_frame(HubFrame::Heartbeat { n: 5 }, Instant::ZERO);
    assert_eq!(agent.poll_action(), Some(AgentAction::Send(AgentFrame::HeartbeatAck { n: 5 })));
}

#[test]
fn audit_delivery_one_batch_in_flight_acks_move_the_cursor() {
    let mut w = World::new();
    w.record(1200);
    w.pump();
    let batches: Vec<(u64, u64)> = w
        .agent_sent
        .iter()
        .filter_map(|f| match f {
            AgentFrame::AuditBatch { events } => Some((events[0].seq, events.last().unwrap().seq)),
            _ => None,
        })
        .collect();
    assert_eq!(batches, [(1, 512), (513, 1024), (1025, 1200)], "512 at most, each after the last one's ack");
    assert_eq!(w.cursor, 1200, "the cursor moved with each acknowledgement");
    assert_eq!(w.hub_audit.len(), 1200);
    assert!(w.hub_audit.values().zip(&w.journal).all(|(a, b)| a == b), "stored exactly as sealed");
    assert!(w.hub_audit.values().all(StoredEvent::hash_holds));

    // One in flight: while the hub has not answered, new events wait.
    w.drop_to_agent = true;
    w.record(3);
    w.pump();
    w.record(2);
    w.pump();
    assert_eq!(w.sent_by_agent("audit_batch"), 4, "the two new events wait for the ack");
    assert_eq!(w.cursor, 1200, "no ack arrived: the cursor stays");
}

#[test]
fn a_lost_acknowledgement_means_a_resend_and_the_hub_keeps_each_event_once() {
    let mut w = World::new();
    w.pump();
    w.drop_to_agent = true;
    w.record(10);
    w.pump();
    assert_eq!(w.hub_audit.len(), 10, "stored at the hub ...");
    assert_eq!(w.cursor, 0, "... but the ack was lost");

    // Within the session: the batch goes again after the ack timeout.
    w.advance(secs(29));
    assert_eq!(w.sent_by_agent("audit_batch"), 1);
    w.advance(secs(6));
    assert_eq!(w.sent_by_agent("audit_batch"), 2, "resent once 30 s passed without an ack");
    assert_eq!(w.duplicates, 10);

    // After a reconnect: sent again from the cursor, with what came since.
    w.record(5);
    w.reconnect(None);
    w.drop_to_agent = false;
    w.pump();
    assert_eq!(w.cursor, 15);
    assert_eq!(w.hub_audit.len(), 15, "each event once");
    assert_eq!(w.duplicates, 20);
    let seqs: Vec<u64> = w.hub_audit.keys().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
}

#[test]
fn a_batch_stays_under_its_byte_bound() {
    let mut config = AgentConfig::new("1", "h");
    config.batch_bytes = 2000;
    let mut agent = AgentSession::new(config, Instant::ZERO, None, None);
    agent.on_frame(HubFrame::Welcome { protocol: 1, hub_version: "1".into() }, Instant::ZERO);
    let mut w = World::new();
    w.record(20);
    while agent.poll_action().is_some() {}
    agent.on_event(AgentEvent::AuditRead(w.journal.clone()), Instant::ZERO);
    let Some(AgentAction::Send(AgentFrame::AuditBatch { events })) = agent.poll_action() else { panic!() };
    let size: usize = events.iter().map(|e| serde_json::to_vec(e).unwrap().len()).sum();
    assert!(size <= 2000 && events.len() < 20 && !events.is_empty(), "{} events, {size} bytes", events.len());
}

#[test]
fn a_store_that_cannot_keep_a_batch_leaves_it_to_the_retry() {
    let mut w = World::new();
    w.pump();
    w.drop_to_hub = true;
    w.record(3);
    w.pump();
    assert!(w.agent.batch_in_flight());
    w.drop_to_hub = false;
    w.advance(secs(30));
    assert_eq!(w.hub_audit.len(), 3);
    assert_eq!(w.cursor, 3);
    // A journal that could not be read is retried at the next 5 s retry.
    let mut agent = AgentSession::new(AgentConfig::new("1", "h"), Instant::ZERO, None, None);
    agent.on_frame(HubFrame::Welcome { protocol: 1, hub_version: "1".into() }, Instant::ZERO);
    let actions: Vec<AgentAction> = std::iter::from_fn(|| agent.poll_action()).collect();
    assert!(actions.contains(&AgentAction::ReadAudit { limit: 512 }));
    agent.on_event(AgentEvent::AuditUnreadable, Instant::ZERO);
    agent.on_tick(Instant::ZERO + secs(5));
    assert!(std::iter::from_fn(|| agent.poll_action()).any(|a| a == AgentAction::ReadAudit { limit: 512 }));
}

#[test]
fn renewal_at_two_thirds_then_renewed_and_rescheduled() {
    let mut w = World::with(Some(secs(60)), None);
    w.advance(secs(59));
    assert_eq!(w.sent_by_agent("renew_request"), 0);
    w.advance(secs(1));
    assert_eq!(w.sent_by_agent("renew_request"), 1);
    assert_eq!(w.recorded_kinds(), [AuditKind::TunnelRenewed]);
    assert_eq!(w.recorded[0].target, "hub.example:7443");
    assert_eq!(w.recorded[0].detail["serial"], "0a");
    // The next one is due when the renewed certificate says (600 s here).
    w.advance(secs(599));
    assert_eq!(w.sent_by_agent("renew_request"), 1);
    w.advance(secs(1));
    assert_eq!(w.sent_by_agent("renew_request"), 2);
}

#[test]
fn a_refused_or_unanswered_renewal_is_retried_with_backoff() {
    let mut w = World::with(Some(secs(10)), None);
    w.renews = HubRenews::Refuses;
    w.advance(secs(10));
    assert_eq!(w.recorded_kinds(), [AuditKind::TunnelRenewFailed]);
    assert_eq!(w.recorded[0].detail["reason"], "the hub refused: CA offline");
    assert_eq!(w.recorded[0].detail["retry_in_secs"], 30);
    w.renews = HubRenews::Silent;
    w.advance(secs(30));
    assert_eq!(w.sent_by_agent("renew_request"), 2, "retried after 30 s");
    w.advance(secs(59));
    assert_eq!(w.recorded.len(), 1);
    w.advance(secs(1));
    assert_eq!(w.recorded.len(), 2, "no answer in 60 s is a failure");
    assert_eq!(w.recorded[1].detail["reason"], "the hub did not answer");
    assert_eq!(w.recorded[1].detail["retry_in_secs"], 60, "doubling");
    // A key that cannot be made is a failure too; then the hub answers and all is well.
    w.csr_fails = true;
    w.advance(secs(60));
    assert_eq!(w.recorded[2].detail["reason"], "no entropy");
    w.csr_fails = false;
    w.renews = HubRenews::Yes;
    w.advance(secs(120));
    assert_eq!(w.recorded_kinds().last(), Some(&AuditKind::TunnelRenewed));
    // An answer nobody asked for is an unexpected frame.
    w.agent.on_frame(HubFrame::RenewResponse { cert_pem: "x".into() }, w.now);
    w.pump();
    assert_eq!(w.closed_with, Some(codes::UNEXPECTED_FRAME));
}

#[test]
fn the_waiting_deployment_goes_out_once_per_stream_and_its_outcome_comes_back() {
    let mut w = World::new();
    w.waiting =
        Some(WaitingDeployment { id: "d1".into(), number: 1, envelope: "v1.env".into(), state: DeployState::Pending });
    w.pump();
    assert_eq!(w.submitted, ["v1.env"], "sent after the welcome");
    assert_eq!(w.marked_sent, ["d1"]);
    assert!(w.hub_records.iter().any(|(k, d)| *k == HubEventKind::DeploymentSent && d["number"] == 1));
    w.hub.on_event(HubEvent::DeploymentsChanged);
    w.pump();
    assert_eq!(w.submitted.len(), 1, "not twice on one stream");

    // The deployer reports; the hub is told.
    let report = DeployReport { id: "d1".into(), state: DeployState::Applied, detail: serde_json::json!({}) };
    w.agent.on_event(AgentEvent::Deployment(report.clone()), w.now);
    w.pump();
    assert_eq!(w.deploy_updates, [("d1".to_string(), DeployState::Applied)]);

    // A new stream: the last outcome is told again (its report may have been lost); an
    // unfinished deployment is sent again.
    w.waiting =
        Some(WaitingDeployment { id: "d2".into(), number: 2, envelope: "v1.env2".into(), state: DeployState::Sent });
    w.reconnect(Some(report));
    w.pump();
    assert_eq!(w.deploy_updates.len(), 2);
    assert_eq!(w.submitted, ["v1.env", "v1.env2"]);
    assert_eq!(w.marked_sent, ["d1"], "only a pending one is marked sent");

    // A new deployment made while the device is connected goes out at once.
    w.waiting =
        Some(WaitingDeployment { id: "d3".into(), number: 3, envelope: "v1.env3".into(), state: DeployState::Pending });
    w.hub.on_event(HubEvent::DeploymentsChanged);
    w.pump();
    assert_eq!(w.submitted.len(), 3);
}

#[test]
fn outcomes_and_sboms_from_before_the_welcome_wait_for_it() {
    let mut w = World::new();
    w.agent.poll_action();
    let report = DeployReport { id: "d9".into(), state: DeployState::RolledBack, detail: serde_json::json!("why") };
    w.agent.on_event(AgentEvent::Deployment(report), w.now);
    w.agent.on_event(AgentEvent::Sbom(serde_json::json!({"bomFormat": "CycloneDX"})), w.now);
    assert_eq!(w.agent.poll_action(), None, "nothing before the welcome");
    w.to_hub.push_back(encode(&AgentFrame::Hello { protocol: 1, agent_version: "1.0.0".into() }));
    w.pump();
    assert_eq!(w.deploy_updates, [("d9".to_string(), DeployState::RolledBack)]);
    assert_eq!(w.sent_by_agent("sbom"), 1);
}

#[test]
fn commands_are_executed_audited_and_answered_by_id() {
    let mut w = World::new();
    w.pump();
    let restart = w.hub.send_command(Command::RestartNodeRed).unwrap();
    let sbom = w.hub.send_command(Command::Sbom).unwrap();
    assert_eq!(w.hub.commands_waiting().count(), 2);
    w.pump();
    assert_eq!(w.executed, [(restart, Command::RestartNodeRed), (sbom, Command::Sbom)]);
    assert_eq!(w.results, [(restart, true), (sbom, true)]);
    assert_eq!(w.hub.commands_waiting().count(), 0);
    assert_eq!(w.recorded_kinds(), [AuditKind::TunnelCommand], "restart is audited, an SBOM request is not");
    assert_eq!(w.recorded[0].detail["command"], "restart_node_red");
    let kinds: Vec<HubEventKind> = w.hub_records.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            HubEventKind::CommandSent,
            HubEventKind::CommandSent,
            HubEventKind::CommandResult,
            HubEventKind::CommandResult
        ]
    );
    assert_eq!(w.hub_records[0].1["command"], "restart_node_red", "the hub records the name, a string");

    // A portable snapshot is audited on the device like a snapshot, under its own name; the hub
    // records its name, not the key it carries.
    let portable = Command::PortableSnapshot { seal_to: "3059".into() };
    let id = w.hub.send_command(portable.clone()).unwrap();
    w.pump();
    assert_eq!(w.executed.last(), Some(&(id, portable)));
    assert_eq!(w.recorded_kinds(), [AuditKind::TunnelCommand, AuditKind::TunnelCommand]);
    assert_eq!(w.recorded[1].detail["command"], "portable_snapshot");
    let sent = w.hub_records.iter().rfind(|(k, _)| *k == HubEventKind::CommandSent).unwrap();
    assert_eq!(sent.1, serde_json::json!({ "id": id, "command": "portable_snapshot" }));

    // Not before hello.
    let mut hub = HubSession::new("1", Instant::ZERO);
    assert_eq!(hub.send_command(Command::RestartNodeRed), None);
}

#[test]
fn a_bad_frame_closes_the_stream_and_is_audited_on_either_end() {
    let mut w = World::new();
    w.pump();
    w.to_agent.push_back(b"\x00\x00\x00\x05hello".to_vec());
    w.pump();
    assert_eq!(w.closed_with, Some(codes::MALFORMED_FRAME));
    assert_eq!(w.recorded_kinds(), [AuditKind::TunnelProtocolError]);
    assert!(w.agent.is_closed() && w.agent.next_deadline().is_none());

    let mut w = World::new();
    w.pump();
    w.to_hub.push_back(encode(&HubFrame::Welcome { protocol: 1, hub_version: "x".into() }));
    w.pump();
    assert_eq!(w.hub_closed_with, Some(codes::UNEXPECTED_FRAME), "a frame of the other direction");
    let (kind, detail) = w.hub_records.last().unwrap();
    assert_eq!((*kind, detail["message"].as_str()), (HubEventKind::ProtocolError, Some("unexpected welcome")));

    // An out-of-order batch is refused before anything is stored.
    let mut w = World::new();
    w.pump();
    w.drop_to_hub = true;
    w.record(2);
    w.pump();
    w.journal.swap(0, 1);
    let events = w.journal.clone();
    w.to_hub.push_back(encode(&AgentFrame::AuditBatch { events }));
    w.pump();
    assert_eq!(w.hub_closed_with, Some(codes::MALFORMED_FRAME));
    assert!(w.hub_audit.is_empty());

    // Commands and deployments before the welcome are unexpected on the agent.
    let mut agent = AgentSession::new(AgentConfig::new("1", "h"), Instant::ZERO, None, None);
    agent.poll_action();
    agent.on_frame(HubFrame::Command { id: 1, command: Command::RestartNodeRed }, Instant::ZERO);
    assert!(
        std::iter::from_fn(|| agent.poll_action())
            .any(|a| matches!(a, AgentAction::Close { code: codes::UNEXPECTED_FRAME, .. }))
    );
}

fn waiting_policy(number: u64) -> Option<WaitingPolicy> {
    Some(WaitingPolicy { number, envelope: format!("policy-{number}") })
}

#[test]
fn the_newest_policy_goes_out_after_each_welcome_and_each_change_and_its_answer_comes_back() {
    let mut w = World::new();
    w.policy_waiting = waiting_policy(3);
    w.pump();
    assert_eq!(w.policies_applied, ["policy-3"], "sent after the welcome");
    assert_eq!(w.policy_updates.last().map(|r| (r.number, r.state)), Some((3, PolicyState::Applied)));
    assert!(w.hub_records.iter().any(|(k, d)| *k == HubEventKind::PolicySent && d["number"] == 3));

    // Looked up again with nothing newer: not sent twice on one stream.
    w.hub.on_event(HubEvent::PoliciesChanged);
    w.pump();
    assert_eq!(w.policies_applied.len(), 1);

    // A newer one is sent at once.
    w.policy_waiting = waiting_policy(4);
    w.hub.on_event(HubEvent::PoliciesChanged);
    w.pump();
    assert_eq!(w.policies_applied, ["policy-3", "policy-4"]);

    // A lookup that raced a newer policy and answers with an older one sends nothing.
    w.hub.on_event(HubEvent::PolicyWaiting(waiting_policy(2)));
    w.pump();
    assert_eq!(w.policies_applied.len(), 2);

    // A new stream: the newest is sent again (the device answers `applied` again), and the
    // agent repeats its last answer at the welcome, so one reached offline arrives.
    let last = w.policy_updates.last().cloned();
    w.reconnect(None);
    w.agent =
        AgentSession::new(AgentConfig::new("1.0.0", "hub.example:7443"), w.now, None, None).with_policy_report(last);
    w.policy_updates.clear();
    w.pump();
    assert_eq!(w.policies_applied.len(), 3);
    assert_eq!(w.sent_by_agent("policy_status"), 2, "the repeat at welcome and the answer to the resend");
    assert!(w.policy_updates.iter().all(|r| r.number == 4 && r.state == PolicyState::Applied));
}

#[test]
fn a_policy_is_neither_sent_before_hello_nor_taken_before_welcome() {
    let mut w = World::new();
    w.policy_waiting = waiting_policy(1);
    w.hub.on_event(HubEvent::PoliciesChanged);
    w.hub.on_event(HubEvent::PolicyWaiting(waiting_policy(1)));
    assert!(w.hub.poll_action().is_none(), "nothing before the device said hello");

    let mut agent = AgentSession::new(AgentConfig::new("1.0.0", "hub"), Instant::ZERO, None, None);
    let _hello = agent.poll_action();
    agent.on_frame(HubFrame::Policy { policy: "policy-1".into() }, Instant::ZERO);
    let actions: Vec<AgentAction> = std::iter::from_fn(|| agent.poll_action()).collect();
    assert!(!actions.iter().any(|a| matches!(a, AgentAction::ApplyPolicy(_))), "{actions:?}");
    assert!(actions.iter().any(|a| matches!(a, AgentAction::Close { code, .. } if *code == codes::UNEXPECTED_FRAME)));
}
