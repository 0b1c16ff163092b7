//! A daemon's state directory: its lock (one daemon per directory), its control socket's
//! place, and how private files in it are written (atomically, 0600). Each daemon adds its own
//! layout on top (the agent's `state_dir` module, the hub's `keys` and `store`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Errors of the state directory: each names the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// A file or directory could not be created, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another daemon holds the lock on this state directory.
    #[error("another {owner} is already running with state directory {}", path.display())]
    Locked { path: PathBuf, owner: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateDirError + '_ {
    move |source| StateDirError::Io { path: path.to_path_buf(), source }
}

/// Paths inside one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// Who keeps its state here, for the message when the lock is taken.
    owner: &'static str,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into(), owner: "redtether daemon" }
    }

    /// Names the daemon whose directory this is (`redtether agent`, `redtether hub`), for the
    /// message a second one gets.
    pub fn owned_by(mut self, owner: &'static str) -> Self {
        self.owner = owner;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// Creates the directory (0700) if it is missing.
    pub fn create(&self) -> Result<(), StateDirError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.root).map_err(io_err(&self.root))
    }

    /// Takes the daemon's exclusive lock; held until the returned guard is dropped.
    pub fn lock(&self) -> Result<StateLock, StateDirError> {
        let path = self.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(StateDirError::Locked { path: self.root.clone(), owner: self.owner })
            }
            Err((_, errno)) => Err(StateDirError::Io { path, source: errno.into() }),
        }
    }

    /// Reads a secret file, or creates it with `make()` (0600) when it does not exist yet.
    pub fn read_or_create_secret(&self, path: &Path, make: impl FnOnce() -> String) -> Result<String, StateDirError> {
        match fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Ok(_) => self.replace_secret(path, make),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.replace_secret(path, make),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    fn replace_secret(&self, path: &Path, make: impl FnOnce() -> String) -> Result<String, StateDirError> {
        let value = make();
        write_private(path, value.as_bytes())?;
        Ok(value)
    }
}

/// The held state-directory lock.
#[derive(Debug)]
pub struct StateLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename) with mode 0600, so a reader
/// or a power cut never sees half a file and no other user ever can read it.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), StateDirError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp =
        dir.join(format!(".{}.tmp", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let mut file =
        OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io_err(&tmp))?;
    // The mode above only applies to new files; an old temp file could have other bits.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A random secret of `bytes` bytes, hex-encoded.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn secret_is_created_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let path = sd.root().join("secret");
        let first = sd.read_or_create_secret(&path, || "abc".into()).unwrap();
        let second = sd.read_or_create_secret(&path, || "other".into()).unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("abc", "abc"));
    }

    #[test]
    fn second_lock_is_refused_while_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path()).owned_by("redtether hub");
        sd.create().unwrap();
        let held = sd.lock().unwrap();
        let second = sd.lock().unwrap_err();
        assert!(matches!(second, StateDirError::Locked { .. }));
        assert!(second.to_string().starts_with("another redtether hub is already running"), "{second}");
        drop(held);
        sd.lock().unwrap();
    }

    #[test]
    fn random_secrets_differ() {
        assert_ne!(random_secret(16), random_secret(16));
        assert_eq!(random_secret(16).len(), 32);
    }
}
