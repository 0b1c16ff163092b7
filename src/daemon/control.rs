//! The daemon's answers on the control socket.

use crate::audit::query::{Filter, Since};
use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::{Role, Settings};
use crate::control::{ControlRequest, ControlResponse, Handler};
use crate::gate::auth::sessions::SessionStore;
use crate::gate::auth::tokens::TokenStore;
use crate::supervisor::SupervisorHandle;
use crate::tunnel::TunnelHandle;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

pub struct DaemonControl {
    pub supervisor: SupervisorHandle,
    pub tunnel: TunnelHandle,
    pub deploy: crate::deploy::DeployHandle,
    pub gate_listen: SocketAddr,
    pub settings: Arc<Settings>,
    pub sessions: Arc<SessionStore>,
    pub tokens: Arc<TokenStore>,
    pub audit: Auditor,
    pub started: SystemTime,
}

impl DaemonControl {
    async fn status(&self) -> serde_json::Value {
        let audit = self.audit.status().await.ok();
        json!({
            "audit": audit,
            "tunnel": self.tunnel.status(),
            "version": crate::VERSION,
            "pid": std::process::id(),
            "started": redtether_proto::time::format_seconds(self.started),
            "config": self.settings.source.describe(),
            "state_dir": self.settings.state_dir.display().to_string(),
            "node_red": self.supervisor.status(),
            "deployment": self.deploy.reports().borrow().clone(),
            "gate": {
                "listen": self.gate_listen.to_string(),
                "protection": self.settings.gate.protection,
                "tls": self.settings.gate.tls.is_some(),
            },
        })
    }

    /// A page of journal events after `after`, filtered; with `wait_ms`, waits that long for
    /// new events when there are none (for `audit tail -f`).
    async fn audit_read(
        &self,
        after: u64,
        limit: u32,
        kind: Option<String>,
        since: Option<String>,
        wait_ms: Option<u64>,
    ) -> ControlResponse {
        let since = match since.as_deref().map(Since::parse).transpose() {
            Ok(s) => s,
            Err(e) => return ControlResponse::error(e),
        };
        let filter = Filter { kind, since };
        let limit = limit.clamp(1, 10_000) as usize;
        let mut committed = self.audit.subscribe();
        let mut page = match self.audit.read(after, limit).await {
            Ok(p) => p,
            Err(e) => return ControlResponse::error(e.to_string()),
        };
        if page.is_empty()
            && let Some(wait) = wait_ms
        {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(wait.min(30_000)), committed.recv()).await;
            page = match self.audit.read(after, limit).await {
                Ok(p) => p,
                Err(e) => return ControlResponse::error(e.to_string()),
            };
        }
        let next = page.last().map_or(after, |e| e.seq);
        let events: Vec<_> = page.into_iter().filter(|e| filter.matches(e)).collect();
        ControlResponse::ok(json!({ "events": events, "next": next }))
    }

    /// Node-RED's question about an editor session: who, and with which Node-RED permissions.
    fn check_session(&self, token: &str) -> ControlResponse {
        match self.sessions.check(token, SystemTime::now()) {
            Some(s) if s.role != Role::Dashboard => {
                let read_only = s.role == Role::Viewer || self.settings.gate.protection;
                ControlResponse::ok(json!({ "username": s.user, "permissions": if read_only { "read" } else { "*" } }))
            }
            _ => ControlResponse::error("unknown or expired session"),
        }
    }
}

impl Handler for DaemonControl {
    type Request = ControlRequest;
    async fn handle(&self, request: ControlRequest) -> ControlResponse {
        match request {
            ControlRequest::Status => ControlResponse::ok(self.status().await),
            ControlRequest::TunnelReload => {
                self.tunnel.reload();
                ControlResponse::ok(json!({ "reloaded": true }))
            }
            ControlRequest::AuditRead { after, limit, kind, since, wait_ms } => {
                self.audit_read(after, limit, kind, since, wait_ms).await
            }
            ControlRequest::AuditVerify => match self.audit.verify().await {
                Ok(report) => ControlResponse::ok(json!(report)),
                Err(e) => ControlResponse::error(e.to_string()),
            },
            ControlRequest::Deploy { path } => match std::fs::read_to_string(&path) {
                Ok(envelope) => match self.deploy.apply_local(envelope.trim().to_string()).await {
                    Ok(report) => ControlResponse::ok(json!(report)),
                    Err(e) => ControlResponse::error(e.to_string()),
                },
                Err(e) => ControlResponse::error(format!("cannot read {path}: {e}")),
            },
            ControlRequest::RestartNodeRed => match self.supervisor.restart().await {
                Ok(pid) => ControlResponse::ok(json!({ "pid": pid })),
                Err(e) => ControlResponse::error(e.to_string()),
            },
            ControlRequest::CheckSession { token } => self.check_session(&token),
            ControlRequest::TokenCreate { name, lifetime_secs, scope } => {
                match self.tokens.create(&name, lifetime_secs, scope.as_deref(), redtether_proto::time::unix_now()) {
                    Ok((token, record)) => {
                        let event = AuditEvent::new(AuditKind::TokenCreated, Actor::System, record.name.as_str())
                            .with("expires", record.expires)
                            .with("scope", record.scope.clone())
                            .with("via", "cli");
                        self.audit.record_or_log(event).await;
                        ControlResponse::ok(json!({ "token": token, "record": crate::gate::token_json(&record) }))
                    }
                    Err(e) => ControlResponse::error(e.to_string()),
                }
            }
            ControlRequest::TokenList => {
                ControlResponse::ok(json!(self.tokens.list().iter().map(crate::gate::token_json).collect::<Vec<_>>()))
            }
            ControlRequest::TokenRevoke { name } => match self.tokens.revoke(&name) {
                Ok(record) => {
                    let event = AuditEvent::new(AuditKind::TokenRevoked, Actor::System, record.name.as_str())
                        .with("via", "cli");
                    self.audit.record_or_log(event).await;
                    ControlResponse::ok(json!({ "revoked": record.name }))
                }
                Err(e) => ControlResponse::error(e.to_string()),
            },
        }
    }
}
