//! Living under systemd, without systemd: sd_notify messages read from a datagram socket the
//! test binds (path and abstract), watchdog pings, and journald's native protocol read by a
//! stand-in journal in a private mount namespace.

use redtether_testkit as common;

use common::agent::Agent;
use nix::sys::signal::Signal;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Collects notifications until `stop` matches one, or the timeout passes.
fn collect(socket: &UnixDatagram, timeout: Duration, mut stop: impl FnMut(&str) -> bool) -> Vec<String> {
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 4096];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = stop(&msg);
            messages.push(msg);
            if done {
                break;
            }
        }
    }
    messages
}

fn notify_lifecycle(socket: UnixDatagram, notify_socket: &str) {
    let mut agent = Agent::start_with(
        &format!("{}\nhealth_interval = \"500ms\"", common::agent::fixture_node_red()),
        &[("NOTIFY_SOCKET", notify_socket), ("WATCHDOG_USEC", "400000")],
    );
    let mut watchdogs = 0;
    let startup = collect(&socket, Duration::from_secs(60), |m| {
        watchdogs += m.contains("WATCHDOG=1") as u32;
        m.contains("STATUS=Node-RED running") && watchdogs >= 3
    });
    let ready = startup.iter().position(|m| m.contains("READY=1")).expect("READY=1 sent");
    assert!(startup[ready].contains(&format!("MAINPID={}", agent.pid())), "{}", startup[ready]);
    let running =
        startup.iter().position(|m| m.contains("STATUS=Node-RED running")).expect("STATUS on reaching running");
    assert!(ready < running, "READY once started, before healthy: {startup:?}");
    assert!(watchdogs >= 3, "watchdog pinged at half of WATCHDOG_USEC: {startup:?}");

    // Node-RED gets none of systemd's variables: its READY or WATCHDOG would count as ours.
    let pid = agent.status()["node_red"]["pid"].as_u64().unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    for var in ["NOTIFY_SOCKET=", "WATCHDOG_USEC="] {
        assert!(!env.split(|&b| b == 0).any(|e| e.starts_with(var.as_bytes())), "{var} leaked to Node-RED");
    }

    agent.signal(Signal::SIGTERM);
    let shutdown = collect(&socket, Duration::from_secs(20), |m| m.contains("STOPPING=1"));
    assert!(shutdown.iter().any(|m| m.contains("STOPPING=1")), "STOPPING=1 sent: {shutdown:?}");
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn the_hub_reports_ready_pings_its_watchdog_and_says_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let mut hub = std::process::Command::new(common::fresh_hub_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut watchdogs = 0;
    let startup = collect(&socket, Duration::from_secs(30), |m| {
        watchdogs += m.contains("WATCHDOG=1") as u32;
        watchdogs >= 3
    });
    assert!(startup.iter().any(|m| m.contains("READY=1")), "READY=1 sent: {startup:?}");
    assert!(watchdogs >= 3, "watchdog pinged at half of WATCHDOG_USEC: {startup:?}");
    common::send_signal(hub.id(), Signal::SIGTERM);
    let shutdown = collect(&socket, Duration::from_secs(20), |m| m.contains("STOPPING=1"));
    assert!(shutdown.iter().any(|m| m.contains("STOPPING=1")), "STOPPING=1 sent: {shutdown:?}");
    assert_eq!(hub.wait().unwrap().code(), Some(0));
}

#[test]
fn notifies_a_path_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    notify_lifecycle(socket, path.to_str().unwrap());
}

#[test]
fn notifies_an_abstract_socket() {
    let name = format!("redtether-test-notify-{}", std::process::id());
    let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    notify_lifecycle(socket, &format!("@{name}"));
}

#[test]
fn status_changes_are_sent_as_status_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let agent = Agent::start_with(
        "command = [\"node\", \"-e\", \"process.exit(2)\", \"--\"]\nrestart_backoff_min = \"100ms\"\nrestart_backoff_max = \"300ms\"\ncrash_loop_restarts = 2",
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let messages = collect(&socket, Duration::from_secs(30), |m| m.contains("STATUS=Node-RED crash loop"));
    assert!(messages.iter().any(|m| m.contains("STATUS=Node-RED backoff: exited with code 2")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("STATUS=Node-RED crash loop")), "{messages:?}");
    drop(agent);
}

#[test]
fn logs_structured_fields_to_journald_when_stderr_is_the_journal() {
    if !nix::unistd::geteuid().is_root() || std::process::Command::new("unshare").arg("--version").output().is_err() {
        panic!("this test needs root and unshare(1) to give the agent a private /run/systemd");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, common::agent::config(dir.path(), &common::agent::fixture_node_red())).unwrap();
    let journal = dir.path().join("journal.bin");
    let stderr_file = dir.path().join("stderr");
    // In a private mount namespace: a tmpfs on /run/systemd, a stand-in journald bound to
    // /run/systemd/journal/socket writing each datagram (NUL-separated) to a file, then the
    // agent with JOURNAL_STREAM naming its own stderr.
    let receiver = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind('/run/systemd/journal/socket')\nf=open({:?},'ab',0)\nprint('bound',flush=True)\nwhile True:\n    d=s.recv(1<<20); f.write(len(d).to_bytes(4,'little')+d)\n",
        journal.display().to_string()
    );
    let script = format!(
        r#"set -e
mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/journal
python3 -c "$RECEIVER" > {dir}/receiver.out 2>&1 &
receiver=$!
trap 'kill $receiver' EXIT
while ! grep -q bound {dir}/receiver.out 2>/dev/null; do sleep 0.05; done
exec 2>{stderr}
export JOURNAL_STREAM="$(stat -L -c '%d:%i' /proc/self/fd/2)"
{bin} run --config {config} &
agent=$!
for i in $(seq 1 600); do grep -q 'Node-RED is up' {journal} 2>/dev/null && break; sleep 0.05; done
kill -TERM $agent; wait $agent
"#,
        dir = dir.path().display(),
        stderr = stderr_file.display(),
        bin = common::agent::BIN,
        config = config.display(),
        journal = journal.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("RECEIVER", receiver)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&stderr_file).unwrap_or_default()
    );
    let entries = journal_entries(&std::fs::read(&journal).unwrap());
    let field = |e: &Vec<(String, String)>, name: &str| e.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let started = entries
        .iter()
        .find(|e| field(e, "MESSAGE").as_deref() == Some("redtether agent starting"))
        .expect("start message in the journal");
    assert_eq!(field(started, "SYSLOG_IDENTIFIER").as_deref(), Some("redtether"));
    assert_eq!(field(started, "PRIORITY").as_deref(), Some("6"), "info is syslog's informational");
    assert!(
        field(started, "GATE").unwrap().starts_with("127.0.0.1:"),
        "event fields become journal fields: {started:?}"
    );
    let node_red = entries
        .iter()
        .find(|e| field(e, "MESSAGE").is_some_and(|m| m.contains("Server now running")))
        .expect("Node-RED's output in the journal");
    assert_eq!(field(node_red, "TARGET").as_deref(), Some("nodered"));
    assert_eq!(field(node_red, "STREAM").as_deref(), Some("stdout"));
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(!stderr.contains("redtether agent starting"), "not also on stderr: {stderr}");
}

/// Parses the datagrams the stand-in journal recorded (each prefixed by its u32 LE length) in
/// journald's native protocol: `NAME=value\n`, or `NAME\n` + u64 LE length + value + `\n`.
fn journal_entries(mut bytes: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut entries = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let mut d = &bytes[4..4 + len];
        bytes = &bytes[4 + len..];
        let mut fields = Vec::new();
        while !d.is_empty() {
            let nl = d.iter().position(|&b| b == b'\n').unwrap();
            let line = &d[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                fields.push((
                    String::from_utf8_lossy(&line[..eq]).into_owned(),
                    String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
                ));
                d = &d[nl + 1..];
            } else {
                let name = String::from_utf8_lossy(line).into_owned();
                let n = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = String::from_utf8_lossy(&d[nl + 9..nl + 9 + n]).into_owned();
                fields.push((name, value));
                d = &d[nl + 9 + n + 1..];
            }
        }
        entries.push(fields);
    }
    entries
}
