//! Observability end to end: the agent's and the hub's `/metrics` scraped and checked by
//! Prometheus's own parser (`promtool check metrics`), their values moving with the traffic the
//! test makes; a real agent's resource figures arriving at the hub; and the hub's history of
//! them staying bounded under ten thousand reports from simulated devices.

use redtether_testkit as common;

use common::agent::{Agent, default_users, fixture_node_red};
use common::http::{Cred, echo_flow, with};
use common::hub::{Hub, call, enroll, wait_online};
use common::promtool::{check, sum, value};
use std::time::Duration;

async fn scrape(url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = common::http::client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Scrapes `url`, checks the text with promtool, returns it.
async fn checked(url: &str, token: Option<&str>) -> String {
    let (status, content_type, text) = scrape(url, token).await;
    assert_eq!(status, 200, "{url}: {text}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    if let Err(said) = check(&text) {
        panic!("promtool refused the exposition of {url}:\n{said}\n---\n{text}");
    }
    text
}

fn agent_with_metrics() -> Agent {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let tables =
        format!("[gate.http_auth]\nmode = \"none\"\n{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n", default_users());
    Agent::start_with_flows(&node_red, "", Some(&tables), &echo_flow())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_metrics_parse_and_move_with_the_gates_traffic() {
    let agent = agent_with_metrics();
    let metrics = agent.status()["metrics"].as_str().expect("status names the metrics address").to_string();
    assert_ne!(metrics, agent.status()["gate"]["listen"].as_str().unwrap(), "never the gate's port");
    let url = format!("http://{metrics}/metrics");
    let before = checked(&url, None).await;
    assert_eq!(value(&before, "redtether_node_red_state", &[("state", "running")]), Some(1.0), "{before}");
    assert_eq!(value(&before, "redtether_node_red_state", &[("state", "crash_loop")]), Some(0.0));
    assert!(value(&before, "redtether_node_red_uptime_seconds", &[]).unwrap() > 0.0);
    assert_eq!(value(&before, "redtether_tunnel_state", &[("state", "offline")]), Some(1.0), "not enrolled");
    assert!(value(&before, "redtether_journal_events_total", &[]).unwrap() >= 1.0, "agent.started at least");

    let gate = agent.gate_url();
    let client = common::http::client();
    let node_ok = |b: &str| {
        value(b, "redtether_gate_requests_total", &[("space", "node"), ("via", "network"), ("status", "200")])
    };
    for _ in 0..5 {
        let r = client.get(format!("{gate}/api/data")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..3 {
        let r = with(client.get(format!("{gate}/device-editor/flows")), Cred::Basic("owner", "wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r =
        with(client.get(format!("{gate}/device-editor/flows")), Cred::Basic("dash", "dash-pw")).send().await.unwrap();
    assert_eq!(r.status(), 403);

    let after = checked(&url, None).await;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels).unwrap_or(0.0) - value(&before, name, labels).unwrap_or(0.0)
    };
    assert_eq!(node_ok(&after).unwrap_or(0.0) - node_ok(&before).unwrap_or(0.0), 5.0, "{after}");
    assert_eq!(grew("redtether_gate_requests_total", &[("space", "editor"), ("status", "401")]), 3.0);
    assert_eq!(
        sum(&after, "redtether_gate_auth_failures_total") - sum(&before, "redtether_gate_auth_failures_total"),
        3.0
    );
    assert_eq!(grew("redtether_gate_denials_total", &[("reason", "role")]), 1.0);
    assert_eq!(grew("redtether_gate_upstream_duration_seconds_count", &[("space", "node")]), 5.0);
    assert!(grew("redtether_journal_events_total", &[]) >= 4.0, "each refusal left an audit event");

    // Only /metrics is served there, and only read.
    let (status, _, _) = scrape(&format!("http://{metrics}/flows"), None).await;
    assert_eq!(status, 404);
    let post = client.post(&url).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hubs_metrics_parse_count_devices_and_requests_and_answer_only_operators() {
    let hub = Hub::start_with("debug", "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let scraper =
        format!("http://{}/metrics", hub.status()["metrics_listen"].as_str().expect("the address is in the status"));
    let viewer = hub.operator("watcher", "viewer");
    let dashboard = hub.operator("wall", "dashboard");
    let empty = checked(&scraper, None).await;
    assert_eq!(value(&empty, "redtether_hub_devices", &[]), Some(0.0), "{empty}");

    // On the operator listener: operators only, dashboard accounts not.
    let on_api = format!("{}/metrics", hub.api());
    assert_eq!(scrape(&on_api, None).await.0, 401);
    assert_eq!(scrape(&on_api, Some(&dashboard)).await.0, 403);
    checked(&on_api, Some(&viewer)).await;

    // A real device: enrolled, online, delivering its journal.
    let agent = common::hub::online_agent(&hub, "press-1", "");
    for _ in 0..4 {
        let (code, _) = call(&hub, reqwest::Method::GET, "/api/devices/press-1", &viewer, None).await;
        assert_eq!(code, 200);
    }
    let (code, _) = call(&hub, reqwest::Method::GET, "/api/devices/nobody", &viewer, None).await;
    assert_eq!(code, 404);
    let text = common::wait_for_async(Duration::from_secs(30), "the device's journal at the hub", || async {
        let text = checked(&scraper, None).await;
        (value(&text, "redtether_hub_audit_events_ingested_total", &[]).unwrap_or(0.0) > 0.0).then_some(text)
    })
    .await;
    assert_eq!(value(&text, "redtether_hub_devices", &[]), Some(1.0));
    assert_eq!(value(&text, "redtether_hub_devices_online", &[]), Some(1.0));
    assert_eq!(value(&text, "redtether_hub_handshakes_total", &[("kind", "enroll")]), Some(1.0));
    assert!(value(&text, "redtether_hub_handshakes_total", &[("kind", "tunnel")]).unwrap() >= 1.0);
    let route = [("route", "/api/devices/{id}"), ("method", "GET")];
    assert_eq!(value(&text, "redtether_hub_api_requests_total", &[route[0], route[1], ("status", "200")]), Some(4.0));
    assert_eq!(value(&text, "redtether_hub_api_requests_total", &[route[0], route[1], ("status", "404")]), Some(1.0));
    assert_eq!(value(&text, "redtether_hub_api_request_duration_seconds_count", &[route[0]]), Some(5.0));
    assert!(!text.contains("press-1"), "device ids never make series");
    assert!(value(&text, "redtether_hub_store_duration_seconds_count", &[("op", "ingest_audit")]).unwrap() >= 1.0);

    // Revoked, the device's next handshakes are refused, and counted.
    let (code, _, err) = hub.cli(&["device", "revoke", "press-1"]);
    assert_eq!(code, 0, "{err}");
    common::wait_for_async(Duration::from_secs(60), "a refused handshake", || async {
        let text = checked(&scraper, None).await;
        (sum(&text, "redtether_hub_handshake_refusals_total") >= 1.0
            && value(&text, "redtether_hub_devices_online", &[]) == Some(0.0))
        .then_some(())
    })
    .await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_agents_resource_figures_arrive_at_the_hub() {
    let hub = Hub::start();
    let token = hub.operator("ops", "viewer");
    let agent = agent_with_metrics();
    let out = enroll(&agent.config, &hub, "mixer-2");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);
    // Traffic while it reports: Node-RED has something to do.
    let gate = agent.gate_url();
    let client = common::http::client();
    for _ in 0..20 {
        client.get(format!("{gate}/api/data")).send().await.unwrap();
    }
    // The first report carries no CPU figure (one reading makes no rate); the next ones do.
    let sample = common::wait_for_async(Duration::from_secs(40), "a sample with CPU figures", || async {
        let (code, body) = call(&hub, reqwest::Method::GET, "/api/devices/mixer-2/metrics?since=0", &token, None).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["resolution_secs"], 60);
        let samples = body["samples"].as_array().unwrap().clone();
        samples.into_iter().rev().find(|s| s["node_red_cpu_percent"].is_number() && s["agent_cpu_percent"].is_number())
    })
    .await;
    let node_red_pid = agent.status()["node_red"]["pid"].as_u64().unwrap();
    assert!(node_red_pid > 0);
    assert!(sample["node_red_rss_bytes"].as_u64().unwrap() > 10 * 1024 * 1024, "Node-RED's RSS: {sample}");
    assert!(sample["agent_rss_bytes"].as_u64().unwrap() > 1024 * 1024, "{sample}");
    assert!(sample["event_loop_lag_ms"].as_f64().unwrap() >= 0.0, "{sample}");
    assert!(sample["disk_free_bytes"].as_u64().unwrap() > 0);
    assert!(sample["uptime_secs"].as_u64().unwrap() > 0);
    assert_eq!(sample["load_average"].as_array().map(Vec::len), Some(3));
    assert!(sample["reports"].as_u64().unwrap() >= 1);
    // The device's own record has the newest figures too.
    let (_, device) = call(&hub, reqwest::Method::GET, "/api/devices/mixer-2", &token, None).await;
    assert!(device["resources"]["node_red_rss_bytes"].is_number(), "{device}");

    // Bad queries are refused, unknown devices are not found.
    let (code, _) = call(&hub, reqwest::Method::GET, "/api/devices/mixer-2/metrics?since=soon", &token, None).await;
    assert_eq!(code, 400);
    let (code, _) = call(&hub, reqwest::Method::GET, "/api/devices/mixer-2/metrics?until=1", &token, None).await;
    assert_eq!(code, 400);
    let (code, _) = call(&hub, reqwest::Method::GET, "/api/devices/ghost/metrics", &token, None).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_reports_fold_into_a_bounded_history() {
    let hub = Hub::start_with("info", "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let scraper = format!("http://{}/metrics", hub.status()["metrics_listen"].as_str().unwrap());
    let token = hub.operator("ops", "viewer");
    let mut config = common::simulator::SimConfig::new(&hub.addr(), &hub.fingerprint()).await.unwrap();
    // Ten devices reporting every 10 ms: ten thousand reports in a few seconds.
    config.status_every = Duration::from_millis(10);
    config.resources = true;
    let sim = common::simulator::Simulator::new(config).unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("sensor-{i}")).collect();
    let hub_ref = &hub;
    sim.enroll_many(names.clone(), |name| async move { hub_ref.enroll_token_async(&name).await }).await.unwrap();
    sim.wait_connected(10, Duration::from_secs(60)).await.unwrap();

    let reports = || async {
        let mut total = 0;
        for name in &names {
            let (_, body) =
                call(&hub, reqwest::Method::GET, &format!("/api/devices/{name}/metrics?since=0"), &token, None).await;
            let samples = body["samples"].as_array().unwrap();
            // A point a minute: ten thousand reports in seconds make one or two per device.
            assert!(samples.len() <= 3, "{name}: {} points", samples.len());
            total += samples.iter().map(|s| s["reports"].as_u64().unwrap()).sum::<u64>();
        }
        total
    };
    common::wait_for_async(Duration::from_secs(120), "ten thousand reports", || async {
        (reports().await >= 10_000).then_some(())
    })
    .await;
    let text = checked(&scraper, None).await;
    let points = value(&text, "redtether_hub_resource_history_points", &[]).unwrap();
    assert!((10.0..=30.0).contains(&points), "{points} points for 10 devices");
    sim.shutdown().await;
}
