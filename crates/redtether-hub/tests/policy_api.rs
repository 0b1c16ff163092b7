//! The operator API's policy and token routes on a real hub: who may read and write, the
//! refusals and the field each names, numbering under concurrent changes, tokens shown once
//! and never again, and a hub audit trail without hashes, digests or tokens. Devices are
//! written into the hub's registry while it is stopped, so no agent is needed here; what a
//! device does with a policy is tested end to end elsewhere.

use redtether_hub::store::SledStore;
use redtether_testkit::hub::Hub;
use reqwest::Method;
use ring::signature::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$KjR7n9y0DC0T8hK1IuvWz9P2qgT8Lw0nJa6W5mR1aF8";

struct Fixture {
    hub: Hub,
    owner: String,
    member: String,
    viewer: String,
}

/// A hub with an owner, a member and a viewer, and `devices` enrolled.
fn hub_with(devices: &[&str]) -> Fixture {
    let mut hub = Hub::start();
    let owner = hub.operator("alice", "owner");
    let member = hub.operator("mo", "member");
    let viewer = hub.operator("vic", "viewer");
    // The registry is the hub's while it runs: enroll the devices with it stopped.
    hub.kill9();
    {
        let store = SledStore::open(&hub.state_dir()).unwrap();
        let now = redtether_proto::time::unix_now();
        for (i, device) in devices.iter().enumerate() {
            store.enroll_device(device, &format!("{i:02x}"), now + 86400, "", now).unwrap();
        }
    }
    hub.spawn();
    hub.status();
    Fixture { hub, owner, member, viewer }
}

async fn call(hub: &Hub, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = redtether_testkit::http::client().request(method, format!("{}{path}", hub.api()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn user(name: &str, role: &str) -> Value {
    json!({"name": name, "password_hash": HASH, "role": role})
}

/// A document with every field set, as the hub shows it back.
fn full_document() -> Value {
    json!({
        "protection": true,
        "http_auth": {"mode": "basic", "user": "hmi", "password_hash": HASH},
        "users": [user("ann", "owner"), user("bob", "viewer")],
        "rate_limit": {"requests_per_second": 2.5, "burst": 10},
        "cors_origins": ["https://hmi.example:8443"],
    })
}

fn hub_events(events: &Value, kind: &str) -> Vec<Value> {
    events.as_array().unwrap().iter().filter(|e| e["kind"] == kind).cloned().collect()
}

/// Whether `text` has a run of 64 hex digits (a SHA-256).
fn has_digest(text: &str) -> bool {
    text.as_bytes().windows(64).any(|w| w.iter().all(u8::is_ascii_hexdigit))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_reads_only_owners_write_and_devices_must_exist() {
    let f = hub_with(&["pump-1"]);
    let (hub, owner) = (&f.hub, Some(f.owner.as_str()));
    let body = || Some(json!({"protection": true}));
    for (method, path) in [
        (Method::GET, "/api/devices/pump-1/policy"),
        (Method::PUT, "/api/devices/pump-1/policy"),
        (Method::GET, "/api/devices/pump-1/tokens"),
        (Method::POST, "/api/devices/pump-1/tokens"),
        (Method::DELETE, "/api/devices/pump-1/tokens/hmi"),
    ] {
        assert_eq!(call(hub, method.clone(), path, None, body()).await.0, 401, "{method} {path} without a token");
    }
    // Viewers (and members) read ...
    assert_eq!(
        call(hub, Method::GET, "/api/devices/pump-1/policy", Some(&f.viewer), None).await,
        (404, json!({"error": "no_policy"}))
    );
    assert_eq!(call(hub, Method::GET, "/api/devices/pump-1/tokens", Some(&f.member), None).await, (200, json!([])));
    // ... but security settings are the owner's alone.
    let token_body = Some(json!({"name": "hmi", "expires_in": 60}));
    for who in [&f.viewer, &f.member] {
        assert_eq!(call(hub, Method::PUT, "/api/devices/pump-1/policy", Some(who), body()).await.0, 403);
        assert_eq!(call(hub, Method::POST, "/api/devices/pump-1/tokens", Some(who), token_body.clone()).await.0, 403);
        assert_eq!(call(hub, Method::DELETE, "/api/devices/pump-1/tokens/hmi", Some(who), None).await.0, 403);
    }
    for (method, path) in [
        (Method::GET, "/api/devices/pump-9/policy"),
        (Method::PUT, "/api/devices/pump-9/policy"),
        (Method::GET, "/api/devices/pump-9/tokens"),
        (Method::POST, "/api/devices/pump-9/tokens"),
        (Method::DELETE, "/api/devices/pump-9/tokens/hmi"),
    ] {
        let answer = call(hub, method.clone(), path, owner, body()).await;
        assert_eq!(answer, (404, json!({"error": "unknown_device"})), "{method} {path}");
    }
    assert_eq!(call(hub, Method::GET, "/api/devices/pump-1/policy", owner, None).await.0, 404, "nothing was made");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_policies_are_refused_naming_the_field() {
    let f = hub_with(&["pump-1"]);
    let (hub, owner) = (&f.hub, Some(f.owner.as_str()));
    let cases = [
        (json!({"users": [user("ann", "root")]}), Some("users[0].role")),
        (
            json!({"users": [user("ann", "viewer"), {"name": "bob", "password_hash": "$argon2id$garbage", "role": "viewer"}]}),
            Some("users[1].password_hash"),
        ),
        (
            json!({"users": [{"name": "ann", "password_hash": "hunter2", "role": "viewer"}]}),
            Some("users[0].password_hash"),
        ),
        (json!({"http_auth": {"mode": "basic"}}), Some("http_auth.user")),
        (json!({"http_auth": {"mode": "open"}}), Some("http_auth.mode")),
        (json!({"protection": true, "tokens": []}), Some("tokens")),
        (json!({"protection": true, "admin": true}), Some("admin")),
        (json!({"cors_origins": ["*"]}), Some("cors_origins[0]")),
        (json!({"rate_limit": {"requests_per_second": -1}}), Some("rate_limit.requests_per_second")),
        (json!(["protection"]), None),
    ];
    for (body, field) in cases {
        let (status, answer) = call(hub, Method::PUT, "/api/devices/pump-1/policy", owner, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_policy", "{body}");
        assert_eq!(answer["field"].as_str(), field, "{body}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    let malformed = redtether_testkit::http::client()
        .put(format!("{}/api/devices/pump-1/policy", hub.api()))
        .bearer_auth(&f.owner)
        .body("{\"protection\": tru")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let answer: Value = malformed.json().await.unwrap();
    assert_eq!((answer["error"].as_str(), &answer["field"]), (Some("invalid_policy"), &Value::Null));
    let huge = redtether_testkit::http::client()
        .put(format!("{}/api/devices/pump-1/policy", hub.api()))
        .bearer_auth(&f.owner)
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(call(hub, Method::GET, "/api/devices/pump-1/policy", owner, None).await.0, 404, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_is_signed_numbered_and_shown_pending_as_put() {
    let f = hub_with(&["pump-1", "pump-2"]);
    let (hub, owner) = (&f.hub, Some(f.owner.as_str()));
    let answer = call(hub, Method::PUT, "/api/devices/pump-1/policy", owner, Some(full_document())).await;
    assert_eq!(answer, (202, json!({"number": 1})));
    let (status, policy) = call(hub, Method::GET, "/api/devices/pump-1/policy", Some(&f.viewer), None).await;
    assert_eq!(status, 200);
    assert_eq!(policy["desired"], full_document());
    assert_eq!((policy["number"].as_u64(), policy["state"].as_str()), (Some(1), Some("pending")));
    assert_eq!((&policy["reason"], &policy["applied_at"]), (&Value::Null, &Value::Null));
    assert_eq!(policy["made_by"], "alice");
    assert_eq!(policy["hash"].as_str().map(str::len), Some(64));
    // The device view says where its policy stands.
    let (_, device) = call(hub, Method::GET, "/api/devices/pump-1", owner, None).await;
    assert_eq!(device["policy"], json!({"number": 1, "state": "pending", "reason": null}));
    let (_, other) = call(hub, Method::GET, "/api/devices/pump-2", owner, None).await;
    assert_eq!(other["policy"], Value::Null);
    // Missing fields take the device's safe defaults.
    assert_eq!(call(hub, Method::PUT, "/api/devices/pump-1/policy", owner, Some(json!({}))).await.1["number"], 2);
    let (_, policy) = call(hub, Method::GET, "/api/devices/pump-1/policy", owner, None).await;
    assert_eq!(policy["desired"]["http_auth"], json!({"mode": "users"}));
    assert_eq!(policy["desired"]["protection"], false);
    assert_eq!(call(hub, Method::PUT, "/api/devices/pump-2/policy", owner, Some(json!({}))).await.1["number"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_puts_get_distinct_increasing_numbers_and_the_highest_is_kept() {
    let f = hub_with(&["pump-1"]);
    let api = f.hub.api();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (url, owner) = (format!("{api}/api/devices/pump-1/policy"), f.owner.clone());
            tokio::spawn(async move {
                let body = json!({"protection": i % 2 == 0, "rate_limit": {"requests_per_second": i, "burst": 0}});
                let r = redtether_testkit::http::client().put(url).bearer_auth(owner).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 202);
                let answer: Value = r.json().await.unwrap();
                (answer["number"].as_u64().unwrap(), i)
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.push(task.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers.iter().map(|(n, _)| *n).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    let (_, policy) = call(&f.hub, Method::GET, "/api/devices/pump-1/policy", Some(&f.owner), None).await;
    assert_eq!(policy["number"], 20);
    // The document stored is the one that got the highest number.
    let (_, last) = numbers[19];
    assert_eq!(policy["desired"]["rate_limit"]["requests_per_second"], json!(last as f64));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_shown_once_need_a_policy_and_reach_the_signed_policy_as_digests() {
    let mut f = hub_with(&["pump-1"]);
    let (hub, owner) = (&f.hub, Some(f.owner.as_str()));
    let hmi = json!({"name": "hmi", "expires_in": 3600, "scope": "/api"});
    assert_eq!(
        call(hub, Method::POST, "/api/devices/pump-1/tokens", owner, Some(hmi.clone())).await,
        (409, json!({"error": "no_policy"})),
        "a token reaches a device only inside a policy"
    );
    call(hub, Method::PUT, "/api/devices/pump-1/policy", owner, Some(json!({"protection": true}))).await;

    let now = redtether_proto::time::unix_now();
    let (status, made) = call(hub, Method::POST, "/api/devices/pump-1/tokens", owner, Some(hmi.clone())).await;
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rtt_") && token.len() == 4 + 43, "{token}");
    assert_eq!(
        (made["name"].as_str(), made["scope"].as_str(), made["number"].as_u64()),
        (Some("hmi"), Some("/api"), Some(2))
    );
    let expires = made["expires"].as_u64().unwrap();
    assert!((now + 3600..=now + 3700).contains(&expires), "{expires}");
    let digest = hex::encode(Sha256::digest(token.as_bytes()));

    let (status, other) = call(
        hub,
        Method::POST,
        "/api/devices/pump-1/tokens",
        owner,
        Some(json!({"name": "scada", "expires_in": "1d"})),
    )
    .await;
    assert_eq!((status, other["scope"].clone()), (201, Value::Null));
    assert_ne!(other["token"], made["token"]);
    assert_eq!(
        call(hub, Method::POST, "/api/devices/pump-1/tokens", owner, Some(hmi.clone())).await,
        (409, json!({"error": "token_exists"}))
    );
    let (status, bad) =
        call(hub, Method::POST, "/api/devices/pump-1/tokens", owner, Some(json!({"name": "a b", "expires_in": 60})))
            .await;
    assert_eq!((status, bad["error"].as_str(), bad["field"].as_str()), (400, Some("invalid_token"), Some("name")));

    let (status, list) = call(hub, Method::GET, "/api/devices/pump-1/tokens", Some(&f.viewer), None).await;
    assert_eq!(status, 200);
    let listed = list.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let entry = listed.iter().find(|t| t["name"] == "hmi").unwrap();
    assert_eq!((entry["expires"].as_u64(), entry["scope"].as_str()), (Some(expires), Some("/api")));
    assert_eq!((entry["expired"].as_bool(), entry["created_by"].as_str()), (Some(false), Some("alice")));
    assert!(entry["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{entry}");
    let text = list.to_string();
    assert!(!text.contains(&token) && !text.contains(&digest) && !has_digest(&text), "{text}");

    // Revoking makes a policy without it; a second revocation finds nothing.
    let revoked = redtether_testkit::http::client()
        .delete(format!("{}/api/devices/pump-1/tokens/hmi", hub.api()))
        .bearer_auth(&f.owner)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        call(hub, Method::DELETE, "/api/devices/pump-1/tokens/hmi", owner, None).await,
        (404, json!({"error": "unknown_token"}))
    );
    let (_, list) = call(hub, Method::GET, "/api/devices/pump-1/tokens", owner, None).await;
    assert_eq!(list.as_array().unwrap().iter().map(|t| t["name"].clone()).collect::<Vec<_>>(), [json!("scada")]);
    let (_, policy) = call(hub, Method::GET, "/api/devices/pump-1/policy", owner, None).await;
    assert_eq!(policy["number"], 4);
    assert_eq!(policy["desired"]["protection"], true, "token changes keep the operator's document");
    assert!(policy["desired"].get("tokens").is_none(), "tokens are shown by their own route: {policy}");

    // The envelope the device will get: signed by the hub's key, for this device, with the
    // remaining token as its digest only.
    let scada = other["token"].as_str().unwrap();
    f.hub.kill9();
    let store = SledStore::open(&f.hub.state_dir()).unwrap();
    let stored = store.policy("pump-1").unwrap().unwrap();
    let pkcs8 = std::fs::read(f.hub.state_dir().join("signing.key")).unwrap();
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let signed = redtether_proto::policy::verify(&stored.envelope, key.public_key().as_ref(), "pump-1", 3).unwrap();
    assert_eq!(signed.number, 4);
    assert_eq!(signed.document.tokens.len(), 1);
    assert_eq!(signed.document.tokens[0].sha256, hex::encode(Sha256::digest(scada.as_bytes())));
    assert_eq!(signed.document.hash(), stored.hash);
    assert_eq!(policy["hash"], stored.hash);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_audit_trail_says_what_changed_and_never_a_hash_digest_or_token() {
    let f = hub_with(&["pump-1"]);
    let (hub, owner) = (&f.hub, Some(f.owner.as_str()));
    call(hub, Method::PUT, "/api/devices/pump-1/policy", owner, Some(full_document())).await;
    let mut changed = full_document();
    changed["users"] = json!([user("ann", "member"), user("cy", "viewer")]);
    changed["protection"] = json!(false);
    call(hub, Method::PUT, "/api/devices/pump-1/policy", owner, Some(changed)).await;
    let (_, made) = call(
        hub,
        Method::POST,
        "/api/devices/pump-1/tokens",
        owner,
        Some(json!({"name": "hmi", "expires_in": 600, "scope": "/ui"})),
    )
    .await;
    let token = made["token"].as_str().unwrap().to_string();
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    assert_eq!(call(hub, Method::DELETE, "/api/devices/pump-1/tokens/hmi", owner, None).await.0, 204);

    let (status, events) = call(hub, Method::GET, "/api/devices/pump-1/audit?source=hub", Some(&f.viewer), None).await;
    assert_eq!(status, 200);
    let changes = hub_events(&events, "policy.changed");
    assert_eq!(changes.len(), 4, "{events}");
    for (i, e) in changes.iter().enumerate() {
        assert_eq!(
            (e["detail"]["number"].as_u64(), e["detail"]["operator"].as_str()),
            (Some(i as u64 + 1), Some("alice"))
        );
    }
    let first = &changes[0]["detail"]["changes"];
    assert_eq!(first["users"]["added"], json!([{"name": "ann", "role": "owner"}, {"name": "bob", "role": "viewer"}]));
    assert_eq!(first["http_auth"], json!({"mode": "basic", "user": "hmi"}));
    let second = &changes[1]["detail"]["changes"];
    assert_eq!(second["protection"], false);
    assert_eq!(second["users"]["role_changed"], json!([{"name": "ann", "from": "owner", "to": "member"}]));
    assert_eq!(second["users"]["removed"], json!(["bob"]));
    assert!(second.get("tokens").is_none() && second.get("cors_origins").is_none(), "{second}");
    assert_eq!(changes[2]["detail"]["changes"], json!({"tokens": {"added": ["hmi"], "removed": []}}));
    assert_eq!(changes[3]["detail"]["changes"], json!({"tokens": {"added": [], "removed": ["hmi"]}}));

    let created = hub_events(&events, "token.created");
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0]["detail"],
        json!({"name": "hmi", "expires": made["expires"], "scope": "/ui", "operator": "alice"})
    );
    let revoked = hub_events(&events, "token.revoked");
    assert_eq!(
        revoked.iter().map(|e| e["detail"].clone()).collect::<Vec<_>>(),
        [json!({"name": "hmi", "operator": "alice"})]
    );

    let text = events.to_string();
    assert!(!text.contains("$argon2") && !text.contains(&token) && !text.contains(&digest), "{text}");
    assert!(!has_digest(&text), "no hash or digest of any kind: {text}");
}
