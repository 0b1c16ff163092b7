//! Times the fleet audit's store side (`HubStore::audit_page`, `audit_export`) on a state
//! directory, such as one `seed_fleet` filled (the hub must not be running on it):
//!
//! ```text
//! cargo run --release -p redtether-hub --example fleet_audit_timing -- DIR [ROUNDS]
//! ```
//!
//! Each query of a fixed set (the console's first page, deep pages by cursor, a chatty and a
//! quiet device's tab, selective filters up to one that matches nothing) runs ROUNDS times
//! [default 50]; the first run after opening (cold) is shown apart from the median, p99 and
//! maximum of the rest. Then every row is exported as JSON Lines to nowhere. Device ids are
//! `seed_fleet`'s: `dev-00000` (the chattiest) and the last one (among the quietest).

use redtether_hub::store::{AuditFilter, AuditPage, Cursor, MAX_EXAMINED, SledStore, Source};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: fleet_audit_timing DIR [ROUNDS]")?);
    let rounds: usize = args.next().map_or(Ok(50), |r| r.parse())?;
    let opened = Instant::now();
    let store = SledStore::open(&dir)?;
    println!("opened in {:.1?}", opened.elapsed());

    let devices = store.devices()?;
    let quiet = devices.last().map_or_else(|| "dev-00000".to_string(), |d| d.id.clone());
    let now = redtether_proto::time::unix_now();
    let filter = |f: AuditFilter| f;
    let device = |id: &str| AuditFilter { device: Some(id.to_string()), ..Default::default() };
    let queries: Vec<(String, AuditFilter, usize)> = vec![
        ("first page".into(), AuditFilter::default(), 0),
        ("page 10 by cursor".into(), AuditFilter::default(), 9),
        ("page 100 by cursor".into(), AuditFilter::default(), 99),
        ("device=dev-00000 (chatty)".into(), device("dev-00000"), 0),
        (format!("device={quiet} (quiet)"), device(&quiet), 0),
        ("device=dev-00000&kind=auth".into(), AuditFilter { kind: Some("auth".into()), ..device("dev-00000") }, 0),
        ("kind=auth.failed".into(), filter(AuditFilter { kind: Some("auth.failed".into()), ..Default::default() }), 0),
        ("kind=config.loaded".into(), AuditFilter { kind: Some("config.loaded".into()), ..Default::default() }, 0),
        ("actor=user:ann".into(), AuditFilter { actor: Some("user:ann".into()), ..Default::default() }, 0),
        ("source=device".into(), AuditFilter { source: Some(Source::Device), ..Default::default() }, 0),
        (
            "since/until: one day, 10 days ago".into(),
            AuditFilter { since: Some(now - 11 * 86_400), until: Some(now - 10 * 86_400), ..Default::default() },
            0,
        ),
        (
            "source=hub&until=1 day ago (few matches)".into(),
            AuditFilter { source: Some(Source::Hub), until: Some(now - 86_400), ..Default::default() },
            0,
        ),
        (
            "kind=no.such (matches nothing)".into(),
            AuditFilter { kind: Some("no.such".into()), ..Default::default() },
            0,
        ),
    ];
    println!(
        "{:<42} {:>6} {:>8} {:>8} {:>8} {:>8}  rows  partial",
        "query (50 a page)", "cold", "p50", "p99", "max", ""
    );
    for (name, filter, skip_pages) in &queries {
        // The cursor of the page to time, found once.
        let mut before: Option<Cursor> = None;
        for _ in 0..*skip_pages {
            before = store.audit_page(filter, before.as_ref(), 50)?.next;
        }
        let mut times = Vec::with_capacity(rounds);
        let mut last: Option<AuditPage> = None;
        for _ in 0..rounds.max(1) {
            let started = Instant::now();
            let page = store.audit_page(filter, before.as_ref(), 50)?;
            times.push(started.elapsed());
            last = Some(page);
        }
        let cold = times[0];
        let mut warm: Vec<Duration> = times[1..].to_vec();
        warm.sort();
        let at =
            |q: f64| warm.get(((warm.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(cold);
        let page = last.ok_or("no rounds")?;
        println!(
            "{name:<42} {:>6.1} {:>8.2} {:>8.2} {:>8.2} {:>8}  {:>4}  {}",
            ms(cold),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(warm.last().copied().unwrap_or(cold)),
            "ms",
            page.rows.len(),
            page.partial
        );
    }
    println!("(a page examines at most {MAX_EXAMINED} index entries)");

    let started = Instant::now();
    let mut bytes = 0usize;
    let rows = store.audit_export(&AuditFilter::default(), |row| {
        bytes += serde_json::to_vec(row).map_err(std::io::Error::other)?.len() + 1;
        Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    println!("export: {rows} rows, {} MB of JSON Lines in {secs:.1} s ({:.0} rows/s)", bytes >> 20, rows as f64 / secs);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
