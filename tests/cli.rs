//! The command line: configuration errors (exit 78 naming file and key), `check-config`,
//! `status` without a daemon, and one agent per state directory.

use redtether_testkit as common;

use common::agent::{Agent, BIN};
use std::process::Command;

fn redtether(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(BIN).args(args).arg("--config").arg(config).output().unwrap()
}

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn bad_config_exits_78_naming_file_and_key() {
    let cases = [
        ("[node_red]\nmax_old_space_mb = \"lots\"\n", "node_red.max_old_space_mb"),
        ("[gate]\nlisten = \"everywhere\"\n", "gate.listen"),
        ("[gate]\nlisten = \"0.0.0.0:1880\"\nport = 80\n", "gate.port"),
        ("[node_red]\nrestart_backoff_min = \"1m\"\nrestart_backoff_max = \"1s\"\n", "node_red.restart_backoff_max"),
        ("[tunnel]\nproxy = \"socks5://proxy.plant:1080\"\n", "tunnel.proxy"),
    ];
    for (text, key) in cases {
        let (_dir, path) = write_config(text);
        for subcommand in ["run", "check-config"] {
            let out = redtether(&[subcommand], &path);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{subcommand} with {text:?}: {stderr}");
            assert!(stderr.contains(&format!("`{key}`")), "{subcommand}: names the key {key}: {stderr}");
            assert!(stderr.contains(&path.display().to_string()), "{subcommand}: names the file: {stderr}");
        }
    }
}

#[test]
fn missing_explicit_config_is_a_config_error() {
    let out = Command::new(BIN).args(["check-config", "--config", "/nonexistent/agent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
}

#[test]
fn good_config_checks_ok_without_touching_the_state_dir() {
    let (dir, path) = write_config("state_dir = \"state\"\n[gate]\nlisten = \"127.0.0.1:1880\"\n");
    let out = redtether(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("127.0.0.1:1880"), "{stdout}");
    assert!(stdout.contains(&dir.path().join("state").display().to_string()), "relative to the file: {stdout}");
    assert!(!dir.path().join("state").exists());
}

#[test]
fn status_without_a_daemon_exits_3() {
    let state = tempfile::tempdir().unwrap();
    let (_dir, path) = write_config(&format!("state_dir = {:?}\n", state.path().display().to_string()));
    for args in [&["status"][..], &["status", "--json"][..]] {
        let out = redtether(args, &path);
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    }
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("redtether {}", env!("CARGO_PKG_VERSION")));
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for sub in ["run", "check-config", "status"] {
        assert!(text.contains(sub), "{text}");
    }
}

#[test]
fn human_status_summarises_the_daemon() {
    let agent = Agent::start("");
    agent.wait_running();
    let out = redtether(&["status"], &agent.config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("node-red  running (pid "), "{text}");
    assert!(text.contains("listening on 127.0.0.1:"), "{text}");
}

#[test]
fn status_json_has_the_documented_fields() {
    let agent = Agent::start("");
    let status = agent.wait_running();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["gate"]["listen"].as_str().unwrap().starts_with("127.0.0.1:"));
    let nr = &status["node_red"];
    assert!(nr["pid"].as_u64().unwrap() > 0);
    assert_eq!(nr["restarts"], 0);
    assert!(nr["since"].as_str().unwrap().ends_with('Z'));
    let control = agent.state_dir().join("control.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&control).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "control socket is private");
    let secret = agent.state_dir().join("credential-secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secret).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "credential secret is private");
}

#[test]
fn a_second_agent_on_the_same_state_dir_is_refused() {
    let agent = Agent::start("");
    agent.wait_running();
    let out = Command::new(BIN).arg("run").arg("--config").arg(&agent.config).output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    // The first one is unharmed.
    assert_eq!(agent.status()["node_red"]["state"], "running");
}
