//! Operator accounts against a real hub: setup with a one-time code, password + TOTP login
//! (a replayed code and one from two steps ago refused, recovery codes once each), API tokens
//! (expiry to the second, shrinking with a demoted operator), sessions ending at once when the
//! operator is removed, the dashboard role, failed logins limited and audited once per burst,
//! and the hub's hash-chained audit trail with `audit verify` finding a changed byte.

use redtether_testkit::http::hidden;
use redtether_testkit::hub::{Account, Hub};
use redtether_testkit::unix_now;
use serde_json::{Value, json};
use std::time::Duration;

fn client() -> reqwest::Client {
    redtether_testkit::http::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn login(client: &reqwest::Client, hub: &Hub, body: Value) -> reqwest::Response {
    client.post(format!("{}/api/login", hub.api())).json(&body).send().await.unwrap()
}

/// Logs in with the code of the step after now (the setup used the current one).
async fn session(client: &reqwest::Client, hub: &Hub, a: &Account) -> (String, String) {
    let r =
        login(client, hub, json!({"name": a.name, "password": a.password, "totp": a.code_at(unix_now() + 30)})).await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    (cookie, body["csrf_token"].as_str().unwrap().to_string())
}

fn kinds(hub: &Hub) -> Vec<String> {
    hub.audit().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn password_then_totp_with_replays_and_old_codes_refused_and_recovery_codes_once() {
    let hub = Hub::start();
    let ann = hub.account("ann", "owner");
    let c = client();
    let now = unix_now();

    let no_code = login(&c, &hub, json!({"name": "ann", "password": ann.password})).await;
    assert_eq!(
        (no_code.status().as_u16(), no_code.text().await.unwrap()),
        (401, r#"{"error":"second_factor_required"}"#.into())
    );
    let wrong =
        login(&c, &hub, json!({"name": "ann", "password": "not-the-password!", "totp": ann.code_at(now + 30)})).await;
    assert_eq!(wrong.status(), 401);

    let next_step = ann.code_at(now + 30);
    let ok = login(&c, &hub, json!({"name": "ann", "password": ann.password, "totp": next_step})).await;
    assert_eq!(ok.status(), 200);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let replay = login(&c, &hub, json!({"name": "ann", "password": ann.password, "totp": next_step})).await;
    assert_eq!(replay.status(), 401, "a code is accepted once");
    let old = login(&c, &hub, json!({"name": "ann", "password": ann.password, "totp": ann.code_at(now - 60)})).await;
    assert_eq!(old.status(), 401, "two steps ago");

    let recovery = &ann.recovery_codes[3];
    let first = login(&c, &hub, json!({"name": "ann", "password": ann.password, "recovery_code": recovery})).await;
    assert_eq!(first.status(), 200);
    let again = login(&c, &hub, json!({"name": "ann", "password": ann.password, "recovery_code": recovery})).await;
    assert_eq!(again.status(), 401, "a recovery code works once");
    let me: Value = c
        .get(format!("{}/api/me", hub.api()))
        .header("cookie", first.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["recovery_codes_left"], 9);

    let trail = hub.audit();
    let reasons: Vec<&str> = trail
        .iter()
        .filter(|e| e["kind"] == "operator.login_failed")
        .map(|e| e["detail"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["wrong_password", "replayed_totp", "wrong_totp", "wrong_recovery_code"]);
    let logins: Vec<&Value> = trail.iter().filter(|e| e["kind"] == "operator.login").collect();
    assert_eq!(logins.len(), 2);
    assert_eq!(logins[1]["detail"]["second_factor"], "recovery_code");
    assert_eq!(logins[0]["actor"], "user:ann");
    let text = serde_json::to_string(&trail).unwrap();
    assert!(!text.contains(&ann.password) && !text.contains(recovery.as_str()), "no secret in the trail");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_tokens_expire_to_the_second_and_act_with_the_operators_role_at_the_time_of_use() {
    let hub = Hub::start();
    let ops = hub.account("ops", "owner");
    let c = client();
    let (cookie, csrf) = session(&c, &hub, &ops).await;
    let tokens = format!("{}/api/tokens", hub.api());
    let make = |name: &str, expires_in: Value, with_csrf: bool| {
        let mut r = c
            .post(&tokens)
            .header("cookie", &cookie)
            .json(&json!({"name": name, "expires_in": expires_in, "scope": "admin"}));
        if with_csrf {
            r = r.header("x-csrf-token", &csrf);
        }
        r.send()
    };
    assert_eq!(make("ci", json!("1d"), false).await.unwrap().status(), 403, "a cookie write needs the CSRF token");
    let made = make("ci", json!("1d"), true).await.unwrap();
    assert_eq!(made.status(), 201);
    let admin = made.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    assert_eq!(make("ci", json!("1d"), true).await.unwrap().status(), 409);
    assert_eq!(make("forever", json!(null), true).await.unwrap().status(), 400, "an expiry is required");

    // As an owner the token may deploy (the device is unknown: 404, not 403).
    let deploy = format!("{}/api/devices/nowhere/deploy", hub.api());
    let flows = json!({"flows": []});
    assert_eq!(c.post(&deploy).bearer_auth(&admin).json(&flows).send().await.unwrap().status(), 404);
    let (code, _, err) = hub.cli(&["operator", "role", "ops", "viewer"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(c.post(&deploy).bearer_auth(&admin).json(&flows).send().await.unwrap().status(), 403, "demoted");
    assert_eq!(c.get(format!("{}/api/devices", hub.api())).bearer_auth(&admin).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(format!("{}/api/devices", hub.api())).header("cookie", &cookie).send().await.unwrap().status(),
        401,
        "a role change ends the sessions"
    );

    // Expiry to the second: valid before its `expires` second, refused from it on.
    // A new session (the step after now is used up: a recovery code this time).
    let again =
        login(&c, &hub, json!({"name": "ops", "password": ops.password, "recovery_code": ops.recovery_codes[0]})).await;
    assert_eq!(again.status(), 200);
    let cookie = again.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = again.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_string();
    let short = c
        .post(&tokens)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "short", "expires_in": 2, "scope": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), 201);
    let body: Value = short.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let expires = humantime::parse_rfc3339(body["expires"].as_str().unwrap()).unwrap();
    let devices = format!("{}/api/devices", hub.api());
    assert_eq!(c.get(&devices).bearer_auth(&token).send().await.unwrap().status(), 200);
    while std::time::SystemTime::now() < expires {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.get(&devices).bearer_auth(&token).send().await.unwrap().status(), 401);

    let revoke =
        c.delete(format!("{tokens}/ci")).header("cookie", &cookie).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(revoke.status(), 204);
    assert_eq!(c.get(&devices).bearer_auth(&admin).send().await.unwrap().status(), 401, "revoked");

    // A bootstrap token must carry an expiry.
    let (code, _, err) = hub.cli(&["operator", "add", "--name", "robot", "--role", "member", "--token"]);
    assert_ne!(code, 0);
    assert!(err.contains("--expires"), "{err}");
    let kinds = kinds(&hub);
    for kind in [
        "operator.added",
        "operator.password_set",
        "operator.2fa_enrolled",
        "operator.login",
        "token.created",
        "operator.role_changed",
        "token.revoked",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_operators_session_stops_at_once_and_dashboard_operators_only_list_devices() {
    let hub = Hub::start();
    let bob = hub.account("bob", "viewer");
    let dash = hub.account("dash", "dashboard");
    let c = client();
    let (cookie, _) = session(&c, &hub, &bob).await;
    let devices = format!("{}/api/devices", hub.api());
    assert_eq!(c.get(&devices).header("cookie", &cookie).send().await.unwrap().status(), 200);
    let (code, _, err) = hub.cli(&["operator", "remove", "bob"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(c.get(&devices).header("cookie", &cookie).send().await.unwrap().status(), 401);
    let gone = login(&c, &hub, json!({"name": "bob", "password": bob.password, "totp": bob.code_at(unix_now())})).await;
    assert_eq!(gone.status(), 401);

    let (cookie, _) = session(&c, &hub, &dash).await;
    assert_eq!(c.get(&devices).header("cookie", &cookie).send().await.unwrap().status(), 200);
    for path in ["/api/devices/pump-1", "/api/devices/pump-1/audit", "/devices/pump-1/editor/"] {
        let r = c.get(format!("{}{path}", hub.api())).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let listed: Value = serde_json::from_str(&hub.cli(&["operator", "list"]).1).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["role"], "dashboard");
    assert!(!listed.to_string().contains(&dash.totp_secret), "no secret in the list");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_limited_before_hashing_and_audited_once_per_burst() {
    let hub = Hub::start();
    let ann = hub.account("ann", "owner");
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(login(&c, &hub, json!({"name": "ann", "password": "guess-guess-guess"})).await.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429; 5]);
    let limited =
        login(&c, &hub, json!({"name": "ann", "password": ann.password, "totp": ann.code_at(unix_now() + 30)})).await;
    assert_eq!(limited.status(), 429, "even the right password waits");
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let kinds = kinds(&hub);
    assert_eq!(kinds.iter().filter(|k| *k == "operator.login_failed").count(), 10);
    assert_eq!(kinds.iter().filter(|k| *k == "operator.login_limited").count(), 1, "one event per burst");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_audit_trail_verifies_and_a_changed_byte_is_named_by_its_seq() {
    let hub = Hub::start();
    let ann = hub.account("ann", "owner");
    let c = client();
    let (cookie, csrf) = session(&c, &hub, &ann).await;
    let out = c
        .post(format!("{}/api/logout", hub.api()))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(c.get(format!("{}/api/me", hub.api())).header("cookie", &cookie).send().await.unwrap().status(), 401);

    let (code, stdout, err) = hub.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
    let trail = hub.audit();
    assert!(stdout.contains(&format!("{} events", trail.len())), "{stdout}");
    assert_eq!(trail.last().unwrap()["kind"], "operator.logout");
    let (_, exported, _) = hub.cli(&["audit", "export"]);
    assert_eq!(exported.lines().count(), trail.len());

    // One byte of the third event (inside its detail or names) changed.
    let path = hub.state_dir().join("audit.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    let third = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0 + 1;
    let at = third + 40;
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(&path, &bytes).unwrap();
    let (code, _, err) = hub.cli(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("broken at seq 3"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_sets_an_account_up_with_the_qr_code_and_gets_its_recovery_codes_once() {
    let hub = Hub::start();
    let (code, setup, err) = hub.cli(&["operator", "add", "--name", "eve", "--role", "member"]);
    assert_eq!(code, 0, "{err}");
    let c = client();
    let api = hub.api();

    // What the browser sent comes back escaped.
    let evil = c.get(format!("{api}/setup?code=%22%3E%3Cscript%3Ealert(1)%3C/script%3E")).send().await.unwrap();
    assert!(evil.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let text = evil.text().await.unwrap();
    assert!(!text.contains("<script") && text.contains("&lt;script&gt;"), "{text}");

    let form = c.get(format!("{api}/setup?code={setup}")).send().await.unwrap();
    let cookie = form.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = hidden(&form.text().await.unwrap(), "csrf");
    let post = |path: &str, fields: Vec<(&str, String)>| {
        c.post(format!("{api}{path}")).header("cookie", &cookie).form(&fields).send()
    };
    let weak = post("/setup", vec![("csrf", csrf.clone()), ("code", setup.clone()), ("password", "short".into())])
        .await
        .unwrap();
    assert_eq!(weak.status(), 400);
    let password = "eve-has-a-long-password".to_string();
    let offered = post("/setup", vec![("csrf", csrf.clone()), ("code", setup.clone()), ("password", password.clone())])
        .await
        .unwrap();
    assert_eq!(offered.status(), 200);
    let page = offered.text().await.unwrap();
    assert!(page.contains("<svg"), "the QR code is inline");
    let key = page.split("Key: <code>").nth(1).unwrap().split('<').next().unwrap().to_string();
    let eve = Account { name: "eve".into(), password: password.clone(), totp_secret: key, recovery_codes: vec![] };
    let wrong =
        post("/setup/confirm", vec![("csrf", csrf.clone()), ("code", setup.clone()), ("totp", "000000".into())])
            .await
            .unwrap();
    assert_eq!(wrong.status(), 401);
    let done = post(
        "/setup/confirm",
        vec![("csrf", csrf.clone()), ("code", setup.clone()), ("totp", eve.code_at(unix_now()))],
    )
    .await
    .unwrap();
    assert_eq!(done.status(), 200);
    let page = done.text().await.unwrap();
    let codes: Vec<String> =
        page.split("<li><code>").skip(1).map(|s| s.split('<').next().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10);
    // The setup code is used up; a recovery code from the page opens the account.
    let again = post("/setup", vec![("csrf", csrf.clone()), ("code", setup.clone()), ("password", password.clone())])
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    let r = login(&c, &hub, json!({"name": "eve", "password": password, "recovery_code": codes[9]})).await;
    assert_eq!(r.status(), 200);
    // Without the form's cookie, a post is another site's: refused.
    let forged = c
        .post(format!("{api}/setup"))
        .form(&[("csrf", csrf.as_str()), ("code", "x"), ("password", "whatever-long-enough")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}
