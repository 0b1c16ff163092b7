//! Where the journal keeps its records: a small trait, with sled on disk and a map in memory
//! (for tests and as a stand-in).
//!
//! A commit is durable once its batch is in the journal's write-ahead file ([`super::wal`]):
//! [`SledStore::sync`] writes and syncs that file only; sled takes the same batch afterwards
//! ([`Store::settle`], once the commit is answered) and writes it in the background. A checkpoint
//! — sled's flush followed by `fdatasync` of its log file (`redtether_host::sled_open::LogFile`:
//! sled's flush alone does not survive a power cut) — starts the file's next cycle when it has
//! grown, and when the store is opened, after the batches since the last checkpoint were applied
//! again from it.
//!
//! Between checkpoints the newest chunk of records and the bookkeeping stay in memory (the
//! write-ahead file has them): a commit of a few records would otherwise rewrite the whole newest
//! chunk in sled each time — up to 32 records for one — and sled would write all those copies to
//! its log in the background, competing with the syncs a commit waits for. A chunk goes to sled
//! once a newer one is started, and everything at a checkpoint.
//!
//! A failed write poisons a sled handle. sled 0.34 applies a batch to its tree in memory first
//! and writes its log later (at the flush); when that write fails (`ENOSPC` on a full disk), the
//! handle still shows the batch that is not on disk, and it keeps the error: every later write
//! fails with it, even once space is free again (reads still work). So after a failed write the
//! handle is thrown away and the store opened again ([`Store::reopen`]): the new handle sees
//! exactly what the disk holds, and a batch is on disk whole or not at all (sled recovers batches
//! atomically). Opening needs free space too (sled writes as it opens), so a reopen on a full disk
//! fails and the store stays closed until a later one succeeds.
//!
//! sled also keeps memory for every key it holds (about 40 bytes each at rest, more while keys
//! churn), so records are stored [`CHUNK_RECORDS`] to a key: a million buffered events cost
//! about thirty thousand keys.

use super::wal::{self, Wal};
use redtether_host::sled_open;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The journal's bookkeeping, written atomically with the records it describes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Sequence number of the newest record (0: none yet).
    pub last_seq: u64,
    /// Its hash, hex (64 zeros before the first record).
    pub last_hash: String,
    /// Highest sequence number the platform has acknowledged.
    pub cursor: u64,
    /// Records up to this sequence number were pruned; the chain resumes after it ...
    pub checkpoint_seq: u64,
    /// ... from this hash.
    pub checkpoint_hash: String,
    /// Bytes of stored records.
    pub bytes: u64,
}

/// One atomic change.
#[derive(Debug, Default)]
pub struct Batch {
    pub put: Vec<(u64, Vec<u8>)>,
    pub remove: Vec<u64>,
    pub meta: Meta,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error (a full disk shows up here).
    #[error("audit store: {0}")]
    Db(#[from] sled::Error),
    /// sled panicked opening the files: they are damaged.
    #[error("audit store: sled panicked while opening the journal")]
    Panicked,
    /// A stored chunk of records is cut short.
    #[error("audit store: a journal chunk is truncated")]
    Truncated,
    /// The bookkeeping record is unreadable.
    #[error("audit store: bookkeeping unreadable: {0}")]
    Meta(#[source] serde_json::Error),
    /// Another handle holds the journal open; the journal itself is fine.
    #[error("audit store: {} is in use by another handle", path.display())]
    Locked { path: PathBuf },
    /// Syncing to disk failed.
    #[error("audit store: {0}")]
    Sync(#[from] sled_open::SyncError),
    /// Reading, writing or syncing the write-ahead file failed.
    #[error("audit store: {}: {source}", path.display())]
    Wal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store is closed: a failed write threw its handle away, and opening it again has not
    /// succeeded yet.
    #[error("audit store: not open (a write failed; it is opened again when the disk allows)")]
    NotOpen,
}

impl StoreError {
    /// The disk (or the user's quota) is full: nothing is wrong with the journal itself, and it
    /// can be opened once there is room again.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            StoreError::Db(sled::Error::Io(e)) | StoreError::Sync(sled_open::SyncError::Flush(sled::Error::Io(e))) => e,
            StoreError::Sync(sled_open::SyncError::Sync { source, .. }) | StoreError::Wal { source, .. } => source,
            _ => return false,
        };
        matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
    }
}

pub trait Store: Send {
    /// The bookkeeping as last committed, if the store has any.
    fn load_meta(&self) -> Result<Option<Meta>, StoreError>;
    /// Takes a batch, to be applied atomically. Not yet durable, and not necessarily shown
    /// before the next [`Store::sync`] and [`Store::settle`].
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError>;
    /// Makes everything committed durable; shown once [`Store::settle`] has run.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Finishes what a sync leaves for after its commit is answered (sled taking the synced
    /// batches, a checkpoint). Reads and the next commit come after it; a failure in it is
    /// reported by the next commit. Nothing to do for a store that shows a batch as it syncs.
    fn settle(&mut self) {}
    /// [`Store::sync`], then [`Store::settle`]: durable and shown at once.
    fn sync_and_settle(&mut self) -> Result<(), StoreError> {
        self.sync()?;
        self.settle();
        Ok(())
    }
    /// Up to `limit` records with sequence numbers from `from` on, in order.
    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Throws away what this handle holds in memory and opens the store again, so that it shows
    /// what the disk holds: after a failed write the handle may show more. On failure the store
    /// is closed ([`StoreError::NotOpen`]) until a reopen succeeds.
    fn reopen(&mut self) -> Result<(), StoreError>;
}

/// sled's page cache: the journal is written far more than it is read.
const CACHE_BYTES: u64 = 1024 * 1024;
const META_KEY: &[u8] = b"m";
/// The number of the last write-ahead batch whose changes sled's files hold, written at each
/// checkpoint; the batches after it are applied again at open.
const APPLIED_KEY: &[u8] = b"w";
const CHUNK_PREFIX: u8 = b'c';
/// Records per sled key: consecutive sequence numbers `n·32 .. n·32+31` share key `n`.
pub const CHUNK_RECORDS: u64 = 32;

fn chunk_key(chunk: u64) -> [u8; 9] {
    let mut key = [CHUNK_PREFIX; 9];
    key[1..].copy_from_slice(&chunk.to_be_bytes());
    key
}

fn chunk_of_key(key: &[u8]) -> Result<u64, StoreError> {
    key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or(StoreError::Truncated)
}

/// Reads of a chunk just written, so that sled's cache lets go of the chunks written before it.
/// sled 0.34 counts page accesses in 256 shards and looks at a shard's (evicting what is over its
/// share of [`CACHE_BYTES`]) only after 64 accesses to it; with one insert per 32 records, the
/// shard of the leaf being filled could see too few accesses before the leaf split, and the
/// filled leaves stayed in memory. In `benches/audit_journal.rs` (unbounded journal) a million
/// more events kept 23–27 MiB more resident with no reads, 10 MiB with 4, 3–4 MiB with 8 or 16.
/// Each read costs about 2 µs, once per 32 records.
const CACHE_NUDGES: usize = 8;

/// A record: its sequence number and sealed bytes.
type Record = (u64, Vec<u8>);

/// A chunk's records, in sequence order: `[seq u64 BE][len u32 BE][bytes]` repeated.
fn encode_chunk(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|(_, v)| v.len() + 12).sum());
    for (seq, value) in records {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn decode_chunk(mut bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let truncated = || StoreError::Truncated;
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let seq = u64::from_be_bytes(bytes.get(..8).ok_or_else(truncated)?.try_into().unwrap_or([0; 8]));
        let len = u32::from_be_bytes(bytes.get(8..12).ok_or_else(truncated)?.try_into().unwrap_or([0; 4])) as usize;
        let value = bytes.get(12..12 + len).ok_or_else(truncated)?;
        out.push((seq, value.to_vec()));
        bytes = &bytes[12 + len..];
    }
    Ok(out)
}

pub struct SledStore {
    dir: PathBuf,
    /// `None` while closed after a failed write.
    open: Option<SledHandle>,
    /// Size of the write-ahead file's cycle: [`wal::CHECKPOINT_BYTES`], smaller in tests that
    /// go through many cycles.
    checkpoint_bytes: u64,
}

struct SledHandle {
    db: sled::Db,
    log: sled_open::LogFile,
    wal: Wal,
    /// Batches committed since the last sync: in the write-ahead file's buffer, not yet in sled.
    staged: Vec<(u64, Batch)>,
    /// Batches durable in the write-ahead file, not yet taken: a sync leaves them to
    /// [`Store::settle`], so that the commit is answered without waiting for sled.
    synced: Vec<(u64, Batch)>,
    /// The number of the last batch taken (into sled or into the two fields below).
    applied: u64,
    /// The newest chunk touched, as it is now: sled holds an older copy of it, or none. Reads
    /// take it from here.
    open_chunk: Option<(u64, Vec<Record>)>,
    /// The bookkeeping of the last batch taken, when sled's copy is older.
    meta: Option<Meta>,
    /// One past the highest chunk sled holds: a chunk from here on is new, and not looked up
    /// (the lookup of each new chunk showed in the journal's profile).
    chunks_end: u64,
    /// sled failed to take a durable batch: this handle shows less than the disk holds and is
    /// not used again; the next commit reports the error, so that the journal opens the store
    /// again (which applies the batch from the file).
    failed: Option<StoreError>,
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        Ok(SledStore {
            dir: dir.to_path_buf(),
            open: Some(SledHandle::open(dir)?),
            checkpoint_bytes: wal::CHECKPOINT_BYTES,
        })
    }

    /// A store that could not be opened (the disk is full): closed until [`Store::reopen`]
    /// succeeds.
    pub fn closed(dir: &Path) -> SledStore {
        SledStore { dir: dir.to_path_buf(), open: None, checkpoint_bytes: wal::CHECKPOINT_BYTES }
    }

    /// The handle to read through: not one that failed to take a batch (it shows less).
    fn handle(&self) -> Result<&SledHandle, StoreError> {
        let handle = self.open.as_ref().filter(|h| h.failed.is_none()).ok_or(StoreError::NotOpen)?;
        debug_assert!(handle.synced.is_empty(), "read before the synced batches were settled");
        Ok(handle)
    }
}

impl SledHandle {
    fn open(dir: &Path) -> Result<SledHandle, StoreError> {
        // sled panics on some damaged files instead of returning an error; either way the
        // journal is unusable and the caller moves it aside.
        // sled caches up to 1 GiB of pages by default; a gateway has less memory than that.
        let db = std::panic::catch_unwind(|| {
            let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
            sled_open::open(&config, dir, sled_open::LOCK_WAIT)
        })
        .map_err(|_| StoreError::Panicked)?
        .map_err(|e| match e {
            sled_open::OpenError::Locked { path } => StoreError::Locked { path },
            sled_open::OpenError::Db(e) => StoreError::Db(e),
        })?;
        let log = sled_open::LogFile::open(dir)?;
        let (wal, pending) = Wal::open(dir).map_err(|source| wal_error(&dir.join(wal::FILE_NAME), source))?;
        // The directory entries of a new journal must survive a power cut too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        if let Some(parent) = dir.parent()
            && let Ok(d) = File::open(parent)
        {
            let _ = d.sync_all();
        }
        let applied = match db.get(APPLIED_KEY)? {
            Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StoreError::Truncated)?),
            None => 0,
        };
        let chunks_end = match db.range(chunk_key(0)..=chunk_key(u64::MAX)).next_back().transpose()? {
            Some((key, _)) => chunk_of_key(&key)?.saturating_add(1),
            None => 0,
        };
        let mut handle = SledHandle {
            db,
            log,
            wal,
            staged: Vec::new(),
            synced: Vec::new(),
            applied,
            open_chunk: None,
            meta: None,
            chunks_end,
            failed: None,
        };
        // sled's files hold every batch up to `applied`, the last checkpoint; the file holds every
        // batch since then.
        let replay: Vec<(u64, Batch)> = pending.into_iter().filter(|(number, _)| *number > applied).collect();
        if let Some((first, _)) = replay.first()
            && *first != applied + 1
        {
            tracing::warn!(target: "audit", applied, first, "the write-ahead file does not continue the journal; applying what it holds");
        }
        for (number, batch) in replay {
            handle.apply(number, batch)?;
        }
        if handle.wal.len() > 0 {
            handle.checkpoint()?;
        }
        Ok(handle)
    }

    /// Takes batch `number`, already durable in the write-ahead file: into sled's memory, except
    /// for the newest chunk it touches and its bookkeeping, which stay in this handle's.
    ///
    /// Key by key, not as a sled batch: a sled batch makes sled write its log at once (two
    /// writes, each waited for) and the point of the file is that sled writes in the background.
    /// Atomicity comes from the file instead. After a crash sled holds what it held at the last
    /// checkpoint plus some of the chunks written since (each chunk is one key, so whole); the
    /// batches since the checkpoint are all in the file and are applied again, in order, over
    /// that. Every record ends as the last batch that touched it left it (a chunk is read and
    /// rewritten whole, puts and removes of a record are idempotent, and a record is never put
    /// again once removed), and the others are as the checkpoint left them.
    fn apply(&mut self, number: u64, batch: Batch) -> Result<(), StoreError> {
        let Batch { put, remove, meta } = batch;
        let mut chunks: BTreeMap<u64, Vec<Record>> = self.open_chunk.take().into_iter().collect();
        let touched = put.iter().map(|(seq, _)| *seq).chain(remove.iter().copied());
        for chunk in touched.map(|seq| seq / CHUNK_RECORDS) {
            if let std::collections::btree_map::Entry::Vacant(slot) = chunks.entry(chunk) {
                slot.insert(self.stored_chunk(chunk)?);
            }
        }
        for (seq, value) in put {
            let records = chunks.entry(seq / CHUNK_RECORDS).or_default();
            match records.binary_search_by_key(&seq, |(s, _)| *s) {
                Ok(i) => records[i].1 = value,
                Err(i) => records.insert(i, (seq, value)),
            }
        }
        for seq in remove {
            if let Some(records) = chunks.get_mut(&(seq / CHUNK_RECORDS)) {
                records.retain(|(s, _)| *s != seq);
            }
        }
        // Records are appended in sequence order: the newest chunk is the one still growing.
        let newest = chunks.pop_last();
        for (chunk, records) in chunks {
            self.write_chunk(chunk, &records)?;
        }
        self.open_chunk = newest;
        self.meta = Some(meta);
        self.applied = number;
        Ok(())
    }

    fn stored_chunk(&self, chunk: u64) -> Result<Vec<Record>, StoreError> {
        if chunk >= self.chunks_end {
            return Ok(Vec::new());
        }
        Ok(self.db.get(chunk_key(chunk))?.map(|v| decode_chunk(&v)).transpose()?.unwrap_or_default())
    }

    fn write_chunk(&mut self, chunk: u64, records: &[Record]) -> Result<(), StoreError> {
        match records.is_empty() {
            true => self.db.remove(chunk_key(chunk))?,
            false => {
                self.chunks_end = self.chunks_end.max(chunk.saturating_add(1));
                self.db.insert(chunk_key(chunk), encode_chunk(records))?;
                for _ in 0..CACHE_NUDGES {
                    self.db.get(chunk_key(chunk))?;
                }
                None
            }
        };
        Ok(())
    }

    /// The bookkeeping as of the last batch taken.
    fn meta(&self) -> Result<Option<Meta>, StoreError> {
        if let Some(meta) = &self.meta {
            return Ok(Some(meta.clone()));
        }
        match self.db.get(META_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(StoreError::Meta),
            None => Ok(None),
        }
    }

    /// Writes what this handle holds in memory to sled, makes everything sled holds durable in
    /// its own files, then starts the write-ahead file's next cycle.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        if let Some((chunk, records)) = self.open_chunk.take() {
            let written = self.write_chunk(chunk, &records);
            self.open_chunk = Some((chunk, records));
            written?;
        }
        if let Some(meta) = &self.meta {
            self.db.insert(META_KEY, serde_json::to_vec(meta).expect("bookkeeping always encodes"))?;
        }
        self.db.insert(APPLIED_KEY, &self.applied.to_be_bytes())?;
        self.log.sync(&self.db)?;
        self.wal.restart();
        Ok(())
    }
}

fn wal_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Wal { path: path.to_path_buf(), source }
}

impl Store for SledStore {
    fn load_meta(&self) -> Result<Option<Meta>, StoreError> {
        self.handle()?.meta()
    }

    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        self.settle();
        let handle = self.open.as_mut().ok_or(StoreError::NotOpen)?;
        if let Some(e) = handle.failed.take() {
            return Err(e);
        }
        let number = handle.staged.last().map_or(handle.applied, |(n, _)| *n) + 1;
        handle.wal.append(number, &batch);
        handle.staged.push((number, batch));
        Ok(())
    }

    /// Writes and syncs the write-ahead file (one write, one `fdatasync`); sled takes the batches
    /// in [`Store::settle`].
    fn sync(&mut self) -> Result<(), StoreError> {
        let handle = self.open.as_mut().ok_or(StoreError::NotOpen)?;
        if let Err(source) = handle.wal.sync() {
            // Neither applied nor kept (the file cut them off again): the journal opens the
            // store again and takes what the disk holds.
            handle.staged.clear();
            return Err(wal_error(handle.wal.path(), source));
        }
        // The batches are durable now, whatever sled does with them: they are answered as
        // recorded, and sled takes them after that (`settle`).
        handle.synced.append(&mut handle.staged);
        Ok(())
    }

    /// Applies the synced batches to sled and checkpoints once the file has grown. If sled fails
    /// to take them (its handle poisoned by a failed background write) or to checkpoint, the next
    /// commit says so (see `SledHandle::failed`).
    fn settle(&mut self) {
        let cycle = self.checkpoint_bytes;
        let Some(handle) = self.open.as_mut().filter(|h| !h.synced.is_empty()) else { return };
        let applied = std::mem::take(&mut handle.synced)
            .into_iter()
            .try_for_each(|(number, batch)| handle.apply(number, batch))
            .and_then(|()| if handle.wal.len() >= cycle { handle.checkpoint() } else { Ok(()) });
        if let Err(e) = applied {
            tracing::warn!(target: "audit", error = %e, "sled did not take a durable batch; the journal is opened again at its next write");
            handle.failed = Some(e);
        }
    }

    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let handle = self.handle()?;
        let first_chunk = from / CHUNK_RECORDS;
        // The open chunk is read from memory, in its place among sled's (whose copy is older).
        let mut open = handle.open_chunk.as_ref().filter(|(chunk, _)| *chunk >= first_chunk);
        let mut out = Vec::new();
        // Adds the records from `from` on, up to the limit; true once it is reached.
        let take = |out: &mut Vec<Record>, records: &[Record]| {
            out.extend(records.iter().filter(|(seq, _)| *seq >= from).take(limit - out.len()).cloned());
            out.len() == limit
        };
        for item in handle.db.range(chunk_key(first_chunk)..=chunk_key(u64::MAX)) {
            let (key, value) = item?;
            let chunk = chunk_of_key(&key)?;
            if let Some((open_chunk, records)) = open.filter(|(open_chunk, _)| *open_chunk <= chunk) {
                open = None;
                if take(&mut out, records) {
                    return Ok(out);
                }
                if *open_chunk == chunk {
                    continue;
                }
            }
            if take(&mut out, &decode_chunk(&value)?) {
                return Ok(out);
            }
        }
        if let Some((_, records)) = open {
            take(&mut out, records);
        }
        Ok(out)
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        // The old handle goes first: it holds sled's lock, and `SledHandle::open` waits for that
        // lock to be let go. sled's drop flushes and unwraps an fsync when the handle is not
        // poisoned, which panics on a failing disk; a handle is thrown away only because writing
        // failed, so that panic must not end the journal.
        let old = self.open.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(old)));
        self.open = Some(SledHandle::open(&self.dir)?);
        Ok(())
    }
}

/// Records and bookkeeping as of one moment.
pub type Snapshot = (BTreeMap<u64, Vec<u8>>, Option<Meta>);

/// A store in memory: what tests use to check the journal's logic, and a stand-in elsewhere.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub events: BTreeMap<u64, Vec<u8>>,
    pub meta: Option<Meta>,
    /// What a power cut would leave: the state at the last sync.
    pub synced: Option<Snapshot>,
}

impl MemStore {
    /// The store as it would be after a power cut now.
    pub fn after_power_cut(&self) -> MemStore {
        let (events, meta) = self.synced.clone().unwrap_or_default();
        // What survived is on disk: it survives the next cut too.
        let synced = Some((events.clone(), meta.clone()));
        MemStore { events, meta, synced }
    }
}

impl Store for MemStore {
    fn load_meta(&self) -> Result<Option<Meta>, StoreError> {
        Ok(self.meta.clone())
    }
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        for (seq, value) in batch.put {
            self.events.insert(seq, value);
        }
        for seq in batch.remove {
            self.events.remove(&seq);
        }
        self.meta = Some(batch.meta);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.synced = Some((self.events.clone(), self.meta.clone()));
        Ok(())
    }
    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self.events.range(from..).take(limit).map(|(k, v)| (*k, v.clone())).collect())
    }
    /// Memory is never behind itself: nothing to do.
    fn reopen(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_store_commits_ranges_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        {
            let mut s = SledStore::open(&path).unwrap();
            assert_eq!(s.load_meta().unwrap(), None);
            let meta = Meta { last_seq: 3, bytes: 9, ..Meta::default() };
            s.commit(Batch {
                put: vec![(1, b"a".to_vec()), (2, b"b".to_vec()), (3, b"c".to_vec())],
                remove: vec![],
                meta: meta.clone(),
            })
            .unwrap();
            s.commit(Batch { put: vec![], remove: vec![1], meta }).unwrap();
            s.sync_and_settle().unwrap();
        }
        let s = SledStore::open(&path).unwrap();
        assert_eq!(s.load_meta().unwrap().unwrap().last_seq, 3);
        assert_eq!(s.range(0, 10).unwrap(), vec![(2, b"b".to_vec()), (3, b"c".to_vec())]);
        assert_eq!(s.range(3, 10).unwrap(), vec![(3, b"c".to_vec())]);
        assert_eq!(s.range(2, 1).unwrap().len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]
        /// The chunked sled layout answers exactly what a plain map of records would, before and
        /// after the store is opened again (which applies the write-ahead file over what sled
        /// wrote since the last checkpoint).
        #[test]
        fn sled_chunks_behave_like_a_map_of_records(
            ops in proptest::collection::vec((0u64..200, 0u64..40, proptest::prelude::any::<bool>(), 0u8..4), 1..40),
            cycle in proptest::prop_oneof![proptest::strategy::Just(wal::CHECKPOINT_BYTES), 200u64..3000],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut sled = SledStore::open(&dir.path().join("j")).unwrap();
            // A small cycle: many checkpoints, each followed by records written over the older
            // cycles' in the write-ahead file, and reopens that must tell them apart.
            sled.checkpoint_bytes = cycle;
            let mut mem = MemStore::default();
            for (number, (start, len, remove, reopen)) in ops.into_iter().enumerate() {
                let seqs: Vec<u64> = (start..start + len).collect();
                let meta = Meta { last_seq: number as u64, ..Meta::default() };
                let batch = || if remove {
                    Batch { put: vec![], remove: seqs.clone(), meta: meta.clone() }
                } else {
                    Batch { put: seqs.iter().map(|s| (*s, s.to_be_bytes().repeat((*s % 5) as usize + 1))).collect(), remove: vec![], meta: meta.clone() }
                };
                sled.commit(batch()).unwrap();
                sled.sync_and_settle().unwrap();
                mem.commit(batch()).unwrap();
                if reopen == 0 {
                    sled.reopen().unwrap();
                }
                proptest::prop_assert_eq!(sled.load_meta().unwrap(), mem.load_meta().unwrap());
                for (from, limit) in [(0, usize::MAX), (start, 7), (start + len / 2, 100), (start + len, 3)] {
                    proptest::prop_assert_eq!(sled.range(from, limit).unwrap(), mem.range(from, limit).unwrap());
                }
            }
        }
    }

    /// A journal folder as a crash leaves it: the write-ahead file holds batches 1 to 3, sled
    /// none of them (no checkpoint was reached).
    fn crashed_after_three_batches(path: &Path) {
        let batches = [
            Batch {
                put: vec![(1, b"a".to_vec()), (2, b"b".to_vec())],
                remove: vec![],
                meta: Meta { last_seq: 2, ..Meta::default() },
            },
            Batch {
                put: vec![(3, b"c".to_vec())],
                remove: vec![1],
                meta: Meta { last_seq: 3, checkpoint_seq: 1, ..Meta::default() },
            },
            Batch {
                put: vec![(4, b"d".to_vec())],
                remove: vec![],
                meta: Meta { last_seq: 4, checkpoint_seq: 1, cursor: 2, ..Meta::default() },
            },
        ];
        {
            let mut s = SledStore::open(path).unwrap();
            s.commit(Batch { put: batches[0].put.clone(), remove: vec![], meta: batches[0].meta.clone() }).unwrap();
            s.sync_and_settle().unwrap();
        }
        let (mut file, held) = Wal::open(path).unwrap();
        assert_eq!(held.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1]);
        for (number, batch) in batches.iter().enumerate().skip(1) {
            file.append(number as u64 + 1, batch);
        }
        file.sync().unwrap();
    }

    #[test]
    fn the_batches_since_the_last_checkpoint_are_applied_again_in_order_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        crashed_after_three_batches(&path);
        let s = SledStore::open(&path).unwrap();
        let meta = s.load_meta().unwrap().unwrap();
        assert_eq!((meta.last_seq, meta.checkpoint_seq, meta.cursor), (4, 1, 2));
        // Applied in order: record 1, put by batch 1, is removed by batch 2.
        assert_eq!(s.range(0, 10).unwrap(), vec![(2, b"b".to_vec()), (3, b"c".to_vec()), (4, b"d".to_vec())]);
        drop(s);
        // What was applied is now sled's own, up to the number the checkpoint recorded; the file
        // still holds those batches (it is reused, not emptied), and they are not applied twice.
        assert_eq!(Wal::open(&path).unwrap().1.len(), 3);
        let mut s = SledStore::open(&path).unwrap();
        assert_eq!(s.handle().unwrap().applied, 3);
        assert_eq!(s.load_meta().unwrap().unwrap().last_seq, 4);
        assert_eq!(s.range(0, 10).unwrap().len(), 3);
        // Numbering continues after the replayed batches.
        s.commit(Batch {
            put: vec![(5, b"e".to_vec())],
            remove: vec![],
            meta: Meta { last_seq: 5, ..Meta::default() },
        })
        .unwrap();
        s.sync_and_settle().unwrap();
        drop(s);
        let s = SledStore::open(&path).unwrap();
        assert_eq!(s.range(5, 10).unwrap(), vec![(5, b"e".to_vec())]);
        assert_eq!(s.load_meta().unwrap().unwrap().last_seq, 5);
    }

    #[test]
    fn the_growing_chunk_is_written_to_sled_once_a_newer_one_starts_or_at_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        let mut s = SledStore::open(&path).unwrap();
        let in_sled = |s: &SledStore, chunk| match s.handle().unwrap().db.get(chunk_key(chunk)).unwrap() {
            Some(value) => decode_chunk(&value).unwrap().len(),
            None => 0,
        };
        for seq in 1..CHUNK_RECORDS {
            let meta = Meta { last_seq: seq, ..Meta::default() };
            s.commit(Batch { put: vec![(seq, vec![1])], remove: vec![], meta }).unwrap();
            s.sync_and_settle().unwrap();
        }
        assert_eq!(s.range(0, 100).unwrap().len(), 31);
        assert_eq!(in_sled(&s, 0), 0, "31 commits into chunk 0 wrote it to sled none of the times");
        let meta = Meta { last_seq: CHUNK_RECORDS, ..Meta::default() };
        s.commit(Batch { put: vec![(CHUNK_RECORDS, vec![2])], remove: vec![], meta }).unwrap();
        s.sync_and_settle().unwrap();
        assert_eq!((in_sled(&s, 0), in_sled(&s, 1)), (31, 0));
        s.open.as_mut().unwrap().checkpoint().unwrap();
        assert_eq!(in_sled(&s, 1), 1);
        assert_eq!(s.handle().unwrap().db.get(APPLIED_KEY).unwrap().unwrap().as_ref(), 32u64.to_be_bytes());
    }

    #[test]
    fn a_batch_committed_but_not_synced_is_not_shown_or_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        {
            let mut s = SledStore::open(&path).unwrap();
            s.commit(Batch {
                put: vec![(1, b"a".to_vec())],
                remove: vec![],
                meta: Meta { last_seq: 1, ..Meta::default() },
            })
            .unwrap();
            s.sync_and_settle().unwrap();
            s.commit(Batch {
                put: vec![(2, b"b".to_vec())],
                remove: vec![],
                meta: Meta { last_seq: 2, ..Meta::default() },
            })
            .unwrap();
            assert_eq!(s.load_meta().unwrap().unwrap().last_seq, 1);
        }
        let s = SledStore::open(&path).unwrap();
        assert_eq!(s.load_meta().unwrap().unwrap().last_seq, 1);
        assert_eq!(s.range(0, 10).unwrap(), vec![(1, b"a".to_vec())]);
    }

    #[test]
    fn a_closed_store_answers_not_open_until_a_reopen_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        {
            let mut s = SledStore::open(&path).unwrap();
            let meta = Meta { last_seq: 1, ..Meta::default() };
            s.commit(Batch { put: vec![(1, b"a".to_vec())], remove: vec![], meta }).unwrap();
            s.sync_and_settle().unwrap();
        }
        let mut s = SledStore::closed(&path);
        assert!(matches!(s.load_meta(), Err(StoreError::NotOpen)));
        assert!(matches!(s.range(0, 10), Err(StoreError::NotOpen)));
        assert!(matches!(s.commit(Batch::default()), Err(StoreError::NotOpen)));
        s.reopen().unwrap();
        assert_eq!(s.load_meta().unwrap().unwrap().last_seq, 1);
        // Reopening an open store lets go of its own lock first.
        s.reopen().unwrap();
        assert_eq!(s.range(0, 10).unwrap(), vec![(1, b"a".to_vec())]);
    }

    #[test]
    fn a_full_disk_is_told_apart_from_a_damaged_journal() {
        let io = |errno| std::io::Error::from_raw_os_error(errno);
        assert!(StoreError::Db(sled::Error::Io(io(libc::ENOSPC))).is_disk_full());
        assert!(StoreError::Db(sled::Error::Io(io(libc::EDQUOT))).is_disk_full());
        let sync = sled_open::SyncError::Sync { path: "db".into(), source: io(libc::ENOSPC) };
        assert!(StoreError::Sync(sync).is_disk_full());
        assert!(!StoreError::Db(sled::Error::Io(io(libc::EIO))).is_disk_full());
        assert!(!StoreError::Db(sled::Error::Unsupported("x".into())).is_disk_full());
        assert!(!StoreError::Panicked.is_disk_full());
    }

    #[test]
    fn mem_store_forgets_what_was_not_synced() {
        let mut s = MemStore::default();
        s.commit(Batch { put: vec![(1, vec![1])], remove: vec![], meta: Meta { last_seq: 1, ..Meta::default() } })
            .unwrap();
        s.sync_and_settle().unwrap();
        s.commit(Batch { put: vec![(2, vec![2])], remove: vec![], meta: Meta { last_seq: 2, ..Meta::default() } })
            .unwrap();
        let cut = s.after_power_cut();
        assert_eq!(cut.events.len(), 1);
        assert_eq!(cut.meta.unwrap().last_seq, 1);
    }
}

/// A disk that fills up, modelled on what sled 0.34 does (see the module documentation), for the
/// journal's and the journal thread's tests: a commit lands in the handle's memory; the sync is
/// what meets the full disk, and it poisons the handle (every later commit and sync fails, free
/// space or not); a reopen shows what was last synced, and fails while the disk is full.
#[cfg(test)]
pub(crate) mod full_disk {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    pub(crate) struct Disk {
        mem: MemStore,
        switches: Switches,
        poisoned: bool,
        open: bool,
    }

    /// Turned from the test while the store is in a journal.
    #[derive(Clone, Default)]
    pub(crate) struct Switches {
        pub full: Arc<AtomicBool>,
        /// The next sync writes, then reports an error anyway (a write that got through before
        /// the device failed).
        pub sync_fails_after_writing: Arc<AtomicBool>,
    }

    impl Disk {
        pub(crate) fn new() -> (Disk, Switches) {
            let switches = Switches::default();
            (Disk { mem: MemStore::default(), switches: switches.clone(), poisoned: false, open: true }, switches)
        }

        /// As after a failed reopen.
        pub(crate) fn close(&mut self) {
            self.open = false;
        }

        /// What a power cut now would leave.
        pub(crate) fn after_power_cut(&self) -> MemStore {
            self.mem.after_power_cut()
        }
    }

    fn enospc() -> StoreError {
        StoreError::Db(sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)))
    }

    impl Store for Disk {
        fn load_meta(&self) -> Result<Option<Meta>, StoreError> {
            if !self.open {
                return Err(StoreError::NotOpen);
            }
            self.mem.load_meta()
        }
        fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
            if !self.open || self.poisoned {
                return Err(enospc());
            }
            self.mem.commit(batch)
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            if !self.open || self.poisoned || self.switches.full.load(Ordering::SeqCst) {
                self.poisoned = true;
                return Err(enospc());
            }
            self.mem.sync()?;
            if self.switches.sync_fails_after_writing.swap(false, Ordering::SeqCst) {
                self.poisoned = true;
                return Err(enospc());
            }
            Ok(())
        }
        fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            if !self.open {
                return Err(StoreError::NotOpen);
            }
            self.mem.range(from, limit)
        }
        fn reopen(&mut self) -> Result<(), StoreError> {
            self.open = false;
            if self.switches.full.load(Ordering::SeqCst) {
                return Err(enospc());
            }
            self.mem = self.mem.after_power_cut();
            (self.open, self.poisoned) = (true, false);
            Ok(())
        }
    }
}
