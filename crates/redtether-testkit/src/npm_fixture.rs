//! npm packages the tests use, each from a committed lockfile in `tests/fixtures/<name>`:
//! installed with `npm ci` into the target directory once (serialised across test processes
//! with a file lock) and reused while the lockfile is unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The committed fixture: its package.json and package-lock.json.
pub fn fixture_dir(name: &str) -> PathBuf {
    crate::repo_root().join("tests/fixtures").join(name)
}

/// Where the fixture is installed.
pub fn install_dir(name: &str) -> PathBuf {
    Path::new(env!("REDTETHER_TARGET_TMPDIR")).join("test-deps").join(name)
}

/// Installs fixture `name` if needed and returns its install folder. `entry` (a path inside
/// it) must exist afterwards; it is also how an install that went missing is noticed.
pub fn install(name: &str, entry: &str) -> PathBuf {
    let dir = install_dir(name);
    let fixture = fixture_dir(name);
    let lock_src = std::fs::read(fixture.join("package-lock.json")).expect("fixture lockfile");
    let installed_from = dir.join(".installed-lockfile");
    std::fs::create_dir_all(&dir).unwrap();
    let lock_file = std::fs::File::create(dir.with_extension("lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    if dir.join(entry).exists() && std::fs::read(&installed_from).ok().as_deref() == Some(&lock_src[..]) {
        return dir;
    }
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .expect("npm must be installed to run the tests");
    assert!(status.success(), "npm ci of the {name} fixture failed: {status}");
    assert!(dir.join(entry).exists(), "npm ci did not install {}", dir.join(entry).display());
    std::fs::write(&installed_from, &lock_src).unwrap();
    dir
}
