//! One tunnel session on the agent: the control stream (hello, status pushes, heartbeats,
//! commands, and audit delivery: journal events after the forwarding cursor go out in seq-ordered
//! batches, one in flight at a time, and the cursor moves only when the hub acknowledges a batch
//! it has made durable; a batch whose acknowledgement never came is sent again on the next
//! session, and the hub drops what it already has). A malformed frame from the hub closes that control stream with an error code and
//! is audited; the session opens a new one.

use super::client::TunnelParts;
use super::forwarded::Forwarding;
use super::renew::Renewal;
use crate::audit::{Actor, AuditEvent};
use crate::identity::Identity;
use crate::protocol::{Command, DeviceStatus, Frame, FrameDecoder, VERSION, codes, encode};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// Status is checked this often (the journal backlog changes without a signal) and sent when it
/// changed; an idle device sends nothing but heartbeats.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// Audit events per batch at most, and bytes (well under the frame limit).
const BATCH_EVENTS: usize = 512;
const BATCH_BYTES: usize = 256 * 1024;
/// How often delivery is retried without a new event (a store error at either end), and how
/// long an unacknowledged batch waits before it is sent again.
const FORWARD_RETRY: Duration = Duration::from_secs(5);
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The agent is stopping.
    Cancelled,
    /// The hub answered with a stateless reset: it restarted; reconnect at once.
    HubRestarted,
    /// The hub refused the device (revoked, replaced by another connection).
    Refused,
    /// Anything else: the path or the hub went away.
    Lost,
}

pub struct Session<'a> {
    pub connection: quinn::Connection,
    /// Streams the hub opens (the remote editor) go to the gate through this.
    pub forwarding: Arc<Forwarding>,
    /// Owns the tasks serving those streams.
    pub streams: TaskTracker,
    /// The agent's parts the session works with (identity renewal in its state dir, the
    /// supervisor, deployments, the journal, what status reports).
    pub parts: &'a TunnelParts,
}

enum StreamEnd {
    Connection(SessionEnd, String),
    Faulted,
}

impl Session<'_> {
    pub async fn run(&self, cancel: &CancellationToken) -> (SessionEnd, String) {
        let end = self.control_streams(cancel).await;
        // Forwarded streams end with the connection (or at `cancel`); wait for their tasks.
        self.streams.close();
        if tokio::time::timeout(Duration::from_secs(2), self.streams.wait()).await.is_err() {
            tracing::warn!("forwarded streams still open after the session ended");
        }
        end
    }

    async fn control_streams(&self, cancel: &CancellationToken) -> (SessionEnd, String) {
        let mut faults = 0u32;
        loop {
            let (send, recv) = match self.connection.open_bi().await {
                Ok(pair) => pair,
                Err(e) => return end_of(&e),
            };
            match self.control(send, recv, cancel).await {
                // A write that failed because the connection closed knows only that it is
                // gone; the connection knows why (a revocation must not look like a lost path).
                StreamEnd::Connection(SessionEnd::Lost, reason) => {
                    return self.connection.close_reason().map_or((SessionEnd::Lost, reason), |e| end_of(&e));
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

    fn status(&self, audit: &crate::audit::JournalStatus) -> Frame {
        Frame::Status {
            status: DeviceStatus {
                agent_version: crate::VERSION.to_string(),
                node_red: serde_json::to_value(self.parts.supervisor.status()).unwrap_or_default(),
                audit_backlog: audit.backlog,
                audit_last_seq: audit.last_seq,
                gate_listen: self.parts.gate_listen.clone(),
                protection: self.parts.protection,
            },
        }
    }

    async fn control(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        cancel: &CancellationToken,
    ) -> StreamEnd {
        let lost = |e: &dyn std::fmt::Display| StreamEnd::Connection(SessionEnd::Lost, e.to_string());
        if let Err(e) = send
            .write_all(&encode(&Frame::Hello { protocol: VERSION, agent_version: crate::VERSION.to_string() }))
            .await
        {
            return lost(&e);
        }
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut node_red = self.parts.supervisor.subscribe();
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        let mut status_timer = tokio::time::interval(STATUS_EVERY);
        let mut heartbeats = 0u64;
        let mut welcomed = false;
        let mut last_sent: Option<Frame> = None;
        let mut new_events = self.parts.audit.subscribe();
        let mut in_flight: Option<(u64, Instant)> = None;
        let mut forward_retry = tokio::time::interval(FORWARD_RETRY);
        let mut deploy_reports = self.parts.deploy.reports();
        let mut sboms = self.parts.deploy.sbom();
        // What was made before this stream is not news to it; the last outcome is sent at welcome.
        deploy_reports.mark_unchanged();
        sboms.mark_unchanged();
        // Read again for every control stream: an earlier one may have renewed it.
        let mut renewal = match Identity::load(&self.parts.dir) {
            Ok(Some(identity)) => identity.certificate().ok().map(|cert| Renewal::new(identity, &cert)),
            _ => None,
        };
        loop {
            loop {
                let frame = match decoder.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return self.fault(&mut send, &mut recv, e.code(), &e.to_string()).await,
                };
                match frame {
                    Frame::Welcome { protocol, .. } if !welcomed && protocol == VERSION => {
                        welcomed = true;
                        if let Err(e) = self.push_status(&mut send, &mut last_sent).await {
                            return lost(&e);
                        }
                        if let Err(e) = self.forward(&mut send, &mut in_flight).await {
                            return lost(&e);
                        }
                        // The last outcome again: it may have been reached while offline, or
                        // its report lost with the previous connection.
                        let last = deploy_reports.borrow_and_update().clone();
                        if let Some(report) = last
                            && let Err(e) = send.write_all(&encode(&deploy_status(report))).await
                        {
                            return lost(&e);
                        }
                    }
                    Frame::Welcome { protocol, .. } if !welcomed => {
                        return self
                            .fault(
                                &mut send,
                                &mut recv,
                                codes::VERSION_MISMATCH,
                                &format!("hub speaks protocol {protocol}"),
                            )
                            .await;
                    }
                    Frame::HeartbeatAck { .. } => {}
                    Frame::AuditAck { seq } if welcomed => {
                        if let Err(e) = self.parts.audit.ack(seq).await {
                            tracing::warn!(seq, error = %e, "the hub's audit acknowledgement was not recorded; the events will be sent again");
                        }
                        in_flight = None;
                        if let Err(e) = self.forward(&mut send, &mut in_flight).await {
                            return lost(&e);
                        }
                    }
                    Frame::Heartbeat { n } => {
                        if let Err(e) = send.write_all(&encode(&Frame::HeartbeatAck { n })).await {
                            return lost(&e);
                        }
                    }
                    Frame::Deploy { deployment } if welcomed => {
                        // Applied by the deployer, not here: an apply takes minutes and the
                        // control stream must keep answering meanwhile.
                        if let Err(e) = self.parts.deploy.submit(deployment) {
                            tracing::warn!(error = %e, "deployment not queued; the hub will send it again");
                        }
                    }
                    Frame::Command { id, command } if welcomed => {
                        let (ok, detail) = self.execute(command).await;
                        if let Err(e) = send.write_all(&encode(&Frame::CommandResult { id, ok, detail })).await {
                            return lost(&e);
                        }
                    }
                    Frame::RenewResponse { cert_pem } if renewal.as_ref().is_some_and(Renewal::waiting) => {
                        if let Some(r) = renewal.as_mut() {
                            self.renewed(r, cert_pem).await;
                        }
                    }
                    Frame::Error { code, message }
                        if code == codes::RENEW_REFUSED && renewal.as_ref().is_some_and(Renewal::waiting) =>
                    {
                        if let Some(r) = renewal.as_mut() {
                            self.renewal_failed(r, &format!("the hub refused: {message}")).await;
                        }
                    }
                    Frame::Error { code, message } => {
                        tracing::warn!(code, %message, "the hub reported a protocol error")
                    }
                    other => {
                        let kind = serde_json::to_value(&other)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        return self
                            .fault(&mut send, &mut recv, codes::UNEXPECTED_FRAME, &format!("unexpected {kind}"))
                            .await;
                    }
                }
            }
            // (A far-away instant when there is nothing to renew: the branch is disabled then.)
            let renew_at = renewal
                .as_ref()
                .map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400), Renewal::next);
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.connection.close(codes::SHUTDOWN.into(), b"agent stopping");
                    return StreamEnd::Connection(SessionEnd::Cancelled, "agent stopping".into());
                }
                read = recv.read(&mut buf) => match read {
                    Ok(Some(n)) => decoder.feed(&buf[..n]),
                    Ok(None) => return StreamEnd::Faulted,
                    Err(quinn::ReadError::ConnectionLost(e)) => return StreamEnd::Connection(end_of(&e).0, e.to_string()),
                    Err(quinn::ReadError::Reset(code)) => {
                        tracing::warn!(%code, "the hub closed the control stream");
                        return StreamEnd::Faulted;
                    }
                    Err(e) => return lost(&e),
                },
                changed = node_red.changed(), if welcomed => {
                    if changed.is_ok() && let Err(e) = self.push_status(&mut send, &mut last_sent).await {
                        return lost(&e);
                    }
                }
                _ = status_timer.tick(), if welcomed => {
                    if let Err(e) = self.push_status(&mut send, &mut last_sent).await {
                        return lost(&e);
                    }
                }
                _ = new_events.recv(), if welcomed && in_flight.is_none() => {
                    if let Err(e) = self.forward(&mut send, &mut in_flight).await {
                        return lost(&e);
                    }
                }
                _ = tokio::time::sleep_until(renew_at), if welcomed && renewal.is_some() => {
                    if let Some(r) = renewal.as_mut() {
                        if r.waiting() {
                            self.renewal_failed(r, "the hub did not answer").await;
                        } else {
                            match r.start() {
                                Ok(csr_pem) => {
                                    tracing::info!("renewing the device certificate");
                                    if let Err(e) = send.write_all(&encode(&Frame::RenewRequest { csr_pem })).await {
                                        return lost(&e);
                                    }
                                }
                                Err(e) => self.renewal_failed(r, &e).await,
                            }
                        }
                    }
                }
                _ = forward_retry.tick(), if welcomed => {
                    if in_flight.is_none_or(|(_, sent)| sent.elapsed() >= ACK_TIMEOUT) {
                        in_flight = None;
                        if let Err(e) = self.forward(&mut send, &mut in_flight).await {
                            return lost(&e);
                        }
                    }
                }
                changed = deploy_reports.changed(), if welcomed => {
                    let report = deploy_reports.borrow_and_update().clone();
                    if changed.is_ok()
                        && let Some(report) = report
                        && let Err(e) = send.write_all(&encode(&deploy_status(report))).await
                    {
                        return lost(&e);
                    }
                }
                changed = sboms.changed(), if welcomed => {
                    let sbom = sboms.borrow_and_update().clone();
                    if changed.is_ok()
                        && let Some(sbom) = sbom
                        && let Err(e) = send.write_all(&encode(&Frame::Sbom { sbom: (*sbom).clone() })).await
                    {
                        return lost(&e);
                    }
                }
                _ = heartbeat.tick(), if welcomed => {
                    heartbeats += 1;
                    if let Err(e) = send.write_all(&encode(&Frame::Heartbeat { n: heartbeats })).await {
                        return lost(&e);
                    }
                }
                stream = self.connection.accept_bi() => match stream {
                    // One operator connection: served by the gate on its own task.
                    Ok((s, r)) => {
                        let (forwarding, hub, cancel) = (Arc::clone(&self.forwarding), self.connection.remote_address(), cancel.child_token());
                        self.streams.spawn(async move { forwarding.serve(s, r, hub, cancel).await });
                    }
                    Err(e) => return StreamEnd::Connection(end_of(&e).0, e.to_string()),
                },
            }
        }
    }

    /// Stores a renewed certificate for the next handshake (this connection goes on as it is).
    async fn renewed(&self, renewal: &mut Renewal, cert_pem: String) {
        match renewal.answered(cert_pem) {
            Ok((identity, cert)) => match identity.save_renewed(&self.parts.dir) {
                Ok(()) => {
                    let not_after = crate::rfc3339::format_seconds(cert.not_after);
                    tracing::info!(serial = %cert.serial_hex, %not_after, "device certificate renewed");
                    let event = AuditEvent::new("tunnel.renewed", Actor::System, identity.info.hub.as_str())
                        .with("serial", cert.serial_hex.as_str())
                        .with("not_after", not_after.as_str());
                    self.parts.audit.record_or_log(event).await;
                }
                Err(e) => self.renewal_failed(renewal, &format!("the renewed identity could not be stored: {e}")).await,
            },
            Err(e) => self.renewal_failed(renewal, &e).await,
        }
    }

    async fn renewal_failed(&self, renewal: &mut Renewal, reason: &str) {
        let retry = renewal.failed();
        tracing::warn!(%reason, retry_in = ?retry, "certificate renewal failed");
        let event = AuditEvent::new("tunnel.renew_failed", Actor::System, "device certificate")
            .with("reason", reason)
            .with("retry_in_secs", retry.as_secs());
        self.parts.audit.record_or_log(event).await;
    }

    /// Sends the next batch of undelivered journal events, unless one is in flight.
    async fn forward(
        &self,
        send: &mut quinn::SendStream,
        in_flight: &mut Option<(u64, Instant)>,
    ) -> Result<(), quinn::WriteError> {
        if in_flight.is_some() {
            return Ok(());
        }
        let events = match self.parts.audit.unforwarded(BATCH_EVENTS).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "audit events could not be read for delivery");
                return Ok(());
            }
        };
        let mut batch = Vec::new();
        let mut bytes = 0;
        for event in events {
            let Ok(value) = serde_json::to_value(&event) else { continue };
            let size = value.to_string().len();
            if !batch.is_empty() && bytes + size > BATCH_BYTES {
                break;
            }
            bytes += size;
            batch.push(value);
        }
        let Some(last) = batch.last().and_then(|e| e["seq"].as_u64()) else { return Ok(()) };
        tracing::debug!(events = batch.len(), last, "delivering audit events");
        send.write_all(&encode(&Frame::AuditBatch { events: batch })).await?;
        *in_flight = Some((last, Instant::now()));
        Ok(())
    }

    /// Sends the status unless it is what this stream last sent.
    async fn push_status(
        &self,
        send: &mut quinn::SendStream,
        last_sent: &mut Option<Frame>,
    ) -> Result<(), quinn::WriteError> {
        let audit = self.parts.audit.status().await.unwrap_or(crate::audit::JournalStatus {
            last_seq: 0,
            acked: 0,
            backlog: 0,
            bytes: 0,
            in_memory: false,
        });
        let status = self.status(&audit);
        if last_sent.as_ref() == Some(&status) {
            return Ok(());
        }
        send.write_all(&encode(&status)).await?;
        *last_sent = Some(status);
        Ok(())
    }

    async fn execute(&self, command: Command) -> (bool, serde_json::Value) {
        match command {
            Command::RestartNodeRed => {
                let event =
                    AuditEvent::new("tunnel.command", Actor::System, "node-red").with("command", "restart_node_red");
                self.parts.audit.record_or_log(event).await;
                match self.parts.supervisor.restart().await {
                    Ok(pid) => (true, json!({ "pid": pid })),
                    Err(e) => (false, json!({ "error": e.to_string() })),
                }
            }
            Command::Snapshot => {
                let event = AuditEvent::new("tunnel.command", Actor::System, "node-red").with("command", "snapshot");
                self.parts.audit.record_or_log(event).await;
                match self.parts.deploy.capture().await {
                    Ok(snapshot) => (true, snapshot),
                    Err(e) => (false, json!({ "error": e })),
                }
            }
            Command::Sbom => match self.parts.deploy.make_sbom().await {
                Ok(sbom) => (true, sbom),
                Err(e) => (false, json!({ "error": e })),
            },
        }
    }

    async fn fault(
        &self,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        code: u32,
        message: &str,
    ) -> StreamEnd {
        tracing::warn!(code, %message, "closing the tunnel's control stream");
        let event = AuditEvent::new("tunnel.protocol_error", Actor::System, "control stream")
            .with("code", code)
            .with("message", message);
        self.parts.audit.record_or_log(event).await;
        let _ = send.write_all(&encode(&Frame::Error { code, message: message.to_string() })).await;
        let _ = send.reset(code.into());
        let _ = recv.stop(code.into());
        StreamEnd::Faulted
    }
}

fn end_of(e: &quinn::ConnectionError) -> (SessionEnd, String) {
    use quinn::ConnectionError as E;
    // TLS alerts (QUIC crypto errors 0x100..0x200): with TLS 1.3 the hub judges the device's
    // certificate after the device already considers the handshake done, so a refusal can
    // arrive as the close of an established connection.
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    let end = match e {
        E::Reset => SessionEnd::HubRestarted,
        E::TransportError(t) if crypto(t.code) => SessionEnd::Refused,
        E::ConnectionClosed(c) if crypto(c.error_code) => SessionEnd::Refused,
        E::ApplicationClosed(c)
            if [codes::REVOKED, codes::CERTIFICATE_REQUIRED].map(u64::from).contains(&c.error_code.into_inner()) =>
        {
            SessionEnd::Refused
        }
        E::LocallyClosed => SessionEnd::Cancelled,
        _ => SessionEnd::Lost,
    };
    (end, e.to_string())
}

fn deploy_status(report: crate::deploy::Report) -> Frame {
    Frame::DeployStatus { id: report.id, state: report.state, detail: report.detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_lost_paths_however_they_arrive() {
        use quinn::ConnectionError as E;
        let app = |code: u32| {
            E::ApplicationClosed(quinn::ApplicationClose { error_code: code.into(), reason: bytes::Bytes::new() })
        };
        let tls = |alert: u8| {
            E::ConnectionClosed(quinn::ConnectionClose {
                error_code: quinn::TransportErrorCode::crypto(alert),
                frame_type: None,
                reason: bytes::Bytes::new(),
            })
        };
        assert_eq!(end_of(&app(codes::REVOKED)).0, SessionEnd::Refused);
        assert_eq!(end_of(&app(codes::CERTIFICATE_REQUIRED)).0, SessionEnd::Refused);
        // bad_certificate (42) and certificate_revoked (44) alerts after the handshake.
        assert_eq!(end_of(&tls(42)).0, SessionEnd::Refused);
        assert_eq!(end_of(&tls(44)).0, SessionEnd::Refused);
        assert_eq!(end_of(&app(codes::SHUTDOWN)).0, SessionEnd::Lost);
        assert_eq!(end_of(&E::TimedOut).0, SessionEnd::Lost);
        assert_eq!(end_of(&E::Reset).0, SessionEnd::HubRestarted);
        assert_eq!(end_of(&E::LocallyClosed).0, SessionEnd::Cancelled);
    }
}
