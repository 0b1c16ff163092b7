//! Durable audit appends per second with group commit, under 1, 8 and 64 concurrent producers,
//! against the same bytes written by a plain file + fdatasync batching loop in the same run
//! (the physical limit of this disk), and the journal's memory with 1M buffered events.
//!
//! `cargo bench --bench audit_journal` (figures and the command are kept in BENCHMARKS.md).
//! Run on the filesystem that holds the target directory.

use redtether::audit::{Actor, AuditEvent, AuditKind, Auditor, OnFailure};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

const RUN: Duration = Duration::from_secs(4);
const MILLION: u64 = 1_000_000;

fn event(i: u64) -> AuditEvent {
    AuditEvent::new(AuditKind::AuthFailed, Actor::anonymous("192.168.1.20".parse().unwrap()), "/device-editor/flows")
        .with("reason", "wrong_password")
        .with("method", "POST")
        .with("claimed", format!("user-{i}"))
        .with("addr", "192.168.1.20")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("audit-bench").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Events/s through the journal with `producers` tasks each waiting for durability.
async fn journal_rate(producers: usize) -> f64 {
    let dir = scratch_dir();
    let (auditor, thread) = Auditor::start(&dir.path().join("audit"), u64::MAX, OnFailure::Deny);
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let (auditor, count, stop) = (auditor.clone(), count.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = p as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    auditor.record(event(i)).await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    drop(auditor);
    thread.join();
    rate
}

/// The same producers and record sizes, appended to a plain file by one writer that takes all
/// waiting records, writes them, and fdatasyncs once: group commit with nothing else around it.
async fn raw_rate(producers: usize, record_bytes: usize) -> f64 {
    let dir = scratch_dir();
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, oneshot::Sender<()>)>(4096);
    let path = dir.path().join("raw.log");
    let writer = std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        let mut buf = Vec::new();
        let mut acks = Vec::new();
        while let Some((rec, ack)) = rx.blocking_recv() {
            buf.extend_from_slice(&rec);
            acks.push(ack);
            while let Ok((rec, ack)) = rx.try_recv() {
                buf.extend_from_slice(&rec);
                acks.push(ack);
            }
            file.write_all(&buf).unwrap();
            file.sync_data().unwrap();
            buf.clear();
            for a in acks.drain(..) {
                let _ = a.send(());
            }
        }
    });
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let (tx, count, stop) = (tx.clone(), count.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (ack, done) = oneshot::channel();
                    tx.send((vec![b'x'; record_bytes], ack)).await.unwrap();
                    done.await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    drop(tx);
    writer.join().unwrap();
    rate
}

/// Appends `count` events with 64 producers; returns the seconds it took.
async fn fill(auditor: &Auditor, count: u64) -> f64 {
    let started = Instant::now();
    let producers = 64;
    let per = count / producers;
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let auditor = auditor.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    auditor.record(event(p * per + i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// RSS with 100k events buffered, then with 1.1M: the journal keeps events on disk, so the
/// difference is what a million more costs in memory.
async fn memory_with_a_million(max_bytes: u64) -> (u64, u64, f64) {
    let dir = scratch_dir();
    let (auditor, thread) = Auditor::start(&dir.path().join("audit"), max_bytes, OnFailure::Deny);
    fill(&auditor, MILLION / 10).await;
    redtether_host::heap::trim();
    let before = rss_kib();
    let elapsed = fill(&auditor, MILLION).await;
    let status = auditor.status().await.unwrap();
    assert!(status.last_seq >= MILLION);
    redtether_host::heap::trim();
    let after = rss_kib();
    drop(auditor);
    thread.join();
    (before, after, elapsed)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    redtether_host::heap::keep_small();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let record_bytes = {
        let (_, bytes) = redtether::audit::StoredEvent::seal(
            event(123_456),
            123_456,
            uuid_like(),
            "2026-11-27T09:00:00.000Z".into(),
            &[0; 32],
        );
        bytes.len() + 16
    };
    println!(
        "audit_journal: {} s per point, records of about {record_bytes} bytes, on {}",
        RUN.as_secs(),
        env!("CARGO_TARGET_TMPDIR")
    );
    println!("| producers | journal (sled + fdatasync) events/s | plain file + fdatasync events/s | journal / file |");
    println!("|---|---|---|---|");
    // `PRODUCERS=64` measures one point only (for profiling it).
    let points: Vec<usize> = match std::env::var("PRODUCERS") {
        Ok(list) => list.split(',').map(|n| n.trim().parse().expect("PRODUCERS is a list of numbers")).collect(),
        Err(_) => vec![1, 8, 64],
    };
    for producers in points {
        let journal = rt.block_on(journal_rate(producers));
        let raw = rt.block_on(raw_rate(producers, record_bytes));
        println!("| {producers} | {journal:.0} | {raw:.0} | {:.2} |", journal / raw);
        // For benches/compare.sh: metric, ours, baseline.
        println!("compare|journal_{producers}|{journal:.0}|{raw:.0}");
    }
    // `ONLY=throughput` (benches/compare.sh) skips the memory figures.
    if std::env::var("ONLY").is_ok_and(|only| only == "throughput") {
        return;
    }
    for (label, max_bytes) in
        [("unbounded journal", u64::MAX), ("default bound, audit.max_bytes = 64 MiB", 64 * 1024 * 1024)]
    {
        let (before, after, secs) = rt.block_on(memory_with_a_million(max_bytes));
        println!(
            "{label}: 1M more events (after 100k) in {secs:.1} s ({:.0}/s, 64 producers); RSS {:.1} MiB at 100k, {:.1} MiB at 1.1M (+{:.1} MiB)",
            MILLION as f64 / secs,
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            (after as f64 - before as f64) / 1024.0
        );
    }
}

fn uuid_like() -> String {
    "01a21c54-a597-7134-b8e5-ded980d4dd72".to_string()
}
