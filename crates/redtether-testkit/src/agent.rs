//! A real `redtether run` process with its own state directory and config.

use crate::wait_for;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The agent binary cargo built for these tests.
pub const BIN: &str = concat!(env!("REDTETHER_BIN_DIR"), "/redtether");

/// The users every test agent has unless a test configures its own: name, password, role.
pub const USERS: [(&str, &str, &str); 4] = [
    ("owner", "owner-pw", "owner"),
    ("member", "member-pw", "member"),
    ("viewer", "viewer-pw", "viewer"),
    ("dash", "dash-pw", "dashboard"),
];

/// An argon2 hash made by the real `redtether passwd`, cached per password.
pub fn hash_of(password: &str) -> String {
    static CACHE: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap();
    if let Some((_, h)) = cache.iter().find(|(p, _)| p == password) {
        return h.clone();
    }
    let mut child = Command::new(BIN).arg("passwd").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    cache.push((password.to_string(), hash.clone()));
    hash
}

/// `[[gate.users]]` tables for [`USERS`].
pub fn default_users() -> String {
    USERS
        .iter()
        .map(|(name, password, role)| {
            format!("[[gate.users]]\nname = {name:?}\npassword_hash = {:?}\nrole = {role:?}\n", hash_of(password))
        })
        .collect()
}

/// A config for a test agent: gate on an ephemeral loopback port, state in `dir`, the
/// `[node_red]` body given, `gate_keys` in `[gate]`, then `gate_tables` (default: node space
/// open and the [`USERS`]).
pub fn config_with(dir: &Path, node_red: &str, gate_keys: &str, gate_tables: Option<&str>) -> String {
    let tables = match gate_tables {
        Some(t) => t.to_string(),
        None => format!("[gate.http_auth]\nmode = \"none\"\n{}", default_users()),
    };
    format!(
        "state_dir = {state:?}\nlog_level = \"debug\"\n[node_red]\n{node_red}\n[gate]\nlisten = \"127.0.0.1:0\"\n{gate_keys}\n{tables}\n",
        state = dir.join("state").display().to_string(),
    )
}

pub fn config(dir: &Path, node_red: &str) -> String {
    config_with(dir, node_red, "", None)
}

/// The `[node_red]` line that runs the fixture Node-RED.
pub fn fixture_node_red() -> String {
    format!("command = [\"node\", {:?}]", crate::node_red::red_js().display().to_string())
}

pub struct Agent {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub config: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// The agent's audit events of `kind` (and `kind.*`), oldest first, through the real CLI.
    pub fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        let out = Command::new(BIN)
            .args(["audit", "list", "--json", "--kind", kind, "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The agent's whole journal, oldest first, as `redtether audit export` writes it.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        let out = Command::new(BIN).args(["audit", "export", "--config"]).arg(&self.config).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Starts an agent with the fixture Node-RED and `extra` appended to `[node_red]`.
    pub fn start(extra: &str) -> Agent {
        // Fast health checks unless the test sets its own.
        let health = if extra.contains("health_interval") { "" } else { "health_interval = \"500ms\"" };
        Agent::start_with(&format!("{}\n{health}\n{extra}", fixture_node_red()), &[])
    }

    /// Starts an agent with this `[node_red]` body and extra environment.
    pub fn start_with(node_red: &str, env: &[(&str, &str)]) -> Agent {
        Agent::start_full(node_red, "", None, env)
    }

    /// Starts an agent running the fixture Node-RED with these `[gate]` keys and tables.
    pub fn start_gate(gate_keys: &str, gate_tables: Option<&str>) -> Agent {
        let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
        Agent::start_full(&node_red, gate_keys, gate_tables, &[])
    }

    pub fn start_full(node_red: &str, gate_keys: &str, gate_tables: Option<&str>, env: &[(&str, &str)]) -> Agent {
        let mut agent = Agent::prepare(node_red, gate_keys, gate_tables);
        agent.spawn(env);
        agent
    }

    /// Starts with `flows` already in Node-RED's user directory and waits until it runs them.
    pub fn start_with_flows(
        node_red: &str,
        gate_keys: &str,
        gate_tables: Option<&str>,
        flows: &serde_json::Value,
    ) -> Agent {
        let mut agent = Agent::prepare(node_red, gate_keys, gate_tables);
        let user_dir = agent.state_dir().join("node-red");
        std::fs::create_dir_all(&user_dir).unwrap();
        std::fs::write(user_dir.join("flows.json"), serde_json::to_string_pretty(flows).unwrap()).unwrap();
        agent.spawn(&[]);
        agent.wait_running();
        agent
    }

    /// Writes the config without starting the agent (to put files in place first).
    pub fn prepare(node_red: &str, gate_keys: &str, gate_tables: Option<&str>) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, self::config_with(dir.path(), node_red, gate_keys, gate_tables)).unwrap();
        Agent { dir, child: None, config, log: PathBuf::new() }
    }

    /// Starts inside `netns` (as `ip netns exec`), on the same state directory and config.
    pub fn spawn_in(&mut self, netns: &crate::netns::Netns) {
        self.spawn_with(netns.command(BIN));
    }

    /// Starts (again) on the same state directory and config.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut cmd = Command::new(BIN);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.spawn_with(cmd);
    }

    fn spawn_with(&mut self, mut cmd: Command) {
        self.log = self.dir.path().join(format!(
            "agent-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let log = std::fs::File::create(&self.log).unwrap();
        cmd.arg("run").arg("--config").arg(&self.config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().unwrap());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// `redtether status --json` through the real CLI, or `None` while it does not answer.
    pub fn try_status(&self) -> Option<serde_json::Value> {
        if !crate::process_alive(self.pid()) {
            panic!("the agent is not running; its log:\n{}", self.log());
        }
        let out = Command::new(BIN).args(["status", "--json", "--config"]).arg(&self.config).output().unwrap();
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> serde_json::Value {
        wait_for(Duration::from_secs(20), "the agent's control socket", || self.try_status())
    }

    /// Waits until Node-RED reports `state` and returns the status.
    pub fn wait_state(&self, state: &str, timeout: Duration) -> serde_json::Value {
        wait_for(timeout, &format!("Node-RED state {state}"), || {
            self.try_status().filter(|s| s["node_red"]["state"] == state)
        })
    }

    pub fn wait_running(&self) -> serde_json::Value {
        self.wait_state("running", Duration::from_secs(60))
    }

    /// The gate's base URL, from the status document.
    pub fn gate_url(&self) -> String {
        format!("http://{}", self.status()["gate"]["listen"].as_str().unwrap())
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        crate::send_signal(self.pid(), signal);
    }

    /// Waits for the agent to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        wait_for(timeout, "the agent to exit", || child.try_wait().unwrap())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if wait_for_exit(child, Duration::from_secs(15)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
