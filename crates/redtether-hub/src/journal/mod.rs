//! The hub's own audit trail: what operators did and what the hub recorded about devices,
//! hash-chained in the device journal's event format, in one append-only file
//! (`<hub state>/audit.jsonl`, one event per line). An event that answers an operator's action
//! is made durable (`fdatasync`) before the action is answered; events nothing waits for
//! (a device connected) are written at once and made durable by the next sync.
//!
//! A plain file rather than a sled tree: `redtether-hub audit` reads it while the hub runs
//! (the hub holds sled), an export is a copy, and a changed byte shows at its event. A crash in
//! the middle of a write leaves an unfinished last line, which is cut off when the hub starts
//! (nothing was answered for it).

pub mod chain;

use chain::Head;
use redtether_proto::audit::{Actor, HubEventKind, Level, NamedEvent, StoredEvent};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use chain::Verification;

/// The journal's file name in the hub's state directory.
pub const FILE: &str = "audit.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("hub audit journal {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether the caller waits for the event to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced before `record` returns: the event answers an action.
    Sync,
    /// Written now, synced with the next durable event or flush.
    Lazy,
}

pub struct HubJournal {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Events that could not be written: each is missing from the trail (the alerts' hub
    /// audit gap).
    failures: std::sync::atomic::AtomicU64,
}

struct Inner {
    file: File,
    head: Head,
    /// Lines written since the last sync.
    unsynced: bool,
}

impl HubJournal {
    /// Opens (or creates) the journal in `dir`, cutting off an unfinished last line.
    pub fn open(dir: &Path) -> Result<HubJournal, JournalError> {
        let path = dir.join(FILE);
        let io = |source| JournalError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let (head, complete) = chain::head(&text);
        // Operators' names and addresses: readable by the hub's user only.
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(io)?;
        if complete < text.len() {
            tracing::warn!(path = %path.display(), bytes = text.len() - complete, "hub audit journal: cutting off an unfinished last line");
            file.set_len(complete as u64).map_err(io)?;
        }
        Ok(HubJournal { inner: Mutex::new(Inner { file, head, unsynced: false }), path, failures: Default::default() })
    }

    /// Seals and appends one event.
    pub fn record(
        &self,
        kind: HubEventKind,
        actor: Actor,
        target: &str,
        detail: serde_json::Value,
        durability: Durability,
    ) -> Result<StoredEvent, JournalError> {
        let detail = match detail {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => serde_json::Map::from_iter([("value".to_string(), other)]),
        };
        let event =
            NamedEvent { kind: kind.as_str(), actor, target: target.to_string(), level: Level::Instance, detail };
        let io = |source| JournalError::Io { path: self.path.clone(), source };
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = inner.head.last_seq + 1;
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let (stored, _) =
            StoredEvent::seal_named(event, seq, uuid::Uuid::now_v7().to_string(), ts, &inner.head.last_hash);
        let mut line = serde_json::to_vec(&stored).expect("an event always encodes");
        line.push(b'\n');
        // One write of the whole line: a reader never sees half of it unless the hub died.
        let failed = |e| {
            self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            io(e)
        };
        inner.file.write_all(&line).map_err(failed)?;
        inner.unsynced = true;
        if durability == Durability::Sync {
            inner.file.sync_data().map_err(failed)?;
            inner.unsynced = false;
        }
        inner.head = Head { last_seq: seq, last_hash: stored.hash_bytes() };
        Ok(stored)
    }

    /// Makes every event written so far durable.
    pub fn sync(&self) -> Result<(), JournalError> {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.unsynced {
            inner.file.sync_data().map_err(|source| JournalError::Io { path: self.path.clone(), source })?;
            inner.unsynced = false;
        }
        Ok(())
    }

    /// How many events could not be written since the hub started.
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The sequence number of the newest event.
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).head.last_seq
    }
}

/// Reads a journal file (the hub may be running and appending): its complete lines.
pub fn read(dir: &Path) -> Result<Vec<u8>, JournalError> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(JournalError::Io { path, source }),
    }
}

/// The events of a journal's text, oldest first, skipping lines that cannot be read (verify
/// names those).
pub fn events(text: &[u8]) -> impl Iterator<Item = StoredEvent> + '_ {
    chain::complete_lines(text).filter_map(|line| serde_json::from_slice(line).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_chain_across_reopening_and_an_unfinished_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = HubJournal::open(dir.path()).unwrap();
            j.record(
                HubEventKind::OperatorAdded,
                Actor::System,
                "operator:ann",
                json!({"role": "owner"}),
                Durability::Sync,
            )
            .unwrap();
            j.record(HubEventKind::DeviceConnected, Actor::System, "pump-1", json!({}), Durability::Lazy).unwrap();
            j.sync().unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        file.write_all(b"{\"seq\":3,").unwrap();
        drop(file);
        let j = HubJournal::open(dir.path()).unwrap();
        assert_eq!(j.last_seq(), 2);
        let third =
            j.record(HubEventKind::OperatorLogin, Actor::user("ann"), "hub", json!({}), Durability::Sync).unwrap();
        assert_eq!(third.seq, 3);
        let text = read(dir.path()).unwrap();
        let v = chain::verify(&text);
        assert_eq!((v.checked, v.first_bad), (3, None));
        let kinds: Vec<String> = events(&text).map(|e| e.kind).collect();
        assert_eq!(kinds, ["operator.added", "device.connected", "operator.login"]);
    }
}
