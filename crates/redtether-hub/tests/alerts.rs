//! Alerts end to end: a real hub posts to webhook receivers served here on loopback (hyper on
//! port 0, recording every request and answering as each test scripts). Devices are a real
//! agent where the alert comes from what the agent does (Node-RED crash-looping, a policy
//! refused) and the test kit's simulator where the hub's view is enough (offline, a rollout
//! rolled back and halted). The hub's side of each delivery is read from its audit trail.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use redtether_testkit::agent::{Agent, USERS, default_users, hash_of};
use redtether_testkit::hub::{Hub, call, enroll, simulated_fleet, wait_online};
use redtether_testkit::simulator::Behaviour;
use redtether_testkit::{wait_for, wait_for_async};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HUB: &str = env!("CARGO_BIN_EXE_redtether-hub");
const LONG: Duration = Duration::from_secs(60);
/// Three of the hub's device scans (every 2 s): long enough for a repeated alert to show.
const QUIET: Duration = Duration::from_secs(6);

/// A webhook receiver: every request's body, and the status it was answered with.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(u16, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Answers the statuses of `script` in turn, then 200. The URL carries a token, which the
    /// hub must never show.
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?token=s3cret-token", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let (recorded, answers) = (Arc::clone(&got), script);
        let task = tokio::spawn(async move {
            let connections = tokio_util::task::TaskTracker::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { break };
                let (recorded, answers) = (Arc::clone(&recorded), Arc::clone(&answers));
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (recorded, answers) = (Arc::clone(&recorded), Arc::clone(&answers));
                        async move {
                            let ok_path =
                                req.uri().path() == "/hook" && req.uri().query() == Some("token=s3cret-token");
                            let typed = req.headers().get("content-type").is_some_and(|v| v == "application/json");
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            assert!(ok_path && typed, "posted to the configured URL as JSON");
                            let status = answers.lock().unwrap().pop_front().unwrap_or(200);
                            recorded.lock().unwrap().push((status, value));
                            Ok::<_, Infallible>(
                                Response::builder().status(status).body(Full::new(Bytes::new())).unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Receiver { url, got, task }
    }

    /// The bodies answered 2xx.
    fn delivered(&self) -> Vec<Value> {
        self.got.lock().unwrap().iter().filter(|(s, _)| *s < 300).map(|(_, b)| b.clone()).collect()
    }

    fn requests(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn of(&self, alert: &str, status: &str) -> Vec<Value> {
        self.delivered().into_iter().filter(|b| b["alert"] == alert && b["status"] == status).collect()
    }

    async fn wait(&self, alert: &str, status: &str) -> Value {
        wait_for_async(LONG, &format!("a {status} {alert} alert"), || async {
            self.of(alert, status).into_iter().next()
        })
        .await
    }
}

fn webhook(receiver: &Receiver, name: &str, events: Option<&[&str]>) -> String {
    let events = events.map(|e| format!("events = {e:?}\n")).unwrap_or_default();
    format!("[[alerts.webhook]]\nname = {name:?}\nurl = {:?}\ntimeout = \"3s\"\n{events}", receiver.url)
}

/// The hub's alert.sent / alert.failed events.
fn deliveries(hub: &Hub) -> Vec<Value> {
    hub.audit().into_iter().filter(|e| e["kind"].as_str().unwrap().starts_with("alert.")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_node_red_alerts_once_and_a_refused_policy_once() {
    let receiver = Receiver::start(&[]).await;
    let hub = Hub::start_with("info", &format!("[alerts]\n{}", webhook(&receiver, "ops", None)));
    let op = hub.operator("ops", "owner");
    // Node-RED exits at start every time; the agent refuses policies from the hub.
    let node_red = "command = [\"node\", \"-e\", \"process.exit(3)\", \"--\"]\nrestart_backoff_min = \"100ms\"\n\
                    restart_backoff_max = \"1s\"\ncrash_loop_restarts = 2\ncrash_loop_window = \"1m\"";
    let tables = format!("[gate.http_auth]\nmode = \"none\"\n{}[policy]\nmanaged = false\n", default_users());
    let agent = Agent::start_full(node_red, "", Some(&tables), &[]);
    let out = enroll(&agent.config, &hub, "press-1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);

    let alert = receiver.wait("node_red.crash_loop", "firing").await;
    assert_eq!(
        (alert["device"].as_str(), alert["key"].as_str()),
        (Some("press-1"), Some("node_red.crash_loop:press-1"))
    );
    assert!(alert["detail"]["last_exit"].as_str().unwrap().contains("code 3"), "{alert}");
    assert_eq!(alert["version"], 1);
    // Node-RED goes on being retried (and failing), each retry a status the hub keeps: still
    // one alert.
    let restarts = |a: &Agent| a.status()["node_red"]["restarts"].as_u64().unwrap();
    let at_alert = restarts(&agent);
    wait_for(LONG, "three more Node-RED restarts", || (restarts(&agent) >= at_alert + 3).then_some(()));
    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.of("node_red.crash_loop", "firing").len(), 1, "{:?}", receiver.delivered());
    assert!(receiver.of("node_red.crash_loop", "resolved").is_empty());

    let users: Vec<Value> = USERS
        .iter()
        .map(|(name, password, role)| json!({"name": name, "password_hash": hash_of(password), "role": role}))
        .collect();
    let doc = json!({ "protection": true, "http_auth": { "mode": "users" }, "users": users });
    let (code, answer) = call(&hub, Method::PUT, "/api/devices/press-1/policy", &op, Some(doc)).await;
    assert_eq!(code, 202, "{answer}");
    let refused = receiver.wait("policy.refused", "firing").await;
    assert_eq!(
        (refused["device"].as_str(), refused["detail"]["reason"].as_str()),
        (Some("press-1"), Some("locally_managed"))
    );
    assert_eq!(refused["detail"]["number"], answer["number"]);
    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.of("policy.refused", "firing").len(), 1);

    let sent: Vec<Value> = deliveries(&hub).into_iter().filter(|e| e["kind"] == "alert.sent").collect();
    let alerts: Vec<&str> = sent.iter().map(|e| e["detail"]["alert"].as_str().unwrap()).collect();
    assert_eq!(alerts, ["node_red.crash_loop", "policy.refused"], "{sent:?}");
    assert!(sent.iter().all(|e| e["target"] == "press-1" && e["detail"]["webhook"] == "ops"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_device_alerts_once_then_resolves_once_and_filters_hold() {
    let offline = Receiver::start(&[]).await;
    let rollouts = Receiver::start(&[]).await;
    let config = format!(
        "[alerts]\noffline_after = \"2s\"\n{}{}",
        webhook(&offline, "offline", Some(&["device.offline"])),
        webhook(&rollouts, "rollouts", Some(&["rollout.halted"]))
    );
    let hub = Hub::start_with("info", &config);
    let (sim, devices) = simulated_fleet(&hub, "site", 1).await;
    let device = &devices[0];
    // Connected for longer than offline_after: nothing.
    tokio::time::sleep(QUIET).await;
    assert_eq!(offline.requests(), 0, "{:?}", offline.delivered());

    device.go_offline();
    let fired = offline.wait("device.offline", "firing").await;
    assert_eq!((fired["device"].as_str(), fired["key"].as_str()), (Some("site-000"), Some("device.offline:site-000")));
    tokio::time::sleep(QUIET).await;
    assert_eq!(offline.of("device.offline", "firing").len(), 1, "once while it stays away");

    device.go_online();
    let resolved = offline.wait("device.offline", "resolved").await;
    assert_eq!(resolved["key"], fired["key"]);
    assert_ne!(resolved["id"], fired["id"]);
    tokio::time::sleep(QUIET).await;
    assert_eq!(offline.requests(), 2, "one firing, one resolved, nothing more: {:?}", offline.delivered());
    assert_eq!(rollouts.requests(), 0, "its events filter lists no device.offline");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_canary_alerts_its_roll_back_and_the_halt_once_each() {
    let receiver = Receiver::start(&[]).await;
    let hub = Hub::start_with("info", &format!("[alerts]\n{}", webhook(&receiver, "ops", None)));
    let token = hub.operator("max", "owner");
    let (sim, devices) = simulated_fleet(&hub, "site", 2).await;
    let (code, answer) =
        call(&hub, Method::POST, "/api/groups", &token, Some(json!({"name": "prod", "description": "prod"}))).await;
    assert_eq!(code, 201, "{answer}");
    let ids: Vec<&str> = devices.iter().map(|d| d.id()).collect();
    let (code, answer) = call(&hub, Method::PUT, "/api/groups/prod/devices", &token, Some(json!({"add": ids}))).await;
    assert_eq!(code, 200, "{answer}");
    devices[0].set_behaviour(Behaviour::RollBack);
    let flows = json!([{ "id": "t1", "type": "tab", "label": "v2" }]);
    let plan = json!({"canary": 1, "waves": [100], "wait": 0, "on_halt": "hold"});
    let (code, answer) =
        call(&hub, Method::POST, "/api/groups/prod/deploy", &token, Some(json!({"flows": flows, "plan": plan}))).await;
    assert_eq!(code, 202, "{answer}");
    let rollout = answer["rollout"].as_str().unwrap().to_string();

    let rolled = receiver.wait("deployment.rolled_back", "firing").await;
    assert_eq!((rolled["device"].as_str(), rolled["group"].as_str()), (Some("site-000"), Some("prod")));
    let halted = receiver.wait("rollout.halted", "firing").await;
    assert_eq!((halted["device"].clone(), halted["group"].as_str()), (Value::Null, Some("prod")));
    assert_eq!(halted["detail"]["rollout"].as_str(), Some(rollout.as_str()));
    wait_for(LONG, "both deliveries recorded", || (deliveries(&hub).len() >= 2).then_some(()));
    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.of("deployment.rolled_back", "firing").len(), 1);
    assert_eq!(receiver.of("rollout.halted", "firing").len(), 1);
    let targets: Vec<String> = deliveries(&hub).iter().map(|e| e["target"].as_str().unwrap().to_string()).collect();
    assert_eq!(targets, ["site-000", "group:prod"]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_are_retried_recorded_sent_or_failed_and_never_show_the_url() {
    // A hub audit gap: a line of the hub's trail changed while it was stopped.
    let flaky = Receiver::start(&[500, 503]).await;
    let dead = Receiver::start(&[500; 10]).await;
    let offline_only = Receiver::start(&[]).await;
    let config = format!(
        "[alerts]\n{}{}{}",
        webhook(&flaky, "flaky", None),
        webhook(&dead, "dead", Some(&["hub.audit_gap"])),
        webhook(&offline_only, "offline-only", Some(&["device.offline"]))
    );
    let mut hub = Hub::start_with("info", &config);
    hub.operator("ops", "owner");
    tokio::time::sleep(QUIET).await;
    assert_eq!(flaky.requests() + dead.requests(), 0, "an intact trail: no gap");
    hub.kill9();
    let file = hub.state_dir().join("audit.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"role\":\"owner\""), "{text}");
    std::fs::write(&file, text.replacen("\"role\":\"owner\"", "\"role\":\"viewer\"", 1)).unwrap();
    hub.spawn();

    let gap = flaky.wait("hub.audit_gap", "firing").await;
    assert_eq!((gap["detail"]["cause"].as_str(), gap["detail"]["seq"].as_u64()), (Some("chain_broken"), Some(1)));
    let attempts: Vec<u16> = flaky.got.lock().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(attempts, [500, 503, 200]);
    let ids: Vec<Value> = flaky.got.lock().unwrap().iter().map(|(_, b)| b["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one notification, retried: {ids:?}");

    let failed = wait_for(LONG, "alert.failed for the dead webhook", || {
        deliveries(&hub).into_iter().find(|e| e["kind"] == "alert.failed")
    });
    assert_eq!(dead.requests(), 5, "five attempts, then given up");
    let sent = deliveries(&hub).into_iter().find(|e| e["kind"] == "alert.sent").expect("alert.sent");
    assert_eq!((sent["target"].as_str(), sent["detail"]["webhook"].as_str()), (Some("hub"), Some("flaky")));
    assert_eq!((sent["detail"]["attempts"].as_u64(), sent["detail"]["http_status"].as_u64()), (Some(3), Some(200)));
    assert_eq!(
        (sent["detail"]["alert"].as_str(), sent["detail"]["id"].clone()),
        (Some("hub.audit_gap"), gap["id"].clone())
    );
    assert_eq!((failed["detail"]["webhook"].as_str(), failed["detail"]["attempts"].as_u64()), (Some("dead"), Some(5)));
    assert!(failed["detail"]["error"].as_str().unwrap().contains("500"), "{failed}");
    assert_eq!(failed["detail"]["origin"].as_str(), Some(dead.url.split("/hook").next().unwrap()));
    assert_eq!(offline_only.requests(), 0, "its events filter lists no hub.audit_gap");
    let trail = String::from_utf8(std::fs::read(&file).unwrap()).unwrap();
    assert!(!trail.contains("s3cret") && !hub.log().contains("s3cret"), "the webhooks' token is never written");
}

#[test]
fn alert_config_errors_stop_the_hub_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    let state = dir.path().join("state").display().to_string();
    let cases = [
        ("[[alerts.webhook]]\nurl = \"ftp://user:pw-secret@example.com/\"\n", "`alerts.webhook.url`"),
        ("[[alerts.webhook]]\nurl = \"https://example.com/\"\nevents = [\"device.gone\"]\n", "`alerts.webhook.events`"),
        ("[alerts]\noffline_after = \"never\"\n", "`alerts.offline_after`"),
        ("[alerts]\nwebhooks = []\n", "`alerts.webhooks`"),
    ];
    for (text, key) in cases {
        std::fs::write(
            &config,
            format!("state_dir = {state:?}\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n{text}"),
        )
        .unwrap();
        let out = Command::new(HUB).args(["run", "--config"]).arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text}: {stderr}");
        assert!(stderr.contains(key) && stderr.contains("hub.toml"), "{text}: {stderr}");
        assert!(!stderr.contains("pw-secret"), "{stderr}");
    }
}
