//! The audit interface: every security-relevant event of the agent goes through [`Auditor`].
//!
//! `record` resolves once the event is stored; callers await it before they answer the action
//! the event records (a 401 leaves only after its `auth.failed` is recorded). Until the journal
//! is durable the store is the log (target `audit`), so "stored" means "logged".

mod event;

pub use event::{Actor, AuditEvent, Level};

use tokio::sync::{mpsc, oneshot};

/// Why an event could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The journal task has stopped (the agent is shutting down).
    #[error("the audit journal is closed")]
    Closed,
}

type Pending = (AuditEvent, oneshot::Sender<Result<(), AuditError>>);

/// A cheap, cloneable handle to the journal.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Pending>,
}

impl Auditor {
    /// Records `event`; resolves when it is stored.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx.send((event, done)).await.map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)?
    }

    /// Records `event`, logging instead of failing: for callers that must answer regardless.
    pub async fn record_or_log(&self, event: AuditEvent) {
        let kind = event.kind.clone();
        if let Err(e) = self.record(event).await {
            tracing::error!(target: "audit", %kind, error = %e, "audit event not recorded");
        }
    }

    /// An auditor whose events go to the log, with the task that writes them.
    pub fn to_log() -> (Auditor, impl std::future::Future<Output = ()> + Send) {
        let (tx, mut rx) = mpsc::channel::<Pending>(1024);
        let task = async move {
            while let Some((event, done)) = rx.recv().await {
                let detail = serde_json::Value::Object(event.detail.clone());
                tracing::info!(target: "audit", kind = %event.kind, actor = %event.actor, target_path = %event.target, %detail, "audit");
                let _ = done.send(Ok(()));
            }
        };
        (Auditor { tx }, task)
    }
}
