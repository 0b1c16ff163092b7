//! Deployments through the platform, with a real hub, agent and Node-RED on loopback: signed
//! snapshots applied or rolled back, refusals of forged, replayed, expired and misdirected
//! envelopes, an agent killed mid-apply, snapshots taken from the device and deployed back,
//! and the SBOM the device sends after each deployment.

use redtether_testkit as common;

use common::agent::{Agent, BIN};
use common::hub::{Hub, online_agent, wait_online};
use common::wait_for_async;
use redtether_proto::deployment::{self, Deployment, Snapshot};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Long enough for a restart of Node-RED and, in one test, an npm install.
const APPLY_TIMEOUT: Duration = Duration::from_secs(180);

/// A tab with `GET /<path>` answering `text`.
fn endpoint_flows(path: &str, text: &str) -> Value {
    json!([
        {"id": "tab-d", "type": "tab", "label": "deployed"},
        {"id": format!("in-{path}"), "type": "http in", "z": "tab-d", "url": format!("/{path}"), "method": "get", "upload": false, "wires": [[format!("fn-{path}")]]},
        {"id": format!("fn-{path}"), "type": "function", "z": "tab-d", "func": format!("msg.payload = {text:?}; return msg;"), "outputs": 1, "wires": [[format!("out-{path}")]]},
        {"id": format!("out-{path}"), "type": "http response", "z": "tab-d", "statusCode": "", "headers": {}, "wires": []}
    ])
}

async fn call(hub: &Hub, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = common::http::client().request(method, format!("{}{path}", hub.api())).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Posts a deployment; returns its id.
async fn deploy(hub: &Hub, token: &str, device: &str, body: Value) -> String {
    let (code, answer) =
        call(hub, reqwest::Method::POST, &format!("/api/devices/{device}/deploy"), token, Some(body)).await;
    assert_eq!(code, 202, "{answer}");
    answer["id"].as_str().unwrap().to_string()
}

/// Waits until the deployment is over; returns its record.
async fn finished(hub: &Hub, token: &str, device: &str, id: &str) -> Value {
    let path = format!("/api/devices/{device}/deployments/{id}");
    wait_for_async(APPLY_TIMEOUT, "the deployment to end", || async {
        let (code, d) = call(hub, reqwest::Method::GET, &path, token, None).await;
        assert_eq!(code, 200, "{d}");
        ["applied", "rolled_back", "failed"].contains(&d["state"].as_str().unwrap()).then_some(d)
    })
    .await
}

async fn get(agent: &Agent, path: &str) -> (u16, String) {
    let r = common::http::client().get(format!("{}{path}", agent.gate_url())).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn flows_on_disk(agent: &Agent) -> Value {
    serde_json::from_slice(&std::fs::read(agent.state_dir().join("node-red/flows.json")).unwrap()).unwrap()
}

/// `redtether deploy FILE` with `envelope`; returns the exit code and the outcome it printed.
fn deploy_by_hand(agent: &Agent, envelope: &str) -> (i32, Value) {
    let file = agent.dir.path().join("envelope.txt");
    std::fs::write(&file, envelope).unwrap();
    let out = Command::new(BIN).args(["deploy", "--config"]).arg(&agent.config).arg(&file).output().unwrap();
    let printed = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), printed)
}

/// The hub's own signing key, to make envelopes a real hub would never send.
fn hub_key(hub: &Hub) -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_pkcs8(&std::fs::read(hub.state_dir().join("signing.key")).unwrap()).unwrap()
}

fn reasons(agent: &Agent) -> Vec<String> {
    agent.events("deploy.refused").iter().map(|e| e["detail"]["reason"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_adds_an_endpoint_with_sealed_credentials_and_protection_still_refuses_local_writes() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-a", "protection = true");
    let ops = hub.operator("pipeline", "member");
    let viewer = hub.operator("watcher", "viewer");
    let gate = agent.gate_url();

    // A viewer may look but not deploy; a bad snapshot is refused before it is signed.
    let (code, _) =
        call(&hub, reqwest::Method::POST, "/api/devices/pump-a/deploy", &viewer, Some(json!({"flows": []}))).await;
    assert_eq!(code, 403);
    let (code, body) = call(
        &hub,
        reqwest::Method::POST,
        "/api/devices/pump-a/deploy",
        &ops,
        Some(json!({"flows": [], "settings": {"adminAuth": null}})),
    )
    .await;
    assert_eq!((code, body["error"].as_str()), (400, Some("invalid_snapshot")), "{body}");

    // Node-RED calls the gate's /whoami with HTTP Basic credentials that only exist sealed
    // in the deployment: the answer proves the device opened them and Node-RED could read them.
    let mut flows = endpoint_flows("hello", "deployed from the platform").as_array().unwrap().clone();
    flows.extend(
        json!([
            {"id": "in-who", "type": "http in", "z": "tab-d", "url": "/whoami", "method": "get", "upload": false, "wires": [["fn-who"]]},
            {"id": "fn-who", "type": "function", "z": "tab-d", "func": "msg.payload = msg.req.headers.authorization || 'none'; return msg;", "outputs": 1, "wires": [["out-who"]]},
            {"id": "out-who", "type": "http response", "z": "tab-d", "statusCode": "", "headers": {}, "wires": []},
            {"id": "in-call", "type": "http in", "z": "tab-d", "url": "/call", "method": "get", "upload": false, "wires": [["req-call"]]},
            {"id": "req-call", "type": "http request", "z": "tab-d", "method": "GET", "ret": "txt", "url": format!("{gate}/whoami"), "authType": "basic", "tls": "", "wires": [["out-who"]]}
        ])
        .as_array()
        .unwrap()
        .clone(),
    );
    let body = json!({
        "flows": flows,
        "credentials": {"req-call": {"user": "sealed-user", "password": "sealed-pw"}},
        "env": {"SITE": "north"},
        "settings": {"functionTimeout": 5},
    });
    let id = deploy(&hub, &ops, "pump-a", body).await;
    let done = finished(&hub, &ops, "pump-a", &id).await;
    assert_eq!(done["state"], "applied", "{done}");
    assert_eq!(get(&agent, "/hello").await, (200, "deployed from the platform".to_string()));
    let expected = format!("Basic {}", base64_of("sealed-user:sealed-pw"));
    assert_eq!(get(&agent, "/call").await, (200, expected));

    // The hub keeps no readable copy of the credentials; the device keeps them encrypted.
    let (_, envelope) =
        call(&hub, reqwest::Method::GET, &format!("/api/devices/pump-a/deployments/{id}/envelope"), &ops, None).await;
    assert!(!envelope.to_string().contains("sealed-pw"));
    assert!(!std::fs::read_to_string(hub.state_dir().join("db/db")).unwrap_or_default().contains("sealed-pw"));
    let cred_file = std::fs::read_to_string(agent.state_dir().join("node-red/flows_cred.json")).unwrap();
    assert!(cred_file.contains("\"$\"") && !cred_file.contains("sealed-pw"), "{cred_file}");

    // Audited on the device with the deployment id and the same flows hash the hub has.
    let received = agent.events("deploy.received");
    let applied = agent.events("deploy.applied");
    assert_eq!(received.len(), 1);
    assert_eq!(applied[0]["detail"]["deployment"], id.as_str());
    assert_eq!(applied[0]["detail"]["flows_hash"], done["flows_hash"]);

    // Protection mode stayed on: the local admin API still refuses writes.
    let write = common::http::client()
        .post(format!("{gate}/device-editor/flows"))
        .basic_auth("owner", Some(common::agent::USERS[0].1))
        .header("node-red-api-version", "v2")
        .json(&json!({"flows": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403);
    assert_eq!(get(&agent, "/hello").await.0, 200);

    // The device sent its SBOM after the deployment.
    let sbom = wait_for_async(Duration::from_secs(30), "the SBOM at the hub", || async {
        let (code, sbom) = call(&hub, reqwest::Method::GET, "/api/devices/pump-a/sbom", &viewer, None).await;
        (code == 200).then_some(sbom)
    })
    .await;
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let names: Vec<&str> = sbom["components"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(names.contains(&"node-red"), "{names:?}");
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_types_and_uninstallable_modules_roll_back_and_the_previous_endpoint_still_serves() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-r", "");
    let ops = hub.operator("pipeline", "owner");

    let first = deploy(&hub, &ops, "pump-r", json!({"flows": endpoint_flows("v1", "one")})).await;
    assert_eq!(finished(&hub, &ops, "pump-r", &first).await["state"], "applied");
    assert_eq!(get(&agent, "/v1").await, (200, "one".to_string()));
    let good = flows_on_disk(&agent);

    let mut unknown = endpoint_flows("v2", "two").as_array().unwrap().clone();
    unknown.push(json!({"id": "odd", "type": "no-such-node-type", "z": "tab-d", "wires": []}));
    let id = deploy(&hub, &ops, "pump-r", json!({"flows": unknown})).await;
    let done = finished(&hub, &ops, "pump-r", &id).await;
    assert_eq!(done["state"], "rolled_back", "{done}");
    assert!(done["detail"]["reason"].as_str().unwrap().contains("no-such-node-type"), "{done}");
    assert_eq!(get(&agent, "/v1").await, (200, "one".to_string()), "the previous snapshot still serves");
    assert_eq!(get(&agent, "/v2").await.0, 404);
    assert_eq!(flows_on_disk(&agent), good);

    let id = deploy(
        &hub,
        &ops,
        "pump-r",
        json!({"flows": endpoint_flows("v3", "three"), "modules": {"redtether-test-no-such-package": "1.0.0"}}),
    )
    .await;
    let done = finished(&hub, &ops, "pump-r", &id).await;
    assert_eq!(
        (done["state"].as_str(), done["detail"]["stage"].as_str()),
        (Some("rolled_back"), Some("modules")),
        "{done}"
    );
    assert!(done["detail"]["reason"].as_str().unwrap().contains("npm install failed"), "{done}");
    assert_eq!(get(&agent, "/v1").await, (200, "one".to_string()));
    assert_eq!(get(&agent, "/v3").await.0, 404);

    // Valid on paper, fatal when Node-RED starts (its context store cannot be loaded): found
    // only after the switch, so the device switches back and starts the old snapshot again.
    let id = deploy(
        &hub,
        &ops,
        "pump-r",
        json!({"flows": endpoint_flows("v4", "four"), "settings": {"contextStorage": {"default": {"module": "redtether-no-such-store"}}}}),
    )
    .await;
    let done = finished(&hub, &ops, "pump-r", &id).await;
    assert_eq!(
        (done["state"].as_str(), done["detail"]["stage"].as_str()),
        (Some("rolled_back"), Some("start")),
        "{done}"
    );
    assert_eq!(get(&agent, "/v1").await, (200, "one".to_string()), "the old snapshot was started again");
    assert_eq!(get(&agent, "/v4").await.0, 404);
    assert_eq!(flows_on_disk(&agent), good);

    let rolled_back = agent.events("deploy.rolled_back");
    assert_eq!(rolled_back.len(), 3, "{rolled_back:?}");
    assert!(rolled_back.iter().all(|e| e["detail"]["flows_hash"].as_str().is_some_and(|h| h.len() == 64)));
    // Only the running generation and the one before it stay on disk: no failed leftovers.
    let generations = std::fs::read_dir(agent.state_dir().join("node-red.d")).unwrap().count();
    assert!(generations <= 2, "{generations} generations kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_from_npm_is_installed_and_its_node_serves() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-m", "");
    let ops = hub.operator("pipeline", "owner");
    let flows = json!([
        {"id": "tab-m", "type": "tab", "label": "modules"},
        {"id": "in-r", "type": "http in", "z": "tab-m", "url": "/dice", "method": "get", "upload": false, "wires": [["rnd"]]},
        {"id": "rnd", "type": "random", "z": "tab-m", "low": "4", "high": "4", "inte": "true", "property": "payload", "wires": [["to-text"]]},
        {"id": "to-text", "type": "function", "z": "tab-m", "func": "msg.payload = String(msg.payload); return msg;", "outputs": 1, "wires": [["out-r"]]},
        {"id": "out-r", "type": "http response", "z": "tab-m", "statusCode": "", "headers": {}, "wires": []}
    ]);
    let id = deploy(&hub, &ops, "pump-m", json!({"flows": flows, "modules": {"node-red-node-random": "0.4.1"}})).await;
    let done = finished(&hub, &ops, "pump-m", &id).await;
    assert_eq!(done["state"], "applied", "{done}");
    assert_eq!(get(&agent, "/dice").await, (200, "4".to_string()));
    let (code, snapshot) = call(&hub, reqwest::Method::POST, "/api/devices/pump-m/snapshot", &ops, None).await;
    assert_eq!(code, 201, "{snapshot}");
    assert_eq!(snapshot["modules"]["node-red-node-random"], "0.4.1");
    // The module is in the device's SBOM with the exact version npm installed.
    let (code, sbom) = call(&hub, reqwest::Method::POST, "/api/devices/pump-m/sbom", &ops, None).await;
    assert_eq!(code, 200);
    let random = sbom["components"].as_array().unwrap().iter().find(|c| c["name"] == "node-red-node-random").cloned();
    assert_eq!(random.map(|c| c["version"].clone()), Some(json!("0.4.1")), "{sbom}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_replayed_expired_and_misdirected_deployments_are_refused_and_audited() {
    let hub = Hub::start();
    let mut agent = online_agent(&hub, "pump-f", "");
    let ops = hub.operator("pipeline", "owner");

    let one = deploy(&hub, &ops, "pump-f", json!({"flows": endpoint_flows("one", "1")})).await;
    assert_eq!(finished(&hub, &ops, "pump-f", &one).await["state"], "applied");
    let two = deploy(&hub, &ops, "pump-f", json!({"flows": endpoint_flows("two", "2")})).await;
    assert_eq!(finished(&hub, &ops, "pump-f", &two).await["state"], "applied");
    let envelope = |id: String| {
        let hub = &hub;
        let ops = ops.clone();
        async move {
            let (code, e) =
                call(hub, reqwest::Method::GET, &format!("/api/devices/pump-f/deployments/{id}/envelope"), &ops, None)
                    .await;
            assert_eq!(code, 200);
            e["envelope"].as_str().unwrap().to_string()
        }
    };
    let first = envelope(one.clone()).await;
    let second = envelope(two.clone()).await;

    // The same envelope again is answered with its outcome; an older one is a replay.
    let (code, again) = deploy_by_hand(&agent, &second);
    assert_eq!((code, again["state"].as_str()), (0, Some("applied")), "{again}");
    let (code, replay) = deploy_by_hand(&agent, &first);
    assert_ne!(code, 0);
    assert_eq!(replay["detail"]["reason"], "replayed", "{replay}");

    // Changed flows under the hub's signature.
    let (payload, signature) = second.trim_start_matches("v1.").split_once('.').unwrap();
    let mut d: Value = serde_json::from_slice(&b64url_decode(payload)).unwrap();
    d["number"] = json!(50);
    d["snapshot"]["flows"] = endpoint_flows("evil", "pwned");
    let forged = format!("v1.{}.{signature}", b64url(&serde_json::to_vec(&d).unwrap()));
    let (code, out) = deploy_by_hand(&agent, &forged);
    assert_ne!(code, 0);
    assert_eq!(out["detail"]["reason"], "bad_signature", "{out}");
    // The forgery's id is only a claim: audited as such, never reported as deployment two's outcome.
    assert_eq!(out["id"], "", "{out}");
    let forged_event = agent.events("deploy.refused").pop().unwrap();
    assert_eq!(forged_event["detail"]["claimed_deployment"], two.as_str());
    assert!(forged_event["detail"].get("deployment").is_none(), "{forged_event}");

    // Signed with another key; signed by the hub but for another device, or expired.
    let made = |device: &str, number: u64, exp: u64| Deployment {
        id: format!("made-{number}"),
        device: device.into(),
        number,
        exp,
        snapshot: Snapshot {
            flows: endpoint_flows("evil", "pwned").as_array().unwrap().clone(),
            credentials: None,
            modules: Default::default(),
            env: Default::default(),
            settings: Default::default(),
        },
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let stranger = {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    };
    let key = hub_key(&hub);
    for (envelope, reason) in [
        (deployment::sign(&made("pump-f", 60, now + 600), &stranger), "bad_signature"),
        (deployment::sign(&made("pump-x", 61, now + 600), &key), "other_device"),
        (deployment::sign(&made("pump-f", 62, now - 1), &key), "expired"),
        ("v1.garbage".to_string(), "malformed"),
    ] {
        let (code, out) = deploy_by_hand(&agent, &envelope);
        assert_ne!(code, 0, "{reason}");
        assert_eq!(out["detail"]["reason"], reason, "{out}");
    }
    assert_eq!(get(&agent, "/evil").await.0, 404, "nothing refused ever ran");
    assert_eq!(get(&agent, "/two").await, (200, "2".to_string()));

    // Through the hub: made while the device is offline, expired before it comes back.
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(30));
    let late = deploy(&hub, &ops, "pump-f", json!({"flows": endpoint_flows("late", "late"), "expires_in": 1})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    agent.spawn(&[]);
    agent.wait_running();
    wait_online(&agent, 1);
    let done = finished(&hub, &ops, "pump-f", &late).await;
    assert_eq!(
        (done["state"].as_str(), done["detail"]["reason"].as_str()),
        (Some("failed"), Some("expired")),
        "{done}"
    );

    assert_eq!(
        reasons(&agent),
        ["replayed", "bad_signature", "bad_signature", "other_device", "expired", "malformed", "expired"]
    );
    assert_eq!(get(&agent, "/two").await, (200, "2".to_string()));
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// Polls the deployment record on disk until an apply is in progress.
fn wait_applying(state: &Path) {
    common::wait_for(APPLY_TIMEOUT, "the apply to begin", || {
        let record: Value = serde_json::from_slice(&std::fs::read(state.join("deploy/state.json")).ok()?).ok()?;
        (!record["applying"].is_null()).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_during_an_apply_restarts_on_one_complete_snapshot() {
    let hub = Hub::start();
    let mut agent = online_agent(&hub, "pump-k", "");
    let ops = hub.operator("pipeline", "owner");
    let one = deploy(&hub, &ops, "pump-k", json!({"flows": endpoint_flows("old", "old")})).await;
    assert_eq!(finished(&hub, &ops, "pump-k", &one).await["state"], "applied");
    let old = flows_on_disk(&agent);
    let new_flows = endpoint_flows("new", "new");

    let two = deploy(&hub, &ops, "pump-k", json!({"flows": new_flows})).await;
    wait_applying(&agent.state_dir());
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10));
    agent.spawn(&[]);
    agent.wait_running();

    // One snapshot or the other, whole: the files and what Node-RED serves agree.
    let running = flows_on_disk(&agent);
    if running == old {
        assert_eq!(get(&agent, "/old").await.0, 200);
        assert_eq!(get(&agent, "/new").await.0, 404);
    } else {
        assert_eq!(running, new_flows, "neither the old nor the new flows");
        assert_eq!(get(&agent, "/new").await.0, 200);
    }
    // The hub learns how it ended once the device is back.
    wait_online(&agent, 1);
    let done = finished(&hub, &ops, "pump-k", &two).await;
    let expected = if running == old { "rolled_back" } else { "applied" };
    assert_eq!(done["state"], expected, "{done}");
    if running == old {
        assert_eq!(done["detail"]["stage"], "interrupted", "{done}");
        assert_eq!(agent.events("deploy.rolled_back").len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_from_the_device_deploys_back_after_a_bad_local_change() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-s", "");
    let ops = hub.operator("pipeline", "owner");
    let gate = agent.gate_url();
    let id =
        deploy(&hub, &ops, "pump-s", json!({"flows": endpoint_flows("good", "good"), "env": {"SITE": "north"}})).await;
    assert_eq!(finished(&hub, &ops, "pump-s", &id).await["state"], "applied");

    let (code, taken) = call(&hub, reqwest::Method::POST, "/api/devices/pump-s/snapshot", &ops, None).await;
    assert_eq!(code, 201, "{taken}");
    let sid = taken["id"].as_str().unwrap().to_string();
    let (_, list) = call(&hub, reqwest::Method::GET, "/api/devices/pump-s/snapshots", &ops, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["nodes"], 4);

    // A bad local change through the LAN editor (protection mode is off on this device).
    let client = common::http::client();
    let owner = common::agent::USERS[0];
    let rev = client
        .get(format!("{gate}/device-editor/flows"))
        .basic_auth(owner.0, Some(owner.1))
        .header("node-red-api-version", "v2")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["rev"]
        .clone();
    let broke = client
        .post(format!("{gate}/device-editor/flows"))
        .basic_auth(owner.0, Some(owner.1))
        .header("node-red-api-version", "v2")
        .header("node-red-deployment-type", "full")
        .json(&json!({"flows": [], "rev": rev}))
        .send()
        .await
        .unwrap();
    assert_eq!(broke.status(), 200);
    wait_for_async(Duration::from_secs(10), "the endpoint to go", || async {
        (get(&agent, "/good").await.0 == 404).then_some(())
    })
    .await;

    let back = deploy(&hub, &ops, "pump-s", json!({"snapshot": sid})).await;
    let done = finished(&hub, &ops, "pump-s", &back).await;
    assert_eq!(done["state"], "applied", "{done}");
    assert_eq!(done["snapshot"], sid.as_str());
    assert_eq!(get(&agent, "/good").await, (200, "good".to_string()));
    let overrides: Value =
        serde_json::from_slice(&std::fs::read(agent.state_dir().join("node-red/redtether-snapshot.json")).unwrap())
            .unwrap();
    assert_eq!(overrides["env"]["SITE"], "north", "the environment came back with the snapshot");
    let (code, _) =
        call(&hub, reqwest::Method::POST, "/api/devices/pump-s/deploy", &ops, Some(json!({"snapshot": "nope"}))).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_of_one_device_deploys_to_another_with_its_credentials_sealed_anew() {
    let hub = Hub::start();
    let a = online_agent(&hub, "dev-a", "");
    let b = online_agent(&hub, "prod-b", "");
    let ops = hub.operator("pipeline", "member");

    // On A: an endpoint calling A's gate /whoami with HTTP Basic credentials that exist only
    // sealed in the deployment; /whoami answers the Authorization header it got.
    let gate_a = a.gate_url();
    let flows = json!([
        {"id": "tab-d", "type": "tab", "label": "deployed"},
        {"id": "in-who", "type": "http in", "z": "tab-d", "url": "/whoami", "method": "get", "upload": false, "wires": [["fn-who"]]},
        {"id": "fn-who", "type": "function", "z": "tab-d", "func": "msg.payload = msg.req.headers.authorization || 'none'; return msg;", "outputs": 1, "wires": [["out-who"]]},
        {"id": "out-who", "type": "http response", "z": "tab-d", "statusCode": "", "headers": {}, "wires": []},
        {"id": "in-call", "type": "http in", "z": "tab-d", "url": "/call", "method": "get", "upload": false, "wires": [["req-call"]]},
        {"id": "req-call", "type": "http request", "z": "tab-d", "method": "GET", "ret": "txt", "url": format!("{gate_a}/whoami"), "authType": "basic", "tls": "", "wires": [["out-who"]]}
    ]);
    let body =
        json!({"flows": flows, "credentials": {"req-call": {"user": "portable-user", "password": "portable-pw"}}});
    let id = deploy(&hub, &ops, "dev-a", body).await;
    assert_eq!(finished(&hub, &ops, "dev-a", &id).await["state"], "applied");
    let expected = format!("Basic {}", base64_of("portable-user:portable-pw"));
    assert_eq!(get(&a, "/call").await, (200, expected.clone()));

    // The snapshot carries the credentials sealed to the hub's key, not A's file.
    let (code, taken) = call(&hub, reqwest::Method::POST, "/api/devices/dev-a/snapshot", &ops, None).await;
    assert_eq!(code, 201, "{taken}");
    assert_eq!((taken["credentials"].as_bool(), taken["portable"].as_bool()), (Some(true), Some(true)), "{taken}");
    let sid = taken["id"].as_str().unwrap().to_string();
    let (_, full) = call(&hub, reqwest::Method::GET, &format!("/api/devices/dev-a/snapshots/{sid}"), &ops, None).await;
    assert!(full["snapshot"]["credentials"]["portable"].as_str().unwrap().starts_with("v1."), "{full}");
    assert!(!full.to_string().contains("portable-pw"));
    assert!(!std::fs::read_to_string(hub.state_dir().join("db/db")).unwrap_or_default().contains("portable-pw"));
    let a_commands: Vec<Value> = a.events("tunnel.command").iter().map(|e| e["detail"]["command"].clone()).collect();
    assert_eq!(a_commands, [json!("portable_snapshot")], "audited on the device like a snapshot");

    // Deployed to B: B's Node-RED sends the same credentials, from B's own credentials file.
    let to_b = deploy(&hub, &ops, "prod-b", json!({"snapshot": sid})).await;
    let done = finished(&hub, &ops, "prod-b", &to_b).await;
    assert_eq!(done["state"], "applied", "{done}");
    assert_eq!(done["snapshot"], sid.as_str());
    assert_eq!(get(&b, "/call").await, (200, expected));
    let cred_b = std::fs::read_to_string(b.state_dir().join("node-red/flows_cred.json")).unwrap();
    let cred_a = std::fs::read_to_string(a.state_dir().join("node-red/flows_cred.json")).unwrap();
    assert!(cred_b.contains("\"$\"") && !cred_b.contains("portable-pw"), "{cred_b}");
    assert_ne!(cred_b, cred_a, "B's file is B's own, not a copy of A's");
    let (_, envelope) =
        call(&hub, reqwest::Method::GET, &format!("/api/devices/prod-b/deployments/{to_b}/envelope"), &ops, None).await;
    assert!(!envelope.to_string().contains("portable-pw"));
}
