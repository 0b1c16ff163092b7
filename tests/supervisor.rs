//! The supervisor with real processes: restarts with backoff, crash loops, hung runs, clean
//! stops, and no orphans.

use redtether_testkit as common;

use common::agent::Agent;
use common::{pids_with_env, process_alive, send_signal, wait_for};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

const INSTANCE_ENV: &str = "REDTETHER_NODE_RED_INSTANCE";

fn node_red_pid(status: &serde_json::Value) -> u32 {
    status["node_red"]["pid"].as_u64().expect("Node-RED pid in status") as u32
}

fn instance_of(pid: u32) -> String {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    env.split(|&b| b == 0)
        .find_map(|e| std::str::from_utf8(e).ok()?.strip_prefix(&format!("{INSTANCE_ENV}=")).map(str::to_string))
        .expect("Node-RED carries its instance marker")
}

#[test]
fn killed_node_red_is_restarted_and_counted() {
    let agent = Agent::start("restart_backoff_min = \"200ms\"\nrestart_backoff_max = \"2s\"");
    let first = node_red_pid(&agent.wait_running());
    send_signal(first, Signal::SIGKILL);

    let status = wait_for(Duration::from_secs(30), "a new Node-RED run", || {
        let status = agent.try_status()?;
        // Between the exit and the restart the status says so: never "running" without a pid.
        if status["node_red"]["state"] == "running" {
            assert!(status["node_red"]["pid"].is_u64(), "running with no pid: {status}");
        }
        Some(status)
            .filter(|s| s["node_red"]["state"] == "running" && s["node_red"]["pid"].as_u64() != Some(first as u64))
    });
    // At least one restart; more only if the new run lost its port to another process (tests
    // run many Node-REDs at once), which the supervisor also rides out.
    assert!(status["node_red"]["restarts"].as_u64().unwrap() >= 1, "{status}");
    assert!(!process_alive(first));
    let log = agent.log();
    assert!(
        log.contains(&format!("pid={first}")) && log.contains("was killed by signal 9 (SIGKILL)"),
        "the kill is seen"
    );
    assert!(log.contains("restarting"), "the backoff is logged");
    let exits = std::process::Command::new(common::agent::BIN)
        .args(["audit", "list", "--json", "--kind", "nodered.exited", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let first_exit: serde_json::Value =
        serde_json::from_str(String::from_utf8(exits.stdout).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first_exit["detail"]["signal"], 9, "audited with the signal: {first_exit}");
    assert_eq!(first_exit["detail"]["pid"], first);
}

#[test]
fn node_red_that_exits_at_once_reaches_crash_loop_without_a_tight_loop() {
    let agent = Agent::start_with(
        "command = [\"node\", \"-e\", \"process.exit(3)\", \"--\"]\nrestart_backoff_min = \"100ms\"\nrestart_backoff_max = \"1s\"\ncrash_loop_restarts = 3\ncrash_loop_window = \"1m\"",
        &[],
    );
    let status = agent.wait_state("crash_loop", Duration::from_secs(30));
    assert!(status["node_red"]["last_exit"].as_str().unwrap().contains("code 3"), "{status}");
    assert!(status["node_red"]["detail"].as_str().unwrap().contains("restarting in 1s"), "{status}");

    // In the crash loop the child is still retried, at the 1 s cap: over 3 s that is 2 to 4
    // starts, where a tight loop would make hundreds.
    let before = status["node_red"]["restarts"].as_u64().unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let after = agent.status()["node_red"]["restarts"].as_u64().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(after > before, "still retried in the crash loop");
    assert!((after - before) as f64 <= elapsed + 1.0, "{} restarts in {elapsed:.1}s", after - before);
}

#[test]
fn hung_node_red_is_stopped_and_restarted() {
    let agent = Agent::start("health_timeout = \"2s\"\nstop_timeout = \"1s\"\nrestart_backoff_min = \"100ms\"");
    let first = node_red_pid(&agent.wait_running());
    // A stopped process answers nothing: to the supervisor it is hung.
    send_signal(first, Signal::SIGSTOP);
    let status = wait_for(Duration::from_secs(30), "the hung run to be replaced", || {
        agent
            .try_status()
            .filter(|s| s["node_red"]["state"] == "running" && s["node_red"]["pid"].as_u64() != Some(first as u64))
    });
    let last_exit = status["node_red"]["last_exit"].as_str().unwrap();
    assert!(last_exit.contains("hung"), "{last_exit}");
    assert!(!process_alive(first));
}

#[test]
fn sigterm_stops_node_red_and_exits_zero() {
    let mut agent = Agent::start("stop_timeout = \"5s\"");
    let node = node_red_pid(&agent.wait_running());
    let instance = instance_of(node);
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "agent exit status");
    assert!(!process_alive(node), "Node-RED stopped with the agent");
    assert!(pids_with_env(INSTANCE_ENV, &instance).is_empty(), "nothing of that run left");
    assert!(!agent.state_dir().join("control.sock").exists(), "control socket removed");
    assert!(agent.log().contains("was stopped by the agent (exited with code 0)"), "Node-RED stopped gracefully");
}

#[test]
fn sigterm_completes_even_when_node_red_ignores_it() {
    // A Node-RED that ignores SIGTERM is killed after stop_timeout; the agent still exits 0.
    let script = "process.on('SIGTERM', () => {}); console.log('ignoring SIGTERM'); setInterval(() => {}, 1000);";
    let mut agent = Agent::start_with(
        &format!("command = [\"node\", \"-e\", {script:?}, \"--\"]\nstop_timeout = \"1s\"\nstartup_timeout = \"1h\""),
        &[],
    );
    let node = wait_for(Duration::from_secs(20), "Node-RED spawned", || agent.try_status()?["node_red"]["pid"].as_u64())
        as u32;
    wait_for(Duration::from_secs(20), "the SIGTERM handler", || agent.log().contains("ignoring SIGTERM").then_some(()));
    let started = Instant::now();
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(7), "bounded by stop_timeout, took {:?}", started.elapsed());
    assert!(!process_alive(node));
    assert!(agent.log().contains("did not stop in time"), "the kill is logged");
}

#[test]
fn processes_that_leave_node_reds_group_are_ended_too() {
    // The "Node-RED" starts a grandchild in a new session (as an exec node might), then runs.
    let red_js = common::node_red::red_js();
    let command = format!(
        "command = [\"sh\", \"-c\", \"setsid sleep 300 & exec node \\\"$0\\\" \\\"$@\\\"\", {:?}]",
        red_js.display().to_string()
    );
    let mut agent = Agent::start_with(&format!("{command}\nhealth_interval = \"500ms\""), &[]);
    let node = node_red_pid(&agent.wait_running());
    let instance = instance_of(node);
    let sleepers = wait_for(Duration::from_secs(5), "the grandchild", || {
        let pids: Vec<u32> = pids_with_env(INSTANCE_ENV, &instance).into_iter().filter(|&p| p != node).collect();
        (!pids.is_empty()).then_some(pids)
    });
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    for pid in sleepers {
        wait_for(Duration::from_secs(5), "the grandchild to end", || (!process_alive(pid)).then_some(()));
    }
}

#[test]
fn sigkilled_agent_leaves_no_node_red_and_its_successor_cleans_up() {
    let red_js = common::node_red::red_js();
    let command = format!(
        "command = [\"sh\", \"-c\", \"setsid sleep 300 & exec node \\\"$0\\\" \\\"$@\\\"\", {:?}]",
        red_js.display().to_string()
    );
    let mut agent = Agent::start_with(&format!("{command}\nhealth_interval = \"500ms\""), &[]);
    let node = node_red_pid(&agent.wait_running());
    let instance = instance_of(node);

    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(5));
    // The parent-death signal takes Node-RED down with the agent.
    wait_for(Duration::from_secs(5), "Node-RED to die with the agent", || (!process_alive(node)).then_some(()));

    // What left the group survives the kill; the next agent on this state directory ends it.
    agent.spawn(&[]);
    agent.wait_running();
    wait_for(Duration::from_secs(10), "leftovers of the killed run to be ended", || {
        pids_with_env(INSTANCE_ENV, &instance).is_empty().then_some(())
    });
    assert!(agent.log().contains("left behind by an earlier run"), "the clean-up is logged");
}

#[test]
fn restart_command_starts_a_new_run() {
    let agent = Agent::start("");
    let first = node_red_pid(&agent.wait_running());
    let out = std::process::Command::new(common::agent::BIN)
        .args(["restart-node-red", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = agent.wait_running();
    assert_ne!(node_red_pid(&status), first);
    assert_eq!(status["node_red"]["restarts"], 1);
    assert!(!process_alive(first));
}

#[test]
fn missing_npm_is_a_clear_error_and_the_agent_stays_up() {
    let agent = Agent::start_with(
        "npm = \"/nonexistent/npm\"\nrestart_backoff_min = \"200ms\"\nrestart_backoff_max = \"1s\"",
        &[],
    );
    let status = agent.wait_state("backoff", Duration::from_secs(20));
    let detail = status["node_red"]["detail"].as_str().unwrap();
    assert!(detail.contains("npm is not available") && detail.contains("node_red.npm"), "{detail}");
    // Retried, and the daemon keeps answering meanwhile.
    wait_for(Duration::from_secs(10), "a second install attempt in the log", || {
        (agent.log().matches("cannot install Node-RED").count() >= 2).then_some(())
    });
    assert!(agent.try_status().is_some(), "daemon still answers");
    let gate = agent.gate_url();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let code = rt.block_on(async { common::http::client().get(format!("{gate}/")).send().await.unwrap().status() });
    assert_eq!(code, 503, "the gate says Node-RED is not running");
}

#[test]
fn installs_the_pinned_node_red_with_npm_when_missing() {
    // Populate npm's cache from the lockfile first, so this install works like a device with a
    // warm cache and does not depend on registry latency.
    common::node_red::red_js();
    let version = common::node_red::pinned_version();
    let agent = Agent::start_with(
        &format!("package = \"node-red@{version}\"\nstartup_timeout = \"2m\"\nhealth_interval = \"500ms\""),
        &[("npm_config_prefer_offline", "true")],
    );
    let status = agent.wait_state("running", Duration::from_secs(300));
    let runtime = agent.state_dir().join("runtime");
    assert!(runtime.join("node_modules/node-red/red.js").is_file());
    assert_eq!(std::fs::read_to_string(runtime.join(".redtether-package")).unwrap(), format!("node-red@{version}"));
    // Node-RED renames its process, so its cwd-independent proof is what it says it runs.
    let pid = node_red_pid(&status);
    assert!(std::fs::read_link(format!("/proc/{pid}/exe")).unwrap().to_string_lossy().contains("node"));
    let log = agent.log();
    assert!(
        log.contains("installing Node-RED with npm") && log.contains("Node-RED installed"),
        "install progress is logged"
    );
    assert!(log.contains(&format!("Node-RED version: v{version}")), "the installed version runs");
}

#[test]
fn node_red_sends_no_telemetry_and_asks_no_editor_user_about_it() {
    let agent = Agent::start("");
    agent.wait_running();
    let client = common::http::blocking_client_builder().build().unwrap();
    let settings: serde_json::Value = client
        .get(format!("{}/device-editor/settings", agent.gate_url()))
        .basic_auth("owner", Some("owner-pw"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    // `false`, not absent: Node-RED's editor asks every new user for consent (and then about
    // update notifications) while the setting is undecided.
    assert_eq!(settings["telemetryEnabled"], serde_json::Value::Bool(false), "{settings}");
    let written = std::fs::read_to_string(agent.state_dir().join("node-red/settings.js")).unwrap();
    assert!(written.contains("\"updateNotification\": false"), "{written}");
}
