//! The gate's first cut against a real Node-RED: HTTP both ways (admin API, editor, HTTP-In
//! nodes with bodies) and the editor's `/comms` websocket.

mod common;

use common::agent::Agent;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn echo_flow() -> serde_json::Value {
    serde_json::json!([
        {"id": "tab1", "type": "tab", "label": "test"},
        {"id": "in1", "type": "http in", "z": "tab1", "url": "/echo", "method": "post", "upload": false, "wires": [["out1"]]},
        {"id": "out1", "type": "http response", "z": "tab1", "statusCode": "", "headers": {}, "wires": []}
    ])
}

async fn deploy(
    client: &reqwest::Client,
    gate: &str,
    flows: &serde_json::Value,
) -> reqwest::Response {
    client
        .post(format!("{gate}/device-editor/flows"))
        .header("content-type", "application/json")
        .header("node-red-deployment-type", "full")
        .header("node-red-api-version", "v2")
        .body(serde_json::json!({ "flows": flows }).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn editor_admin_api_and_http_in_nodes_answer_through_the_gate() {
    let agent = Agent::start("");
    agent.wait_running();
    let gate = agent.gate_url();
    let client = reqwest::Client::new();

    let editor = client
        .get(format!("{gate}/device-editor/"))
        .send()
        .await
        .unwrap();
    assert_eq!(editor.status(), 200);
    let html = editor.text().await.unwrap();
    assert!(
        html.contains("Node-RED"),
        "editor page: {}",
        &html[..html.len().min(200)]
    );

    let settings: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("{gate}/device-editor/settings"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(settings["version"], common::node_red::pinned_version());

    let deployed = deploy(&client, &gate, &echo_flow()).await;
    assert_eq!(deployed.status(), 200, "deploy through the gate");

    // A megabyte each way: request and response bodies pass the gate intact.
    let body: String = (0..(1 << 20))
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
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

    let missing = client
        .get(format!("{gate}/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn editor_websocket_carries_deploy_notifications() {
    let agent = Agent::start("");
    agent.wait_running();
    let gate = agent.gate_url();
    let ws_url = format!("{}/device-editor/comms", gate.replace("http://", "ws://"));
    let (mut ws, response) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("websocket upgrade through the gate");
    assert_eq!(response.status(), 101);
    ws.send(Message::text(r#"{"subscribe":"notification/#"}"#))
        .await
        .unwrap();

    let deployed = deploy(&reqwest::Client::new(), &gate, &echo_flow()).await;
    assert_eq!(deployed.status(), 200);

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
async fn a_client_cannot_smuggle_the_gates_own_credential() {
    let agent = Agent::start("");
    agent.wait_running();
    let status = agent.status();
    let port = status["node_red"]["port"].as_u64().unwrap();
    let client = reqwest::Client::new();

    // Node-RED itself listens on loopback and refuses requests without the gate's credential.
    let direct = client
        .get(format!("http://127.0.0.1:{port}/device-editor/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    let forged = client
        .get(format!("http://127.0.0.1:{port}/device-editor/settings"))
        .header("x-redtether-gate-token", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // Node-RED binds loopback only: the gate's port is the only way in from outside.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_hex = format!(":{port:04X} ");
    let line = listening
        .lines()
        .find(|l| l.contains(&port_hex) && l.split_whitespace().nth(3) == Some("0A"))
        .unwrap();
    assert!(
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .starts_with("0100007F:"),
        "{line}"
    );
}
