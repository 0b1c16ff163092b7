//! Forwarding through the gate against a real Node-RED: HTTP both ways (admin API, editor,
//! HTTP-In nodes with bodies), the editor's `/comms` websocket with its login, and the
//! credential only the gate holds.

use redtether_testkit as common;

use common::agent::Agent;
use common::http::{Cred, deploy, echo_flow, login};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const OWNER: Cred<'static> = Cred::Basic("owner", "owner-pw");

#[tokio::test(flavor = "multi_thread")]
async fn editor_admin_api_and_http_in_nodes_answer_through_the_gate() {
    let agent = Agent::start("");
    agent.wait_running();
    let gate = agent.gate_url();
    let client = common::http::client();

    let editor = client.get(format!("{gate}/device-editor/")).send().await.unwrap();
    assert_eq!(editor.status(), 200, "the editor page needs no login (its login dialog is in it)");
    let html = editor.text().await.unwrap();
    assert!(html.contains("Node-RED"), "editor page: {}", &html[..html.len().min(200)]);

    let settings = client
        .get(format!("{gate}/device-editor/settings"))
        .basic_auth("viewer", Some("viewer-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), 200);
    let settings: serde_json::Value = settings.json().await.unwrap();
    assert_eq!(settings["version"], common::node_red::pinned_version());
    // Node-RED knows the real user and their rights, from the gate's credential.
    assert_eq!(settings["user"], serde_json::json!({"username": "viewer", "permissions": "read"}));

    let deployed = deploy(&client, &gate, &echo_flow(), OWNER).await;
    assert_eq!(deployed.status(), 200, "deploy through the gate");

    // A megabyte each way: request and response bodies pass the gate intact.
    let body: String = (0..(1 << 20)).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let echoed = common::wait_for_async(Duration::from_secs(10), "the HTTP-In route", || async {
        let r = client
            .post(format!("{gate}/echo"))
            .header("content-type", "text/plain")
            .body(body.clone())
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(r)
    })
    .await;
    assert_eq!(echoed.text().await.unwrap(), body);

    let missing = client.get(format!("{gate}/no-such-route")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn editor_websocket_authenticates_with_the_session_and_carries_deploys() {
    let agent = Agent::start("");
    agent.wait_running();
    let gate = agent.gate_url();
    let client = common::http::client();
    let token = login(&client, &gate, "member", "member-pw").await.expect("editor login");

    let ws_url = format!("{}/device-editor/comms", gate.replace("http://", "ws://"));
    let (mut ws, response) =
        tokio_tungstenite::connect_async(&ws_url).await.expect("websocket upgrade through the gate");
    assert_eq!(response.status(), 101);
    // The editor's first frame: its session, which Node-RED checks with the agent.
    ws.send(Message::text(serde_json::json!({ "auth": token }).to_string())).await.unwrap();
    let auth = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(auth.to_text().unwrap(), r#"{"auth":"ok"}"#);
    ws.send(Message::text(r#"{"subscribe":"notification/#"}"#)).await.unwrap();

    let deployed = deploy(&client, &gate, &echo_flow(), Cred::Bearer(&token)).await;
    assert_eq!(deployed.status(), 200, "the session token works on the admin API");

    let notification = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Text(text)) = msg
                && text.contains("notification/runtime-deploy")
            {
                return text.to_string();
            }
        }
        panic!("websocket closed before the deploy notification");
    })
    .await
    .expect("deploy notification over /comms");
    assert!(notification.contains("revision"), "{notification}");
}

#[tokio::test(flavor = "multi_thread")]
async fn editor_websocket_without_a_valid_session_is_closed() {
    let agent = Agent::start("");
    agent.wait_running();
    let ws_url = format!("{}/device-editor/comms", agent.gate_url().replace("http://", "ws://"));
    for first_frame in [r#"{"auth":"rts_forged"}"#, r#"{"subscribe":"debug"}"#] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        ws.send(Message::text(first_frame)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            let mut texts = Vec::new();
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    texts.push(t.to_string());
                }
            }
            texts
        })
        .await
        .expect("Node-RED closes the socket");
        assert!(answer.iter().any(|t| t.contains(r#""auth":"fail""#)), "{first_frame}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_smuggle_the_gates_own_credential() {
    let agent = Agent::start("");
    agent.wait_running();
    let status = agent.status();
    let port = status["node_red"]["port"].as_u64().unwrap();
    let client = common::http::client();

    // Node-RED itself listens on loopback and refuses requests without the gate's credential.
    let direct = client.get(format!("http://127.0.0.1:{port}/device-editor/settings")).send().await.unwrap();
    assert_eq!(direct.status(), 401);
    for forged in [
        "guess",
        "v1.full.6f776e6572.00",
        "v1.full.6f776e6572.0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = client
            .get(format!("http://127.0.0.1:{port}/device-editor/settings"))
            .header("x-redtether-gate-token", forged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{forged}");
    }
    // Through the gate, a client-sent copy of the header is dropped: it is the user who counts.
    let r = client
        .get(format!("{}/device-editor/settings", agent.gate_url()))
        .header("x-redtether-gate-token", "v1.full.x.y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Node-RED binds loopback only: the gate's port is the only way in from outside.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_hex = format!(":{port:04X} ");
    let line = listening.lines().find(|l| l.contains(&port_hex) && l.split_whitespace().nth(3) == Some("0A")).unwrap();
    assert!(line.split_whitespace().nth(1).unwrap().starts_with("0100007F:"), "{line}");
}
