//! A staged rollout over real agents (each with a real Node-RED) and 200 simulated devices on
//! one real hub: the group's rollout moves wave by wave in order, the real devices serve the
//! new flows through their gates, and every device was deployed exactly once.

use redtether_testkit as common;

use common::hub::{Hub, call, online_agent, simulated_fleet};
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
    let mut rows = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(c) => format!("/api/groups/plant/audit?limit=500&kind=deploy.created&before={c}"),
            None => "/api/groups/plant/audit?limit=500&kind=deploy.created".to_string(),
        };
        let (code, page) = call(&hub, Method::GET, &path, &token, None).await;
        assert_eq!(code, 200, "{page}");
        rows.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => before = Some(next.to_string()),
            None => break,
        }
    }
    rows.reverse();
    assert_eq!(rows.len(), 203);
    let order: Vec<u64> = rows.iter().map(|e| stages[e["device"].as_str().unwrap()]).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "deployments made stage by stage: {order:?}");
    sim.shutdown().await;
}
