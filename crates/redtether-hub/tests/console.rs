//! The operator console's defences and its hub-only pages, against a real hub: pages need a
//! session and go out under a strict CSP with no inline script or style; forms are refused
//! without the session's CSRF token, from another origin (also from a real page on another
//! site in Chromium), and by role; an owner enrolls a device and adds an operator, each secret
//! shown once; the API routes behind those pages answer scripts the same way; an owner makes a
//! group of simulated devices and follows a rollout on its page; a device's page charts the
//! resource figures it reports.

use redtether_testkit::browser::Browser;
use redtether_testkit::hub::{Hub, Session};
use redtether_testkit::{unix_now, wait_for_async};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;
use std::time::Duration;

fn plain_client() -> reqwest::Client {
    redtether_testkit::http::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Posts the form `fields` to `path` with `s`'s cookie and these extra headers.
async fn post_form(
    hub: &Hub,
    s: &Session,
    path: &str,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_str(&s.cookie).unwrap());
    for (k, v) in extra {
        headers
            .insert(reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    plain_client().post(format!("{}{path}", hub.api())).headers(headers).form(fields).send().await.unwrap()
}

async fn get_page(hub: &Hub, s: Option<&Session>, path: &str) -> reqwest::Response {
    let mut request = plain_client().get(format!("{}{path}", hub.api()));
    if let Some(s) = s {
        request = request.header("cookie", &s.cookie);
    }
    request.send().await.unwrap()
}

fn enroll_tokens_made(hub: &Hub) -> usize {
    hub.audit().iter().filter(|e| e["kind"] == "enroll_token.created").count()
}

/// The enroll form's fields with `csrf`.
fn enroll_form(csrf: &str) -> [(&'static str, &str); 3] {
    [("csrf", csrf), ("device", "pump-9"), ("expires_in", "1h")]
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_need_a_session_and_go_out_under_a_strict_csp_with_nothing_inline() {
    let hub = Hub::start();
    let ann = hub.account("ann", "owner");
    for path in ["/", "/devices", "/audit", "/enroll", "/operators", "/account", "/devices/pump-1"] {
        let answer = get_page(&hub, None, path).await;
        assert_eq!(answer.status(), 303, "{path}");
        let to: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
        assert_eq!(answer.headers()["location"], format!("/login?next={to}"), "{path}");
    }
    let s = hub.session(&ann);
    for path in ["/", "/devices", "/audit", "/enroll", "/operators", "/account"] {
        let answer = get_page(&hub, Some(&s), path).await;
        assert_eq!(answer.status(), 200, "{path}");
        let h = answer.headers();
        assert_eq!(
            h["content-security-policy"],
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
        );
        assert_eq!(
            (h["x-content-type-options"].to_str().unwrap(), h["referrer-policy"].to_str().unwrap()),
            ("nosniff", "same-origin")
        );
        assert_eq!(h["cache-control"], "no-store");
        let html = answer.text().await.unwrap();
        // Scripts only by src, no inline handlers or styles (the CSP would block them anyway).
        assert!(
            html.matches("<script").count() == html.matches("<script src=\"/assets/console.js?v=").count(),
            "{path}"
        );
        assert!(!html.contains(" style=") && !html.contains(" onclick=") && !html.contains(" onerror="), "{path}");
    }
    let script = get_page(&hub, None, "/assets/console.js").await;
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(get_page(&hub, None, "/assets/nothing.js").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn forms_without_the_csrf_token_from_another_origin_or_beyond_the_role_are_refused() {
    let hub = Hub::start();
    let api = hub.api();
    let ann = hub.account("ann", "owner");
    let vic = hub.account("vic", "viewer");
    let s = hub.session(&ann);
    let own = [("origin", api.as_str())];
    let before = enroll_tokens_made(&hub);

    let missing = post_form(&hub, &s, "/console/enroll", &enroll_form("")[1..], &own).await;
    assert_eq!(missing.status(), 403, "no CSRF token");
    let wrong = post_form(&hub, &s, "/console/enroll", &enroll_form("not-the-token"), &own).await;
    assert_eq!(wrong.status(), 403, "a wrong CSRF token");
    for evil in [[("origin", "http://evil.example")], [("origin", "null")], [("sec-fetch-site", "cross-site")]] {
        let answer = post_form(&hub, &s, "/console/enroll", &enroll_form(&s.csrf), &evil).await;
        assert_eq!(answer.status(), 403, "{evil:?}");
    }
    assert_eq!(enroll_tokens_made(&hub), before, "nothing refused made a token");

    // The same form, right: the exact enroll line, once.
    let made = post_form(&hub, &s, "/console/enroll", &enroll_form(&s.csrf), &own).await;
    assert_eq!(made.status(), 200);
    let html = made.text().await.unwrap();
    let line = html.split("<code id=\"secret-value\">").nth(1).unwrap().split("</code>").next().unwrap().to_string();
    let expected_start = format!("redtether enroll --hub {} --token rte_", hub.addr());
    assert!(line.starts_with(&expected_start), "{line}");
    assert!(line.ends_with(&format!("--ca-fingerprint {}", hub.fingerprint())), "{line}");
    assert_eq!(enroll_tokens_made(&hub), before + 1);
    let made = hub.audit().into_iter().rfind(|e| e["kind"] == "enroll_token.created").unwrap();
    assert_eq!((made["actor"].as_str(), made["target"].as_str()), (Some("user:ann"), Some("pump-9")));

    // A viewer's session, with its own CSRF token and origin: the role refuses.
    let v = hub.session(&vic);
    assert_eq!(post_form(&hub, &v, "/console/enroll", &enroll_form(&v.csrf), &own).await.status(), 403);
    let add = [("csrf", v.csrf.as_str()), ("name", "mallory"), ("role", "owner")];
    assert_eq!(post_form(&hub, &v, "/console/operators", &add, &own).await.status(), 403);
    assert!(!hub.cli(&["operator", "list"]).1.contains("mallory"));
    let page = get_page(&hub, Some(&v), "/operators").await;
    assert_eq!(page.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_on_another_site_cannot_post_the_consoles_forms_in_chromium() {
    let hub = Hub::start();
    let api = hub.api();
    let ann = hub.account("ann", "owner");
    let browser = Browser::start().await;
    // Logged in for real in this browser.
    browser.log_in(&api, "ann", &ann.password, &ann.code_at(unix_now() + 30), "/enroll").await;
    let before = enroll_tokens_made(&hub);
    // Another site's page posts the enroll form: the session cookie (SameSite=Strict) stays
    // home, and the hub asks for a login instead of making a token.
    let evil = format!(
        "<form method=post action=\"{api}/console/enroll\"><input name=device value=evil-1>\
         <input name=expires_in value=1h><input name=csrf value=guess><button id=go>go</button></form>"
    );
    use base64::Engine;
    browser.goto(&format!("data:text/html;base64,{}", base64::engine::general_purpose::STANDARD.encode(evil))).await;
    browser.click_and_load("#go").await;
    let landed = browser.current_url().await;
    assert_eq!(landed.path(), "/login", "{landed}");
    assert_eq!(enroll_tokens_made(&hub), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_adds_an_operator_in_chromium_and_the_setup_code_is_shown_once() {
    let hub = Hub::start();
    let api = hub.api();
    let ann = hub.account("ann", "owner");
    let browser = Browser::start().await;
    browser.log_in(&api, "ann", &ann.password, &ann.code_at(unix_now() + 30), "/operators").await;

    browser.fill("#add-operator input[name=name]", "bea").await;
    browser.click_and_load("#add-operator button").await;
    let code = browser.text("#secret-value").await;
    assert!(code.starts_with("rtsetup_"), "{code}");
    browser.screenshot("console-operators").await;
    // The enroll page, for the screenshot of each page.
    browser.goto(&format!("{api}/enroll")).await;
    browser.fill("#enroll-form input[name=device]", "pump-7").await;
    browser.click_and_load("#enroll-form button").await;
    assert!(browser.text("#secret-value").await.starts_with("redtether enroll --hub "));
    browser.screenshot("console-enroll").await;
    // The code works once at the setup API (the page that links it is the setup page).
    let offered = redtether_testkit::http::client()
        .post(format!("{api}/api/setup"))
        .json(&json!({ "code": code, "password": "bea-correct-horse-battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(offered.status(), 200);
    browser.goto(&format!("{api}/operators")).await;
    assert!(browser.texts("#secret").await.is_empty());
    let rows = browser.texts("#operators tbody tr").await;
    assert!(rows.iter().any(|r| r.starts_with("bea") && r.contains("viewer")), "{rows:?}");
    // Recorded as done by ann, not by the hub.
    let added =
        hub.audit().into_iter().find(|e| e["kind"] == "operator.added" && e["target"] == "operator:bea").unwrap();
    assert_eq!(added["actor"], "user:ann");

    // The API behind the page, for a script: an owner's token lists the accounts; a
    // member's is refused.
    let owner = hub.operator("ops", "owner");
    let member = hub.operator("mo", "member");
    let (status, list) = redtether_testkit::hub::api(&hub, reqwest::Method::GET, "/api/operators", Some(&owner)).await;
    assert_eq!(status, 200);
    assert!(list.as_array().unwrap().iter().any(|o| o["name"] == "bea"));
    assert_eq!(redtether_testkit::hub::api(&hub, reqwest::Method::GET, "/api/operators", Some(&member)).await.0, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_too_many_failed_logins_the_form_says_when_to_try_again() {
    let hub = Hub::start();
    let api = hub.api();
    hub.account("ann", "owner");
    let browser = Browser::start().await;
    // Someone guesses ann's password through the API, 30 guesses at once: each is checked
    // against the limit before its (slow) password check and charged after it, so together
    // they empty the account's bucket to its floor, whatever the machine's speed.
    let client = plain_client();
    let guesses = (0..30).map(|_| {
        let guess = json!({ "name": "ann", "password": "not-anns-password", "totp": "000000" });
        client.post(format!("{api}/api/login")).json(&guess).send()
    });
    futures_util::future::join_all(guesses).await;
    // At the form, she is told when she can log in again. (The bucket refills a little every
    // second, and a refill may let one more guess through first: that one fails as a guess.)
    let mut alert = String::new();
    for _ in 0..5 {
        browser.goto(&format!("{api}/login")).await;
        browser.fill("input[name=name]", "ann").await;
        browser.fill("input[name=password]", "not-anns-password").await;
        browser.click_and_load("button").await;
        alert = browser.text("[role=alert]").await;
        if alert != "Login failed." {
            break;
        }
    }
    assert!(alert.starts_with("Too many failed logins. Try again in "), "{alert}");
    assert!(alert.ends_with(" UTC)."), "{alert}");
    browser.screenshot("console-login-locked").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_replaces_their_authenticator_and_recovery_codes_and_changes_their_password() {
    let hub = Hub::start();
    let api = hub.api();
    let ann = hub.account("ann", "member");
    let browser = Browser::start().await;
    browser.log_in(&api, "ann", &ann.password, &ann.code_at(unix_now() + 30), "/account").await;

    // A new authenticator: the password again, a QR code and key, confirmed with its code.
    browser.fill("#totp-form input[name=password]", &ann.password).await;
    browser.click_and_load("#totp-form button").await;
    let key = browser.text("#totp-key").await;
    let width = browser.execute("return document.querySelector('.qr svg').getBoundingClientRect().width", &[]).await;
    assert!(width.as_f64().unwrap_or(0.0) >= 100.0, "a QR code is drawn");
    browser.screenshot("console-account-new-authenticator").await;
    let new_app = redtether_testkit::hub::Account { totp_secret: key.clone(), ..ann.clone() };
    browser.fill("#totp-confirm input[name=totp]", &new_app.code_at(unix_now())).await;
    browser.click_and_load("#totp-confirm button").await;
    let codes = browser.texts("#recovery-codes li code").await;
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| !ann.recovery_codes.contains(c)));

    // New recovery codes replace those; a wrong password is refused and changes nothing.
    browser.fill("#recovery-form input[name=password]", "not-the-password").await;
    browser.click_and_load("#recovery-form button").await;
    assert_eq!(browser.text("[role=alert]").await, "The password is not right.");
    browser.goto(&format!("{api}/account")).await;
    browser.fill("#recovery-form input[name=password]", &ann.password).await;
    browser.click_and_load("#recovery-form button").await;
    let renewed = browser.texts("#recovery-codes li code").await;
    assert_eq!(renewed.len(), 10);
    assert!(renewed.iter().all(|c| !codes.contains(c)));

    // A new password ends the session; the new password and the new authenticator log in.
    browser.goto(&format!("{api}/account")).await;
    browser.fill("#password-form input[name=current]", &ann.password).await;
    browser.fill("#password-form input[name=new]", "ann-a-brand-new-passphrase").await;
    browser.click_and_load("#password-form button").await;
    assert_eq!(browser.current_url().await.path(), "/login");
    browser.goto(&format!("{api}/account")).await;
    assert_eq!(browser.current_url().await.path(), "/login", "the old session ended");
    browser.log_in(&api, "ann", "ann-a-brand-new-passphrase", &new_app.code_at(unix_now() + 30), "/account").await;

    let trail = hub.audit();
    let kinds: Vec<&str> =
        trail.iter().filter(|e| e["target"] == "operator:ann").filter_map(|e| e["kind"].as_str()).collect();
    assert!(
        kinds.ends_with(&["operator.2fa_enrolled", "operator.recovery_codes_renewed", "operator.password_set"]),
        "{kinds:?}"
    );

    // An API token cannot do any of it: only a logged-in person.
    let token = hub.operator("ci", "owner");
    let client = plain_client();
    let answer = client
        .post(format!("{api}/api/me/password"))
        .bearer_auth(&token)
        .json(&json!({ "current": "x", "new": "y-long-enough-password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_groups_devices_and_follows_a_rollout_in_chromium() {
    let hub = Hub::start_logging("info");
    let api = hub.api();
    let ann = hub.account("ann", "owner");
    let (sim, devices) = redtether_testkit::hub::simulated_fleet(&hub, "line", 6).await;
    let browser = Browser::start().await;
    browser.log_in(&api, "ann", &ann.password, &ann.code_at(unix_now() + 30), "/groups").await;
    browser.fill("#new-group input[name=name]", "line").await;
    browser.fill("#new-group input[name=description]", "<script>alert(1)</script> press line").await;
    browser.click_and_load("#new-group button").await;
    assert_eq!(browser.current_url().await.path(), "/groups/line");
    // What an operator typed is shown as text.
    assert_eq!(browser.text("#description").await, "<script>alert(1)</script> press line");
    let ids: Vec<&str> = devices.iter().map(|d| d.id()).collect();
    browser.fill("#add-devices input[name=add]", &ids.join(", ")).await;
    browser.click_and_load("#add-devices button").await;
    assert_eq!(browser.texts("#members tbody tr").await.len(), 6);

    let flows = r#"[{"id":"t1","type":"tab","label":"line v2"},{"id":"n1","type":"inject","z":"t1"}]"#;
    browser.fill("#rollout textarea[name=flows]", flows).await;
    browser.fill("#rollout input[name=waves]", "50, 100").await;
    browser.fill("#rollout input[name=wait]", "0s").await;
    // The page asks before a rollout starts; the test says yes.
    browser.execute("window.confirm = () => true;", &[]).await;
    browser.click_and_load("#rollout button.primary").await;
    let url = browser.current_url().await;
    assert!(url.path().starts_with("/rollouts/"), "{url}");
    let state = wait_for_async(Duration::from_secs(60), "the rollout page to say completed", || async {
        browser.goto(url.as_str()).await;
        let state = browser.text("#rollout-summary strong").await;
        (state == "completed").then_some(state)
    })
    .await;
    assert_eq!(state, "completed");
    assert_eq!(browser.texts("table.stage tbody tr").await.len(), 6);
    assert_eq!(browser.texts("h2").await[..3], ["Canary (1)".to_string(), "Stage 2 (3)".into(), "Stage 3 (2)".into()]);
    browser.screenshot("console-rollout").await;
    for d in &devices {
        assert_eq!(d.current_snapshot()["flows"][0]["label"], "line v2", "{}", d.id());
    }
    browser.goto(&format!("{api}/groups/line")).await;
    assert_eq!(browser.texts("#rollouts tbody tr").await.len(), 1);
    browser.screenshot("console-group").await;

    // A viewer sees the group and the rollout, and no form to change either.
    let vic = hub.account("vic", "viewer");
    let viewer = Browser::start().await;
    viewer.log_in(&api, "vic", &vic.password, &vic.code_at(unix_now() + 30), "/groups/line").await;
    assert_eq!(viewer.texts("#members tbody tr").await.len(), 6);
    assert!(viewer.texts("form#rollout, form#add-devices, #members form").await.is_empty());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_devices_page_charts_its_resource_figures_in_chromium() {
    let hub = Hub::start_logging("info");
    let api = hub.api();
    let token = hub.operator("ops", "viewer");
    let vic = hub.account("vic", "viewer");
    let mut config = redtether_testkit::simulator::SimConfig::new(&hub.addr(), &hub.fingerprint()).await.unwrap();
    config.status_every = Duration::from_millis(200);
    config.resources = true;
    let sim = redtether_testkit::simulator::Simulator::new(config).unwrap();
    let hub_ref = &hub;
    sim.enroll_many(vec!["kiln-1".into()], |name| async move { hub_ref.enroll_token_async(&name).await })
        .await
        .unwrap();
    sim.wait_connected(1, Duration::from_secs(30)).await.unwrap();
    let client = redtether_testkit::http::client();
    wait_for_async(Duration::from_secs(30), "resource figures at the hub", || async {
        let body: serde_json::Value = client
            .get(format!("{api}/api/devices/kiln-1/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["samples"].as_array()?.iter().any(|s| s["node_red_cpu_percent"].is_number()).then_some(())
    })
    .await;

    let browser = Browser::start().await;
    browser.log_in(&api, "vic", &vic.password, &vic.code_at(unix_now() + 30), "/devices/kiln-1").await;
    let captions = browser.texts("#resources figcaption").await;
    assert_eq!(captions.len(), 4, "{captions:?}");
    assert!(captions[0].starts_with("Node-RED CPU: ") && captions[0].ends_with('%'), "{captions:?}");
    assert!(captions[1].ends_with(" MiB") && captions[3].ends_with(" GiB"), "{captions:?}");
    // Each chart is a drawn line (server-made SVG; the strict CSP is untouched).
    for figure in ["node_red_cpu_percent", "node_red_rss_bytes", "event_loop_lag_ms", "disk_free_bytes"] {
        let d = browser.property(&format!("figure[data-figure={figure}] svg path"), "outerHTML").await.unwrap();
        assert!(d.contains(" d=\"M"), "{figure}: {d}");
    }
    browser.screenshot("console-device-charts").await;
    sim.shutdown().await;
}
