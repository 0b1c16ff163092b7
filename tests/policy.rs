//! Security settings applied live, with a real agent and a real Node-RED: `redtether reload` and
//! SIGHUP. Node-RED is never restarted by any of it (its pid is compared). (The end-to-end tests
//! of policies set through the hub's API wait for the hub's policy routes: branch `issue14-e2e`.)

use redtether_testkit as common;

use common::agent::{Agent, BIN, default_users, fixture_node_red};
use common::http::{Cred, deploy, echo_flow, with};
use std::process::Command;
use std::time::Duration;

const OWNER: Cred<'static> = Cred::Basic("owner", "owner-pw");

fn node_red_pid(agent: &Agent) -> u64 {
    agent.status()["node_red"]["pid"].as_u64().expect("Node-RED runs")
}

/// An agent whose Node-RED starts with the echo flows deployed; `tables` after `[gate]`.
fn agent_with_flows(tables: &str) -> Agent {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let mut agent = Agent::prepare(&node_red, "", Some(tables));
    let user_dir = agent.state_dir().join("node-red");
    std::fs::create_dir_all(&user_dir).unwrap();
    std::fs::write(user_dir.join("flows.json"), serde_json::to_string_pretty(&echo_flow()).unwrap()).unwrap();
    agent.spawn(&[]);
    agent.wait_running();
    agent
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
