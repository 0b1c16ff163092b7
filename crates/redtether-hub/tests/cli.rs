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
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rto_"));
    let out = Command::new(HUB).args(["operator", "list", "--config"]).arg(&config).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ann\""));
    let out = Command::new(HUB)
        .args(["operator", "add", "--name", "bob", "--role", "god", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
