//! The journal's write-ahead file: what makes a commit durable with one write and one
//! `fdatasync`.
//!
//! sled 0.34 writes a batch as two log buffers (its batch manifest, then the keys), waits for each
//! with `sync_file_range`, and the journal must still `fdatasync` its log after that (see
//! `redtether_host::sled_open`): three device round trips per commit where a plain file needs one.
//! So each commit's batch is appended here, numbered, and this file alone is synced before the
//! commit is answered; sled takes the same batch in memory and writes it in the background. Once
//! the file passes [`CHECKPOINT_BYTES`], sled is flushed and synced and writing starts again at
//! the file's beginning. After a crash, the batches here since the last checkpoint are applied
//! again (`store::SledHandle::open`): each checkpoint records in sled the number of the last batch
//! it made durable.
//!
//! The file is reused, not emptied (as PostgreSQL recycles its WAL segments): a sync that only
//! overwrites blocks the file already has is one device write, where an append also changes the
//! file's size and makes `fdatasync` write the inode after the data and wait for it (ext4), and
//! emptying the file cost a truncate and a sync of its own at every checkpoint. What the last cycle
//! left behind the newest record is told apart by its number: batches are numbered one after the
//! other, every record written since a checkpoint has a number above the checkpoint's, every one
//! left from before has one at or below it, so reading stops at the first record whose number
//! does not follow the one before it. A record whose write failed is cut off the file and the cut
//! made durable (here, and again when the file is next opened), since its number is used again.
//!
//! Record: `[payload length u32 LE][CRC-32 of the payload u32 LE][payload]`; payload:
//! `[number u64][puts u32]{[seq u64][length u32][bytes]}[removes u32]{[seq u64]}[meta length
//! u32][meta JSON]`. Reading stops at the first record that is cut short, fails its CRC or does
//! not follow the one before it: that is where a crash interrupted the last write, which was never
//! answered, or where the records of an earlier cycle begin.

use super::store::{Batch, Meta};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file's name in the journal's folder.
pub const FILE_NAME: &str = "wal";
/// Size after which the store checkpoints (sled flushed and synced, writing restarted at the
/// file's beginning): small enough to replay in a moment, large enough that the checkpoint's
/// three round trips are rare.
pub const CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;
/// A record longer than this is damage, not a batch (the journal batches at most a few
/// thousand events of a few KiB each).
const MAX_RECORD: usize = 256 * 1024 * 1024;

pub struct Wal {
    file: File,
    path: PathBuf,
    /// Records appended since the last sync, not yet written.
    pending: Vec<u8>,
    /// Bytes of this cycle's records (where the next write goes); the file may be longer.
    len: u64,
}

impl Wal {
    /// Opens (or creates) the file in `dir` and reads the batches it holds, in order.
    pub fn open(dir: &Path) -> io::Result<(Wal, Vec<(u64, Batch)>)> {
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (batches, valid) = decode_all(&bytes);
        // Whatever follows the last whole record is overwritten by the next one. The file's size
        // is made durable first: a failed write that was cut off (`Wal::sync`) stays cut off
        // across a power cut even if that cut could not be synced at the time.
        file.sync_data()?;
        Ok((Wal { file, path, pending: Vec::new(), len: valid as u64 }, batches))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written since the last checkpoint.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Adds batch `number` to what the next [`Wal::sync`] writes.
    pub fn append(&mut self, number: u64, batch: &Batch) {
        encode_into(number, batch, &mut self.pending);
    }

    /// Writes what was appended and makes it durable. On failure nothing of it stays: the
    /// records were written in part or whole without being durable, and are cut off again, so
    /// that a batch reported not recorded cannot come back when the file is next read.
    pub fn sync(&mut self) -> io::Result<()> {
        let written = match self.file.write_all_at(&self.pending, self.len).and_then(|()| self.file.sync_data()) {
            Ok(()) => self.pending.len() as u64,
            Err(e) => {
                self.pending.clear();
                // Shrinking needs no space, and is synced: the next batch takes the same number,
                // and a failed record that a power cut brought back would follow the ones before
                // it. Should either fail, the next open syncs the size again, and the next write
                // goes over the cut-off record. (What it also cuts off of an earlier cycle only
                // costs the next writes their reuse.)
                let _ = self.file.set_len(self.len).and_then(|()| self.file.sync_data());
                return Err(e);
            }
        };
        self.len += written;
        self.pending.clear();
        Ok(())
    }

    /// Starts a new cycle at the file's beginning, once everything in it is durable elsewhere.
    /// Nothing is written: the records left in the file are older than the next one.
    pub fn restart(&mut self) {
        self.len = 0;
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// Appends record `number` for `batch` to `out`.
pub fn encode_into(number: u64, batch: &Batch, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&number.to_le_bytes());
    put_u32(out, batch.put.len());
    for (seq, value) in &batch.put {
        out.extend_from_slice(&seq.to_le_bytes());
        put_u32(out, value.len());
        out.extend_from_slice(value);
    }
    put_u32(out, batch.remove.len());
    for seq in &batch.remove {
        out.extend_from_slice(&seq.to_le_bytes());
    }
    let meta = serde_json::to_vec(&batch.meta).expect("bookkeeping always encodes");
    put_u32(out, meta.len());
    out.extend_from_slice(&meta);
    let payload_len = out.len() - start - 8;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The whole records at the start of `bytes` numbered one after the other, and how many bytes
/// they take.
pub fn decode_all(bytes: &[u8]) -> (Vec<(u64, Batch)>, usize) {
    let mut batches: Vec<(u64, Batch)> = Vec::new();
    let mut at = 0;
    while let Some((record, used)) = decode_one(&bytes[at..]) {
        if batches.last().is_some_and(|(previous, _)| Some(record.0) != previous.checked_add(1)) {
            break;
        }
        batches.push(record);
        at += used;
    }
    (batches, at)
}

fn decode_one(bytes: &[u8]) -> Option<((u64, Batch), usize)> {
    let mut header = Cursor(bytes);
    let len = header.u32()? as usize;
    let crc = header.u32()?;
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(8..8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut c = Cursor(payload);
    let number = c.u64()?;
    let mut batch = Batch::default();
    for _ in 0..c.u32()? {
        let seq = c.u64()?;
        let len = c.u32()? as usize;
        batch.put.push((seq, c.take(len)?.to_vec()));
    }
    for _ in 0..c.u32()? {
        batch.remove.push(c.u64()?);
    }
    let meta_len = c.u32()? as usize;
    batch.meta = serde_json::from_slice::<Meta>(c.take(meta_len)?).ok()?;
    c.0.is_empty().then_some(((number, batch), 8 + len))
}

/// Reads little-endian fields off the front of a slice; `None` when it runs out.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u64) -> Batch {
        Batch {
            put: vec![(n, vec![n as u8; n as usize]), (n + 1, b"x".to_vec())],
            remove: vec![n.saturating_sub(5)],
            meta: Meta { last_seq: n + 1, cursor: n / 2, bytes: n * 10, ..Meta::default() },
        }
    }

    fn same(a: &Batch, b: &Batch) -> bool {
        a.put == b.put && a.remove == b.remove && a.meta == b.meta
    }

    #[test]
    fn records_read_back_as_written_in_order() {
        let mut bytes = Vec::new();
        for n in 1..=5 {
            encode_into(n, &batch(n), &mut bytes);
        }
        let (read, used) = decode_all(&bytes);
        assert_eq!(used, bytes.len());
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        for (n, b) in &read {
            assert!(same(b, &batch(*n)), "batch {n} differs");
        }
    }

    #[test]
    fn a_record_cut_short_ends_the_file_there() {
        let mut bytes = Vec::new();
        encode_into(1, &batch(1), &mut bytes);
        let whole = bytes.len();
        encode_into(2, &batch(2), &mut bytes);
        for cut in whole..bytes.len() {
            let (read, used) = decode_all(&bytes[..cut]);
            assert_eq!((read.len(), used), (1, whole), "cut at {cut}");
        }
    }

    #[test]
    fn a_gap_in_the_numbers_ends_the_file_there() {
        let mut bytes = Vec::new();
        for n in [1, 2, 4, 5] {
            encode_into(n, &batch(n), &mut bytes);
        }
        let (read, _) = decode_all(&bytes);
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_damaged_record_and_everything_after_it_are_not_applied() {
        let mut bytes = Vec::new();
        encode_into(1, &batch(1), &mut bytes);
        let first = bytes.len();
        encode_into(2, &batch(2), &mut bytes);
        encode_into(3, &batch(3), &mut bytes);
        for at in first..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let (read, _) = decode_all(&damaged);
            assert!(read.len() <= 2, "flipping byte {at} let a damaged record through");
            assert_eq!(read[0].0, 1);
            if let Some((n, b)) = read.get(1) {
                // Only a flip inside record 3 leaves record 2 readable, and then as written.
                assert!(*n == 2 && same(b, &batch(2)), "flipping byte {at} changed record 2");
            }
        }
    }

    /// A batch whose record is `size` payload bytes long, whatever its number.
    fn batch_of_size(size: usize) -> Batch {
        Batch { put: vec![(1, vec![7; size])], remove: vec![], meta: Meta::default() }
    }

    #[test]
    fn a_restarted_file_reads_only_its_new_cycle_though_older_records_follow_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        for n in 1..=3 {
            wal.append(n, &batch_of_size(100));
        }
        wal.sync().unwrap();
        let cycle_bytes = wal.len();
        wal.restart();
        drop(wal);
        // Nothing written since the checkpoint: the old cycle reads back (the store skips
        // batches at or below the number its checkpoint recorded).
        let (mut wal, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2, 3]);
        wal.restart();
        // Record 4 takes record 1's place exactly; records 2 and 3 stay intact behind it.
        wal.append(4, &batch_of_size(100));
        wal.sync().unwrap();
        let record_bytes = wal.len();
        drop(wal);
        let path = dir.path().join(FILE_NAME);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), cycle_bytes, "the file was reused in place");
        let (old, _) = decode_all(&std::fs::read(&path).unwrap()[record_bytes as usize..]);
        assert_eq!(old.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![2, 3]);
        let (wal, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![4]);
        assert_eq!(wal.len(), record_bytes);
    }

    #[test]
    fn a_file_is_appended_synced_restarted_and_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, read) = Wal::open(dir.path()).unwrap();
        assert!(read.is_empty());
        wal.append(1, &batch(1));
        wal.append(2, &batch(2));
        wal.sync().unwrap();
        let len = wal.len();
        drop(wal);
        let (mut wal, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(wal.len(), len);
        wal.restart();
        wal.append(4, &batch(4));
        wal.sync().unwrap();
        drop(wal);
        let (_, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn garbage_after_the_last_record_is_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(1, &batch(1));
        wal.sync().unwrap();
        drop(wal);
        // A crash in the middle of writing record 2.
        let mut partial = Vec::new();
        encode_into(2, &batch(2), &mut partial);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&partial[..partial.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut wal, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(read.len(), 1);
        wal.append(2, &batch(3));
        wal.sync().unwrap();
        drop(wal);
        let (_, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2]);
        assert!(same(&read[1].1, &batch(3)), "the second record is the one written after the crash");
    }
}
