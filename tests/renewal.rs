//! Certificate renewal with a real hub and agent: short-lived device certificates (seconds, set
//! in hub.toml) are renewed at 2/3 of their life over the control stream while the tunnel is
//! busy, without dropping it; the next handshake uses the new certificate; an expired one is a
//! clear `auth_failed` that re-enrollment fixes.

use redtether_testkit as common;

use common::agent::{Agent, fixture_node_red};
use common::hub::{Hub, PLACEHOLDER, enroll, tunnel_state, wait_online};
use common::wait_for;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn serial(agent: &Agent) -> String {
    let pem = std::fs::read_to_string(agent.state_dir().join("identity/device.pem")).unwrap();
    redtether_pki::cert_info(&redtether_pki::pem_to_der(&pem).unwrap()).unwrap().serial_hex
}

#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_is_renewed_during_a_busy_stream_without_dropping_the_tunnel() {
    let mut hub = Hub::start_with("debug", "device_cert_lifetime = \"24s\"");
    let agent = Agent::start_full(&format!("{}\nhealth_interval = \"500ms\"", fixture_node_red()), "", None, &[]);
    agent.wait_running();
    assert!(enroll(&agent.config, &hub, "pump-r").status.success());
    wait_online(&agent, 1);
    let first = serial(&agent);
    let owner = hub.operator("ops", "owner");
    let editor = format!("{}/devices/pump-r/editor", hub.api());

    // Busy: a live editor websocket, and requests through the tunnel all along.
    let ws_url = format!("{}/comms", editor.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {owner}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (ok, failed, stop, editor, owner) =
            (ok.clone(), failed.clone(), stop.clone(), editor.clone(), owner.clone());
        tokio::spawn(async move {
            let client = common::http::client();
            while !stop.is_cancelled() {
                match client.get(format!("{editor}/settings")).bearer_auth(&owner).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let renewed =
        wait_for(Duration::from_secs(45), "tunnel.renewed", || agent.events("tunnel.renewed").into_iter().next());
    stop.cancel();
    load.await.unwrap();
    assert_ne!(serial(&agent), first, "a new certificate is stored");
    assert_eq!(renewed["detail"]["serial"], serial(&agent));
    assert_eq!(tunnel_state(&agent), ("online".to_string(), 1), "the tunnel was not dropped");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request through the tunnel failed ({} ok)",
        ok.load(Ordering::SeqCst)
    );
    assert!(ok.load(Ordering::SeqCst) > 20);
    // The websocket opened before the renewal is still live.
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"subscribe":"notification/#"}"#)).await.unwrap();
    common::http::client()
        .post(format!("{editor}/flows"))
        .bearer_auth(&owner)
        .header("node-red-api-version", "v2")
        .json(&serde_json::json!({"flows": [{"id": "t", "type": "tab", "label": "after renewal"}]}))
        .send()
        .await
        .unwrap();
    let note = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_text() && m.to_text().unwrap().contains("notification/") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(note, Ok(true), "the old websocket still carries the editor's notifications");

    // The next handshake is made with the renewed certificate, and the hub takes it.
    hub.kill9();
    hub.spawn();
    wait_online(&agent, 2);
    let (_, events) =
        common::hub::api(&hub, reqwest::Method::GET, "/api/devices/pump-r/audit?kind=device.renewed", Some(&owner))
            .await;
    let serials: Vec<&str> =
        events.as_array().unwrap().iter().map(|e| e["detail"]["serial"].as_str().unwrap()).collect();
    assert!(serials.contains(&serial(&agent).as_str()), "the hub recorded the renewal it issued: {serials:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate_is_auth_failed_until_the_device_enrolls_again() {
    let mut hub = Hub::start_with("debug", "device_cert_lifetime = \"6s\"");
    let agent = Agent::start_with(PLACEHOLDER, &[]);
    agent.status();
    assert!(enroll(&agent.config, &hub, "pump-z").status.success());
    wait_online(&agent, 1);
    // No hub to renew with until the certificate has run out.
    hub.kill9();
    std::thread::sleep(Duration::from_secs(7));
    hub.spawn();
    let status = wait_for(Duration::from_secs(40), "auth_failed", || {
        let s = agent.status();
        (s["tunnel"]["state"] == "auth_failed").then_some(s)
    });
    assert!(status["tunnel"]["last_error"].as_str().unwrap().contains("expired"), "{status}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.events("tunnel.auth_failed").len(), 1, "audited once, not at every retry");
    // Re-enrollment fixes it at once.
    assert!(enroll(&agent.config, &hub, "pump-z").status.success());
    wait_for(Duration::from_secs(20), "online again", || (tunnel_state(&agent).0 == "online").then_some(()));
}
