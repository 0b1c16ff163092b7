//! The daemon's answers on the control socket.

use crate::audit::query::{Filter, Since, SinceError};
use crate::audit::{Actor, AuditError, AuditEvent, AuditKind, Auditor};
use crate::config::{Role, Settings};
use crate::control::{
    AuditPage, ControlRequest, ControlResponse, EditorPermissions, EditorSession, GateStatus, Handler,
    NodeRedRestarted, StatusReply, TokenCreated, TokenRevoked, TunnelReloaded,
};
use crate::deploy::DeployError;
use crate::gate::TokenInfo;
use crate::gate::auth::sessions::SessionStore;
use crate::gate::auth::tokens::{TokenError, TokenStore};
use crate::supervisor::{SupervisorError, SupervisorHandle};
use crate::tunnel::TunnelHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// Why the daemon refused a control request. The CLI shows the text, so it is the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Since(#[from] SinceError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot read {path}: {source}")]
    ReadEnvelope {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Restart(#[from] SupervisorError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("unknown or expired session")]
    UnknownSession,
    /// The action must leave an audit event and the journal cannot make one durable
    /// (`[audit] on_failure = "deny"`); nothing was changed.
    #[error("refused, as the audit journal cannot record it: {0}")]
    Refused(#[source] AuditError),
    /// The journal failed between the revocation and its event: the token stays revoked.
    #[error("token {0:?} is revoked, but the audit journal could not record it: {1}")]
    RevokedUnrecorded(String, #[source] AuditError),
}

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
    pub gate: Arc<crate::gate::Pipeline>,
    pub security: Arc<crate::security::SecurityControl>,
    /// The bound `[metrics] listen` address.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl DaemonControl {
    async fn status(&self) -> StatusReply {
        StatusReply {
            audit: self.audit.status().await.ok(),
            tunnel: self.tunnel.status(),
            version: crate::VERSION.to_string(),
            pid: std::process::id(),
            started: self.started,
            config: self.settings.source.describe(),
            state_dir: self.settings.state_dir.display().to_string(),
            node_red: self.supervisor.status(),
            deployment: self.deploy.reports().borrow().clone(),
            gate: GateStatus {
                listen: self.gate_listen,
                protection: self.gate.rules().security.protection,
                tls: self.settings.gate.tls.is_some(),
            },
            policy: self.security.info(),
            metrics: self.metrics_listen,
        }
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
    ) -> Result<AuditPage, RequestError> {
        let since = since.as_deref().map(Since::parse).transpose()?;
        let filter = Filter { kind, since };
        let limit = limit.clamp(1, 10_000) as usize;
        let mut committed = self.audit.subscribe();
        let mut page = self.audit.read(after, limit).await?;
        if page.is_empty()
            && let Some(wait) = wait_ms
        {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(wait.min(30_000)), committed.recv()).await;
            page = self.audit.read(after, limit).await?;
        }
        let next = page.last().map_or(after, |e| e.seq);
        let events = page.into_iter().filter(|e| filter.matches(e)).collect();
        Ok(AuditPage { events, next })
    }

    /// Node-RED's question about an editor session: who, and with which Node-RED permissions.
    fn check_session(&self, token: &str) -> Result<EditorSession, RequestError> {
        match self.sessions.check(token, SystemTime::now()) {
            Some(s) if s.role != Role::Dashboard => {
                let read_only = s.role == Role::Viewer || self.gate.rules().security.protection;
                let permissions = if read_only { EditorPermissions::Read } else { EditorPermissions::Full };
                Ok(EditorSession { username: s.user, permissions })
            }
            _ => Err(RequestError::UnknownSession),
        }
    }

    /// Reads the envelope at `path` (it may be larger than a request line) and applies it.
    async fn deploy(&self, path: String) -> Result<crate::deploy::Report, RequestError> {
        let envelope = match std::fs::read_to_string(&path) {
            Ok(envelope) => envelope,
            Err(source) => return Err(RequestError::ReadEnvelope { path, source }),
        };
        Ok(self.deploy.apply_local(envelope.trim().to_string()).await?)
    }

    async fn token_create(
        &self,
        name: &str,
        lifetime_secs: u64,
        scope: Option<&str>,
    ) -> Result<TokenCreated, RequestError> {
        self.audit.admit(AuditKind::TokenCreated).map_err(RequestError::Refused)?;
        let now = redtether_proto::time::unix_now();
        let (token, record) = self.tokens.create(name, lifetime_secs, scope, now)?;
        let event = AuditEvent::new(AuditKind::TokenCreated, Actor::System, record.name.as_str())
            .with("expires", record.expires)
            .with("scope", record.scope.clone())
            .with("via", "cli");
        if let Err(e) = self.audit.record_or_refuse(event).await {
            // No token that the journal does not know of.
            let _ = self.tokens.revoke(&record.name);
            return Err(RequestError::Refused(e));
        }
        Ok(TokenCreated { token, record: TokenInfo::of(&record, now) })
    }

    async fn token_revoke(&self, name: &str) -> Result<TokenRevoked, RequestError> {
        self.audit.admit(AuditKind::TokenRevoked).map_err(RequestError::Refused)?;
        let record = self.tokens.revoke(name)?;
        let event = AuditEvent::new(AuditKind::TokenRevoked, Actor::System, record.name.as_str()).with("via", "cli");
        self.audit
            .record_or_refuse(event)
            .await
            .map_err(|e| RequestError::RevokedUnrecorded(record.name.clone(), e))?;
        Ok(TokenRevoked { revoked: record.name })
    }
}

impl Handler for DaemonControl {
    type Request = ControlRequest;
    async fn handle(&self, request: ControlRequest) -> ControlResponse {
        match request {
            ControlRequest::Status => ControlResponse::ok(self.status().await),
            ControlRequest::TunnelReload => {
                self.tunnel.reload();
                ControlResponse::ok(TunnelReloaded { reloaded: true })
            }
            ControlRequest::AuditRead { after, limit, kind, since, wait_ms } => {
                answer(self.audit_read(after, limit, kind, since, wait_ms).await)
            }
            ControlRequest::AuditVerify => answer(self.audit.verify().await.map_err(RequestError::from)),
            ControlRequest::Deploy { path } => answer(self.deploy(path).await),
            ControlRequest::RestartNodeRed => {
                answer(self.supervisor.restart().await.map(|pid| NodeRedRestarted { pid }).map_err(RequestError::from))
            }
            ControlRequest::CheckSession { token } => answer(self.check_session(&token)),
            ControlRequest::TokenCreate { name, lifetime_secs, scope } => {
                answer(self.token_create(&name, lifetime_secs, scope.as_deref()).await)
            }
            ControlRequest::TokenList => {
                let now = redtether_proto::time::unix_now();
                ControlResponse::ok(self.tokens.list().iter().map(|t| TokenInfo::of(t, now)).collect::<Vec<_>>())
            }
            ControlRequest::TokenRevoke { name } => answer(self.token_revoke(&name).await),
            ControlRequest::Reload => ControlResponse::ok(self.security.reload().await),
        }
    }
}

fn answer(result: Result<impl serde::Serialize, RequestError>) -> ControlResponse {
    match result {
        Ok(reply) => ControlResponse::ok(reply),
        Err(e) => ControlResponse::error(redtether_host::error_chain(&e)),
    }
}
