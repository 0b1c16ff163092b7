//! Tunnel figures, each against a baseline measured in the same run:
//!
//! 1. mTLS handshake time to the hub, against a server-auth-only handshake to the same hub
//!    (its enrollment ALPN).
//! 2. The agent's RSS with the tunnel up, against the same agent before it is enrolled.
//! 3. Reconnect after the hub is SIGKILLed and started again: hub spawn → agent online,
//!    against hub spawn → hub's control socket answering (its own start time).
//! 4. The hub's CPU and RSS with many idle agents (simulated in this process with the agent's
//!    own QUIC configuration and control-stream cadence), against the same hub with none.
//!
//! `cargo bench --bench tunnel` (figures and the command are kept in BENCHMARKS.md).
//! `AGENTS=500 cargo bench --bench tunnel` for a smaller fleet, `RECONNECTS=25` for more hub
//! restarts; `ONLY=fleet` (or `handshake`, `agent`, `reconnect`, `bulk`) runs one part;
//! `KEEPALIVE=4s` gives the simulated agents, and the real agent of the reconnect rounds, another
//! `[tunnel] keepalive` than the default. `bulk` is the raw-quinn baseline of
//! benches/remote_editor.sh.

use redtether_testkit as common;

use common::agent::Agent;
use common::hub::{Hub, enroll};
use redtether::config::{ProxyChoice, TransportChoice};
use redtether::identity::Identity;
use redtether::state_dir::StateDir;
use redtether_proto::wire::{AgentFrame, DeviceStatus, ENROLL_ALPN, FrameDecoder, HubFrame, NodeRedState, encode};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HANDSHAKES: usize = 200;
const RECONNECTS: usize = 7;
const MEASURE: Duration = Duration::from_secs(30);
/// The agent's defaults (src/tunnel): keep-alive, heartbeat, and how often it checks whether its
/// status changed.
const KEEPALIVE: Duration = redtether_pki::quic::DEFAULT_KEEPALIVE;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
const STATUS_EVERY: Duration = Duration::from_secs(10);

fn main() {
    let agents: usize = std::env::var("AGENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let keepalive = std::env::var("KEEPALIVE")
        .ok()
        .map(|v| humantime::parse_duration(&v).expect("KEEPALIVE like 4s"))
        .unwrap_or(KEEPALIVE);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut hub = Hub::start_logging("info");
    let work = tempfile::tempdir().unwrap();

    let only = std::env::var("ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;
    let target =
        Target { addr: hub.addr(), fingerprint: hub.fingerprint(), socket: hub.state_dir().join("control.sock") };
    if part("handshake") {
        handshake_part(&rt, &hub, &target, work.path());
    }
    if part("agent") || part("reconnect") {
        agent_part(&mut hub, part("agent"), part("reconnect"), keepalive);
    }
    if part("bulk") {
        rt.block_on(raw_quinn_bulk());
    }
    if part("fleet") {
        // The baseline first, on the hub as it starts: no agents.
        println!("\n## hub idle, no agents");
        let idle = rt.block_on(hub_usage(hub.pid(), MEASURE));
        println!("hub: {:.2}% of a core, RSS {:.1} MiB", idle.cpu_percent, mib(idle.rss_kib));
        fleet_part(&rt, &hub, &target, work.path(), agents, keepalive, &idle);
    }
}

fn handshake_part(rt: &tokio::runtime::Runtime, hub: &Hub, target: &Target, work: &std::path::Path) {
    println!("\n## mTLS handshake ({HANDSHAKES} each, interleaved)");
    let identity =
        rt.block_on(enroll_in_process(target.clone(), "bench-handshake".into(), work.into())).expect("enroll");
    let (mtls, server_only) = rt.block_on(handshakes(hub, &identity));
    report("mTLS (redtether/1, device certificate)", &mtls);
    report("server-auth only (enrollment ALPN)", &server_only);
    println!("ratio of medians mTLS / server-only: {:.2}", median(&mtls) / median(&server_only));
}

fn agent_part(hub: &mut Hub, rss: bool, reconnect: bool, keepalive: Duration) {
    let agent = if keepalive == KEEPALIVE {
        Agent::start("")
    } else {
        Agent::start(&format!("[tunnel]\nkeepalive = \"{}\"\n", humantime::format_duration(keepalive)))
    };
    agent.wait_running();
    std::thread::sleep(Duration::from_secs(5));
    let standalone = rss_kib(agent.pid());
    let out = enroll(&agent.config, hub, "bench-agent");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_agent_online(&agent, 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));
    let tunnelled = rss_kib(agent.pid());
    if rss {
        println!("\n## agent RSS, tunnel down vs up");
        println!(
            "agent RSS not enrolled: {:.2} MiB; enrolled, tunnel online: {:.2} MiB (+{:.2} MiB)",
            mib(standalone),
            mib(tunnelled),
            mib(tunnelled.saturating_sub(standalone))
        );
    }
    if !reconnect {
        return;
    }
    let mut connects = 1;
    let reconnects = std::env::var("RECONNECTS").ok().and_then(|n| n.parse().ok()).unwrap_or(RECONNECTS);
    for (outage, rounds) in [(Duration::from_secs(1), reconnects), (Duration::from_secs(10), 3)] {
        println!("\n## reconnect after hub SIGKILL + restart ({rounds} rounds, hub down {outage:?})");
        let mut back = Vec::new();
        let mut hub_start = Vec::new();
        for _ in 0..rounds {
            // Kill at a random point of the agent's keep-alive cycle, not just after it connected.
            std::thread::sleep(keepalive.mul_f64(rand::random::<f64>()));
            hub.kill9();
            std::thread::sleep(outage);
            let spawned = Instant::now();
            hub.spawn();
            poll(Duration::from_secs(20), || hub_answers(hub));
            hub_start.push(spawned.elapsed().as_secs_f64() * 1000.0);
            connects += 1;
            wait_agent_online(&agent, connects, Duration::from_secs(60));
            back.push(spawned.elapsed().as_secs_f64() * 1000.0);
        }
        report("hub spawn → agent online", &back);
        report("hub spawn → hub control socket answers", &hub_start);
        if outage == Duration::from_secs(1) {
            // For benches/compare.sh: metric, ours, baseline.
            println!("compare|reconnect_ms|{:.1}|{:.1}", median(&back), median(&hub_start));
        }
    }
}

fn fleet_part(
    rt: &tokio::runtime::Runtime,
    hub: &Hub,
    target: &Target,
    work: &std::path::Path,
    agents: usize,
    keepalive: Duration,
    idle: &Usage,
) {
    println!("\n## {agents} idle simulated agents, keep-alive {keepalive:?}");
    let enrolled_at = Instant::now();
    let identities = rt.block_on(enroll_many(target, agents, work));
    println!("enrolled {agents} devices in {:.1} s", enrolled_at.elapsed().as_secs_f64());
    let connected_at = Instant::now();
    let fleet = rt.block_on(connect_fleet(hub, identities, keepalive));
    println!("{} agents online (hello/welcome done) in {:.1} s", fleet.online(), connected_at.elapsed().as_secs_f64());
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(5)).await });
    let loaded = rt.block_on(hub_usage(hub.pid(), MEASURE));
    println!(
        "hub with {} agents: {:.2}% of a core, RSS {:.1} MiB (idle hub: {:.2}%, {:.1} MiB); per agent {:.1} KiB",
        fleet.online(),
        loaded.cpu_percent,
        mib(loaded.rss_kib),
        idle.cpu_percent,
        mib(idle.rss_kib),
        (loaded.rss_kib.saturating_sub(idle.rss_kib)) as f64 / fleet.online().max(1) as f64
    );
    println!("hub wake-ups (context switches of its threads): {:.0}/s", loaded.wakeups_per_sec);
    println!("compare|hub_idle_cpu|{:.2}|{:.2}", loaded.cpu_percent, idle.cpu_percent);
    let lost = fleet.stop(rt);
    println!("agents whose session ended during the measurement: {lost}");
}

/// The baseline of benches/remote_editor.sh: one stream's throughput with plain quinn (default
/// transport settings, TLS 1.3 with the same ring provider) over loopback in this process.
async fn raw_quinn_bulk() {
    const MIB: usize = 256;
    let ca =
        redtether_pki::Ca::create(std::time::SystemTime::now() - Duration::from_secs(60), Duration::from_secs(86400))
            .unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::NoCa;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, rcgen::KeyPair::from_pem(&ca.key_pem).unwrap()).unwrap();
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();
    let tls = redtether_pki::tls::hub_server(
        &server_cert.pem(),
        &server_key.serialize_pem(),
        &ca.cert_pem,
        Default::default(),
        &[b"bulk"],
    )
    .unwrap();
    let server =
        quinn::ServerConfig::with_crypto(Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap()));
    let listener = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = tokio::spawn(async move {
        let connection = listener.accept().await.unwrap().await.unwrap();
        let (mut send, _recv) = connection.accept_bi().await.unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..MIB {
            send.write_all(&chunk).await.unwrap();
        }
        send.finish().unwrap();
        let _ = send.stopped().await;
    });
    let (key, csr) = redtether_pki::device_key_and_csr().unwrap();
    let cert = ca.sign_device_csr(&csr, "bulk", std::time::SystemTime::now(), Duration::from_secs(3600)).unwrap();
    let client_tls = redtether_pki::tls::agent_client(&ca.cert_pem, &cert, &key, b"bulk").unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).unwrap(),
    )));
    let connection = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(b"go").await.unwrap();
    let started = Instant::now();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while let Some(n) = recv.read(&mut buf).await.unwrap() {
        total += n;
    }
    let secs = started.elapsed().as_secs_f64();
    sender.await.unwrap();
    assert_eq!(total, MIB << 20);
    println!("\n## raw quinn, one stream, {MIB} MiB over loopback");
    println!("raw quinn bulk: {:.1} MiB/s", MIB as f64 / secs);
}

/// Where the in-process enrollments go.
#[derive(Clone)]
struct Target {
    addr: String,
    fingerprint: String,
    socket: std::path::PathBuf,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn report(what: &str, samples: &[f64]) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let p = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: median {:.2} ms, p90 {:.2} ms, min {:.2} ms, max {:.2} ms (n={})",
        p(0.5),
        p(0.9),
        s[0],
        s[s.len() - 1],
        s.len()
    );
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn hub_answers(hub: &Hub) -> Option<()> {
    std::os::unix::net::UnixStream::connect(hub.state_dir().join("control.sock")).ok().map(|_| ())
}

fn wait_agent_online(agent: &Agent, connects: u64, timeout: Duration) {
    poll(timeout, || {
        let s = agent.try_status()?;
        (s["tunnel"]["state"] == "online" && s["tunnel"]["connects"].as_u64()? >= connects).then_some(())
    });
}

struct Usage {
    cpu_percent: f64,
    rss_kib: u64,
    /// Context switches of all the hub's threads per second: how often it was woken.
    wakeups_per_sec: f64,
}

/// Context switches so far, summed over the process's threads.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .map(|status| {
            // voluntary_ctxt_switches and nonvoluntary_ctxt_switches
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

async fn hub_usage(pid: u32, window: Duration) -> Usage {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64;
    let (before, switches) = (cpu_ticks(pid), context_switches(pid));
    tokio::time::sleep(window).await;
    let used = (cpu_ticks(pid) - before) as f64 / tick;
    let wakeups_per_sec = context_switches(pid).saturating_sub(switches) as f64 / window.as_secs_f64();
    Usage { cpu_percent: 100.0 * used / window.as_secs_f64(), rss_kib: rss_kib(pid), wakeups_per_sec }
}

/// A real enrollment through the hub's control socket (token) and enrollment ALPN.
async fn enroll_in_process(target: Target, device: String, under: std::path::PathBuf) -> Result<Identity, String> {
    let token =
        control(&target.socket, serde_json::json!({ "cmd": "enroll_token", "device": device, "lifetime_secs": 3600 }))
            .await?;
    let token = token["token"].as_str().ok_or("no token")?.to_string();
    std::fs::create_dir_all(under.join(&device)).map_err(|e| e.to_string())?;
    let dir = StateDir::new(under.join(&device));
    redtether::tunnel::enroll::enroll(
        std::slice::from_ref(&target.addr),
        &token,
        &target.fingerprint,
        &dir,
        TransportChoice::Quic,
        None,
        &ProxyChoice::Direct,
    )
    .await
    .map_err(|e| e.to_string())
}

/// One request on the hub's control socket.
async fn control(socket: &std::path::Path, request: serde_json::Value) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| e.to_string())?;
    stream.write_all(format!("{request}\n").as_bytes()).await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    tokio::io::BufReader::new(stream).read_line(&mut line).await.map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    if v["ok"] == true { Ok(v["result"].clone()) } else { Err(v.to_string()) }
}

async fn handshakes(hub: &Hub, identity: &Identity) -> (Vec<f64>, Vec<f64>) {
    let addr: std::net::SocketAddr = hub.addr().parse().unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mtls = redtether::tunnel::client_config(identity, KEEPALIVE).unwrap();
    let tls = redtether_pki::tls::enroll_client(&identity.info.ca_fingerprint, ENROLL_ALPN).unwrap();
    let server_only =
        quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..HANDSHAKES {
        for (config, out) in [(&mtls, &mut a), (&server_only, &mut b)] {
            let started = Instant::now();
            let connection =
                endpoint.connect_with(config.clone(), addr, "localhost").unwrap().await.expect("handshake");
            out.push(started.elapsed().as_secs_f64() * 1000.0);
            connection.close(0u32.into(), b"bench");
        }
    }
    endpoint.wait_idle().await;
    (a, b)
}

async fn enroll_many(target: &Target, n: usize, under: &std::path::Path) -> Vec<Identity> {
    let mut out = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    while out.len() < n {
        while next < n && tasks.len() < 16 {
            let device = format!("sim-{next:05}");
            tasks.spawn(enroll_in_process(target.clone(), device, under.to_path_buf()));
            next += 1;
        }
        out.push(tasks.join_next().await.unwrap().unwrap().expect("enrollment"));
    }
    out
}

struct Fleet {
    tasks: tokio::task::JoinSet<()>,
    online: Arc<std::sync::atomic::AtomicUsize>,
    ended: Arc<std::sync::atomic::AtomicUsize>,
    cancel: tokio_util::sync::CancellationToken,
}

impl Fleet {
    fn online(&self) -> usize {
        self.online.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn stop(mut self, rt: &tokio::runtime::Runtime) -> usize {
        let ended = self.ended.load(std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
        rt.block_on(async { while self.tasks.join_next().await.is_some() {} });
        ended
    }
}

/// Connects every identity like an agent: hello, welcome, status, then heartbeats and status
/// pushes at the agent's cadence, with the agent's keep-alive.
async fn connect_fleet(hub: &Hub, identities: Vec<Identity>, keepalive: Duration) -> Fleet {
    use std::sync::atomic::Ordering;
    let addr: std::net::SocketAddr = hub.addr().parse().unwrap();
    let endpoints: Vec<quinn::Endpoint> =
        (0..8).map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()).collect();
    let online = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cancel = tokio_util::sync::CancellationToken::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let total = identities.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, identity) in identities.into_iter().enumerate() {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let (online, ended, cancel, gate) = (online.clone(), ended.clone(), cancel.clone(), gate.clone());
        tasks.spawn(async move {
            // At most 64 handshakes in flight; the permit goes once the agent is welcomed.
            let mut permit = Some(gate.acquire_owned().await.unwrap());
            let config = redtether::tunnel::client_config(&identity, keepalive).unwrap();
            let connection = match endpoint.connect_with(config, addr, "localhost").unwrap().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", identity.info.device_id);
                    return;
                }
            };
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            send.write_all(&encode(&AgentFrame::Hello { protocol: 1, agent_version: "sim".into() })).await.unwrap();
            let mut decoder = FrameDecoder::default();
            let mut buf = vec![0u8; 4096];
            let mut status = DeviceStatus { agent_version: "sim".into(), ..DeviceStatus::example() };
            status.node_red.state = NodeRedState::Running;
            let status = AgentFrame::Status { status };
            let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
            let mut status_timer = tokio::time::interval(STATUS_EVERY);
            let mut welcomed = false;
            let mut status_sent = false;
            let mut n = 0;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    read = recv.read(&mut buf) => match read {
                        Ok(Some(len)) => {
                            decoder.feed(&buf[..len]);
                            while let Ok(Some(frame)) = decoder.next_message::<HubFrame>() {
                                if matches!(frame, HubFrame::Welcome { .. }) && !welcomed {
                                    welcomed = true;
                                    permit.take();
                                    online.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        _ => {
                            ended.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    },
                    _ = heartbeat.tick(), if welcomed => {
                        n += 1;
                        let _ = send.write_all(&encode(&AgentFrame::Heartbeat { n })).await;
                    }
                    _ = status_timer.tick(), if welcomed => {
                        // The agent sends its status once and then only on a change, which an
                        // idle device does not have.
                        if !status_sent {
                            status_sent = true;
                            let _ = send.write_all(&encode(&status)).await;
                        }
                    }
                }
            }
            connection.close(0u32.into(), b"bench over");
        });
    }
    let started = Instant::now();
    while online.load(Ordering::SeqCst) + ended.load(Ordering::SeqCst) < total
        && started.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Fleet { tasks, online, ended, cancel }
}
