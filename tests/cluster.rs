//! Several hubs on one PostgreSQL (`[store] url` + `[cluster]`), on one machine: two real hub
//! processes sharing a real PostgreSQL server, a fleet of simulated devices (the real protocol
//! and certificates, from this process) and one real agent running Node-RED.
//!
//! - the second hub takes the first one's keys (one CA, one signing key for the whole fleet);
//! - one enrollment token presented to both hubs at once is accepted exactly once;
//! - operator requests through either hub reach any device (forwarded to the hub holding it),
//!   and the real device's editor works through the hub that does not hold it, websocket too;
//! - SIGKILL the hub holding the real device: every device it held is back on the other within
//!   10 s (the distribution is printed), requests keep reaching the right device, and the
//!   device's audit at the hubs equals its journal (0 lost, 0 duplicated).

use redtether_testkit as common;

use common::agent::{Agent, BIN};
use common::hub::{Hub, api, delivered, editor_websocket_hears_a_deploy, wait_online};
use common::postgres::Postgres;
use common::simulator::{SimConfig, SimDevice, Simulator};
use common::{wait_for, wait_for_async};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The simulated fleet, split between the two hubs' enrollment.
const FLEET: usize = 1000;
/// Operator requests for random devices through both hubs.
const REQUESTS: usize = 200;

fn key_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = (std::process::id() as u8).wrapping_mul(31).wrapping_add(i as u8 * 7);
    }
    let path = dir.join("cluster.key");
    std::fs::write(&path, hex::encode(key)).unwrap();
    path
}

fn cluster_hub(url: &str, id: &str, key: &std::path::Path) -> Hub {
    Hub::start_with(
        "info",
        &format!("[store]\nurl = {url:?}\nhub_id = {id:?}\n[cluster]\nlisten = \"127.0.0.1:0\"\nkey_file = {key:?}\n"),
    )
}

fn database(url: &str) -> String {
    url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string()
}

/// Which hub holds each device, as the shared store says.
fn holdings(pg: &Postgres, db: &str) -> HashMap<String, String> {
    pg.psql(db, "SELECT device || ' ' || hub FROM presence")
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(d, h)| (d.to_string(), h.to_string())))
        .collect()
}

async fn simulator(home: &Hub, other: &Hub) -> Simulator {
    let mut config = SimConfig::new(&home.addr(), &home.fingerprint()).await.unwrap();
    config.other_hubs = vec![other.addr().parse::<SocketAddr>().unwrap()];
    Simulator::new(config).unwrap()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hubs_serve_one_fleet_and_fail_over() {
    let pg = Postgres::start();
    let url = pg.create_database();
    let db = database(&url);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let mut hubs = [cluster_hub(&url, "hub-a", &key), cluster_hub(&url, "hub-b", &key)];
    assert_eq!(hubs[0].fingerprint(), hubs[1].fingerprint(), "one CA for the cluster");
    assert_eq!(pg.psql(&db, "SELECT string_agg(id, ',' ORDER BY id) FROM hubs"), "hub-a,hub-b");
    let owner = hubs[0].operator("ops", "owner");
    assert_eq!(api(&hubs[1], reqwest::Method::GET, "/api/devices", Some(&owner)).await.0, 200, "one set of accounts");

    // One token, both hubs, at once: exactly one enrollment.
    let token = hubs[0].enroll_token_async("raced").await.unwrap();
    let (sim_a, sim_b) = (simulator(&hubs[0], &hubs[1]).await, simulator(&hubs[1], &hubs[0]).await);
    let (first, second) = tokio::join!(sim_a.enroll(&token), sim_b.enroll(&token));
    let (won_a, won_b) = (usize::from(first.is_ok()), usize::from(second.is_ok()));
    assert_eq!(won_a + won_b, 1, "{:?} / {:?}", first.err(), second.err());

    // The fleet, half enrolled through each hub.
    let started = Instant::now();
    let names = |from: usize, to: usize| (from..to).map(|i| format!("fleet-{i:04}")).collect::<Vec<_>>();
    let (a, b) = (&hubs[0], &hubs[1]);
    let (devices_a, devices_b) = tokio::join!(
        sim_a.enroll_many(names(0, FLEET / 2), |name| async move { a.enroll_token_async(&name).await }),
        sim_b.enroll_many(names(FLEET / 2, FLEET), |name| async move { b.enroll_token_async(&name).await }),
    );
    let fleet: Vec<SimDevice> = devices_a.unwrap().into_iter().chain(devices_b.unwrap()).collect();
    sim_a.wait_connected(FLEET / 2 + won_a, Duration::from_secs(180)).await.unwrap_or_else(|e| panic!("{e}"));
    sim_b.wait_connected(FLEET - FLEET / 2 + won_b, Duration::from_secs(180)).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{FLEET} simulated devices enrolled and connected in {:.1?}", started.elapsed());
    wait_for(Duration::from_secs(20), "every device held in the shared store", || {
        (holdings(&pg, &db).len() == FLEET + 1).then_some(())
    });

    // The real device, enrolled with both hubs' addresses.
    let agent = Agent::start("");
    agent.wait_running();
    let token = hubs[1].enroll_token("pump-c");
    let out = Command::new(BIN)
        .args(["enroll", "--hub", &hubs[0].addr(), "--hub", &hubs[1].addr(), "--token", &token])
        .args(["--ca-fingerprint", &hubs[0].fingerprint(), "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);
    // Hub A knows within a heartbeat, whichever hub the device reached.
    let device = wait_for_async(Duration::from_secs(5), "hub A to know who holds pump-c", || async {
        let (_, device) = api(&hubs[0], reqwest::Method::GET, "/api/devices/pump-c", Some(&owner)).await;
        (device["hub"] == "hub-a" || device["hub"] == "hub-b").then_some(device)
    })
    .await;
    let holder = if device["hub"] == "hub-a" { 0 } else { 1 };
    let other = 1 - holder;

    // The editor through the hub that does not hold the device, its websocket too.
    let editor = format!("{}/devices/pump-c/editor/", hubs[other].api());
    let page = common::http::client().get(&editor).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Node-RED"));
    assert!(editor_websocket_hears_a_deploy(&hubs[other], "pump-c", &owner).await, "the editor's websocket");
    let unauthorised = common::http::client().get(&editor).send().await.unwrap();
    assert_eq!(unauthorised.status(), 401, "the holder still asks who it is");

    // Requests for random devices through both hubs: every one reaches the hub holding it.
    let mut reached = 0;
    for i in 0..REQUESTS {
        let id = fleet[(i * 7919 + 13) % fleet.len()].id().to_string();
        let (code, body) = api(&hubs[i % 2], reqwest::Method::GET, &format!("/api/devices/{id}"), Some(&owner)).await;
        if code == 200 && body["id"] == id.as_str() && body["online"] == true && body["transport"] == "quic" {
            reached += 1;
        } else {
            eprintln!("request {i} for {id} through hub {}: {code} {body}", i % 2);
        }
    }
    assert_eq!(reached, REQUESTS, "every request reached its device's hub");

    // A group policy made through one hub reaches members held by either (the doorbell).
    let members: Vec<String> = (0..20).map(|i| fleet[i * (FLEET / 20)].id().to_string()).collect();
    let call = |hub: &Hub, method: reqwest::Method, path: &str, body: serde_json::Value| {
        common::http::client().request(method, format!("{}{path}", hub.api())).bearer_auth(&owner).json(&body).send()
    };
    let made =
        call(&hubs[0], reqwest::Method::POST, "/api/groups", serde_json::json!({"name": "line-1", "description": ""}));
    assert_eq!(made.await.unwrap().status(), 201);
    let added = call(&hubs[0], reqwest::Method::PUT, "/api/groups/line-1/devices", serde_json::json!({"add": members}));
    assert_eq!(added.await.unwrap().status(), 200);
    let set =
        call(&hubs[0], reqwest::Method::PUT, "/api/groups/line-1/policy", serde_json::json!({"protection": true}));
    assert_eq!(set.await.unwrap().status(), 202);
    let held_by: HashMap<String, String> = holdings(&pg, &db);
    let on_b = members.iter().filter(|m| held_by.get(*m).map(String::as_str) == Some("hub-b")).count();
    assert!(on_b > 0 && on_b < members.len(), "members on both hubs ({on_b} of {} on hub-b)", members.len());
    let member_devices: Vec<&SimDevice> = fleet.iter().filter(|d| members.iter().any(|m| m == d.id())).collect();
    wait_for(Duration::from_secs(15), "every member to apply the group's policy", || {
        member_devices.iter().all(|d| !d.policies_applied().is_empty()).then_some(())
    });

    // The hub holding the real device dies.
    let before = holdings(&pg, &db);
    let victim = if holder == 0 { "hub-a" } else { "hub-b" };
    let moving: Vec<String> = before.iter().filter(|(_, h)| *h == victim).map(|(d, _)| d.clone()).collect();
    assert!(moving.len() > FLEET / 4, "{} devices on {victim}", moving.len());
    let killed = Instant::now();
    hubs[holder].kill9();
    let survivor = &hubs[other];
    let mut back: HashMap<String, Duration> = HashMap::new();
    while back.len() < moving.len() && killed.elapsed() < Duration::from_secs(30) {
        let now = holdings(&pg, &db);
        for device in &moving {
            if now.get(device).is_some_and(|h| h != victim) {
                back.entry(device.clone()).or_insert_with(|| killed.elapsed());
            }
        }
        // Meanwhile requests through the survivor reach the right device, or are told to come
        // back (503, Retry-After) while it is between hubs.
        let id = &moving[back.len() % moving.len()];
        let response = common::http::client()
            .get(format!("{}/api/devices/{id}", survivor.api()))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => assert_eq!(response.json::<Value>().await.unwrap()["id"], id.as_str(), "never another device"),
            503 => assert!(response.headers().contains_key("retry-after"), "503 says when to come back"),
            other => panic!("request for {id} during the failover: {other}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut times: Vec<Duration> = back.values().copied().collect();
    times.sort();
    assert_eq!(times.len(), moving.len(), "devices not back on the other hub within 30 s");
    eprintln!(
        "failover of {} devices: first {:.1?}, p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, last {:.1?}",
        times.len(),
        times[0],
        percentile(&times, 50),
        percentile(&times, 90),
        percentile(&times, 99),
        times[times.len() - 1]
    );
    assert!(times[times.len() - 1] <= Duration::from_secs(10), "every device back within 10 s");
    assert!(
        fleet.iter().all(|d| d.is_connected()) || {
            wait_for(Duration::from_secs(10), "the whole fleet connected", || {
                fleet.iter().all(|d| d.is_connected()).then_some(())
            });
            true
        }
    );

    // The real device's audit at the hubs is its journal: nothing lost, nothing twice.
    wait_online(&agent, 2);
    let page = common::http::client().get(format!("{}/devices/pump-c/editor/", survivor.api())).bearer_auth(&owner);
    assert_eq!(page.send().await.unwrap().status(), 200, "the editor through the survivor");
    let (at_hub, local) = delivered(survivor, &agent, "pump-c", &owner).await;
    let ids = |events: &[Value]| events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&at_hub), ids(&local), "0 lost, 0 duplicated");
    let rows = pg.psql(&db, "SELECT count(*) FROM device_audit WHERE device = 'pump-c'");
    assert_eq!(rows, local.len().to_string());
}
