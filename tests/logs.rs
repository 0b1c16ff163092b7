//! Node-RED's logs on the platform, end to end with a real hub, agent, Node-RED and QUIC:
//! fetching the agent's buffer, following it as server-sent events (lines within a second of
//! Node-RED writing them, across a tunnel reconnect without repeats or gaps, the agent's stream
//! ending when the client leaves), who may read them, and that the agent's own secrets are not
//! in them.

use redtether_testkit as common;

use common::hub::{Hub, call, online_agent, tunnel_state};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// An inject node firing every second with the time in ms, wired to a debug node that prints to
/// Node-RED's log (`console: true`). (Nodes without `x`/`y` would be taken for config nodes.)
fn ticking_flow() -> Value {
    json!([
        { "id": "logs-tab", "type": "tab", "label": "ticks" },
        { "id": "tick", "type": "inject", "z": "logs-tab", "x": 100, "y": 80, "name": "every second", "props": [{ "p": "payload" }],
          "repeat": "1", "once": true, "onceDelay": "0.1", "topic": "", "payload": "", "payloadType": "date",
          "wires": [["tock"]] },
        { "id": "tock", "type": "debug", "z": "logs-tab", "x": 300, "y": 80, "name": "tick-debug", "active": true,
          "tosidebar": false, "console": true, "tostatus": false, "complete": "payload",
          "targetType": "msg", "wires": [] }
    ])
}

/// Deploys `flows` through the hub's remote editor as `token`.
async fn deploy(hub: &Hub, device: &str, token: &str, flows: Value) {
    let r = common::http::client()
        .post(format!("{}/devices/{device}/editor/flows", hub.api()))
        .bearer_auth(token)
        .header("node-red-api-version", "v2")
        .header("node-red-deployment-type", "full")
        .json(&json!({ "flows": flows }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// One server-sent event.
#[derive(Debug, Default)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads events from a streamed response.
struct Sse {
    response: reqwest::Response,
    buf: String,
}

impl Sse {
    /// The next event (comments skipped); `None` if the stream ends or nothing comes in `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = Event::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        e.id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        e.event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        e.data.push_str(v);
                    }
                }
                if e.id.is_some() || e.event.is_some() || !e.data.is_empty() {
                    return Some(e);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?.ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event, which must be a line: its JSON.
    async fn next_line(&mut self, wait: Duration) -> Value {
        let e = self.next(wait).await.expect("a line event");
        assert!(e.event.is_none(), "an unexpected event: {e:?}");
        let line: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(e.id.as_deref(), Some(line["seq"].to_string().as_str()), "the id is the seq");
        line
    }
}

async fn follow(hub: &Hub, device: &str, token: &str, query: &str) -> Sse {
    let response = common::http::client()
        .get(format!("{}/api/devices/{device}/logs?follow=true{query}", hub.api()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Sse { response, buf: String::new() }
}

/// The inject node's timestamp in a debug line.
fn tick_of(line: &Value) -> Option<u64> {
    let text = line["text"].as_str()?;
    if !text.contains("[debug:tick-debug]") {
        return None;
    }
    text.rsplit(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 13)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_buffer_is_fetched_by_members_only_and_holds_no_agent_secret() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-l", "");
    let member = hub.operator("mia", "member");
    let viewer = hub.operator("vic", "viewer");
    let dash = hub.operator("dee", "dashboard");

    // Node-RED's start-up lines are there once it is running.
    let started = Instant::now();
    let lines = loop {
        let (code, body) = call(&hub, reqwest::Method::GET, "/api/devices/pump-l/logs?lines=500", &member, None).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["device"], "pump-l");
        let lines = body["lines"].as_array().unwrap().clone();
        if lines.iter().any(|l| l["text"].as_str().unwrap().contains("Server now running")) {
            break lines;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no start-up line: {lines:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "consecutive: {seqs:?}");
    assert!(lines.iter().all(|l| l["stream"] == "stdout" || l["stream"] == "stderr"));
    assert!(lines.iter().all(|l| l["time"].as_str().unwrap().ends_with('Z')));

    // `lines` is the last N.
    let (code, body) = call(&hub, reqwest::Method::GET, "/api/devices/pump-l/logs?lines=2", &member, None).await;
    assert_eq!(code, 200);
    let two = body["lines"].as_array().unwrap();
    assert_eq!(two.len(), 2);
    assert!(two[1]["seq"].as_u64().unwrap() >= *seqs.last().unwrap());

    // Who may read them.
    for (who, token, want) in [("viewer", &viewer, 403), ("dashboard", &dash, 403)] {
        let (code, _) = call(&hub, reqwest::Method::GET, "/api/devices/pump-l/logs", token, None).await;
        assert_eq!(code, want, "{who}");
        let r = common::http::client()
            .get(format!("{}/api/devices/pump-l/logs?follow=true", hub.api()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{who} following");
    }
    let anonymous = common::http::client().get(format!("{}/api/devices/pump-l/logs", hub.api())).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let (code, _) = call(&hub, reqwest::Method::GET, "/api/devices/nobody/logs", &member, None).await;
    assert_eq!(code, 404);
    for bad in ["lines=0", "lines=many", "follow=maybe", "after=-3", "tail=5"] {
        let (code, body) =
            call(&hub, reqwest::Method::GET, &format!("/api/devices/pump-l/logs?{bad}"), &member, None).await;
        assert_eq!((code, body["error"].as_str()), (400, Some("bad_query")), "{bad}");
    }

    // The agent's own secrets never reach the buffer: the credential secret it made and the
    // key of the gate's credential it wrote into Node-RED's settings.
    let secret = std::fs::read_to_string(agent.state_dir().join("credential-secret")).unwrap();
    let settings = std::fs::read_to_string(agent.state_dir().join("node-red/settings.js")).unwrap();
    let gate_key = settings.split("Buffer.from(\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    assert!(secret.trim().len() >= 16 && gate_key.len() >= 32, "the secrets were found");
    let (_, body) = call(&hub, reqwest::Method::GET, "/api/devices/pump-l/logs?lines=100000", &member, None).await;
    let all = body.to_string();
    assert!(!all.contains(secret.trim()), "the credential secret is not in the logs");
    assert!(!all.contains(&gate_key), "the gate key is not in the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn following_delivers_lines_within_a_second_survives_a_reconnect_and_stops_when_the_client_leaves() {
    let hub = Hub::start();
    let agent = online_agent(&hub, "pump-f", "");
    let owner = hub.operator("ops", "owner");
    let member = hub.operator("mia", "member");
    let mut sse = follow(&hub, "pump-f", &member, "&lines=5").await;
    deploy(&hub, "pump-f", &owner, ticking_flow()).await;

    // Lines arrive within a second of the inject node's timestamp, in order, without gaps.
    let mut seqs = Vec::new();
    let mut ticks = 0;
    while ticks < 3 {
        let line = sse.next_line(Duration::from_secs(15)).await;
        let arrived = now_ms();
        seqs.push(line["seq"].as_u64().unwrap());
        if let Some(at) = tick_of(&line) {
            assert!(arrived.saturating_sub(at) <= 1000, "a tick of {at} arrived at {arrived}: {line}");
            ticks += 1;
        }
    }

    // The tunnel drops (the hub closes the device's connection) and comes back: the same
    // response keeps delivering, from where it was.
    let (_, before) = tunnel_state(&agent);
    let (code, body) = call(&hub, reqwest::Method::POST, "/api/devices/pump-f/disconnect", &member, None).await;
    assert_eq!(code, 200, "{body}");
    let mut after_reconnect = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while after_reconnect < 3 {
        assert!(Instant::now() < deadline, "lines stopped after the reconnect: {seqs:?}");
        let line = sse.next_line(Duration::from_secs(20)).await;
        seqs.push(line["seq"].as_u64().unwrap());
        if tick_of(&line).is_some() && tunnel_state(&agent).1 > before {
            after_reconnect += 1;
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no repeats and nothing lost: {seqs:?}");
    let (state, connects) = tunnel_state(&agent);
    assert_eq!((state.as_str(), connects), ("online", before + 1), "one reconnect");
    let ended =
        |reason: &str| agent.log().lines().filter(|l| l.contains("logs stream ended") && l.contains(reason)).count();
    assert_eq!(ended("connection_lost"), 1, "the first stream ended with its connection");

    // The client leaves: the agent's stream ends because the hub ended it.
    assert_eq!(ended("hub_ended_stream"), 0);
    drop(sse);
    common::wait_for(Duration::from_secs(10), "the agent's logs stream ended", || {
        (ended("hub_ended_stream") == 1).then_some(())
    });

    // Resuming with Last-Event-ID sends what came after it, nothing before.
    let last = *seqs.last().unwrap();
    let resumed = common::http::client()
        .get(format!("{}/api/devices/pump-f/logs?follow=true", hub.api()))
        .bearer_auth(&member)
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    let mut sse = Sse { response: resumed, buf: String::new() };
    assert_eq!(sse.next_line(Duration::from_secs(10)).await["seq"].as_u64(), Some(last + 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_page_shows_the_buffer_and_follows_new_lines_as_text_in_chromium() {
    let hub = Hub::start();
    let _agent = online_agent(&hub, "pump-c", "");
    let owner = hub.operator("ops", "owner");
    let mia = hub.account("mia", "member");
    let browser = common::browser::Browser::start().await;
    browser.log_in(&hub.api(), "mia", &mia.password, &mia.code_at(common::unix_now() + 30), "/devices/pump-c").await;
    browser.click_and_load("a[href='/devices/pump-c/logs']").await;
    assert_eq!(browser.current_url().await.path(), "/devices/pump-c/logs");
    let shown = browser.texts("#log-lines li").await;
    assert!(shown.iter().any(|l| l.contains("Server now running")), "the buffer is shown: {shown:?}");

    // A flow prints markup every second: it arrives while the page is open, shown as text.
    let printed = "<img src=x onerror=\"window.__pwned=1\"> tick";
    let flows = json!([
        { "id": "logs-tab", "type": "tab", "label": "markup" },
        { "id": "say", "type": "inject", "z": "logs-tab", "x": 100, "y": 80, "props": [{ "p": "payload" }],
          "repeat": "1", "once": true, "onceDelay": "0.1", "topic": "", "payload": printed, "payloadType": "str",
          "wires": [["out"]] },
        { "id": "out", "type": "debug", "z": "logs-tab", "x": 300, "y": 80, "name": "markup", "active": true,
          "tosidebar": false, "console": true, "tostatus": false, "complete": "payload", "targetType": "msg",
          "wires": [] }
    ]);
    deploy(&hub, "pump-c", &owner, flows).await;
    let lines = common::wait_for_async(Duration::from_secs(20), "a followed line on the page", || async {
        let texts = browser.texts("#log-lines li").await;
        texts.iter().any(|t| t.contains(printed)).then_some(texts)
    })
    .await;
    assert!(lines.len() > shown.len());
    assert_eq!(browser.execute("return document.getElementById('logs-state').dataset.state", &[]).await, "live");
    assert_eq!(browser.execute("return window.__pwned === undefined", &[]).await, true, "no markup ran");
    assert_eq!(browser.execute("return document.querySelectorAll('#log-lines img').length", &[]).await, 0);
    browser.screenshot("console-logs").await;
}
