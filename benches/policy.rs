//! A security change from the platform to the device's gate, with a real hub, agent and the
//! fixture Node-RED on loopback: `PUT /api/devices/{id}/policy` → the first request through the
//! gate that the new policy decides (node space switched between `none` and `users`, so an
//! anonymous request turns from Node-RED's 404 into the gate's 401 and back). The baseline in the
//! same run is one `GET /api/devices/{id}` round trip to the hub's API plus one request through
//! the gate: the two requests every change needs at least.
//!
//! `cargo bench --bench policy` (figures and the command are kept in BENCHMARKS.md);
//! `CHANGES=20` for fewer changes (default 50).

use redtether_testkit as common;

use common::agent::{USERS, hash_of};
use common::hub::{Hub, online_agent};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const DEVICE: &str = "bench-policy";

fn document(mode: &str) -> Value {
    let users: Vec<Value> = USERS
        .iter()
        .map(|(name, pw, role)| json!({"name": name, "password_hash": hash_of(pw), "role": role}))
        .collect();
    json!({"http_auth": {"mode": mode}, "users": users})
}

fn main() {
    let changes: usize = std::env::var("CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let hub = Hub::start_logging("info");
    let agent = online_agent(&hub, DEVICE, "");
    let token = hub.operator("bench", "owner");
    let client = common::http::blocking_client_builder().timeout(Duration::from_secs(10)).build().unwrap();
    let probe = format!("{}/bench-probe", agent.gate_url());
    let device = format!("{}/api/devices/{DEVICE}", hub.api());
    let documents = [document("users"), document("none")];

    let mut baseline = Vec::new();
    let mut enforced = Vec::new();
    for i in 0..changes {
        let started = Instant::now();
        assert!(client.get(&device).bearer_auth(&token).send().unwrap().status().is_success());
        let _ = client.get(&probe).send().unwrap();
        baseline.push(ms(started));

        // Even changes close node space (401 expected), odd ones open it again (Node-RED's 404).
        let expect = if i % 2 == 0 { 401 } else { 404 };
        let started = Instant::now();
        let r = client.put(format!("{device}/policy")).bearer_auth(&token).json(&documents[i % 2]).send().unwrap();
        assert_eq!(r.status(), 202);
        let deadline = started + Duration::from_secs(10);
        loop {
            if client.get(&probe).send().unwrap().status().as_u16() == expect {
                break;
            }
            assert!(Instant::now() < deadline, "change {i} not enforced within 10 s");
        }
        enforced.push(ms(started));
    }
    report("baseline: hub API GET + one gate request", &baseline);
    report("PUT policy → first request the gate decides by it", &enforced);
    let (p50, b50) = (percentile(&enforced, 50.0), percentile(&baseline, 50.0));
    println!("ratio p50 change / baseline: {:.1}", p50 / b50);
    drop(agent);
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, values: &[f64]) {
    println!(
        "{what}: n={} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        values.len(),
        percentile(values, 50.0),
        percentile(values, 99.0),
        percentile(values, 100.0)
    );
}
