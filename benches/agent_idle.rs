//! Idle memory and time-to-READY of the agent, against the same figures for Node-RED itself,
//! measured in one run on one machine.
//!
//! `cargo bench --bench agent_idle` (figures and the command are kept in BENCHMARKS.md).
//!
//! Agent: exec → READY=1 on a notify socket this bench binds; RSS of the agent process alone
//! (Node-RED excluded) after Node-RED is up and everything has idled for a few seconds.
//! Baseline: Node-RED started directly by this bench with an equivalent settings file: exec →
//! its HTTP port answering, and its idle RSS.

use redtether_testkit::node_red;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const IDLE: Duration = Duration::from_secs(5);
const BIN: &str = env!("CARGO_BIN_EXE_redtether");

/// One line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

struct Sample {
    ready_ms: f64,
    rss_kib: u64,
    /// The process's own heap and stacks (`RssAnon`).
    anon_kib: u64,
    /// File-backed pages mapped in: its code and the shared libraries' (`RssFile`).
    file_kib: u64,
    /// RSS again after it served gate requests (the code an idle agent gave back comes back
    /// as far as the work needs it).
    after_work_kib: u64,
}

impl Sample {
    fn read(pid: u32, ready_ms: f64) -> Sample {
        Sample {
            ready_ms,
            rss_kib: rss_kib(pid),
            anon_kib: status_kib(pid, "RssAnon"),
            file_kib: status_kib(pid, "RssFile"),
            after_work_kib: 0,
        }
    }
}

fn agent_run(red_js: &str, dir: &std::path::Path) -> (Sample, u64) {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[node_red]\ncommand = [\"node\", {red_js:?}]\n[gate]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    let notify = dir.join("notify");
    let _ = std::fs::remove_file(&notify);
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let ready_ms = loop {
        let n = socket.recv(&mut buf).expect("READY=1 within 30 s");
        if buf[..n].windows(7).any(|w| w == b"READY=1") {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
    };
    let status = || -> Option<serde_json::Value> {
        let out = Command::new(BIN).args(["status", "--json", "--config"]).arg(&config).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let node_pid = wait_until(Duration::from_secs(60), || {
        let s = status()?;
        (s["node_red"]["state"] == "running").then(|| s["node_red"]["pid"].as_u64().unwrap() as u32)
    });
    std::thread::sleep(IDLE);
    let mut sample = Sample::read(child.id(), ready_ms);
    let node_rss = rss_kib(node_pid);
    let gate = status().and_then(|s| s["gate"]["listen"].as_str().map(str::to_string)).expect("the gate's address");
    for _ in 0..GATE_REQUESTS {
        gate_request(&gate);
    }
    status();
    std::thread::sleep(Duration::from_secs(1));
    sample.after_work_kib = rss_kib(child.id());
    stop(child);
    (sample, node_rss)
}

/// Requests made to the gate after the idle reading.
const GATE_REQUESTS: usize = 1000;

/// One request to the gate's editor path on a new connection (answered 401: no credentials).
fn gate_request(gate: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gate).unwrap();
    s.write_all(b"GET /device-editor/ HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1."), "the gate answers");
}

fn node_red_alone(red_js: &str) -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = dir.path().join("settings.js");
    std::fs::write(
        &settings,
        format!("module.exports = {{ uiHost: \"127.0.0.1\", uiPort: {port}, httpAdminRoot: \"/device-editor\", httpNodeRoot: \"/\", credentialSecret: \"bench\", editorTheme: {{ projects: {{ enabled: false }} }} }};\n"),
    )
    .unwrap();
    let started = Instant::now();
    let child = Command::new("node")
        .arg(red_js)
        .arg("--settings")
        .arg(&settings)
        .arg("--userDir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Node-RED's own readiness: its editor answers on the port.
    let ready_ms = wait_until(Duration::from_secs(60), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /device-editor/ HTTP/1.0\r\n\r\n").ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        head.ends_with(b"200").then(|| started.elapsed().as_secs_f64() * 1000.0)
    });
    std::thread::sleep(IDLE);
    let sample = Sample::read(child.id(), ready_ms);
    stop(child);
    sample
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench targets too; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let red_js = node_red::red_js().display().to_string();
    let mut agent = Vec::new();
    let mut supervised_node = Vec::new();
    let mut alone = Vec::new();
    // The first start makes the state directory (journal, secrets, first-run owner); the others
    // start on it, as a device does after every reboot.
    let state = tempfile::tempdir().unwrap();
    let (cold, _) = agent_run(&red_js, state.path());
    for _ in 0..RUNS {
        let (sample, node_rss) = agent_run(&red_js, state.path());
        agent.push(sample);
        supervised_node.push(node_rss as f64);
        alone.push(node_red_alone(&red_js));
    }
    let a_ready = median(agent.iter().map(|s| s.ready_ms).collect());
    let a_rss = median(agent.iter().map(|s| s.rss_kib as f64).collect()) / 1024.0;
    let n_ready = median(alone.iter().map(|s| s.ready_ms).collect());
    let n_rss = median(alone.iter().map(|s| s.rss_kib as f64).collect()) / 1024.0;
    let s_rss = median(supervised_node) / 1024.0;
    println!("agent_idle: medians of {RUNS} runs, {} s idle before reading RSS", IDLE.as_secs());
    println!("| metric | redtether agent | Node-RED alone | agent / Node-RED |");
    println!("|---|---|---|---|");
    println!(
        "| exec → ready (agent: READY=1; Node-RED: editor answers) | {a_ready:.1} ms | {n_ready:.0} ms | {:.4} |",
        a_ready / n_ready
    );
    println!("| idle RSS (process alone) | {a_rss:.2} MiB | {n_rss:.1} MiB | {:.3} |", a_rss / n_rss);
    let a_anon = median(agent.iter().map(|s| s.anon_kib as f64).collect()) / 1024.0;
    let a_file = median(agent.iter().map(|s| s.file_kib as f64).collect()) / 1024.0;
    let n_anon = median(alone.iter().map(|s| s.anon_kib as f64).collect()) / 1024.0;
    let n_file = median(alone.iter().map(|s| s.file_kib as f64).collect()) / 1024.0;
    println!("| of which RssAnon (heap, stacks) | {a_anon:.2} MiB | {n_anon:.1} MiB | |");
    println!("| of which RssFile (code, shared libraries) | {a_file:.2} MiB | {n_file:.1} MiB | |");
    println!("| RSS of the Node-RED the agent supervises | | {s_rss:.1} MiB | |");
    let a_after = median(agent.iter().map(|s| s.after_work_kib as f64).collect()) / 1024.0;
    println!("| agent RSS after {GATE_REQUESTS} gate requests and a status query | {a_after:.2} MiB | | |");
    println!("first start on an empty state directory: READY after {:.1} ms", cold.ready_ms);
    // For benches/compare.sh: metric, ours, baseline.
    println!("compare|agent_rss|{a_rss:.2}|{n_rss:.1}");
    println!("compare|agent_rss_anon|{a_anon:.2}|{n_anon:.1}");
    println!("compare|agent_rss_file|{a_file:.2}|{n_file:.1}");
    println!("compare|agent_rss_after_work|{a_after:.2}|{n_rss:.1}");
}
