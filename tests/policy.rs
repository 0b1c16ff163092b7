//! Security settings applied live, with a real agent, a real Node-RED and (for platform
//! policies) a real hub: `redtether reload` and SIGHUP, and policies set through the hub's API —
//! protection mode, node-space auth, tokens made at the hub, `managed = false`, many changes at
//! once. Node-RED is never restarted by any of it (its pid is compared).

use redtether_testkit as common;

use common::agent::{Agent, BIN, default_users, fixture_node_red, hash_of};
use common::http::{Cred, deploy, echo_flow, with};
use common::hub::{Hub, api, enroll, wait_online};
use std::process::Command;
use std::time::Duration;

const OWNER: Cred<'static> = Cred::Basic("owner", "owner-pw");

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn node_red_pid(agent: &Agent) -> u64 {
    agent.status()["node_red"]["pid"].as_u64().expect("Node-RED runs")
}

/// An agent whose Node-RED starts with the echo flows deployed; `tables` after `[gate]`.
fn agent_with_flows(tables: &str) -> Agent {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    Agent::start_with_flows(&node_red, "", Some(tables), &echo_flow())
}

fn tables(mode: &str, extra: &str) -> String {
    format!("[gate.http_auth]\nmode = {mode:?}\n{}{extra}", default_users())
}

async fn get_status(client: &reqwest::Client, url: &str, cred: Cred<'_>) -> u16 {
    with(client.get(url), cred).send().await.unwrap().status().as_u16()
}

/// Waits until anonymous requests to `url` get `status` (the route may take a moment to load).
async fn wait_status(client: &reqwest::Client, url: &str, cred: Cred<'_>, status: u16) {
    common::wait_for_async(Duration::from_secs(20), &format!("{url} answering {status}"), || async {
        (get_status(client, url, cred).await == status).then_some(())
    })
    .await;
}

/// The agent's events of `kind` read through a config that names only its state directory (the
/// agent's own file is broken on purpose).
fn events_of(agent: &Agent, kind: &str) -> Vec<serde_json::Value> {
    let probe = agent.dir.path().join("probe.toml");
    std::fs::write(&probe, format!("state_dir = {:?}\n", agent.state_dir().display().to_string())).unwrap();
    let out =
        Command::new(BIN).args(["audit", "list", "--json", "--kind", kind, "--config"]).arg(&probe).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn reload(agent: &Agent) -> std::process::Output {
    Command::new(BIN).args(["reload", "--config"]).arg(&agent.config).output().unwrap()
}

/// Rewrites the agent's config with these `[gate]` tables (everything else as it was).
fn rewrite(agent: &Agent, gate_keys: &str, tables: &str) {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let text = common::agent::config_with(agent.dir.path(), &node_red, gate_keys, Some(tables));
    std::fs::write(&agent.config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_the_files_security_settings_live_without_restarting_node_red() {
    let agent = agent_with_flows(&tables("none", ""));
    let client = common::http::client();
    let data = format!("{}/api/data", agent.gate_url());
    wait_status(&client, &data, Cred::None, 200).await;
    let pid = node_red_pid(&agent);

    // Node space switched to users, by `redtether reload`.
    rewrite(&agent, "", &tables("users", ""));
    let out = reload(&agent);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get_status(&client, &data, Cred::None).await, 401, "the next anonymous request");
    assert_eq!(get_status(&client, &data, OWNER).await, 200);
    let reloaded = agent.events("config.reloaded");
    assert_eq!(reloaded.last().unwrap()["detail"]["changes"]["http_auth"]["mode"], "users");
    assert_eq!(agent.status()["policy"]["source"], "file");

    // Protection mode, by SIGHUP: the next deploy is refused and the flows stay.
    rewrite(&agent, "protection = true", &tables("users", ""));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    common::wait_for(Duration::from_secs(10), "protection on", || {
        (agent.status()["gate"]["protection"] == true).then_some(())
    });
    let refused = deploy(&client, &agent.gate_url(), &serde_json::json!([]), OWNER).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"], "protection_mode");
    assert_eq!(get_status(&client, &data, OWNER).await, 200, "the flows still run");

    // And off again: deploys work, and Node-RED was never restarted.
    rewrite(&agent, "", &tables("users", ""));
    assert!(reload(&agent).status.success());
    let flows = echo_flow();
    assert_eq!(deploy(&client, &agent.gate_url(), &flows, OWNER).await.status(), 200);
    assert_eq!(node_red_pid(&agent), pid, "Node-RED was not restarted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_keeps_the_running_settings_and_reload_names_file_and_key() {
    let agent = agent_with_flows(&tables("users", ""));
    let client = common::http::client();
    let data = format!("{}/api/data", agent.gate_url());
    wait_status(&client, &data, OWNER, 200).await;

    std::fs::write(
        &agent.config,
        std::fs::read_to_string(&agent.config).unwrap().replace("mode = \"users\"", "mode = \"open\""),
    )
    .unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    common::wait_for(Duration::from_secs(10), "config.reload_failed", || {
        events_of(&agent, "config.reload_failed").last().cloned()
    });
    let failed = events_of(&agent, "config.reload_failed");
    assert_eq!(failed.last().unwrap()["detail"]["key"], "gate.http_auth.mode");
    assert_eq!(get_status(&client, &data, Cred::None).await, 401, "the old settings are still enforced");
    assert_eq!(get_status(&client, &data, OWNER).await, 200);

    let out = reload(&agent);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gate.http_auth.mode") && stderr.contains(&agent.config.display().to_string()), "{stderr}");
    assert_eq!(events_of(&agent, "config.reload_failed").len(), 2, "the daemon recorded the second one too");
    assert_eq!(get_status(&client, &data, Cred::None).await, 401);

    // A setting that cannot change live is reported, not silently ignored.
    let text = std::fs::read_to_string(&agent.config).unwrap().replace("mode = \"open\"", "mode = \"users\"");
    std::fs::write(&agent.config, text.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")).unwrap();
    let out = reload(&agent);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gate.listen changed: takes effect when the agent restarts"));
    let last = agent.events("config.reloaded").last().cloned().unwrap();
    assert_eq!(last["detail"]["needs_restart"], serde_json::json!(["gate.listen"]));
}

// ---- policies from a real hub ----

/// The policy document the tests set: the test users (so the LAN editor keeps working) plus
/// what `edit` changes.
fn document(mode: &str, protection: bool) -> serde_json::Value {
    let users: Vec<serde_json::Value> = common::agent::USERS
        .iter()
        .map(|(name, password, role)| serde_json::json!({"name": name, "password_hash": hash_of(password), "role": role}))
        .collect();
    serde_json::json!({ "protection": protection, "http_auth": { "mode": mode }, "users": users })
}

async fn put_policy(hub: &Hub, token: &str, device: &str, doc: &serde_json::Value) -> u64 {
    let r = common::http::client()
        .put(format!("{}/api/devices/{device}/policy", hub.api()))
        .bearer_auth(token)
        .json(doc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<serde_json::Value>().await.unwrap()["number"].as_u64().unwrap()
}

/// Waits until the hub says the device answered policy `number` with `state`.
async fn wait_policy(hub: &Hub, token: &str, device: &str, number: u64, state: &str) -> serde_json::Value {
    let path = format!("/api/devices/{device}/policy");
    common::wait_for_async(Duration::from_secs(20), &format!("policy {number} {state}"), || async {
        let (status, body) = api(hub, reqwest::Method::GET, &path, Some(token)).await;
        (status == 200 && body["number"] == number && body["state"] == state).then_some(body)
    })
    .await
}

fn online(hub: &Hub, device: &str, tables: &str) -> Agent {
    let agent = agent_with_flows(tables);
    let out = enroll(&agent.config, hub, device);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);
    agent
}

#[tokio::test(flavor = "multi_thread")]
async fn protection_and_node_auth_set_at_the_hub_apply_live_without_restarting_node_red() {
    let hub = Hub::start();
    let op = hub.operator("ops", "owner");
    let agent = online(&hub, "pump-1", &tables("none", ""));
    let client = common::http::client();
    let gate = agent.gate_url();
    let data = format!("{gate}/api/data");
    wait_status(&client, &data, Cred::None, 200).await;
    let pid = node_red_pid(&agent);
    let session = common::http::login(&client, &gate, "owner", "owner-pw").await.unwrap();
    let flows_before = std::fs::read(agent.state_dir().join("node-red/flows.json")).unwrap();

    // Protection on from the hub while the owner has the editor open.
    let n = put_policy(&hub, &op, "pump-1", &document("none", true)).await;
    let answer = wait_policy(&hub, &op, "pump-1", n, "applied").await;
    assert!(answer["applied_at"].is_string(), "{answer}");
    let refused = deploy(&client, &gate, &serde_json::json!([]), Cred::Bearer(&session)).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(std::fs::read(agent.state_dir().join("node-red/flows.json")).unwrap(), flows_before);
    let status = agent.status();
    assert_eq!((status["policy"]["source"].as_str(), status["policy"]["number"].as_u64()), (Some("platform"), Some(n)));

    // Node space from none to users: the next anonymous request is refused.
    let n = put_policy(&hub, &op, "pump-1", &document("users", true)).await;
    wait_policy(&hub, &op, "pump-1", n, "applied").await;
    assert_eq!(get_status(&client, &data, Cred::None).await, 401);
    assert_eq!(get_status(&client, &data, OWNER).await, 200);

    // Protection off: the same owner deploys again; Node-RED never restarted.
    let n = put_policy(&hub, &op, "pump-1", &document("users", false)).await;
    wait_policy(&hub, &op, "pump-1", n, "applied").await;
    assert_eq!(deploy(&client, &gate, &echo_flow(), Cred::Bearer(&session)).await.status(), 200);
    assert_eq!(node_red_pid(&agent), pid);

    let applied = agent.events("policy.applied");
    assert_eq!(applied.len(), 3);
    assert_eq!(applied[0]["detail"]["changes"]["protection"], true);
    let text = serde_json::to_string(&applied).unwrap();
    assert!(!text.contains("$argon2"), "no hashes in the device's events: {text}");

    // The policy survives a restart of the agent, before any hub is reachable.
    let mut agent = agent;
    drop(hub);
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(20));
    agent.spawn(&[]);
    agent.wait_running();
    assert_eq!(agent.status()["policy"]["number"].as_u64(), Some(n));
    wait_status(&client, &format!("{}/api/data", agent.gate_url()), Cred::None, 401).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_made_at_the_hub_works_offline_until_its_expiry_second_and_revocations_follow_reconnects() {
    let mut hub = Hub::start();
    let op = hub.operator("ops", "owner");
    let agent = online(&hub, "pump-2", &tables("users", ""));
    let client = common::http::client();
    let data = format!("{}/api/data", agent.gate_url());
    wait_status(&client, &data, OWNER, 200).await;
    put_policy(&hub, &op, "pump-2", &document("users", false)).await;

    let make = |name: &str, expires_in: u64| {
        let (client, url, op) = (client.clone(), format!("{}/api/devices/pump-2/tokens", hub.api()), op.clone());
        let body = serde_json::json!({"name": name, "expires_in": expires_in});
        async move {
            let r = client.post(url).bearer_auth(op).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 201);
            r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string()
        }
    };
    let short = make("short", 6).await;
    let long = make("long", 3600).await;
    let expires = unix_now() + 6;
    let (_, policy) = api(&hub, reqwest::Method::GET, "/api/devices/pump-2/policy", Some(&op)).await;
    let number = policy["number"].as_u64().unwrap();
    wait_policy(&hub, &op, "pump-2", number, "applied").await;
    assert_eq!(get_status(&client, &data, Cred::Bearer(&short)).await, 200);
    assert_eq!(agent.events("token.created").iter().filter(|e| e["detail"]["via"] == "platform").count(), 2);

    // The hub is gone: the device still knows the token, until its expiry second.
    hub.kill9();
    while unix_now() + 1 < expires {
        assert_eq!(get_status(&client, &data, Cred::Bearer(&short)).await, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    while unix_now() < expires {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get_status(&client, &data, Cred::Bearer(&short)).await, 401, "refused from the expiry second on");
    assert_eq!(get_status(&client, &data, Cred::Bearer(&long)).await, 200);

    // Revoked at the hub while the device cannot hear it: enforced once it reconnects.
    hub.spawn();
    let (status, _) = api(&hub, reqwest::Method::DELETE, "/api/devices/pump-2/tokens/long", Some(&op)).await;
    assert_eq!(status, 204);
    let (_, policy) = api(&hub, reqwest::Method::GET, "/api/devices/pump-2/policy", Some(&op)).await;
    wait_policy(&hub, &op, "pump-2", policy["number"].as_u64().unwrap(), "applied").await;
    assert_eq!(get_status(&client, &data, Cred::Bearer(&long)).await, 401);
    assert!(agent.events("token.revoked").iter().any(|e| e["target"] == "long" && e["detail"]["via"] == "platform"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locally_managed_device_refuses_policies_and_the_hub_shows_why() {
    let hub = Hub::start();
    let op = hub.operator("ops", "owner");
    let agent = online(&hub, "pump-3", &tables("none", "[policy]\nmanaged = false\n"));
    let client = common::http::client();
    let data = format!("{}/api/data", agent.gate_url());
    wait_status(&client, &data, Cred::None, 200).await;

    let n = put_policy(&hub, &op, "pump-3", &document("users", true)).await;
    let answer = wait_policy(&hub, &op, "pump-3", n, "refused").await;
    assert_eq!(answer["reason"], "locally_managed");
    assert_eq!(get_status(&client, &data, Cred::None).await, 200, "the file's settings stay");
    let refused = agent.events("policy.refused");
    assert_eq!(refused.last().unwrap()["detail"]["reason"], "locally_managed");
    assert_eq!(agent.status()["policy"]["source"], "file");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_changes_get_rising_numbers_and_the_device_ends_on_the_last() {
    let hub = Hub::start();
    let op = hub.operator("ops", "owner");
    let agent = online(&hub, "pump-4", &tables("none", ""));
    let mut puts = Vec::new();
    for i in 0..20 {
        let (hub_api, op) = (hub.api(), op.clone());
        let mut doc = document("none", false);
        doc["rate_limit"] = serde_json::json!({"requests_per_second": 100 + i, "burst": 200});
        puts.push(tokio::spawn(async move {
            let r = common::http::client()
                .put(format!("{hub_api}/api/devices/pump-4/policy"))
                .bearer_auth(op)
                .json(&doc)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<serde_json::Value>().await.unwrap()["number"].as_u64().unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for put in puts {
        numbers.push(put.await.unwrap());
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 20, "every change has its own number: {numbers:?}");
    let last = *numbers.last().unwrap();
    wait_policy(&hub, &op, "pump-4", last, "applied").await;
    common::wait_for(Duration::from_secs(10), "the device on the last policy", || {
        (agent.status()["policy"]["number"].as_u64() == Some(last)).then_some(())
    });
}
