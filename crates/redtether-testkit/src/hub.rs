//! A real `redtether-hub run` on loopback (QUIC and API on ephemeral ports), with helpers for
//! its CLI and operator API.

use crate::wait_for;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The hub binary (built with the workspace: `cargo test --workspace` builds it for the hub
/// crate's own tests; see [`crate::fresh_hub_bin`]).
pub const HUB_BIN: &str = concat!(env!("REDTETHER_BIN_DIR"), "/redtether-hub");

/// An operator with a password and TOTP, as set up by [`Hub::account`].
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub password: String,
    pub totp_secret: String,
    pub recovery_codes: Vec<String>,
}

impl Account {
    /// The TOTP code at Unix second `t` (RFC 6238: SHA-1, 6 digits, 30 s).
    pub fn code_at(&self, t: u64) -> String {
        let secret = totp_rs::Secret::try_from_base32(&self.totp_secret).unwrap();
        let totp = totp_rs::Builder::new().with_secret(secret).with_account_name("test").build().unwrap();
        totp.generate(t).to_string()
    }
}

/// A logged-in script's session: the `Cookie` header's value and the CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

pub struct Hub {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// The current run's standard output (where the hub prints its console URL and a first
    /// owner's setup link).
    out: PathBuf,
    /// Fixed after the first start, so a restarted hub is where devices look for it.
    pub quic: Option<String>,
}

impl Hub {
    pub fn start() -> Hub {
        Hub::start_logging("debug")
    }

    /// As [`Hub::start`], logging at `level` (benchmarks run it at "info").
    pub fn start_logging(level: &str) -> Hub {
        Hub::start_with(level, "")
    }

    /// As [`Hub::start`], with `extra` lines in hub.toml.
    pub fn start_with(level: &str, extra: &str) -> Hub {
        Hub::start_on(level, "127.0.0.1:0", extra)
    }

    /// A free loopback port for [`Hub::start_on`], for a test that must know the API's address
    /// before the hub starts (an OpenID provider is told where to send browsers back to).
    pub fn free_api_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// As [`Hub::start_with`], with the API on `api_listen`.
    pub fn start_on(level: &str, api_listen: &str, extra: &str) -> Hub {
        Hub::start_at(level, "127.0.0.1:0", api_listen, extra)
    }

    /// As [`Hub::start_on`], with tunnels (QUIC) on `listen` (for devices in a network
    /// namespace, an address they reach, and the hub's `names` in `extra`).
    pub fn start_at(level: &str, listen: &str, api_listen: &str, extra: &str) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\nlog_level = {level:?}\nlisten = {listen:?}\napi_listen = {api_listen:?}\n{extra}\n",
                dir.path().join("state").display().to_string()
            ),
        )
        .unwrap();
        let mut hub = Hub { dir, config, child: None, log: PathBuf::new(), out: PathBuf::new(), quic: None };
        hub.spawn();
        let status = hub.status();
        let bound = status["listen"].as_str().unwrap().to_string();
        // Pin the port for restarts.
        let text = std::fs::read_to_string(&hub.config)
            .unwrap()
            .replace(&format!("listen = {listen:?}\napi_listen"), &format!("listen = {bound:?}\napi_listen"));
        std::fs::write(&hub.config, text).unwrap();
        hub.quic = Some(bound);
        hub
    }

    pub fn spawn(&mut self) {
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        self.log = self.dir.path().join(format!("hub-{run}.log"));
        self.out = self.dir.path().join(format!("hub-{run}.out"));
        let child = Command::new(crate::fresh_hub_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&self.out).unwrap())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the current run printed on standard output, once it printed where its console is.
    pub fn stdout(&self) -> String {
        wait_for(Duration::from_secs(20), "the hub's console line", || {
            let out = std::fs::read_to_string(&self.out).unwrap_or_default();
            out.contains("console at").then_some(out)
        })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs a hub subcommand; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(crate::fresh_hub_bin()).args(args).arg("--config").arg(&self.config).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn try_status(&self) -> Option<serde_json::Value> {
        let socket = self.state_dir().join("control.sock");
        let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
        use std::io::{BufRead, Write};
        stream.write_all(b"{\"cmd\":\"status\"}\n").ok()?;
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line).ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        v["ok"].as_bool()?.then(|| v["result"].clone())
    }

    pub fn status(&self) -> serde_json::Value {
        wait_for(Duration::from_secs(20), "the hub's control socket", || self.try_status())
    }

    pub fn addr(&self) -> String {
        self.quic.clone().unwrap_or_else(|| self.status()["listen"].as_str().unwrap().to_string())
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.status()["api_listen"].as_str().unwrap())
    }

    pub fn fingerprint(&self) -> String {
        let (code, out, err) = self.cli(&["ca-fingerprint"]);
        assert_eq!(code, 0, "{err}");
        out
    }

    pub fn enroll_token(&self, device: &str) -> String {
        let (code, out, err) = self.cli(&["enroll-token", "--device", device]);
        assert_eq!(code, 0, "{err}");
        out
    }

    /// As [`Hub::enroll_token`], asked of the hub's control socket directly (no CLI process):
    /// for enrolling simulated devices by the hundred. Valid for an hour.
    pub async fn enroll_token_async(&self, device: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let request = serde_json::json!({ "cmd": "enroll_token", "device": device, "lifetime_secs": 3600 });
        let mut stream = tokio::net::UnixStream::connect(self.state_dir().join("control.sock")).await?;
        stream.write_all(format!("{request}\n").as_bytes()).await?;
        let mut line = String::new();
        tokio::io::BufReader::new(stream).read_line(&mut line).await?;
        let answer: serde_json::Value = serde_json::from_str(&line)?;
        answer["result"]["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| std::io::Error::other(format!("the hub made no token: {answer}")))
    }

    /// An automation account with an `admin` API token valid for a day; returns the token.
    pub fn operator(&self, name: &str, role: &str) -> String {
        let (code, out, err) =
            self.cli(&["operator", "add", "--name", name, "--role", role, "--token", "--expires", "1d"]);
        assert_eq!(code, 0, "{err}");
        out
    }

    /// A person's account, set up through the API as they would: password, TOTP enrolled.
    pub fn account(&self, name: &str, role: &str) -> Account {
        let (code, setup, err) = self.cli(&["operator", "add", "--name", name, "--role", role]);
        assert_eq!(code, 0, "{err}");
        assert!(setup.starts_with("rtsetup_"), "{setup}");
        self.set_up(name, &setup)
    }

    /// Sets up the account whose setup code is `setup` as its person would: password, TOTP.
    pub fn set_up(&self, name: &str, setup: &str) -> Account {
        let (api, name, setup) = (self.api(), name.to_string(), setup.to_string());
        // On a thread of its own: the blocking client may not run inside a test's runtime.
        std::thread::spawn(move || set_up(&api, &name, &setup)).join().unwrap()
    }

    /// A login session of `account` as a script gets one (`POST /api/login` with the code of
    /// the TOTP step after the one its setup used): the `Cookie` header's value and the
    /// session's CSRF token. A step is accepted once and only the next one is ahead of the
    /// clock, so this is the account's one login until 30 s have passed: a test that logs the
    /// same account in again (in a browser too) reuses a session instead.
    pub fn session(&self, account: &Account) -> Session {
        let (url, account) = (format!("{}/api/login", self.api()), account.clone());
        std::thread::spawn(move || {
            let body = serde_json::json!({
                "name": account.name, "password": account.password, "totp": account.code_at(crate::unix_now() + 30),
            });
            let answer = crate::http::blocking_client_builder().build().unwrap().post(&url).json(&body).send().unwrap();
            assert_eq!(answer.status(), 200, "login of {}", account.name);
            let cookie = answer.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
            let body: serde_json::Value = answer.json().unwrap();
            Session { cookie, csrf: body["csrf_token"].as_str().unwrap().to_string() }
        })
        .join()
        .unwrap()
    }

    /// The hub's audit trail as `redtether-hub audit list` prints it.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let (code, out, err) = self.cli(&["audit", "list"]);
        assert_eq!(code, 0, "{err}");
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("ca.pem")).unwrap()
    }

    pub fn ca_key(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("ca.key")).unwrap()
    }
}

impl Hub {
    /// Stops the hub as systemd would (SIGTERM, SIGKILL after 10 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Adds lines to hub.toml (for the next start).
    pub fn append_config(&self, extra: &str) {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(&format!("\n{extra}\n"));
        std::fs::write(&self.config, text).unwrap();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- hub log ----\n{}", self.log());
        }
    }
}

/// Enrolls the agent whose config is `config` with `hub` through the real CLI.
pub fn enroll(config: &Path, hub: &Hub, device: &str) -> std::process::Output {
    let token = hub.enroll_token(device);
    Command::new(crate::agent::BIN)
        .args(["enroll", "--hub", &hub.addr(), "--token", &token, "--ca-fingerprint", &hub.fingerprint(), "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// A `[node_red]` body for tests that need the agent but not Node-RED.
pub const PLACEHOLDER: &str =
    "command = [\"sh\", \"-c\", \"exec sleep 100000\", \"placeholder\"]\nstartup_timeout = \"1h\"";

pub fn tunnel_state(agent: &crate::agent::Agent) -> (String, u64) {
    let s = agent.status();
    (s["tunnel"]["state"].as_str().unwrap().to_string(), s["tunnel"]["connects"].as_u64().unwrap())
}

pub fn wait_online(agent: &crate::agent::Agent, connects: u64) {
    wait_for(Duration::from_secs(30), &format!("tunnel online (connection {connects})"), || {
        let (state, n) = tunnel_state(agent);
        (state == "online" && n >= connects).then_some(())
    });
}

pub async fn api(hub: &Hub, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = crate::http::client().request(method, format!("{}{path}", hub.api()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// An agent with the fixture Node-RED (fast health checks) and these `[gate]` keys, enrolled
/// as `device`, online and running.
pub fn online_agent(hub: &Hub, device: &str, gate_keys: &str) -> crate::agent::Agent {
    let node_red = format!("{}\nhealth_interval = \"500ms\"", crate::agent::fixture_node_red());
    let agent = crate::agent::Agent::start_full(&node_red, gate_keys, None, &[]);
    agent.wait_running();
    let out = enroll(&agent.config, hub, device);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_online(&agent, 1);
    agent
}

/// Sets an account up as its person would: password, then the TOTP secret confirmed.
fn set_up(api: &str, name: &str, setup: &str) -> Account {
    let client = crate::http::blocking_client_builder().build().unwrap();
    let password = format!("{name}-correct-horse-battery");
    let offered: serde_json::Value = client
        .post(format!("{api}/api/setup"))
        .json(&serde_json::json!({ "code": setup, "password": password }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let secret = offered["totp_secret"].as_str().unwrap_or_else(|| panic!("{offered}")).to_string();
    let account = Account { name: name.to_string(), password, totp_secret: secret, recovery_codes: Vec::new() };
    let confirmed: serde_json::Value = client
        .post(format!("{api}/api/setup/confirm"))
        .json(&serde_json::json!({ "code": setup, "totp": account.code_at(crate::unix_now()) }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let codes = confirmed["recovery_codes"].as_array().unwrap_or_else(|| panic!("{confirmed}"));
    Account { recovery_codes: codes.iter().map(|c| c.as_str().unwrap().to_string()).collect(), ..account }
}

/// Waits until `hub` has acknowledged everything in the agent's journal, then returns the
/// device events the hub holds (`/api/devices/{device}/audit?source=device`) and the journal.
pub async fn delivered(
    hub: &Hub,
    agent: &crate::agent::Agent,
    device: &str,
    token: &str,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    crate::wait_for_async(Duration::from_secs(60), "the hub to hold the whole journal", || async {
        let local = agent.journal();
        let last = local.last()?["seq"].as_u64()?;
        let (_, status) = api(hub, reqwest::Method::GET, &format!("/api/devices/{device}"), Some(token)).await;
        if status["audit"]["acked"].as_u64()? < last {
            return None;
        }
        let path = format!("/api/devices/{device}/audit?source=device");
        let (code, at_hub) = api(hub, reqwest::Method::GET, &path, Some(token)).await;
        assert_eq!(code, 200);
        Some((at_hub.as_array()?.clone(), local))
    })
    .await
}

/// `method path` on the hub's API with `token` and an optional JSON body: the status and the
/// JSON answer (null when there is none).
pub async fn call(
    hub: &Hub,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = crate::http::client().request(method, format!("{}{path}", hub.api())).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// A simulator against `hub` with `n` devices named `{prefix}-NNN`, all connected.
pub async fn simulated_fleet(
    hub: &Hub,
    prefix: &str,
    n: usize,
) -> (crate::simulator::Simulator, Vec<crate::simulator::SimDevice>) {
    let config = crate::simulator::SimConfig::new(&hub.addr(), &hub.fingerprint()).await.unwrap();
    let sim = crate::simulator::Simulator::new(config).unwrap();
    let names = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    let devices = sim.enroll_many(names, |name| async move { hub.enroll_token_async(&name).await }).await.unwrap();
    sim.wait_connected(n, Duration::from_secs(120)).await.unwrap();
    (sim, devices)
}

/// Every row of a paged audit route (`path` with its query, without `before` and `limit`),
/// oldest first, following the `next` cursors.
pub async fn audit_pages(hub: &Hub, token: &str, path: &str) -> Vec<serde_json::Value> {
    let join = if path.contains('?') { '&' } else { '?' };
    let mut rows = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page_path = match &before {
            Some(cursor) => format!("{path}{join}limit=50&before={cursor}"),
            None => format!("{path}{join}limit=50"),
        };
        let (code, page) = call(hub, reqwest::Method::GET, &page_path, token, None).await;
        assert_eq!(code, 200, "GET {page_path}: {page}");
        rows.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => before = Some(next.to_string()),
            None => break,
        }
    }
    rows.reverse();
    rows
}

/// Opens `device`'s editor websocket through the hub as `token` (an owner's), deploys from the
/// editor, and says whether Node-RED's notification of it came over the websocket within 20 s:
/// the editor's live channel works end to end through the tunnel.
pub async fn editor_websocket_hears_a_deploy(hub: &Hub, device: &str, token: &str) -> bool {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let editor = format!("{}/devices/{device}/editor", hub.api());
    let mut request = format!("{}/comms", editor.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("websocket through the tunnel");
    assert_eq!(response.status(), 101);
    ws.send(Message::text(r#"{"subscribe":"notification/#"}"#)).await.unwrap();
    let deployed = crate::http::client()
        .post(format!("{editor}/flows"))
        .bearer_auth(token)
        .header("node-red-api-version", "v2")
        .header("node-red-deployment-type", "full")
        .json(&serde_json::json!({"flows": [{"id": "t0", "type": "tab", "label": "from the editor"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 200);
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() && message.to_text().unwrap_or_default().contains("notification/") {
                return true;
            }
        }
        false
    })
    .await;
    heard == Ok(true)
}
