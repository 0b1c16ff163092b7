//! The operator console's fleet-wide pages at scale: `/devices` and `/audit` of a real hub (the
//! release build) whose store holds 2,000 devices and 1,000,000 audit events, seeded by the
//! hub's `seed_fleet` example before the hub starts. Each page is asked for `REQUESTS` times
//! in a row over loopback with a logged-in session; the time is the whole round trip (request
//! sent to page read), an upper bound of the server's time. The baseline in the same run is
//! the console's stylesheet (`/assets/console.css`, static, no session check).
//!
//! `cargo build --release && cargo bench --bench console` (figures in BENCHMARKS.md);
//! `DEVICES`, `EVENTS` and `REQUESTS` (default 200) change the sizes.

use redtether_testkit as common;

use common::hub::Hub;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let (devices, events, requests) = (env_or("DEVICES", 2000), env_or("EVENTS", 1_000_000), env_or("REQUESTS", 200));
    let mut hub = Hub::start_logging("warn");
    // The store is seeded with the hub stopped (it holds the database while it runs).
    hub.kill9();
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "redtether-hub", "--example", "seed_fleet"])
        .status()
        .unwrap();
    assert!(built.success(), "cannot build the seed_fleet example");
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/examples/seed_fleet");
    let started = Instant::now();
    let seeded = Command::new(&seed)
        .arg("--state-dir")
        .arg(hub.state_dir())
        .args(["--devices", &devices.to_string(), "--events", &events.to_string()])
        .status()
        .unwrap();
    assert!(seeded.success(), "seed_fleet failed");
    println!("seeded {devices} devices and {events} events in {:.1} s", started.elapsed().as_secs_f64());
    hub.spawn();
    hub.status(); // waits until it answers

    let owner = hub.account("bench", "owner");
    let session = hub.session(&owner);
    let client = common::http::blocking_client_builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = hub.api();
    let get = |path: &str| {
        let started = Instant::now();
        let r = client.get(format!("{api}{path}")).header("cookie", &session.cookie).send().unwrap();
        let status = r.status();
        let body = r.text().unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        (ms(started), body)
    };
    // The cursor of the audit's first page, for its second.
    let (_, first) = get("/audit");
    let before = first
        .split("rel=\"next\" href=\"/audit?before=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a next page")
        .to_string();

    let pages = [
        ("/assets/console.css", "baseline: the stylesheet"),
        ("/devices", "/devices, first page by id"),
        ("/devices?sort=last_seen&dir=desc&page=20", "/devices, page 20 by last seen"),
        ("/devices?q=dev-01&show=online", "/devices, search and filter"),
        ("/audit", "/audit, newest 50"),
        (&format!("/audit?before={before}") as &str, "/audit, second page"),
        ("/audit?device=dev-00042", "/audit, one device"),
        ("/audit?kind=auth", "/audit, a kind prefix (auth.*)"),
        ("/audit?source=hub", "/audit, the hub's events"),
    ];
    let mut baseline = 0.0;
    for (path, label) in pages {
        let mut times: Vec<f64> = (0..requests).map(|_| get(path).0).collect();
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (pct(&times, 50.0), pct(&times, 99.0));
        if baseline == 0.0 {
            baseline = p50;
        }
        println!("{label:40} n={requests} p50 {p50:7.2} ms  p99 {p99:7.2} ms  p50/baseline {:6.1}", p50 / baseline);
    }
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
