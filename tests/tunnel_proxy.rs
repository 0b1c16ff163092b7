//! The tunnel through a real HTTP proxy (Debian's tinyproxy, started by the test): enrollment
//! and the tunnel over TLS over TCP by CONNECT, without and with Basic proxy authentication; a
//! wrong password is a clear status message (and never shown); `NO_PROXY` naming the hub sends
//! the tunnel direct past the environment's proxy.

use redtether_testkit as common;

use common::agent::{Agent, BIN, default_users, fixture_node_red};
use common::hub::{Hub, wait_online};
use common::tinyproxy::{Tinyproxy, TinyproxyOptions};
use common::wait_for;
use std::process::Command;
use std::time::Duration;

fn tcp_hub() -> (Hub, u16) {
    let hub = Hub::start_with("debug", "[tcp]\nlisten = \"127.0.0.1:0\"\n");
    let port = hub.status()["tcp_listen"].as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
    (hub, port)
}

/// An agent on TCP to `tcp_port`, with `proxy` in `[tunnel]` when given.
fn agent(tcp_port: u16, proxy: Option<&str>) -> Agent {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let proxy = proxy.map(|p| format!("proxy = {p:?}\n")).unwrap_or_default();
    let tables = format!(
        "[gate.http_auth]\nmode = \"none\"\n{}\n[tunnel]\ntransport = \"tcp\"\ntcp_port = {tcp_port}\n{proxy}",
        default_users()
    );
    Agent::prepare(&node_red, "", Some(&tables))
}

fn enroll(agent: &Agent, hub: &Hub, device: &str, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(["enroll", "--hub", &hub.addr(), "--token", &hub.enroll_token(device)])
        .args(["--ca-fingerprint", &hub.fingerprint(), "--config"])
        .arg(&agent.config)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn connects_to(proxy: &Tinyproxy, port: u16) -> usize {
    let line = format!("CONNECT 127.0.0.1:{port} HTTP/1.1");
    proxy.requests().iter().filter(|r| **r == line).count()
}

#[test]
fn the_tunnel_goes_through_a_connect_proxy_with_and_without_authentication() {
    let (hub, tcp_port) = tcp_hub();

    // A proxy without authentication, which allows CONNECT to the hub's TCP port only.
    let open = Tinyproxy::start_with(&TinyproxyOptions { basic_auth: None, connect_ports: vec![tcp_port] });
    let mut plain = agent(tcp_port, Some(&open.url));
    let out = enroll(&plain, &hub, "silo-1", &[]);
    assert!(out.status.success(), "enrolled through the proxy: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(connects_to(&open, tcp_port), 1, "the enrollment's CONNECT: {}", open.log());
    plain.spawn(&[]);
    wait_online(&plain, 1);
    assert_eq!(plain.status()["tunnel"]["transport"], "tcp");
    assert_eq!(connects_to(&open, tcp_port), 2, "the tunnel's CONNECT");

    // A proxy asking for Basic credentials, given in the URL.
    let guarded = Tinyproxy::start_with(&TinyproxyOptions {
        basic_auth: Some(("plant".into(), "s3cret-pw".into())),
        connect_ports: vec![tcp_port],
    });
    let with_password = guarded.url.replacen("http://", "http://plant:s3cret-pw@", 1);
    let mut authed = agent(tcp_port, Some(&with_password));
    let out = enroll(&authed, &hub, "silo-2", &[]);
    assert!(out.status.success(), "enrolled with proxy credentials: {}", String::from_utf8_lossy(&out.stderr));
    authed.spawn(&[]);
    wait_online(&authed, 1);
    assert_eq!(connects_to(&guarded, tcp_port), 2, "{}", guarded.log());

    // The wrong password: the tunnel says so, plainly and without the password.
    authed.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(authed.wait_exit(Duration::from_secs(20)).success());
    let config = std::fs::read_to_string(&authed.config).unwrap().replace("s3cret-pw", "wrong-pw");
    std::fs::write(&authed.config, config).unwrap();
    authed.spawn(&[]);
    let refused = wait_for(Duration::from_secs(30), "the proxy's refusal in status", || {
        let t = authed.try_status()?["tunnel"].clone();
        let error = t["last_error"].as_str()?.to_string();
        error.contains("proxy").then_some((t, error))
    });
    let (tunnel, error) = refused;
    assert_ne!(tunnel["state"], "online", "{tunnel}");
    assert!(error.contains("refused its credentials") && error.contains("(40"), "{error}");
    assert!(!error.contains("wrong-pw") && !authed.log().contains("wrong-pw"), "the password is never shown");
    let human = Command::new(BIN).args(["status", "--config"]).arg(&authed.config).output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("refused its credentials"), "{human}");
}

#[test]
fn no_proxy_naming_the_hub_sends_the_tunnel_past_the_environments_proxy() {
    let (hub, tcp_port) = tcp_hub();
    // This proxy would refuse the hub's port: a tunnel that went through it could not connect.
    let refusing = Tinyproxy::start_with(&TinyproxyOptions { basic_auth: None, connect_ports: vec![443] });
    let mut agent = agent(tcp_port, None);
    let env = [("HTTPS_PROXY", refusing.url.as_str()), ("NO_PROXY", "localhost,127.0.0.1")];
    let out = enroll(&agent, &hub, "silo-3", &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent.spawn(&env);
    wait_online(&agent, 1);
    assert!(refusing.requests().is_empty(), "nothing went through the proxy: {:?}", refusing.requests());

    // Without NO_PROXY the environment's proxy is used, and its refusal is what status says.
    let through = self::agent(tcp_port, None);
    let out = enroll(&through, &hub, "silo-4", &[("HTTPS_PROXY", refusing.url.as_str())]);
    assert!(!out.status.success(), "the proxy refuses the hub's port");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused CONNECT") && said.contains("(403"), "{said}");
}
