//! The power-cut test: the agent's journal on a filesystem that forgets every write not yet
//! fsynced (`common::forgetful_fs`). The agent answers refusals while it is SIGKILLed at random
//! moments and then the "power" is cut; after each cut every refusal that was answered must be
//! in the journal, and the chain must verify. (SIGKILL alone cannot show a missing fsync: the
//! page cache survives it.)

use redtether_testkit as common;

use common::agent::{Agent, BIN, default_users};
use common::forgetful_fs::ForgetfulFs;
use common::login_load::{FailedLogins, next_random};
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

const PLACEHOLDER: &str =
    "command = [\"sh\", \"-c\", \"exec sleep 100000\", \"placeholder\"]\nstartup_timeout = \"1h\"";
const NO_LIMIT: &str = "[gate.rate_limit]\nfailed_auth_burst = 1000000\nfailed_auth_per_second = 1000000.0\n";

fn claimed_in_journal(agent: &Agent) -> HashSet<String> {
    let out = Command::new(BIN)
        .args(["audit", "list", "--json", "--kind", "auth.failed", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).ok()?["detail"]["claimed"].as_str().map(str::to_string)
        })
        .collect()
}

/// `REDTETHER_POWER_CUTS=100` runs a long one.
#[test]
fn answered_refusals_survive_power_cuts() {
    let cuts: u32 = std::env::var("REDTETHER_POWER_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let mnt_parent = tempfile::tempdir().unwrap();
    let mnt = mnt_parent.path().join("disk");
    std::fs::create_dir(&mnt).unwrap();
    let mut disk = ForgetfulFs::mount(&mnt);

    let mut agent = Agent::prepare(PLACEHOLDER, "", Some(&format!("{NO_LIMIT}{}", default_users())));
    // Only the journal lives on the forgetful disk (made durable before the first cut).
    std::fs::create_dir_all(agent.state_dir()).unwrap();
    std::fs::create_dir(disk.mountpoint().join("audit")).unwrap();
    std::fs::File::open(disk.mountpoint()).unwrap().sync_all().unwrap();
    std::os::unix::fs::symlink(disk.mountpoint().join("audit"), agent.state_dir().join("audit")).unwrap();

    let mut answered_total = 0usize;
    let mut losses = Vec::new();
    let mut rng = 0x2545F4914F6CDD1Du64 ^ u64::from(std::process::id());
    for cut in 0..cuts {
        agent.spawn(&[]);
        let addr = agent.status()["gate"]["listen"].as_str().unwrap().to_string();
        let load = FailedLogins::start(&addr, &format!("p{cut}"));
        // Under sled's own 500 ms background sync, so that the cut finds unsynced writes.
        std::thread::sleep(Duration::from_millis(100 + next_random(&mut rng) % 350));
        agent.signal(Signal::SIGKILL);
        agent.wait_exit(Duration::from_secs(5));
        let answered = load.stop();
        answered_total += answered.len();
        disk.power_cut();

        let present = claimed_in_journal(&agent);
        losses.extend(answered.iter().filter(|u| !present.contains(*u)).cloned());
        let verify = Command::new(BIN).args(["audit", "verify", "--config"]).arg(&agent.config).output().unwrap();
        assert!(verify.status.success(), "cut {cut}: {}", String::from_utf8_lossy(&verify.stderr));
    }
    let journal = std::fs::read_link(agent.state_dir().join("audit")).unwrap();
    assert!(journal.starts_with(disk.mountpoint()), "the journal stayed on the forgetful disk");
    let reset = Command::new(BIN)
        .args(["audit", "list", "--kind", "audit.reset", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(reset.stdout.is_empty(), "the journal was never given up: {}", String::from_utf8_lossy(&reset.stdout));
    let (fsyncs, forgotten) = disk.stats();
    assert!(fsyncs > 0, "the journal synced on the forgetful disk");

    eprintln!(
        "power-cut test: {cuts} cuts, {answered_total} answered refusals, {} lost; {fsyncs} fsyncs seen, {forgotten} bytes forgotten at the last cut",
        losses.len()
    );
    assert!(answered_total > 0);
    assert!(losses.is_empty(), "answered but lost in a power cut: {losses:?}");
    drop(agent);
    disk.unmount();
}
