//! The hub's login pages in a real browser (headless Chromium over WebDriver, from the test
//! kit): a person sets their account up from the setup link (QR code, key, ten recovery codes)
//! and logs in with password and TOTP, landing where they were going; a wrong code gets no
//! session and a recovery code works once; markup slipped into `next` or the setup code is shown
//! as text and runs nothing even with the page's CSP switched off; single sign-on through a real
//! OpenID provider on another site ends logged in with the provider's role. Screenshots go to
//! `target/console/`.

use base64::Engine;
use redtether_testkit::browser::Browser;
use redtether_testkit::hub::{Account, Hub};
use redtether_testkit::oidc::{OidcClient, OidcProvider, OidcUser};
use redtether_testkit::unix_now;
use serde_json::Value;

/// Where the people of these tests were going when the hub asked them to log in; no device of
/// that name exists (the hub answers for it all the same once they are logged in).
const NEXT: &str = "/devices/pump-1/editor/";

/// `GET /api/me` in the browser: the operator as the hub sees this browser's session, or the
/// hub's error (`{"error": "unauthorized"}`).
async fn me(browser: &Browser, api: &str) -> Value {
    browser.goto(&format!("{api}/api/me")).await;
    // Chromium shows a JSON answer as text in a <pre>.
    let text = browser.text("pre").await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("/api/me is not JSON ({e}): {text}"))
}

/// Asserts that the browser is logged in as `name` with a session cookie scripts cannot read and
/// other sites' links do not carry.
async fn assert_logged_in(browser: &Browser, api: &str, name: &str, role: &str, source: &str) {
    let me = me(browser, api).await;
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str(), me["source"].as_str()),
        (Some(name), Some(role), Some(source)),
        "{me}"
    );
    let cookie = browser.cookie("redtether_session").await.expect("a session cookie");
    assert!(cookie.http_only && cookie.same_site.as_deref() == Some("Strict"), "{cookie:?}");
}

/// Logs in at the form with `name` and `password`; returns with the next page (the code form
/// when they are right) shown.
async fn password_step(browser: &Browser, name: &str, password: &str) {
    browser.fill("input[name=name]", name).await;
    browser.fill("input[name=password]", password).await;
    browser.click_and_load("button").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_sets_up_their_account_in_chromium_then_logs_in_with_totp_and_lands_at_next() {
    let hub = Hub::start();
    let api = hub.api();
    let (code, setup, err) = hub.cli(&["operator", "add", "--name", "ann", "--role", "owner"]);
    assert_eq!(code, 0, "{err}");
    let browser = Browser::start().await;

    // The setup link from the administrator: the code is filled in, the person picks a password.
    browser.goto(&format!("{api}/setup?code={setup}")).await;
    assert_eq!(browser.property("input[name=code]", "value").await.as_deref(), Some(setup.as_str()));
    let password = "ann-correct-horse-battery";
    browser.fill("input[name=password]", password).await;
    browser.click_and_load("button").await;

    // A QR code drawn on the page, and the same secret as text for typing.
    let key = browser.text("p code").await;
    assert!(key.len() >= 16 && key.bytes().all(|b| matches!(b, b'A'..=b'Z' | b'2'..=b'7')), "key {key:?}");
    let qr_width = browser
        .execute("const s = document.querySelector('svg'); return s ? s.getBoundingClientRect().width : 0", &[])
        .await;
    assert!(qr_width.as_f64().unwrap_or(0.0) >= 100.0, "no QR code drawn ({qr_width})");
    browser.screenshot("setup-qr").await;
    let ann = Account { name: "ann".into(), password: password.into(), totp_secret: key, recovery_codes: Vec::new() };
    browser.fill("input[name=totp]", &ann.code_at(unix_now())).await;
    browser.click_and_load("button").await;

    assert_eq!(browser.text("h1").await, "ann is set up");
    let codes = browser.texts("li code").await;
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert!(codes.iter().all(|c| c.len() >= 8) && codes.iter().collect::<std::collections::HashSet<_>>().len() == 10);
    browser.screenshot("setup-recovery-codes").await;

    // Later: the person opens an editor link, is sent to the login form, and comes back there.
    browser.goto(&format!("{api}{NEXT}")).await;
    let login = browser.current_url().await;
    assert_eq!((login.path(), login.query()), ("/login", Some(format!("next={NEXT}").as_str())));
    browser.screenshot("login").await;
    password_step(&browser, "ann", password).await;
    browser.screenshot("login-code").await;
    // The setup used the code of this 30-second step; each step is accepted once.
    browser.fill("input[name=code]", &ann.code_at(unix_now() + 30)).await;
    browser.click_and_load("button").await;
    let landed = browser.wait_for_url(NEXT, |u| u.path() == NEXT).await;
    assert_eq!(landed.as_str(), format!("{api}{NEXT}"));
    assert_logged_in(&browser, &api, "ann", "owner", "local").await;
    assert_eq!(me(&browser, &api).await["session"]["method"], "password");
}

/// A six-digit code that is not `account`'s at the previous, this or the next step.
fn wrong_code(account: &Account) -> String {
    let now = unix_now();
    let valid = [now - 30, now, now + 30, now + 60].map(|t| account.code_at(t));
    (0..).map(|n| format!("{:06}", (123_456 + n) % 1_000_000)).find(|c| !valid.contains(c)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_code_gets_no_session_and_a_recovery_code_works_once_in_chromium() {
    let hub = Hub::start();
    let api = hub.api();
    let bob = hub.account("bob", "member");
    let browser = Browser::start().await;

    browser.goto(&format!("{api}/login?next={NEXT}")).await;
    password_step(&browser, "bob", &bob.password).await;
    browser.fill("input[name=code]", &wrong_code(&bob)).await;
    browser.click_and_load("button").await;
    assert_eq!(browser.text("[role=alert]").await, "Login failed.");
    assert_eq!(browser.current_url().await.path(), "/login");
    assert!(browser.cookie("redtether_session").await.is_none());
    assert_eq!(me(&browser, &api).await, serde_json::json!({ "error": "unauthorized" }));

    // A recovery code instead of the authenticator's code.
    browser.goto(&format!("{api}/login?next={NEXT}")).await;
    password_step(&browser, "bob", &bob.password).await;
    browser.fill("input[name=code]", &bob.recovery_codes[0]).await;
    browser.click_and_load("button").await;
    browser.wait_for_url(NEXT, |u| u.path() == NEXT).await;
    assert_logged_in(&browser, &api, "bob", "member", "local").await;

    // Without that session (its cookies deleted), the same recovery code is refused; another
    // one works.
    browser.delete_cookies().await;
    assert_eq!(me(&browser, &api).await["error"], "unauthorized");
    browser.goto(&format!("{api}/login?next={NEXT}")).await;
    password_step(&browser, "bob", &bob.password).await;
    browser.fill("input[name=code]", &bob.recovery_codes[0]).await;
    browser.click_and_load("button").await;
    assert_eq!(browser.text("[role=alert]").await, "Login failed.");
    assert!(browser.cookie("redtether_session").await.is_none());
    browser.fill("input[name=code]", &bob.recovery_codes[1]).await;
    browser.click_and_load("button").await;
    browser.wait_for_url(NEXT, |u| u.path() == NEXT).await;
    assert_logged_in(&browser, &api, "bob", "member", "local").await;

    // The hub saw it the same way: two refused codes, two logins with a recovery code.
    let trail = hub.audit();
    let of = |kind: &str, key: &str| -> Vec<String> {
        trail
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["detail"][key].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(of("operator.login_failed", "reason"), ["wrong_totp", "wrong_recovery_code"]);
    assert_eq!(of("operator.login", "second_factor"), ["recovery_code", "recovery_code"]);
}

/// What each test payload does if a page pastes it unescaped: the flag a test looks for.
const FLAG: &str = "window.__pwned === true";
/// Markup that sets the flag where a page puts it between tags or in a quoted attribute.
const PAYLOADS: [&str; 2] = ["\"><img src=x onerror=\"window.__pwned=true\">", "<script>window.__pwned=true</script>"];
/// The same without spaces, so that the hub takes it as a `next` under `/devices/` (it puts
/// any other `next` back to `/`) and writes it into the page.
const NEXT_PAYLOADS: [&str; 2] =
    ["/devices/\"><svg/onload=window.__pwned=true>/", "/devices/\"><script>window.__pwned=true</script>/"];

/// Asserts that no markup got into the page (it has no image, SVG, script or frame of its
/// own), that no script set the flag, and that `selector`'s value is `expected`, as text.
async fn assert_inert(browser: &Browser, selector: &str, expected: &str) {
    let url = browser.current_url().await;
    let injected = browser.execute("return document.querySelectorAll('img, svg, script, iframe').length", &[]).await;
    assert_eq!(injected, 0, "markup got into {url}");
    assert_eq!(browser.execute(&format!("return {FLAG}"), &[]).await, false, "a script ran at {url}");
    assert_eq!(browser.property(selector, "value").await.as_deref(), Some(expected), "at {url}");
}

/// Waits until `condition` (a JavaScript expression) is true in the page.
async fn wait_for_script(browser: &Browser, condition: &str, what: &str) {
    let script = format!("return {condition}");
    redtether_testkit::wait_for_async(std::time::Duration::from_secs(5), what, || async {
        (browser.execute(&script, &[]).await == true).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn markup_in_next_or_code_shows_as_text_and_runs_no_script_even_without_the_csp() {
    let hub = Hub::start();
    let api = hub.api();
    let cy = hub.account("cy", "member");
    let browser = Browser::start().await;
    browser.bypass_csp().await;
    // The check sees a script run: the same markup on a page of its own with the hub's CSP
    // (which this browser now ignores) sets the flag.
    let bare = format!("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\">{}", PAYLOADS[0]);
    browser.goto(&format!("data:text/html;base64,{}", base64::engine::general_purpose::STANDARD.encode(bare))).await;
    wait_for_script(&browser, FLAG, "the flag set on the control page").await;
    // And the hub's pages are no exception: an inline handler a script adds to one runs.
    browser.goto(&format!("{api}/login")).await;
    browser
        .execute("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.__probe=true\">')", &[])
        .await;
    wait_for_script(&browser, "window.__probe === true", "an inline handler to run on the hub's login page").await;

    let with_query = |path: &str, key: &str, value: &str| {
        reqwest::Url::parse_with_params(&format!("{api}{path}"), [(key, value)]).unwrap().to_string()
    };
    for next in PAYLOADS.iter().chain(&NEXT_PAYLOADS) {
        // The hub follows only its own paths after a login: anything else becomes `/`.
        let kept = if next.starts_with("/devices/") { *next } else { "/" };
        browser.goto(&with_query("/login", "next", next)).await;
        assert_inert(&browser, "input[name=next]", kept).await;
        // Posted back with a wrong password: the form again, with the same `next`.
        browser.fill("input[name=name]", "cy").await;
        browser.fill("input[name=password]", "not-cy's-password").await;
        browser.click_and_load("button").await;
        assert_eq!(browser.text("[role=alert]").await, "Login failed.");
        assert_inert(&browser, "input[name=next]", kept).await;
        // The right one: the code form carries `next` on.
        password_step(&browser, "cy", &cy.password).await;
        assert_inert(&browser, "input[name=next]", kept).await;
    }
    for code in PAYLOADS {
        browser.goto(&with_query("/setup", "code", code)).await;
        assert_inert(&browser, "input[name=code]", code).await;
    }

    // With its CSP, as browsers get them, the pages allow no script at all.
    let client = redtether_testkit::http::client();
    for path in ["/login", "/setup"] {
        let r = client.get(format!("{api}{path}")).send().await.unwrap();
        let csp = r.headers().get("content-security-policy").map(|v| v.to_str().unwrap().to_string());
        assert!(
            csp.as_deref().is_some_and(|c| c.split(';').any(|d| d.trim() == "default-src 'none'")),
            "{path}: {csp:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn single_sign_on_in_chromium_logs_in_at_the_provider_and_comes_back_with_its_role() {
    // The hub as browsers reach it, `localhost`, and the provider at 127.0.0.1 are two sites,
    // as in a deployment: the way back from the provider is a cross-site navigation.
    let port = Hub::free_api_port();
    let public = format!("http://localhost:{port}");
    let client = OidcClient::new("redtether-hub", "hub-secret", &format!("{public}/auth/oidc/callback"));
    let provider = OidcProvider::start(&[client], &[OidcUser::new("dora", "dora-pw", &["plant-admins"])]);
    let extra = format!(
        "[auth.oidc]\nissuer = {:?}\nclient_id = \"redtether-hub\"\nclient_secret = \"hub-secret\"\n\
         public_url = {public:?}\nrole_map = {{ \"plant-admins\" = \"owner\" }}\n",
        provider.issuer()
    );
    let _hub = Hub::start_on("debug", &format!("127.0.0.1:{port}"), &extra);
    let browser = Browser::start().await;

    browser.goto(&format!("{public}{NEXT}")).await;
    assert_eq!(browser.current_url().await.path(), "/login");
    browser.click_and_load("a[href^='/auth/oidc/login']").await;
    // The provider's own form, on its own site.
    browser.fill("input[name=login]", "dora").await;
    let at_provider = browser.current_url().await;
    assert_eq!(at_provider.origin().ascii_serialization(), provider.issuer(), "{at_provider}");
    browser.fill("input[name=password]", "dora-pw").await;
    browser.click_and_load("button[type=submit]").await;

    let landed = browser.wait_for_url(NEXT, |u| u.path() == NEXT).await;
    assert_eq!(landed.as_str(), format!("{public}{NEXT}"));
    assert_logged_in(&browser, &public, "dora", "owner", "oidc").await;
    assert_eq!(me(&browser, &public).await["session"]["method"], "oidc");
}
