//! One connected device, on the hub: the control stream (hello, status, heartbeats, commands,
//! audit batches stored and acknowledged), its registration, and what the hub records about it.
//! A malformed frame closes the control stream it came on with an error code and is recorded;
//! the device may open a new one.

use super::registry::{CommandRequest, Registry};
use super::store::{HubStore, StoreError};
use crate::protocol::{Frame, FrameDecoder, VERSION, codes, encode};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long a device has to send `hello` on a new control stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the hub waits to hand a faulted stream its error frame.
const FAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Session {
    pub device: String,
    pub connection: quinn::Connection,
    pub store: Arc<HubStore>,
    pub registry: Registry,
    /// Issues renewed certificates.
    pub issuer: Arc<super::enroll::Enrollment>,
}

fn unix_now() -> u64 {
    crate::gate::unix_now()
}

impl Session {
    pub async fn serve(self, cancel: CancellationToken) {
        let (commands_tx, mut commands) = mpsc::channel::<CommandRequest>(16);
        let deployments = Arc::new(tokio::sync::Notify::new());
        let (generation, replaced) =
            self.registry.register(&self.device, self.connection.clone(), commands_tx, Arc::clone(&deployments));
        if let Some(old) = replaced {
            old.connection.close(codes::REPLACED.into(), b"replaced by a newer connection");
        }
        let addr = self.connection.remote_address().to_string();
        tracing::info!(device = %self.device, %addr, "device connected");
        self.record("device.connected", json!({ "addr": addr }));
        let _ = self.store.update_device(&self.device, |d| d.last_seen = Some(unix_now()));

        let reason = loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => {
                    self.connection.close(codes::SHUTDOWN.into(), b"hub shutting down");
                    break "hub shutting down".to_string();
                }
                stream = self.connection.accept_bi() => stream,
            };
            let (send, recv) = match stream {
                Ok(pair) => pair,
                Err(e) => break e.to_string(),
            };
            match self.control_stream(send, recv, &mut commands, &deployments, &cancel).await {
                StreamEnd::Closed(reason) => break reason,
                StreamEnd::Faulted => continue,
            }
        };
        self.registry.unregister(&self.device, generation);
        let _ = self.store.update_device(&self.device, |d| d.last_seen = Some(unix_now()));
        tracing::info!(device = %self.device, %reason, "device disconnected");
        self.record("device.disconnected", json!({ "reason": reason }));
    }

    fn record(&self, kind: &str, detail: serde_json::Value) {
        if let Err(e) = self.store.record_event(&self.device, kind, detail) {
            tracing::error!(device = %self.device, %kind, error = %e, "hub event not recorded");
        }
    }

    async fn control_stream(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        commands: &mut mpsc::Receiver<CommandRequest>,
        deployments: &tokio::sync::Notify,
        cancel: &CancellationToken,
    ) -> StreamEnd {
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut greeted = false;
        let mut pending: HashMap<u64, oneshot::Sender<(bool, serde_json::Value)>> = HashMap::new();
        let mut next_id = 1u64;
        let mut last_status: Option<serde_json::Value> = None;
        // The deployment last sent on this stream: sent once per stream, again on the next.
        let mut deployment_sent: Option<String> = None;
        let hello_deadline = tokio::time::sleep(HELLO_TIMEOUT);
        tokio::pin!(hello_deadline);
        loop {
            // Every whole frame that has arrived is handled before reading more.
            loop {
                let frame = match decoder.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return self.fault(&mut send, &mut recv, e.code(), &e.to_string()).await,
                };
                match (greeted, frame) {
                    (false, Frame::Hello { protocol, agent_version }) => {
                        if protocol != VERSION {
                            return self
                                .fault(
                                    &mut send,
                                    &mut recv,
                                    codes::VERSION_MISMATCH,
                                    &format!("protocol {protocol} is not {VERSION}"),
                                )
                                .await;
                        }
                        greeted = true;
                        let _ =
                            self.store.update_device(&self.device, |d| d.agent_version = Some(agent_version.clone()));
                        let welcome = Frame::Welcome { protocol: VERSION, hub_version: crate::VERSION.to_string() };
                        if send.write_all(&encode(&welcome)).await.is_err() {
                            return StreamEnd::Closed("control stream lost".into());
                        }
                        if !self.send_deployment(&mut send, &mut deployment_sent).await {
                            return StreamEnd::Closed("control stream lost".into());
                        }
                    }
                    (false, other) => {
                        return self
                            .fault(
                                &mut send,
                                &mut recv,
                                codes::UNEXPECTED_FRAME,
                                &format!("{} before hello", kind_of(&other)),
                            )
                            .await;
                    }
                    (true, Frame::Status { status }) => {
                        // Written only when it changed: with thousands of devices an idle fleet
                        // must not turn into a stream of registry writes. (While the device is
                        // online its last_seen is "now"; the stored one is set at disconnect.)
                        let value = serde_json::to_value(&status).unwrap_or_default();
                        if last_status.as_ref() != Some(&value) {
                            let _ = self.store.update_device(&self.device, |d| d.status = Some(value.clone()));
                            last_status = Some(value);
                        }
                    }
                    (true, Frame::Heartbeat { n }) => {
                        if send.write_all(&encode(&Frame::HeartbeatAck { n })).await.is_err() {
                            return StreamEnd::Closed("control stream lost".into());
                        }
                    }
                    (true, Frame::HeartbeatAck { .. }) => {}
                    (true, Frame::RenewRequest { csr_pem }) => {
                        let (issuer, device) = (Arc::clone(&self.issuer), self.device.clone());
                        let answer = match tokio::task::spawn_blocking(move || issuer.renew(&device, &csr_pem)).await {
                            Ok(Ok(cert_pem)) => Frame::RenewResponse { cert_pem },
                            Ok(Err(why)) => {
                                tracing::warn!(device = %self.device, error = %why, "certificate renewal refused");
                                Frame::Error { code: codes::RENEW_REFUSED, message: why }
                            }
                            Err(e) => Frame::Error { code: codes::RENEW_REFUSED, message: e.to_string() },
                        };
                        if send.write_all(&encode(&answer)).await.is_err() {
                            return StreamEnd::Closed("control stream lost".into());
                        }
                    }
                    (true, Frame::AuditBatch { events }) => {
                        // Stored and synced before the acknowledgement leaves: the agent
                        // forgets nothing the hub has not made durable.
                        let (store, device) = (Arc::clone(&self.store), self.device.clone());
                        let ingested = tokio::task::spawn_blocking(move || store.ingest_audit(&device, &events)).await;
                        match ingested {
                            Ok(Ok(done)) => {
                                tracing::debug!(device = %self.device, stored = done.stored, duplicates = done.duplicates, ack = done.ack, "audit batch stored");
                                if send.write_all(&encode(&Frame::AuditAck { seq: done.ack })).await.is_err() {
                                    return StreamEnd::Closed("control stream lost".into());
                                }
                            }
                            Ok(Err(StoreError::InvalidBatch(why))) => {
                                return self
                                    .fault(&mut send, &mut recv, codes::MALFORMED_FRAME, &format!("audit batch: {why}"))
                                    .await;
                            }
                            // Not acknowledged: the agent keeps the events and sends them again.
                            Ok(Err(e)) => tracing::error!(device = %self.device, error = %e, "audit batch not stored"),
                            Err(e) => tracing::error!(device = %self.device, error = %e, "audit batch not stored"),
                        }
                    }
                    (true, Frame::DeployStatus { id, state, detail }) => {
                        let (store, device) = (Arc::clone(&self.store), self.device.clone());
                        let recorded = detail.clone();
                        let updated = tokio::task::spawn_blocking(move || {
                            store
                                .update_deployment(&device, &id, state, recorded, unix_now())
                                .map(|changed| (changed, id))
                        })
                        .await;
                        match updated {
                            Ok(Ok((true, id))) => {
                                tracing::info!(device = %self.device, deployment = %id, ?state, "deployment status");
                                self.record(
                                    "deployment.status",
                                    json!({ "deployment": id, "state": state, "detail": detail }),
                                );
                            }
                            Ok(Ok((false, _))) => {}
                            Ok(Err(e)) => {
                                tracing::error!(device = %self.device, error = %e, "deployment status not stored")
                            }
                            Err(e) => {
                                tracing::error!(device = %self.device, error = %e, "deployment status not stored")
                            }
                        }
                    }
                    (true, Frame::Sbom { sbom }) => {
                        let (store, device) = (Arc::clone(&self.store), self.device.clone());
                        match tokio::task::spawn_blocking(move || store.put_sbom(&device, &sbom)).await {
                            Ok(Ok(())) => tracing::info!(device = %self.device, "SBOM stored"),
                            Ok(Err(e)) => tracing::error!(device = %self.device, error = %e, "SBOM not stored"),
                            Err(e) => tracing::error!(device = %self.device, error = %e, "SBOM not stored"),
                        }
                    }
                    (true, Frame::CommandResult { id, ok, detail }) => {
                        self.record("command.result", json!({ "id": id, "ok": ok, "detail": detail }));
                        if let Some(reply) = pending.remove(&id) {
                            let _ = reply.send((ok, detail));
                        }
                    }
                    (true, Frame::Error { code, message }) => {
                        tracing::warn!(device = %self.device, code, %message, "device reported a protocol error");
                    }
                    (true, other) => {
                        return self
                            .fault(
                                &mut send,
                                &mut recv,
                                codes::UNEXPECTED_FRAME,
                                &format!("unexpected {}", kind_of(&other)),
                            )
                            .await;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return StreamEnd::Closed("hub shutting down".into()),
                _ = &mut hello_deadline, if !greeted => {
                    return self.fault(&mut send, &mut recv, codes::UNEXPECTED_FRAME, "no hello in time").await;
                }
                read = recv.read(&mut buf) => match read {
                    Ok(Some(n)) => decoder.feed(&buf[..n]),
                    Ok(None) => return StreamEnd::Faulted,
                    Err(e) => return StreamEnd::Closed(e.to_string()),
                },
                _ = deployments.notified(), if greeted => {
                    if !self.send_deployment(&mut send, &mut deployment_sent).await {
                        return StreamEnd::Closed("control stream lost".into());
                    }
                }
                request = commands.recv(), if greeted => {
                    let Some(request) = request else { continue };
                    let id = next_id;
                    next_id += 1;
                    self.record("command.sent", json!({ "id": id, "command": request.command }));
                    pending.insert(id, request.reply);
                    if send.write_all(&encode(&Frame::Command { id, command: request.command })).await.is_err() {
                        return StreamEnd::Closed("control stream lost".into());
                    }
                }
            }
        }
    }

    /// Sends the deployment waiting for this device, unless this stream already carried it.
    /// Returns false when the stream is gone.
    async fn send_deployment(&self, send: &mut quinn::SendStream, sent: &mut Option<String>) -> bool {
        let waiting = match self.store.deployment_to_send(&self.device) {
            Ok(Some(d)) if sent.as_deref() != Some(d.id.as_str()) => d,
            Ok(_) => return true,
            Err(e) => {
                tracing::error!(device = %self.device, error = %e, "cannot read the deployments to send");
                return true;
            }
        };
        if send.write_all(&encode(&Frame::Deploy { deployment: waiting.envelope.clone() })).await.is_err() {
            return false;
        }
        *sent = Some(waiting.id.clone());
        if waiting.state == crate::protocol::DeployState::Pending {
            let _ = self.store.update_deployment(
                &self.device,
                &waiting.id,
                crate::protocol::DeployState::Sent,
                json!({}),
                unix_now(),
            );
        }
        self.record("deployment.sent", json!({ "deployment": waiting.id, "number": waiting.number }));
        tracing::info!(device = %self.device, deployment = %waiting.id, number = waiting.number, "deployment sent");
        true
    }

    /// Closes the control stream with `code`, records why, and keeps the connection.
    async fn fault(
        &self,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        code: u32,
        message: &str,
    ) -> StreamEnd {
        tracing::warn!(device = %self.device, code, %message, "closing a control stream");
        self.record("protocol.error", json!({ "code": code, "message": message }));
        // The error frame goes out and the stream is finished rather than reset: a reset would
        // discard the frame that says why. Reading stops with the code only once the frame is
        // delivered (quinn drops a stopped stream's unsent data). A device that does not read
        // cannot hold the session up: both waits are bounded.
        let frame = encode(&Frame::Error { code, message: message.to_string() });
        let _ = tokio::time::timeout(FAULT_WRITE_TIMEOUT, async {
            send.write_all(&frame).await?;
            send.finish()?;
            let _ = send.stopped().await;
            Ok::<_, quinn::WriteError>(())
        })
        .await;
        let _ = recv.stop(code.into());
        StreamEnd::Faulted
    }
}

enum StreamEnd {
    /// The connection is gone.
    Closed(String),
    /// Only the stream is: the device may open a new control stream.
    Faulted,
}

fn kind_of(frame: &Frame) -> String {
    serde_json::to_value(frame).ok().and_then(|v| v["type"].as_str().map(str::to_string)).unwrap_or_default()
}

/// When a session started, for the API.
pub fn since(online: &super::registry::Online) -> String {
    crate::rfc3339::format_seconds(online.since)
}
