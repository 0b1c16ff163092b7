//! The gate's security against a real Node-RED: roles, the editor login, node-space auth modes,
//! bearer tokens, rate limits, CORS, HTTPS, malformed input, and protection mode under attack
//! (with `flows.json` byte-identical afterwards).

use redtether_testkit as common;

use base64::Engine;
use common::agent::{Agent, BIN, default_users, fixture_node_red, hash_of};
use common::http::{Cred, deploy, echo_flow, login, raw, status_of, statuses_of, with};
use std::process::Command;
use std::time::Duration;

const OWNER: Cred<'static> = Cred::Basic("owner", "owner-pw");

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn gate_addr(agent: &Agent) -> String {
    agent.status()["gate"]["listen"].as_str().unwrap().to_string()
}

/// Flows with the echo routes plus a hit counter: `/probe/*` counts requests that reach
/// Node-RED, `/hits` tells the count.
fn probe_flows() -> serde_json::Value {
    let mut flows = echo_flow();
    let extra = serde_json::json!([
        {"id": "in3", "type": "http in", "z": "tab1", "url": "/probe/*", "method": "get", "upload": false, "wires": [["count"]]},
        {"id": "in4", "type": "http in", "z": "tab1", "url": "/probe/*", "method": "post", "upload": false, "wires": [["count"]]},
        {"id": "count", "type": "function", "z": "tab1", "func": "global.set('hits', (global.get('hits') || 0) + 1); msg.payload = 'hit'; return msg;", "outputs": 1, "wires": [["out1"]]},
        {"id": "in5", "type": "http in", "z": "tab1", "url": "/hits", "method": "get", "upload": false, "wires": [["tell"]]},
        {"id": "tell", "type": "function", "z": "tab1", "func": "msg.payload = String(global.get('hits') || 0); return msg;", "outputs": 1, "wires": [["out1"]]}
    ]);
    flows.as_array_mut().unwrap().extend(extra.as_array().unwrap().iter().cloned());
    flows
}

/// An agent whose Node-RED starts with `probe_flows()` already deployed.
fn agent_with_flows(gate_keys: &str, gate_tables: Option<&str>) -> Agent {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    Agent::start_with_flows(&node_red, gate_keys, gate_tables, &probe_flows())
}

async fn wait_route(client: &reqwest::Client, url: &str, cred: Cred<'_>) {
    common::wait_for_async(Duration::from_secs(15), url, || async {
        let r = with(client.get(url), cred).send().await.ok()?;
        (r.status() != 404).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_decide_what_reaches_the_admin_api() {
    let agent = agent_with_flows("", None);
    let gate = agent.gate_url();
    let flows_file = agent.state_dir().join("node-red/flows.json");
    let client = common::http::client();
    let get = |cred| with(client.get(format!("{gate}/device-editor/flows")), cred).send();

    assert_eq!(get(Cred::None).await.unwrap().status(), 401, "anonymous");
    let challenge = get(Cred::None).await.unwrap().headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(
        challenge.starts_with("Bearer "),
        "a challenge browsers answer with no dialog over the editor: {challenge}"
    );
    assert_eq!(get(Cred::Basic("owner", "wrong")).await.unwrap().status(), 401);
    assert_eq!(get(Cred::Basic("dash", "dash-pw")).await.unwrap().status(), 403, "dashboard role: node space only");
    for (user, pw) in [("owner", "owner-pw"), ("member", "member-pw"), ("viewer", "viewer-pw")] {
        assert_eq!(get(Cred::Basic(user, pw)).await.unwrap().status(), 200, "{user} reads");
    }

    let before = std::fs::read(&flows_file).unwrap();
    let r = deploy(&client, &gate, &echo_flow(), Cred::Basic("viewer", "viewer-pw")).await;
    assert_eq!(r.status(), 403, "viewer never writes");
    let r = deploy(&client, &gate, &echo_flow(), Cred::Basic("dash", "dash-pw")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(std::fs::read(&flows_file).unwrap(), before, "refused deploys change nothing");
    let inject = with(client.post(format!("{gate}/device-editor/inject/in1")), Cred::Basic("viewer", "viewer-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(inject.status(), 403);

    assert_eq!(
        deploy(&client, &gate, &echo_flow(), Cred::Basic("member", "member-pw")).await.status(),
        200,
        "member writes"
    );
    assert_ne!(std::fs::read(&flows_file).unwrap(), before);
    assert_eq!(deploy(&client, &gate, &probe_flows(), OWNER).await.status(), 200, "owner writes");

    // Refusals and writes are in the audit trail, with who and what.
    let log = agent.log();
    assert!(
        log.contains("kind=access.denied") && log.contains("actor=user:viewer") && log.contains("reason"),
        "denials audited"
    );
    let write = log
        .lines()
        .find(|l| l.contains("kind=admin.write") && l.contains("actor=user:member"))
        .expect("admin.write audited");
    assert!(write.contains("rev_before") && write.contains("rev_after"), "{write}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_editor_login_runs_through_the_gate() {
    let agent = Agent::start("");
    agent.wait_running();
    let gate = agent.gate_url();
    let client = common::http::client();

    let scheme: serde_json::Value =
        client.get(format!("{gate}/device-editor/auth/login")).send().await.unwrap().json().await.unwrap();
    assert_eq!(scheme["type"], "credentials");

    assert_eq!(login(&client, &gate, "owner", "nope").await, Err(reqwest::StatusCode::UNAUTHORIZED));
    assert_eq!(login(&client, &gate, "ghost", "x").await, Err(reqwest::StatusCode::UNAUTHORIZED));
    assert_eq!(login(&client, &gate, "dash", "dash-pw").await, Err(reqwest::StatusCode::FORBIDDEN));

    let viewer = login(&client, &gate, "viewer", "viewer-pw").await.unwrap();
    let settings: serde_json::Value = client
        .get(format!("{gate}/device-editor/settings"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["user"]["username"], "viewer");
    assert_eq!(settings["user"]["permissions"], "read", "the editor shows a viewer a read-only editor");
    assert_eq!(deploy(&client, &gate, &echo_flow(), Cred::Bearer(&viewer)).await.status(), 403);

    let owner = login(&client, &gate, "owner", "owner-pw").await.unwrap();
    assert_eq!(deploy(&client, &gate, &echo_flow(), Cred::Bearer(&owner)).await.status(), 200);
    let revoked = client
        .post(format!("{gate}/device-editor/auth/revoke"))
        .bearer_auth(&owner)
        .form(&[("token", owner.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let after = client.get(format!("{gate}/device-editor/flows")).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(after.status(), 401, "a revoked session is dead");
    assert_eq!(
        client.get(format!("{gate}/device-editor/flows")).bearer_auth("rts_forged").send().await.unwrap().status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_space_basic_mode_takes_its_one_user() {
    let tables = format!(
        "[gate.http_auth]\nmode = \"basic\"\nuser = \"hmi\"\npassword_hash = {:?}\n{}",
        hash_of("hmi-pw"),
        default_users()
    );
    let agent = agent_with_flows("", Some(&tables));
    let gate = agent.gate_url();
    let client = common::http::client();
    wait_route(&client, &format!("{gate}/api/data"), Cred::Basic("hmi", "hmi-pw")).await;

    let none = client.get(format!("{gate}/api/data")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(
        none.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic realm="),
        "browsers are asked for credentials"
    );
    assert_eq!(
        with(client.get(format!("{gate}/api/data")), Cred::Basic("hmi", "bad")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        with(client.get(format!("{gate}/api/data")), OWNER).send().await.unwrap().status(),
        401,
        "editor users are not the node user"
    );
    let ok = with(client.get(format!("{gate}/api/data")), Cred::Basic("hmi", "hmi-pw")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let seen: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(seen["user"], "hmi", "flows learn the user from the gate");
    assert_eq!(seen["auth"], serde_json::Value::Null, "the credential itself never reaches the flows");
    // A forged identity header from the client is replaced.
    let forged = client
        .get(format!("{gate}/api/data"))
        .basic_auth("hmi", Some("hmi-pw"))
        .header("x-redtether-user", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.json::<serde_json::Value>().await.unwrap()["user"], "hmi");
}

fn token_cli(agent: &Agent, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("token").args(args).arg("--config").arg(&agent.config).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_work_offline_expire_to_the_second_and_respect_scope() {
    let tables = format!("[gate.http_auth]\nmode = \"users\"\n{}", default_users());
    let agent = agent_with_flows("", Some(&tables));
    let gate = agent.gate_url();
    let client = common::http::client();
    wait_route(&client, &format!("{gate}/api/data"), OWNER).await;

    let out = token_cli(&agent, &["create", "--name", "hmi", "--expires", "1h", "--scope", "/api"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert!(token.starts_with("rtt_") && !token.contains(char::is_whitespace), "only the token is printed: {token:?}");

    let data = |t: &str| client.get(format!("{gate}/api/data")).bearer_auth(t.to_string()).send();
    let r = data(token).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["user"], "hmi");
    let outside = client.post(format!("{gate}/echo")).bearer_auth(token).body("x").send().await.unwrap();
    assert_eq!(outside.status(), 403, "outside its scope");
    let admin = client.get(format!("{gate}/device-editor/flows")).bearer_auth(token).send().await.unwrap();
    assert_eq!(admin.status(), 403, "tokens are not for the admin API");
    assert_eq!(
        client.get(format!("{gate}/api/data")).send().await.unwrap().status(),
        401,
        "users mode needs a credential"
    );
    assert_eq!(
        with(client.get(format!("{gate}/api/data")), Cred::Basic("dash", "dash-pw")).send().await.unwrap().status(),
        200,
        "any user in node space"
    );

    // Expiry: a two-second token works, then stops, with no network involved.
    let short = token_cli(&agent, &["create", "--name", "short", "--expires", "2s"]);
    let short = String::from_utf8(short.stdout).unwrap().trim().to_string();
    assert_eq!(data(&short).await.unwrap().status(), 200);
    common::wait_for_async(Duration::from_secs(5), "the short token to expire", || async {
        (data(&short).await.unwrap().status() == 401).then_some(())
    })
    .await;

    let list = token_cli(&agent, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hmi", "short"]);
    assert!(!list.to_string().contains(&token[4..]), "tokens are never listed");
    assert_eq!(list[1]["expired"], true);

    // Owners manage tokens over HTTP too; members may not.
    let api = format!("{gate}/device-editor/redtether/tokens");
    assert_eq!(with(client.get(&api), Cred::Basic("member", "member-pw")).send().await.unwrap().status(), 403);
    let made = with(client.post(&api), OWNER)
        .form(&[("name", "web"), ("expires", "10m"), ("scope", "/api")])
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let web = made.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    assert_eq!(data(&web).await.unwrap().status(), 200);
    assert_eq!(with(client.delete(format!("{api}/web")), OWNER).send().await.unwrap().status(), 200);
    assert_eq!(data(&web).await.unwrap().status(), 401);

    assert!(token_cli(&agent, &["revoke", "hmi"]).status.success());
    assert_eq!(data(token).await.unwrap().status(), 401, "revoked at once");
    assert!(!token_cli(&agent, &["revoke", "hmi"]).status.success(), "unknown name is an error");
    let log = agent.log();
    assert!(log.contains("kind=token.created") && log.contains("kind=token.revoked"), "token changes audited");
    assert!(
        log.lines().any(|l| l.contains("kind=auth.failed") && l.contains("\"reason\":\"expired_token\"")),
        "expired use audited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_made_while_the_agent_is_stopped_work_when_it_starts() {
    let tables = format!("[gate.http_auth]\nmode = \"users\"\n{}", default_users());
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let mut agent = Agent::prepare(&node_red, "", Some(&tables));
    let out = token_cli(&agent, &["create", "--name", "early", "--expires", "1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let user_dir = agent.state_dir().join("node-red");
    std::fs::write(user_dir.join("flows.json"), serde_json::to_string(&probe_flows()).unwrap()).unwrap();
    agent.spawn(&[]);
    agent.wait_running();
    let gate = agent.gate_url();
    let client = common::http::client();
    wait_route(&client, &format!("{gate}/api/data"), Cred::Bearer(&token)).await;
    assert_eq!(client.get(format!("{gate}/api/data")).bearer_auth(&token).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_rate_limited_before_hashing_and_reported_once() {
    let agent = Agent::start("");
    agent.wait_running();
    let gate = agent.gate_url();
    let client = common::http::client();
    // A good credential used before the attack stays usable (it is cached, no hashing).
    assert_eq!(with(client.get(format!("{gate}/device-editor/settings")), OWNER).send().await.unwrap().status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let r = with(client.get(format!("{gate}/device-editor/settings")), Cred::Basic("owner", "guess"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10], "the burst of 10: {statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 429), "then refused without hashing: {statuses:?}");
    assert_eq!(with(client.get(format!("{gate}/device-editor/settings")), OWNER).send().await.unwrap().status(), 200);
    // The editor login shares the limit.
    assert_eq!(login(&client, &gate, "owner", "guess").await, Err(reqwest::StatusCode::TOO_MANY_REQUESTS));

    common::wait_for(Duration::from_secs(15), "the aggregated report", || {
        agent.log().contains("kind=auth.rate_limited").then_some(())
    });
    let log = agent.log();
    assert_eq!(log.matches("kind=auth.rate_limited").count(), 1, "one event per window, not per request");
    let report = log.lines().find(|l| l.contains("kind=auth.rate_limited")).unwrap();
    assert!(report.contains("\"count\":6"), "{report}");
    assert_eq!(log.matches("kind=auth.failed").count(), 10, "each failure that was checked is audited");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_rate_limit_per_source() {
    let agent = Agent::start_gate("[gate.rate_limit]\nrequests_per_second = 2.0\nburst = 3", None);
    agent.wait_running();
    let gate = agent.gate_url();
    let client = common::http::client();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(client.get(format!("{gate}/device-editor/")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_upstream_cap_are_refused_not_queued() {
    let agent = agent_with_flows(
        "",
        Some(&format!(
            "[gate.http_auth]\nmode = \"none\"\n[gate.rate_limit]\nmax_upstream_connections = 1\n{}",
            default_users()
        )),
    );
    let gate = agent.gate_url();
    let client = common::http::client();
    wait_route(&client, &format!("{gate}/hits"), Cred::None).await;
    // A request whose body is only half sent holds the only slot: Node-RED is still reading it.
    // Meanwhile others are turned away at once rather than queued behind it. (Should a probe
    // hold the slot at the moment the holder arrives, the holder is the one turned away; then
    // it is sent again.)
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello";
    let mut attempt = 0;
    let (mut holder, busy) = loop {
        attempt += 1;
        assert!(attempt <= 20, "the holder never got the slot");
        let mut holder = tokio::net::TcpStream::connect(gate.trim_start_matches("http://")).await.unwrap();
        holder.write_all(head.as_bytes()).await.unwrap();
        let mut refused = None;
        for _ in 0..100 {
            let r = client.get(format!("{gate}/hits")).send().await.unwrap();
            if r.status() == 503 {
                refused = Some(r);
                break;
            }
            let mut peek = [0u8; 64];
            if holder.try_read(&mut peek).is_ok_and(|n| n > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(r) = refused {
            break (holder, r);
        }
    };
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(busy.json::<serde_json::Value>().await.unwrap()["error"], "gate_busy");
    holder.write_all(b"world").await.unwrap();
    let mut answer = String::new();
    holder.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("helloworld"), "{answer}");
    common::wait_for_async(Duration::from_secs(5), "the slot to be free again", || async {
        (client.get(format!("{gate}/hits")).send().await.unwrap().status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_credentials_are_answered_exactly_like_a_wrong_password() {
    let agent = Agent::start("");
    agent.wait_running();
    let addr = gate_addr(&agent);
    let request =
        |auth: &str| format!("GET /device-editor/flows HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n");
    let strip_date =
        |r: String| r.lines().filter(|l| !l.to_ascii_lowercase().starts_with("date:")).collect::<Vec<_>>().join("\n");
    let reference =
        strip_date(raw(&addr, request(&format!("Authorization: {}\r\n", basic("owner", "wrong"))).as_bytes()));
    assert_eq!(status_of(&reference), 401);
    let good = basic("owner", "owner-pw");
    let malformed = [
        format!("Authorization: {}\r\n", good.replacen("Basic ", "Basic\t", 1)),
        format!("Authorization: {}\r\n", good.replacen("Basic ", "Basic", 1)),
        format!("Authorization: {good}\r\nAuthorization: {good}\r\n"),
        "Authorization: Basic %%%\r\n".to_string(),
        "Authorization: Bearer\r\n".to_string(),
        "Authorization: Negotiate abc\r\n".to_string(),
        format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(b"owner:\xff")),
    ];
    for auth in malformed {
        let answer = strip_date(raw(&addr, request(&auth).as_bytes()));
        assert_eq!(answer, reference, "{auth:?}");
    }
    let mut bytes = request("").into_bytes();
    let at = bytes.len() - 2;
    bytes.splice(at..at, b"Authorization: Basic \xc3\xa9\r\n".iter().copied());
    assert_eq!(strip_date(raw(&addr, &bytes)), reference, "non-UTF-8 header");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_status_and_never_reach_node_red() {
    let agent = agent_with_flows("", None);
    let addr = gate_addr(&agent);
    let gate = agent.gate_url();
    let client = common::http::client();
    wait_route(&client, &format!("{gate}/hits"), Cred::None).await;
    let hits = || async { client.get(format!("{gate}/hits")).send().await.unwrap().text().await.unwrap() };
    assert_eq!(
        raw(&addr, format!("GET /probe/ok HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .lines()
            .last(),
        Some("hit")
    );
    assert_eq!(hits().await, "1", "the probe counts what reaches Node-RED");

    let h = format!("Host: {addr}\r\n");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (format!("GET /probe%2fx HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /probe/%00 HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /probe/%25 HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /probe/%2e%2e/x HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /probe\\x HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /probe/%5cx HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /probe/x;y HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /../probe/x HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /probe/%0d%0aX:y HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET /probe/x?a=%00 HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET http://elsewhere/probe/x HTTP/1.1\r\n{h}\r\n").into(), 400),
        (format!("GET * HTTP/1.1\r\n{h}\r\n").into(), 400),
        (
            format!("POST /probe/x HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                .into(),
            400,
        ),
        (
            format!("POST /probe/x HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n")
                .into(),
            400,
        ),
        (format!("POST /probe/x HTTP/1.1\r\n{h}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab").into(), 400),
        (format!("GET /probe/x HTTP/1.1\r\n{h}X-Folded: a\r\n b\r\n\r\n").into(), 400),
        (format!("GET /probe/x HTTP/1.1\r\n{h}X-Big: {}\r\n\r\n", "a".repeat(70 * 1024)).into(), 431),
        (format!("PROPFIND /probe/x HTTP/1.1\r\n{h}\r\n").into(), 405),
        (format!("TRACE /probe/x HTTP/1.1\r\n{h}\r\n").into(), 405),
        (format!("get /probe/x HTTP/1.1\r\n{h}\r\n").into(), 405),
        (b"GET /probe/x\r\n\r\n".to_vec(), 0),
        (format!("GET /probe/x HTTP/2.0\r\n{h}\r\n").into(), 0),
    ];
    for (bytes, expected) in cases {
        let answer = raw(&addr, &bytes);
        let status = status_of(&answer);
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(90)]).into_owned();
        if expected == 0 {
            assert!(status == 0 || (400..500).contains(&status), "{shown:?} -> {status}");
        } else {
            assert_eq!(status, expected, "{shown:?}: {answer}");
        }
    }
    // A request smuggled in a body that the gate and Node-RED would frame differently.
    let smuggle = format!(
        "POST /probe/a HTTP/1.1\r\n{h}Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /probe/smuggled HTTP/1.1\r\n{h}\r\n"
    );
    assert_eq!(status_of(&raw(&addr, smuggle.as_bytes())), 400);
    assert_eq!(hits().await, "1", "none of them reached Node-RED");
}

fn protected_attacks(addr: &str, owner: &str, viewer_session: &str) -> Vec<(String, Vec<u8>)> {
    let h = format!("Host: {addr}\r\nAuthorization: {owner}\r\n");
    let body = "{\"flows\":[]}";
    let post = |target: &str| {
        format!(
            "POST {target} HTTP/1.1\r\n{h}Content-Type: application/json\r\nNode-RED-API-Version: v2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let mut cases: Vec<(String, String)> = [
        "/device-editor/flows",
        "/DEVICE-EDITOR/FLOWS",
        "/Device-Editor/Flows/",
        "//device-editor//flows",
        "/device-editor/./flows",
        "/x/../device-editor/flows",
        "/device-editor/../device-editor/flows",
        "/device-editor/%66lows",
        "/%64evice-editor/flows",
        "/device-editor%2fflows",
        "/device-editor/flows%2f",
        "/device-editor/flows;x=1",
        "/device-editor\\flows",
        "/device-editor/%2e/flows",
        "/device-editor/flows?x=1",
        "/device-editor/flow",
        "/device-editor/flows/state",
        "/device-editor/inject/in1",
        "/device-editor/debug/in1/disable",
        "/device-editor/debug/enable",
        "/device-editor/library/local/flows/x.json",
        "/device-editor/settings/user",
        "/device-editor/nodes",
        "/device-editor/redtether/tokens",
    ]
    .iter()
    .map(|t| (format!("POST {t}"), post(t)))
    .collect();
    let abs = format!("http://{addr}/device-editor/flows");
    cases.push(("absolute-form".into(), post(&abs)));
    for method in ["PUT", "DELETE", "PATCH"] {
        for target in [
            "/device-editor/flows",
            "/device-editor/nodes/node-red",
            "/device-editor/context/global/x",
            "/device-editor/flow/tab1",
        ] {
            cases.push((format!("{method} {target}"), post(target).replacen("POST", method, 1)));
        }
    }
    cases.push((
        "method override header".into(),
        format!("GET /device-editor/flows HTTP/1.1\r\n{h}X-HTTP-Method-Override: POST\r\nConnection: close\r\n\r\n"),
    ));
    cases.push((
        "_method in query".into(),
        format!("GET /device-editor/flows?_method=POST HTTP/1.1\r\n{h}Connection: close\r\n\r\n"),
    ));
    cases.push((
        "access_token in query".into(),
        format!("GET /device-editor/flows?access_token=x HTTP/1.1\r\n{h}Connection: close\r\n\r\n"),
    ));
    cases.push(("HTTP/1.0".into(), post("/device-editor/flows").replacen("HTTP/1.1", "HTTP/1.0", 1)));
    cases.push((
        "smuggled in a chunked body".into(),
        format!(
            "POST /probe/x HTTP/1.1\r\n{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            post("/device-editor/flows")
        ),
    ));
    cases.push((
        "pipelined after a read".into(),
        format!("GET /device-editor/settings HTTP/1.1\r\n{h}\r\n{}", post("/device-editor/flows")),
    ));
    cases.push((
        "viewer session".into(),
        post("/device-editor/flows").replace(owner, &format!("Bearer {viewer_session}")),
    ));
    cases.push((
        "forged gate header".into(),
        post("/device-editor/flows")
            .replace(&format!("Authorization: {owner}\r\n"), "X-Redtether-Gate-Token: v1.full.6f776e6572.00\r\n"),
    ));
    cases.push((
        "diagnostics read".into(),
        format!("GET /device-editor/diagnostics HTTP/1.1\r\n{h}Connection: close\r\n\r\n"),
    ));
    cases.push((
        "context read".into(),
        format!("GET /device-editor/context/global HTTP/1.1\r\n{h}Connection: close\r\n\r\n"),
    ));
    cases.into_iter().map(|(name, text)| (name, text.into_bytes())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn protection_mode_withstands_the_attack_list_with_flows_unchanged() {
    let agent = agent_with_flows("protection = true", None);
    let addr = gate_addr(&agent);
    let gate = agent.gate_url();
    let client = common::http::client();
    let flows_file = agent.state_dir().join("node-red/flows.json");
    let before = std::fs::read(&flows_file).unwrap();
    let rev = |cred| {
        let client = client.clone();
        let gate = gate.clone();
        async move {
            let r = with(client.get(format!("{gate}/device-editor/flows")), cred)
                .header("node-red-api-version", "v2")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "reading flows is allowed in protection mode");
            r.json::<serde_json::Value>().await.unwrap()["rev"].as_str().unwrap().to_string()
        }
    };
    let rev_before = rev(OWNER).await;
    let viewer_session = login(&client, &gate, "viewer", "viewer-pw").await.unwrap();

    let refused = deploy(&client, &gate, &echo_flow(), OWNER).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap(), serde_json::json!({"error": "protection_mode"}));

    for (name, bytes) in protected_attacks(&addr, &basic("owner", "owner-pw"), &viewer_session) {
        let answer = raw(&addr, &bytes);
        let statuses = statuses_of(&answer);
        let last = *statuses.last().unwrap_or(&0);
        assert!((400..500).contains(&last) || last == 0, "{name}: answered {statuses:?}\n{answer}");
    }

    // Editor assets and the editor's reads still work; the websocket opens.
    assert_eq!(client.get(format!("{gate}/device-editor/")).send().await.unwrap().status(), 200);
    assert_eq!(
        with(client.get(format!("{gate}/device-editor/nodes")), OWNER)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let owner_session = login(&client, &gate, "owner", "owner-pw").await.unwrap();
    let settings: serde_json::Value = client
        .get(format!("{gate}/device-editor/settings"))
        .bearer_auth(&owner_session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["user"]["permissions"], "read", "even the owner gets a read-only editor");
    let ws_url = format!("{}/device-editor/comms", gate.replace("http://", "ws://"));
    assert!(tokio_tungstenite::connect_async(&ws_url).await.is_ok());

    assert_eq!(std::fs::read(&flows_file).unwrap(), before, "flows.json is byte-identical");
    assert_eq!(rev(OWNER).await, rev_before, "and Node-RED runs the same flows");
    // Node-space routes keep working in protection mode.
    let echoed = client
        .post(format!("{gate}/echo"))
        .header("content-type", "text/plain")
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.text().await.unwrap(), "still here");
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("kind=access.denied") && l.contains("\"reason\":\"protection_mode\"")),
        "protection refusals audited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_and_cross_site_requests() {
    let agent = Agent::start_gate("cors_origins = [\"https://hmi.example\"]", None);
    agent.wait_running();
    let gate = agent.gate_url();
    let client = common::http::client();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{gate}/device-editor/flows"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("https://hmi.example").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://hmi.example");
    assert_eq!(preflight("https://evil.example").await.unwrap().status(), 403);

    // Node-RED 4 sends `Access-Control-Allow-Origin: *` on admin responses; the gate does not.
    let r = with(client.get(format!("{gate}/device-editor/settings")), OWNER)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = with(client.get(format!("{gate}/device-editor/settings")), OWNER)
        .header("origin", "https://hmi.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://hmi.example");

    // A page on another site cannot drive a browser's remembered Basic credentials to write.
    let r = deploy(&client, &gate, &echo_flow(), OWNER).await;
    assert_eq!(r.status(), 200);
    let csrf = with(client.post(format!("{gate}/device-editor/flows")), OWNER)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body("{\"flows\":[]}")
        .send()
        .await
        .unwrap();
    assert_eq!(csrf.status(), 403);
    // Nor open the editor's websocket.
    let addr = gate.trim_start_matches("http://");
    let upgrade = format!(
        "GET /device-editor/comms HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    assert_eq!(status_of(&raw(addr, upgrade.as_bytes())), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn first_run_makes_a_locked_editor_with_an_owner() {
    let agent = Agent::start_gate("", Some("[gate.http_auth]\nmode = \"none\"\n"));
    agent.wait_running();
    let password_file = agent.state_dir().join("initial-admin-password");
    let password = std::fs::read_to_string(&password_file).unwrap().trim().to_string();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&password_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(agent.log().contains(&password_file.display().to_string()), "the log says where the password is");
    assert!(!agent.log().contains(&password), "but never the password");
    let gate = agent.gate_url();
    let client = common::http::client();
    assert_eq!(client.get(format!("{gate}/device-editor/flows")).send().await.unwrap().status(), 401, "locked");
    let token = login(&client, &gate, "admin", &password).await.expect("the admin logs in");
    assert_eq!(deploy(&client, &gate, &echo_flow(), Cred::Bearer(&token)).await.status(), 200, "as an owner");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_self_signed_certificate() {
    let agent = Agent::start_gate(
        "",
        Some(&format!("[gate.http_auth]\nmode = \"none\"\n[gate.tls]\nself_signed = true\n{}", default_users())),
    );
    agent.wait_running();
    let addr = gate_addr(&agent);
    let cert = std::fs::read(agent.state_dir().join("gate-tls/cert.pem")).unwrap();
    let answer = common::tls::get(&addr, &cert, "/device-editor/").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plain HTTP on the TLS port gets nothing useful.
    assert_eq!(status_of(&raw(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")), 0);
}
