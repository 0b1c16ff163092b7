//! Several hubs on PostgreSQL (issue 20), each figure against a baseline measured in the same
//! run:
//!
//! 1. `ingest`: delivered audit into PostgreSQL through two hubs' stores (the hub's
//!    `DeviceAudit::ingest_audit`: one transaction per batch, `INSERT … ON CONFLICT DO NOTHING`
//!    of the batch and the device's acknowledgement counters, synchronous commit), 64 devices
//!    delivering 100-event batches from 32 tasks, half through each store; the baseline is a
//!    plain multi-row `INSERT … ON CONFLICT DO NOTHING` of the same batches from the same
//!    process, 32 connections, synchronous commit, into another database. Goal ≥ 10,000
//!    events/s.
//! 2. `forward`: an operator request answered by the hub holding the device, through that hub
//!    (local) and through the other hub (forwarded over mutual TLS): sequential
//!    `GET /api/devices/{id}`, p50 and p99.
//! 3. `fleet`: one hub on PostgreSQL with 10,000 simulated idle devices (default keep-alive,
//!    2 s): its RSS and CPU over a window, against the same hub with no devices. Goal < 500 MiB
//!    and < 25 % of a core.
//!
//! `cargo build --release && cargo bench --bench cluster` (figures and the command are kept in
//! BENCHMARKS.md); `ONLY=ingest|forward|fleet`, `DEVICES=…`, `REQUESTS=…`, `WINDOW_SECS=…`.

use redtether_testkit as common;

use common::hub::{Hub, api};
use common::postgres::Postgres;
use common::simulator::{SimConfig, Simulator};
use redtether_hub::store::HubStore;
use redtether_hub::store::postgres::{PgOptions, PgStore};
use redtether_proto::audit::{Actor, AuditEvent, AuditKind, GENESIS, StoredEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEVICES: usize = 64;
const BATCH: usize = 100;
const BATCHES_PER_DEVICE: usize = 20;
const TASKS: usize = 32;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn only(part: &str) -> bool {
    std::env::var("ONLY").map_or(true, |o| o == part)
}

fn batches() -> Vec<(String, Vec<StoredEvent>)> {
    let mut all = Vec::new();
    for d in 0..DEVICES {
        let device = format!("dev-{d:03}");
        for b in 0..BATCHES_PER_DEVICE {
            let events = (0..BATCH)
                .map(|i| {
                    let seq = (b * BATCH + i + 1) as u64;
                    let mut e = AuditEvent::new(AuditKind::AccessDenied, Actor::user("ann"), "/flows");
                    e.detail.insert("reason".into(), "role".into());
                    StoredEvent::seal(e, seq, format!("{device}-{seq}"), "2026-12-06T08:00:00.000Z".into(), &GENESIS).0
                })
                .collect();
            all.push((device.clone(), events));
        }
    }
    all
}

/// Runs `work` over the batches from `TASKS` tasks; events/s.
async fn drive<F, Fut>(batches: Arc<Vec<(String, Vec<StoredEvent>)>>, work: F) -> f64
where
    F: Fn(usize, String, Vec<StoredEvent>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (batches, work) = (Arc::clone(&batches), work.clone());
        tasks.push(tokio::spawn(async move {
            // Each task owns whole devices, so a device's batches arrive in order.
            for (i, (device, events)) in batches.iter().enumerate() {
                if (i / BATCHES_PER_DEVICE) % TASKS == t {
                    work(t, device.clone(), events.clone()).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = batches.iter().map(|(_, e)| e.len()).sum::<usize>();
    events as f64 / started.elapsed().as_secs_f64()
}

async fn ingest(pg: &Postgres) {
    let batches = Arc::new(batches());
    let mut ours = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..3 {
        let url = pg.create_database();
        let dir = tempfile::tempdir().unwrap();
        let options = PgOptions { pool_size: TASKS / 2, ..PgOptions::new(&url) };
        let hubs: Arc<Vec<Arc<HubStore>>> = Arc::new(vec![
            Arc::new(PgStore::open(&options, &dir.path().join("a"), "hub-a").unwrap()),
            Arc::new(PgStore::open(&options, &dir.path().join("b"), "hub-b").unwrap()),
        ]);
        for d in 0..DEVICES {
            hubs[0].enroll_device(&format!("dev-{d:03}"), "aa", 99, "k", 1).unwrap();
        }
        let stores = Arc::clone(&hubs);
        ours.push(
            drive(Arc::clone(&batches), move |t, device, events| {
                let store = Arc::clone(&stores[t % 2]);
                async move {
                    let done = tokio::task::spawn_blocking(move || store.ingest_audit(&device, &events).unwrap())
                        .await
                        .unwrap();
                    assert_eq!(done.stored, BATCH);
                }
            })
            .await,
        );

        let url = pg.create_database();
        let mut clients = Vec::new();
        for _ in 0..TASKS {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            clients.push(client);
        }
        clients[0]
            .batch_execute(
                "CREATE TABLE audit (device text, seq bigint, id text, event jsonb, PRIMARY KEY (device, seq, id));
                 SET synchronous_commit = on;",
            )
            .await
            .unwrap();
        let clients = Arc::new(clients);
        plain.push(
            drive(Arc::clone(&batches), move |t, device, events| {
                let clients = Arc::clone(&clients);
                async move {
                    let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
                    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
                    let bodies: Vec<serde_json::Value> =
                        events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
                    let n = clients[t]
                        .execute(
                            "INSERT INTO audit SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::jsonb[])
                             ON CONFLICT DO NOTHING",
                            &[&device, &seqs, &ids, &bodies],
                        )
                        .await
                        .unwrap();
                    assert_eq!(n as usize, BATCH);
                }
            })
            .await,
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (o, p) = (median(ours.clone()), median(plain.clone()));
    println!(
        "audit ingest into PostgreSQL ({} events per run, 3 runs, synchronous commit):",
        DEVICES * BATCHES_PER_DEVICE * BATCH
    );
    println!("  through two hubs' stores: {o:.0} events/s (runs {ours:.0?})");
    println!("  plain INSERT … ON CONFLICT: {p:.0} events/s (runs {plain:.0?})");
    println!("  ratio {:.2}; goal ≥ 10,000 events/s: {}", o / p, if o >= 10_000.0 { "met" } else { "not met" });
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn cluster_hub(url: &str, id: &str, key: &std::path::Path) -> Hub {
    Hub::start_with(
        "warn",
        &format!("[store]\nurl = {url:?}\nhub_id = {id:?}\n[cluster]\nlisten = \"127.0.0.1:0\"\nkey_file = {key:?}\n"),
    )
}

async fn forward(pg: &Postgres) {
    let url = pg.create_database();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    let (a, b) = (cluster_hub(&url, "hub-a", &key), cluster_hub(&url, "hub-b", &key));
    let owner = a.operator("ops", "owner");
    let sim = Simulator::new(SimConfig::new(&a.addr(), &a.fingerprint()).await.unwrap()).unwrap();
    let device = sim.enroll(&a.enroll_token_async("dev-1").await.unwrap()).await.unwrap();
    sim.wait_connected(1, Duration::from_secs(30)).await.unwrap();
    // B learns who holds the device within a beat.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = env("REQUESTS", 2000);
    let client = common::http::client();
    let mut results = Vec::new();
    for (name, hub) in [("local (through the holding hub)", &a), ("forwarded (through the other hub)", &b)] {
        let path = format!("{}/api/devices/{}", hub.api(), device.id());
        let mut ms = Vec::with_capacity(n);
        for i in 0..n + 50 {
            let started = Instant::now();
            let r = client.get(&path).bearer_auth(&owner).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
            if i >= 50 {
                ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        ms.sort_by(|x, y| x.partial_cmp(y).unwrap());
        results.push((name, percentile(&ms, 0.5), percentile(&ms, 0.99)));
    }
    println!("operator request GET /api/devices/{{id}}, {n} sequential requests each:");
    for (name, p50, p99) in &results {
        println!("  {name}: p50 {p50:.3} ms, p99 {p99:.3} ms");
    }
    println!(
        "  forwarding adds p50 +{:.3} ms, p99 +{:.3} ms (ratio p50 {:.2})",
        results[1].1 - results[0].1,
        results[1].2 - results[0].2,
        results[1].1 / results[0].1
    );
    let _ = api(&a, reqwest::Method::GET, "/api/devices", Some(&owner)).await;
    sim.shutdown().await;
}

fn rss_kib(pid: u32) -> u64 {
    redtether_host::proc_stat::rss_bytes(pid).unwrap() / 1024
}

fn cpu_secs(pid: u32) -> f64 {
    redtether_host::proc_stat::cpu_ticks(pid).unwrap() as f64 / redtether_host::proc_stat::ticks_per_second() as f64
}

/// A hub on PostgreSQL with `n` idle simulated devices: CPU seconds over the window and RSS.
async fn fleet_of(pg: &Postgres, n: usize, window: Duration) -> (f64, u64) {
    let url = pg.create_database();
    let hub = Hub::start_with("warn", &format!("[store]\nurl = {url:?}\nhub_id = \"hub-a\"\n"));
    let sim = Simulator::new(SimConfig::new(&hub.addr(), &hub.fingerprint()).await.unwrap()).unwrap();
    if n > 0 {
        let names: Vec<String> = (0..n).map(|i| format!("idle-{i:05}")).collect();
        let hub_ref = &hub;
        let started = Instant::now();
        sim.enroll_many(names, |name| async move { hub_ref.enroll_token_async(&name).await }).await.unwrap();
        sim.wait_connected(n, Duration::from_secs(900)).await.unwrap();
        println!("  {n} devices enrolled and connected in {:.0?}", started.elapsed());
    }
    // Past the connections' first status exchange.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let pid = hub.pid();
    let cpu = cpu_secs(pid);
    tokio::time::sleep(window).await;
    let measured = (cpu_secs(pid) - cpu, rss_kib(pid));
    sim.shutdown().await;
    measured
}

async fn fleet(pg: &Postgres) {
    let n = env("DEVICES", 10_000);
    let window = Duration::from_secs(env("WINDOW_SECS", 30) as u64);
    println!("one hub on PostgreSQL, idle devices at the default keep-alive ({}s window):", window.as_secs());
    let (cpu0, rss0) = fleet_of(pg, 0, window).await;
    let (cpu, rss) = fleet_of(pg, n, window).await;
    let secs = window.as_secs_f64();
    println!("  no devices: CPU {:.2} % of a core, RSS {:.1} MiB", cpu0 / secs * 100.0, rss0 as f64 / 1024.0);
    println!("  {n} devices: CPU {:.2} % of a core, RSS {:.1} MiB", cpu / secs * 100.0, rss as f64 / 1024.0);
    println!(
        "  per device: {:.1} KiB, {:.4} % of a core; goals < 500 MiB: {}, < 25 %: {}",
        (rss - rss0) as f64 / n as f64,
        (cpu - cpu0) / secs * 100.0 / n as f64,
        if rss < 500 * 1024 { "met" } else { "not met" },
        if cpu / secs < 0.25 { "met" } else { "not met" }
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let pg = Postgres::start();
    if only("ingest") {
        ingest(&pg).await;
    }
    if only("forward") {
        forward(&pg).await;
    }
    if only("fleet") {
        fleet(&pg).await;
    }
}
