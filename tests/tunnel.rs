//! Hub and tunnel on loopback with real quinn endpoints and real certificates: enrollment and
//! its refusals, mutual TLS refusals at the hub, the device online with its status, commands,
//! a hub killed and restarted, malformed frames, and the gate serving while the hub is gone.

use redtether_testkit as common;

use common::agent::{Agent, BIN};
use common::hub::{Hub, PLACEHOLDER, api, enroll, tunnel_state, wait_online};
use common::wait_for;
use redtether_pki::Ca;
use redtether_proto::wire::{ALPN, AgentFrame, FrameDecoder, HubFrame, codes, encode};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolled_device_is_online_reports_status_and_takes_a_restart() {
    let hub = Hub::start();
    let agent = Agent::start("");
    agent.wait_running();
    assert_eq!(tunnel_state(&agent).0, "offline", "not enrolled: no tunnel, everything else works");
    let out = enroll(&agent.config, &hub, "pump-1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);
    for f in ["device.key", "device.pem", "ca.pem", "hub.json"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(agent.state_dir().join("identity").join(f)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let owner = hub.operator("ops", "owner");
    let viewer = hub.operator("watcher", "viewer");

    assert_eq!(api(&hub, reqwest::Method::GET, "/api/devices", None).await.0, 401);
    assert_eq!(api(&hub, reqwest::Method::GET, "/api/devices", Some("rto_guess")).await.0, 401);
    let device = wait_for(Duration::from_secs(20), "the device's status at the hub", || {
        let rt = tokio::runtime::Handle::current();
        let (_, list) =
            tokio::task::block_in_place(|| rt.block_on(api(&hub, reqwest::Method::GET, "/api/devices", Some(&viewer))));
        let d = list.as_array()?.iter().find(|d| d["id"] == "pump-1")?.clone();
        (d["online"] == true && d["node_red"]["state"] == "running").then_some(d)
    });
    assert_eq!(device["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(device["last_seen"].as_str().unwrap().ends_with('Z'));
    let first_pid = device["node_red"]["pid"].as_u64().unwrap();
    let (code, one) = api(&hub, reqwest::Method::GET, "/api/devices/pump-1", Some(&viewer)).await;
    assert_eq!(code, 200);
    assert!(one["status"]["audit_last_seq"].as_u64().unwrap() > 0, "{one}");

    assert_eq!(
        api(&hub, reqwest::Method::POST, "/api/devices/pump-1/restart", Some(&viewer)).await.0,
        403,
        "viewers only look"
    );
    let (code, result) = api(&hub, reqwest::Method::POST, "/api/devices/pump-1/restart", Some(&owner)).await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["ok"], true);
    let new_pid = result["detail"]["pid"].as_u64().unwrap();
    assert_ne!(new_pid, first_pid);
    assert_eq!(agent.status()["node_red"]["pid"].as_u64(), Some(new_pid));
    assert_eq!(api(&hub, reqwest::Method::POST, "/api/devices/nobody/restart", Some(&owner)).await.0, 404);

    let (_, events) = api(&hub, reqwest::Method::GET, "/api/devices/pump-1/audit", Some(&viewer)).await;
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "enroll_token.created",
        "device.enrolled",
        "device.connected",
        "operator.command",
        "command.sent",
        "command.result",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let journal =
        Command::new(BIN).args(["audit", "list", "--kind", "tunnel", "--config"]).arg(&agent.config).output().unwrap();
    let text = String::from_utf8_lossy(&journal.stdout);
    assert!(text.contains("tunnel.connected") && text.contains("tunnel.command"), "{text}");
    let human = Command::new(BIN).args(["status", "--config"]).arg(&agent.config).output().unwrap();
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("tunnel    online (hub 127.0.0.1:"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
}

#[test]
fn enrollment_refuses_bad_tokens_and_a_wrong_fingerprint_without_using_the_token() {
    let hub = Hub::start();
    let agent = Agent::prepare(PLACEHOLDER, "", None);
    let try_enroll = |token: &str, fingerprint: &str| {
        let out = Command::new(BIN)
            .args(["enroll", "--hub", &hub.addr(), "--token", token, "--ca-fingerprint", fingerprint, "--config"])
            .arg(&agent.config)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let fp = hub.fingerprint();
    let token = hub.enroll_token("pump-2");

    let wrong = format!("{:064x}", 7);
    let (code, err) = try_enroll(&token, &wrong);
    assert_ne!(code, Some(0));
    assert!(err.contains("fingerprint"), "{err}");
    assert!(!agent.state_dir().join("identity/hub.json").exists(), "nothing stored");

    let (code, err) = try_enroll("rte_madeup", &fp);
    assert_ne!(code, Some(0));
    assert!(err.contains("does not know this enrollment token"), "{err}");

    let (code, err) = try_enroll(&token, &fp);
    assert_eq!(code, Some(0), "the wrong-fingerprint attempt did not use the token: {err}");
    let (code, err) = try_enroll(&token, &fp);
    assert_ne!(code, Some(0));
    assert!(err.contains("already used"), "{err}");

    let (_, short, _) = hub.cli(&["enroll-token", "--device", "pump-3", "--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let (code, err) = try_enroll(&short, &fp);
    assert_ne!(code, Some(0));
    assert!(err.contains("expired"), "{err}");

    let (code, err) = try_enroll(&token, "not-a-fingerprint");
    assert_ne!(code, Some(0));
    assert!(err.contains("not a fingerprint"), "{err}");
}

/// A quinn client of the test's own, with whatever certificate it is given.
async fn connect_as(
    hub: &Hub,
    cert_and_key: Option<(&str, &str)>,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let ca = hub.ca_pem();
    let tls = match cert_and_key {
        Some((cert, key)) => redtether_pki::tls::agent_client(&ca, cert, key, ALPN).unwrap(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let mut c = rustls::ClientConfig::builder_with_provider(redtether_pki::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            c.alpn_protocols = vec![ALPN.to_vec()];
            c
        }
    };
    use rustls_pki_types::pem::PemObject;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = endpoint.connect(hub.addr().parse().unwrap(), "127.0.0.1").unwrap().await?;
    // A refusal after the handshake arrives as a close; give it a moment.
    match tokio::time::timeout(Duration::from_millis(500), connection.closed()).await {
        Ok(reason) => Err(reason),
        Err(_) => Ok(connection),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_refuses_devices_without_a_good_certificate() {
    let hub = Hub::start();
    // A real enrollment, so that "pump-9" is a known device.
    let agent = Agent::prepare(PLACEHOLDER, "", None);
    assert!(enroll(&agent.config, &hub, "pump-9").status.success());
    let hub_ca = Ca { cert_pem: hub.ca_pem(), key_pem: hub.ca_key() };
    let day = Duration::from_secs(86400);
    let now = SystemTime::now();

    let identity_cert = std::fs::read_to_string(agent.state_dir().join("identity/device.pem")).unwrap();
    let identity_key = std::fs::read_to_string(agent.state_dir().join("identity/device.key")).unwrap();
    let good = connect_as(&hub, Some((&identity_cert, &identity_key))).await;
    assert!(good.is_ok(), "the enrolled identity is accepted: {:?}", good.err());

    let none = connect_as(&hub, None).await.unwrap_err();
    assert!(
        matches!(&none, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == codes::CERTIFICATE_REQUIRED.into()),
        "{none}"
    );

    let other_ca = Ca::create(now, 365 * day).unwrap();
    let (cert, key) = common::tls::device_cert(&other_ca, "pump-9", now, 30 * day);
    let e = connect_as(&hub, Some((&cert, &key))).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate") || e.to_string().contains("0x1"), "another CA: {e}");

    let (cert, key) = common::tls::device_cert(&hub_ca, "pump-9", now - 100 * day, 10 * day);
    let e = connect_as(&hub, Some((&cert, &key))).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "expired: {e}");

    let (cert, key) = common::tls::device_cert(&hub_ca, "pump-9", now + 10 * day, 10 * day);
    let e = connect_as(&hub, Some((&cert, &key))).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "not yet valid: {e}");

    let (cert, key) = common::tls::device_cert(&hub_ca, "never-enrolled", now, 10 * day);
    let e = connect_as(&hub, Some((&cert, &key))).await.unwrap_err();
    assert!(
        matches!(&e, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == codes::REVOKED.into()),
        "unknown device: {e}"
    );

    // Signed by the hub's CA for the right device, but not the certificate the hub issued it
    // last (as after a re-enrollment): refused.
    let (cert, key) = common::tls::device_cert(&hub_ca, "pump-9", now, 10 * day);
    let e = connect_as(&hub, Some((&cert, &key))).await.unwrap_err();
    assert!(
        matches!(&e, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == codes::REVOKED.into()),
        "superseded certificate: {e}"
    );

    let (code, _, err) = hub.cli(&["device", "revoke", "pump-9"]);
    assert_eq!(code, 0, "{err}");
    let e = connect_as(&hub, Some((&identity_cert, &identity_key))).await.unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("revoked") || e.to_string().to_lowercase().contains("certificate"),
        "revoked: {e}"
    );
}

/// The same refusals judged by an independent QUIC stack (aioquic): a refusal must be a
/// connection close before any application data, whatever the client's own checks are.
#[test]
fn an_independent_quic_client_gets_the_same_answers() {
    use common::aioquic::probe;
    let hub = Hub::start();
    let agent = Agent::prepare(PLACEHOLDER, "", None);
    assert!(enroll(&agent.config, &hub, "pump-8").status.success());
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca = write("ca.pem", &hub.ca_pem());
    let hub_ca = Ca { cert_pem: hub.ca_pem(), key_pem: hub.ca_key() };
    let day = Duration::from_secs(86400);
    let now = SystemTime::now();
    // A TLS alert in QUIC is a transport close with code 0x100 + alert.
    let is_tls_alert = |r: &common::aioquic::ProbeResult| matches!(&r.closed, Some(c) if !c.application && (0x100..0x200).contains(&c.error_code));

    let identity = agent.state_dir().join("identity");
    let good = probe(&hub.addr(), &ca, Some((&identity.join("device.pem"), &identity.join("device.key"))));
    assert!(good.handshake && good.welcome && good.closed.is_none(), "the enrolled identity is served: {good:?}");

    let none = probe(&hub.addr(), &ca, None);
    assert!(!none.welcome, "{none:?}");
    assert!(
        matches!(&none.closed, Some(c) if c.application && c.error_code == u64::from(codes::CERTIFICATE_REQUIRED)),
        "no certificate: {none:?}"
    );

    let cases = [
        ("another CA", common::tls::device_cert(&Ca::create(now, 365 * day).unwrap(), "pump-8", now, 30 * day)),
        ("expired", common::tls::device_cert(&hub_ca, "pump-8", now - 100 * day, 10 * day)),
        ("not yet valid", common::tls::device_cert(&hub_ca, "pump-8", now + 10 * day, 10 * day)),
    ];
    for (what, (cert, key)) in cases {
        let r = probe(&hub.addr(), &ca, Some((&write("c.pem", &cert), &write("c.key", &key))));
        assert!(!r.welcome && is_tls_alert(&r), "{what}: {r:?}");
    }

    let (code, _, err) = hub.cli(&["device", "revoke", "pump-8"]);
    assert_eq!(code, 0, "{err}");
    let revoked = probe(&hub.addr(), &ca, Some((&identity.join("device.pem"), &identity.join("device.key"))));
    assert!(!revoked.welcome && is_tls_alert(&revoked), "revoked: {revoked:?}");

    // Signed by the hub's CA, but for a device the hub never enrolled.
    let (cert, key) = common::tls::device_cert(&hub_ca, "never-enrolled", now, 10 * day);
    let stranger = probe(&hub.addr(), &ca, Some((&write("s.pem", &cert), &write("s.key", &key))));
    assert!(!stranger.welcome, "{stranger:?}");
    assert!(
        matches!(&stranger.closed, Some(c) if c.application && c.error_code == u64::from(codes::REVOKED)),
        "unknown device: {stranger:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_device_falls_to_auth_failed_and_its_tunnel_is_closed() {
    let hub = Hub::start();
    let agent = Agent::start_full(PLACEHOLDER, "", None, &[]);
    agent.status();
    assert!(enroll(&agent.config, &hub, "pump-4").status.success());
    wait_online(&agent, 1);
    let (code, _, err) = hub.cli(&["device", "revoke", "pump-4"]);
    assert_eq!(code, 0, "{err}");
    wait_for(Duration::from_secs(30), "auth_failed", || (tunnel_state(&agent).0 == "auth_failed").then_some(()));
    let journal = Command::new(BIN)
        .args(["audit", "list", "--kind", "tunnel.auth_failed", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(!journal.stdout.is_empty(), "audited");
    // The gate keeps working.
    let gate = agent.gate_url();
    let code = common::http::client().get(format!("{gate}/device-editor/")).send().await.unwrap().status();
    assert_ne!(code, 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_hub_is_found_again_after_it_restarts_and_the_gate_serves_meanwhile() {
    let mut hub = Hub::start();
    let agent = Agent::start("");
    agent.wait_running();
    assert!(enroll(&agent.config, &hub, "pump-5").status.success());
    wait_online(&agent, 1);
    hub.kill9();
    // Without the hub the device is still fully itself.
    let gate = agent.gate_url();
    assert_eq!(common::http::client().get(format!("{gate}/device-editor/")).send().await.unwrap().status(), 200);
    hub.spawn();
    wait_online(&agent, 2);
    let journal = Command::new(BIN)
        .args(["audit", "list", "--kind", "tunnel", "--json", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let kinds: Vec<String> = String::from_utf8(journal.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "tunnel.connected").count(), 2, "{kinds:?}");
    assert!(kinds.contains(&"tunnel.disconnected".to_string()));
}

async fn read_frame(recv: &mut quinn::RecvStream, decoder: &mut FrameDecoder) -> Option<HubFrame> {
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(Some(f)) = decoder.next_message::<HubFrame>() {
            return Some(f);
        }
        match tokio::time::timeout(Duration::from_secs(5), recv.read(&mut buf)).await {
            Ok(Ok(Some(n))) => decoder.feed(&buf[..n]),
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_frame_closes_its_stream_not_the_connection() {
    let hub = Hub::start();
    let agent = Agent::prepare(PLACEHOLDER, "", None);
    assert!(enroll(&agent.config, &hub, "pump-6").status.success());
    let cert = std::fs::read_to_string(agent.state_dir().join("identity/device.pem")).unwrap();
    let key = std::fs::read_to_string(agent.state_dir().join("identity/device.key")).unwrap();
    let connection = connect_as(&hub, Some((&cert, &key))).await.unwrap();

    for garbage in
        [&b"\x00\x00\x00\x05hello"[..], &b"\x00\x00\x00\x0f{\"type\":\"boom\"}"[..], &b"\xff\xff\xff\xff"[..]]
    {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(garbage).await.unwrap();
        let mut decoder = FrameDecoder::default();
        let answer = read_frame(&mut recv, &mut decoder).await;
        assert!(
            matches!(answer, Some(HubFrame::Error { code, .. }) if code == codes::MALFORMED_FRAME || code == codes::UNEXPECTED_FRAME || code == codes::FRAME_TOO_LARGE),
            "{answer:?}"
        );
        let mut rest = [0u8; 16];
        let end = recv.read(&mut rest).await;
        assert!(matches!(end, Ok(None)), "the hub ends the stream after the error: {end:?}");
        let stopped = send.stopped().await;
        assert!(
            matches!(stopped, Ok(Some(code)) if code.into_inner() > 0),
            "the hub stops reading it with a code: {stopped:?}"
        );
    }
    // The connection is still there: a proper control stream works.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&encode(&AgentFrame::Hello { protocol: 1, agent_version: "test".into() })).await.unwrap();
    let mut decoder = FrameDecoder::default();
    assert!(matches!(read_frame(&mut recv, &mut decoder).await, Some(HubFrame::Welcome { protocol: 1, .. })));
    send.write_all(&encode(&AgentFrame::Heartbeat { n: 9 })).await.unwrap();
    // Heartbeats are taken in silence (docs/protocol.md): no answer, and the stream stays open.
    let answer = tokio::time::timeout(Duration::from_millis(500), read_frame(&mut recv, &mut decoder)).await;
    assert!(answer.is_err(), "nothing back for a heartbeat, the stream not ended: {answer:?}");
    assert!(connection.close_reason().is_none());

    let owner = hub.operator("ops", "owner");
    let (_, events) = api(&hub, reqwest::Method::GET, "/api/devices/pump-6/audit", Some(&owner)).await;
    let errors = events.as_array().unwrap().iter().filter(|e| e["kind"] == "protocol.error").count();
    assert_eq!(errors, 3, "each malformed frame recorded: {events}");
}
