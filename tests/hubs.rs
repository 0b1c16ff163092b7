//! Several hub addresses (`[tunnel] hubs`, `redtether enroll --hub a --hub b`), with real hub
//! and agent processes on loopback: a dead hub listed first costs seconds, not the backoff; the
//! agent sticks to the hub that worked; enrollment goes through whichever hub answers and stores
//! them all; names and both address families; the key named when the list is wrong.

use redtether_testkit as common;

use common::agent::{Agent, BIN};
use common::hub::{Hub, PLACEHOLDER, api, enroll, wait_online};
use common::wait_for;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous for a loaded two-core machine, but far below a connect timeout per dead hub plus a
/// backoff: a dead first hub costs the one-second head start (`dial::STAGGER`).
const QUICKLY: Duration = Duration::from_secs(8);

/// A loopback UDP address nothing listens on (bound, read, released).
fn dead_address() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().to_string()
}

fn port_of(address: &str) -> &str {
    address.rsplit_once(':').unwrap().1
}

/// Appends `[tunnel] hubs` to the agent's config.
fn set_hubs(agent: &Agent, hubs: &[&str]) {
    let mut text = std::fs::read_to_string(&agent.config).unwrap();
    text.push_str(&format!("\n[tunnel]\nhubs = {hubs:?}\n"));
    std::fs::write(&agent.config, text).unwrap();
}

/// Stops the hub and starts it again from the same state (CA, registry) on a new port; returns
/// the new address. The old one is then a dead hub the device was enrolled with.
fn move_hub(hub: &mut Hub) -> String {
    let old = hub.addr();
    hub.kill9();
    let text = std::fs::read_to_string(&hub.config).unwrap();
    let moved = text.replace(&format!("listen = {old:?}"), "listen = \"127.0.0.1:0\"");
    assert_ne!(text, moved, "the hub's pinned port is in its config");
    std::fs::write(&hub.config, moved).unwrap();
    hub.spawn();
    let new = wait_for(Duration::from_secs(20), "the moved hub's address", || {
        let listen = hub.status()["listen"].as_str()?.to_string();
        (listen != old).then_some(listen)
    });
    hub.quic = Some(new.clone());
    new
}

/// When the agent logged `line` (its first field, RFC 3339).
fn logged_at(line: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(line.split_whitespace().next().unwrap()).unwrap()
}

fn tunnel(agent: &Agent) -> Value {
    agent.status()["tunnel"].clone()
}

fn stop(agent: &mut Agent) {
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(15)).success());
}

/// The targets of the agent's `kind` events, once there are at least `n`.
fn targets(agent: &Agent, kind: &str, n: usize) -> Vec<Value> {
    wait_for(Duration::from_secs(10), &format!("{n} {kind} events"), || {
        let events = agent.events(kind);
        (events.len() >= n).then_some(events)
    })
}

#[test]
fn two_hubs_listed_the_first_one_down_the_agent_connects_to_the_second() {
    let mut hub = Hub::start();
    let mut agent = Agent::prepare(PLACEHOLDER, "", None);
    assert!(enroll(&agent.config, &hub, "plant-1").status.success());
    let dead = hub.addr();
    let live = move_hub(&mut hub);
    set_hubs(&agent, &[&dead, &live]);

    // The start order is random. Start until a run dialled the dead hub first (each run does with
    // p = 1/2; ten runs all miss it with p < 1/1000), and each run must be online quickly.
    let mut dead_first = false;
    for run in 1..=10 {
        let started = Instant::now();
        agent.spawn(&[]);
        wait_online(&agent, 1);
        let took = started.elapsed();
        assert!(took < QUICKLY, "run {run}: online after {took:?}");
        let t = tunnel(&agent);
        assert_eq!((&t["hub"], &t["hub_addr"]), (&json!(live), &json!(live)), "run {run}: {t}");
        assert_eq!(t["hubs"], json!([dead, live]), "the configured list replaces the enrollment's");
        let log = agent.log();
        let first = log.lines().find(|l| l.contains("dialling hub candidate")).expect("candidates logged");
        dead_first = first.contains(&dead);
        if dead_first {
            // From dialling the dead hub to the tunnel being up at the live one: the head start,
            // not a connect timeout (4 s) and not a backoff.
            let up = log.lines().find(|l| l.contains("tunnel up")).expect("tunnel up logged");
            let waited = logged_at(up).duration_since(logged_at(first)).unwrap();
            assert!(waited < Duration::from_secs(3), "the live hub after {waited:?}");
            let human = Command::new(BIN).args(["status", "--config"]).arg(&agent.config).output().unwrap();
            let human = String::from_utf8_lossy(&human.stdout);
            assert!(human.contains(&format!("tunnel    online (hub {live}, device plant-1)")), "{human}");
            assert!(human.contains(&format!("hubs {dead}, {live}")), "{human}");
            let connected = targets(&agent, "tunnel.connected", run);
            let last = connected.last().unwrap();
            assert_eq!((&last["target"], &last["detail"]["addr"]), (&json!(live), &json!(live)), "{last}");
            assert!(connected.iter().all(|e| e["target"] == json!(live)), "never the dead one: {connected:?}");
            stop(&mut agent);
            break;
        }
        stop(&mut agent);
    }
    assert!(dead_first, "no run dialled the dead hub first");
}

/// Ends the device's connection from the hub (retried until the hub has registered it).
async fn disconnect(hub: &Hub, token: &str, device: &str) {
    let path = format!("/api/devices/{device}/disconnect");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = api(hub, reqwest::Method::POST, &path, Some(token)).await;
        if code == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "disconnect: {code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_both_addresses_alive_the_agent_reconnects_to_the_one_it_used() {
    let hub = Hub::start();
    let mut agent = Agent::prepare(PLACEHOLDER, "", None);
    assert!(enroll(&agent.config, &hub, "plant-2").status.success());
    let by_ip = hub.addr();
    let by_name = format!("localhost:{}", port_of(&by_ip));
    set_hubs(&agent, &[&by_ip, &by_name]);
    agent.spawn(&[]);
    wait_online(&agent, 1);
    let used = tunnel(&agent)["hub"].as_str().unwrap().to_string();
    assert!(used == by_ip || used == by_name, "{used}");
    let owner = hub.operator("ops", "owner");
    // A round that ignored what worked would pick the other address half of the time.
    for n in 2..=4 {
        disconnect(&hub, &owner, "plant-2").await;
        wait_online(&agent, n);
        assert_eq!(tunnel(&agent)["hub"], json!(used), "connection {n}");
    }
    let connected = targets(&agent, "tunnel.connected", 4);
    assert!(connected.iter().all(|e| e["target"] == json!(used)), "{connected:?}");
    let disconnected = targets(&agent, "tunnel.disconnected", 3);
    assert!(disconnected.iter().all(|e| e["target"] == json!(used)), "{disconnected:?}");
}

fn enroll_with(agent: &Agent, hub_args: &[&str], hub: &Hub, device: &str) -> std::process::Output {
    Command::new(BIN)
        .arg("enroll")
        .args(hub_args)
        .args(["--token", &hub.enroll_token(device), "--ca-fingerprint", &hub.fingerprint(), "--config"])
        .arg(&agent.config)
        .output()
        .unwrap()
}

fn stored(agent: &Agent) -> Value {
    serde_json::from_str(&std::fs::read_to_string(agent.state_dir().join("identity/hub.json")).unwrap()).unwrap()
}

#[test]
fn enroll_with_a_dead_and_a_live_hub_goes_through_the_live_one_and_stores_both() {
    let hub = Hub::start();
    let (dead, live) = (dead_address(), hub.addr());

    let mut agent = Agent::prepare(PLACEHOLDER, "", None);
    let started = Instant::now();
    let out = enroll_with(&agent, &["--hub", &dead, "--hub", &live], &hub, "plant-3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < QUICKLY, "enrolled after {:?}", started.elapsed());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("with the hub at {live}")));
    let info = stored(&agent);
    assert_eq!((&info["hub"], &info["hubs"]), (&json!(live), &json!([dead, live])), "{info}");

    // The comma-separated form is the same list.
    let other = Agent::prepare(PLACEHOLDER, "", None);
    let out = enroll_with(&other, &["--hub", &format!("{dead},{live}")], &hub, "plant-4");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stored(&other)["hubs"], json!([dead, live]));

    // Without `[tunnel] hubs`, the agent dials the list stored at enrollment.
    agent.spawn(&[]);
    wait_online(&agent, 1);
    let t = tunnel(&agent);
    assert_eq!((&t["hub"], &t["hubs"]), (&json!(live), &json!([dead, live])), "{t}");

    // A malformed address is refused before anything is sent.
    let third = Agent::prepare(PLACEHOLDER, "", None);
    let out = enroll_with(&third, &["--hub", &live, "--hub", "::1:7443"], &hub, "plant-5");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in brackets"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!third.state_dir().join("identity/hub.json").exists());
}

#[test]
fn a_dns_name_connects_and_an_address_family_without_a_hub_is_passed_over() {
    // The hub listens on 127.0.0.1 only. `localhost` resolves to 127.0.0.1 (and on hosts whose
    // /etc/hosts says so, also to ::1, where nothing answers); [::1] is listed too so both
    // families are dialled wherever this runs. The hub's certificate names both.
    let hub = Hub::start();
    let mut agent = Agent::prepare(PLACEHOLDER, "", None);
    assert!(enroll(&agent.config, &hub, "plant-6").status.success());
    let port = port_of(&hub.addr()).to_string();
    let (name, v6) = (format!("localhost:{port}"), format!("[::1]:{port}"));
    set_hubs(&agent, &[&v6, &name]);
    let started = Instant::now();
    agent.spawn(&[]);
    wait_online(&agent, 1);
    assert!(started.elapsed() < QUICKLY, "online after {:?}", started.elapsed());
    let t = tunnel(&agent);
    assert_eq!((&t["hub"], &t["hub_addr"]), (&json!(name), &json!(format!("127.0.0.1:{port}"))), "{t}");
    let connected = targets(&agent, "tunnel.connected", 1);
    assert_eq!(connected[0]["target"], json!(name));
}

#[test]
fn a_wrong_hub_list_is_a_config_error_naming_tunnel_hubs() {
    for bad in ["[]", "[\"hub-a\"]", "[\"::1:7443\"]", "[\"hub-a:7443\", \"hub-a:7443\"]", "\"hub-a:7443\""] {
        let agent = Agent::prepare(PLACEHOLDER, "", None);
        let mut text = std::fs::read_to_string(&agent.config).unwrap();
        text.push_str(&format!("\n[tunnel]\nhubs = {bad}\n"));
        std::fs::write(&agent.config, text).unwrap();
        for subcommand in ["check-config", "run"] {
            let out = Command::new(BIN).args([subcommand, "--config"]).arg(&agent.config).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{subcommand} with {bad}: {stderr}");
            assert!(stderr.contains("`tunnel.hubs`"), "{subcommand} with {bad}: {stderr}");
        }
    }
}
