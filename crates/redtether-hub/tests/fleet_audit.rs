//! The fleet audit on a real hub: `GET /api/audit` pages newest first with filters and cursors,
//! `GET /api/audit/export` streams the same rows as JSON Lines or CSV, and only viewers and
//! above read either. Hub events come from the CLI (operators added, an enrollment token);
//! device events are written into the hub's store while it is stopped, as a delivered batch
//! would be, so no agent is needed.

use redtether_hub::store::SledStore;
use redtether_proto::audit::{Actor, AuditEvent, AuditKind, GENESIS, StoredEvent};
use redtether_testkit::hub::Hub;
use serde_json::Value;

/// What an API call answered: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

async fn get(hub: &Hub, path: &str, token: Option<&str>) -> Answer {
    let mut request = redtether_testkit::http::client().get(format!("{}{path}", hub.api()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    Answer { status, headers, body: response.text().await.unwrap() }
}

/// Device events an hour ago, a second apart; odd ones are admin writes by ann.
fn device_events(count: u64) -> Vec<StoredEvent> {
    let start = redtether_proto::time::unix_now() - 3600;
    (1..=count)
        .map(|seq| {
            let event = if seq % 2 == 1 {
                AuditEvent::new(AuditKind::AdminWrite, Actor::user("ann"), "/flows")
            } else {
                AuditEvent::new(AuditKind::AuthFailed, Actor::Anonymous { addr: "10.0.0.9".into() }, "/flows")
            };
            let ts = redtether_proto::time::format_unix(start + seq);
            StoredEvent::seal(event.with("n", seq), seq, format!("e-{seq}"), ts, &GENESIS).0
        })
        .collect()
}

fn kinds(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["source"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_audit_pages_filters_and_exports_for_viewers() {
    let mut hub = Hub::start();
    let viewer = hub.operator("vic", "viewer");
    let dashboard = hub.operator("dee", "dashboard");
    hub.enroll_token("pump-1");
    hub.kill9();
    {
        let store = SledStore::open(&hub.state_dir()).unwrap();
        let now = redtether_proto::time::unix_now();
        store.enroll_device("pump-2", "02", now + 86400, "", now).unwrap();
        store.ingest_audit("pump-2", &device_events(6)).unwrap();
    }
    hub.spawn();
    hub.status();
    let viewer = Some(viewer.as_str());

    for path in ["/api/audit", "/api/audit/export?format=csv"] {
        assert_eq!(get(&hub, path, None).await.status, 401, "{path}");
        assert_eq!(
            get(&hub, path, Some(&dashboard)).await.status,
            403,
            "{path}: dashboard operators see node space only"
        );
    }

    let all = get(&hub, "/api/audit", viewer).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    assert_eq!(all["next"], Value::Null);
    assert_eq!(all["partial"], false);
    let mut expected: Vec<String> =
        ["enroll_token.created", "token.created", "operator.added", "token.created", "operator.added"]
            .map(|k| format!("hub:{k}"))
            .to_vec();
    expected
        .extend((1..=6).rev().map(|seq| if seq % 2 == 1 { "device:admin.write" } else { "device:auth.failed" }.into()));
    assert_eq!(kinds(&all["events"]), expected, "newest first: the hub's events now, the device's an hour ago");
    let newest = &all["events"][0];
    assert_eq!((newest["device"].as_str(), newest["target"].as_str()), (Some("pump-1"), Some("pump-1")));
    let added = &all["events"][2];
    assert_eq!((added["device"].clone(), added["target"].as_str()), (Value::Null, Some("operator:dee")));
    let delivered = &all["events"][5];
    assert_eq!(delivered["device"], "pump-2");
    assert_eq!(
        (delivered["seq"].as_u64(), delivered["id"].as_str(), delivered["actor"].as_str()),
        (Some(6), Some("e-6"), Some("anonymous@10.0.0.9"))
    );
    assert_eq!(delivered["detail"]["n"], 6);

    let admin = get(&hub, "/api/audit?device=pump-2&kind=admin&actor=user%3Aann", viewer).await.json();
    let seqs: Vec<u64> = admin["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [5, 3, 1]);
    let about_pump1 = get(&hub, "/api/audit?device=pump-1", viewer).await.json();
    assert_eq!(kinds(&about_pump1["events"]), ["hub:enroll_token.created"]);
    let hub_only = get(&hub, "/api/audit?source=hub&kind=operator", viewer).await.json();
    assert_eq!(kinds(&hub_only["events"]), ["hub:operator.added", "hub:operator.added"]);
    let since = redtether_proto::time::format_unix(redtether_proto::time::unix_now() - 600);
    let recent = get(&hub, &format!("/api/audit?since={since}&source=device"), viewer).await.json();
    assert_eq!(recent["events"], Value::Array(vec![]));

    // Paging two at a time gives the same rows, each once.
    let mut paged = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..20 {
        let path = match &before {
            Some(cursor) => format!("/api/audit?limit=2&before={cursor}"),
            None => "/api/audit?limit=2".to_string(),
        };
        let page = get(&hub, &path, viewer).await.json();
        paged.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => before = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(Value::Array(paged), all["events"]);

    let bad = get(&hub, "/api/audit?since=yesterday", viewer).await;
    assert_eq!(bad.status, 400);
    assert_eq!((bad.json()["error"].as_str(), bad.json()["parameter"].as_str()), (Some("bad_query"), Some("since")));
    assert_eq!(get(&hub, "/api/audit?format=csv", viewer).await.json()["parameter"], "format");

    let csv = get(&hub, "/api/audit/export?format=csv&source=device", viewer).await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    let disposition = csv.header("content-disposition");
    assert!(
        disposition.starts_with("attachment; filename=\"redtether-audit-") && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let lines: Vec<&str> = csv.body.split_terminator("\r\n").collect();
    assert_eq!(lines[0], "ts,source,device,seq,id,kind,actor,target,level,detail");
    assert_eq!(lines.len(), 7);
    assert!(
        lines[1].starts_with(&format!("{},device,pump-2,6,e-6,auth.failed,", delivered["ts"].as_str().unwrap())),
        "{}",
        lines[1]
    );

    let jsonl = get(&hub, "/api/audit/export?format=jsonl", viewer).await;
    assert_eq!((jsonl.status, jsonl.header("content-type")), (200, "application/x-ndjson"));
    let rows: Vec<Value> = jsonl.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(Value::Array(rows), all["events"], "the export is the pages' rows");
    assert_eq!(get(&hub, "/api/audit/export?format=xml", viewer).await.json()["parameter"], "format");
}
