//! Single sign-on against real servers: the OpenID Connect flow against panva's oidc-provider
//! and LDAP logins against OpenLDAP's slapd, both started per test by the test kit on loopback
//! (installed on first use: npm ci from the committed lockfile, apt-get for slapd) and stopped
//! when the test ends.

use redtether_host::config_file::ConfigError;
use redtether_hub::sso::config::{LdapSettings, OidcSettings, RawLdap, RawOidc, Secret, validate_ldap, validate_oidc};
use redtether_hub::sso::ldap::{LdapError, authenticate};
use redtether_hub::sso::oidc::{OidcError, OidcLogin, PENDING_MAX_AGE, PendingLogin};
use redtether_hub::sso::{Identity, IdentitySource, map_role, normalize_dn};
use redtether_testkit::ldap::{self as dir, LdapGroup, LdapUser, Slapd};
use redtether_testkit::oidc::{OidcClient, OidcProvider, OidcUser, ProviderOptions, browser_client, login_through};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The hub as browsers would reach it. Nothing listens there: the test's browser stops at the
/// redirect and hands the code to `finish` itself.
const PUBLIC_URL: &str = "http://127.0.0.1:9";
const REDIRECT: &str = "http://127.0.0.1:9/auth/oidc/callback";

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::invalid("sso test", key, message)
}

fn roles(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(g, r)| (g.to_string(), r.to_string())).collect()
}

// ---- OpenID Connect ----

fn hub_client() -> OidcClient {
    OidcClient::new("redtether-hub", "hub-secret", REDIRECT)
}

fn users() -> Vec<OidcUser> {
    vec![OidcUser::new("alice", "alice-pw", &["plant-admins", "operators"]), OidcUser::new("bob", "bob-pw", &["tv"])]
}

fn oidc_settings(issuer: &str, client: &OidcClient, roles_claim: Option<&str>) -> OidcSettings {
    let raw = RawOidc {
        issuer: Some(issuer.into()),
        client_id: Some(client.id.clone()),
        client_secret: Some(Secret::new(client.secret.clone())),
        public_url: Some(PUBLIC_URL.into()),
        roles_claim: roles_claim.map(str::to_string),
        role_map: Some(roles(&[
            ("plant-admins", "owner"),
            ("operators", "member"),
            ("auditors", "viewer"),
            ("tv", "dashboard"),
        ])),
        ..RawOidc::default()
    };
    let settings = validate_oidc(raw, Path::new("/"), invalid).unwrap();
    assert_eq!(settings.redirect_url, REDIRECT);
    settings
}

/// A whole login as the hub will run it: begin, the browser at the provider, finish.
async fn oidc_login(login: &OidcLogin, user: &str, password: &str) -> Result<Identity, OidcError> {
    let (authorize_url, pending) = login.begin().await?;
    let back = login_through(&browser_client(), &authorize_url, user, password)
        .await
        .unwrap_or_else(|| panic!("the provider refused {user}'s password"));
    let (code, state) = code_and_state(&back);
    login.finish(&pending, &code, &state).await
}

fn code_and_state(callback: &str) -> (String, String) {
    let url = url::Url::parse(callback).unwrap();
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {url}"))
    };
    (param("code"), param("state"))
}

#[tokio::test]
async fn oidc_code_flow_with_pkce_gives_the_identity_and_its_role() {
    let provider = OidcProvider::start(&[hub_client()], &users());
    let login = OidcLogin::new(oidc_settings(provider.issuer(), &hub_client(), None)).unwrap();

    let (authorize_url, _) = login.begin().await.unwrap();
    assert!(authorize_url.starts_with(&format!("{}/auth?", provider.issuer())), "{authorize_url}");
    assert!(authorize_url.contains("code_challenge_method=S256"), "PKCE is asked for: {authorize_url}");
    // The provider requires PKCE: the same request without the challenge is sent back with an
    // error, before any login form. So a login that goes through used PKCE.
    let mut without_pkce = url::Url::parse(&authorize_url).unwrap();
    let kept: Vec<(String, String)> = without_pkce
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    without_pkce.query_pairs_mut().clear().extend_pairs(kept);
    let refused = login_through(&browser_client(), without_pkce.as_str(), "alice", "alice-pw").await.unwrap();
    assert!(refused.contains("error=invalid_request") && !refused.contains("code="), "{refused}");

    let alice = oidc_login(&login, "alice", "alice-pw").await.unwrap_or_else(|e| panic!("{e}; {}", provider.log()));
    assert_eq!((alice.name.as_str(), alice.subject.as_str()), ("alice", "alice"));
    assert_eq!(alice.groups, ["plant-admins", "operators"]);
    assert_eq!(alice.email.as_deref(), Some("alice@example.test"));
    assert_eq!(alice.source, IdentitySource::Oidc);
    assert_eq!(map_role(&alice.groups, &login.settings().role_map).as_deref(), Some("owner"));

    let bob = oidc_login(&login, "bob", "bob-pw").await.unwrap();
    assert_eq!((bob.name.as_str(), bob.groups.as_slice()), ("bob", &["tv".to_string()][..]));
    assert_eq!(map_role(&bob.groups, &login.settings().role_map).as_deref(), Some("dashboard"));
}

#[tokio::test]
async fn oidc_changed_groups_show_at_the_next_login() {
    let provider = OidcProvider::start(&[hub_client()], &users());
    let login = OidcLogin::new(oidc_settings(provider.issuer(), &hub_client(), None)).unwrap();
    let role = |identity: &Identity| map_role(&identity.groups, &login.settings().role_map);

    assert_eq!(role(&oidc_login(&login, "alice", "alice-pw").await.unwrap()).as_deref(), Some("owner"));
    provider.set_groups("alice", &["auditors"]);
    let demoted = oidc_login(&login, "alice", "alice-pw").await.unwrap();
    assert_eq!(demoted.groups, ["auditors"]);
    assert_eq!(role(&demoted).as_deref(), Some("viewer"));
    provider.set_groups("alice", &["everyone"]);
    let nobody = oidc_login(&login, "alice", "alice-pw").await.unwrap();
    assert_eq!(nobody.groups, ["everyone"]);
    assert_eq!(role(&nobody), None, "no mapped group, no role");
}

#[tokio::test]
async fn oidc_roles_come_from_userinfo_when_the_id_token_lacks_them() {
    let options =
        ProviderOptions { groups_claim: "roles".into(), claims_in_id_token: false, ..ProviderOptions::default() };
    let provider = OidcProvider::start_with(&[hub_client()], &users(), options);
    let login = OidcLogin::new(oidc_settings(provider.issuer(), &hub_client(), Some("roles"))).unwrap();

    // The ID token itself has no roles claim here …
    let id_token = provider.id_token_for(&hub_client(), "alice", "alice-pw", "nonce-1").await;
    assert!(
        matches!(login.identity_from_id_token(&id_token, "nonce-1").await, Err(OidcError::NoRolesClaim { ref claim }) if claim == "roles")
    );
    // … and the full flow reads it, and the email, from userinfo.
    let alice = oidc_login(&login, "alice", "alice-pw").await.unwrap();
    assert_eq!(alice.groups, ["plant-admins", "operators"]);
    assert_eq!(alice.email.as_deref(), Some("alice@example.test"));
}

#[tokio::test]
async fn oidc_an_id_token_for_another_client_is_refused() {
    let other = OidcClient::new("another-app", "another-secret", "http://127.0.0.1:9/elsewhere");
    let provider = OidcProvider::start(&[hub_client(), other.clone()], &users());
    let login = OidcLogin::new(oidc_settings(provider.issuer(), &hub_client(), None)).unwrap();

    // The same user at the same provider: accepted when issued to the hub …
    let ours = provider.id_token_for(&hub_client(), "alice", "alice-pw", "nonce-1").await;
    assert_eq!(login.identity_from_id_token(&ours, "nonce-1").await.unwrap().name, "alice");
    // … refused when issued to another client.
    let theirs = provider.id_token_for(&other, "alice", "alice-pw", "nonce-1").await;
    let refused = login.identity_from_id_token(&theirs, "nonce-1").await;
    assert!(
        matches!(refused, Err(OidcError::IdTokenRejected(openidconnect::ClaimsVerificationError::InvalidAudience(_)))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn oidc_an_id_token_from_another_issuer_is_refused() {
    let provider = OidcProvider::start(&[hub_client()], &users());
    let login = OidcLogin::new(oidc_settings(provider.issuer(), &hub_client(), None)).unwrap();
    // Another provider with the same client and even the same signing key: only the issuer
    // differs.
    let same_key = ProviderOptions { signing_key: Some(provider.signing_key()), ..ProviderOptions::default() };
    let impostor = OidcProvider::start_with(&[hub_client()], &users(), same_key);
    assert_ne!(impostor.issuer(), provider.issuer());
    let token = impostor.id_token_for(&hub_client(), "alice", "alice-pw", "nonce-1").await;
    let refused = login.identity_from_id_token(&token, "nonce-1").await;
    assert!(
        matches!(refused, Err(OidcError::IdTokenRejected(openidconnect::ClaimsVerificationError::InvalidIssuer(_)))),
        "{refused:?}"
    );
    // And with a key of its own, as a real other provider has.
    let stranger = OidcProvider::start(&[hub_client()], &users());
    let token = stranger.id_token_for(&hub_client(), "alice", "alice-pw", "nonce-1").await;
    let refused = login.identity_from_id_token(&token, "nonce-1").await;
    assert!(matches!(refused, Err(OidcError::IdTokenRejected(_))), "{refused:?}");
}

#[tokio::test]
async fn oidc_a_wrong_nonce_is_refused() {
    let provider = OidcProvider::start(&[hub_client()], &users());
    let login = OidcLogin::new(oidc_settings(provider.issuer(), &hub_client(), None)).unwrap();
    let token = provider.id_token_for(&hub_client(), "alice", "alice-pw", "nonce-1").await;
    let refused = login.identity_from_id_token(&token, "nonce-2").await;
    assert!(
        matches!(refused, Err(OidcError::IdTokenRejected(openidconnect::ClaimsVerificationError::InvalidNonce(_)))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn oidc_a_forged_state_or_a_late_callback_is_refused_without_spending_the_code_and_a_code_works_once() {
    let provider = OidcProvider::start(&[hub_client()], &users());
    let login = OidcLogin::new(oidc_settings(provider.issuer(), &hub_client(), None)).unwrap();
    let (authorize_url, pending) = login.begin().await.unwrap();
    let back = login_through(&browser_client(), &authorize_url, "alice", "alice-pw").await.unwrap();
    let (code, state) = code_and_state(&back);

    assert!(matches!(login.finish(&pending, &code, "forged").await, Err(OidcError::StateMismatch)));
    // A browser back after PENDING_MAX_AGE is turned away, also without spending the code.
    let stale = PendingLogin { created: pending.created - PENDING_MAX_AGE - Duration::from_secs(1), ..pending.clone() };
    assert!(matches!(login.finish(&stale, &code, &state).await, Err(OidcError::Expired { .. })));
    // The code was not spent by the refused callback …
    assert_eq!(login.finish(&pending, &code, &state).await.unwrap().name, "alice");
    // … and cannot be spent twice.
    let again = login.finish(&pending, &code, &state).await;
    assert!(matches!(again, Err(OidcError::CodeRefused { .. })), "{again:?}");
}

#[tokio::test]
async fn oidc_a_wrong_password_at_the_provider_gives_no_code() {
    let provider = OidcProvider::start(&[hub_client()], &users());
    let login = OidcLogin::new(oidc_settings(provider.issuer(), &hub_client(), None)).unwrap();
    let (authorize_url, _) = login.begin().await.unwrap();
    assert_eq!(login_through(&browser_client(), &authorize_url, "alice", "bob-pw").await, None);
    assert_eq!(login_through(&browser_client(), &authorize_url, "mallory", "alice-pw").await, None);
}

#[tokio::test]
async fn oidc_an_unreachable_provider_is_reported_as_such() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let login = OidcLogin::new(oidc_settings(&format!("http://127.0.0.1:{port}"), &hub_client(), None)).unwrap();
    let result = login.begin().await;
    assert!(matches!(result, Err(OidcError::Unreachable { step: "discovery", .. })), "{result:?}");
}

// ---- LDAP ----

const ALICE: &str = "alice";
/// Names with characters that mean something in DNs (RFC 4514) and in filters (RFC 4515).
const ANN: &str = "ann, jr+1";
const DAVE: &str = "dave (ops)*";

fn directory() -> Slapd {
    Slapd::start(
        &[
            LdapUser::new(ALICE, "alice-pw"),
            LdapUser::new("bob", "bob-pw"),
            LdapUser::new(ANN, "ann-pw"),
            LdapUser::new(DAVE, "dave-pw"),
        ],
        &[
            LdapGroup::new("plant-admins", &[ALICE]),
            LdapGroup::new("operators", &["bob", ANN, DAVE]),
            LdapGroup::new("auditors", &[ALICE, "bob"]),
        ],
    )
}

fn group_map() -> BTreeMap<String, String> {
    roles(&[
        // Spelled unlike the server spells it: compared as DNs.
        ("CN=Plant-Admins, OU=Groups, DC=Example, DC=Test", "owner"),
        ("cn=operators,ou=groups,dc=example,dc=test", "member"),
        ("cn=auditors,ou=groups,dc=example,dc=test", "viewer"),
    ])
}

/// Bind by template; groups by search under group_base, or memberOf without it.
fn template_settings(slapd: &Slapd, group_base: bool) -> LdapSettings {
    let raw = RawLdap {
        url: Some(slapd.url().into()),
        bind_dn: Some(format!("uid={{user}},{}", dir::PEOPLE_DN)),
        group_base: group_base.then(|| dir::GROUPS_DN.to_string()),
        group_map: Some(group_map()),
        timeout: Some(Duration::from_secs(5)),
        ..RawLdap::default()
    };
    validate_ldap(raw, Path::new("/"), invalid).unwrap()
}

/// Search as the service account, then bind.
fn search_settings(slapd: &Slapd) -> LdapSettings {
    validate_ldap(search_raw(slapd), Path::new("/"), invalid).unwrap()
}

fn search_raw(slapd: &Slapd) -> RawLdap {
    RawLdap {
        url: Some(slapd.url().into()),
        service_dn: Some(slapd.service_dn().into()),
        service_password: Some(Secret::new(slapd.service_password())),
        search_base: Some(slapd.base_dn().into()),
        search_filter: Some("(&(objectClass=inetOrgPerson)(uid={user}))".into()),
        group_base: Some(dir::GROUPS_DN.into()),
        group_map: Some(group_map()),
        timeout: Some(Duration::from_secs(5)),
        ..RawLdap::default()
    }
}

fn group(cn: &str) -> String {
    normalize_dn(&dir::group_dn(cn))
}

#[tokio::test]
async fn ldap_bind_by_template_maps_groups_to_a_role() {
    let slapd = directory();
    let settings = template_settings(&slapd, true);
    let alice = authenticate(&settings, ALICE, "alice-pw").await.unwrap_or_else(|e| panic!("{e}; {}", slapd.log()));
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.subject, normalize_dn(&dir::user_dn(ALICE)));
    assert_eq!(alice.email.as_deref(), Some("alice@example.test"));
    assert_eq!(alice.source, IdentitySource::Ldap);
    let mut groups = alice.groups.clone();
    groups.sort();
    assert_eq!(groups, [group("auditors"), group("plant-admins")]);
    assert_eq!(map_role(&alice.groups, &settings.group_map).as_deref(), Some("owner"));

    // A name that must be escaped in a DN.
    let ann = authenticate(&settings, ANN, "ann-pw").await.unwrap();
    assert_eq!((ann.name.as_str(), ann.groups.as_slice()), (ANN, &[group("operators")][..]));
    assert_eq!(map_role(&ann.groups, &settings.group_map).as_deref(), Some("member"));
}

#[tokio::test]
async fn ldap_search_then_bind_maps_groups_to_a_role() {
    let slapd = directory();
    let settings = search_settings(&slapd);
    let bob = authenticate(&settings, "bob", "bob-pw").await.unwrap_or_else(|e| panic!("{e}; {}", slapd.log()));
    assert_eq!(bob.name, "bob");
    assert_eq!(map_role(&bob.groups, &settings.group_map).as_deref(), Some("member"));
    // A name that must be escaped in a filter (and, as found, is used by its DN).
    let dave = authenticate(&settings, DAVE, "dave-pw").await.unwrap();
    assert_eq!((dave.name.as_str(), dave.groups.as_slice()), (DAVE, &[group("operators")][..]));
    // Names match as the directory matches them: case-insensitively; the name is the entry's.
    let upper = authenticate(&settings, "ALICE", "alice-pw").await.unwrap();
    assert_eq!(
        (upper.name.as_str(), map_role(&upper.groups, &settings.group_map).as_deref()),
        ("alice", Some("owner"))
    );
    assert_eq!(upper.subject, normalize_dn(&dir::user_dn(ALICE)), "the same account as \"alice\"");
}

#[tokio::test]
async fn ldap_member_of_and_membership_changes_show_at_the_next_login() {
    let slapd = directory();
    let settings = template_settings(&slapd, false);
    let role = |identity: &Identity| map_role(&identity.groups, &settings.group_map);
    assert_eq!(role(&authenticate(&settings, "bob", "bob-pw").await.unwrap()).as_deref(), Some("member"));
    slapd.add_member("plant-admins", "bob");
    let promoted = authenticate(&settings, "bob", "bob-pw").await.unwrap();
    assert!(promoted.groups.contains(&group("plant-admins")), "{:?}", promoted.groups);
    assert_eq!(role(&promoted).as_deref(), Some("owner"));
    slapd.set_groups("bob", &["auditors"]);
    let demoted = authenticate(&settings, "bob", "bob-pw").await.unwrap();
    assert_eq!((demoted.groups.as_slice(), role(&demoted).as_deref()), (&[group("auditors")][..], Some("viewer")));
    slapd.set_groups("bob", &[]);
    let nobody = authenticate(&settings, "bob", "bob-pw").await.unwrap();
    assert_eq!((nobody.groups.len(), role(&nobody)), (0, None), "{:?}", nobody.groups);
}

#[tokio::test]
async fn ldap_wrong_passwords_and_unknown_users_are_refused() {
    let slapd = directory();
    for settings in [template_settings(&slapd, true), search_settings(&slapd)] {
        for (user, password) in [(ALICE, "bob-pw"), (ALICE, "alice-pw "), ("mallory", "alice-pw"), ("bob", "alice-pw")]
        {
            let result = authenticate(&settings, user, password).await;
            assert!(matches!(result, Err(LdapError::WrongCredentials)), "{user}/{password}: {result:?}");
        }
    }
}

#[tokio::test]
async fn ldap_an_empty_password_is_refused_though_the_server_would_accept_it() {
    let slapd = directory();
    // The server takes a DN without a password as an unauthenticated bind, and says success.
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(slapd.url()).await.unwrap();
    let driver = tokio::spawn(conn.drive());
    let unauthenticated = ldap.simple_bind(&dir::user_dn(ALICE), "").await.unwrap();
    assert_eq!(unauthenticated.rc, 0, "slapd accepted the unauthenticated bind");
    let _ = ldap.unbind().await;
    let _ = driver.await;

    for settings in [template_settings(&slapd, true), search_settings(&slapd)] {
        let result = authenticate(&settings, ALICE, "").await;
        assert!(matches!(result, Err(LdapError::EmptyPassword)), "{result:?}");
    }
}

#[tokio::test]
async fn ldap_filter_metacharacters_in_the_name_log_nobody_in() {
    let slapd = directory();
    let injections = ["*", "*)(uid=*", "alice)(|(uid=*", "*)(|(objectClass=*", "alice)(objectClass=*", "\\2a", "ali*"];
    for settings in [search_settings(&slapd), template_settings(&slapd, true)] {
        for name in injections {
            for password in ["alice-pw", "bob-pw", "x"] {
                let result = authenticate(&settings, name, password).await;
                assert!(matches!(result, Err(LdapError::WrongCredentials)), "{name:?}/{password}: {result:?}");
            }
        }
    }
}

#[tokio::test]
async fn ldap_a_wrong_service_password_is_a_misconfiguration() {
    let slapd = directory();
    let raw = RawLdap { service_password: Some(Secret::new("not-the-password")), ..search_raw(&slapd) };
    let settings = validate_ldap(raw, Path::new("/"), invalid).unwrap();
    let result = authenticate(&settings, ALICE, "alice-pw").await;
    assert!(matches!(result, Err(LdapError::Misconfigured { .. })), "{result:?}");
}

#[tokio::test]
async fn ldap_over_starttls_and_ldaps_checks_the_server_certificate() {
    let slapd = directory();
    let ca_file = slapd.ca_file();
    let tls = |url: &str, starttls: bool, ca: bool| {
        let raw = RawLdap {
            url: Some(url.into()),
            starttls: Some(starttls),
            ca_file: ca.then(|| ca_file.clone()),
            ..search_raw(&slapd)
        };
        validate_ldap(raw, Path::new("/"), invalid).unwrap()
    };
    let via_starttls = authenticate(&tls(slapd.url(), true, true), ALICE, "alice-pw").await;
    assert_eq!(via_starttls.unwrap_or_else(|e| panic!("{e}; {}", slapd.log())).name, "alice");
    let via_ldaps = authenticate(&tls(slapd.ldaps_url(), false, true), ALICE, "alice-pw").await;
    assert_eq!(via_ldaps.unwrap().name, "alice");
    // The system's CAs do not know the test CA.
    let untrusted = authenticate(&tls(slapd.ldaps_url(), false, false), ALICE, "alice-pw").await;
    assert!(matches!(untrusted, Err(LdapError::TlsHandshake { .. })), "{untrusted:?}");
    let untrusted = authenticate(&tls(slapd.url(), true, false), ALICE, "alice-pw").await;
    assert!(matches!(untrusted, Err(LdapError::TlsHandshake { .. })), "{untrusted:?}");
}
