//! The tunnel over TLS over TCP against the tunnel over QUIC, in the same run, with the direct
//! path as the floor: two agents (fixture Node-RED, the same flows), one on `transport =
//! "quic"`, one on `"tcp"`, both enrolled with one hub. Through the hub's node-space route
//! (`/devices/{id}/http/…`: hub → tunnel → gate → Node-RED), against the gate directly:
//!
//! 1. small-request latency: sequential `GET /small` (a few bytes), p50 and p99;
//! 2. bulk: `GET /bulk` (16 MiB from Node-RED), MiB/s;
//! 3. reconnect after the hub is stopped and started again: hub spawn → each agent online.
//!
//! `cargo build --release && cargo bench --bench transport` (figures and the command are kept
//! in BENCHMARKS.md); `REQUESTS=2000`, `RESTARTS=5` for more.

use redtether_testkit as common;

use common::agent::{Agent, default_users, fixture_node_red};
use common::hub::{Hub, enroll, wait_online};
use std::time::{Duration, Instant};

const BULK_MIB: usize = 16;

fn flows() -> serde_json::Value {
    serde_json::json!([
        {"id": "t", "type": "tab", "label": "bench"},
        {"id": "s", "type": "http in", "z": "t", "url": "/small", "method": "get", "wires": [["sf"]]},
        {"id": "sf", "type": "function", "z": "t", "func": "msg.payload = 'ok'; return msg;", "wires": [["out"]]},
        {"id": "b", "type": "http in", "z": "t", "url": "/bulk", "method": "get", "wires": [["bf"]]},
        {"id": "bf", "type": "function", "z": "t", "func": format!("msg.payload = Buffer.alloc({BULK_MIB} * 1024 * 1024, 120); return msg;"), "wires": [["out"]]},
        {"id": "out", "type": "http response", "z": "t", "wires": []}
    ])
}

fn agent(hub: &Hub, device: &str, transport: &str, tcp_port: u16) -> Agent {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let tables = format!(
        "[gate.http_auth]\nmode = \"none\"\n{}\n[tunnel]\ntransport = {transport:?}\ntcp_port = {tcp_port}\n",
        default_users()
    );
    let agent = Agent::start_with_flows(&node_red, "", Some(&tables), &flows());
    let out = enroll(&agent.config, hub, device);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);
    assert_eq!(agent.status()["tunnel"]["transport"], transport);
    agent
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Path {
    name: &'static str,
    base: String,
    token: Option<String>,
}

async fn latencies(client: &reqwest::Client, path: &Path, n: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let mut request = client.get(format!("{}/small", path.base));
        if let Some(t) = &path.token {
            request = request.bearer_auth(t);
        }
        let started = Instant::now();
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", path.name);
        response.bytes().await.unwrap();
        // (The first twenty warm the connections up.)
        if i >= 20 {
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&ms, 0.5), percentile(&ms, 0.99))
}

async fn bulk(client: &reqwest::Client, path: &Path) -> f64 {
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        let mut request = client.get(format!("{}/bulk", path.base));
        if let Some(t) = &path.token {
            request = request.bearer_auth(t);
        }
        let started = Instant::now();
        let body = request.send().await.unwrap().bytes().await.unwrap();
        assert_eq!(body.len(), BULK_MIB * 1024 * 1024, "{}", path.name);
        best = best.max(BULK_MIB as f64 / started.elapsed().as_secs_f64());
    }
    best
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let restarts: usize = std::env::var("RESTARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut hub = Hub::start_with("warn", "[tcp]\nlisten = \"127.0.0.1:0\"\n");
    let tcp_port: u16 = hub.status()["tcp_listen"].as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
    // Pin the TCP port for the restarts.
    let config = std::fs::read_to_string(&hub.config)
        .unwrap()
        .replace("[tcp]\nlisten = \"127.0.0.1:0\"", &format!("[tcp]\nlisten = \"127.0.0.1:{tcp_port}\""));
    std::fs::write(&hub.config, config).unwrap();
    let token = hub.operator("bench", "owner");
    let quic = agent(&hub, "bench-quic", "quic", tcp_port);
    let tcp = agent(&hub, "bench-tcp", "tcp", tcp_port);
    let client = common::http::client();
    let paths = [
        Path { name: "direct to the gate", base: quic.gate_url(), token: None },
        Path {
            name: "through the hub, QUIC",
            base: format!("{}/devices/bench-quic/http", hub.api()),
            token: Some(token.clone()),
        },
        Path {
            name: "through the hub, TLS over TCP",
            base: format!("{}/devices/bench-tcp/http", hub.api()),
            token: Some(token.clone()),
        },
    ];
    println!("small requests ({n} sequential GETs, after 20 to warm up):");
    let mut p50s = Vec::new();
    for path in &paths {
        let (p50, p99) = latencies(&client, path, n).await;
        p50s.push(p50);
        println!("  {:32} p50 {p50:.3} ms  p99 {p99:.3} ms", path.name);
    }
    println!("  ratio TCP / QUIC p50: {:.2}", p50s[2] / p50s[1]);
    println!("bulk ({BULK_MIB} MiB from Node-RED, best of 3):");
    let mut rates = Vec::new();
    for path in &paths {
        let rate = bulk(&client, path).await;
        rates.push(rate);
        println!("  {:32} {rate:.1} MiB/s", path.name);
    }
    println!("  ratio TCP / QUIC: {:.2}", rates[2] / rates[1]);

    let (mut quic_back, mut tcp_back) = (Vec::new(), Vec::new());
    for round in 0..restarts {
        hub.kill9();
        let started = Instant::now();
        hub.spawn();
        let (mut q, mut t) = (None, None);
        while q.is_none() || t.is_none() {
            let connects = round as u64 + 2;
            let online = |a: &Agent| {
                let s = a.status()["tunnel"].clone();
                s["state"] == "online" && s["connects"].as_u64() >= Some(connects)
            };
            if q.is_none() && online(&quic) {
                q = Some(started.elapsed());
            }
            if t.is_none() && online(&tcp) {
                t = Some(started.elapsed());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "agents back within a minute");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        quic_back.push(q.unwrap().as_secs_f64() * 1000.0);
        tcp_back.push(t.unwrap().as_secs_f64() * 1000.0);
    }
    quic_back.sort_by(|a, b| a.partial_cmp(b).unwrap());
    tcp_back.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("reconnect after a hub restart (hub spawn → agent online, {restarts} restarts, median):");
    println!(
        "  QUIC {:.0} ms (all {:?})",
        percentile(&quic_back, 0.5),
        quic_back.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
    println!(
        "  TCP  {:.0} ms (all {:?})",
        percentile(&tcp_back, 0.5),
        tcp_back.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
}
