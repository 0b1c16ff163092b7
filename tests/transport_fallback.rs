//! A device behind a firewall that drops UDP, for real: the agent runs in a network namespace
//! made by the test (a veth pair to the host, nftables dropping UDP on it), the hub on the host.
//! With `[tunnel] transport = "auto"` the agent enrolls and connects over TLS over TCP within
//! 5 s; the remote editor and its websocket work through the hub, a signed deployment applies,
//! the journal arrives exactly once. When UDP passes again, the agent is back on QUIC within
//! the probe interval, and no audit event was lost or stored twice across the switch.
//! (Root only: namespaces and nftables; CI runs as root.)

use redtether_testkit as common;

use common::agent::{Agent, BIN, default_users, fixture_node_red};
use common::hub::{Hub, call};
use common::netns::Netns;
use common::{wait_for, wait_for_async};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Every event the device journaled up to its newest is at the hub, each once, in order.
async fn journal_exactly_once(hub: &Hub, token: &str, agent: &Agent, device: &str) -> u64 {
    let last = wait_for_async(Duration::from_secs(60), "the journal delivered", || async {
        let status = agent.status();
        let last = status["audit"]["last_seq"].as_u64()?;
        let (_, d) = call(hub, reqwest::Method::GET, &format!("/api/devices/{device}"), token, None).await;
        (d["audit"]["acked"].as_u64()? == last && status["audit"]["backlog"] == 0).then_some(last)
    })
    .await;
    let path = format!("/api/devices/{device}/audit?source=device");
    let (_, audit) = call(hub, reqwest::Method::GET, &path, token, None).await;
    let seqs: Vec<u64> = audit.as_array().unwrap().iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "each event once, none missing");
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn with_udp_dropped_the_agent_falls_back_to_tcp_and_returns_to_quic_when_it_passes() {
    let netns = Netns::new();
    netns.block_udp();
    let host = netns.host_ip();
    let hub = Hub::start_at(
        "debug",
        "0.0.0.0:0",
        "127.0.0.1:0",
        &format!("names = [\"{host}\"]\n[tcp]\nlisten = \"0.0.0.0:0\"\n"),
    );
    let quic_port = hub.addr().rsplit_once(':').unwrap().1.to_string();
    let tcp_port = hub.status()["tcp_listen"].as_str().unwrap().rsplit_once(':').unwrap().1.to_string();
    let owner = hub.operator("ops", "owner");

    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let tables = format!(
        "[gate.http_auth]\nmode = \"none\"\n{}\n[tunnel]\ntransport = \"auto\"\nquic_probe = \"3s\"\ntcp_port = {tcp_port}\n",
        default_users()
    );
    let mut agent = Agent::prepare(&node_red, "", Some(&tables));
    // Enrollment from inside the namespace: no QUIC answer, so over TCP.
    let enrolled = netns
        .command(BIN)
        .args(["enroll", "--hub", &format!("{host}:{quic_port}"), "--token", &hub.enroll_token("cellar-1")])
        .args(["--ca-fingerprint", &hub.fingerprint(), "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(enrolled.status.success(), "enrolled over TCP: {}", String::from_utf8_lossy(&enrolled.stderr));

    let started = Instant::now();
    agent.spawn_in(&netns);
    let online = wait_for(Duration::from_secs(30), "the tunnel online", || {
        let t = agent.try_status()?["tunnel"].clone();
        (t["state"] == "online").then_some(t)
    });
    let took = started.elapsed();
    assert_eq!(online["transport"], "tcp", "{online}");
    assert!(took < Duration::from_secs(5), "on TCP after {took:?}, not within 5 s");
    agent.wait_running();

    // The editor and its websocket through the hub and the TCP tunnel.
    let editor = format!("{}/devices/cellar-1/editor", hub.api());
    let client = common::http::client();
    let page = client.get(format!("{editor}/")).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        common::hub::editor_websocket_hears_a_deploy(&hub, "cellar-1", &owner).await,
        "a notification over the editor's websocket"
    );

    // A signed deployment applies over TCP.
    let flows = json!([{"id": "t1", "type": "tab", "label": "deployed over tcp"}]);
    let (code, answer) =
        call(&hub, reqwest::Method::POST, "/api/devices/cellar-1/deploy", &owner, Some(json!({"flows": flows}))).await;
    assert_eq!(code, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    let done: Value = wait_for_async(Duration::from_secs(90), "the deployment to end", || async {
        let path = format!("/api/devices/cellar-1/deployments/{id}");
        let (_, d) = call(&hub, reqwest::Method::GET, &path, &owner, None).await;
        ["applied", "rolled_back", "failed"].contains(&d["state"].as_str()?).then_some(d)
    })
    .await;
    assert_eq!(done["state"], "applied", "{done}");
    let before_switch = journal_exactly_once(&hub, &owner, &agent, "cellar-1").await;

    // UDP passes again: the next probe finds QUIC and the tunnel moves.
    netns.allow_udp();
    let moved_at = Instant::now();
    let back = wait_for(Duration::from_secs(30), "the tunnel back on QUIC", || {
        let t = agent.try_status()?["tunnel"].clone();
        (t["state"] == "online" && t["transport"] == "quic").then_some(t)
    });
    assert!(moved_at.elapsed() < Duration::from_secs(3 + 10), "back on QUIC after {:?}: {back}", moved_at.elapsed());
    let (_, device) = call(&hub, reqwest::Method::GET, "/api/devices/cellar-1", &owner, None).await;
    assert_eq!(device["transport"], "quic", "{device}");
    // The switch left its own events (tunnel.disconnected on TCP, tunnel.connected on QUIC):
    // they and everything before arrive, once.
    let after_switch = journal_exactly_once(&hub, &owner, &agent, "cellar-1").await;
    assert!(after_switch > before_switch);
    let connected = agent.events("tunnel.connected");
    let transports: Vec<&str> = connected.iter().filter_map(|e| e["detail"]["transport"].as_str()).collect();
    assert_eq!(transports, ["tcp", "quic"], "{connected:?}");
}
