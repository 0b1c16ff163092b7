//! Opening a sled database, waiting out a lock that is about to be released.
//!
//! sled locks its `db` file while a handle is open, and releases the lock only when its
//! background I/O threads let go of the file, a moment *after* the last `Db` is dropped. A
//! process that closes a database and opens it again (the journal after a reset, the tests that
//! check what survives a reopen) can therefore find it still locked by itself. Such a database is
//! healthy and must never be treated as damaged, so a held lock is retried for a while and then
//! reported as its own error, distinct from every other failure.

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
