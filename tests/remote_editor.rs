//! The remote editor: hub → tunnel → gate → Node-RED, with a real hub, agent and Node-RED.
//! Roles and protection mode apply to tunnelled requests as to LAN ones, the editor's `/comms`
//! websocket works end to end, and the device refuses streams whose assertion is missing,
//! forged, expired or for another device (tried from a stand-in hub that holds the real hub's
//! TLS keys, so only the assertion differs).

use redtether_testkit as common;

use common::http::hidden;
use common::hub::{Hub, online_agent};
use redtether_proto::assertion::{self, Assertion};
use redtether_proto::wire::{ALPN, AgentFrame, FrameDecoder, HubFrame, StreamHeader, StreamKind, encode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn deploy_body() -> Value {
    json!({ "flows": [{ "id": "remote-tab", "type": "tab", "label": "from the platform" }] })
}

async fn deploy(client: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    client
        .post(format!("{url}/flows"))
        .bearer_auth(token)
        .header("node-red-api-version", "v2")
        .header("node-red-deployment-type", "full")
        .json(&deploy_body())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_editor_and_its_websocket_work_through_the_hub_with_roles() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-e", "");
    let owner = hub.operator("ops", "owner");
    let viewer = hub.operator("watcher", "viewer");
    let client = common::http::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let editor = format!("{}/devices/pump-e/editor", hub.api());

    let page = client.get(format!("{editor}/")).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Node-RED"), "the editor page, from the device");
    let bare = client.get(&editor).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/devices/pump-e/editor/");
    assert_eq!(client.get(format!("{editor}/")).send().await.unwrap().status(), 401);
    assert_eq!(client.get(format!("{editor}/")).bearer_auth("rto_guess").send().await.unwrap().status(), 401);
    let unknown = client.get(format!("{}/devices/nobody/editor/", hub.api())).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    // The viewer reads and cannot deploy; the refusal is the device's, audited there.
    let flows = client
        .get(format!("{editor}/flows"))
        .bearer_auth(&viewer)
        .header("node-red-api-version", "v2")
        .send()
        .await
        .unwrap();
    assert_eq!(flows.status(), 200);
    assert!(flows.json::<Value>().await.unwrap()["rev"].is_string());
    let refused = deploy(&client, &editor, &viewer).await;
    assert_eq!(refused.status(), 403);
    let denied = agent.events("access.denied");
    assert!(
        denied.iter().any(|e| e["actor"] == "user:watcher@platform" && e["detail"]["reason"] == "role"),
        "{denied:?}"
    );

    // The owner deploys; Node-RED has the flows; the device audits who did it.
    let done = deploy(&client, &editor, &owner).await;
    assert_eq!(done.status(), 200, "{:?}", done.text().await);
    let flows_file = std::fs::read_to_string(agent.state_dir().join("node-red/flows.json")).unwrap();
    assert!(flows_file.contains("from the platform"));
    let writes = agent.events("admin.write");
    assert!(writes.iter().any(|e| e["actor"] == "user:ops@platform"), "{writes:?}");
    // The operator's hub token never reaches the device.
    assert!(!agent.log().contains(&owner));

    // The editor's websocket, live: Node-RED answers the subscription with its state.
    let ws_url = format!("{}/comms", editor.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {owner}").parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("websocket through hub and tunnel");
    assert_eq!(response.status(), 101);
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"subscribe":"notification/#"}"#)).await.unwrap();
    // Restarting Node-RED makes it send runtime-state notifications to the editor; here a
    // deploy does (it posts "runtime-deploy").
    deploy(&client, &editor, &owner).await;
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() && message.to_text().unwrap().contains("notification/") {
                return message.to_text().unwrap().to_string();
            }
        }
        String::new()
    })
    .await
    .expect("a notification over the websocket");
    assert!(got.contains("runtime-deploy") || got.contains("notification/"), "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn protection_mode_refuses_the_owner_through_the_tunnel_too() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-p", "protection = true");
    let owner = hub.operator("ops", "owner");
    let client = common::http::client();
    let editor = format!("{}/devices/pump-p/editor", hub.api());
    let before = std::fs::read(agent.state_dir().join("node-red/flows.json")).ok();
    let refused = deploy(&client, &editor, &owner).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap(), json!({"error": "protection_mode"}));
    assert_eq!(std::fs::read(agent.state_dir().join("node-red/flows.json")).ok(), before, "flows unchanged");
    let reads = client
        .get(format!("{editor}/flows"))
        .bearer_auth(&owner)
        .header("node-red-api-version", "v2")
        .send()
        .await
        .unwrap();
    assert_eq!(reads.status(), 200, "reading stays allowed");
}

/// The real hub's TLS identity and signing key, to stand in for it after it stopped.
struct StandIn {
    endpoint: quinn::Endpoint,
    signing: ring::signature::Ed25519KeyPair,
}

fn stand_in(hub: &Hub) -> StandIn {
    let dir = hub.state_dir();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let tls = redtether_pki::tls::hub_server(
        &read("server.pem"),
        &read("server.key"),
        &read("ca.pem"),
        Default::default(),
        &[ALPN],
    )
    .unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(server, hub.addr().parse().unwrap()).unwrap();
    let signing =
        ring::signature::Ed25519KeyPair::from_pkcs8(&std::fs::read(dir.join("signing.key")).unwrap()).unwrap();
    StandIn { endpoint, signing }
}

/// Opens a forwarded stream with `assertion`, sends one request, returns the status code.
async fn forwarded_status(connection: &quinn::Connection, assertion: Option<String>) -> u16 {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&encode(&StreamHeader { kind: StreamKind::Http, assertion, logs: None })).await.unwrap();
    send.write_all(b"GET /device-editor/flows HTTP/1.1\r\nHost: device\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1 << 20)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_forged_expired_and_other_device_assertions_are_refused_and_audited() {
    let mut hub = Hub::start();
    let mut agent = online_agent(&hub, "pump-x", "");
    // The agent reconnects to a stand-in on the hub's address, with the hub's certificate.
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(20));
    hub.kill9();
    let fake = stand_in(&hub);
    agent.spawn(&[]);
    let incoming = tokio::time::timeout(Duration::from_secs(30), fake.endpoint.accept()).await.unwrap().unwrap();
    let connection = incoming.await.unwrap();
    // Greet the agent's control stream like the hub does.
    let (mut control_send, mut control_recv) = connection.accept_bi().await.unwrap();
    let mut decoder = FrameDecoder::default();
    let mut buf = [0u8; 4096];
    while !matches!(decoder.next_message::<AgentFrame>(), Ok(Some(AgentFrame::Hello { .. }))) {
        let n = control_recv.read(&mut buf).await.unwrap().unwrap();
        decoder.feed(&buf[..n]);
    }
    control_send.write_all(&encode(&HubFrame::Welcome { protocol: 1, hub_version: "stand-in".into() })).await.unwrap();
    agent.wait_running();

    let now = redtether_proto::time::unix_now();
    let claim =
        |device: &str, exp: u64| Assertion { user: "mallory".into(), role: "owner".into(), device: device.into(), exp };
    let other_key = {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    };
    let cases = [
        ("missing", None, 401),
        ("garbage", Some("v1.not.signed".to_string()), 401),
        ("forged", Some(assertion::sign(&claim("pump-x", now + 60), &other_key)), 401),
        ("expired", Some(assertion::sign(&claim("pump-x", now - 1), &fake.signing)), 401),
        ("another device", Some(assertion::sign(&claim("pump-y", now + 60), &fake.signing)), 403),
        (
            "unknown role",
            Some(assertion::sign(&Assertion { role: "root".into(), ..claim("pump-x", now + 60) }, &fake.signing)),
            401,
        ),
        ("valid", Some(assertion::sign(&claim("pump-x", now + 60), &fake.signing)), 200),
    ];
    for (what, token, want) in cases {
        assert_eq!(forwarded_status(&connection, token).await, want, "{what}");
    }
    let failed = agent.events("auth.failed");
    let reasons: Vec<&str> = failed
        .iter()
        .filter(|e| e["detail"]["via"] == "tunnel")
        .map(|e| e["detail"]["reason"].as_str().unwrap())
        .collect();
    for reason in [
        "platform_assertion_missing",
        "platform_assertion_malformed",
        "platform_assertion_forged",
        "platform_assertion_expired",
    ] {
        assert!(reasons.contains(&reason), "{reason} audited: {reasons:?}");
    }
    let denied = agent.events("access.denied");
    assert!(denied.iter().any(|e| e["detail"]["reason"] == "platform_assertion_other_device"), "{denied:?}");

    // A stream that is not a forwarded connection at all closes on its own; the tunnel stays.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(b"\x00\x00\x00\x03abc").await.unwrap();
    assert!(recv.read_to_end(1024).await.is_err(), "reset with an error code");
    assert_eq!(
        forwarded_status(&connection, Some(assertion::sign(&claim("pump-x", now + 60), &fake.signing))).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_large_download_does_not_hold_up_other_requests_and_bytes_pass_unchanged() {
    let hub = Hub::start();
    let _agent = online_agent(&hub, "pump-d", "");
    let owner = hub.operator("ops", "owner");
    let editor = format!("{}/devices/pump-d/editor", hub.api());
    let big = "vendor/monaco/dist/ts.worker.js";
    let on_disk =
        std::fs::read(common::node_red::install_dir().join("node_modules/@node-red/editor-client/public").join(big))
            .unwrap();
    assert!(on_disk.len() > 4 << 20, "a large file: {}", on_disk.len());

    // A reader that takes the head of a large answer and then does not read: its stream fills
    // up and stops (flow control), and nothing else may wait for it.
    let client = common::http::client();
    let mut stalled = client.get(format!("{editor}/{big}")).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(stalled.status(), 200);
    let first = stalled.chunk().await.unwrap().unwrap();
    for _ in 0..5 {
        let small = tokio::time::timeout(
            Duration::from_secs(10),
            client.get(format!("{editor}/settings")).bearer_auth(&owner).send(),
        )
        .await
        .expect("a small request completes while the large one is stalled")
        .unwrap();
        assert_eq!(small.status(), 200);
        small.bytes().await.unwrap();
    }
    // The large answer, read at last, is the file byte for byte.
    let mut body = first.to_vec();
    while let Some(chunk) = stalled.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(body.len(), on_disk.len());
    assert!(body == on_disk, "bytes pass unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_logs_in_with_password_and_totp_and_opens_the_editor_with_a_strict_cookie() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-b", "");
    let viewer = hub.account("watcher", "viewer");
    let client = common::http::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let api = hub.api();

    // A browser without a session is sent to the form, and comes back where it wanted to go.
    let first = client.get(format!("{api}/devices/pump-b/editor/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(first.status(), 303);
    assert_eq!(first.headers()["location"], "/login?next=/devices/pump-b/editor/");
    let form = client.get(format!("{api}/login?next=/devices/pump-b/editor/")).send().await.unwrap();
    let login_cookie = form.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csp = form.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"), "{csp}");
    let page = form.text().await.unwrap();
    assert!(page.contains("name=\"password\"") && page.contains("value=\"/devices/pump-b/editor/\""));
    let csrf = hidden(&page, "csrf");
    let post = |fields: Vec<(&'static str, String)>, with_cookie: bool| {
        let mut r = client.post(format!("{api}/login")).form(&fields);
        if with_cookie {
            r = r.header("cookie", &login_cookie);
        }
        r.send()
    };
    let next = || ("next", "/devices/pump-b/editor/".to_string());

    let forged = post(
        vec![("name", viewer.name.clone()), ("password", viewer.password.clone()), ("csrf", csrf.clone()), next()],
        false,
    )
    .await
    .unwrap();
    assert_eq!(forged.status(), 403, "a form posted without the login cookie (another site's form)");
    let bad = post(
        vec![("name", viewer.name.clone()), ("password", "not-the-password".into()), ("csrf", csrf.clone()), next()],
        true,
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().get("set-cookie").is_none());
    let second = post(
        vec![("name", viewer.name.clone()), ("password", viewer.password.clone()), ("csrf", csrf.clone()), next()],
        true,
    )
    .await
    .unwrap();
    assert_eq!(second.status(), 200);
    assert!(second.headers().get("set-cookie").is_none(), "no session before the second factor");
    let ticket = hidden(&second.text().await.unwrap(), "ticket");
    let code = viewer.code_at(common::unix_now() + 30);
    let good = post(vec![("ticket", ticket), ("code", code), ("csrf", csrf.clone()), next()], true).await.unwrap();
    assert_eq!(good.status(), 303);
    assert_eq!(good.headers()["location"], "/devices/pump-b/editor/");
    let cookie = good.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();

    // The cookie opens the editor as that operator, with that operator's role on the device.
    let editor = client.get(format!("{api}/devices/pump-b/editor/")).header("cookie", &pair).send().await.unwrap();
    assert_eq!(editor.status(), 200);
    // The editor asks no login of its own: the hub has said who this is.
    let scheme: Value = client
        .get(format!("{api}/devices/pump-b/editor/auth/login"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scheme, json!({}));
    let settings: Value = client
        .get(format!("{api}/devices/pump-b/editor/settings"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["user"]["permissions"], "read", "a viewer gets a read-only editor: {settings}");
    let refused = client
        .post(format!("{api}/devices/pump-b/editor/flows"))
        .header("cookie", &pair)
        .header("node-red-api-version", "v2")
        .json(&deploy_body())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "a viewer, even logged in by cookie");
    assert!(agent.events("access.denied").iter().any(|e| e["actor"] == "user:watcher@platform"));
    // The session reads the JSON API too; its writes need the session's CSRF token.
    assert_eq!(client.get(format!("{api}/api/devices")).header("cookie", &pair).send().await.unwrap().status(), 200);
    let write = client.post(format!("{api}/api/logout")).header("cookie", &pair).send().await.unwrap();
    assert_eq!(write.status(), 403, "a cookie write without X-CSRF-Token");
    // And the cookie never reaches the device.
    let session_id = pair.split('=').nth(1).unwrap();
    assert!(!agent.log().contains(session_id));

    // No open redirect.
    let away =
        client.get(format!("{api}/login?next=https://evil.example/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(hidden(&away, "next"), "/");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dashboard_operator_reads_node_space_through_the_hub_and_is_refused_the_editor() {
    let hub = Hub::start();
    let node_red = format!("{}\nhealth_interval = \"500ms\"", common::agent::fixture_node_red());
    let tables = format!("[gate.http_auth]\nmode = \"users\"\n{}", common::agent::default_users());
    let agent = common::agent::Agent::start_with_flows(&node_red, "", Some(&tables), &common::http::echo_flow());
    let out = common::hub::enroll(&agent.config, &hub, "pump-d");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    common::hub::wait_online(&agent, 1);
    let dash = hub.account("dash", "dashboard");
    let client = common::http::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let api = hub.api();
    let login = client
        .post(format!("{api}/api/login"))
        .json(&json!({"name": "dash", "password": dash.password, "totp": dash.code_at(common::unix_now() + 30)}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();

    // On the LAN, node space wants credentials; through the hub the operator is a platform user.
    let direct = client.get(format!("{}/api/data", agent.gate_url())).send().await.unwrap();
    assert_eq!(direct.status(), 401);
    let data = format!("{api}/devices/pump-d/http/api/data");
    let through = client.get(&data).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(through.status(), 200);
    let body: Value = through.json().await.unwrap();
    assert_eq!(body["user"], "dash@platform", "Node-RED is told who it is: {body}");
    assert_eq!(body["auth"], Value::Null, "the hub's cookie never reaches the device");
    assert_eq!(client.get(&data).send().await.unwrap().status(), 401, "not without a login");

    // Nothing else: no editor, no device API beyond the list.
    let editor = client.get(format!("{api}/devices/pump-d/editor/")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(editor.status(), 403);
    let device = client.get(format!("{api}/api/devices/pump-d")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(device.status(), 403);
    let list: Value =
        client.get(format!("{api}/api/devices")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["id"], "pump-d");
}
