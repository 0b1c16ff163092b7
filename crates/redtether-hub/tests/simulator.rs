//! The test kit's device simulator against a real hub: simulated devices enroll with real
//! tokens, connect with their own certificates, show online in the API, take deployments and
//! policies and answer snapshots the way the agent does, and each behaviour (roll back, fail,
//! hang, offline) ends up as the matching state in the hub. What is checked is the hub's view
//! through its operator API, so a simulator that spoke the protocol wrong would fail here.

use redtether_proto::deployment::flows_hash;
use redtether_testkit::hub::{Hub, call, simulated_fleet};
use redtether_testkit::simulator::{Behaviour, SimConfig, SimDevice, Simulator};
use redtether_testkit::wait_for_async;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

async fn fleet(hub: &Hub, prefix: &str, n: usize) -> (Simulator, Vec<SimDevice>) {
    simulated_fleet(hub, prefix, n).await
}

/// The hub's `online` for every device it lists.
async fn online(hub: &Hub, token: &str) -> std::collections::BTreeMap<String, bool> {
    let (code, devices) = call(hub, Method::GET, "/api/devices", token, None).await;
    assert_eq!(code, 200, "{devices}");
    devices.as_array().unwrap().iter().map(|d| (d["id"].as_str().unwrap().to_string(), d["online"] == true)).collect()
}

/// Deploys `flows` to `device`; the deployment's id and number.
async fn deploy(hub: &Hub, token: &str, device: &str, flows: &Value) -> (String, u64) {
    let body = json!({ "flows": flows, "env": { "SITE": device } });
    let (code, answer) = call(hub, Method::POST, &format!("/api/devices/{device}/deploy"), token, Some(body)).await;
    assert_eq!(code, 202, "{answer}");
    (answer["id"].as_str().unwrap().to_string(), answer["number"].as_u64().unwrap())
}

async fn deployment(hub: &Hub, token: &str, device: &str, id: &str) -> Value {
    let (code, d) = call(hub, Method::GET, &format!("/api/devices/{device}/deployments/{id}"), token, None).await;
    assert_eq!(code, 200, "{d}");
    d
}

/// Waits until the hub says the deployment is in `state`; its record.
async fn wait_state(hub: &Hub, token: &str, device: &str, id: &str, state: &str) -> Value {
    wait_for_async(LONG, &format!("deployment {id} on {device} {state}"), || async {
        let d = deployment(hub, token, device, id).await;
        (d["state"] == state).then_some(d)
    })
    .await
}

fn flows_for(device: &str, label: &str) -> Value {
    json!([
        { "id": "t1", "type": "tab", "label": label },
        { "id": "n1", "type": "inject", "z": "t1", "name": format!("{device} {label}") },
        { "id": "n2", "type": "debug", "z": "t1" },
    ])
}

/// The hub closed no control stream and saw no protocol error: the simulator spoke the protocol.
fn assert_spoke_the_protocol(hub: &Hub) {
    let log = hub.log();
    for sign in ["closing a control stream", "protocol error", "unexpected"] {
        assert!(!log.contains(sign), "the hub logged {sign:?}:\n{log}");
    }
}

fn hash_of(flows: &Value) -> String {
    flows_hash(flows.as_array().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_devices_come_online_and_one_applies_a_deployment_and_shows_it_in_its_snapshot() {
    let hub = Hub::start_logging("info");
    let token = hub.operator("ops", "member");
    let (sim, devices) = fleet(&hub, "pump", 20).await;
    assert_eq!(sim.devices().len(), 20);

    // Every device is listed online: the hub accepted their certificates and greeted them.
    let listed = wait_for_async(LONG, "20 devices online in the API", || async {
        let listed = online(&hub, &token).await;
        (listed.len() == 20 && listed.values().all(|up| *up)).then_some(listed)
    })
    .await;
    for device in &devices {
        assert_eq!(listed.get(device.id()), Some(&true), "{}", device.id());
    }
    // And each pushed its status: Node-RED running, nothing waiting in the journal.
    wait_for_async(LONG, "20 statuses", || async {
        let (_, all) = call(&hub, Method::GET, "/api/devices", &token, None).await;
        let all = all.as_array().cloned().unwrap_or_default();
        all.iter().all(|d| d["node_red"]["state"] == "running" && d["audit"]["backlog"] == 0).then_some(())
    })
    .await;

    // Before any deployment, a device answers a snapshot with the flows it starts with, each its own.
    let first = &devices[0];
    let (code, taken) = call(&hub, Method::POST, &format!("/api/devices/{}/snapshot", first.id()), &token, None).await;
    assert_eq!(code, 201, "{taken}");
    assert_eq!(taken["flows_hash"], hash_of(&first.current_snapshot()["flows"]));
    assert_ne!(first.current_snapshot()["flows"], devices[1].current_snapshot()["flows"]);

    let target = sim.device("pump-007").expect("pump-007 is simulated");
    let flows = flows_for(target.id(), "v1");
    let (id, number) = deploy(&hub, &token, target.id(), &flows).await;
    let done = wait_state(&hub, &token, target.id(), &id, "applied").await;
    assert_eq!(done["detail"]["flows_hash"], hash_of(&flows), "{done}");
    assert_eq!(done["detail"]["generation"], format!("g{number}"), "{done}");

    let running = target.current_snapshot();
    assert_eq!(running["flows"], flows);
    assert_eq!(running["env"]["SITE"], target.id());
    assert_eq!(target.deployments_received(), vec![(id.clone(), number, hash_of(&flows))]);

    // The hub asks the device what it runs and gets the deployment's flows back.
    let (code, taken) = call(&hub, Method::POST, &format!("/api/devices/{}/snapshot", target.id()), &token, None).await;
    assert_eq!(code, 201, "{taken}");
    assert_eq!(taken["flows_hash"], hash_of(&flows), "{taken}");
    assert_eq!(taken["nodes"], 3);
    let path = format!("/api/devices/{}/snapshots/{}", target.id(), taken["id"].as_str().unwrap());
    let (code, stored) = call(&hub, Method::GET, &path, &token, None).await;
    assert_eq!(code, 200, "{stored}");

    // Nobody else was sent anything.
    for device in devices.iter().filter(|d| d.id() != target.id()) {
        assert!(device.deployments_received().is_empty(), "{} was sent a deployment", device.id());
    }
    sim.shutdown().await;
    assert_spoke_the_protocol(&hub);
}

#[tokio::test(flavor = "multi_thread")]
async fn behaviours_show_in_the_hub_and_an_offline_device_gets_its_deployment_once_when_back() {
    let hub = Hub::start_logging("info");
    let token = hub.operator("ops", "owner");
    let (sim, devices) = fleet(&hub, "valve", 4).await;
    let [rolls_back, fails, hangs, away] = [&devices[0], &devices[1], &devices[2], &devices[3]];

    rolls_back.set_behaviour(Behaviour::RollBack);
    let before = rolls_back.current_snapshot();
    let (id, _) = deploy(&hub, &token, rolls_back.id(), &flows_for(rolls_back.id(), "v1")).await;
    let d = wait_state(&hub, &token, rolls_back.id(), &id, "rolled_back").await;
    assert_eq!(d["detail"]["stage"], "health", "{d}");
    assert_eq!(rolls_back.current_snapshot(), before, "a rolled-back device keeps what it ran");

    fails.set_behaviour(Behaviour::Fail);
    let (id, _) = deploy(&hub, &token, fails.id(), &flows_for(fails.id(), "v1")).await;
    wait_state(&hub, &token, fails.id(), &id, "failed").await;
    // Back to applying: the next deployment goes through.
    fails.set_behaviour(Behaviour::Apply);
    let flows = flows_for(fails.id(), "v2");
    let (id, _) = deploy(&hub, &token, fails.id(), &flows).await;
    wait_state(&hub, &token, fails.id(), &id, "applied").await;
    assert_eq!(fails.current_snapshot()["flows"], flows);

    hangs.set_behaviour(Behaviour::Hang);
    let (id, _) = deploy(&hub, &token, hangs.id(), &flows_for(hangs.id(), "v1")).await;
    wait_state(&hub, &token, hangs.id(), &id, "applying").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deployment(&hub, &token, hangs.id(), &id).await["state"], "applying");
    // Reconnected, it is sent the unfinished deployment again and answers without taking it
    // a second time.
    hangs.go_offline();
    wait_for_async(LONG, "the hanging device to disconnect", || async { (!hangs.is_connected()).then_some(()) }).await;
    hangs.set_behaviour(Behaviour::Apply);
    sim.wait_connected(4, LONG).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deployment(&hub, &token, hangs.id(), &id).await["state"], "applying");
    assert_eq!(hangs.deployments_received().len(), 1, "{:?}", hangs.deployments_received());

    away.go_offline();
    assert_eq!(away.behaviour(), Behaviour::Offline);
    wait_for_async(LONG, "the hub to see the device offline", || async {
        (online(&hub, &token).await.get(away.id()) == Some(&false)).then_some(())
    })
    .await;
    assert!(!away.is_connected());
    let flows = flows_for(away.id(), "v1");
    let (id, number) = deploy(&hub, &token, away.id(), &flows).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(deployment(&hub, &token, away.id(), &id).await["state"], "pending");
    assert!(away.deployments_received().is_empty());

    away.go_online();
    wait_state(&hub, &token, away.id(), &id, "applied").await;
    assert_eq!(away.current_snapshot()["flows"], flows);
    // Off and on again: the session reports the outcome again, and nothing is applied twice.
    away.go_offline();
    wait_for_async(LONG, "the device to disconnect", || async { (!away.is_connected()).then_some(()) }).await;
    away.go_online();
    sim.wait_connected(4, LONG).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(away.deployments_received(), vec![(id.clone(), number, hash_of(&flows))]);
    assert_eq!(deployment(&hub, &token, away.id(), &id).await["state"], "applied");

    // A policy is verified with the hub's key and answered as applied.
    let path = format!("/api/devices/{}/policy", away.id());
    let (code, answer) = call(&hub, Method::PUT, &path, &token, Some(json!({ "protection": true }))).await;
    assert!(code == 200 || code == 202, "{code} {answer}");
    let number = wait_for_async(LONG, "the policy applied", || async {
        let (_, p) = call(&hub, Method::GET, &path, &token, None).await;
        (p["state"] == "applied").then(|| p["number"].as_u64().unwrap())
    })
    .await;
    assert_eq!(away.policies_applied(), vec![number]);
    sim.shutdown().await;
    // (The log read is the hub's own: it tells of the deployments it sent.)
    assert!(hub.log().contains("deployment sent"));
    assert_spoke_the_protocol(&hub);
}

/// RSS of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_devices_enroll_and_connect() {
    scale(200).await;
}

/// The benchmark's upper end, run by hand: `cargo test -p redtether-hub --test simulator --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a minute of a loaded machine; run by hand"]
async fn a_thousand_devices_enroll_and_connect() {
    scale(1000).await;
}

async fn scale(n: usize) {
    let hub = Hub::start_logging("info");
    let before = rss_kib();
    let started = Instant::now();
    let config = SimConfig::new(&hub.addr(), &hub.fingerprint()).await.unwrap();
    let sim = Simulator::new(config).unwrap();
    let names = (0..n).map(|i| format!("fleet-{i:04}")).collect();
    let tokens = &hub;
    sim.enroll_many(names, |name| async move { tokens.enroll_token_async(&name).await }).await.unwrap();
    let enrolled = started.elapsed();
    sim.wait_connected(n, Duration::from_secs(300)).await.unwrap();
    let connected = started.elapsed();
    // Idle a little: heartbeats and keep-alives running, nothing else.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.connected(), n);
    eprintln!(
        "{n} simulated devices: enrolled in {enrolled:.2?}, all connected at {connected:.2?}; \
         test process RSS {} KiB before, {} KiB with the fleet (the whole process: tests running \
         beside this one count too)",
        before,
        rss_kib()
    );
    sim.shutdown().await;
    assert_spoke_the_protocol(&hub);
}
