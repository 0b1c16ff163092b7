//! Deployment figures, each against a baseline measured in the same run, with a real hub, agent
//! and the fixture Node-RED on loopback:
//!
//! 1. A deployment that changes an endpoint: `POST /api/devices/{id}/deploy` → the new answer
//!    served through the gate (sign, send, verify, stage, fsync, switch, restart, health and
//!    flow checks, report), against restarting Node-RED on the same flows
//!    (`redtether restart-node-red` → the endpoint answers again): what a deployment adds to
//!    the restart it cannot avoid.
//! 2. A deployment refused before the switch (an unknown node type): POST → `rolled_back` at
//!    the hub, against a `GET /api/devices/{id}` round trip.
//! 3. The same as 1 with 1000 extra nodes in the flows, and the envelope's size.
//!
//! `cargo bench --bench deploy` (figures and the command are kept in BENCHMARKS.md);
//! `ROUNDS=5` for fewer rounds.

use redtether_testkit as common;

use common::agent::BIN;
use common::hub::{Hub, online_agent};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

const DEVICE: &str = "bench-deploy";

fn flows(text: &str, extra_nodes: usize) -> Value {
    let mut nodes = vec![
        json!({"id": "tab-b", "type": "tab", "label": "bench"}),
        json!({"id": "in-b", "type": "http in", "z": "tab-b", "url": "/bench", "method": "get", "upload": false, "wires": [["fn-b"]]}),
        json!({"id": "fn-b", "type": "function", "z": "tab-b", "func": format!("msg.payload = {text:?}; return msg;"), "outputs": 1, "wires": [["out-b"]]}),
        json!({"id": "out-b", "type": "http response", "z": "tab-b", "statusCode": "", "headers": {}, "wires": []}),
    ];
    for i in 0..extra_nodes {
        nodes.push(json!({"id": format!("c{i}"), "type": "comment", "z": "tab-b", "name": format!("note {i}"), "info": "x".repeat(40)}));
    }
    Value::Array(nodes)
}

struct Bench {
    hub: Hub,
    token: String,
    gate: String,
    client: reqwest::blocking::Client,
}

impl Bench {
    fn deploy(&self, body: Value) -> String {
        let r = self
            .client
            .post(format!("{}/api/devices/{DEVICE}/deploy", self.hub.api()))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().unwrap()["id"].as_str().unwrap().to_string()
    }

    fn state(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/api/devices/{DEVICE}/deployments/{id}", self.hub.api()))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn serves(&self, text: &str) -> bool {
        self.client.get(format!("{}/bench", self.gate)).send().ok().and_then(|r| r.text().ok()).as_deref() == Some(text)
    }

    fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let hub = Hub::start_logging("info");
    let agent = online_agent(&hub, DEVICE, "");
    let token = hub.operator("bench", "owner");
    let client = common::http::blocking_client_builder().timeout(Duration::from_secs(10)).build().unwrap();
    let bench = Bench { gate: agent.gate_url(), hub, token, client };

    let first = bench.deploy(json!({"flows": flows("round 0", 0)}));
    bench.until("the first deployment", || bench.state(&first)["state"] == "applied");

    for extra in [0usize, 1000] {
        println!("\n## deployment → new answer served, {} nodes, {rounds} rounds, interleaved", extra + 4);
        let (mut deploys, mut restarts) = (Vec::new(), Vec::new());
        let mut envelope_bytes = 0;
        for round in 1..=rounds {
            let text = format!("round {round} of {extra}");
            let started = Instant::now();
            let id = bench.deploy(json!({"flows": flows(&text, extra)}));
            bench.until("the new answer", || bench.serves(&text));
            deploys.push(ms(started));
            bench.until("the outcome at the hub", || bench.state(&id)["state"] == "applied");
            if round == 1 {
                envelope_bytes = bench
                    .client
                    .get(format!("{}/api/devices/{DEVICE}/deployments/{id}/envelope", bench.hub.api()))
                    .bearer_auth(&bench.token)
                    .send()
                    .unwrap()
                    .json::<Value>()
                    .unwrap()["envelope"]
                    .as_str()
                    .unwrap()
                    .len();
            }

            let started = Instant::now();
            let out = Command::new(BIN).args(["restart-node-red", "--config"]).arg(&agent.config).output().unwrap();
            assert!(out.status.success());
            // The old process may still answer for a moment: wait for the gap, then the answer.
            bench.until("the restart", || !bench.serves(&text));
            bench.until("the answer after the restart", || bench.serves(&text));
            restarts.push(ms(started));
        }
        report("deploy → served", &deploys);
        report("restart-node-red → served (baseline)", &restarts);
        println!("ratio of medians: {:.2}; envelope {envelope_bytes} bytes", median(&deploys) / median(&restarts));
    }

    println!("\n## deployment refused before the switch (unknown node type), {rounds} rounds");
    let (mut refused, mut round_trips) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut bad = flows("never", 0);
        bad.as_array_mut().unwrap().push(json!({"id": format!("odd{round}"), "type": "no-such-type", "z": "tab-b"}));
        let started = Instant::now();
        let id = bench.deploy(json!({"flows": bad}));
        bench.until("the rollback", || bench.state(&id)["state"] == "rolled_back");
        refused.push(ms(started));
        let started = Instant::now();
        let r = bench.client.get(format!("{}/api/devices/{DEVICE}", bench.hub.api())).bearer_auth(&bench.token).send();
        assert!(r.unwrap().status().is_success());
        round_trips.push(ms(started));
    }
    report("deploy → rolled_back at the hub", &refused);
    report("GET /api/devices/{id} (baseline)", &round_trips);
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(what: &str, values: &[f64]) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    println!("{what}: median {:.0} ms, min {:.0} ms, max {:.0} ms", median(&v), v[0], v[v.len() - 1]);
}
