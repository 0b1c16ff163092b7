//! A staged rollout over real agents (each with a real Node-RED) and 200 simulated devices on
//! one real hub: the group's rollout moves wave by wave in order, the real devices serve the
//! new flows through their gates, and every device was deployed exactly once. A snapshot taken
//! on a dev device and promoted through a pipeline reaches prod devices with credentials that
//! work there.

use redtether_testkit as common;

use common::hub::{Hub, audit_pages, call, online_agent, simulated_fleet};
use common::wait_for_async;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Long enough for three real Node-REDs to restart on their new flows on a loaded machine.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);

fn endpoint_flows(text: &str) -> Value {
    json!([
        {"id": "tab-r", "type": "tab", "label": text},
        {"id": "in-r", "type": "http in", "z": "tab-r", "url": "/rollout", "method": "get", "upload": false, "wires": [["fn-r"]]},
        {"id": "fn-r", "type": "function", "z": "tab-r", "func": format!("msg.payload = {text:?}; return msg;"), "outputs": 1, "wires": [["out-r"]]},
        {"id": "out-r", "type": "http response", "z": "tab-r", "statusCode": "", "headers": {}, "wires": []}
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_over_three_real_and_two_hundred_simulated_devices_completes_in_waves_in_order() {
    let hub = Hub::start_logging("info");
    let token = hub.operator("ops", "owner");
    // Named to sort first: the canary (devices are taken online first, then by id) is a real one.
    let real: Vec<_> = (0..3).map(|i| online_agent(&hub, &format!("a-real-{i}"), "")).collect();
    let (sim, simulated) = simulated_fleet(&hub, "sim", 200).await;
    let mut ids: Vec<String> = (0..3).map(|i| format!("a-real-{i}")).collect();
    ids.extend(simulated.iter().map(|d| d.id().to_string()));

    let (code, answer) = call(&hub, Method::POST, "/api/groups", &token, Some(json!({"name": "plant"}))).await;
    assert_eq!(code, 201, "{answer}");
    let (code, answer) = call(&hub, Method::PUT, "/api/groups/plant/devices", &token, Some(json!({"add": ids}))).await;
    assert_eq!(code, 200, "{answer}");

    let body = json!({"flows": endpoint_flows("v2"), "plan": {"canary": 1, "waves": [10, 50, 100], "wait": 0}});
    let (code, answer) = call(&hub, Method::POST, "/api/groups/plant/deploy", &token, Some(body)).await;
    assert_eq!(code, 202, "{answer}");
    let id = answer["rollout"].as_str().unwrap().to_string();
    let done = wait_for_async(ROLLOUT_TIMEOUT, "the rollout to complete", || async {
        let (_, r) = call(&hub, Method::GET, &format!("/api/rollouts/{id}"), &token, None).await;
        assert!(!["halted", "aborted"].contains(&r["state"].as_str().unwrap_or_default()), "{r}");
        (r["state"] == "completed").then_some(r)
    })
    .await;
    assert_eq!(done["counts"], json!({"applied": 203}), "{}", done["counts"]);
    let stages: BTreeMap<String, u64> = done["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["device"].as_str().unwrap().to_string(), d["stage"].as_u64().unwrap()))
        .collect();
    assert_eq!(stages["a-real-0"], 0, "a real device is the canary");
    let per_stage = |s: u64| stages.values().filter(|v| **v == s).count();
    // Of the 202 after the canary: 10 % (rounded up) is 21 devices, 50 % is 101 (80 more), 100 % the last 101.
    assert_eq!((per_stage(0), per_stage(1), per_stage(2), per_stage(3)), (1, 21, 80, 101));

    // Every real device serves the new flows through its gate.
    for agent in &real {
        let r = common::http::client().get(format!("{}/rollout", agent.gate_url())).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "v2");
    }
    for d in &simulated {
        assert_eq!(d.deployments_received().len(), 1, "{} deployed once", d.id());
        assert_eq!(d.current_snapshot()["flows"][0]["label"], "v2");
    }

    // In the group's audit, every deployment of a stage comes after the wave event that ended
    // the stage before it.
    let rows = audit_pages(&hub, &token, "/api/groups/plant/audit?kind=deploy.created").await;
    assert_eq!(rows.len(), 203);
    let order: Vec<u64> = rows.iter().map(|e| stages[e["device"].as_str().unwrap()]).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "deployments made stage by stage: {order:?}");
    sim.shutdown().await;
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn get_gate(agent: &common::agent::Agent, path: &str) -> (u16, String) {
    let r = common::http::client().get(format!("{}{path}", agent.gate_url())).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dev_devices_snapshot_promoted_to_prod_brings_credentials_that_work_there() {
    let hub = Hub::start_logging("info");
    let owner = hub.operator("olga", "owner");
    let member = hub.operator("max", "member");
    let dev = online_agent(&hub, "dev-a", "");
    let prod: Vec<_> = ["prod-b", "prod-c"].iter().map(|id| online_agent(&hub, id, "")).collect();
    let (sim, simulated) = simulated_fleet(&hub, "prod-sim", 20).await;
    let mut prod_ids = vec![json!("prod-b"), json!("prod-c")];
    prod_ids.extend(simulated.iter().map(|d| json!(d.id())));
    for (group, devices) in [("dev", vec![json!("dev-a")]), ("prod", prod_ids)] {
        let (code, answer) = call(&hub, Method::POST, "/api/groups", &owner, Some(json!({"name": group}))).await;
        assert_eq!(code, 201, "{answer}");
        let path = format!("/api/groups/{group}/devices");
        let (code, answer) = call(&hub, Method::PUT, &path, &owner, Some(json!({"add": devices}))).await;
        assert_eq!(code, 200, "{answer}");
    }
    let fast = json!({"canary": 1, "waves": [100], "wait": 0});
    let body = json!({"name": "release", "stages": ["dev", {"group": "prod", "plan": fast}]});
    let (code, answer) = call(&hub, Method::POST, "/api/pipelines", &owner, Some(body)).await;
    assert_eq!(code, 201, "{answer}");

    // On the dev device: an endpoint whose HTTP request carries Basic credentials that exist
    // only sealed in the deployment; the dev gate's /whoami answers the header it got.
    let gate = dev.gate_url();
    let flows = json!([
        {"id": "tab-d", "type": "tab", "label": "release"},
        {"id": "in-who", "type": "http in", "z": "tab-d", "url": "/whoami", "method": "get", "upload": false, "wires": [["fn-who"]]},
        {"id": "fn-who", "type": "function", "z": "tab-d", "func": "msg.payload = msg.req.headers.authorization || 'none'; return msg;", "outputs": 1, "wires": [["out-who"]]},
        {"id": "out-who", "type": "http response", "z": "tab-d", "statusCode": "", "headers": {}, "wires": []},
        {"id": "in-call", "type": "http in", "z": "tab-d", "url": "/call", "method": "get", "upload": false, "wires": [["req-call"]]},
        {"id": "req-call", "type": "http request", "z": "tab-d", "method": "GET", "ret": "txt", "url": format!("{gate}/whoami"), "authType": "basic", "tls": "", "wires": [["out-who"]]}
    ]);
    let body = json!({"flows": flows, "credentials": {"req-call": {"user": "release-user", "password": "release-pw"}}});
    let (code, answer) = call(&hub, Method::POST, "/api/devices/dev-a/deploy", &member, Some(body)).await;
    assert_eq!(code, 202, "{answer}");
    let expected = format!("Basic {}", base64_of("release-user:release-pw"));
    wait_for_async(ROLLOUT_TIMEOUT, "the dev device to serve /call", || async {
        (get_gate(&dev, "/call").await == (200, expected.clone())).then_some(())
    })
    .await;
    let (code, taken) = call(&hub, Method::POST, "/api/devices/dev-a/snapshot", &member, None).await;
    assert_eq!(code, 201, "{taken}");
    assert_eq!(taken["portable"], true, "{taken}");
    let sid = taken["id"].as_str().unwrap();

    let body = json!({"from": "dev", "snapshot": sid});
    let (code, promoted) = call(&hub, Method::POST, "/api/pipelines/release/promote", &member, Some(body)).await;
    assert_eq!((code, promoted["to"].as_str()), (202, Some("prod")), "{promoted}");
    let id = promoted["rollout"].as_str().unwrap().to_string();
    let done = wait_for_async(ROLLOUT_TIMEOUT, "the promotion's rollout", || async {
        let (_, r) = call(&hub, Method::GET, &format!("/api/rollouts/{id}"), &member, None).await;
        assert!(!["halted", "aborted"].contains(&r["state"].as_str().unwrap_or_default()), "{r}");
        (r["state"] == "completed").then_some(r)
    })
    .await;
    assert_eq!(done["counts"], json!({"applied": 22}));
    // The prod devices' Node-REDs send the credentials from their own credentials files.
    for agent in &prod {
        assert_eq!(get_gate(agent, "/call").await, (200, expected.clone()));
        let own = std::fs::read_to_string(agent.state_dir().join("node-red/flows_cred.json")).unwrap();
        assert!(!own.contains("release-pw"), "{own}");
    }
    for d in &simulated {
        assert_eq!(d.current_snapshot()["flows"][0]["label"], "release");
    }
    sim.shutdown().await;
}
