//! Where the journal keeps its records: a small trait, with sled on disk and a map in memory
//! (for tests and as a stand-in).
//!
//! [`SledStore::sync`] follows sled's flush with `fdatasync` of its log file
//! (`redtether_host::sled_open::LogFile`): sled's flush alone does not survive a power cut.
//!
//! sled also keeps memory for every key it holds (about 40 bytes each at rest, more while keys
//! churn), so records are stored [`CHUNK_RECORDS`] to a key: a million buffered events cost
//! about thirty thousand keys.

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
}

pub trait Store: Send {
    /// The bookkeeping as last committed, if the store has any.
    fn load_meta(&self) -> Result<Option<Meta>, StoreError>;
    /// Applies a batch atomically. Not yet durable.
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError>;
    /// Makes everything committed durable.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Up to `limit` records with sequence numbers from `from` on, in order.
    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
}

/// sled's page cache: the journal is written far more than it is read.
const CACHE_BYTES: u64 = 1024 * 1024;
const META_KEY: &[u8] = b"m";
const CHUNK_PREFIX: u8 = b'c';
/// Records per sled key: consecutive sequence numbers `n·32 .. n·32+31` share key `n`.
pub const CHUNK_RECORDS: u64 = 32;

fn chunk_key(chunk: u64) -> [u8; 9] {
    let mut key = [CHUNK_PREFIX; 9];
    key[1..].copy_from_slice(&chunk.to_be_bytes());
    key
}

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
    db: sled::Db,
    log: sled_open::LogFile,
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
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
        // The directory entries of a new journal must survive a power cut too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        if let Some(parent) = dir.parent()
            && let Ok(d) = File::open(parent)
        {
            let _ = d.sync_all();
        }
        Ok(SledStore { db, log })
    }
}

impl Store for SledStore {
    fn load_meta(&self) -> Result<Option<Meta>, StoreError> {
        match self.db.get(META_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(StoreError::Meta),
            None => Ok(None),
        }
    }

    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        let mut chunks: BTreeMap<u64, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        let touched = batch.put.iter().map(|(seq, _)| *seq).chain(batch.remove.iter().copied());
        for chunk in touched.map(|seq| seq / CHUNK_RECORDS) {
            if let std::collections::btree_map::Entry::Vacant(slot) = chunks.entry(chunk) {
                let existing = self.db.get(chunk_key(chunk))?;
                slot.insert(existing.map(|v| decode_chunk(&v)).transpose()?.unwrap_or_default());
            }
        }
        for (seq, value) in batch.put {
            let records = chunks.entry(seq / CHUNK_RECORDS).or_default();
            match records.binary_search_by_key(&seq, |(s, _)| *s) {
                Ok(i) => records[i].1 = value,
                Err(i) => records.insert(i, (seq, value)),
            }
        }
        for seq in batch.remove {
            if let Some(records) = chunks.get_mut(&(seq / CHUNK_RECORDS)) {
                records.retain(|(s, _)| *s != seq);
            }
        }
        let mut b = sled::Batch::default();
        for (chunk, records) in &chunks {
            if records.is_empty() {
                b.remove(&chunk_key(*chunk));
            } else {
                b.insert(&chunk_key(*chunk), encode_chunk(records));
            }
        }
        b.insert(META_KEY, serde_json::to_vec(&batch.meta).expect("bookkeeping always encodes"));
        Ok(self.db.apply_batch(b)?)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(self.log.sync(&self.db)?)
    }

    fn range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.range(chunk_key(from / CHUNK_RECORDS)..=chunk_key(u64::MAX)) {
            let (_, value) = item?;
            for record in decode_chunk(&value)? {
                if record.0 >= from {
                    if out.len() == limit {
                        return Ok(out);
                    }
                    out.push(record);
                }
            }
        }
        Ok(out)
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
            s.sync().unwrap();
        }
        let s = SledStore::open(&path).unwrap();
        assert_eq!(s.load_meta().unwrap().unwrap().last_seq, 3);
        assert_eq!(s.range(0, 10).unwrap(), vec![(2, b"b".to_vec()), (3, b"c".to_vec())]);
        assert_eq!(s.range(3, 10).unwrap(), vec![(3, b"c".to_vec())]);
        assert_eq!(s.range(2, 1).unwrap().len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]
        /// The chunked sled layout answers exactly what a plain map of records would.
        #[test]
        fn sled_chunks_behave_like_a_map_of_records(ops in proptest::collection::vec((0u64..200, 0u64..40, proptest::prelude::any::<bool>()), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let mut sled = SledStore::open(&dir.path().join("j")).unwrap();
            let mut mem = MemStore::default();
            for (start, len, remove) in ops {
                let seqs: Vec<u64> = (start..start + len).collect();
                let batch = || if remove {
                    Batch { put: vec![], remove: seqs.clone(), meta: Meta::default() }
                } else {
                    Batch { put: seqs.iter().map(|s| (*s, s.to_be_bytes().repeat((*s % 5) as usize + 1))).collect(), remove: vec![], meta: Meta::default() }
                };
                sled.commit(batch()).unwrap();
                mem.commit(batch()).unwrap();
                for (from, limit) in [(0, usize::MAX), (start, 7), (start + len / 2, 100)] {
                    proptest::prop_assert_eq!(sled.range(from, limit).unwrap(), mem.range(from, limit).unwrap());
                }
            }
        }
    }

    #[test]
    fn mem_store_forgets_what_was_not_synced() {
        let mut s = MemStore::default();
        s.commit(Batch { put: vec![(1, vec![1])], remove: vec![], meta: Meta { last_seq: 1, ..Meta::default() } })
            .unwrap();
        s.sync().unwrap();
        s.commit(Batch { put: vec![(2, vec![2])], remove: vec![], meta: Meta { last_seq: 2, ..Meta::default() } })
            .unwrap();
        let cut = s.after_power_cut();
        assert_eq!(cut.events.len(), 1);
        assert_eq!(cut.meta.unwrap().last_seq, 1);
    }
}
