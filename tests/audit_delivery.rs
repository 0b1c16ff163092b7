//! Audit delivery through the tunnel, with a real hub and agent: events recorded while the hub
//! is away arrive once and in order after it returns; an agent killed between sending a batch
//! and hearing its acknowledgement loses nothing, and the hub drops what it already had.

use redtether_testkit as common;

use common::agent::{Agent, BIN};
use common::hub::{Hub, PLACEHOLDER, api, delivered, enroll, wait_online};
use common::{send_signal, wait_for_async};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn make_tokens(agent: &Agent, names: std::ops::Range<u32>) {
    for i in names {
        let out = Command::new(BIN)
            .args(["token", "create", "--name", &format!("t{i}"), "--expires", "1h", "--config"])
            .arg(&agent.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Every journal event is at the hub exactly once, in seq order, as the device sealed it.
fn assert_same_trail(at_hub: &[Value], local: &[Value]) {
    let ids: std::collections::HashSet<&str> = at_hub.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), at_hub.len(), "an event is at the hub twice");
    let seqs: Vec<u64> = at_hub.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order: {seqs:?}");
    let local_trail: Vec<(&Value, &Value)> = local.iter().map(|e| (&e["id"], &e["hash"])).collect();
    let hub_trail: Vec<(&Value, &Value)> = at_hub.iter().map(|e| (&e["id"], &e["hash"])).collect();
    assert_eq!(hub_trail, local_trail, "the hub's copy is the journal, event for event");
    assert!(at_hub.iter().all(|e| e["source"] == "device"));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_recorded_while_the_hub_is_down_arrives_once_in_order() {
    let mut hub = Hub::start();
    let agent = Agent::start_with(PLACEHOLDER, &[]);
    agent.status();
    assert!(enroll(&agent.config, &hub, "pump-a").status.success());
    wait_online(&agent, 1);
    let owner = hub.operator("ops", "owner");
    let (at_hub, local) = delivered(&hub, &agent, "pump-a", &owner).await;
    assert_same_trail(&at_hub, &local);

    hub.kill9();
    make_tokens(&agent, 0..20);
    let backlog = agent.status()["audit"]["backlog"].as_u64().unwrap();
    assert!(backlog >= 20, "kept while the hub is away: {backlog}");
    hub.spawn();
    wait_online(&agent, 2);
    let (at_hub, local) = delivered(&hub, &agent, "pump-a", &owner).await;
    assert_same_trail(&at_hub, &local);
    let created = at_hub.iter().filter(|e| e["kind"] == "token.created").count();
    assert_eq!(created, 20);
    assert!(at_hub.iter().any(|e| e["kind"] == "tunnel.disconnected"), "the outage itself is on the trail");
    wait_for_async(Duration::from_secs(30), "the backlog to drain", || async {
        (agent.status()["audit"]["backlog"] == 0).then_some(())
    })
    .await;

    // One place for the whole trail: the hub's own events about the device are there too.
    let (_, all) = api(&hub, reqwest::Method::GET, "/api/devices/pump-a/audit", Some(&owner)).await;
    let hub_kinds: Vec<&str> =
        all.as_array().unwrap().iter().filter(|e| e["source"] == "hub").map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(hub_kinds.contains(&"device.enrolled") && hub_kinds.contains(&"device.connected"), "{hub_kinds:?}");
    let last = local.last().unwrap()["seq"].as_u64().unwrap();
    let (_, newer) = api(
        &hub,
        reqwest::Method::GET,
        &format!("/api/devices/pump-a/audit?source=device&after={}", last - 3),
        Some(&owner),
    )
    .await;
    assert_eq!(
        newer.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![last - 2, last - 1, last]
    );
    let (_, tokens) = api(&hub, reqwest::Method::GET, "/api/devices/pump-a/audit?kind=token", Some(&owner)).await;
    assert_eq!(tokens.as_array().unwrap().len(), 20);
    assert_eq!(api(&hub, reqwest::Method::GET, "/api/devices/pump-a/audit?after=soon", Some(&owner)).await.0, 400);
    assert_eq!(api(&hub, reqwest::Method::GET, "/api/devices/pump-a/audit", None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_before_the_ack_loses_nothing_and_the_hub_drops_duplicates() {
    let hub = Hub::start();
    let mut agent = Agent::start_with(PLACEHOLDER, &[]);
    agent.status();
    assert!(enroll(&agent.config, &hub, "pump-b").status.success());
    wait_online(&agent, 1);
    let owner = hub.operator("ops", "owner");
    delivered(&hub, &agent, "pump-b", &owner).await;

    // The hub cannot answer: what the agent sends now waits in the hub's socket buffer.
    send_signal(hub.pid(), Signal::SIGSTOP);
    make_tokens(&agent, 0..5);
    std::thread::sleep(Duration::from_millis(1500));
    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10));
    // The hub wakes, stores the batch and acknowledges it to an agent that is gone.
    send_signal(hub.pid(), Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(1000));

    agent.spawn(&[]);
    wait_online(&agent, 1);
    let (at_hub, local) = delivered(&hub, &agent, "pump-b", &owner).await;
    assert_same_trail(&at_hub, &local);
    assert_eq!(at_hub.iter().filter(|e| e["kind"] == "token.created").count(), 5);
    let (_, device) = api(&hub, reqwest::Method::GET, "/api/devices/pump-b", Some(&owner)).await;
    assert!(device["audit"]["duplicates"].as_u64().unwrap() >= 1, "the batch was sent twice and kept once: {device}");
}
