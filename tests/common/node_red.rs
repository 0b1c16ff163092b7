//! The Node-RED the tests run: installed once from `tests/fixtures/node-red/package-lock.json`
//! with `npm ci` into the target directory, and reused while the lockfile is unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node-red")
}

/// Where the fixture is installed.
pub fn install_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-deps/node-red")
}

/// The installed `red.js`, installing it first if needed (serialised across test processes).
pub fn red_js() -> PathBuf {
    let dir = install_dir();
    let red_js = dir.join("node_modules/node-red/red.js");
    let lock_src = std::fs::read(fixture().join("package-lock.json")).expect("fixture lockfile");
    let installed_from = dir.join(".installed-lockfile");
    std::fs::create_dir_all(&dir).unwrap();
    let lock_file = std::fs::File::create(dir.with_extension("lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    if red_js.is_file() && std::fs::read(&installed_from).ok().as_deref() == Some(&lock_src[..]) {
        return red_js;
    }
    for name in ["package.json", "package-lock.json"] {
        std::fs::copy(fixture().join(name), dir.join(name)).unwrap();
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .expect("npm must be installed to run the tests");
    assert!(status.success(), "npm ci of the Node-RED fixture failed: {status}");
    assert!(red_js.is_file(), "npm ci did not install {}", red_js.display());
    std::fs::write(&installed_from, &lock_src).unwrap();
    red_js
}

/// The exact Node-RED version the lockfile pins.
pub fn pinned_version() -> String {
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("package-lock.json")).unwrap()).unwrap();
    lock["packages"]["node_modules/node-red"]["version"].as_str().unwrap().to_string()
}
