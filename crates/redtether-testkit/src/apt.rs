//! Debian packages the tests need, installed with apt-get when missing: once per machine,
//! serialised across test processes by a lock file under the target directory, the package
//! lists fetched again when the first try fails (missing or stale). A package that starts a
//! system service the tests do not want (slapd, prometheus) has it stopped and disabled again
//! when this installed it.

use std::path::Path;
use std::process::{Command, Stdio};

/// What to install, and how to tell it is there.
pub struct Need<'a> {
    /// The lock file's name (one per package set).
    pub lock: &'a str,
    /// Files that are there once the packages are: nothing is installed while all exist. The
    /// first is the unwanted service's program, if there is one.
    pub programs: &'a [&'a str],
    /// The packages, without recommended ones.
    pub packages: &'a [&'a str],
    /// A service the packages start that the tests do not want running.
    pub unwanted_service: Option<&'a str>,
    /// What the tests need it for, for the failure message.
    pub for_what: &'a str,
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        // No debconf questions (slapd's would ask for a domain and an admin password).
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs `need.packages` unless every one of `need.programs` exists.
pub fn ensure(need: &Need<'_>) {
    let lock_dir = Path::new(env!("REDTETHER_TARGET_TMPDIR")).join("test-deps");
    std::fs::create_dir_all(&lock_dir).unwrap();
    let lock_file = std::fs::File::create(lock_dir.join(need.lock)).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    let present = || need.programs.iter().all(|p| Path::new(p).is_file());
    if present() {
        return;
    }
    // The service's program is the first: a service that was there before is left alone.
    let had_service = need.programs.first().is_some_and(|p| Path::new(p).is_file());
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(need.packages);
    let installed = run("apt-get", &install) || (run("apt-get", &["update", "-qq"]) && run("apt-get", &install));
    assert!(
        installed && present(),
        "cannot install {} (apt-get install {}, as root on Debian) for {}",
        need.packages.join(" "),
        need.packages.join(" "),
        need.for_what
    );
    if let Some(service) = need.unwanted_service.filter(|_| !had_service) {
        if Path::new("/run/systemd/system").is_dir() {
            run("systemctl", &["disable", "--now", &format!("{service}.service")]);
        } else {
            // Without systemd (a container), invoke-rc.d started it only if policy-rc.d let it.
            run("service", &[service, "stop"]);
            run("update-rc.d", &[service, "disable"]);
        }
    }
}
