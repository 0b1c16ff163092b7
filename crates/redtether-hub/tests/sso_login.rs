//! Single sign-on through the hub against real servers: a browser logs in with a real OpenID
//! provider (panva's oidc-provider) and gets the role its groups map to, a changed group gives
//! the new role at the next login, no mapped group no login; LDAP passwords against a real
//! slapd (group → role, wrong password, unknown user); `password_login = false` closes local
//! password logins. Every outcome is in the hub's audit trail.

use redtether_testkit::hub::Hub;
use redtether_testkit::ldap::{self as dir, LdapGroup, LdapUser, Slapd};
use redtether_testkit::oidc::{OidcClient, OidcProvider, OidcUser, browser_client, login_through};
use serde_json::{Value, json};

/// A hub configured for the provider, on an API port known before it starts.
fn hub_with_provider(users: &[OidcUser], password_login: bool) -> (Hub, OidcProvider) {
    let port = Hub::free_api_port();
    let public = format!("http://127.0.0.1:{port}");
    let client = OidcClient::new("redtether-hub", "hub-secret", &format!("{public}/auth/oidc/callback"));
    let provider = OidcProvider::start(&[client], users);
    let extra = format!(
        "[auth.oidc]\nissuer = {:?}\nclient_id = \"redtether-hub\"\nclient_secret = \"hub-secret\"\npublic_url = {public:?}\n\
         password_login = {password_login}\nrole_map = {{ \"plant-admins\" = \"owner\", \"operators\" = \"member\", \"tv\" = \"dashboard\" }}\n",
        provider.issuer()
    );
    let hub = Hub::start_on("debug", &format!("127.0.0.1:{port}"), &extra);
    (hub, provider)
}

/// A browser's whole SSO login; returns the browser (holding the session) and `GET /api/me`.
async fn browser_login(hub: &Hub, login: &str, password: &str) -> (reqwest::Client, reqwest::StatusCode, Value) {
    let browser = browser_client();
    let api = hub.api();
    let start = browser.get(format!("{api}/auth/oidc/login?next=/devices/pump-1/editor/")).send().await.unwrap();
    assert_eq!(start.status(), 303);
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    let callback = login_through(&browser, &authorize, login, password).await.expect("the provider takes the password");
    let back = browser.get(&callback).send().await.unwrap();
    let status = back.status();
    if status == 200 {
        assert_eq!(back.headers()["refresh"], "0;url=/devices/pump-1/editor/");
    }
    let me = browser.get(format!("{api}/api/me")).send().await.unwrap();
    let me = if me.status() == 200 { me.json().await.unwrap() } else { Value::Null };
    (browser, status, me)
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_login_takes_the_role_from_the_claim_at_every_login() {
    let users = [
        OidcUser::new("alice", "alice-pw", &["plant-admins"]),
        OidcUser::new("tv", "tv-pw", &["tv"]),
        OidcUser::new("mallory", "mallory-pw", &["visitors"]),
    ];
    let (hub, provider) = hub_with_provider(&users, true);
    let page = redtether_testkit::http::client()
        .get(format!("{}/login", hub.api()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/auth/oidc/login?next=%2F"), "the login form offers SSO: {page}");

    let (_, status, me) = browser_login(&hub, "alice", "alice-pw").await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str(), me["source"].as_str()),
        (Some("alice"), Some("owner"), Some("oidc"))
    );
    assert_eq!(me["session"]["method"], "oidc");

    // The group changed at the provider: the next login brings the new role.
    provider.set_groups("alice", &["operators"]);
    let (_, _, me) = browser_login(&hub, "alice", "alice-pw").await;
    assert_eq!(me["role"], "member");

    let (_, _, me) = browser_login(&hub, "tv", "tv-pw").await;
    assert_eq!(me["role"], "dashboard");
    // No group that maps: no account, no session.
    let (_, status, me) = browser_login(&hub, "mallory", "mallory-pw").await;
    assert_eq!((status.as_u16(), me), (401, Value::Null));

    // A callback no login was started for (no binding cookie) is refused.
    let stray = browser_client().get(format!("{}/auth/oidc/callback?code=x&state=y", hub.api())).send().await.unwrap();
    assert_eq!(stray.status(), 401);

    let trail = hub.audit();
    let of = |kind: &str| trail.iter().filter(|e| e["kind"] == kind).collect::<Vec<_>>();
    assert!(of("operator.added").iter().any(|e| e["target"] == "operator:alice" && e["detail"]["via"] == "oidc"));
    assert!(
        of("operator.role_changed").iter().any(|e| e["detail"]["from"] == "owner" && e["detail"]["to"] == "member")
    );
    let reasons: Vec<&str> =
        of("operator.login_failed").iter().map(|e| e["detail"]["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["no_role", "no_login_started"]);
    assert_eq!(of("operator.login").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_password_login_off_local_accounts_cannot_log_in_with_a_password() {
    let (hub, _provider) = hub_with_provider(&[OidcUser::new("alice", "alice-pw", &["plant-admins"])], false);
    let ann = hub.account("ann", "owner");
    let r = redtether_testkit::http::client()
        .post(format!("{}/api/login", hub.api()))
        .json(
            &json!({"name": "ann", "password": ann.password, "totp": ann.code_at(redtether_testkit::unix_now() + 30)}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(hub.audit().iter().any(|e| e["detail"]["reason"] == "password_login_disabled"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ldap_passwords_log_in_with_the_role_of_their_groups() {
    let slapd = Slapd::start(
        &[LdapUser::new("carol", "carol-pw"), LdapUser::new("dan", "dan-pw"), LdapUser::new("erin", "erin-pw")],
        &[LdapGroup::new("plant-admins", &["carol"]), LdapGroup::new("operators", &["dan"])],
    );
    let extra = format!(
        "[auth.ldap]\nurl = {:?}\nbind_dn = \"uid={{user}},{}\"\ngroup_base = {:?}\n\
         group_map = {{ {:?} = \"owner\", {:?} = \"member\" }}\n",
        slapd.url(),
        dir::PEOPLE_DN,
        dir::GROUPS_DN,
        dir::group_dn("plant-admins"),
        dir::group_dn("operators"),
    );
    let hub = Hub::start_with("debug", &extra);
    let client = redtether_testkit::http::client();
    let login = |name: &str, password: &str| {
        client.post(format!("{}/api/login", hub.api())).json(&json!({"name": name, "password": password})).send()
    };
    let carol = login("carol", "carol-pw").await.unwrap();
    assert_eq!(carol.status(), 200);
    assert_eq!(carol.json::<Value>().await.unwrap()["role"], "owner");
    assert_eq!(login("dan", "dan-pw").await.unwrap().json::<Value>().await.unwrap()["role"], "member");
    assert_eq!(login("carol", "wrong-pw").await.unwrap().status(), 401);
    assert_eq!(login("nobody", "nobody-pw").await.unwrap().status(), 401);
    assert_eq!(login("erin", "erin-pw").await.unwrap().status(), 401, "in no mapped group");
    assert_eq!(login("carol", "").await.unwrap().status(), 401, "an empty password never binds");

    // The directory's accounts have no second factor at the hub to reset.
    let (code, _, err) = hub.cli(&["operator", "reset-2fa", "carol"]);
    assert_ne!(code, 0);
    assert!(err.contains("single sign-on"), "{err}");

    // Moved to another group in the directory: the next login has the new role.
    slapd.set_groups("carol", &["operators"]);
    assert_eq!(login("carol", "carol-pw").await.unwrap().json::<Value>().await.unwrap()["role"], "member");

    let trail = hub.audit();
    let reasons: Vec<&str> = trail
        .iter()
        .filter(|e| e["kind"] == "operator.login_failed")
        .map(|e| e["detail"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["wrong_password", "wrong_password", "no_role", "wrong_password"]);
    let logins: Vec<&Value> = trail.iter().filter(|e| e["kind"] == "operator.login").collect();
    assert_eq!(logins.len(), 3);
    assert!(logins.iter().all(|e| e["detail"]["method"] == "ldap"));
    assert!(!serde_json::to_string(&trail).unwrap().contains("carol-pw"));
}
