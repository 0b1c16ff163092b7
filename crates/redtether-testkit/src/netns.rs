//! A network namespace per test, for tests of what a device does when its network changes under
//! it (UDP blocked, so QUIC cannot get through; UDP allowed again). Root only.
//!
//! [`Netns::new`] makes a namespace `redtether-<pid>-<n>` with `lo` up and a veth pair to the
//! host's namespace: the host side `rt<pid>h<n>` holds [`Netns::host_ip`], the inside
//! `rt<pid>n<n>` [`Netns::ns_ip`], both in a /30 of 10.213.0.0/16 that no address or route of
//! the host overlaps (picked under a lock file, so parallel test processes never share one).
//! Inside there is no other route: processes there reach the host side's address and nothing
//! else. A server the test runs in the host namespace on `host_ip():0` or `0.0.0.0:0` is
//! reachable from inside over TCP and UDP. The host gains only that address and its /30 route
//! on the new interface; its default route and other interfaces are untouched.
//!
//! [`Netns::block_udp`] drops every UDP packet on the inside end of the veth, both ways
//! (nftables, a `netdev` table with `ingress` and `egress` hooks on that device; Debian's
//! `nftables` is installed with apt-get when `nft` is missing). Loopback inside is untouched. The
//! drop happens on the device, as a firewall on the path would: a sender inside gets no error
//! (an `output`-hook drop would fail its `sendmsg` with EPERM, which no real network does), and
//! nothing comes back. [`Netns::allow_udp`] removes the table.
//!
//! Dropping a [`Netns`] kills what still runs inside, deletes the namespace and the veth (even
//! when the test panicked); [`Netns::new`] also removes the namespaces of test processes that
//! died without dropping theirs.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

const IP: &str = "/usr/sbin/ip";
const NFT: &str = "/usr/sbin/nft";
/// Every namespace this harness makes is called `redtether-<pid>-<n>`.
const PREFIX: &str = "redtether-";
/// The nftables table `block_udp` adds inside.
const BLOCK_TABLE: &str = "redtether_block_udp";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Netns {
    /// Makes the namespace and its veth (panics when not root, or when `ip` fails).
    // No `Default`: making kernel objects as root is not what a default value should do.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Netns {
        assert!(nix::unistd::geteuid().is_root(), "network namespace tests need root (ip netns add)");
        // One creation at a time across test processes: the free-subnet check and taking the
        // subnet must not interleave with another's.
        let _lock = creation_lock();
        remove_stale();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let (host_ip, ns_ip) = free_subnet(pid, n);
        let netns = Netns {
            name: format!("{PREFIX}{pid}-{n}"),
            host_if: format!("rt{pid}h{n}"),
            ns_if: format!("rt{pid}n{n}"),
            host_ip,
            ns_ip,
        };
        assert!(netns.host_if.len() <= 15, "interface names are at most 15 bytes: {}", netns.host_if);
        // A namespace of this name can only be a dead process's that had our pid: gone first.
        let _ = ip_quiet(&["netns", "del", &netns.name]);
        let _ = ip_quiet(&["link", "del", &netns.host_if]);
        // From here on a failure panics with `netns` built, so its Drop removes what was made.
        let (name, host_if, ns_if) = (netns.name.as_str(), netns.host_if.as_str(), netns.ns_if.as_str());
        ip(&["netns", "add", name]);
        ip(&["link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", host_if]);
        ip(&["link", "set", host_if, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&["-n", name, "addr", "add", &format!("{ns_ip}/30"), "dev", ns_if]);
        ip(&["-n", name, "link", "set", ns_if, "up"]);
        netns
    }

    /// The namespace's name, as `ip netns` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host side's address: where a server for processes inside listens.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The inside address: what servers on the host see as the peer.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// `program` to run inside (`ip netns exec <name> program`): arguments, environment and
    /// working directory are set on the result as on any `Command`. The process is the
    /// program itself (ip execs it), so its pid is the one to signal.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(IP);
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `f` on a new thread that has joined the namespace, and returns its result: sockets
    /// it makes belong to the namespace wherever they are used afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(Path::new("/run/netns").join(&self.name)).expect("the namespace's file");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the namespace");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Drops all UDP on the inside end of the veth, in and out (loopback is untouched).
    /// Idempotent.
    pub fn block_udp(&self) {
        install_nft();
        let ns_if = &self.ns_if;
        // Adding the table empty and deleting it first makes the script work whether or not
        // it exists, in one transaction.
        self.nft(&format!(
            "table netdev {BLOCK_TABLE}\ndelete table netdev {BLOCK_TABLE}\n\
             table netdev {BLOCK_TABLE} {{\n\
               chain ingress {{ type filter hook ingress device \"{ns_if}\" priority 0; policy accept; meta l4proto udp drop; }}\n\
               chain egress {{ type filter hook egress device \"{ns_if}\" priority 0; policy accept; meta l4proto udp drop; }}\n\
             }}\n"
        ));
    }

    /// Lets UDP through again. Idempotent.
    pub fn allow_udp(&self) {
        install_nft();
        self.nft(&format!("table netdev {BLOCK_TABLE}\ndelete table netdev {BLOCK_TABLE}\n"));
    }

    fn nft(&self, script: &str) {
        use std::io::Write;
        let mut child = self
            .command(NFT)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft runs");
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nft -f in {}: {}\n{script}", self.name, String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name, &self.host_if);
    }
}

/// Kills what still runs in the namespace, deletes it, and the veth with it.
fn remove(name: &str, host_if: &str) {
    if let Ok(out) = ip_quiet(&["netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = ip_quiet(&["netns", "del", name]);
    // Deleting either end of a veth deletes both; the host end is still here if something
    // kept the namespace alive.
    let _ = ip_quiet(&["link", "del", host_if]);
}

/// Removes the namespaces (and veths) of test processes that are gone.
fn remove_stale() {
    let Ok(out) = ip_quiet(&["netns", "list"]) else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some((pid, n)) = name.strip_prefix(PREFIX).and_then(|rest| rest.split_once('-')) else { continue };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u32>()) else { continue };
        if !crate::process_alive(pid) {
            remove(name, &format!("rt{pid}h{n}"));
        }
    }
}

/// A /30 of 10.213.0.0/16 that overlaps no address or route of the host's namespace: (the
/// host side's address, the inside address). Starts at a place that depends on pid and
/// counter, so parallel processes seldom even look at the same subnet.
fn free_subnet(pid: u32, n: u32) -> (Ipv4Addr, Ipv4Addr) {
    let mut taken = Vec::new();
    for args in [&["-4", "-o", "addr", "show"][..], &["-4", "route", "show", "table", "all"][..]] {
        let out = ip_quiet(args).expect("ip lists addresses and routes");
        taken.extend(String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(prefix));
    }
    let start = (pid.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503)) % 16384;
    for i in 0..16384 {
        let index = (start + i) % 16384;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + index * 4;
        let free = taken.iter().all(|&(net, len)| {
            // Overlap: equal under the shorter of the two masks. The default route (len 0)
            // is not an address anybody holds.
            let shorter = len.min(30);
            let mask = u32::MAX.checked_shl(32 - shorter).unwrap_or(0);
            len == 0 || (net & mask) != (base & mask)
        });
        if free {
            return (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        }
    }
    panic!("no free /30 in 10.213.0.0/16 for a test namespace");
}

/// `a.b.c.d/len` or `a.b.c.d` (a /32) as (address, length).
fn prefix(token: &str) -> Option<(u32, u32)> {
    let (addr, len) = token.split_once('/').unwrap_or((token, "32"));
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len))
}

fn ip(args: &[&str]) {
    let out = ip_quiet(args).unwrap_or_else(|e| panic!("{IP} {args:?}: {e}"));
    assert!(out.status.success(), "{IP} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn ip_quiet(args: &[&str]) -> std::io::Result<Output> {
    let out = Command::new(IP).args(args).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

/// The lock [`Netns::new`] holds across test processes while it cleans up and makes a
/// namespace. A test that builds a namespace by hand (as a dead process would have left it)
/// holds it too, so that no `Netns::new` meanwhile removes half of it.
pub fn creation_lock() -> nix::fcntl::Flock<std::fs::File> {
    lock("netns.lock")
}

/// An exclusive lock on a file under the tests' temporary folder, held until dropped.
fn lock(file: &str) -> nix::fcntl::Flock<std::fs::File> {
    let dir = Path::new(env!("REDTETHER_TARGET_TMPDIR")).join("test-deps");
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::File::create(dir.join(file)).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap()
}

/// Installs Debian's `nftables` with apt-get if `nft` is missing, serialised across test
/// processes.
fn install_nft() {
    crate::apt::ensure(&crate::apt::Need {
        lock: "nftables.lock",
        programs: &[NFT],
        packages: &["nftables"],
        unwanted_service: None,
        for_what: "the network namespace tests",
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_read_from_ip_output_tokens() {
        assert_eq!(prefix("10.213.4.0/30"), Some((u32::from(Ipv4Addr::new(10, 213, 4, 0)), 30)));
        assert_eq!(prefix("192.0.2.1"), Some((u32::from(Ipv4Addr::new(192, 0, 2, 1)), 32)));
        assert_eq!(prefix("dev"), None);
        assert_eq!(prefix("fd00::1/64"), None);
        assert_eq!(prefix("10.0.0.0/40"), None);
    }
}
