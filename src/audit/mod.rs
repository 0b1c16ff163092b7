//! The audit trail: who did what, when — durable before the action is answered, hash-chained,
//! bounded, and forwarded to the platform at least once.
//!
//! Every part of the agent records through an [`Auditor`]. `record` resolves once the event is
//! on disk: one journal thread takes every event waiting, appends them in one sled batch and
//! syncs once (group commit), then answers them all. The journal lives in
//! `<state_dir>/audit/`; one that cannot be opened is moved aside and a fresh one begins with an
//! `audit.reset` event, and if the disk cannot hold one at all the journal runs in memory and
//! says so: the agent never fails to start because of its journal.

mod journal;
pub mod query;
pub mod store;

pub use journal::{Journal, Verification};
pub use redtether_proto::audit::{Actor, AuditEvent, AuditKind, Level, StoredEvent};

use std::path::{Path, PathBuf};
use std::time::SystemTime;
use store::{MemStore, SledStore, Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Events taken into one commit at most.
const MAX_BATCH: usize = 4096;

/// Why the journal could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The journal thread has stopped (the agent is shutting down).
    #[error("the audit journal is closed")]
    Closed,
    /// The store failed (a full disk, for one); the event is not durable.
    #[error("{0}")]
    Store(#[source] std::sync::Arc<StoreError>),
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> Self {
        AuditError::Store(std::sync::Arc::new(e))
    }
}

/// Journal figures for `status` and the platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalStatus {
    pub last_seq: u64,
    /// Highest sequence number the platform acknowledged.
    pub acked: u64,
    pub backlog: u64,
    pub bytes: u64,
    /// The journal could not be kept on disk.
    pub in_memory: bool,
}

enum Request {
    Record(AuditEvent, oneshot::Sender<Result<u64, AuditError>>),
    Read { after: u64, limit: usize, reply: oneshot::Sender<Result<Vec<StoredEvent>, AuditError>> },
    Unforwarded { limit: usize, reply: oneshot::Sender<Result<Vec<StoredEvent>, AuditError>> },
    Ack { seq: u64, reply: oneshot::Sender<Result<u64, AuditError>> },
    Verify { reply: oneshot::Sender<Result<Verification, AuditError>> },
    Status { reply: oneshot::Sender<JournalStatus> },
}

/// A cheap, cloneable handle to the journal.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Request>,
    committed: broadcast::Sender<StoredEvent>,
}

/// The journal thread; join it after every [`Auditor`] is dropped to let it finish.
pub struct JournalThread(std::thread::JoinHandle<()>);

impl JournalThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Auditor {
    /// Opens (or recovers) the journal in `dir` and starts its thread.
    pub fn start(dir: &Path, max_bytes: u64) -> (Auditor, JournalThread) {
        let (journal, notice) = open_or_recover(dir, max_bytes);
        Auditor::spawn(journal, notice)
    }

    /// A journal in memory: for tests and tools that must not touch a disk.
    pub fn in_memory() -> (Auditor, JournalThread) {
        let journal =
            Journal::open(Box::new(MemStore::default()) as Box<dyn Store>, u64::MAX).expect("memory store opens");
        Auditor::spawn(journal, None)
    }

    fn spawn(journal: Journal<Box<dyn Store>>, notice: Option<AuditEvent>) -> (Auditor, JournalThread) {
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        let (committed, _) = broadcast::channel(1024);
        let thread_committed = committed.clone();
        let in_memory = notice.as_ref().is_some_and(|n| n.detail.get("in_memory").is_some());
        let handle = std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || run(journal, rx, thread_committed, notice, in_memory))
            .expect("the journal thread starts");
        (Auditor { tx, committed }, JournalThread(handle))
    }

    /// Records `event`; resolves with its sequence number once it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Request::Record(event, done)).await.map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues `event` without waiting for it to be durable, for events that answer no request.
    /// In order with every other event; if the queue is full it is logged instead.
    pub fn enqueue(&self, event: AuditEvent) {
        let (done, _) = oneshot::channel();
        if let Err(e) = self.tx.try_send(Request::Record(event, done)) {
            let kind = match e.into_inner() {
                Request::Record(event, _) => event.kind.as_str(),
                _ => "",
            };
            tracing::error!(target: "audit", %kind, "audit queue full; event not recorded");
        }
    }

    /// Records `event`, logging instead of failing: for callers that must answer regardless.
    pub async fn record_or_log(&self, event: AuditEvent) {
        let kind = event.kind;
        if let Err(e) = self.record(event).await {
            tracing::error!(target: "audit", %kind, error = %e, "audit event not recorded");
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, AuditError> {
        let (reply, wait) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)
    }

    /// Up to `limit` events after sequence number `after`.
    pub async fn read(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, AuditError> {
        self.ask(|reply| Request::Read { after, limit, reply }).await?
    }

    /// Events the platform has not acknowledged, oldest first: what to send next.
    pub async fn unforwarded(&self, limit: usize) -> Result<Vec<StoredEvent>, AuditError> {
        self.ask(|reply| Request::Unforwarded { limit, reply }).await?
    }

    /// The platform acknowledged everything up to `seq`.
    pub async fn ack(&self, seq: u64) -> Result<u64, AuditError> {
        self.ask(|reply| Request::Ack { seq, reply }).await?
    }

    pub async fn verify(&self) -> Result<Verification, AuditError> {
        self.ask(|reply| Request::Verify { reply }).await?
    }

    pub async fn status(&self) -> Result<JournalStatus, AuditError> {
        self.ask(|reply| Request::Status { reply }).await
    }

    /// Events as they are committed, for `audit tail -f`.
    pub fn subscribe(&self) -> broadcast::Receiver<StoredEvent> {
        self.committed.subscribe()
    }
}

fn run(
    mut journal: Journal<Box<dyn Store>>,
    mut rx: mpsc::Receiver<Request>,
    committed: broadcast::Sender<StoredEvent>,
    notice: Option<AuditEvent>,
    in_memory: bool,
) {
    if let Some(notice) = notice {
        commit(&mut journal, vec![notice], Vec::new(), &committed);
    }
    let mut events = Vec::new();
    let mut replies = Vec::new();
    let mut others = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        // Everything already waiting joins this commit: one sync for all of them.
        while let Some(request) = next.take() {
            match request {
                Request::Record(event, reply) => {
                    events.push(event);
                    replies.push(reply);
                }
                other => others.push(other),
            }
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !events.is_empty() {
            commit(&mut journal, std::mem::take(&mut events), std::mem::take(&mut replies), &committed);
        }
        for request in others.drain(..) {
            serve(&mut journal, request, in_memory);
        }
    }
}

fn commit(
    journal: &mut Journal<Box<dyn Store>>,
    events: Vec<AuditEvent>,
    replies: Vec<oneshot::Sender<Result<u64, AuditError>>>,
    committed: &broadcast::Sender<StoredEvent>,
) {
    match journal.append(events, SystemTime::now()) {
        Ok(stored) => {
            for (reply, event) in replies.into_iter().zip(&stored) {
                let _ = reply.send(Ok(event.seq));
            }
            for event in stored {
                let detail = serde_json::Value::Object(event.detail.clone());
                tracing::info!(target: "audit", seq = event.seq, kind = %event.kind, actor = %event.actor, target_path = %event.target, %detail, "audit");
                let _ = committed.send(event);
            }
        }
        Err(e) => {
            tracing::error!(target: "audit", error = %e, count = replies.len(), "audit events could not be made durable");
            let e = AuditError::from(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn serve(journal: &mut Journal<Box<dyn Store>>, request: Request, in_memory: bool) {
    match request {
        Request::Record(..) => {}
        Request::Read { after, limit, reply } => {
            let _ = reply.send(journal.read(after, limit).map_err(AuditError::from));
        }
        Request::Unforwarded { limit, reply } => {
            let _ = reply.send(journal.unforwarded(limit).map_err(AuditError::from));
        }
        Request::Ack { seq, reply } => {
            let _ = reply.send(journal.ack(seq).map_err(AuditError::from));
        }
        Request::Verify { reply } => {
            let _ = reply.send(journal.verify().map_err(AuditError::from));
        }
        Request::Status { reply } => {
            let m = journal.meta();
            let _ = reply.send(JournalStatus {
                last_seq: m.last_seq,
                acked: m.cursor,
                backlog: journal.backlog(),
                bytes: m.bytes,
                in_memory,
            });
        }
    }
}

impl Store for Box<dyn Store> {
    fn load_meta(&self) -> Result<Option<store::Meta>, StoreError> {
        (**self).load_meta()
    }
    fn commit(&mut self, batch: store::Batch) -> Result<(), StoreError> {
        (**self).commit(batch)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        (**self).sync()
    }
    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        (**self).range(from, limit)
    }
}

/// Opens the journal in `dir`; one that cannot be opened is moved aside (kept for forensics) and
/// replaced by a fresh one. Returns the event that must open the new journal, if any.
pub fn open_or_recover(dir: &Path, max_bytes: u64) -> (Journal<Box<dyn Store>>, Option<AuditEvent>) {
    let open = |dir: &Path| SledStore::open(dir).and_then(|s| Journal::open(Box::new(s) as Box<dyn Store>, max_bytes));
    let error = match open(dir) {
        Ok(journal) => return (journal, None),
        Err(e) => e,
    };
    if let StoreError::Locked { .. } = error {
        // A journal someone else holds open is healthy: moving it aside would hide its events.
        tracing::error!(dir = %dir.display(), error = %error, "the audit journal is in use; keeping audit events in memory until the agent restarts");
        let notice = AuditEvent::new(AuditKind::AuditReset, Actor::System, "audit")
            .with("reason", error.to_string())
            .with("in_memory", true);
        return (in_memory(max_bytes), Some(notice));
    }
    let aside = aside_path(dir);
    tracing::error!(dir = %dir.display(), moved_to = %aside.display(), error = %error, "the audit journal cannot be opened; keeping it aside and starting a new one");
    let moved = std::fs::rename(dir, &aside);
    let notice = AuditEvent::new(AuditKind::AuditReset, Actor::System, "audit")
        .with("reason", error.to_string())
        .with("moved_to", aside.display().to_string());
    if moved.is_ok()
        && let Ok(journal) = open(dir)
    {
        return (journal, Some(notice));
    }
    tracing::error!(dir = %dir.display(), "no journal can be kept on disk; keeping audit events in memory until the agent restarts");
    (in_memory(max_bytes), Some(notice.with("in_memory", true)))
}

fn in_memory(max_bytes: u64) -> Journal<Box<dyn Store>> {
    Journal::open(Box::new(MemStore::default()) as Box<dyn Store>, max_bytes).expect("memory store opens")
}

fn aside_path(dir: &Path) -> PathBuf {
    let stamp = redtether_proto::time::format_seconds(SystemTime::now()).replace(':', "");
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "audit".into());
    dir.with_file_name(format!("{name}.corrupt-{stamp}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_numbered_and_readable_through_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (auditor, thread) = Auditor::start(&dir.path().join("audit"), u64::MAX);
        let mut tail = auditor.subscribe();
        let seqs = futures_join(&auditor, 20).await;
        assert_eq!(seqs.len(), 20);
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(sorted, (1..=20).collect::<Vec<_>>());
        assert_eq!(tail.recv().await.unwrap().seq, 1);
        assert_eq!(auditor.read(0, 100).await.unwrap().len(), 20);
        assert_eq!(auditor.verify().await.unwrap().first_bad, None);
        assert_eq!(auditor.ack(15).await.unwrap(), 15);
        assert_eq!(
            auditor.unforwarded(100).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
            (16..=20).collect::<Vec<_>>()
        );
        let status = auditor.status().await.unwrap();
        assert_eq!((status.last_seq, status.acked, status.backlog), (20, 15, 5));
        drop(auditor);
        drop(tail);
        thread.join();
        // Durable: a new journal on the same directory has them all.
        let (auditor, thread) = Auditor::start(&dir.path().join("audit"), u64::MAX);
        assert_eq!(auditor.status().await.unwrap().last_seq, 20);
        drop(auditor);
        thread.join();
    }

    async fn futures_join(auditor: &Auditor, n: u64) -> Vec<u64> {
        let mut tasks = Vec::new();
        for i in 0..n {
            let a = auditor.clone();
            tasks.push(tokio::spawn(async move {
                a.record(AuditEvent::new(AuditKind::AdminWrite, Actor::System, format!("t{i}"))).await.unwrap()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn an_unopenable_journal_is_moved_aside_and_the_new_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        std::fs::create_dir_all(&path).unwrap();
        // Garbage where sled expects its files.
        std::fs::write(path.join("conf"), b"\xff\xfe not a sled config").unwrap();
        std::fs::write(path.join("db"), vec![0xA5u8; 4096]).unwrap();
        let (auditor, thread) = Auditor::start(&path, u64::MAX);
        let first = auditor.read(0, 1).await.unwrap();
        assert_eq!(first[0].kind, "audit.reset");
        assert_eq!(first[0].seq, 1);
        let moved_to = first[0].detail["moved_to"].as_str().unwrap().to_string();
        assert!(std::path::Path::new(&moved_to).join("db").exists(), "the damaged journal is kept");
        drop(auditor);
        thread.join();
    }

    #[test]
    fn a_journal_held_open_elsewhere_is_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        let (mut held, _) = open_or_recover(&path, u64::MAX);
        held.append(vec![AuditEvent::new(AuditKind::AgentStarted, Actor::System, "agent")], SystemTime::now()).unwrap();
        // A second open in this process while the first still holds sled's lock.
        let (second, notice) = open_or_recover(&path, u64::MAX);
        let notice = notice.expect("running without the journal is announced");
        assert_eq!(notice.kind, AuditKind::AuditReset);
        assert_eq!(notice.detail["in_memory"], true);
        assert!(notice.detail.get("moved_to").is_none());
        drop(second);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("audit")], "nothing was moved aside");
        assert_eq!(held.read(0, 10).unwrap().len(), 1, "the held journal still has its event");
    }
}
