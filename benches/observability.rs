//! What observability costs, each against its baseline in the same run:
//!
//! 1. The idle agent (fixture Node-RED, not enrolled) with `[metrics] listen` on and scraped
//!    every 5 s, against the same agent with metrics off: its RSS at the end of the window and
//!    its CPU time over it. Runs alternate off/on.
//! 2. The hub with 2,000 simulated devices (the test kit's simulator: real certificates, real
//!    QUIC, the real protocol) sending their status every 10 s with resource figures, against
//!    the same fleet whose status carries none (an idle device then sends it once per
//!    connection): the hub's CPU time over the window and its RSS at the end.
//!
//! `cargo build --release && cargo bench --bench observability` (figures and the command are
//! kept in BENCHMARKS.md); `DEVICES=500` for a smaller fleet, `WINDOW_SECS` for the windows
//! (default 60).

use redtether_testkit as common;

use common::hub::Hub;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_redtether");
const RUNS: usize = 3;

fn rss_kib(pid: u32) -> u64 {
    redtether_host::proc_stat::rss_bytes(pid).unwrap() / 1024
}

fn cpu_secs(pid: u32) -> f64 {
    redtether_host::proc_stat::cpu_ticks(pid).unwrap() as f64 / redtether_host::proc_stat::ticks_per_second() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn window() -> Duration {
    Duration::from_secs(std::env::var("WINDOW_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60))
}

struct Measured {
    cpu_secs: f64,
    rss_kib: u64,
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

/// One idle agent for a window: metrics off, or on and scraped every 5 s.
async fn agent_idle(metrics: bool) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let red_js = common::node_red::red_js().display().to_string();
    let metrics_table = if metrics { "[metrics]\nlisten = \"127.0.0.1:0\"\n" } else { "" };
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nlog_level = \"warn\"\n[node_red]\ncommand = [\"node\", {red_js:?}]\n[gate]\nlisten = \"127.0.0.1:0\"\n{metrics_table}",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = || -> Option<serde_json::Value> {
        let out = Command::new(AGENT).args(["status", "--json", "--config"]).arg(&config).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let status = common::wait_for(Duration::from_secs(60), "Node-RED running", || {
        status().filter(|s| s["node_red"]["state"] == "running")
    });
    let url = status["metrics"].as_str().map(|a| format!("http://{a}/metrics"));
    assert_eq!(url.is_some(), metrics);
    // Settled first: the start's own work is not the idle cost.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = child.id();
    let (cpu, started) = (cpu_secs(pid), Instant::now());
    let client = common::http::client();
    while started.elapsed() < window() {
        if let Some(url) = &url {
            let text = client.get(url).send().await.unwrap().text().await.unwrap();
            assert!(text.contains("redtether_node_red_state"));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let measured = Measured { cpu_secs: cpu_secs(pid) - cpu, rss_kib: rss_kib(pid) };
    stop(child);
    measured
}

/// A hub with `n` simulated devices reporting every 10 s, with or without resource figures.
async fn hub_fleet(n: usize, resources: bool) -> Measured {
    let hub = Hub::start_logging("warn");
    let mut config = common::simulator::SimConfig::new(&hub.addr(), &hub.fingerprint()).await.unwrap();
    config.status_every = Duration::from_secs(10);
    config.resources = resources;
    let sim = common::simulator::Simulator::new(config).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("sim-{i:04}")).collect();
    let hub_ref = &hub;
    sim.enroll_many(names, |name| async move { hub_ref.enroll_token_async(&name).await }).await.unwrap();
    sim.wait_connected(n, Duration::from_secs(300)).await.unwrap();
    // Past the connections' first status and audit exchange.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let pid = hub.pid();
    let cpu = cpu_secs(pid);
    tokio::time::sleep(window()).await;
    let measured = Measured { cpu_secs: cpu_secs(pid) - cpu, rss_kib: rss_kib(pid) };
    sim.shutdown().await;
    measured
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo test --benches` runs bench targets too; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let secs = window().as_secs_f64();

    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        off.push(agent_idle(false).await);
        on.push(agent_idle(true).await);
    }
    let cpu = |v: &[Measured]| median(v.iter().map(|m| m.cpu_secs).collect());
    let rss = |v: &[Measured]| median(v.iter().map(|m| m.rss_kib as f64).collect()) / 1024.0;
    println!("agent idle, medians of {RUNS} runs of {secs:.0} s (metrics on: scraped every 5 s):");
    println!("  metrics off: CPU {:.3} s ({:.3} %), RSS {:.2} MiB", cpu(&off), cpu(&off) / secs * 100.0, rss(&off));
    println!("  metrics on:  CPU {:.3} s ({:.3} %), RSS {:.2} MiB", cpu(&on), cpu(&on) / secs * 100.0, rss(&on));
    println!("  ratio on / off: CPU {:.2}, RSS {:.3}", cpu(&on) / cpu(&off), rss(&on) / rss(&off));

    let without = hub_fleet(n, false).await;
    let with = hub_fleet(n, true).await;
    println!("hub with {n} simulated devices, status every 10 s, {secs:.0} s window:");
    println!(
        "  status without resource figures: CPU {:.2} s ({:.1} %), RSS {:.1} MiB",
        without.cpu_secs,
        without.cpu_secs / secs * 100.0,
        without.rss_kib as f64 / 1024.0
    );
    println!(
        "  status with resource figures:    CPU {:.2} s ({:.1} %), RSS {:.1} MiB",
        with.cpu_secs,
        with.cpu_secs / secs * 100.0,
        with.rss_kib as f64 / 1024.0
    );
    println!(
        "  ratio with / without: CPU {:.2}, RSS {:.2}",
        with.cpu_secs / without.cpu_secs,
        with.rss_kib as f64 / without.rss_kib as f64
    );
}
