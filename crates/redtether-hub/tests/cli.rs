//! The hub's command line on its own, without an agent: configuration errors, the commands
//! that work on a stopped hub's state, and what a first start prints (the console, and the
//! first owner's setup link once). (The tests that need an agent too are in the top-level
//! tests/; this file also makes `cargo test` build the hub binary they run.)

use redtether_testkit::hub::Hub;
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

/// The first owner's setup link in what a start printed, if it printed one.
fn setup_link(stdout: &str) -> Option<String> {
    stdout.split_whitespace().find(|w| w.contains("/setup?code=")).map(str::to_string)
}

#[test]
fn a_first_start_makes_the_first_owner_once_and_prints_its_setup_link() {
    // The built-in defaults ask for `admin` (a unit test of the settings says so); here a file
    // asks for it, so the hub can listen on free ports.
    let mut hub = Hub::start_with("info", "first_owner = \"admin\"");
    let console = format!("{}/", hub.api());
    let first = hub.stdout();
    assert!(first.contains(&format!("console at {console}")), "{first}");
    let link = setup_link(&first).unwrap_or_else(|| panic!("no setup link in {first:?}"));
    let code = link.strip_prefix(&format!("{console}setup?code=")).unwrap_or_else(|| panic!("{link}"));
    assert!(code.starts_with("rtsetup_"), "{code}");
    assert!(!hub.log().contains(code), "the code is printed, not logged");

    // The link's page is there, and its code sets the account up through the API.
    let client =
        redtether_testkit::http::blocking_client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    assert_eq!(client.get(&link).send().unwrap().status(), 200);
    let admin = hub.set_up("admin", code);
    let login = client
        .post(format!("{console}api/login"))
        .json(&serde_json::json!({
            "name": "admin", "password": admin.password, "totp": admin.code_at(redtether_testkit::unix_now() + 30)
        }))
        .send()
        .unwrap();
    assert_eq!(login.status(), 200);
    let me: serde_json::Value = login.json().unwrap();
    assert_eq!(me["role"], "owner");

    // The console's page sends a stranger to the login form.
    let page = client.get(&console).header("accept", "text/html").send().unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login?next=%2F");

    // Recorded as `operator add` records an account; the code works once.
    let added: Vec<_> = hub.audit().into_iter().filter(|e| e["kind"] == "operator.added").collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!((added[0]["target"].as_str(), added[0]["actor"].as_str()), (Some("operator:admin"), Some("system")));
    let again = client
        .post(format!("{console}api/setup"))
        .json(&serde_json::json!({ "code": code, "password": "another-long-password" }))
        .send()
        .unwrap();
    assert_eq!(again.status(), 401, "used up by the setup");

    // A later start finds an owner: the console line only.
    hub.kill9();
    hub.spawn();
    let second = hub.stdout();
    assert!(second.contains(&format!("console at {}/", hub.api())), "{second}");
    assert_eq!(setup_link(&second), None, "{second}");
    let (code, listed, err) = hub.cli(&["operator", "list"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

#[test]
fn a_hub_toml_without_first_owner_makes_no_account_and_enroll_token_prints_the_command() {
    let hub = Hub::start_with("info", "");
    let out = hub.stdout();
    assert!(out.contains(&format!("console at {}/", hub.api())), "{out}");
    assert_eq!(setup_link(&out), None, "{out}");
    assert_eq!(hub.cli(&["operator", "list"]).1, "[]");

    let (code, token, err) = hub.cli(&["enroll-token", "--device", "pump-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(token.starts_with("rte_") && !token.contains(char::is_whitespace), "only the token on stdout: {token}");
    let command =
        format!("redtether enroll --hub {} --token {token} --ca-fingerprint {}", hub.addr(), hub.fingerprint());
    assert!(err.lines().any(|l| l.trim() == command), "{err:?} should hold {command:?}");
}

#[test]
fn a_start_that_cannot_listen_makes_no_first_owner() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "state_dir = {:?}\nlisten = \"127.0.0.1:0\"\napi_listen = \"{}\"\nfirst_owner = \"admin\"\n",
        dir.path().join("state").display().to_string(),
        busy.local_addr().unwrap()
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(HUB).args(["run", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("setup?code="));
    // The next start that gets its ports will make the owner and print its link.
    let out = Command::new(HUB).args(["operator", "list", "--config"]).arg(&config).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}
