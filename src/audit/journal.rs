//! The journal's logic, over any [`Store`]: sequence numbers and the hash chain, appends that
//! are durable when they return, the size bound with its pruning policy, the forwarding cursor,
//! and verification.
//!
//! Bound: when the records exceed `max_bytes`, the oldest go first until they are under 90 % of
//! it. Records the platform acknowledged are always the oldest, so they go before unforwarded
//! ones; if unforwarded ones must go too, an `audit.dropped` event records how many and which
//! sequence numbers, in the same commit. Records of the append being made are never pruned by it.
//!
//! A failed write changes nothing in memory: the bookkeeping (sequence number, head hash, bytes,
//! cursor) moves only once a batch is durable. After a failure the store is opened again and its
//! bookkeeping taken as the truth, so the next record follows what the disk holds, never a batch
//! that is not there (see `store` for why a failed sled handle cannot be trusted).

use super::store::{Batch, Meta, Store, StoreError};
use redtether_proto::audit::{Actor, AuditEvent, AuditKind, GENESIS, RecordFault, StoredEvent, hash_from_hex};
use std::time::SystemTime;

/// Bytes charged per record beyond its value (key and index overhead, roughly).
const RECORD_OVERHEAD: u64 = 16;
/// Records read per step when pruning or verifying.
const CHUNK: usize = 512;

pub struct Journal<S: Store> {
    store: S,
    meta: Meta,
    max_bytes: u64,
    /// The store must be opened again (and `meta` read from it) before it is written: a write
    /// failed and opening it again failed too, or it was never opened.
    stale: bool,
}

/// The result of checking the chain; also the control socket's answer to `audit_verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verification {
    /// Records checked.
    pub checked: u64,
    /// First and last sequence number present.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first record that does not hold up, and why: `[seq, reason]` in JSON.
    pub first_bad: Option<(u64, String)>,
}

impl<S: Store> Journal<S> {
    pub fn open(store: S, max_bytes: u64) -> Result<Self, StoreError> {
        let meta = store.load_meta()?.unwrap_or_else(empty_meta);
        Ok(Journal { store, meta, max_bytes, stale: false })
    }

    /// A journal on a store that could not be opened yet (a full disk at start): its first write
    /// opens the store and reads its bookkeeping first.
    pub fn unopened(store: S, max_bytes: u64) -> Self {
        Journal { store, meta: empty_meta(), max_bytes, stale: true }
    }

    /// Opens the store again and takes its bookkeeping as the truth.
    fn reload(&mut self) -> Result<(), StoreError> {
        self.stale = true;
        self.store.reopen()?;
        self.meta = self.store.load_meta()?.unwrap_or_else(empty_meta);
        self.stale = false;
        Ok(())
    }

    /// Opens the store if a failure left it closed or unread (before reading through it).
    pub fn ensure_open(&mut self) -> Result<(), StoreError> {
        if self.stale { self.reload() } else { Ok(()) }
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The store, for inspection.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back (to reopen it, or to simulate a power cut on it).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Records not yet acknowledged by the platform.
    pub fn backlog(&self) -> u64 {
        self.meta.last_seq - self.meta.cursor.max(self.meta.checkpoint_seq)
    }

    /// Appends `events` and makes them durable; returns what was stored, in order (with an
    /// `audit.dropped` record after them if the bound dropped unforwarded records).
    pub fn append(&mut self, events: Vec<AuditEvent>, now: SystemTime) -> Result<Vec<StoredEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_open()?;
        // Pruning reads the store: it must show the last batch.
        self.store.settle();
        let mut meta = self.meta.clone();
        let mut put = Vec::with_capacity(events.len() + 1);
        let mut stored = Vec::with_capacity(events.len() + 1);
        let first_new = meta.last_seq + 1;
        for event in events {
            seal_into(event, now, &mut meta, &mut put, &mut stored);
        }
        let mut remove = Vec::new();
        if meta.bytes > self.max_bytes {
            let dropped = self.prune(&mut meta, first_new, &mut remove).inspect_err(|_| self.stale = true)?;
            if let Some((first, last)) = dropped {
                let marker = AuditEvent::new(AuditKind::AuditDropped, Actor::System, "audit")
                    .with("count", last - first + 1)
                    .with("first_seq", first)
                    .with("last_seq", last)
                    .with("reason", "the journal reached audit.max_bytes before these were forwarded");
                seal_into(marker, now, &mut meta, &mut put, &mut stored);
            }
        }
        self.write(Batch { put, remove, meta })?;
        Ok(stored)
    }

    /// Commits and syncs `batch`; only then does the journal take its bookkeeping. If that
    /// fails, the store is opened again and what it holds is the truth: usually the state before
    /// the batch (sled writes a batch whole or not at all). A batch that did reach the disk before
    /// the failure is made durable by syncing the new handle; if that fails too, it stays in the
    /// journal but is reported as not durable (it becomes durable with the next successful sync).
    fn write(&mut self, batch: Batch) -> Result<(), StoreError> {
        let meta = batch.meta.clone();
        let error = match self.store.commit(batch).and_then(|()| self.store.sync()) {
            Ok(()) => {
                self.meta = meta;
                return Ok(());
            }
            Err(e) => e,
        };
        if self.reload().is_ok() && self.meta == meta {
            if self.store.sync().is_ok() {
                return Ok(());
            }
            // The new handle failed to write as well: it is poisoned in turn.
            self.stale = true;
        }
        Err(error)
    }

    /// Removes the oldest records older than `first_new` until under 90 % of the bound. Returns
    /// the range of unforwarded records that had to go.
    fn prune(&self, meta: &mut Meta, first_new: u64, remove: &mut Vec<u64>) -> Result<Option<(u64, u64)>, StoreError> {
        let target = self.max_bytes / 10 * 9;
        let mut dropped: Option<(u64, u64)> = None;
        let mut from = meta.checkpoint_seq + 1;
        while meta.bytes > target && from < first_new {
            let chunk = self.store.range(from, CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            for (seq, value) in chunk {
                if seq >= first_new || meta.bytes <= target {
                    return Ok(dropped);
                }
                remove.push(seq);
                meta.bytes = meta.bytes.saturating_sub(value.len() as u64 + RECORD_OVERHEAD);
                meta.checkpoint_seq = seq;
                meta.checkpoint_hash = hex::encode(value.get(..32).unwrap_or(&GENESIS));
                if seq > meta.cursor {
                    dropped = Some((dropped.map_or(seq, |(first, _)| first), seq));
                }
                from = seq + 1;
            }
        }
        Ok(dropped)
    }

    /// Lets the store take the last commit in after it was answered ([`Store::settle`]). Reads
    /// do it first themselves.
    pub fn settle(&mut self) {
        self.store.settle();
    }

    /// Records the platform's acknowledgement of everything up to `seq`.
    pub fn ack(&mut self, seq: u64) -> Result<u64, StoreError> {
        self.ensure_open()?;
        let seq = seq.min(self.meta.last_seq);
        if seq <= self.meta.cursor {
            return Ok(self.meta.cursor);
        }
        let mut meta = self.meta.clone();
        meta.cursor = seq;
        self.write(Batch { put: Vec::new(), remove: Vec::new(), meta })?;
        Ok(seq)
    }

    /// Up to `limit` records after sequence number `after`.
    pub fn read(&mut self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.store.settle();
        Ok(self
            .store
            .range(after.saturating_add(1), limit)?
            .into_iter()
            .filter_map(|(_, v)| StoredEvent::decode(&v))
            .collect())
    }

    /// Records the platform has not acknowledged yet, oldest first.
    pub fn unforwarded(&mut self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(self.meta.cursor, limit)
    }

    /// Recomputes the chain from the checkpoint to the newest record.
    pub fn verify(&mut self) -> Result<Verification, StoreError> {
        self.store.settle();
        let mut expected_seq = self.meta.checkpoint_seq + 1;
        let mut prev = hash_from_hex(&self.meta.checkpoint_hash);
        let mut report = Verification { checked: 0, first_seq: None, last_seq: None, first_bad: None };
        loop {
            let chunk = self.store.range(expected_seq, CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            for (seq, value) in chunk {
                report.first_seq.get_or_insert(seq);
                if seq != expected_seq {
                    report.first_bad = Some((expected_seq, format!("missing (next record is {seq})")));
                    return Ok(report);
                }
                match StoredEvent::open(seq, &value, &prev) {
                    Ok(event) => prev = event.hash_bytes(),
                    Err(fault) => {
                        report.first_bad = Some((seq, RecordFault::describe(fault).to_string()));
                        return Ok(report);
                    }
                }
                report.checked += 1;
                report.last_seq = Some(seq);
                expected_seq = seq + 1;
            }
        }
        if expected_seq <= self.meta.last_seq {
            report.first_bad = Some((expected_seq, "missing".to_string()));
        } else if hex::encode(prev) != self.meta.last_hash {
            report.first_bad = Some((self.meta.last_seq, "does not match the journal's recorded head".to_string()));
        }
        Ok(report)
    }
}

/// The bookkeeping of a journal with no records yet.
fn empty_meta() -> Meta {
    Meta { last_hash: hex::encode(GENESIS), checkpoint_hash: hex::encode(GENESIS), ..Meta::default() }
}

fn seal_into(
    event: AuditEvent,
    now: SystemTime,
    meta: &mut Meta,
    put: &mut Vec<(u64, Vec<u8>)>,
    stored: &mut Vec<StoredEvent>,
) {
    let seq = meta.last_seq + 1;
    let id = event_id(now);
    let ts = humantime::format_rfc3339_millis(now).to_string();
    let (event, value) = StoredEvent::seal(event, seq, id, ts, &hash_from_hex(&meta.last_hash));
    meta.bytes += value.len() as u64 + RECORD_OVERHEAD;
    meta.last_seq = seq;
    meta.last_hash = event.hash.clone();
    put.push((seq, value));
    stored.push(event);
}

/// A UUIDv7: milliseconds since the epoch, then random bits from a user-space generator (the
/// journal makes tens of thousands a second; a getrandom(2) call for each would show).
fn event_id(now: SystemTime) -> String {
    let millis = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid().to_string()
}

#[cfg(test)]
mod tests {
    use super::super::store::MemStore;
    use super::*;

    fn ev(n: u64) -> AuditEvent {
        AuditEvent::new(AuditKind::AdminWrite, Actor::System, format!("t{n}")).with("n", n)
    }

    fn journal(max_bytes: u64) -> Journal<MemStore> {
        Journal::open(MemStore::default(), max_bytes).unwrap()
    }

    #[test]
    fn sequence_and_chain() {
        let mut j = journal(u64::MAX);
        let a = j.append(vec![ev(1), ev(2)], SystemTime::now()).unwrap();
        let b = j.append(vec![ev(3)], SystemTime::now()).unwrap();
        assert_eq!(a.iter().chain(&b).map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a[0].prev_hash, hex::encode(GENESIS));
        assert_eq!(a[1].prev_hash, a[0].hash);
        assert_eq!(b[0].prev_hash, a[1].hash);
        assert_ne!(a[0].id, a[1].id);
        let v = j.verify().unwrap();
        assert_eq!((v.checked, v.first_bad), (3, None));
    }

    #[test]
    fn appends_are_durable_when_they_return() {
        let mut j = journal(u64::MAX);
        j.append(vec![ev(1)], SystemTime::now()).unwrap();
        let mut after_cut = Journal::open(j.store.after_power_cut(), u64::MAX).unwrap();
        assert_eq!(after_cut.read(0, 10).unwrap().len(), 1);
    }

    #[test]
    fn tampering_is_found_at_its_sequence_number() {
        let mut j = journal(u64::MAX);
        j.append((1..=5).map(ev).collect(), SystemTime::now()).unwrap();
        let value = j.store.events.get_mut(&3).unwrap();
        let text = String::from_utf8(value[32..].to_vec()).unwrap().replace("\"n\":3", "\"n\":4");
        value.truncate(32);
        value.extend_from_slice(text.as_bytes());
        assert_eq!(j.verify().unwrap().first_bad.unwrap().0, 3);
        let mut j = journal(u64::MAX);
        j.append((1..=5).map(ev).collect(), SystemTime::now()).unwrap();
        j.store.events.remove(&4);
        assert_eq!(j.verify().unwrap().first_bad.unwrap().0, 4);
        let mut j = journal(u64::MAX);
        j.append((1..=5).map(ev).collect(), SystemTime::now()).unwrap();
        j.store.events.remove(&5);
        assert_eq!(j.verify().unwrap().first_bad.unwrap().0, 5, "a missing newest record is found too");
    }

    #[test]
    fn forwarded_records_are_pruned_first_and_the_chain_still_verifies() {
        let size = {
            let mut j = journal(u64::MAX);
            j.append(vec![ev(1)], SystemTime::now()).unwrap();
            j.meta().bytes
        };
        let mut j = journal(size * 10);
        j.append((1..=8).map(ev).collect(), SystemTime::now()).unwrap();
        j.ack(6).unwrap();
        let stored = j.append((9..=11).map(ev).collect(), SystemTime::now()).unwrap();
        assert_eq!(stored.len(), 3, "no drop marker: only forwarded records went");
        let kept: Vec<u64> = j.read(0, 100).unwrap().iter().map(|e| e.seq).collect();
        assert!(kept[0] <= 7, "unforwarded 7 and 8 kept: {kept:?}");
        assert!(j.meta().checkpoint_seq >= 1 && j.meta().checkpoint_seq <= 6);
        assert_eq!(j.verify().unwrap().first_bad, None);
        assert!(j.meta().bytes <= size * 10);
    }

    #[test]
    fn when_still_full_unforwarded_records_go_with_a_marker() {
        let size = {
            let mut j = journal(u64::MAX);
            j.append(vec![ev(1)], SystemTime::now()).unwrap();
            j.meta().bytes
        };
        let mut j = journal(size * 5);
        j.append((1..=5).map(ev).collect(), SystemTime::now()).unwrap();
        j.ack(1).unwrap();
        let stored = j.append((6..=8).map(ev).collect(), SystemTime::now()).unwrap();
        let marker = stored.last().unwrap();
        assert_eq!(marker.kind, "audit.dropped");
        assert_eq!(marker.detail["first_seq"], 2, "record 1 was forwarded, so it went silently");
        let (first, last, count) = (
            marker.detail["first_seq"].as_u64().unwrap(),
            marker.detail["last_seq"].as_u64().unwrap(),
            marker.detail["count"].as_u64().unwrap(),
        );
        assert_eq!(count, last - first + 1);
        let kept: Vec<u64> = j.read(0, 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(kept.first(), Some(&(last + 1)), "no gap: pruning removes a prefix");
        assert!(kept.contains(&6) && kept.contains(&8), "the new records are never the ones dropped");
        assert_eq!(j.verify().unwrap().first_bad, None);
    }

    #[test]
    fn ack_never_moves_backwards_or_past_the_head() {
        let mut j = journal(u64::MAX);
        j.append((1..=3).map(ev).collect(), SystemTime::now()).unwrap();
        assert_eq!(j.ack(2).unwrap(), 2);
        assert_eq!(j.ack(1).unwrap(), 2);
        assert_eq!(j.ack(99).unwrap(), 3);
        assert_eq!(j.backlog(), 0);
        j.append(vec![ev(4)], SystemTime::now()).unwrap();
        assert_eq!(j.unforwarded(10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    }
}

/// The journal on a disk that fills up, modelled on what sled 0.34 does (see `store`).
#[cfg(test)]
mod full_disk_tests {
    use super::super::store::full_disk::{Disk, Switches};
    use super::*;
    use std::sync::atomic::Ordering;

    fn journal() -> (Journal<Disk>, Switches) {
        let (disk, switches) = Disk::new();
        (Journal::open(disk, u64::MAX).unwrap(), switches)
    }

    fn ev(n: u64) -> AuditEvent {
        AuditEvent::new(AuditKind::AuthFailed, Actor::System, format!("t{n}")).with("n", n)
    }

    #[test]
    fn a_failed_commit_advances_nothing_and_the_next_one_follows_the_disk() {
        let (mut j, disk) = journal();
        let kept = j.append((1..=3).map(ev).collect(), SystemTime::now()).unwrap();
        let before = j.meta().clone();
        disk.full.store(true, Ordering::SeqCst);
        assert!(j.append(vec![ev(4), ev(5)], SystemTime::now()).is_err());
        assert_eq!(j.meta(), &before, "no sequence number, hash or byte count of the failed batch");
        assert!(matches!(j.read(0, 10), Err(StoreError::NotOpen)), "the poisoned handle is gone, not read");
        assert!(j.append(vec![ev(6)], SystemTime::now()).is_err(), "still full");
        assert_eq!(j.meta(), &before);

        disk.full.store(false, Ordering::SeqCst);
        let next = j.append(vec![ev(7)], SystemTime::now()).unwrap();
        assert_eq!(next[0].seq, 4, "numbered after what the disk holds");
        assert_eq!(next[0].prev_hash, kept[2].hash, "chained to the last durable record");
        let ns: Vec<u64> = j.read(0, 10).unwrap().iter().map(|e| e.detail["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, [1, 2, 3, 7], "nothing of the failed batches, nothing half");
        assert_eq!(j.verify().unwrap().first_bad, None);
        let mut after_cut = Journal::open(j.into_store().after_power_cut(), u64::MAX).unwrap();
        assert_eq!(after_cut.read(0, 10).unwrap().len(), 4, "all of it durable");
    }

    #[test]
    fn a_batch_that_reached_the_disk_before_the_error_is_synced_and_reported_durable() {
        let (mut j, disk) = journal();
        j.append(vec![ev(1)], SystemTime::now()).unwrap();
        disk.sync_fails_after_writing.store(true, Ordering::SeqCst);
        let stored = j.append(vec![ev(2), ev(3)], SystemTime::now()).expect("durable after the second sync");
        assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(j.meta().last_seq, 3);
        assert_eq!(j.append(vec![ev(4)], SystemTime::now()).unwrap()[0].seq, 4);
        assert_eq!(j.verify().unwrap().first_bad, None);
    }

    #[test]
    fn a_failed_acknowledgement_moves_no_cursor() {
        let (mut j, disk) = journal();
        j.append((1..=3).map(ev).collect(), SystemTime::now()).unwrap();
        j.ack(1).unwrap();
        disk.full.store(true, Ordering::SeqCst);
        assert!(j.ack(3).is_err());
        assert_eq!(j.meta().cursor, 1);
        disk.full.store(false, Ordering::SeqCst);
        assert_eq!(j.ack(3).unwrap(), 3);
        assert_eq!(j.backlog(), 0);
    }

    #[test]
    fn a_journal_that_could_not_be_opened_starts_from_what_the_disk_holds() {
        let (mut first, disk) = journal();
        first.append((1..=2).map(ev).collect(), SystemTime::now()).unwrap();
        let mut store = first.into_store();
        store.close();
        disk.full.store(true, Ordering::SeqCst);
        let mut j = Journal::unopened(store, u64::MAX);
        assert!(j.append(vec![ev(3)], SystemTime::now()).is_err());
        assert!(j.ensure_open().is_err());
        disk.full.store(false, Ordering::SeqCst);
        assert_eq!(j.append(vec![ev(4)], SystemTime::now()).unwrap()[0].seq, 3);
        assert_eq!(j.verify().unwrap().first_bad, None);
    }
}

#[cfg(test)]
mod sled_tests {
    use super::super::store::SledStore;
    use super::*;

    #[test]
    fn appends_survive_reopen_in_new_processes_style() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        for round in 1..=3u64 {
            let store = SledStore::open(&path).unwrap();
            let mut j = Journal::open(store, u64::MAX).unwrap();
            assert_eq!(j.meta().last_seq, round - 1, "round {round}");
            j.append(vec![AuditEvent::new(AuditKind::AdminWrite, Actor::System, "x")], SystemTime::now()).unwrap();
        }
    }
}
