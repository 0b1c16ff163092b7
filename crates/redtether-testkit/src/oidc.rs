//! A real OpenID provider for the single sign-on tests: panva's `oidc-provider` (a certified
//! implementation) under Node.js, from the committed lockfile in `tests/fixtures/oidc-provider`,
//! run by that folder's `provider.js` (which documents what it offers). Each instance has its own
//! folder with its configuration and logs, listens on a free loopback port, and is killed when
//! dropped. The users live in the configuration file, which the provider re-reads at each login
//! and token request: [`OidcProvider::set_groups`] changes what the next login sees.
//!
//! The browser side is [`login_through`]: the authorization code flow with plain HTTP, as a
//! browser would walk it (the provider's login form has the fields `login` and `password`).

use crate::npm_fixture;
use base64::Engine;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const FIXTURE: &str = "oidc-provider";

/// How long the provider may take to say it listens.
const START_WITHIN: Duration = Duration::from_secs(120);

/// A client registered at the provider: confidential (`client_secret_basic`), authorization
/// code flow with PKCE, this one redirect URI.
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub id: String,
    pub secret: String,
    pub redirect_uri: String,
}

impl OidcClient {
    pub fn new(id: &str, secret: &str, redirect_uri: &str) -> OidcClient {
        OidcClient { id: id.into(), secret: secret.into(), redirect_uri: redirect_uri.into() }
    }
}

/// A user who can log in with `login` and `password`; `email` is `<login>@example.test` unless
/// changed, `groups` is the groups claim's value.
#[derive(Debug, Clone)]
pub struct OidcUser {
    pub login: String,
    pub password: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

impl OidcUser {
    pub fn new(login: &str, password: &str, groups: &[&str]) -> OidcUser {
        OidcUser {
            login: login.into(),
            password: password.into(),
            email: Some(format!("{login}@example.test")),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// How an instance differs from the defaults.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// The name of the groups claim (`groups`).
    pub groups_claim: String,
    /// Whether the groups (and email, name) are in the ID token (true), or only in the userinfo
    /// answer (false), as oidc-provider does by default for the code flow.
    pub claims_in_id_token: bool,
    /// The private RSA key (a JWK) to sign with, e.g. another instance's
    /// [`OidcProvider::signing_key`]; a fresh key when `None`.
    pub signing_key: Option<serde_json::Value>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions { groups_claim: "groups".into(), claims_in_id_token: true, signing_key: None }
    }
}

pub struct OidcProvider {
    issuer: String,
    config: Mutex<serde_json::Value>,
    dir: tempfile::TempDir,
    child: Child,
    /// Held open: provider.js exits when it closes, so a test process that dies without
    /// dropping the provider (SIGKILL) does not leave it running.
    _stdin: ChildStdin,
}

impl OidcProvider {
    /// Starts a provider with these clients and users and the default options.
    pub fn start(clients: &[OidcClient], users: &[OidcUser]) -> OidcProvider {
        OidcProvider::start_with(clients, users, ProviderOptions::default())
    }

    pub fn start_with(clients: &[OidcClient], users: &[OidcUser], options: ProviderOptions) -> OidcProvider {
        let script = install();
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "clients": clients.iter().map(|c| serde_json::json!({
                "client_id": c.id,
                "client_secret": c.secret,
                "redirect_uris": [c.redirect_uri],
            })).collect::<Vec<_>>(),
            "users": users.iter().map(|u| (u.login.clone(), serde_json::json!({
                "password": u.password,
                "email": u.email,
                "groups": u.groups,
            }))).collect::<serde_json::Map<_, _>>(),
            "groups_claim": options.groups_claim,
            "claims_in_id_token": options.claims_in_id_token,
            "signing_key": options.signing_key,
            "signing_key_out": dir.path().join("signing-key.json"),
        });
        write_atomically(&dir.path().join("config.json"), &config);
        let mut child = Command::new("node")
            .arg(&script)
            .arg(dir.path().join("config.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("provider.log")).unwrap())
            .spawn()
            .expect("node must be installed to run the tests");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Every stdout line goes to provider.out; the issuer line is also handed back here.
        let (tx, rx) = std::sync::mpsc::channel();
        let out_path = dir.path().join("provider.out");
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(out_path).unwrap();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                if let Some(issuer) = line.strip_prefix("ISSUER ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        let log = dir.path().join("provider.log");
        // Node.js loading oidc-provider takes a second alone, far longer on a CI machine's two
        // cores shared with a whole test suite (seen: over 30 s).
        let issuer = match rx.recv_timeout(START_WITHIN) {
            Ok(issuer) => issuer,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the OpenID provider did not start within {START_WITHIN:?}; its log: {}", read(&log));
            }
        };
        OidcProvider { issuer, config: Mutex::new(config), dir, child, _stdin: stdin }
    }

    /// `http://127.0.0.1:PORT`, exactly as the provider writes it in its tokens (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The private key this provider signs ID tokens with (a JWK), for
    /// [`ProviderOptions::signing_key`].
    pub fn signing_key(&self) -> serde_json::Value {
        serde_json::from_str(&read(&self.dir.path().join("signing-key.json"))).expect("provider.js wrote its key")
    }

    /// Replaces `login`'s groups; the next login (or token, or userinfo request) sees them.
    pub fn set_groups(&self, login: &str, groups: &[&str]) {
        let mut config = self.config.lock().unwrap();
        let user = config["users"].get_mut(login).unwrap_or_else(|| panic!("no user {login:?} at the provider"));
        user["groups"] = serde_json::json!(groups);
        write_atomically(&self.dir.path().join("config.json"), &config);
    }

    /// What the provider wrote on stderr and stdout so far, for failure messages.
    pub fn log(&self) -> String {
        format!("{}{}", read(&self.dir.path().join("provider.out")), read(&self.dir.path().join("provider.log")))
    }

    /// The whole code flow for `client` as `login`, with PKCE and this `nonce`, including the
    /// token request: the raw ID token the provider issued. For tests of what a relying party
    /// does with an ID token it did not ask for (another client's, another provider's).
    pub async fn id_token_for(&self, client: &OidcClient, login: &str, password: &str, nonce: &str) -> String {
        let verifier = random_token();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
        let state = random_token();
        // oidc-provider's default endpoint paths (also in its discovery document).
        let mut authorize = reqwest::Url::parse(&format!("{}/auth", self.issuer)).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("client_id", &client.id)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid profile email")
            .append_pair("redirect_uri", &client.redirect_uri)
            .append_pair("state", &state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let http = browser_client();
        let back = login_through(&http, authorize.as_str(), login, password)
            .await
            .unwrap_or_else(|| panic!("the provider refused {login}'s password; its log: {}", self.log()));
        let back = reqwest::Url::parse(&back).unwrap();
        let param = |name: &str| back.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        assert_eq!(param("state").as_deref(), Some(state.as_str()), "the provider returned another state: {back}");
        let code = param("code").unwrap_or_else(|| panic!("no code in {back}"));
        let response = http
            .post(format!("{}/token", self.issuer))
            .basic_auth(&client.id, Some(&client.secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", &verifier),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(status.is_success(), "token request refused ({status}): {body}");
        body["id_token"].as_str().expect("an ID token in the token response").to_string()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that behaves like a browser for [`login_through`]: it keeps cookies, and it does
/// not follow redirects by itself, so the redirect to the relying party's redirect URI (which
/// need not listen) is seen rather than followed. One client is one browser: after a login it
/// holds a session at the provider, and a second login through it gets no form (see
/// [`login_through`]).
pub fn browser_client() -> reqwest::Client {
    crate::http::client_builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Walks the authorization code flow from `authorize_url` (a relying party's authorization
/// request) as a browser would: follows the provider's redirects to its login form, submits
/// `login` and `password` there, follows the redirects on, and stops at the first redirect to
/// the request's `redirect_uri`, whose full URL (with `code`, `state` and `iss`, or `error`) it
/// returns. `None` when the provider refused the login and password (it shows the form again,
/// with 401). When `client` already holds a session at the provider, the provider shows no form
/// and the redirect comes back at once, for the session's user, as in a browser. `client` must
/// keep cookies and not follow redirects: [`browser_client`].
pub async fn login_through(
    client: &reqwest::Client,
    authorize_url: &str,
    login: &str,
    password: &str,
) -> Option<String> {
    let mut url = reqwest::Url::parse(authorize_url).expect("an absolute authorization URL");
    let redirect_uri = url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| reqwest::Url::parse(&v).expect("a redirect_uri that is a URL"))
        .expect("the authorization URL names its redirect_uri");
    let mut submitted = false;
    for _ in 0..20 {
        let response = client.get(url.clone()).send().await.expect("the provider answers");
        let status = response.status();
        let next = if status.is_redirection() {
            location(&url, &response)
        } else if status == reqwest::StatusCode::OK && !submitted {
            let body = response.text().await.unwrap();
            let action = form_action(&body).unwrap_or_else(|| panic!("no login form at {url}: {body}"));
            let post = client
                .post(url.join(&action).unwrap())
                .form(&[("login", login), ("password", password)])
                .send()
                .await
                .expect("the provider answers");
            submitted = true;
            match post.status() {
                s if s.is_redirection() => location(&url, &post),
                reqwest::StatusCode::UNAUTHORIZED => return None,
                other => panic!("the login form's answer was {other}: {}", post.text().await.unwrap_or_default()),
            }
        } else {
            panic!("unexpected {status} from {url}: {}", response.text().await.unwrap_or_default());
        };
        if is_redirect_to(&next, &redirect_uri) {
            return Some(next.into());
        }
        url = next;
    }
    panic!("the flow from {authorize_url} did not come back to {redirect_uri} within 20 steps");
}

fn is_redirect_to(url: &reqwest::Url, redirect_uri: &reqwest::Url) -> bool {
    url.scheme() == redirect_uri.scheme()
        && url.host_str() == redirect_uri.host_str()
        && url.port_or_known_default() == redirect_uri.port_or_known_default()
        && url.path() == redirect_uri.path()
}

fn location(base: &reqwest::Url, response: &reqwest::Response) -> reqwest::Url {
    let value = response
        .headers()
        .get(reqwest::header::LOCATION)
        .unwrap_or_else(|| panic!("a {} from {base} without Location", response.status()));
    base.join(value.to_str().unwrap()).unwrap()
}

/// The `action` of the page's form (the login form is the only one).
fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let rest = &form[form.find("action=\"")? + "action=\"".len()..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

/// 32 random bytes, base64url: a PKCE verifier, a state.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Installs the fixture (npm ci from its lockfile, once) and puts provider.js beside its
/// node_modules, where Node resolves `import 'oidc-provider'` from (ES modules ignore
/// NODE_PATH). Returns the script's path.
fn install() -> PathBuf {
    let dir = npm_fixture::install(FIXTURE, "node_modules/oidc-provider/package.json");
    let script = std::fs::read(npm_fixture::fixture_dir(FIXTURE).join("provider.js")).unwrap();
    let target = dir.join("provider.js");
    if std::fs::read(&target).ok().as_deref() != Some(&script[..]) {
        // Renamed into place: another test process may be starting it at this moment.
        let tmp = dir.join(format!("provider.js.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &script).unwrap();
        std::fs::rename(&tmp, &target).unwrap();
    }
    target
}

/// Written beside and renamed over, so provider.js never reads half a file.
fn write_atomically(path: &Path, value: &serde_json::Value) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
