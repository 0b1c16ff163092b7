//! Opening a sled database, waiting out a lock that is about to be released, and making its
//! writes durable.
//!
//! sled 0.34's `flush()` ends in `sync_file_range`, which neither flushes the device's write
//! cache nor persists the log file's new length: after a power cut, "flushed" writes can be gone
//! (sled issue #1452). [`LogFile::sync`] therefore follows every flush with `fdatasync` of
//! sled's log file — fsync applies to the inode, so a handle of our own is enough.
//!
//! sled locks its `db` file while a handle is open, and releases the lock only when its
//! background I/O threads let go of the file, a moment *after* the last `Db` is dropped. A
//! process that closes a database and opens it again (the journal after a reset, the tests that
//! check what survives a reopen) can therefore find it still locked by itself. Such a database is
//! healthy and must never be treated as damaged, so a held lock is retried for a while and then
//! reported as its own error, distinct from every other failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a lock may stay held before the open gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Someone still holds the database's lock after [`LOCK_WAIT`].
    #[error("{} is locked by another open handle", path.display())]
    Locked { path: PathBuf },
    #[error(transparent)]
    Db(#[from] sled::Error),
}

/// Opens `config`'s database at `dir`, retrying while its lock is held, for at most `wait`.
pub fn open(config: &sled::Config, dir: &Path, wait: Duration) -> Result<sled::Db, OpenError> {
    let deadline = Instant::now() + wait;
    loop {
        match config.open() {
            Err(e) if is_lock_contention(&e) => {
                if Instant::now() >= deadline {
                    return Err(OpenError::Locked { path: dir.to_path_buf() });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// sled's log file in a database's folder, held open to sync it.
#[derive(Debug)]
pub struct LogFile {
    file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Flush(#[from] sled::Error),
    /// `fdatasync` failed (a full disk, a failing device).
    #[error("cannot sync {}: {source}", path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LogFile {
    /// The log of the database open at `dir`.
    pub fn open(dir: &Path) -> Result<LogFile, SyncError> {
        let path = dir.join("db");
        match File::open(&path) {
            Ok(file) => Ok(LogFile { file, path }),
            Err(source) => Err(SyncError::Sync { path, source }),
        }
    }

    /// Makes every write to `db` so far durable: sled's flush, then `fdatasync` of its log.
    pub fn sync(&self, db: &sled::Db) -> Result<(), SyncError> {
        db.flush()?;
        self.file.sync_data().map_err(|source| SyncError::Sync { path: self.path.clone(), source })
    }
}

/// sled reports a held lock only as an I/O error of kind `Other` with this text.
fn is_lock_contention(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().starts_with("could not acquire lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_released_while_waiting_is_acquired() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path());
        let held = open(&config, dir.path(), LOCK_WAIT).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        open(&config, dir.path(), LOCK_WAIT).expect("the lock is acquired once released");
        releaser.join().unwrap();
    }

    #[test]
    fn a_lock_held_past_the_wait_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path());
        let _held = open(&config, dir.path(), LOCK_WAIT).unwrap();
        let second = sled::Config::new().path(dir.path());
        match open(&second, dir.path(), Duration::from_millis(100)) {
            Err(OpenError::Locked { path }) => assert_eq!(path, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
    }
}
