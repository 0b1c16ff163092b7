//! The audit journal through the real agent: events from the gate and the supervisor, the CLI
//! (list, filters, tail -f, export, verify) with the daemon running and stopped, the size bound,
//! recovery from a damaged journal, and the crash test: SIGKILL at random moments while
//! refusals are being answered, then every answered refusal must be in the journal.

use redtether_testkit as common;

use common::agent::{Agent, BIN, default_users};
use common::login_load::{FailedLogins, failed_login, next_random};
use common::wait_for;
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A "Node-RED" that does nothing: these tests are about the gate and the journal.
const PLACEHOLDER: &str =
    "command = [\"sh\", \"-c\", \"exec sleep 100000\", \"placeholder\"]\nstartup_timeout = \"1h\"";

fn audit(agent: &Agent, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("audit").args(args).arg("--config").arg(&agent.config).output().unwrap()
}

fn events(agent: &Agent, args: &[&str]) -> Vec<serde_json::Value> {
    let out = audit(agent, &[&["list", "--json"], args].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// One failed login with a distinct user name; true if the gate answered 401.
fn gate_addr(agent: &Agent) -> String {
    agent.status()["gate"]["listen"].as_str().unwrap().to_string()
}

const NO_LIMIT: &str = "[gate.rate_limit]\nfailed_auth_burst = 1000000\nfailed_auth_per_second = 1000000.0\n";

#[test]
fn the_cli_lists_filters_exports_and_verifies_with_and_without_the_daemon() {
    let mut agent = Agent::start_full(PLACEHOLDER, "", Some(&format!("{NO_LIMIT}{}", default_users())), &[]);
    let addr = gate_addr(&agent);
    for i in 0..3 {
        assert!(failed_login(&addr, &format!("probe-{i}")));
    }
    // Node-RED's start is recorded when it has started, which a loaded machine may take a
    // moment longer for than the failed logins.
    let all = wait_for(Duration::from_secs(30), "nodered.started in the journal", || {
        let all = events(&agent, &[]);
        all.iter().any(|e| e["kind"] == "nodered.started").then_some(all)
    });
    let kinds: Vec<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..2], ["agent.started", "config.loaded"], "{kinds:?}");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        for field in ["id", "ts", "kind", "actor", "target", "level", "detail", "prev_hash", "hash"] {
            assert!(!e[field].is_null(), "{field} in {e}");
        }
        if i > 0 {
            assert_eq!(e["prev_hash"], all[i - 1]["hash"], "chained");
        }
    }
    let failed = events(&agent, &["--kind", "auth.failed"]);
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0]["detail"]["claimed"], "probe-0");
    assert_eq!(failed[0]["detail"]["reason"], "unknown_user");
    assert_eq!(events(&agent, &["--kind", "auth"]).len(), 3, "a dotted prefix");
    let second = failed[1]["seq"].as_u64().unwrap();
    assert_eq!(events(&agent, &["--kind", "auth.failed", "--since", &second.to_string()]).len(), 2);
    let ts = failed[2]["ts"].as_str().unwrap();
    assert!(
        events(&agent, &["--since", ts])
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() >= failed[2]["seq"].as_u64().unwrap())
    );
    let bad_since = audit(&agent, &["list", "--since", "last tuesday"]);
    assert!(!bad_since.status.success());

    let export = audit(&agent, &["export"]);
    assert_eq!(String::from_utf8(export.stdout).unwrap().lines().count(), all.len());
    let verify = audit(&agent, &["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("audit chain OK"));

    let status = agent.status();
    assert_eq!(status["audit"]["last_seq"].as_u64().unwrap(), all.len() as u64);
    assert_eq!(status["audit"]["backlog"].as_u64().unwrap(), all.len() as u64, "nothing forwarded yet");

    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    // Stopped: the CLI reads the journal itself, and the shutdown is in it.
    let after = events(&agent, &[]);
    let tail: Vec<&str> = after.iter().rev().take(2).map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(tail.contains(&"agent.stopping") && tail.contains(&"nodered.exited"), "{tail:?}");
    assert!(audit(&agent, &["verify"]).status.success());
    let human = String::from_utf8(audit(&agent, &["list"]).stdout).unwrap();
    assert!(human.lines().any(|l| l.contains("auth.failed") && l.contains("anonymous@127.0.0.1")), "{human}");
}

#[test]
fn tail_follows_new_events() {
    let agent = Agent::start_full(PLACEHOLDER, "", Some(&format!("{NO_LIMIT}{}", default_users())), &[]);
    let addr = gate_addr(&agent);
    // The start-up events (agent, config, Node-RED started) are queued, not awaited: the control
    // socket can answer before the third is committed.
    wait_for(Duration::from_secs(10), "the start-up events", || {
        (agent.status()["audit"]["last_seq"].as_u64() >= Some(3)).then_some(())
    });
    let mut tail = Command::new(BIN)
        .args(["audit", "tail", "-f", "-n", "1", "--json", "--config"])
        .arg(&agent.config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(first["seq"].as_u64().unwrap() >= 3, "the newest event first");
    assert!(failed_login(&addr, "followed"));
    let next: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(next["kind"], "auth.failed");
    assert_eq!(next["detail"]["claimed"], "followed");
    tail.kill().unwrap();
    tail.wait().unwrap();
}

#[test]
fn a_full_journal_drops_the_oldest_and_says_how_many() {
    let mut agent = Agent::prepare(PLACEHOLDER, "", Some(&format!("{NO_LIMIT}{}", default_users())));
    let config = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, format!("{config}\n[audit]\nmax_bytes = 65536\n")).unwrap();
    agent.spawn(&[]);
    let addr = gate_addr(&agent);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let addr = addr.clone();
            std::thread::spawn(move || (0..80).filter(|i| failed_login(&addr, &format!("fill-{w}-{i}"))).count())
        })
        .collect();
    let answered: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(answered, 320);
    let all = events(&agent, &[]);
    assert!(all.first().unwrap()["seq"].as_u64().unwrap() > 1, "the oldest are gone");
    let dropped: Vec<_> = all.iter().filter(|e| e["kind"] == "audit.dropped").collect();
    assert!(!dropped.is_empty(), "never silent");
    let d = &dropped[0]["detail"];
    assert_eq!(d["count"].as_u64().unwrap(), d["last_seq"].as_u64().unwrap() - d["first_seq"].as_u64().unwrap() + 1);
    assert!(agent.status()["audit"]["bytes"].as_u64().unwrap() <= 65536 + 8192);
    assert!(audit(&agent, &["verify"]).status.success(), "the chain restarts from the checkpoint");
}

#[test]
fn a_journal_that_cannot_be_opened_is_kept_aside_and_a_new_one_says_so() {
    let mut agent = Agent::prepare(PLACEHOLDER, "", None);
    let journal = agent.state_dir().join("audit");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join("conf"), b"\xff\xfe garbage").unwrap();
    std::fs::write(journal.join("db"), vec![0x5Au8; 8192]).unwrap();
    agent.spawn(&[]);
    agent.status();
    let all = events(&agent, &[]);
    assert_eq!(all[0]["kind"], "audit.reset", "{:?}", all[0]);
    let moved = all[0]["detail"]["moved_to"].as_str().unwrap();
    assert_eq!(
        std::fs::read(std::path::Path::new(moved).join("db")).unwrap(),
        vec![0x5Au8; 8192],
        "kept for forensics"
    );
    assert_eq!(all[1]["kind"], "agent.started", "the agent started anyway");
}

/// The crash test. CI runs a few cycles; `REDTETHER_CRASH_CYCLES=200` runs a long one.
#[test]
fn answered_refusals_survive_sigkill_at_random_moments() {
    let cycles: u32 = std::env::var("REDTETHER_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let mut agent = Agent::start_full(PLACEHOLDER, "", Some(&format!("{NO_LIMIT}{}", default_users())), &[]);
    let mut answered_total = 0usize;
    let mut losses = Vec::new();
    let mut rng_state = 0x9E3779B97F4A7C15u64 ^ u64::from(std::process::id());
    for cycle in 0..cycles {
        let addr = gate_addr(&agent);
        let load = FailedLogins::start(&addr, &format!("c{cycle}"));
        std::thread::sleep(Duration::from_millis(150 + next_random(&mut rng_state) % 600));
        agent.signal(Signal::SIGKILL);
        agent.wait_exit(Duration::from_secs(5));
        let answered = load.stop();
        answered_total += answered.len();

        // With the agent dead, the CLI opens the journal itself, as a restarted agent would.
        let present: HashSet<String> = events(&agent, &["--kind", "auth.failed"])
            .iter()
            .filter_map(|e| e["detail"]["claimed"].as_str().map(str::to_string))
            .collect();
        losses.extend(answered.iter().filter(|u| !present.contains(*u)).cloned());
        let verify = audit(&agent, &["verify"]);
        assert!(verify.status.success(), "cycle {cycle}: {}", String::from_utf8_lossy(&verify.stderr));
        agent.spawn(&[]);
    }
    eprintln!("crash test: {cycles} SIGKILLs, {answered_total} answered refusals, {} lost", losses.len());
    assert!(answered_total > 0);
    assert!(losses.is_empty(), "answered but not in the journal: {losses:?}");
    wait_for(Duration::from_secs(20), "the last agent", || agent.try_status());
}
