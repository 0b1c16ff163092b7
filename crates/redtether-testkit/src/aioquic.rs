//! An independent QUIC client (Python's aioquic), so that our own quinn client is not the only
//! judge of what the hub accepts. Installed once from `tests/fixtures/aioquic/requirements.txt`
//! with `pip install --target` into the target directory, reused while that file is unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    crate::repo_root().join("tests/fixtures/aioquic")
}

/// The directory to put on `PYTHONPATH`, installing aioquic first if needed (serialised across
/// test processes).
fn site_packages() -> PathBuf {
    let dir = Path::new(env!("REDTETHER_TARGET_TMPDIR")).join("test-deps/aioquic");
    let requirements = std::fs::read(fixture().join("requirements.txt")).expect("fixture requirements");
    let installed_from = dir.join(".installed-requirements");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let lock_file = std::fs::File::create(dir.with_extension("lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    if std::fs::read(&installed_from).ok().as_deref() == Some(&requirements[..]) {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
        ])
        .arg(&dir)
        .arg("-r")
        .arg(fixture().join("requirements.txt"))
        .status()
        .expect("python3 with pip must be installed to run the tests");
    assert!(status.success(), "pip install of the aioquic fixture failed: {status}");
    std::fs::write(&installed_from, &requirements).unwrap();
    dir
}

/// How the hub answered one aioquic connection attempt (fields as `probe.py` documents them).
#[derive(Debug, serde::Deserialize)]
pub struct ProbeResult {
    pub handshake: bool,
    pub welcome: bool,
    pub closed: Option<Closed>,
}

#[derive(Debug, serde::Deserialize)]
pub struct Closed {
    pub application: bool,
    pub error_code: u64,
    pub reason: String,
}

/// Connects to `addr` trusting `ca_pem`, presenting `cert_and_key` (PEM files) when given.
pub fn probe(addr: &str, ca_pem: &Path, cert_and_key: Option<(&Path, &Path)>) -> ProbeResult {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", site_packages()).arg(fixture().join("probe.py")).args([host, port]).arg(ca_pem);
    if let Some((cert, key)) = cert_and_key {
        command.arg(cert).arg(key);
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "probe.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("probe.py said {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
}
