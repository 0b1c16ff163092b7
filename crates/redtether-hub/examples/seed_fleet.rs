//! Fills a hub state directory with a fleet, for benchmarking the operator console's audit
//! pages against a realistic store:
//!
//! ```text
//! cargo run --release -p redtether-hub --example seed_fleet -- --state-dir DIR \
//!     [--devices 2000] [--events 1000000] [--days 30] [--hub-events-per-device 2] \
//!     [--batch 1000] [--seed 1]
//! ```
//!
//! - `--state-dir DIR`: the hub's `state_dir`, created if missing. The hub must not be running
//!   on it (its database is locked while it runs). Point a hub at it afterwards with
//!   `state_dir = "DIR"` in hub.toml.
//! - `--devices N`: devices registered as `dev-00000`…; three in four have connected (last
//!   seen, agent version, a status), the rest only enrolled.
//! - `--events M`: device audit events, delivered through the store as agents deliver them
//!   (`ingest_audit`: hash-chained per device, indexed in the same transaction). A tenth of
//!   the devices carry half of the events, as chatty devices do. Kinds, actors and details
//!   are a plausible mix: failed logins from addresses, editor writes, Node-RED restarts,
//!   tunnel ups and downs.
//! - `--days D`: each device's events are spread at random over the last D days.
//! - `--hub-events-per-device K`: events the hub records about each device (connected,
//!   disconnected), through `record_event`. The hub's journal stamps them with the time they
//!   are recorded, so they are all newer than the device events.
//! - `--batch B`: events per delivered batch (one transaction and one durable flush each).
//! - `--seed S`: the same seed gives the same fleet (ids, kinds, times relative to now).
//!
//! Meant for an empty directory. It takes about 80 s for the defaults on a 2-core machine
//! (`BENCHMARKS.md`): sled's transactions, not the generator, set the pace.

use clap::Parser;
use redtether_hub::store::SledStore;
use redtether_proto::audit::{Actor, AuditEvent, AuditKind, GENESIS, HubEventKind, StoredEvent};
use redtether_proto::wire::DeviceStatus;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Parser)]
#[command(name = "seed_fleet", about = "Fill a hub state directory with devices and audit events")]
struct Args {
    /// The hub's state_dir (created if missing; the hub must not be running on it)
    #[arg(long)]
    state_dir: PathBuf,
    /// Devices to register
    #[arg(long, default_value_t = 2000)]
    devices: u64,
    /// Device audit events, over all devices
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Days the device events are spread over, up to now (at most 36500)
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Hub events recorded about each device (stamped with the time of seeding)
    #[arg(long, default_value_t = 2)]
    hub_events_per_device: u64,
    /// Events per delivered batch
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Seed of the generator: the same seed gives the same fleet
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// xorshift64*: reproducible from the seed, and no dependency for a benchmark's dice.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A UUID-shaped id (version 7 layout), so keys are as long as real ones.
    fn id(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

fn device_id(i: u64) -> String {
    format!("dev-{i:05}")
}

/// How many of the `total` events device `i` of `devices` carries: the first tenth share
/// half of them, the rest the other half.
fn events_of(i: u64, devices: u64, total: u64) -> u64 {
    let chatty = (devices / 10).max(1);
    if devices <= chatty {
        return total / devices.max(1) + u64::from(i < total % devices.max(1));
    }
    let (share, members, index) =
        if i < chatty { (total / 2, chatty, i) } else { (total - total / 2, devices - chatty, i - chatty) };
    // Spread the remainder over the first ones, so the counts add up to `total` exactly.
    share / members + u64::from(index < share % members)
}

/// A plausible device event.
fn device_event(dice: &mut Dice) -> AuditEvent {
    let users = ["ann", "bob", "carol", "dave"];
    let user = users[dice.below(4) as usize];
    let addr = format!("10.{}.{}.{}", dice.below(4), dice.below(256), dice.below(256));
    match dice.below(100) {
        0..30 => AuditEvent::new(AuditKind::AuthFailed, Actor::Anonymous { addr: addr.clone() }, "/device-editor/")
            .with("reason", "bad_password")
            .with("addr", addr),
        30..50 => AuditEvent::new(AuditKind::AdminWrite, Actor::user(user), "/device-editor/flows")
            .with("method", "POST")
            .with("status", 204)
            .with("bytes", dice.below(200_000)),
        50..65 => AuditEvent::new(AuditKind::AuthLogin, Actor::user(user), "/device-editor/").with("addr", addr),
        65..75 => {
            AuditEvent::new(AuditKind::AccessDenied, Actor::Token { name: "hmi".into() }, "/device-editor/settings")
                .with("method", "PUT")
                .with("reason", "scope")
        }
        75..80 => AuditEvent::new(AuditKind::NodeRedStarted, Actor::System, "node-red")
            .with("pid", 1000 + dice.below(30_000))
            .with("port", 1880),
        80..85 => AuditEvent::new(AuditKind::NodeRedExited, Actor::System, "node-red").with("code", dice.below(3)),
        85..90 => AuditEvent::new(AuditKind::TunnelConnected, Actor::System, "hub").with("hub", "hub.example:7443"),
        90..95 => AuditEvent::new(AuditKind::TunnelDisconnected, Actor::System, "hub").with("reason", "timeout"),
        95..98 => AuditEvent::new(AuditKind::AgentStarted, Actor::System, "agent").with("version", "0.1.0"),
        _ => AuditEvent::new(AuditKind::ConfigLoaded, Actor::System, "agent").with("protection", true),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let started = Instant::now();
    std::fs::create_dir_all(&args.state_dir)?;
    let store = SledStore::open(&args.state_dir)?;
    let now = SystemTime::now();
    let now_unix = redtether_proto::time::unix_of(now);
    let span_ms = args.days.clamp(1, 36_500) * 86_400_000;
    let mut dice = Dice::new(args.seed);

    for i in 0..args.devices {
        let device = device_id(i);
        let enrolled = now_unix.saturating_sub(span_ms / 1000 + dice.below(86_400 * 30));
        store.enroll_device(&device, &format!("{:032x}", dice.next()), now_unix + 86_400 * 365, "", enrolled)?;
        if i % 4 != 3 {
            let last_seen = now_unix.saturating_sub(dice.below(86_400));
            store.update_device(&device, |d| {
                d.last_seen = Some(last_seen);
                d.agent_version = Some("0.1.0".into());
                d.status = Some(DeviceStatus { agent_version: "0.1.0".into(), ..DeviceStatus::example() });
            })?;
        }
    }
    eprintln!("{} devices registered in {:.1?}", args.devices, started.elapsed());

    let (mut stored, mut duplicates) = (0u64, 0u64);
    let mut reported = Instant::now();
    for i in 0..args.devices {
        let device = device_id(i);
        let count = events_of(i, args.devices, args.events);
        let mut ago_ms: Vec<u64> = (0..count).map(|_| dice.below(span_ms)).collect();
        // Oldest first: a device's seq follows its clock.
        ago_ms.sort_unstable_by(|a, b| b.cmp(a));
        let mut prev = GENESIS;
        let mut batch = Vec::with_capacity(args.batch);
        for (n, ago_ms) in ago_ms.into_iter().enumerate() {
            let at = now.checked_sub(Duration::from_millis(ago_ms)).unwrap_or(SystemTime::UNIX_EPOCH);
            let ts = humantime::format_rfc3339_millis(at).to_string();
            let (event, _) = StoredEvent::seal(device_event(&mut dice), n as u64 + 1, dice.id(), ts, &prev);
            prev = event.hash_bytes();
            batch.push(event);
            if batch.len() >= args.batch || n as u64 + 1 == count {
                let done = store.ingest_audit(&device, &batch)?;
                (stored, duplicates) = (stored + done.stored as u64, duplicates + done.duplicates as u64);
                batch.clear();
            }
        }
        if reported.elapsed() > Duration::from_secs(5) {
            let rate = stored as f64 / started.elapsed().as_secs_f64();
            eprintln!("{stored} events stored, {} of {} devices ({rate:.0}/s)", i + 1, args.devices);
            reported = Instant::now();
        }
    }
    eprintln!("{stored} device events stored, {duplicates} already there, at {:.1?}", started.elapsed());

    for i in 0..args.devices {
        let device = device_id(i);
        for k in 0..args.hub_events_per_device {
            if k % 2 == 0 {
                store.record_event(&device, HubEventKind::DeviceConnected, json!({ "addr": "192.0.2.10:41000" }))?;
            } else {
                store.record_event(&device, HubEventKind::DeviceDisconnected, json!({ "reason": "timeout" }))?;
            }
        }
    }
    store.flush()?;
    eprintln!("{} hub events recorded; done in {:.1?}", args.devices * args.hub_events_per_device, started.elapsed());
    Ok(())
}
