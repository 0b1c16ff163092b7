//! The audit trail: who did what, when — durable before the action is answered, hash-chained,
//! bounded, and forwarded to the platform at least once.
//!
//! Every part of the agent records through an [`Auditor`]. `record` resolves once the event is
//! on disk: one journal thread takes every event waiting, appends them in one sled batch and
//! syncs once (group commit), then answers them all. The journal lives in
//! `<state_dir>/audit/`; one that cannot be opened is moved aside and a fresh one begins with an
//! `audit.reset` event, and if the disk cannot hold one at all the journal runs in memory and
//! says so: the agent never fails to start because of its journal.
//!
//! When the journal cannot make events durable (a full disk), it is `failing` ([`health`]): it
//! answers every event "not recorded" at once, counts what it missed, and retries on its own
//! until a retry's `audit.gap` event is durable. Meanwhile callers decide with
//! [`Auditor::admit`] and [`Auditor::record_or_refuse`] whether an action that must leave an
//! event may go ahead (`[audit] on_failure`); a full disk at start is the same outage, not a
//! damaged journal.

pub mod health;
mod journal;
pub mod query;
pub mod store;
mod wal;

pub use health::{HealthView, JournalState, OnFailure};
pub use journal::{Journal, Verification};
pub use redtether_proto::audit::{Actor, AuditEvent, AuditKind, Level, StoredEvent};

use health::Health;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};
use store::{MemStore, SledStore, Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

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
    /// The journal is failing: nothing is recorded until it has recovered.
    #[error("the audit journal cannot make events durable (failing since {since}: {error})")]
    Unavailable { since: String, error: String },
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> Self {
        AuditError::Store(std::sync::Arc::new(e))
    }
}

impl AuditError {
    fn unavailable(view: &HealthView) -> AuditError {
        AuditError::Unavailable {
            since: view.failing_since.clone().unwrap_or_default(),
            error: view.last_error.clone().unwrap_or_default(),
        }
    }
}

/// Journal figures for `status` and the platform.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct JournalStatus {
    pub last_seq: u64,
    /// Highest sequence number the platform acknowledged.
    pub acked: u64,
    pub backlog: u64,
    pub bytes: u64,
    /// The journal could not be kept on disk.
    pub in_memory: bool,
    /// `ok`, or `failing` while events cannot be made durable.
    #[serde(default)]
    pub state: JournalState,
    /// While failing: since when (RFC 3339) ...
    #[serde(default)]
    pub failing_since: Option<String>,
    /// ... and the most recent error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// While failing: failed authentications not recorded so far (the `audit.gap` event will
    /// count them) ...
    #[serde(default)]
    pub failed_logins: u64,
    /// ... and actions refused.
    #[serde(default)]
    pub refused: u64,
    /// `[audit] on_failure`.
    #[serde(default)]
    pub on_failure: OnFailure,
}

enum Request {
    Record(AuditEvent, oneshot::Sender<Result<u64, AuditError>>),
    /// An action that would have left an event of this kind was refused (counted for the gap).
    Refused(AuditKind),
    Read {
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<StoredEvent>, AuditError>>,
    },
    Unforwarded {
        limit: usize,
        reply: oneshot::Sender<Result<Vec<StoredEvent>, AuditError>>,
    },
    Ack {
        seq: u64,
        reply: oneshot::Sender<Result<u64, AuditError>>,
    },
    Verify {
        reply: oneshot::Sender<Result<Verification, AuditError>>,
    },
    Status {
        reply: oneshot::Sender<JournalStatus>,
    },
}

/// A cheap, cloneable handle to the journal.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Request>,
    committed: broadcast::Sender<StoredEvent>,
    health: watch::Receiver<HealthView>,
    on_failure: OnFailure,
}

/// The journal thread; join it after every [`Auditor`] is dropped to let it finish.
pub struct JournalThread(std::thread::JoinHandle<()>);

impl JournalThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Auditor {
    /// Opens (or recovers) the journal in `dir` and starts its thread; `on_failure` is what
    /// [`Auditor::admit`] and [`Auditor::record_or_refuse`] do while it cannot persist.
    pub fn start(dir: &Path, max_bytes: u64, on_failure: OnFailure) -> (Auditor, JournalThread) {
        Auditor::spawn(open_or_recover(dir, max_bytes), on_failure)
    }

    /// A journal in memory: for tests and tools that must not touch a disk.
    pub fn in_memory() -> (Auditor, JournalThread) {
        let opening = Opening { journal: in_memory(u64::MAX), notice: None, in_memory: false, unavailable: None };
        Auditor::spawn(opening, OnFailure::Deny)
    }

    fn spawn(opening: Opening, on_failure: OnFailure) -> (Auditor, JournalThread) {
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        let (committed, _) = broadcast::channel(1024);
        let mut health = Health::default();
        if let Some(error) = &opening.unavailable {
            health.write_failed(&error.to_string(), SystemTime::now(), Instant::now());
        }
        let (published, health_rx) = watch::channel(health.view());
        let worker = Worker {
            journal: opening.journal,
            committed: committed.clone(),
            health,
            published,
            in_memory: opening.in_memory,
            on_failure,
        };
        let notice = opening.notice;
        let handle = std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || worker.run(rx, notice))
            .expect("the journal thread starts");
        (Auditor { tx, committed, health: health_rx, on_failure }, JournalThread(handle))
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

    /// Records `event`, logging instead of failing: for what has happened whatever the journal
    /// says (Node-RED exited, the tunnel went down). An event that could not be recorded is
    /// counted in the journal's next `audit.gap` event.
    pub async fn record_or_log(&self, event: AuditEvent) {
        let kind = event.kind;
        match self.record(event).await {
            Ok(_) => {}
            // The journal logged the outage once; a line per event would flood the log (which
            // may well live on the same full disk).
            Err(e @ AuditError::Unavailable { .. }) => {
                tracing::debug!(target: "audit", %kind, error = %e, "audit event not recorded")
            }
            Err(e) => tracing::error!(target: "audit", %kind, error = %e, "audit event not recorded"),
        }
    }

    /// The journal's state now: what the gate looks at before an action.
    pub fn state(&self) -> JournalState {
        self.health.borrow().state
    }

    /// Asked before an action that must leave an event of `kind`: `Err` while the journal
    /// cannot record it and `on_failure = "deny"` — refuse the action then (the refusal is
    /// counted in the `audit.gap` event). Without I/O: a field read.
    pub fn admit(&self, kind: AuditKind) -> Result<(), AuditError> {
        let refusal = {
            let view = self.health.borrow();
            if health::admits(self.on_failure, view.state) {
                return Ok(());
            }
            AuditError::unavailable(&view)
        };
        // Only a count is lost if the queue is full.
        let _ = self.tx.try_send(Request::Refused(kind));
        Err(refusal)
    }

    /// Records the event of an action that is about to be answered. `Ok` once it is durable —
    /// or, with `on_failure = "allow"`, also when it could not be (logged, and counted in the
    /// `audit.gap` event). `Err`: answer that the action is refused, not that it was done.
    pub async fn record_or_refuse(&self, event: AuditEvent) -> Result<(), AuditError> {
        let kind = event.kind;
        let result = self.record(event).await;
        if let Err(e) = &result {
            // As in `record_or_log`: one line per event only for a failure the journal did not
            // already announce.
            let announced = matches!(e, AuditError::Unavailable { .. });
            match self.on_failure {
                OnFailure::Allow if announced => {
                    tracing::debug!(target: "audit", %kind, error = %e, "audit event not recorded; answered anyway (on_failure = allow)")
                }
                OnFailure::Allow => {
                    tracing::error!(target: "audit", %kind, error = %e, "audit event not recorded; answered anyway (on_failure = allow)")
                }
                OnFailure::Deny if announced => {
                    tracing::debug!(target: "audit", %kind, error = %e, "audit event not recorded; the action is refused (on_failure = deny)")
                }
                OnFailure::Deny => {
                    tracing::warn!(target: "audit", %kind, error = %e, "audit event not recorded; the action is refused (on_failure = deny)")
                }
            }
        }
        match result {
            Ok(_) => Ok(()),
            Err(_) if self.on_failure == OnFailure::Allow => Ok(()),
            Err(e) => Err(e),
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

/// An event's detail as JSON, written only when the log line is (not copied for every event
/// the journal seals, as it was when it had to become a `serde_json::Value` first).
struct JsonDetail<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl std::fmt::Display for JsonDetail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self.0).map_err(|_| std::fmt::Error)?)
    }
}

/// The journal thread's state: the journal, its health, and where commits are announced.
struct Worker {
    journal: Journal<Box<dyn Store>>,
    committed: broadcast::Sender<StoredEvent>,
    health: Health,
    /// What [`Auditor::state`] and [`Auditor::admit`] read.
    published: watch::Sender<HealthView>,
    in_memory: bool,
    on_failure: OnFailure,
}

impl Worker {
    fn run(self, rx: mpsc::Receiver<Request>, notice: Option<AuditEvent>) {
        // A runtime of the thread's own, only for waiting on requests and the retry timer at once;
        // the journal's work itself blocks this thread, as it always has.
        match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => runtime.block_on(self.serve_all(rx, notice)),
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "the audit journal cannot start its timer; no events are recorded")
            }
        }
    }

    async fn serve_all(mut self, mut rx: mpsc::Receiver<Request>, notice: Option<AuditEvent>) {
        if let Some(notice) = notice {
            self.commit(vec![notice], Vec::new());
        }
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let mut others = Vec::new();
        loop {
            let first = match self.health.retry_at() {
                Some(at) => tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(at.into()) => {
                        self.retry();
                        continue;
                    }
                    request = rx.recv() => request,
                },
                None => rx.recv().await,
            };
            let Some(first) = first else { break };
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
                self.commit(std::mem::take(&mut events), std::mem::take(&mut replies));
            }
            for request in others.drain(..) {
                self.serve(request);
            }
        }
        // Stopping during an outage: one last try to record what it cost, else at least the log
        // has it.
        if self.health.state() == JournalState::Failing {
            self.retry();
            if let Some(gap) = self.health.gap(SystemTime::now()) {
                let detail = serde_json::Value::Object(gap.detail);
                tracing::error!(target: "audit", %detail, "stopping while the audit journal cannot persist; the audit.gap event could not be recorded");
            }
        }
    }

    fn publish(&self) {
        self.published.send_replace(self.health.view());
    }

    fn commit(&mut self, events: Vec<AuditEvent>, replies: Vec<oneshot::Sender<Result<u64, AuditError>>>) {
        let now = SystemTime::now();
        if self.health.state() == JournalState::Failing {
            // No I/O while failing: the retry timer finds out when the disk takes writes again.
            let refusal = AuditError::unavailable(&self.health.view());
            for event in &events {
                self.health.not_recorded(event.kind, now);
            }
            self.publish();
            for reply in replies {
                let _ = reply.send(Err(refusal.clone()));
            }
            return;
        }
        let kinds: Vec<AuditKind> = events.iter().map(|e| e.kind).collect();
        let before = self.journal.meta().last_seq;
        match self.journal.append(events, now) {
            Ok(stored) => {
                for (reply, event) in replies.into_iter().zip(&stored) {
                    let _ = reply.send(Ok(event.seq));
                }
                self.announce(stored);
                // Once answered: the producers send their next events meanwhile.
                self.journal.settle();
            }
            Err(e) => {
                tracing::error!(target: "audit", error = %e, count = replies.len(), "audit events could not be made durable; the journal is failing and retries on its own");
                self.health.write_failed(&e.to_string(), now, Instant::now());
                // A batch the reopened store shows anyway is in the journal, not missing: it is
                // not counted as unrecorded (only not acknowledged, as it is not known durable).
                if self.journal.meta().last_seq == before {
                    for kind in kinds {
                        self.health.not_recorded(kind, now);
                    }
                }
                // Published before anyone hears of the failure: a caller told "not recorded"
                // finds the journal failing when it next asks.
                self.publish();
                let e = AuditError::from(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// While failing: commits the `audit.gap` event that closes the outage. It is the probe:
    /// once it is durable, the journal persists again.
    fn retry(&mut self) {
        let now = SystemTime::now();
        let Some(gap) = self.health.gap(now) else { return };
        let before = self.journal.meta().last_seq;
        match self.journal.append(vec![gap], now) {
            Ok(stored) => {
                self.health.recovered();
                tracing::warn!(target: "audit", "the audit journal persists again");
                self.announce(stored);
                self.journal.settle();
            }
            Err(e) => {
                if self.journal.meta().last_seq != before {
                    // The gap reached the journal without being known durable: what it counts is
                    // in the journal, so the next gap counts from here.
                    self.health.recovered();
                }
                tracing::debug!(target: "audit", error = %e, "the audit journal still cannot persist");
                self.health.write_failed(&e.to_string(), now, Instant::now());
            }
        }
        self.publish();
    }

    fn announce(&self, stored: Vec<StoredEvent>) {
        for event in stored {
            let detail = JsonDetail(&event.detail);
            tracing::info!(target: "audit", seq = event.seq, kind = %event.kind, actor = %event.actor, target_path = %event.target, %detail, "audit");
            // Without a listener (`audit tail -f`) there is nothing to hand it to.
            if self.committed.receiver_count() > 0 {
                let _ = self.committed.send(event);
            }
        }
    }

    fn serve(&mut self, request: Request) {
        match request {
            Request::Record(..) => {}
            Request::Refused(kind) => {
                self.health.refused(kind);
                self.publish();
            }
            Request::Read { after, limit, reply } => {
                let _ = reply.send(self.readable().and_then(|j| j.read(after, limit)).map_err(AuditError::from));
            }
            Request::Unforwarded { limit, reply } => {
                let _ = reply.send(self.readable().and_then(|j| j.unforwarded(limit)).map_err(AuditError::from));
            }
            // An acknowledgement is a write: while failing it waits (the hub sends it again).
            Request::Ack { reply, .. } if self.health.state() == JournalState::Failing => {
                let _ = reply.send(Err(AuditError::unavailable(&self.health.view())));
            }
            Request::Ack { seq, reply } => {
                let result = self.journal.ack(seq);
                if let Err(e) = &result {
                    tracing::error!(target: "audit", error = %e, "the hub's acknowledgement could not be made durable; the journal is failing and retries on its own");
                    self.health.write_failed(&e.to_string(), SystemTime::now(), Instant::now());
                    self.publish();
                }
                let _ = reply.send(result.map_err(AuditError::from));
            }
            Request::Verify { reply } => {
                let _ = reply.send(self.readable().and_then(|j| j.verify()).map_err(AuditError::from));
            }
            Request::Status { reply } => {
                let m = self.journal.meta();
                let view = self.health.view();
                let _ = reply.send(JournalStatus {
                    last_seq: m.last_seq,
                    acked: m.cursor,
                    backlog: self.journal.backlog(),
                    bytes: m.bytes,
                    in_memory: self.in_memory,
                    state: view.state,
                    failing_since: view.failing_since,
                    last_error: view.last_error,
                    failed_logins: view.failed_logins,
                    refused: view.refused,
                    on_failure: self.on_failure,
                });
            }
        }
    }

    /// The journal, opened again first if a failure left it closed (reads work during an outage
    /// once the store opens, even before writes do).
    fn readable(&mut self) -> Result<&mut Journal<Box<dyn Store>>, StoreError> {
        self.journal.ensure_open()?;
        Ok(&mut self.journal)
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
    fn settle(&mut self) {
        (**self).settle()
    }
    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        (**self).range(from, limit)
    }
    fn reopen(&mut self) -> Result<(), StoreError> {
        (**self).reopen()
    }
}

/// How the journal starts.
pub struct Opening {
    pub journal: Journal<Box<dyn Store>>,
    /// The event that must open a new journal (`audit.reset`), if one was begun.
    pub notice: Option<AuditEvent>,
    /// The journal is kept in memory until the agent restarts.
    pub in_memory: bool,
    /// The journal on disk could not be opened for want of space: it starts failing and is
    /// opened by the first retry that finds room.
    pub unavailable: Option<StoreError>,
}

/// Opens the journal in `dir`; one that cannot be opened is moved aside (kept for forensics) and
/// replaced by a fresh one — except on a full disk, where nothing is wrong with it: it is left
/// in place and opened once there is room.
pub fn open_or_recover(dir: &Path, max_bytes: u64) -> Opening {
    let open = |dir: &Path| SledStore::open(dir).and_then(|s| Journal::open(Box::new(s) as Box<dyn Store>, max_bytes));
    let error = match open(dir) {
        Ok(journal) => return Opening { journal, notice: None, in_memory: false, unavailable: None },
        Err(e) => e,
    };
    if let StoreError::Locked { .. } = error {
        // A journal someone else holds open is healthy: moving it aside would hide its events.
        tracing::error!(dir = %dir.display(), error = %error, "the audit journal is in use; keeping audit events in memory until the agent restarts");
        let notice = AuditEvent::new(AuditKind::AuditReset, Actor::System, "audit")
            .with("reason", error.to_string())
            .with("in_memory", true);
        return Opening { journal: in_memory(max_bytes), notice: Some(notice), in_memory: true, unavailable: None };
    }
    if error.is_disk_full() {
        // sled writes as it opens, so a full disk refuses even a healthy journal.
        tracing::error!(dir = %dir.display(), error = %error, "the audit journal cannot be opened: the disk is full; it is opened as soon as there is room");
        let journal = Journal::unopened(Box::new(SledStore::closed(dir)) as Box<dyn Store>, max_bytes);
        return Opening { journal, notice: None, in_memory: false, unavailable: Some(error) };
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
        return Opening { journal, notice: Some(notice), in_memory: false, unavailable: None };
    }
    tracing::error!(dir = %dir.display(), "no journal can be kept on disk; keeping audit events in memory until the agent restarts");
    Opening {
        journal: in_memory(max_bytes),
        notice: Some(notice.with("in_memory", true)),
        in_memory: true,
        unavailable: None,
    }
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
        let (auditor, thread) = Auditor::start(&dir.path().join("audit"), u64::MAX, OnFailure::Deny);
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
        let (auditor, thread) = Auditor::start(&dir.path().join("audit"), u64::MAX, OnFailure::Deny);
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

    fn on_disk(on_failure: OnFailure) -> (Auditor, JournalThread, store::full_disk::Switches) {
        let (disk, switches) = store::full_disk::Disk::new();
        let journal = Journal::open(Box::new(disk) as Box<dyn Store>, u64::MAX).unwrap();
        let (auditor, thread) =
            Auditor::spawn(Opening { journal, notice: None, in_memory: false, unavailable: None }, on_failure);
        (auditor, thread, switches)
    }

    fn failed_login(n: u64) -> AuditEvent {
        AuditEvent::new(AuditKind::AuthFailed, Actor::System, "/device-editor/auth/token").with("n", n)
    }

    async fn wait_state(auditor: &Auditor, state: JournalState) {
        for _ in 0..200 {
            if auditor.state() == state {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the journal did not become {state:?}");
    }

    #[tokio::test]
    async fn an_outage_refuses_at_once_counts_what_it_missed_and_ends_with_a_gap() {
        use std::sync::atomic::Ordering::SeqCst;
        let (auditor, thread, disk) = on_disk(OnFailure::Deny);
        assert_eq!(auditor.record(failed_login(1)).await.unwrap(), 1);
        auditor.admit(AuditKind::AdminWrite).expect("a healthy journal admits");

        disk.full.store(true, SeqCst);
        let write = AuditEvent::new(AuditKind::AdminWrite, Actor::user("ann"), "/device-editor/flows");
        assert!(matches!(auditor.record(failed_login(2)).await, Err(AuditError::Store(_))), "the commit that met it");
        assert_eq!(auditor.state(), JournalState::Failing);
        assert!(matches!(auditor.record(failed_login(3)).await, Err(AuditError::Unavailable { .. })), "then no I/O");
        assert!(auditor.admit(AuditKind::AdminWrite).is_err(), "deny: the action is refused before it happens");
        assert!(auditor.record_or_refuse(write.clone()).await.is_err(), "deny: not answered as done");
        auditor.record_or_log(AuditEvent::new(AuditKind::NodeRedExited, Actor::System, "node-red")).await;
        let status = auditor.status().await.unwrap();
        assert_eq!((status.state, status.failed_logins, status.refused), (JournalState::Failing, 2, 1));
        assert!(status.last_error.unwrap().contains("No space left"), "the error is shown");
        tokio::time::sleep(health::RETRY_MIN * 3).await;
        assert_eq!(auditor.state(), JournalState::Failing, "retries fail while the disk is full");

        disk.full.store(false, SeqCst);
        wait_state(&auditor, JournalState::Ok).await;
        let events = auditor.read(0, 10).await.unwrap();
        assert_eq!(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["auth.failed", "audit.gap"]);
        let gap = &events[1].detail;
        assert_eq!(gap["failed_logins"], 2);
        assert!(gap["first"].is_string() && gap["last"].is_string() && gap["since"].is_string());
        assert_eq!(gap["refused"], serde_json::json!({"admin.write": 1}));
        assert_eq!(gap["unrecorded"], serde_json::json!({"admin.write": 1, "nodered.exited": 1}));
        assert_eq!(auditor.record(failed_login(4)).await.unwrap(), 3, "numbered on from the gap");
        auditor.admit(AuditKind::AdminWrite).expect("admitted again");
        assert_eq!(auditor.status().await.unwrap().failed_logins, 0, "the counts went into the gap");
        assert_eq!(auditor.verify().await.unwrap().first_bad, None);
        drop(auditor);
        thread.join();
    }

    #[tokio::test]
    async fn allow_answers_actions_anyway_and_still_counts_them() {
        use std::sync::atomic::Ordering::SeqCst;
        let (auditor, thread, disk) = on_disk(OnFailure::Allow);
        disk.full.store(true, SeqCst);
        let write = AuditEvent::new(AuditKind::AdminWrite, Actor::user("ann"), "/device-editor/flows");
        assert!(auditor.record_or_refuse(write.clone()).await.is_ok(), "allow: answered");
        assert_eq!(auditor.state(), JournalState::Failing);
        assert!(auditor.admit(AuditKind::AdminWrite).is_ok(), "allow: admitted while failing");
        assert!(auditor.record_or_refuse(write).await.is_ok());
        disk.full.store(false, SeqCst);
        wait_state(&auditor, JournalState::Ok).await;
        let gap = auditor.read(0, 10).await.unwrap().remove(0);
        assert_eq!(gap.kind, "audit.gap");
        assert_eq!(gap.detail["unrecorded"], serde_json::json!({"admin.write": 2}));
        assert_eq!(gap.detail["refused"], serde_json::json!({}));
        drop(auditor);
        thread.join();
    }

    #[tokio::test]
    async fn an_unopenable_journal_is_moved_aside_and_the_new_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        std::fs::create_dir_all(&path).unwrap();
        // Garbage where sled expects its files.
        std::fs::write(path.join("conf"), b"\xff\xfe not a sled config").unwrap();
        std::fs::write(path.join("db"), vec![0xA5u8; 4096]).unwrap();
        let (auditor, thread) = Auditor::start(&path, u64::MAX, OnFailure::Deny);
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
        let mut held = open_or_recover(&path, u64::MAX).journal;
        held.append(vec![AuditEvent::new(AuditKind::AgentStarted, Actor::System, "agent")], SystemTime::now()).unwrap();
        // A second open in this process while the first still holds sled's lock.
        let second = open_or_recover(&path, u64::MAX);
        assert!(second.in_memory);
        let notice = second.notice.clone().expect("running without the journal is announced");
        assert_eq!(notice.kind, AuditKind::AuditReset);
        assert_eq!(notice.detail["in_memory"], true);
        assert!(notice.detail.get("moved_to").is_none());
        drop(second);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("audit")], "nothing was moved aside");
        assert_eq!(held.read(0, 10).unwrap().len(), 1, "the held journal still has its event");
    }
}
