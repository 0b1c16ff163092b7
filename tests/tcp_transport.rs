//! The tunnel over TLS over TCP (`[tunnel] transport = "tcp"`, the hub's `[tcp] listen`): a
//! device enrolled and managed over TCP only — status, the remote editor and its websocket
//! through the hub, a signed deployment, its audit journal delivered exactly once, a
//! revocation ending in `auth_failed` as over QUIC — and the hub's TCP listener judged by an
//! independent TLS client (Python's `ssl`): what it refuses and how, as QUIC's.

use redtether_testkit as common;

use common::agent::{Agent, default_users, fixture_node_red};
use common::hub::{Hub, call, enroll, wait_online};
use common::tls::device_cert;
use common::wait_for_async;
use redtether_pki::Ca;
use serde_json::json;
use std::time::{Duration, SystemTime};

fn tcp_hub() -> (Hub, u16) {
    let hub = Hub::start_with("debug", "[tcp]\nlisten = \"127.0.0.1:0\"\n");
    let tcp = hub.status()["tcp_listen"].as_str().expect("the hub says where it listens on TCP").to_string();
    let port = tcp.rsplit_once(':').unwrap().1.parse().unwrap();
    (hub, port)
}

/// An agent whose tunnel may only use TCP, to the hub's TCP port.
fn tcp_agent(tcp_port: u16) -> Agent {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let tables = format!(
        "[gate.http_auth]\nmode = \"none\"\n{}\n[tunnel]\ntransport = \"tcp\"\ntcp_port = {tcp_port}\n",
        default_users()
    );
    let agent = Agent::start_full(&node_red, "", Some(&tables), &[]);
    agent.wait_running();
    agent
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_on_tcp_only_is_enrolled_and_fully_managed() {
    let (hub, tcp_port) = tcp_hub();
    let owner = hub.operator("ops", "owner");
    let agent = tcp_agent(tcp_port);
    let out = enroll(&agent.config, &hub, "kiln-t");
    assert!(out.status.success(), "enrolled over TCP: {}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);
    assert_eq!(agent.status()["tunnel"]["transport"], "tcp");
    let (_, device) = call(&hub, reqwest::Method::GET, "/api/devices/kiln-t", &owner, None).await;
    assert_eq!(device["transport"], "tcp", "{device}");
    assert_eq!(device["online"], true);
    assert!(!hub.log().contains("handshake failed"), "no QUIC or TCP handshake failed");

    // The editor and its websocket, through the hub and the TCP tunnel.
    let editor = format!("{}/devices/kiln-t/editor", hub.api());
    let client = common::http::client();
    let page = client.get(format!("{editor}/")).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Node-RED"));
    assert!(
        common::hub::editor_websocket_hears_a_deploy(&hub, "kiln-t", &owner).await,
        "a notification over the editor's websocket"
    );

    // A signed deployment applies.
    let flows = json!([
        {"id": "t1", "type": "tab", "label": "over tcp"},
        {"id": "in", "type": "http in", "z": "t1", "url": "/over-tcp", "method": "get", "wires": [["fn"]]},
        {"id": "fn", "type": "function", "z": "t1", "func": "msg.payload = 'via tcp'; return msg;", "wires": [["out"]]},
        {"id": "out", "type": "http response", "z": "t1", "wires": []}
    ]);
    let (code, answer) =
        call(&hub, reqwest::Method::POST, "/api/devices/kiln-t/deploy", &owner, Some(json!({"flows": flows}))).await;
    assert_eq!(code, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    let done = wait_for_async(Duration::from_secs(90), "the deployment to end", || async {
        let (_, d) =
            call(&hub, reqwest::Method::GET, &format!("/api/devices/kiln-t/deployments/{id}"), &owner, None).await;
        ["applied", "rolled_back", "failed"].contains(&d["state"].as_str()?).then_some(d)
    })
    .await;
    assert_eq!(done["state"], "applied", "{done}");
    let served = client.get(format!("{}/over-tcp", agent.gate_url())).send().await.unwrap();
    assert_eq!(served.text().await.unwrap(), "via tcp");

    // The journal, delivered exactly once: every event up to the newest, each once, in order.
    let journal_last = wait_for_async(Duration::from_secs(30), "the journal delivered", || async {
        let last = agent.status()["audit"]["last_seq"].as_u64()?;
        let (_, d) = call(&hub, reqwest::Method::GET, "/api/devices/kiln-t", &owner, None).await;
        (d["audit"]["acked"].as_u64()? == last && agent.status()["audit"]["backlog"] == 0).then_some(last)
    })
    .await;
    let (_, audit) = call(&hub, reqwest::Method::GET, "/api/devices/kiln-t/audit?source=device", &owner, None).await;
    let seqs: Vec<u64> = audit.as_array().unwrap().iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=journal_last).collect::<Vec<_>>(), "each event once, none missing");
    let (_, d) = call(&hub, reqwest::Method::GET, "/api/devices/kiln-t", &owner, None).await;
    assert_eq!(d["audit"]["duplicates"], 0);
    let connected = agent.events("tunnel.connected");
    assert!(connected.iter().all(|e| e["detail"]["transport"] == "tcp"), "{connected:?}");

    // Revoked: the hub refuses the device's next TCP handshakes, which the agent tells from a
    // lost path, as over QUIC.
    let (code, _, err) = hub.cli(&["device", "revoke", "kiln-t"]);
    assert_eq!(code, 0, "{err}");
    let state = common::wait_for(Duration::from_secs(60), "auth_failed", || {
        let t = agent.status()["tunnel"].clone();
        (t["state"] == "auth_failed").then_some(t)
    });
    // The live connection closed with the hub's REVOKED code, or a reconnect refused with a
    // TLS alert (0x1xx): either way a refusal, not a lost path.
    let why = state["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("revoked") || why.contains("0x1"), "{state}");
}

/// What a TLS client sees of the hub's TCP listener.
#[derive(Debug, serde::Deserialize)]
struct Seen {
    handshake: bool,
    alpn: Option<String>,
    /// The TLS alert or error the first read got, if any.
    error: Option<String>,
    /// The connection was closed (an empty read) within the wait.
    eof: bool,
}

/// Connects with Python's `ssl` (TLS 1.3, the hub's CA trusted, `cert` presented if given),
/// reads for up to `wait_secs`.
fn probe(addr: &str, ca: &std::path::Path, cert: Option<(&std::path::Path, &std::path::Path)>, wait_secs: u32) -> Seen {
    let script = r#"
import json, socket, ssl, sys
host, port, ca, cert, key, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_verify_locations(ca)
ctx.check_hostname = False
ctx.set_alpn_protocols(["redtether-tcp/1"])
if cert:
    ctx.load_cert_chain(cert, key)
out = {"handshake": False, "alpn": None, "error": None, "eof": False}
try:
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname="localhost")
    out["handshake"] = True
    out["alpn"] = s.selected_alpn_protocol()
    s.settimeout(wait)
    try:
        data = s.recv(1024)
        out["eof"] = data == b""
    except socket.timeout:
        pass
    except ssl.SSLError as e:
        out["error"] = e.reason or str(e)
    except OSError as e:
        out["error"] = str(e)
except ssl.SSLError as e:
    out["error"] = e.reason or str(e)
print(json.dumps(out))
"#;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let (cert, key) = cert.map(|(c, k)| (c.display().to_string(), k.display().to_string())).unwrap_or_default();
    let out = std::process::Command::new("python3")
        .args(["-c", script, host, port, &ca.display().to_string(), &cert, &key, &wait_secs.to_string()])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn an_independent_tls_client_is_refused_over_tcp_as_over_quic() {
    let (hub, tcp_port) = tcp_hub();
    let addr = format!("127.0.0.1:{tcp_port}");
    let agent = Agent::prepare(&fixture_node_red(), "", None);
    std::fs::write(
        &agent.config,
        format!(
            "{}\n[tunnel]\ntransport = \"tcp\"\ntcp_port = {tcp_port}\n",
            std::fs::read_to_string(&agent.config).unwrap()
        ),
    )
    .unwrap();
    assert!(enroll(&agent.config, &hub, "pump-t").status.success());
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca = write("ca.pem", &hub.ca_pem());
    let hub_ca = Ca { cert_pem: hub.ca_pem(), key_pem: hub.ca_key() };
    let (day, now) = (Duration::from_secs(86400), SystemTime::now());
    let identity = agent.state_dir().join("identity");
    let enrolled = (identity.join("device.pem"), identity.join("device.key"));

    // The enrolled identity: the handshake completes on the tunnel's ALPN and the hub waits
    // for the multiplexer (this client never starts it).
    let good = probe(&addr, &ca, Some((&enrolled.0, &enrolled.1)), 2);
    assert!(good.handshake && good.error.is_none() && !good.eof, "{good:?}");
    assert_eq!(good.alpn.as_deref(), Some("redtether-tcp/1"));

    // No certificate: nothing to serve, the connection is closed at once (QUIC: closed with
    // CERTIFICATE_REQUIRED).
    let none = probe(&addr, &ca, None, 5);
    assert!(none.eof || none.error.is_some(), "no certificate: {none:?}");

    // Another CA, expired, not yet valid: refused in the handshake with a TLS alert, as QUIC.
    let cases = [
        ("another CA", device_cert(&Ca::create(now, 365 * day).unwrap(), "pump-t", now, 30 * day)),
        ("expired", device_cert(&hub_ca, "pump-t", now - 100 * day, 10 * day)),
        ("not yet valid", device_cert(&hub_ca, "pump-t", now + 10 * day, 10 * day)),
    ];
    for (what, (cert, key)) in cases {
        let seen = probe(&addr, &ca, Some((&write("c.pem", &cert), &write("c.key", &key))), 5);
        let alert = seen.error.as_deref().unwrap_or_default().to_ascii_uppercase();
        assert!(alert.contains("ALERT") || alert.contains("CERTIFICATE"), "{what}: {seen:?}");
    }

    let (code, _, err) = hub.cli(&["device", "revoke", "pump-t"]);
    assert_eq!(code, 0, "{err}");
    let revoked = probe(&addr, &ca, Some((&enrolled.0, &enrolled.1)), 5);
    let alert = revoked.error.as_deref().unwrap_or_default().to_ascii_uppercase();
    assert!(alert.contains("ALERT") || alert.contains("CERTIFICATE"), "revoked: {revoked:?}");
}
