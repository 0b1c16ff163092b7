//! The hub's command line on its own, without an agent: configuration errors and the commands
//! that work on a stopped hub's state. (The tests that need an agent too are in the top-level
//! tests/; this file also makes `cargo test` build the hub binary they run.)

use std::process::Command;

const HUB: &str = env!("CARGO_BIN_EXE_redtether-hub");

#[test]
fn hub_config_errors_name_the_key_and_the_cli_works_without_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "listen = \"everywhere\"\n").unwrap();
    let out = Command::new(HUB).args(["run", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`listen`"));
    std::fs::write(&config, format!("state_dir = {:?}\n", dir.path().join("state").display().to_string())).unwrap();
    let out = Command::new(HUB)
        .args(["operator", "add", "--name", "ann", "--role", "viewer", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rtsetup_"), "a person gets a setup code");
    let out = Command::new(HUB)
        .args(["operator", "add", "--name", "ci", "--role", "member", "--token", "--expires", "1h", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rto_"), "automation gets a token");
    let out = Command::new(HUB).args(["audit", "verify", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 events"), "added, added, token.created");
    let out = Command::new(HUB).args(["operator", "list", "--config"]).arg(&config).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ann\""));
    let out = Command::new(HUB)
        .args(["operator", "add", "--name", "bob", "--role", "god", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_plaintext_api_on_the_network_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    let state = dir.path().join("state").display().to_string();
    std::fs::write(&config, format!("state_dir = {state:?}\nlisten = \"127.0.0.1:0\"\napi_listen = \"0.0.0.0:0\"\n"))
        .unwrap();
    let out = Command::new(HUB).args(["run", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`api_listen`") && stderr.contains("hub.toml"), "{stderr}");
    assert!(!dir.path().join("state").exists(), "refused before anything is made");
}

#[test]
fn a_second_hub_on_the_same_state_dir_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    let state = dir.path().join("state");
    let text = format!(
        "state_dir = {:?}\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n",
        state.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let mut first =
        Command::new(HUB).args(["run", "--config"]).arg(&config).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !state.join("control.sock").exists() {
        assert!(std::time::Instant::now() < deadline, "the first hub never came up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = Command::new(HUB).args(["run", "--config"]).arg(&config).output().unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(75), "temporary failure: try again later");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another redtether hub is already running"), "{stderr}");
}
