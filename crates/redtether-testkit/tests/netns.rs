//! The network-namespace harness itself (`redtether_testkit::netns`), as root: processes inside
//! reach servers on the host side over TCP always and over UDP unless blocked, blocking drops
//! UDP both ways without failing the sender, loopback inside keeps working, the host's default
//! route is untouched, and nothing is left behind — not by a dropped namespace, nor by a test
//! process that died without dropping its own.

use redtether_testkit::netns::{self, Netns};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A UDP echo on the host side, counting what arrives and noting from where.
struct UdpEcho {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    last_peer: Arc<std::sync::Mutex<Option<SocketAddr>>>,
}

fn udp_echo(ip: Ipv4Addr) -> UdpEcho {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    let addr = socket.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let last_peer = Arc::new(std::sync::Mutex::new(None));
    let (count, peer_seen) = (received.clone(), last_peer.clone());
    // Ends with the test process; it holds nothing but this socket.
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            *peer_seen.lock().unwrap() = Some(peer);
            let _ = socket.send_to(&buf[..n], peer);
        }
    });
    UdpEcho { addr, received, last_peer }
}

/// A TCP echo on `0.0.0.0`, as a hub binds: reached from inside at the host side's address.
fn tcp_echo() -> u16 {
    let listener = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A process inside sends `ping` over `proto` (`udp` or `tcp`, bash's /dev/<proto>) and prints
/// what comes back within 2 s; `None` if nothing does.
fn probe(ns: &Netns, proto: &str, host: Ipv4Addr, port: u16) -> Option<String> {
    let script = format!("exec 3<>/dev/{proto}/$0/$1 && printf ping >&3 && timeout 2 head -c 4 <&3");
    let out = ns.command("bash").args(["-c", &script, &host.to_string(), &port.to_string()]).output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !answer.is_empty()).then_some(answer)
}

/// From a socket inside: whether a datagram the host side sends to it arrives within 1 s.
fn inbound_udp_arrives(ns: &Netns) -> bool {
    let inside = ns.ns_ip();
    let socket = ns.run(move || UdpSocket::bind((inside, 0)).unwrap());
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let sender = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    sender.send_to(b"hello", socket.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    socket.recv_from(&mut buf).is_ok_and(|(n, _)| &buf[..n] == b"hello")
}

/// From sockets inside: a datagram over the namespace's own loopback.
fn loopback_udp_works(ns: &Netns) -> bool {
    ns.run(|| {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        a.send_to(b"lo", b.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 4];
        b.recv_from(&mut buf).is_ok_and(|(n, _)| &buf[..n] == b"lo")
    })
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("/usr/sbin/ip").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn namespaces() -> String {
    ip(&["netns", "list"])
}

#[test]
fn udp_is_answered_unless_blocked_and_tcp_always_works() {
    let default_routes = ip(&["-4", "route", "show", "default"]);
    let ns = Netns::new();
    assert!(namespaces().contains(ns.name()), "{}", namespaces());
    assert_eq!(ip(&["-4", "route", "show", "default"]), default_routes, "the host's default route is untouched");
    let udp = udp_echo(ns.host_ip());
    let tcp = tcp_echo();

    assert_eq!(probe(&ns, "udp", ns.host_ip(), udp.addr.port()).as_deref(), Some("ping"));
    assert_eq!(udp.received.load(Ordering::SeqCst), 1);
    assert_eq!(*udp.last_peer.lock().unwrap().as_ref().map(|p| p.ip()).as_ref().unwrap(), ns.ns_ip());
    assert_eq!(probe(&ns, "tcp", ns.host_ip(), tcp).as_deref(), Some("ping"));
    assert!(inbound_udp_arrives(&ns));

    ns.block_udp();
    ns.block_udp(); // idempotent
    assert_eq!(probe(&ns, "udp", ns.host_ip(), udp.addr.port()), None, "UDP passed while blocked");
    assert_eq!(udp.received.load(Ordering::SeqCst), 1, "the datagram left the namespace while blocked");
    // Dropped on the path, not refused to the sender: sending still succeeds inside.
    let target = udp.addr;
    let sent = ns.run(move || UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"lost", target).map_err(|e| e.kind()));
    assert_eq!(sent, Ok(4));
    assert!(!inbound_udp_arrives(&ns), "UDP came in while blocked");
    assert!(loopback_udp_works(&ns), "loopback UDP inside is not blocked");
    assert_eq!(probe(&ns, "tcp", ns.host_ip(), tcp).as_deref(), Some("ping"), "TCP works while UDP is blocked");
    assert_eq!(udp.received.load(Ordering::SeqCst), 1);

    ns.allow_udp();
    ns.allow_udp(); // idempotent
    assert_eq!(probe(&ns, "udp", ns.host_ip(), udp.addr.port()).as_deref(), Some("ping"));
    assert_eq!(udp.received.load(Ordering::SeqCst), 2);
    assert!(inbound_udp_arrives(&ns));
    assert_eq!(probe(&ns, "tcp", ns.host_ip(), tcp).as_deref(), Some("ping"));

    let (name, host_ip) = (ns.name().to_string(), ns.host_ip());
    drop(ns);
    assert!(!namespaces().contains(&name), "{name} is left: {}", namespaces());
    assert!(!ip(&["-4", "-o", "addr"]).contains(&format!("{host_ip}/30")), "the host side's veth is left");
    assert_eq!(ip(&["-4", "route", "show", "default"]), default_routes);
}

#[test]
fn namespaces_of_dead_test_processes_are_removed_and_live_ones_get_their_own_subnet() {
    // A namespace and veth as a test process that was killed would leave them.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("redtether-{dead}-0");
    let stale_if = format!("rt{dead}h0");
    let run = |args: &[&str]| assert!(Command::new("/usr/sbin/ip").args(args).status().unwrap().success(), "{args:?}");
    let lock = netns::creation_lock();
    run(&["netns", "add", &stale]);
    run(&["link", "add", &stale_if, "type", "veth", "peer", "name", &format!("rt{dead}n0"), "netns", &stale]);
    assert!(namespaces().contains(&stale));
    drop(lock);

    let first = Netns::new();
    assert!(!namespaces().contains(&stale), "the dead process's namespace is left: {}", namespaces());
    assert!(!ip(&["link", "show"]).contains(&stale_if), "the dead process's veth is left");

    // Two at once: each its own /30, each reaching its own host side.
    let second = Netns::new();
    let subnet = |ip: Ipv4Addr| u32::from(ip) & !3;
    assert_ne!(subnet(first.host_ip()), subnet(second.host_ip()));
    for ns in [&first, &second] {
        assert_eq!(subnet(ns.host_ip()), subnet(ns.ns_ip()));
        let tcp = tcp_echo();
        assert_eq!(probe(ns, "tcp", ns.host_ip(), tcp).as_deref(), Some("ping"), "{}", ns.name());
    }
}

#[test]
fn a_test_that_panics_leaves_no_namespace_or_veth() {
    let made = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new();
        *made.lock().unwrap() = Some((ns.name().to_string(), ns.host_ip()));
        ns.block_udp();
        panic!("the test fails with its namespace in use");
    }));
    assert!(outcome.is_err());
    let (name, host_ip) = made.into_inner().unwrap().expect("the namespace was made");
    assert!(!namespaces().contains(&name), "{name} is left: {}", namespaces());
    assert!(!ip(&["-4", "-o", "addr"]).contains(&format!("{host_ip}/30")), "the host side's veth is left");
}
