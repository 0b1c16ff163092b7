//! A full disk under the agent: its whole state directory on a small tmpfs that the test fills
//! to the last byte. While the journal cannot persist, admin writes, logins and token changes
//! are refused with 503 `audit_unavailable` (the CLI's with a refusal), node space and editor
//! reads go on; once space is freed the journal recovers by itself (same process), the failed
//! logins it could not record are counted in one `audit.gap` event, everything that was answered
//! is in the journal, and the chain verifies. Needs root (mount); skipped with a message
//! otherwise.

use redtether_testkit as common;

use common::agent::{Agent, BIN, default_users, fixture_node_red};
use common::http::{Cred, deploy, echo_flow, with};
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Small enough to fill in a moment, large enough for Node-RED's user directory and sled's log.
const DISK_SIZE: &str = "8m";
const NO_LIMIT: &str = "[gate.rate_limit]\nfailed_auth_burst = 1000000\nfailed_auth_per_second = 1000000.0\n";

/// A tmpfs of [`DISK_SIZE`] mounted under a temporary directory; unmounted (and the directory
/// removed) on drop.
struct SmallDisk {
    mountpoint: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let tmp = tempfile::tempdir().unwrap();
        let mountpoint = tmp.path().join("disk");
        std::fs::create_dir(&mountpoint).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_SIZE},mode=0755"), "redtether-full-disk"])
            .arg(&mountpoint)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk { mountpoint, _tmp: tmp }
    }

    fn filler(&self) -> PathBuf {
        self.mountpoint.join("filler")
    }

    /// Writes a file until the filesystem refuses another byte; returns its size.
    fn fill(&self) -> u64 {
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let mut written = 0u64;
        for chunk in [64 * 1024, 4096, 1] {
            let bytes = vec![0x5Au8; chunk];
            loop {
                match file.write(&bytes) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling stops at a full disk: {e}");
                        break;
                    }
                }
            }
        }
        written
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let umount = Command::new("umount").arg(&self.mountpoint).status();
        if !umount.is_ok_and(|s| s.success()) {
            // Something still holds it (a test that failed half way): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        }
    }
}

/// The status and error code of a response.
async fn answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["error"].as_str().unwrap_or_default().to_string())
}

/// An admin-API read as `user` with a wrong password: a failed login as the crash tests make
/// them (the journal records the attempt with `claimed = user`).
async fn failed_login(client: &reqwest::Client, gate: &str, user: &str) -> (u16, String) {
    answer(with(client.get(format!("{gate}/device-editor/flows")), Cred::Basic(user, "wrong")).send().await.unwrap())
        .await
}

/// The editor's own login.
async fn editor_login(client: &reqwest::Client, gate: &str, user: &str, password: &str) -> (u16, String) {
    let form = [
        ("client_id", "node-red-editor"),
        ("grant_type", "password"),
        ("scope", "*"),
        ("username", user),
        ("password", password),
    ];
    answer(client.post(format!("{gate}/device-editor/auth/token")).form(&form).send().await.unwrap()).await
}

fn cli(agent: &Agent, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).arg("--config").arg(&agent.config).output().unwrap()
}

fn journal(agent: &Agent) -> Vec<serde_json::Value> {
    let out = cli(agent, &["audit", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_audited_actions_keeps_the_plant_running_and_recovers_by_itself() {
    if !is_root() {
        eprintln!("skipped: this test mounts a tmpfs for the agent's state directory and needs root");
        return;
    }
    // Declared first, so dropped last: the agent has stopped before the disk is unmounted.
    let disk = SmallDisk::mount();
    let tables = format!("[gate.http_auth]\nmode = \"none\"\n{NO_LIMIT}{}", default_users());
    let node_red = format!("{}\nhealth_interval = \"500ms\"", fixture_node_red());
    let mut agent = Agent::prepare(&node_red, "", Some(&tables));
    // The whole state directory lives on the small disk; Node-RED starts with an HTTP-In flow.
    let state = disk.mountpoint.join("state");
    std::fs::create_dir_all(state.join("node-red")).unwrap();
    std::fs::write(state.join("node-red/flows.json"), echo_flow().to_string()).unwrap();
    std::os::unix::fs::symlink(&state, agent.state_dir()).unwrap();
    agent.spawn(&[]);
    let pid = agent.pid();
    agent.wait_running();
    let gate = agent.gate_url();
    let client = common::http::client();
    let plant = format!("{gate}/api/data");
    common::wait_for_async(Duration::from_secs(15), "the flow's HTTP-In route", || async {
        (client.get(&plant).send().await.ok()?.status() == 200).then_some(())
    })
    .await;

    // Before: what is answered is recorded.
    let mut answered_401: Vec<String> = Vec::new();
    let (mut writes_answered, mut logins_answered) = (0, 0);
    assert_eq!(deploy(&client, &gate, &echo_flow(), Cred::Basic("owner", "owner-pw")).await.status(), 200);
    writes_answered += 1;
    assert_eq!(editor_login(&client, &gate, "owner", "owner-pw").await.0, 200);
    logins_answered += 1;
    for i in 0..5 {
        let user = format!("before-{i}");
        assert_eq!(failed_login(&client, &gate, &user).await.0, 401);
        answered_401.push(user);
    }

    // Fill the disk. sled may still fit a few records into pages it holds; failed logins go on
    // until one meets the full disk.
    let filled = disk.fill();
    eprintln!("filled the disk with {filled} bytes");
    let mut refused_logins: Vec<String> = Vec::new();
    for i in 0.. {
        assert!(i < 5000, "the journal never met the full disk");
        let user = format!("filling-{i}");
        match failed_login(&client, &gate, &user).await {
            (401, _) => answered_401.push(user),
            (503, error) => {
                assert_eq!(error, "audit_unavailable");
                refused_logins.push(user);
                break;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let status = agent.status();
    assert_eq!(status["audit"]["state"], "failing", "{status}");
    let last_error = status["audit"]["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("No space left on device"), "status names the error: {last_error}");
    let human = String::from_utf8(cli(&agent, &["status"]).stdout).unwrap();
    assert!(human.contains("FAILING since") && human.contains("on_failure = deny"), "{human}");

    // While failing: audited actions are refused ...
    let write = deploy(&client, &gate, &echo_flow(), Cred::Basic("owner", "owner-pw")).await;
    assert_eq!(answer(write).await, (503, "audit_unavailable".into()), "an admin write");
    assert_eq!(editor_login(&client, &gate, "owner", "owner-pw").await, (503, "audit_unavailable".into()), "a login");
    let wrong_login = editor_login(&client, &gate, "outage-editor", "wrong").await;
    assert_eq!(wrong_login, (503, "audit_unavailable".into()), "a failed login is told nothing more");
    refused_logins.push("outage-editor".into());
    for i in 0..7 {
        let user = format!("outage-{i}");
        assert_eq!(failed_login(&client, &gate, &user).await, (503, "audit_unavailable".into()));
        refused_logins.push(user);
    }
    let token = with(client.post(format!("{gate}/device-editor/redtether/tokens")), Cred::Basic("owner", "owner-pw"))
        .form(&[("name", "outage"), ("expires", "1h")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer(token).await, (503, "audit_unavailable".into()), "a token through the gate");
    let cli_token = cli(&agent, &["token", "create", "--name", "outage-cli", "--expires", "1h"]);
    let said = String::from_utf8_lossy(&cli_token.stderr);
    assert_eq!(cli_token.status.code(), Some(1), "a token through the CLI: {said}");
    assert!(said.contains("refused") && said.contains("audit journal"), "a clear refusal: {said}");
    assert!(cli_token.stdout.is_empty(), "no token printed");
    let listed = String::from_utf8(cli(&agent, &["token", "list"]).stdout).unwrap();
    assert!(!listed.contains("outage"), "no token was made: {listed}");

    // ... the plant and the editor's reads go on.
    for _ in 0..3 {
        assert_eq!(client.get(&plant).send().await.unwrap().status(), 200, "node space");
    }
    let flows = with(client.get(format!("{gate}/device-editor/flows")), Cred::Basic("owner", "owner-pw"));
    assert_eq!(flows.send().await.unwrap().status(), 200, "an editor read");
    assert_eq!(client.get(format!("{gate}/device-editor/")).send().await.unwrap().status(), 200, "the editor page");
    let status = agent.status();
    // All refused logins so far, less the first if its batch reached the disk as the write failed
    // (then it is in the journal instead; checked exactly below).
    let counted = status["audit"]["failed_logins"].as_u64().unwrap();
    assert!(counted <= refused_logins.len() as u64 && counted + 1 >= refused_logins.len() as u64, "{status}");
    assert_eq!(status["audit"]["refused"].as_u64(), Some(4), "a write, a login, two tokens: {status}");

    // Free the space: the journal notices by itself, in the same process.
    disk.free();
    common::wait_for(Duration::from_secs(20), "the journal to recover", || {
        agent.try_status().filter(|s| s["audit"]["state"] == "ok")
    });
    assert_eq!(agent.pid(), pid);
    assert!(common::process_alive(pid), "no restart");

    // After: everything is answered and recorded again.
    assert_eq!(deploy(&client, &gate, &echo_flow(), Cred::Basic("owner", "owner-pw")).await.status(), 200);
    writes_answered += 1;
    assert_eq!(editor_login(&client, &gate, "owner", "owner-pw").await.0, 200);
    logins_answered += 1;
    let mut after_401 = Vec::new();
    for i in 0..5 {
        let user = format!("after-{i}");
        assert_eq!(failed_login(&client, &gate, &user).await.0, 401);
        after_401.push(user.clone());
        answered_401.push(user);
    }

    let events = journal(&agent);
    let claimed = |e: &&serde_json::Value| e["detail"]["claimed"].as_str().map(str::to_string);
    let failed: HashSet<String> = of_kind(&events, "auth.failed").iter().filter_map(claimed).collect();
    let lost: Vec<&String> = answered_401.iter().filter(|u| !failed.contains(*u)).collect();
    assert!(lost.is_empty(), "answered 401 but not in the journal: {lost:?}");
    assert_eq!(of_kind(&events, "admin.write").len(), writes_answered, "every answered admin write, no other");
    assert_eq!(of_kind(&events, "auth.login").len(), logins_answered, "every answered login, no other");
    assert!(of_kind(&events, "token.created").is_empty(), "refused tokens left no event");

    let gaps = of_kind(&events, "audit.gap");
    assert_eq!(gaps.len(), 1, "one outage, one gap: {gaps:?}");
    let gap = gaps[0];
    // A refused login is either counted in the gap or, if its batch reached the disk just as
    // the write failed, in the journal itself: never both, never neither.
    let in_journal = refused_logins.iter().filter(|u| failed.contains(*u)).count() as u64;
    assert_eq!(gap["detail"]["failed_logins"].as_u64().unwrap() + in_journal, refused_logins.len() as u64, "{gap}");
    assert!(gap["detail"]["first"].is_string() && gap["detail"]["last"].is_string(), "{gap}");
    assert!(gap["detail"]["error"].as_str().unwrap().contains("No space left on device"), "{gap}");
    let refused = &gap["detail"]["refused"];
    assert!(refused["admin.write"].as_u64() >= Some(1), "{gap}");
    assert!(refused["auth.login"].as_u64() >= Some(1), "{gap}");
    assert_eq!(refused["token.created"].as_u64(), Some(2), "the gate's and the CLI's: {gap}");
    // In order: after everything answered before the outage, before everything answered after.
    let seq_of = |user: &str| {
        of_kind(&events, "auth.failed").iter().find(|e| claimed(e).as_deref() == Some(user)).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let gap_seq = gap["seq"].as_u64().unwrap();
    assert!(seq_of("before-4") < gap_seq && gap_seq < seq_of(&after_401[0]), "{gap}");

    let verify = cli(&agent, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    eprintln!(
        "full-disk test: {} failed logins answered 401 and recorded, {} refused with 503 ({in_journal} of them in the journal anyway); the gap: {}",
        answered_401.len(),
        refused_logins.len(),
        gap["detail"]
    );
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(0));
    // What is on the disk holds up without the daemon too.
    let verify = cli(&agent, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let later: Vec<String> =
        journal(&agent)[events.len()..].iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert!(later.iter().all(|k| k == "agent.stopping" || k == "nodered.exited"), "{later:?}");
    assert!(later.contains(&"agent.stopping".to_string()), "the shutdown was recorded: {later:?}");
}

/// A "Node-RED" that does nothing: this test is about the journal alone.
const PLACEHOLDER: &str =
    "command = [\"sh\", \"-c\", \"exec sleep 100000\", \"placeholder\"]\nstartup_timeout = \"1h\"";

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_on_a_disk_full_at_start_is_kept_and_opened_once_there_is_room() {
    if !is_root() {
        eprintln!("skipped: this test mounts a tmpfs for the agent's audit journal and needs root");
        return;
    }
    let disk = SmallDisk::mount();
    let mut agent = Agent::prepare(PLACEHOLDER, "", Some(&format!("{NO_LIMIT}{}", default_users())));
    // Only the journal lives on the small disk.
    std::fs::create_dir_all(agent.state_dir()).unwrap();
    std::fs::create_dir(disk.mountpoint.join("audit")).unwrap();
    std::os::unix::fs::symlink(disk.mountpoint.join("audit"), agent.state_dir().join("audit")).unwrap();
    let client = common::http::client();

    agent.spawn(&[]);
    let gate = agent.gate_url();
    for i in 0..3 {
        assert_eq!(failed_login(&client, &gate, &format!("first-run-{i}")).await.0, 401);
    }
    // Read through the daemon: opening the journal offline would make sled write a snapshot
    // now, and the next start would then have nothing to write.
    let first_run = journal(&agent);
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));

    // sled writes a new snapshot when it opens a journal whose log went on since the last one:
    // on a full disk that open fails.
    disk.fill();
    agent.spawn(&[]);
    let status = common::wait_for(Duration::from_secs(20), "the agent", || agent.try_status());
    assert_eq!(status["audit"]["state"], "failing", "failing from the start: {status}");
    assert!(status["audit"]["last_error"].as_str().unwrap().contains("No space left on device"), "{status}");
    assert!(agent.log().contains("the audit journal cannot be opened: the disk is full"), "{}", agent.log());
    let gate = agent.gate_url();
    assert_eq!(failed_login(&client, &gate, "while-full").await, (503, "audit_unavailable".into()));

    disk.free();
    common::wait_for(Duration::from_secs(20), "the journal to open", || {
        agent.try_status().filter(|s| s["audit"]["state"] == "ok")
    });
    assert_eq!(failed_login(&client, &gate, "after").await.0, 401);

    let events = journal(&agent);
    assert_eq!(events[..first_run.len()], first_run[..], "the journal of the first run, kept as it was");
    assert!(of_kind(&events, "audit.reset").is_empty(), "a full disk is not a damaged journal: {events:?}");
    let aside: Vec<_> = std::fs::read_dir(&disk.mountpoint)
        .unwrap()
        .chain(std::fs::read_dir(agent.state_dir()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("corrupt"))
        .collect();
    assert!(aside.is_empty(), "nothing moved aside: {aside:?}");
    let gap_at = events.iter().position(|e| e["kind"] == "audit.gap").expect("an audit.gap event");
    let between: Vec<&str> = events[first_run.len()..gap_at].iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        between.iter().all(|k| *k == "agent.stopping" || *k == "nodered.exited"),
        "only the first run's shutdown before the gap: the second run recorded nothing else first: {between:?}"
    );
    let gap = &events[gap_at];
    assert_eq!(gap["detail"]["failed_logins"], 1, "{gap}");
    let unrecorded = &gap["detail"]["unrecorded"];
    assert!(unrecorded["agent.started"] == 1 && unrecorded["config.loaded"] == 1, "the start is counted: {gap}");
    assert_eq!(events.last().unwrap()["detail"]["claimed"], "after", "recorded again after the gap");
    let verify = cli(&agent, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
}
