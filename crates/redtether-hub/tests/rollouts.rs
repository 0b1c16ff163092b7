//! Groups, group policy, fleet rollouts and pipelines against a real hub and simulated devices
//! (the test kit's simulator: real certificates, the real protocol): rollouts move stage by
//! stage, halt by themselves and roll back what they moved, survive the hub being killed, wait
//! for or skip offline devices, and are paused, resumed and aborted; group policy reaches every
//! member unless the device has its own; a promotion deploys a dev device's snapshot to prod.
//! What is checked is what the devices received and what the hub says, through its API.

use redtether_testkit::hub::{Hub, audit_pages, call, simulated_fleet};
use redtether_testkit::simulator::{Behaviour, SimDevice};
use redtether_testkit::wait_for_async;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

async fn ok(hub: &Hub, token: &str, method: Method, path: &str, body: Value, want: u16) -> Value {
    let (code, answer) = call(hub, method.clone(), path, token, Some(body)).await;
    assert_eq!(code, want, "{method} {path}: {answer}");
    answer
}

async fn get(hub: &Hub, token: &str, path: &str) -> Value {
    let (code, answer) = call(hub, Method::GET, path, token, None).await;
    assert_eq!(code, 200, "GET {path}: {answer}");
    answer
}

/// A group named `name` holding `devices`.
async fn group(hub: &Hub, token: &str, name: &str, devices: &[SimDevice]) {
    ok(hub, token, Method::POST, "/api/groups", json!({ "name": name, "description": format!("{name} devices") }), 201)
        .await;
    let ids: Vec<&str> = devices.iter().map(|d| d.id()).collect();
    let changed = ok(hub, token, Method::PUT, &format!("/api/groups/{name}/devices"), json!({ "add": ids }), 200).await;
    assert_eq!(changed["added"].as_array().unwrap().len(), devices.len());
}

fn flows(label: &str) -> Value {
    json!([
        { "id": "t1", "type": "tab", "label": label },
        { "id": "n1", "type": "inject", "z": "t1", "name": label },
    ])
}

async fn roll_out(hub: &Hub, token: &str, group: &str, label: &str, plan: Value) -> String {
    let body = json!({ "flows": flows(label), "plan": plan });
    let answer = ok(hub, token, Method::POST, &format!("/api/groups/{group}/deploy"), body, 202).await;
    answer["rollout"].as_str().unwrap().to_string()
}

async fn wait_rollout(hub: &Hub, token: &str, id: &str, state: &str) -> Value {
    wait_for_async(LONG, &format!("rollout {id} {state}"), || async {
        let r = get(hub, token, &format!("/api/rollouts/{id}")).await;
        assert!(
            r["state"] == state || !["halted", "completed", "aborted"].contains(&r["state"].as_str().unwrap()),
            "{r}"
        );
        (r["state"] == state).then_some(r)
    })
    .await
}

/// The rollout's devices by state.
fn by_state(rollout: &Value) -> BTreeMap<String, Vec<String>> {
    let mut states: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in rollout["devices"].as_array().unwrap() {
        states
            .entry(d["state"].as_str().unwrap().to_string())
            .or_default()
            .push(d["device"].as_str().unwrap().to_string());
    }
    states
}

fn stage_of(rollout: &Value) -> BTreeMap<String, u64> {
    rollout["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["device"].as_str().unwrap().to_string(), d["stage"].as_u64().unwrap()))
        .collect()
}

/// The flows label a simulated device runs now.
fn running(device: &SimDevice) -> String {
    device.current_snapshot()["flows"][0]["label"].as_str().unwrap_or_default().to_string()
}

/// The group's audit, oldest first, every page.
async fn group_audit(hub: &Hub, token: &str, group: &str) -> Vec<Value> {
    audit_pages(hub, token, &format!("/api/groups/{group}/audit")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_hold_a_device_once_and_only_owners_change_them() {
    let hub = Hub::start_logging("info");
    let owner = hub.operator("olga", "owner");
    let member = hub.operator("max", "member");
    let viewer = hub.operator("vera", "viewer");
    let (sim, devices) = simulated_fleet(&hub, "gw", 3).await;

    for token in [&member, &viewer] {
        let (code, _) = call(&hub, Method::POST, "/api/groups", token, Some(json!({"name": "dev"}))).await;
        assert_eq!(code, 403);
    }
    group(&hub, &owner, "dev", &devices[..2]).await;
    ok(&hub, &owner, Method::POST, "/api/groups", json!({"name": "prod"}), 201).await;
    ok(&hub, &owner, Method::POST, "/api/groups", json!({"name": "prod"}), 409).await;
    ok(&hub, &owner, Method::POST, "/api/groups", json!({"name": "bad name/.."}), 400).await;
    ok(&hub, &owner, Method::POST, "/api/groups", json!({"name": "x", "extra": 1}), 400).await;
    let (code, _) =
        call(&hub, Method::PUT, "/api/groups/prod/devices", &member, Some(json!({"add": ["gw-000"]}))).await;
    assert_eq!(code, 403);
    ok(&hub, &owner, Method::PUT, "/api/groups/prod/devices", json!({"add": ["nope"]}), 409).await;
    ok(&hub, &owner, Method::PUT, "/api/groups/nope/devices", json!({"add": ["gw-000"]}), 404).await;

    // Moving a device takes it out of its other group.
    let moved = ok(&hub, &owner, Method::PUT, "/api/groups/prod/devices", json!({"add": ["gw-001"]}), 200).await;
    assert_eq!(moved["moved_from"], json!({"gw-001": "dev"}));
    let dev = get(&hub, &viewer, "/api/groups/dev").await;
    assert_eq!(
        dev["devices"].as_array().unwrap().iter().map(|d| d["id"].clone()).collect::<Vec<_>>(),
        [json!("gw-000")]
    );
    assert_eq!(dev["devices"][0]["online"], true);
    let list = get(&hub, &viewer, "/api/groups").await;
    let counts: BTreeMap<String, u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap().to_string(), g["devices"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, BTreeMap::from([("dev".into(), 1), ("prod".into(), 1)]));

    // Only an empty group is deleted.
    let (code, answer) = call(&hub, Method::DELETE, "/api/groups/prod", &owner, None).await;
    assert_eq!((code, answer["error"].as_str()), (409, Some("group_not_empty")));
    ok(&hub, &owner, Method::PUT, "/api/groups/prod/devices", json!({"remove": ["gw-001"]}), 200).await;
    let (code, _) = call(&hub, Method::DELETE, "/api/groups/prod", &owner, None).await;
    assert_eq!(code, 204);
    assert_eq!(call(&hub, Method::GET, "/api/groups/prod", &viewer, None).await.0, 404);

    // An enrollment token may name the group the device joins.
    let (code, out, err) = hub.cli(&["enroll-token", "--device", "gw-new", "--group", "dev"]);
    assert_eq!(code, 0, "{err}");
    let joined = sim.enroll(out.trim()).await.unwrap();
    sim.wait_connected(4, LONG).await.unwrap();
    let dev = get(&hub, &viewer, "/api/groups/dev").await;
    assert!(dev["devices"].as_array().unwrap().iter().any(|d| d["id"] == joined.id()), "{dev}");
    let (code, _, err) = hub.cli(&["enroll-token", "--device", "gw-x", "--group", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("no group named \"nope\""), "{err}");

    // The group's own events, in order, in its audit.
    let kinds: Vec<String> = group_audit(&hub, &viewer, "dev")
        .await
        .iter()
        .filter(|e| e["device"].is_null())
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["group.created", "group.devices_changed", "group.devices_changed"]);
    // The export of the same filter holds the same rows, one JSON object a line.
    let shown = group_audit(&hub, &viewer, "dev").await;
    let export = redtether_testkit::http::client()
        .get(format!("{}/api/audit/export?group=dev&format=jsonl", hub.api()))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let lines: Vec<Value> = export.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), shown.len());
    assert!(
        lines
            .iter()
            .all(|e| e["device"].is_null() || dev["devices"].to_string().contains(e["device"].as_str().unwrap()))
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_moves_stage_by_stage_and_completes() {
    let hub = Hub::start_logging("info");
    let token = hub.operator("max", "owner");
    let (sim, devices) = simulated_fleet(&hub, "site", 41).await;
    group(&hub, &token, "prod", &devices).await;
    let viewer = hub.operator("vera", "viewer");
    let (code, _) =
        call(&hub, Method::POST, "/api/groups/prod/deploy", &viewer, Some(json!({"flows": flows("v2")}))).await;
    assert_eq!(code, 403);
    ok(
        &hub,
        &token,
        Method::POST,
        "/api/groups/prod/deploy",
        json!({"flows": flows("v2"), "plan": {"waves": [50]}}),
        400,
    )
    .await;

    let id = roll_out(&hub, &token, "prod", "v2", json!({"canary": 1, "waves": [10, 50, 100], "wait": 0})).await;
    // One rollout at a time per group.
    let (code, answer) =
        call(&hub, Method::POST, "/api/groups/prod/deploy", &token, Some(json!({"flows": flows("v3")}))).await;
    assert_eq!((code, answer["rollout"].as_str()), (409, Some(id.as_str())));
    let done = wait_rollout(&hub, &token, &id, "completed").await;
    assert_eq!(done["stages"], 4);
    assert_eq!(by_state(&done).keys().collect::<Vec<_>>(), ["applied"]);
    for d in &devices {
        assert_eq!(running(d), "v2", "{}", d.id());
        assert_eq!(d.deployments_received().len(), 1, "{} deployed once", d.id());
    }

    // The trail: every stage's deployments were made after the stage before ended.
    let stages = stage_of(&done);
    let audit = group_audit(&hub, &token, "prod").await;
    let mut stage_now = 0;
    let mut waves = 0;
    for e in &audit {
        match e["kind"].as_str().unwrap() {
            "rollout.wave" => {
                assert_eq!(e["detail"]["wave"], stage_now);
                stage_now += 1;
                waves += 1;
            }
            "deploy.created" if e["detail"]["rollout"] == id.as_str() => {
                assert_eq!(stages[e["device"].as_str().unwrap()], stage_now, "{e}");
            }
            _ => {}
        }
    }
    assert_eq!(waves, 3);
    assert_eq!(audit.iter().filter(|e| e["kind"] == "deploy.created").count(), 41);
    // The group's own last event (a device's status report may be recorded just after it).
    let own = audit.iter().rev().find(|e| e["device"].is_null()).unwrap();
    assert_eq!(own["kind"], "rollout.completed");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_rolls_back_halts_the_rollout_before_anything_else_moves() {
    let hub = Hub::start_logging("info");
    let token = hub.operator("max", "owner");
    let (sim, devices) = simulated_fleet(&hub, "site", 10).await;
    group(&hub, &token, "prod", &devices).await;
    // The canary is the first device, in id order (all are online).
    devices[0].set_behaviour(Behaviour::RollBack);
    let id = roll_out(&hub, &token, "prod", "v2", json!({"canary": 1, "waves": [50, 100], "wait": 0})).await;
    let halted = wait_rollout(&hub, &token, &id, "halted").await;
    assert!(halted["reasons"][0].as_str().unwrap().starts_with("site-000: rolled back by the device"), "{halted}");
    assert_eq!(by_state(&halted)["failed"], ["site-000"]);
    assert_eq!(by_state(&halted)["waiting"].len(), 9);
    for d in &devices[1..] {
        assert!(d.deployments_received().is_empty(), "{} was moved", d.id());
        assert_ne!(running(d), "v2");
    }
    assert_ne!(running(&devices[0]), "v2", "the device rolled itself back");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_in_wave_two_halt_and_roll_back_waves_one_and_two() {
    let hub = Hub::start_logging("info");
    let token = hub.operator("max", "owner");
    let (sim, devices) = simulated_fleet(&hub, "site", 21).await;
    group(&hub, &token, "prod", &devices).await;
    let before: BTreeMap<String, String> = devices.iter().map(|d| (d.id().to_string(), running(d))).collect();
    // Canary site-000; wave 1 = 2 devices (site-001, 002); wave 2 = 6 (site-003..008); wave 3 the rest.
    let plan = json!({"canary": 1, "waves": [10, 40, 100], "wait": 0, "max_failed": 1});
    for d in &devices[3..5] {
        d.set_behaviour(Behaviour::Fail);
    }
    let id = roll_out(&hub, &token, "prod", "v2", plan).await;
    let halted = wait_rollout(&hub, &token, &id, "halted").await;
    let stages = stage_of(&halted);
    assert_eq!((stages["site-002"], stages["site-003"], stages["site-008"], stages["site-009"]), (1, 2, 2, 3));
    let settled = wait_for_async(LONG, "the reverts to finish", || async {
        let r = get(&hub, &token, &format!("/api/rollouts/{id}")).await;
        let states = by_state(&r);
        (!states.contains_key("reverting") && !states.contains_key("deploying")).then_some(states)
    })
    .await;
    assert_eq!(settled["failed"], ["site-003", "site-004"]);
    // The halt comes as soon as the second failure is seen: the rest of wave 2 may have been
    // moved already (then it is reverted) or not yet (then it was never touched).
    let reverted = settled["reverted"].clone();
    for d in &devices {
        let (stage, id) = (stages[d.id()], d.id().to_string());
        let received = d.deployments_received().len();
        match (stage, id.as_str()) {
            (3, _) => assert_eq!(received, 0, "{id}: wave 3 untouched"),
            (_, "site-003" | "site-004") => assert_eq!(received, 1),
            (0 | 1, _) => {
                assert!(reverted.contains(&id), "{id} reverted");
                assert_eq!(received, 2, "{id}: the rollout's deployment, then its revert");
            }
            _ if reverted.contains(&id) => assert!(received >= 1, "{id}: reverted, so sent its revert"),
            _ => {
                assert_eq!(received, 0, "{id}: neither moved nor reverted, so never sent anything");
                assert!(settled["waiting"].contains(&id), "{id}");
            }
        }
        assert_eq!(running(d), before[d.id()], "{id} runs what it ran before");
    }
    assert!(reverted.len() >= 3, "{reverted:?}");
    let audit = group_audit(&hub, &token, "prod").await;
    let halt = audit.iter().find(|e| e["kind"] == "rollout.halted").expect("rollout.halted");
    assert_eq!(halt["detail"]["reverting"].as_array().unwrap().len(), reverted.len(), "{halt}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_killed_mid_wave_resumes_and_deploys_no_device_twice() {
    let mut hub = Hub::start_logging("info");
    let token = hub.operator("max", "owner");
    let (sim, devices) = simulated_fleet(&hub, "site", 30).await;
    group(&hub, &token, "prod", &devices).await;
    // Wave 1 waits 3 s on its devices before wave 2: time enough to kill the hub in between.
    let id = roll_out(&hub, &token, "prod", "v2", json!({"canary": 1, "waves": [30, 100], "wait": "3s"})).await;
    wait_for_async(LONG, "wave 1 to be under way", || async {
        let r = get(&hub, &token, &format!("/api/rollouts/{id}")).await;
        (r["stage"] == 1 && by_state(&r).get("applied").is_some_and(|a| a.len() >= 2)).then_some(())
    })
    .await;
    hub.kill9();
    let moved_before = devices.iter().filter(|d| !d.deployments_received().is_empty()).count();
    assert!(moved_before < 30, "killed mid-rollout");
    hub.spawn();
    sim.wait_connected(30, LONG).await.unwrap();
    let done = wait_rollout(&hub, &token, &id, "completed").await;
    assert_eq!(by_state(&done).keys().collect::<Vec<_>>(), ["applied"]);
    for d in &devices {
        let received = d.deployments_received();
        assert_eq!(received.len(), 1, "{} was deployed {} times: {received:?}", d.id(), received.len());
        assert_eq!(running(d), "v2");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_devices_wait_or_are_skipped_and_rollouts_pause_resume_and_abort() {
    let hub = Hub::start_logging("info");
    let token = hub.operator("max", "member");
    let owner = hub.operator("olga", "owner");
    let (sim, devices) = simulated_fleet(&hub, "site", 8).await;
    group(&hub, &owner, "a", &devices[..4]).await;
    group(&hub, &owner, "b", &devices[4..]).await;
    let offline = &devices[3];
    offline.go_offline();
    wait_for_async(LONG, "the hub to see site-003 offline", || async {
        let d = get(&hub, &token, "/api/devices/site-003").await;
        (d["online"] == false).then_some(())
    })
    .await;

    // Skipped: the rollout completes without it and says so.
    let id =
        roll_out(&hub, &token, "a", "v2", json!({"canary": 1, "waves": [100], "wait": 0, "offline": "skip"})).await;
    let done = wait_rollout(&hub, &token, &id, "completed").await;
    assert_eq!(by_state(&done)["skipped"], ["site-003"]);
    assert!(offline.deployments_received().is_empty());
    // Waited for: it completes once the device is back.
    let id =
        roll_out(&hub, &token, "a", "v3", json!({"canary": 1, "waves": [100], "wait": 0, "offline": "wait"})).await;
    wait_for_async(LONG, "the others to apply v3", || async {
        let r = get(&hub, &token, &format!("/api/rollouts/{id}")).await;
        (by_state(&r).get("applied").map(Vec::len) == Some(3)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = get(&hub, &token, &format!("/api/rollouts/{id}")).await;
    assert_eq!((r["state"].as_str(), by_state(&r)["waiting"].clone()), (Some("running"), vec!["site-003".to_string()]));
    let waiting = r["devices"].as_array().unwrap().iter().find(|d| d["device"] == "site-003").unwrap().clone();
    assert_eq!(waiting["online"], false);
    offline.go_online();
    wait_rollout(&hub, &token, &id, "completed").await;
    assert_eq!(running(offline), "v3");

    // Paused: nothing more moves until resumed. Aborted: nothing more at all.
    let id = roll_out(&hub, &token, "b", "v2", json!({"canary": 1, "waves": [50, 100], "wait": "2s"})).await;
    wait_for_async(LONG, "the canary to apply", || async {
        let r = get(&hub, &token, &format!("/api/rollouts/{id}")).await;
        by_state(&r).contains_key("applied").then_some(())
    })
    .await;
    let viewer = hub.operator("vera", "viewer");
    assert_eq!(call(&hub, Method::POST, &format!("/api/rollouts/{id}/pause"), &viewer, None).await.0, 403);
    let paused = ok(&hub, &token, Method::POST, &format!("/api/rollouts/{id}/pause"), json!({}), 200).await;
    assert_eq!(paused["state"], "paused");
    ok(&hub, &token, Method::POST, &format!("/api/rollouts/{id}/pause"), json!({}), 409).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let moved: Vec<&str> =
        devices[4..].iter().filter(|d| !d.deployments_received().is_empty()).map(|d| d.id()).collect();
    assert_eq!(moved, ["site-004"], "only the canary while paused");
    ok(&hub, &token, Method::POST, &format!("/api/rollouts/{id}/resume"), json!({}), 200).await;
    wait_for_async(LONG, "wave 1 after the resume", || async {
        let r = get(&hub, &token, &format!("/api/rollouts/{id}")).await;
        (by_state(&r).get("applied").map(Vec::len) == Some(3)).then_some(())
    })
    .await;
    let aborted = ok(&hub, &token, Method::POST, &format!("/api/rollouts/{id}/abort"), json!({}), 200).await;
    assert_eq!(aborted["state"], "aborted");
    ok(&hub, &token, Method::POST, &format!("/api/rollouts/{id}/resume"), json!({}), 409).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(devices[7].deployments_received().is_empty(), "wave 2 never started");
    let kinds: Vec<String> = group_audit(&hub, &token, "b")
        .await
        .iter()
        .filter(|e| e["device"].is_null())
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "group.created",
            "group.devices_changed",
            "rollout.started",
            "rollout.paused",
            "rollout.resumed",
            "rollout.wave",
            "rollout.aborted"
        ]
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn group_policy_reaches_every_member_and_a_device_policy_wins() {
    let hub = Hub::start_logging("info");
    let owner = hub.operator("olga", "owner");
    let member = hub.operator("max", "member");
    let (sim, devices) = simulated_fleet(&hub, "gw", 4).await;
    group(&hub, &owner, "plant", &devices[..3]).await;
    // gw-002 has its own policy first.
    let own = ok(&hub, &owner, Method::PUT, "/api/devices/gw-002/policy", json!({"protection": false}), 202).await;
    let (code, _) =
        call(&hub, Method::PUT, "/api/groups/plant/policy", &member, Some(json!({"protection": true}))).await;
    assert_eq!(code, 403);
    ok(&hub, &owner, Method::PUT, "/api/groups/plant/policy", json!({"protection": true, "bogus": 1}), 400).await;
    let set = ok(&hub, &owner, Method::PUT, "/api/groups/plant/policy", json!({"protection": true}), 202).await;
    assert_eq!((set["devices"].as_u64(), set["overridden"].clone()), (Some(2), json!(["gw-002"])));
    for d in &devices[..2] {
        let policy = wait_for_async(LONG, &format!("{} to apply the group's policy", d.id()), || async {
            let p = get(&hub, &owner, &format!("/api/devices/{}/policy", d.id())).await;
            (p["state"] == "applied").then_some(p)
        })
        .await;
        assert_eq!((policy["group"].as_str(), policy["desired"]["protection"].as_bool()), (Some("plant"), Some(true)));
        assert_eq!(d.policies_applied().last(), policy["number"].as_u64().as_ref());
    }
    let theirs = get(&hub, &owner, "/api/devices/gw-002/policy").await;
    assert_eq!(
        (theirs["number"].clone(), theirs["group"].clone(), theirs["desired"]["protection"].clone()),
        (own["number"].clone(), Value::Null, json!(false))
    );
    assert_eq!(get(&hub, &owner, "/api/groups/plant").await["devices"][2]["policy_from"], "device");
    // A device joining gets the group's at once; dropping its own gives it the group's.
    ok(&hub, &owner, Method::PUT, "/api/groups/plant/devices", json!({"add": ["gw-003"]}), 200).await;
    assert_eq!(get(&hub, &owner, "/api/devices/gw-003/policy").await["group"], "plant");
    let dropped = ok(&hub, &owner, Method::DELETE, "/api/devices/gw-002/policy", json!({}), 202).await;
    assert_eq!(dropped["group"], "plant");
    wait_for_async(LONG, "gw-002 to take the group's policy", || async {
        let p = get(&hub, &owner, "/api/devices/gw-002/policy").await;
        (p["state"] == "applied" && p["desired"]["protection"] == true).then_some(())
    })
    .await;
    // A device without a group has nothing to fall back on.
    ok(&hub, &owner, Method::PUT, "/api/groups/plant/devices", json!({"remove": ["gw-003"]}), 200).await;
    ok(&hub, &owner, Method::PUT, "/api/devices/gw-003/policy", json!({"protection": false}), 202).await;
    ok(&hub, &owner, Method::DELETE, "/api/devices/gw-003/policy", json!({}), 409).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_from_a_dev_device_is_promoted_through_the_pipeline() {
    let hub = Hub::start_logging("info");
    let owner = hub.operator("olga", "owner");
    let member = hub.operator("max", "member");
    let (sim, devices) = simulated_fleet(&hub, "gw", 5).await;
    group(&hub, &owner, "dev", &devices[..1]).await;
    group(&hub, &owner, "test", &devices[1..2]).await;
    group(&hub, &owner, "prod", &devices[2..]).await;
    let (code, _) =
        call(&hub, Method::POST, "/api/pipelines", &member, Some(json!({"name": "main", "stages": ["dev", "prod"]})))
            .await;
    assert_eq!(code, 403);
    ok(&hub, &owner, Method::POST, "/api/pipelines", json!({"name": "main", "stages": ["dev", "nope"]}), 404).await;
    let fast = json!({"canary": 1, "waves": [100], "wait": 0});
    let made = ok(
        &hub,
        &owner,
        Method::POST,
        "/api/pipelines",
        json!({"name": "main", "stages": ["dev", {"group": "test", "plan": fast}, {"group": "prod", "plan": fast}]}),
        201,
    )
    .await;
    assert_eq!(made["stages"][0]["plan"]["wait"], "60s", "{made}");

    // Work on the dev device, then take its snapshot.
    let dev = &devices[0];
    let body = json!({ "flows": flows("feature") });
    let d = ok(&hub, &member, Method::POST, "/api/devices/gw-000/deploy", body, 202).await;
    wait_for_async(LONG, "the dev deployment", || async {
        let r = get(&hub, &member, &format!("/api/devices/gw-000/deployments/{}", d["id"].as_str().unwrap())).await;
        (r["state"] == "applied").then_some(())
    })
    .await;
    assert_eq!(running(dev), "feature");
    let snapshot = ok(&hub, &member, Method::POST, "/api/devices/gw-000/snapshot", json!({}), 201).await;
    let sid = snapshot["id"].as_str().unwrap();

    // Not from test: refused. From dev: to test, then from test (where it completed) to prod.
    ok(&hub, &member, Method::POST, "/api/pipelines/main/promote", json!({"from": "test", "snapshot": sid}), 409).await;
    let promoted =
        ok(&hub, &member, Method::POST, "/api/pipelines/main/promote", json!({"from": "dev", "snapshot": sid}), 202)
            .await;
    assert_eq!(promoted["to"], "test");
    wait_rollout(&hub, &member, promoted["rollout"].as_str().unwrap(), "completed").await;
    let promoted =
        ok(&hub, &member, Method::POST, "/api/pipelines/main/promote", json!({"from": "test", "snapshot": sid}), 202)
            .await;
    assert_eq!(promoted["to"], "prod");
    let done = wait_rollout(&hub, &member, promoted["rollout"].as_str().unwrap(), "completed").await;
    assert_eq!(done["pipeline"], "main");
    for d in &devices {
        assert_eq!(running(d), "feature", "{}", d.id());
    }
    ok(&hub, &member, Method::POST, "/api/pipelines/main/promote", json!({"from": "prod", "snapshot": sid}), 409).await;
    let audit = get(&hub, &owner, "/api/audit?kind=pipeline.promoted").await;
    assert_eq!(audit["events"].as_array().unwrap().len(), 2, "{audit}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_narrowed_on_a_group_holds_on_its_devices_rollouts_and_promotions() {
    let hub = Hub::start_logging("info");
    let owner = hub.operator("olga", "owner");
    let max = hub.operator("max", "member");
    let (sim, devices) = simulated_fleet(&hub, "gw", 4).await;
    group(&hub, &owner, "dev", &devices[..2]).await;
    group(&hub, &owner, "prod", &devices[2..]).await;
    let roles = ok(&hub, &owner, Method::PUT, "/api/operators/max/groups", json!({"prod": "viewer"}), 200).await;
    assert_eq!(roles["group_roles"], json!({"prod": "viewer"}));
    ok(&hub, &owner, Method::PUT, "/api/operators/max/groups", json!({"nope": "viewer"}), 404).await;
    ok(&hub, &owner, Method::PUT, "/api/operators/max/groups", json!({"prod": "admin"}), 400).await;
    assert_eq!(call(&hub, Method::PUT, "/api/operators/olga/groups", &owner, Some(json!({}))).await.0, 409);
    assert_eq!(call(&hub, Method::PUT, "/api/operators/olga/groups", &max, Some(json!({}))).await.0, 403);

    // A member on dev, a viewer on prod: deploys and rolls out to dev only, reads both.
    let body = json!({"flows": flows("v1")});
    ok(&hub, &max, Method::POST, "/api/devices/gw-000/deploy", body.clone(), 202).await;
    ok(&hub, &max, Method::POST, "/api/devices/gw-002/deploy", body.clone(), 403).await;
    ok(&hub, &max, Method::POST, "/api/devices/gw-002/restart", json!({}), 403).await;
    get(&hub, &max, "/api/devices/gw-002").await;
    get(&hub, &max, "/api/groups/prod").await;
    let plan = json!({"canary": 1, "waves": [100], "wait": 0});
    ok(&hub, &max, Method::POST, "/api/groups/prod/deploy", json!({"flows": flows("v2"), "plan": plan}), 403).await;
    let id = roll_out(&hub, &owner, "prod", "v2", json!({"canary": 1, "waves": [100], "wait": "1h"})).await;
    ok(&hub, &max, Method::POST, &format!("/api/rollouts/{id}/abort"), json!({}), 403).await;
    ok(&hub, &owner, Method::POST, &format!("/api/rollouts/{id}/abort"), json!({}), 200).await;
    let dev_rollout = roll_out(&hub, &max, "dev", "v3", plan.clone()).await;
    wait_rollout(&hub, &max, &dev_rollout, "completed").await;
    // Promoting into prod is a change to prod.
    let stages = json!({"name": "p", "stages": ["dev", {"group": "prod", "plan": plan}]});
    ok(&hub, &owner, Method::POST, "/api/pipelines", stages, 201).await;
    let snapshot =
        get(&hub, &max, &format!("/api/rollouts/{dev_rollout}")).await["snapshot"].as_str().unwrap().to_string();
    ok(&hub, &max, Method::POST, "/api/pipelines/p/promote", json!({"from": "dev", "snapshot": snapshot}), 403).await;
    // Narrowing never raises: a viewer with "owner" on dev is still a viewer there.
    let vera = hub.operator("vera", "viewer");
    ok(&hub, &owner, Method::PUT, "/api/operators/vera/groups", json!({"dev": "owner"}), 200).await;
    ok(&hub, &vera, Method::POST, "/api/devices/gw-000/deploy", body, 403).await;
    // Cleared, max is a member on prod again.
    ok(&hub, &owner, Method::PUT, "/api/operators/max/groups", json!({}), 200).await;
    ok(&hub, &max, Method::POST, "/api/pipelines/p/promote", json!({"from": "dev", "snapshot": snapshot}), 202).await;
    sim.shutdown().await;
}
