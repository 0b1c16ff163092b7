//! The operator console in a real browser (headless Chromium over WebDriver) against a real
//! hub and a real agent running the fixture Node-RED: an owner logs in with TOTP, sees the
//! device online, turns protection on from the *Security* tab until the device applies it (and
//! a deploy through the editor is then refused), makes a token shown once, takes a snapshot and
//! deploys it until applied, reads the SBOM with outdated packages (against a stand-in npm
//! registry), and watches the device go offline in the list without reloading it. Screenshots
//! of each page go to `target/console/`.

use common::browser::Browser;
use common::hub::{Account, Hub, enroll, online_agent, wait_online};
use common::{npm_registry, unix_now};
use nix::sys::signal::Signal;
use redtether_testkit as common;
use std::time::Duration;

/// Long enough for a policy or deployment to cross the tunnel and be applied, on a slow CI.
const APPLY: Duration = Duration::from_secs(30);

/// Logs `account` in at the form the console sends the browser to, with the code of the TOTP
/// step after the one its setup used (each step is accepted once), landing at `next`.
async fn log_in(browser: &Browser, api: &str, account: &Account, next: &str) {
    let code = account.code_at(unix_now() + 30);
    browser.log_in(api, &account.name, &account.password, &code, next).await;
}

/// Reloads the page until `selector`'s text contains `expected` (pages that wait for a device
/// reload themselves too; this does not depend on it).
async fn reload_until(browser: &Browser, url: &str, selector: &str, expected: &str) -> String {
    common::wait_for_async(APPLY, &format!("{selector} to say {expected:?} at {url}"), || async {
        browser.goto(url).await;
        let text = browser.texts(selector).await.join("\n");
        text.contains(expected).then_some(text)
    })
    .await
}

#[test]
fn an_owner_runs_a_real_device_from_the_console() {
    // Outside the test's runtime: the stand-in registry has a runtime of its own, which must
    // not be dropped from inside another.
    let registry = npm_registry::Registry::start(&[("node-red", "99.0.0")]);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(owner_runs_a_device(&registry.url));
}

async fn owner_runs_a_device(registry: &str) {
    let hub = Hub::start();
    let api = hub.api();
    let node_red = format!("{}\nhealth_interval = \"500ms\"", common::agent::fixture_node_red());
    let mut agent = common::agent::Agent::start_full(&node_red, "", None, &[("npm_config_registry", registry)]);
    agent.wait_running();
    let out = enroll(&agent.config, &hub, "pump-c");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);
    let ann = hub.account("ann", "owner");
    let browser = Browser::start().await;

    // The login form, then the device list with the device online.
    browser.goto(&format!("{api}/login")).await;
    browser.screenshot("console-login").await;
    log_in(&browser, &api, &ann, "/devices").await;
    assert_eq!(browser.text("[data-device=pump-c] [data-online] .label").await, "online");
    browser.screenshot("console-devices").await;

    // The overview counts it.
    browser.goto(&format!("{api}/")).await;
    let summary = browser.text("#summary").await;
    assert!(summary.contains("1\ndevices") && summary.contains("1\nonline"), "{summary}");
    browser.screenshot("console-overview").await;

    // Security: protection on, applied by the device; a deploy through the editor is refused.
    let device = format!("{api}/devices/pump-c");
    browser.goto(&format!("{device}?tab=security")).await;
    browser.click("#policy-form input[name=protection]").await;
    browser.click_and_load("#policy-form button").await;
    let state = reload_until(&browser, &format!("{device}?tab=security"), "#policy-state", "applied").await;
    assert!(state.contains("Policy 1"), "{state}");
    browser.screenshot("console-device-security").await;
    let ops = hub.operator("ops", "owner");
    let refused = common::http::client()
        .post(format!("{device}/editor/flows"))
        .bearer_auth(&ops)
        .header("node-red-api-version", "v2")
        .header("node-red-deployment-type", "full")
        .json(&serde_json::json!({ "flows": [{ "id": "t", "type": "tab" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "protection mode refuses the editor's deploy");

    // A token, shown once: on the answer to the form, and never again.
    browser.fill("#token-form input[name=name]", "hmi").await;
    browser.fill("#token-form input[name=expires_in]", "7d").await;
    browser.click_and_load("#token-form button").await;
    let token = browser.text("#new-token-value").await;
    assert!(token.len() > 20, "{token:?}");
    browser.screenshot("console-token-shown-once").await;
    browser.goto(&format!("{device}?tab=security")).await;
    assert!(browser.texts("#new-token").await.is_empty(), "the token is not shown again");
    let page = browser.execute("return document.documentElement.outerHTML", &[]).await;
    assert!(!page.as_str().unwrap_or_default().contains(&token));
    assert!(browser.texts("#tokens td").await.iter().any(|t| t == "hmi"));

    // A snapshot from the device, deployed back until applied.
    browser.goto(&format!("{device}?tab=snapshots")).await;
    browser.click_and_load("#tab form button").await;
    assert_eq!(browser.texts("#snapshots tbody tr").await.len(), 1);
    browser.screenshot("console-device-snapshots").await;
    browser.goto(&format!("{device}?tab=deployments")).await;
    browser.click_and_load("#deploy-snapshot button").await;
    let history =
        reload_until(&browser, &format!("{device}?tab=deployments"), "#deployments tbody tr", "applied").await;
    assert!(history.starts_with('1'), "{history}");
    browser.screenshot("console-device-deployments").await;

    // Flows pasted into the form, deployed until applied; a second snapshot, compared with
    // the first: the new tab added.
    browser.fill("#flows", r#"[{"id": "console-tab", "type": "tab", "label": "from the console"}]"#).await;
    browser.click_and_load("#deploy-flows button").await;
    let history =
        reload_until(&browser, &format!("{device}?tab=deployments"), "#deployments tbody tr:first-child", "applied")
            .await;
    assert!(history.starts_with('2'), "{history}");
    browser.goto(&format!("{device}?tab=snapshots")).await;
    browser.click_and_load("#tab form button").await;
    let (_, snapshots) =
        common::hub::api(&hub, reqwest::Method::GET, "/api/devices/pump-c/snapshots", Some(&ops)).await;
    let mut snapshots = snapshots.as_array().unwrap().clone();
    snapshots.sort_by_key(|s| s["created"].as_str().unwrap_or_default().to_string());
    let ids: Vec<&str> = snapshots.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    browser.goto(&format!("{device}?tab=snapshots&a={}&b={}", ids[0], ids[1])).await;
    let changes = browser.texts("#comparison tbody tr").await;
    assert!(changes.contains(&"added console-tab tab".to_string()), "{changes:?}");
    browser.screenshot("console-device-snapshot-comparison").await;

    // The SBOM, with Node-RED outdated against the stand-in registry.
    browser.goto(&format!("{device}?tab=sbom")).await;
    browser.click_and_load("#tab form button").await;
    let outdated = browser.texts("#packages tr.outdated td:first-child").await;
    assert!(outdated.contains(&"node-red".to_string()), "{outdated:?}");
    assert!(!browser.text("#outdated-count").await.starts_with("0 "));
    browser.screenshot("console-device-sbom").await;

    // Someone on the device's network tries a user name made of markup; the device audits it,
    // delivers it, and the console shows it as text, running nothing even with its CSP off.
    let payload = "\"><img src=x onerror=\"window.__pwned=true\"><script>window.__pwned=true</script>";
    let tried = common::http::client()
        .get(format!("{}/ui-probe", agent.gate_url()))
        .basic_auth(payload, Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(tried.status(), 401);
    let filtered = format!("{api}/audit?device=pump-c&kind=auth.failed");
    common::wait_for_async(APPLY, "the device's auth.failed at the hub", || async {
        let (_, page) =
            common::hub::api(&hub, reqwest::Method::GET, "/api/audit?device=pump-c&kind=auth.failed", Some(&ops)).await;
        page["events"].as_array().is_some_and(|e| !e.is_empty()).then_some(())
    })
    .await;
    browser.bypass_csp().await;
    browser.goto(&filtered).await;
    let kinds = browser.texts("#audit tbody td:nth-child(4)").await;
    assert!(!kinds.is_empty() && kinds.iter().all(|k| k == "auth.failed"), "{kinds:?}");
    let details = browser.texts("#audit tbody td pre").await;
    let claimed: Vec<String> = details
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok()?["claimed"].as_str().map(str::to_string))
        .collect();
    assert!(claimed.iter().any(|c| c == payload), "the claimed name shown as text: {details:?}");
    let injected =
        browser.execute("return document.querySelectorAll('img, svg, iframe, script:not([src])').length", &[]).await;
    assert_eq!(injected, 0, "no markup from the device got into the page");
    assert_eq!(browser.execute("return window.__pwned === true", &[]).await, false, "no script ran");
    browser.screenshot("console-audit").await;
    // The same filters exported: CSV with the payload as one quoted field, and JSON Lines.
    let export = |format: &str| {
        common::http::client()
            .get(format!("{api}/api/audit/export?format={format}&device=pump-c&kind=auth.failed"))
            .bearer_auth(&ops)
            .send()
    };
    let csv = export("csv").await.unwrap().text().await.unwrap();
    // The detail column is the detail's JSON, its quotes doubled as CSV quotes them.
    let in_csv = serde_json::to_string(payload).unwrap().replace('"', "\"\"");
    assert!(csv.lines().nth(1).is_some_and(|l| l.contains(&in_csv) && l.ends_with("}\"")), "{csv}");
    let jsonl = export("jsonl").await.unwrap().text().await.unwrap();
    let rows: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), kinds.len());
    assert!(rows.iter().all(|r| r["kind"] == "auth.failed" && r["device"] == "pump-c"));

    // The device stops: the list, left open, says so without being reloaded.
    browser.goto(&format!("{api}/devices")).await;
    browser.execute("window.__not_reloaded = true", &[]).await;
    common::wait_for_async(Duration::from_secs(10), "the live stream", || async {
        (browser.execute("return document.body.getAttribute('data-live')", &[]).await == "connected").then_some(())
    })
    .await;
    agent.signal(Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(20));
    common::wait_for_async(Duration::from_secs(20), "the row to say offline", || async {
        (browser.text("[data-device=pump-c] [data-online] .label").await == "offline").then_some(())
    })
    .await;
    assert_eq!(browser.execute("return window.__not_reloaded === true", &[]).await, true, "no reload");
    browser.screenshot("console-devices-offline").await;
}

/// The console's write controls on the page shown: every form that posts, but the logout.
async fn write_controls(browser: &Browser) -> Vec<String> {
    let found = browser
        .execute(
            "return [...document.querySelectorAll('form[method=post]')].map(f => f.getAttribute('action'))\
             .filter(a => a !== '/console/logout')",
            &[],
        )
        .await;
    serde_json::from_value(found).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_sees_no_write_control_and_forged_writes_are_refused() {
    let hub = Hub::start();
    let api = hub.api();
    let agent = online_agent(&hub, "pump-v", "");
    let vic = hub.account("vic", "viewer");
    let ann = hub.account("ann", "owner");
    let browser = Browser::start().await;
    log_in(&browser, &api, &vic, "/devices/pump-v").await;
    // The viewer's session, for forging requests below: the browser's own (a TOTP step logs
    // in once, so a second login now would be refused as a replay).
    let cookie = browser.cookie("redtether_session").await.expect("a session");
    browser.goto(&format!("{api}/api/me")).await;
    let me: serde_json::Value = serde_json::from_str(&browser.text("pre").await).unwrap();
    let v = common::hub::Session {
        cookie: format!("redtether_session={}", cookie.value),
        csrf: me["csrf_token"].as_str().unwrap().to_string(),
    };
    for tab in ["security", "deployments", "snapshots", "audit", "sbom"] {
        browser.goto(&format!("{api}/devices/pump-v?tab={tab}")).await;
        assert_eq!(write_controls(&browser).await, Vec::<String>::new(), "{tab}");
    }
    browser.screenshot("console-device-as-viewer").await;
    // The owner's page of the same device has them (the check above can see forms).
    let browser_of_ann = Browser::start().await;
    log_in(&browser_of_ann, &api, &ann, "/devices/pump-v").await;
    assert!(write_controls(&browser_of_ann).await.iter().any(|a| a == "/console/devices/pump-v/restart"));

    // The viewer forges the forms and the API calls anyway, with a valid session, CSRF token
    // and origin: the role refuses each, and nothing reaches the device.
    let client = common::http::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (path, fields) in [
        ("/console/devices/pump-v/restart", vec![]),
        ("/console/devices/pump-v/policy", vec![("protection", "on"), ("http_auth", "none")]),
        ("/console/devices/pump-v/tokens", vec![("name", "mine"), ("expires_in", "1d")]),
        ("/console/devices/pump-v/deploy", vec![("flows", "[]")]),
    ] {
        let mut form = vec![("csrf", v.csrf.as_str())];
        form.extend(fields);
        let answer = client
            .post(format!("{api}{path}"))
            .header("cookie", &v.cookie)
            .header("origin", &api)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{path}");
    }
    let put = client
        .put(format!("{api}/api/devices/pump-v/policy"))
        .header("cookie", &v.cookie)
        .header("x-csrf-token", &v.csrf)
        .json(&serde_json::json!({ "protection": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403);
    assert_eq!(agent.status()["node_red"]["restarts"], 0, "Node-RED was not restarted");
    assert!(agent.events("policy.applied").is_empty(), "no policy reached the device");
}
