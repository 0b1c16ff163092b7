//! `redtether-testkit`: what the integration tests share, compiled once for all of them — the
//! real Node-RED and the CycloneDX validator from their committed lockfiles, launchers for a
//! real agent and a real hub with their own state directories, test CAs, aioquic as a foreign
//! QUIC peer, a stand-in npm registry, a real forward proxy (tinyproxy), a real OpenID provider
//! (oidc-provider) and a real LDAP directory (slapd) for single sign-on, a real browser (headless
//! Chromium over WebDriver) for the hub's pages, simulated devices by the hundred against a real
//! hub, network namespaces whose UDP a test can cut, the forgetful filesystem for power cuts, HTTP clients, and small helpers to wait for
//! conditions.

pub mod agent;
pub mod aioquic;
pub mod apt;
pub mod browser;
pub mod cyclonedx;
pub mod forgetful_fs;
pub mod http;
pub mod hub;
pub mod ldap;
pub mod login_load;
pub mod netns;
pub mod node_red;
pub mod npm_fixture;
pub mod npm_registry;
pub mod oidc;
pub mod postgres;
pub mod promtool;
pub mod simulator;
pub mod tinyproxy;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The workspace's top folder (where `tests/fixtures` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// [`hub::HUB_BIN`], after checking it is there and newer than every source it is built from:
/// the root package's tests do not rebuild another package's binary, so a run of one test file
/// after a change to the hub would otherwise test the old hub.
pub fn fresh_hub_bin() -> &'static str {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        let built = std::fs::metadata(hub::HUB_BIN).and_then(|m| m.modified()).unwrap_or_else(|_| {
            panic!(
                "{} is missing: build the workspace first (`cargo build --workspace`; tests/run.sh does)",
                hub::HUB_BIN
            )
        });
        let crates = repo_root().join("crates");
        let sources =
            ["redtether-hub", "redtether-proto", "redtether-pki", "redtether-host"].map(|c| crates.join(c).join("src"));
        if let Some(newer) = sources.iter().filter_map(|dir| newest(dir)).find(|(_, t)| *t > built) {
            panic!(
                "{} is older than {}: rebuild it (`cargo build --workspace`, which tests/run.sh does; \
                 `cargo build --release` before a benchmark)",
                hub::HUB_BIN,
                newer.0.display()
            );
        }
    });
    hub::HUB_BIN
}

/// The most recently modified file under `dir`.
fn newest(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut best: Option<(PathBuf, SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok().map(|t| (path, t))
        };
        if let Some((p, t)) = candidate
            && best.as_ref().is_none_or(|(_, b)| t > *b)
        {
            best = Some((p, t));
        }
    }
    best
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Pids of processes whose environment carries `NAME=value`.
pub fn pids_with_env(name: &str, value: &str) -> Vec<u32> {
    let wanted = format!("{name}={value}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(entry.path().join("environ"))
            && env.split(|&b| b == 0).any(|e| e == wanted.as_bytes())
            && process_alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

pub fn send_signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// Async twin of [`wait_for`].
pub async fn wait_for_async<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The wall clock in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
