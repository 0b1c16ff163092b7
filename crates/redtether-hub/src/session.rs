//! One connected device, on the hub: its registration, the control streams it opens, and what
//! the hub records about it. Each control stream is the protocol's state machine
//! (`redtether_proto::session::HubSession`) driven by this shell: frames are read and fed in,
//! operators' commands, new deployments and new policies are fed in, and the actions that come out are
//! carried out against the store, the registry and the CA. A malformed frame closes the stream
//! it came on with an error code and is recorded; the device may open a new one.

use crate::registry::{CommandRequest, Registry};
use crate::store::HubStore;
use crate::store::PolicyUpdate;
use crate::store::prelude::*;
use redtether_proto::audit::HubEventKind;
use redtether_proto::session::hub::WaitingPolicy;
use redtether_proto::session::{HubAction, HubEvent, HubSession, Instant, WaitingDeployment, feed};
use redtether_proto::time::unix_now;
use redtether_proto::wire::{DeployState, FrameDecoder, HubFrame, PolicyReport, PolicyState, codes, encode};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long the hub waits to hand a faulted stream its error frame.
const FAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Session {
    pub device: String,
    pub connection: redtether_transport::Connection,
    pub store: Arc<HubStore>,
    pub registry: Registry,
    /// Issues renewed certificates.
    pub issuer: Arc<crate::enroll::Enrollment>,
    /// Counts delivered audit events; keeps the device's resource history.
    pub metrics: Arc<crate::metrics::HubMetrics>,
    /// The status last written to the store, without its resource figures: a report whose only
    /// news is those figures (every status interval) goes to the history, not to the disk.
    pub stored_status: std::sync::Mutex<Option<redtether_proto::wire::DeviceStatus>>,
}

enum StreamEnd {
    /// The connection is gone.
    Closed(String),
    /// Only the stream is: the device may open a new control stream.
    Faulted,
}

/// What the API wakes a session with: a deployment or a policy was made for the device.
/// (`notify_one` keeps one wake-up for a stream that is not waiting yet, so a change made
/// between two selects is not lost.)
#[derive(Clone, Copy)]
struct Wake<'a> {
    deployments: &'a tokio::sync::Notify,
    policies: &'a tokio::sync::Notify,
}

/// Results waiting for the operators who asked, by command id.
type Waiting = HashMap<u64, oneshot::Sender<(bool, serde_json::Value)>>;

impl Session {
    pub async fn serve(self, cancel: CancellationToken) {
        let (commands_tx, mut commands) = mpsc::channel::<CommandRequest>(16);
        let deployments = Arc::new(tokio::sync::Notify::new());
        let policies = Arc::new(tokio::sync::Notify::new());
        let (generation, replaced) = self.registry.register(
            &self.device,
            self.connection.clone(),
            commands_tx,
            Arc::clone(&deployments),
            Arc::clone(&policies),
        );
        if let Some(old) = replaced {
            old.connection.close(codes::REPLACED, b"replaced by a newer connection");
        }
        let addr = self.connection.remote_address().to_string();
        tracing::info!(device = %self.device, %addr, "device connected");
        self.record(HubEventKind::DeviceConnected, json!({ "addr": addr }));
        let _ = self.store.update_device(&self.device, |d| d.last_seen = Some(unix_now()));

        let reason = loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => {
                    self.connection.close(codes::SHUTDOWN, b"hub shutting down");
                    break "hub shutting down".to_string();
                }
                stream = self.connection.accept_bi() => stream,
            };
            let (send, recv) = match stream {
                Ok(pair) => pair,
                Err(e) => break e.to_string(),
            };
            let wake = Wake { deployments: &deployments, policies: &policies };
            match self.control_stream(send, recv, &mut commands, wake, &cancel).await {
                StreamEnd::Closed(reason) => break reason,
                StreamEnd::Faulted => continue,
            }
        };
        self.registry.unregister(&self.device, generation);
        let _ = self.store.update_device(&self.device, |d| d.last_seen = Some(unix_now()));
        tracing::info!(device = %self.device, %reason, "device disconnected");
        self.record(HubEventKind::DeviceDisconnected, json!({ "reason": reason }));
    }

    fn record(&self, kind: HubEventKind, detail: serde_json::Value) {
        if let Err(e) = self.store.record_event(&self.device, kind, detail) {
            tracing::error!(device = %self.device, %kind, error = %e, "hub event not recorded");
        }
    }

    async fn control_stream(
        &self,
        mut send: redtether_transport::SendStream,
        mut recv: redtether_transport::RecvStream,
        commands: &mut mpsc::Receiver<CommandRequest>,
        wake: Wake<'_>,
        cancel: &CancellationToken,
    ) -> StreamEnd {
        let origin = tokio::time::Instant::now();
        let now = || Instant::from_origin(origin.elapsed());
        let mut session = HubSession::new(crate::VERSION, now());
        let mut waiting: Waiting = HashMap::new();
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(action) = session.poll_action() {
                if let Some(end) = self.perform(action, &mut session, &mut send, &mut recv, &mut waiting).await {
                    return end;
                }
            }
            // Every whole frame that has arrived is handled before reading more.
            if feed(&mut decoder, &mut session, now()) {
                continue;
            }
            let deadline = session.next_deadline().map(|at| origin + at.since_origin());
            let greeted = session.is_greeted();
            tokio::select! {
                _ = cancel.cancelled() => return StreamEnd::Closed("hub shutting down".into()),
                _ = redtether_host::deadline::sleep_until(deadline) => session.on_tick(now()),
                read = recv.read(&mut buf) => match read {
                    Ok(Some(n)) => decoder.feed(&buf[..n]),
                    Ok(None) => return StreamEnd::Faulted,
                    Err(e) => return StreamEnd::Closed(e.to_string()),
                },
                _ = wake.deployments.notified(), if greeted => session.on_event(HubEvent::DeploymentsChanged),
                _ = wake.policies.notified(), if greeted => session.on_event(HubEvent::PoliciesChanged),
                request = commands.recv(), if greeted => {
                    if let Some(request) = request
                        && let Some(id) = session.send_command(request.command)
                    {
                        waiting.insert(id, request.reply);
                    }
                }
            }
        }
    }

    /// Carries out one action; `Some` when the stream is over.
    async fn perform(
        &self,
        action: HubAction,
        session: &mut HubSession,
        send: &mut redtether_transport::SendStream,
        recv: &mut redtether_transport::RecvStream,
        waiting: &mut Waiting,
    ) -> Option<StreamEnd> {
        match action {
            HubAction::Send(frame) => {
                if send.write_all(&encode(&frame)).await.is_err() {
                    return Some(StreamEnd::Closed("control stream lost".into()));
                }
            }
            HubAction::Close { code, message } => {
                tracing::warn!(device = %self.device, code, %message, "closing a control stream");
                // The error frame goes out and the stream is finished rather than reset: a reset
                // would discard the frame that says why. Reading stops with the code only once
                // the frame is delivered (quinn drops a stopped stream's unsent data). A device
                // that does not read cannot hold the session up: both waits are bounded.
                let frame = encode(&HubFrame::Error { code, message });
                let _ = tokio::time::timeout(FAULT_WRITE_TIMEOUT, async {
                    send.write_all(&frame).await?;
                    send.finish().await?;
                    send.stopped().await;
                    Ok::<_, redtether_transport::WriteError>(())
                })
                .await;
                recv.stop(code);
                return Some(StreamEnd::Faulted);
            }
            HubAction::Record { kind, detail } => self.record(kind, detail),
            HubAction::AgentVersion(version) => {
                let _ = self.store.update_device(&self.device, |d| d.agent_version = Some(version.clone()));
            }
            // (While the device is online its last_seen is "now"; the stored one is set at
            // disconnect.)
            HubAction::StoreStatus(mut status) => {
                if let Some(resources) = status.resources.take() {
                    self.metrics.history.record(&self.device, unix_now(), &resources);
                }
                let mut stored = self.stored_status.lock().unwrap_or_else(|e| e.into_inner());
                if stored.as_ref() != Some(&status) {
                    let _ = self.store.update_device(&self.device, |d| d.status = Some(status.clone()));
                    *stored = Some(status);
                }
            }
            HubAction::StoreAudit(events) => {
                let (store, device) = (Arc::clone(&self.store), self.device.clone());
                match tokio::task::spawn_blocking(move || store.ingest_audit(&device, &events)).await {
                    Ok(Ok(done)) => {
                        self.metrics.audit_stored(done.stored, done.duplicates);
                        tracing::debug!(device = %self.device, stored = done.stored, duplicates = done.duplicates, ack = done.ack, "audit batch stored");
                        session.on_event(HubEvent::AuditStored { ack: done.ack });
                    }
                    // Not acknowledged: the agent keeps the events and sends them again.
                    Ok(Err(e)) => tracing::error!(device = %self.device, error = %e, "audit batch not stored"),
                    Err(e) => tracing::error!(device = %self.device, error = %e, "audit batch not stored"),
                }
            }
            HubAction::UpdateDeployment { id, state, detail } => {
                let (store, device, recorded) = (Arc::clone(&self.store), self.device.clone(), detail.clone());
                let deployment = id.clone();
                let updated = tokio::task::spawn_blocking(move || {
                    store.update_deployment(&device, &deployment, state, recorded, unix_now())
                })
                .await;
                match updated {
                    Ok(Ok(true)) => {
                        tracing::info!(device = %self.device, deployment = %id, ?state, "deployment status");
                        if state.is_final() {
                            self.registry.deployment_ended();
                        }
                        let detail = json!({ "deployment": id, "state": state, "detail": detail });
                        self.record(HubEventKind::DeploymentStatus, detail);
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(device = %self.device, error = %e, "deployment status not stored"),
                    Err(e) => tracing::error!(device = %self.device, error = %e, "deployment status not stored"),
                }
            }
            HubAction::StoreSbom(sbom) => {
                let (store, device) = (Arc::clone(&self.store), self.device.clone());
                match tokio::task::spawn_blocking(move || store.put_sbom(&device, &sbom)).await {
                    Ok(Ok(())) => tracing::info!(device = %self.device, "SBOM stored"),
                    Ok(Err(e)) => tracing::error!(device = %self.device, error = %e, "SBOM not stored"),
                    Err(e) => tracing::error!(device = %self.device, error = %e, "SBOM not stored"),
                }
            }
            HubAction::CommandResult { id, ok, detail } => {
                if let Some(reply) = waiting.remove(&id) {
                    let _ = reply.send((ok, detail));
                }
            }
            HubAction::RenewCertificate { csr_pem } => {
                let (issuer, device) = (Arc::clone(&self.issuer), self.device.clone());
                let event = match tokio::task::spawn_blocking(move || issuer.renew(&device, &csr_pem)).await {
                    Ok(Ok(cert_pem)) => HubEvent::Renewed(cert_pem),
                    Ok(Err(why)) => HubEvent::RenewRefused(why.to_string()),
                    Err(e) => HubEvent::RenewRefused(e.to_string()),
                };
                session.on_event(event);
            }
            HubAction::CheckDeployment => {
                let waiting = match self.store.deployment_to_send(&self.device) {
                    Ok(found) => found.map(|d| WaitingDeployment {
                        id: d.id,
                        number: d.number,
                        envelope: d.envelope,
                        state: d.state,
                    }),
                    Err(e) => {
                        tracing::error!(device = %self.device, error = %e, "cannot read the deployments to send");
                        None
                    }
                };
                session.on_event(HubEvent::DeploymentWaiting(waiting));
            }
            HubAction::DeploymentSent { id, was_pending } => {
                if was_pending {
                    let _ = self.store.update_deployment(&self.device, &id, DeployState::Sent, json!({}), unix_now());
                }
                tracing::info!(device = %self.device, deployment = %id, "deployment sent");
            }
            HubAction::CheckPolicy => {
                // Always the newest, whatever its state: a device answers a resend of the
                // policy it enforces with `applied` again, which costs nothing.
                let waiting = match self.store.policy(&self.device) {
                    Ok(found) => found.map(|p| WaitingPolicy { number: p.number, envelope: p.envelope }),
                    Err(e) => {
                        tracing::error!(device = %self.device, error = %e, "cannot read the policy to send");
                        None
                    }
                };
                session.on_event(HubEvent::PolicyWaiting(waiting));
            }
            HubAction::UpdatePolicy(report) => self.update_policy(report).await,
        }
        None
    }
}

impl Session {
    /// Keeps the device's answer about a policy and records `policy.status` when it changed
    /// the newest policy's state. An answer about an older policy (one that raced a newer
    /// change) is only logged: the newer one is on its way and will be answered too.
    async fn update_policy(&self, report: PolicyReport) {
        let (store, device, kept) = (Arc::clone(&self.store), self.device.clone(), report.clone());
        let updated = tokio::task::spawn_blocking(move || store.update_policy(&device, &kept, unix_now())).await;
        let number = report.number;
        match updated {
            Ok(Ok(PolicyUpdate::Changed(record))) => {
                let state = report.state.as_str();
                tracing::info!(device = %self.device, number, state, reason = ?report.reason, "policy status");
                if report.state == PolicyState::Applied && report.hash.as_deref().is_some_and(|h| h != record.hash) {
                    tracing::warn!(
                        device = %self.device,
                        number,
                        device_hash = ?report.hash,
                        hub_hash = %record.hash,
                        "the device enforces another document than the hub signed"
                    );
                }
                let detail = json!({ "number": number, "state": state, "reason": report.reason });
                self.record(HubEventKind::PolicyStatus, detail);
            }
            Ok(Ok(PolicyUpdate::Unchanged)) => {
                tracing::debug!(device = %self.device, number, state = report.state.as_str(), "policy status unchanged")
            }
            Ok(Ok(PolicyUpdate::NotNewest(newest))) => tracing::info!(
                device = %self.device,
                number,
                ?newest,
                state = report.state.as_str(),
                reason = ?report.reason,
                "policy status for a policy that is not the newest: ignored"
            ),
            Ok(Err(e)) => tracing::error!(device = %self.device, number, error = %e, "policy status not stored"),
            Err(e) => tracing::error!(device = %self.device, number, error = %e, "policy status not stored"),
        }
    }
}

/// When a session started, for the API.
pub fn since(online: &crate::registry::Online) -> String {
    redtether_proto::time::format_seconds(online.since)
}
