//! A fleet rollout to 1,000 simulated devices (the test kit's simulator: real certificates, the
//! real protocol, one QUIC endpoint) on a real hub: `POST /api/groups/{name}/deploy` with a
//! canary of 1 and waves of 10, 50 and 100 %, `wait` 0, until the rollout says `completed`,
//! with the hub's CPU time and resident memory. The baseline in the same run deploys the same
//! kind of snapshot device by device through `POST /api/devices/{id}/deploy`, as a script
//! would (one request after another), until every device runs it.
//!
//! `cargo build --release && cargo bench --bench rollout` (figures and the command are kept in
//! BENCHMARKS.md); `DEVICES=200` for a smaller fleet (default 1000).

use redtether_testkit as common;

use common::hub::{Hub, call, simulated_fleet};
use common::simulator::SimDevice;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn flows(label: &str) -> Value {
    json!([
        {"id": "t1", "type": "tab", "label": label},
        {"id": "n1", "type": "inject", "z": "t1", "name": label},
        {"id": "n2", "type": "debug", "z": "t1", "wires": []}
    ])
}

fn rss_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64
}

/// Waits until every device runs flows labelled `label`.
async fn all_run(devices: &[SimDevice], label: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !devices.iter().all(|d| d.current_snapshot()["flows"][0]["label"] == label) {
        assert!(Instant::now() < deadline, "not every device runs {label} after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A snapshot kept at the hub with flows `label`: deployed to the first device and taken back.
async fn snapshot(hub: &Hub, token: &str, device: &SimDevice, label: &str) -> String {
    let path = format!("/api/devices/{}/deploy", device.id());
    let (code, answer) = call(hub, Method::POST, &path, token, Some(json!({"flows": flows(label)}))).await;
    assert_eq!(code, 202, "{answer}");
    all_run(std::slice::from_ref(device), label, Duration::from_secs(30)).await;
    let (code, taken) = call(hub, Method::POST, &format!("/api/devices/{}/snapshot", device.id()), token, None).await;
    assert_eq!(code, 201, "{taken}");
    taken["id"].as_str().unwrap().to_string()
}

struct Run {
    secs: f64,
    cpu_secs: f64,
    rss_after_kib: u64,
}

fn print(what: &str, run: &Run, devices: usize) {
    println!(
        "{what}: {devices} devices in {:.2} s ({:.1} devices/s), hub CPU {:.2} s, hub RSS after {:.1} MiB",
        run.secs,
        devices as f64 / run.secs,
        run.cpu_secs,
        run.rss_after_kib as f64 / 1024.0
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let hub = Hub::start_logging("warn");
    let token = hub.operator("bench", "owner");
    let pid = hub.pid();
    let started = Instant::now();
    let (sim, devices) = simulated_fleet(&hub, "sim", n).await;
    println!(
        "{n} simulated devices enrolled and connected in {:.1} s; hub RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        rss_kib(pid, "VmRSS:") as f64 / 1024.0
    );
    let ids: Vec<&str> = devices.iter().map(|d| d.id()).collect();
    let (code, answer) = call(&hub, Method::POST, "/api/groups", &token, Some(json!({"name": "fleet"}))).await;
    assert_eq!(code, 201, "{answer}");
    let (code, answer) = call(&hub, Method::PUT, "/api/groups/fleet/devices", &token, Some(json!({"add": ids}))).await;
    assert_eq!(code, 200, "{answer}");

    // Baseline: the same kind of change, one API deployment per device, one after another.
    let first = snapshot(&hub, &token, &devices[0], "v1").await;
    let (cpu, started) = (cpu_secs(pid), Instant::now());
    for d in &devices {
        let path = format!("/api/devices/{}/deploy", d.id());
        let (code, answer) = call(&hub, Method::POST, &path, &token, Some(json!({"snapshot": first}))).await;
        assert_eq!(code, 202, "{answer}");
    }
    all_run(&devices, "v1", Duration::from_secs(600)).await;
    let baseline = Run {
        secs: started.elapsed().as_secs_f64(),
        cpu_secs: cpu_secs(pid) - cpu,
        rss_after_kib: rss_kib(pid, "VmRSS:"),
    };

    // The rollout of another snapshot to the whole group.
    let second = snapshot(&hub, &token, &devices[0], "v2").await;
    let plan = json!({"canary": 1, "waves": [10, 50, 100], "wait": 0});
    let (cpu, started) = (cpu_secs(pid), Instant::now());
    let (code, answer) =
        call(&hub, Method::POST, "/api/groups/fleet/deploy", &token, Some(json!({"snapshot": second, "plan": plan})))
            .await;
    assert_eq!(code, 202, "{answer}");
    let id = answer["rollout"].as_str().unwrap().to_string();
    loop {
        let (_, r) = call(&hub, Method::GET, &format!("/api/rollouts/{id}"), &token, None).await;
        match r["state"].as_str() {
            Some("completed") => break,
            Some("running") => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("the rollout ended {other:?}: {r}"),
        }
    }
    let rollout = Run {
        secs: started.elapsed().as_secs_f64(),
        cpu_secs: cpu_secs(pid) - cpu,
        rss_after_kib: rss_kib(pid, "VmRSS:"),
    };
    all_run(&devices, "v2", Duration::from_secs(5)).await;

    print("baseline: API deploy device by device", &baseline, n);
    print("rollout: canary 1, waves 10/50/100 %, wait 0", &rollout, n);
    println!("hub peak RSS (VmHWM) {:.1} MiB", rss_kib(pid, "VmHWM:") as f64 / 1024.0);
    println!(
        "ratio rollout / baseline: time {:.2}, hub CPU {:.2}",
        rollout.secs / baseline.secs,
        rollout.cpu_secs / baseline.cpu_secs
    );
    sim.shutdown().await;
}
