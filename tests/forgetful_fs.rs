//! The forgetful filesystem forgets exactly what was not made durable, and sled's `flush` alone
//! does not make anything durable on it (see `tests/common/forgetful_fs.rs`). Needs root and
//! /dev/fuse.

use redtether_testkit as common;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::forgetful_fs::ForgetfulFs;

/// A forgetful filesystem mounted under a fresh temporary directory.
struct Mounted {
    // Declared first so that it is unmounted before the temporary directory goes.
    fs: ForgetfulFs,
    _tmp: tempfile::TempDir,
}

impl Mounted {
    fn new() -> Mounted {
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        Mounted { fs: ForgetfulFs::mount(&mnt), _tmp: tmp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.fs.mountpoint().join(name)
    }
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn write_unsynced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn synced_data_survives_a_power_cut() {
    let mut m = Mounted::new();
    write_synced(&m.path("a"), b"hello");
    // fdatasync counts as well.
    let mut f = File::create(m.path("b")).unwrap();
    f.write_all(b"data only").unwrap();
    f.sync_data().unwrap();
    drop(f);
    let (fsyncs, _) = m.fs.stats();
    assert!(fsyncs >= 2, "fsyncs seen: {fsyncs}");

    m.fs.power_cut();
    assert_eq!(fs::read(m.path("a")).unwrap(), b"hello");
    assert_eq!(fs::read(m.path("b")).unwrap(), b"data only");
    assert_eq!(m.fs.stats().1, 0, "nothing to forget");
    // What survived a cut survives the next one too.
    m.fs.power_cut();
    assert_eq!(fs::read(m.path("a")).unwrap(), b"hello");
}

#[test]
fn unsynced_data_is_gone_after_a_power_cut() {
    let mut m = Mounted::new();
    // Created and named durably (directory fsync) but its contents never synced: empty.
    write_unsynced(&m.path("empty"), b"contents");
    sync_dir(m.fs.mountpoint());
    // Never synced, in a directory not synced since: the file disappears.
    write_unsynced(&m.path("new"), b"lost");
    // Synced once, then rewritten without a sync: back to the synced contents.
    write_synced(&m.path("old"), b"version one");
    write_unsynced(&m.path("old"), b"version two, longer");
    assert_eq!(fs::read(m.path("old")).unwrap(), b"version two, longer", "reads see current contents");

    m.fs.power_cut();
    assert!(!m.path("new").exists());
    assert_eq!(fs::read(m.path("old")).unwrap(), b"version one");
    assert_eq!(fs::read(m.path("empty")).unwrap(), b"");
    // "contents" (8) + "lost" (4) + the bytes of "version two, longer" unlike or past "version one"
    // ("two" and ", longer": 11).
    assert_eq!(m.fs.stats().1, 8 + 4 + 11);
}

#[test]
fn only_the_synced_prefix_of_an_appended_file_survives() {
    let mut m = Mounted::new();
    let path = m.path("log");
    write_synced(&path, b"synced prefix|");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"unsynced tail").unwrap();
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), b"synced prefix|unsynced tail");

    m.fs.power_cut();
    assert_eq!(fs::read(&path).unwrap(), b"synced prefix|");
    assert_eq!(m.fs.stats().1, b"unsynced tail".len() as u64);
}

#[test]
fn a_rename_without_a_directory_fsync_is_undone() {
    let mut m = Mounted::new();
    write_synced(&m.path("undone"), b"one");
    write_synced(&m.path("kept"), b"two");
    fs::rename(m.path("undone"), m.path("undone-renamed")).unwrap();
    fs::rename(m.path("kept"), m.path("kept-renamed")).unwrap();
    // Renaming over a file replaces it; without a directory fsync that is undone too.
    write_synced(&m.path("target"), b"old target");
    write_synced(&m.path("replacement"), b"new target");
    fs::rename(m.path("replacement"), m.path("target")).unwrap();
    // A removal is undone the same way.
    write_synced(&m.path("removed"), b"back again");
    fs::remove_file(m.path("removed")).unwrap();
    // A new directory and a file in it survive once the file is fsynced.
    fs::create_dir(m.path("dir")).unwrap();
    write_synced(&m.path("dir/inner"), b"inner");
    // An empty new directory does not.
    fs::create_dir(m.path("empty-dir")).unwrap();
    // An fsync of the file itself after the rename commits the rename (lenient, ext4-like).
    File::open(m.path("kept-renamed")).unwrap().sync_all().unwrap();
    let mut names: Vec<_> = fs::read_dir(m.fs.mountpoint()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["dir", "empty-dir", "kept-renamed", "target", "undone-renamed"], "readdir");

    m.fs.power_cut();
    assert_eq!(fs::read(m.path("undone")).unwrap(), b"one");
    assert!(!m.path("undone-renamed").exists());
    assert_eq!(fs::read(m.path("kept-renamed")).unwrap(), b"two");
    assert!(!m.path("kept").exists());
    assert_eq!(fs::read(m.path("target")).unwrap(), b"old target");
    assert_eq!(fs::read(m.path("replacement")).unwrap(), b"new target");
    assert_eq!(fs::read(m.path("removed")).unwrap(), b"back again");
    assert_eq!(fs::read(m.path("dir/inner")).unwrap(), b"inner");
    assert!(!m.path("empty-dir").exists());

    // Now the same with a directory fsync: the renames and the removal stay.
    fs::rename(m.path("undone"), m.path("undone-renamed")).unwrap();
    fs::rename(m.path("replacement"), m.path("target")).unwrap();
    fs::remove_file(m.path("removed")).unwrap();
    fs::create_dir(m.path("empty-dir")).unwrap();
    sync_dir(m.fs.mountpoint());
    m.fs.power_cut();
    assert_eq!(fs::read(m.path("undone-renamed")).unwrap(), b"one");
    assert!(!m.path("undone").exists());
    assert_eq!(fs::read(m.path("target")).unwrap(), b"new target");
    assert!(!m.path("replacement").exists());
    assert!(!m.path("removed").exists());
    assert!(m.path("empty-dir").is_dir());
}

#[test]
fn the_calls_sled_makes_work() {
    use std::os::unix::fs::FileExt;

    use nix::fcntl::{FallocateFlags, Flock, FlockArg, fallocate};

    let mut m = Mounted::new();
    fs::create_dir_all(m.path("d/e")).unwrap();
    let path = m.path("d/e/f");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
    // pwrite / pread, with a hole.
    f.write_all_at(b"0123456789", 0).unwrap();
    f.write_all_at(b"ab", 20).unwrap();
    let mut buf = [0xff; 22];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..10], b"0123456789");
    assert_eq!(&buf[10..20], &[0; 10]);
    assert_eq!(&buf[20..], b"ab");
    // ftruncate, down and up.
    f.set_len(5).unwrap();
    f.set_len(8).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"01234\x00\x00\x00");
    // fallocate: growing, keeping the size, punching a hole.
    fallocate(&f, FallocateFlags::empty(), 0, 100).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 100);
    fallocate(&f, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, 200).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 100);
    fallocate(&f, FallocateFlags::FALLOC_FL_KEEP_SIZE | FallocateFlags::FALLOC_FL_PUNCH_HOLE, 0, 2).unwrap();
    f.read_exact_at(&mut buf[..5], 0).unwrap();
    assert_eq!(&buf[..5], b"\x00\x00234");
    f.sync_data().unwrap();
    // flock (left to the kernel): an exclusive lock excludes a second open file description.
    let locked = Flock::lock(f, FlockArg::LockExclusiveNonblock).unwrap();
    let other = File::open(&path).unwrap();
    assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_err());
    drop(locked);
    let other = File::open(&path).unwrap();
    assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_ok());
    // readdir, rename, unlink, rmdir.
    write_synced(&m.path("d/g"), b"g");
    fs::rename(m.path("d/g"), m.path("d/e/h")).unwrap();
    let mut names: Vec<_> = fs::read_dir(m.path("d/e")).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["f", "h"]);
    fs::remove_file(m.path("d/e/h")).unwrap();
    fs::create_dir(m.path("d/gone")).unwrap();
    fs::remove_dir(m.path("d/gone")).unwrap();
    assert!(fs::remove_dir(m.path("d/e")).is_err(), "not empty");
    sync_dir(&m.path("d"));
    sync_dir(&m.path("d/e"));

    m.fs.power_cut();
    let mut expected = vec![0; 100];
    expected[2..5].copy_from_slice(b"234");
    assert_eq!(fs::read(&path).unwrap(), expected);
    assert!(!m.path("d/e/h").exists() && !m.path("d/g").exists() && !m.path("d/gone").exists());
}

/// Environment for [`sled_child`]: the database directory, and whether to fsync after the flush.
const CHILD_DIR: &str = "FORGETFUL_FS_SLED_DIR";
const CHILD_SYNC: &str = "FORGETFUL_FS_SLED_SYNC";
const CHILD_READY: &str = "FORGETFUL-FS-SLED-CHILD-READY";

/// Not a test: the process the sled tests run and SIGKILL. Opens sled on the forgetful filesystem
/// and makes a `baseline` key durable (flush + fdatasync of the `db` file, as the daemon's journal
/// does), so that the database itself is sure to survive a cut. Then inserts `key` and flushes;
/// with `CHILD_SYNC=1` it also fdatasyncs the `db` file again. Then says so and waits to be killed.
#[test]
#[ignore = "helper process for the sled tests"]
fn sled_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let dir = PathBuf::from(dir);
    // No periodic flusher: it fsyncs the file every 500 ms on its own (`sled::open` and the daemon
    // leave it on), which would make the result depend on timing.
    let db = sled::Config::new().path(&dir).flush_every_ms(None).open().unwrap();
    let sync_data = || File::open(dir.join("db")).unwrap().sync_data().unwrap();
    db.insert(b"baseline", b"durable").unwrap();
    db.flush().unwrap();
    sync_data();
    db.insert(b"key", b"value").unwrap();
    db.flush().unwrap();
    if std::env::var(CHILD_SYNC).as_deref() == Ok("1") {
        sync_data();
    }
    println!("{CHILD_READY}");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Runs [`sled_child`] against `dir`, waits until it has acknowledged, and SIGKILLs it.
fn run_sled_child_and_kill(dir: &Path, sync: bool) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["sled_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_SYNC, if sync { "1" } else { "0" })
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(CHILD_READY) => break,
            Some(Ok(_)) => {}
            other => {
                let _ = child.kill();
                panic!("sled child ended before acknowledging: {other:?}, {:?}", child.wait());
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// `baseline` and `key` as sled sees them after the child was killed and, if `cut`, a power cut.
fn sled_after_kill(sync: bool, cut: bool) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut m = Mounted::new();
    let dir = m.path("journal");
    run_sled_child_and_kill(&dir, sync);
    if cut {
        m.fs.power_cut();
        assert!(m.fs.stats().1 > 0, "the cut forgot nothing");
    }
    let db = sled::open(&dir).unwrap();
    let get = |k: &[u8]| db.get(k).unwrap().map(|v| v.to_vec());
    let found = (get(b"baseline"), get(b"key"));
    drop(db);
    found
}

#[test]
fn sled_flush_alone_does_not_survive_a_power_cut() {
    let (baseline, key) = sled_after_kill(false, true);
    assert_eq!(baseline.as_deref(), Some(&b"durable"[..]), "the synced part survives");
    assert_eq!(key, None, "flush alone made the insert durable");
}

#[test]
fn sled_flush_alone_survives_a_kill_without_power_cut() {
    // The control: the flushed insert did reach the filesystem; only the cut loses it.
    let (baseline, key) = sled_after_kill(false, false);
    assert_eq!(baseline.as_deref(), Some(&b"durable"[..]));
    assert_eq!(key.as_deref(), Some(&b"value"[..]));
}

#[test]
fn sled_flush_and_sync_data_survives_a_power_cut() {
    let (baseline, key) = sled_after_kill(true, true);
    assert_eq!(baseline.as_deref(), Some(&b"durable"[..]));
    assert_eq!(key.as_deref(), Some(&b"value"[..]));
}

/// Closing a sled `Db` fsyncs its file (sled's `Log` does so on drop), so after a graceful close
/// even a flush-only insert survives: crash tests must kill the process, not drop the `Db`.
#[test]
fn sled_graceful_close_fsyncs() {
    let mut m = Mounted::new();
    let dir = m.path("journal");
    let db = sled::Config::new().path(&dir).flush_every_ms(None).open().unwrap();
    db.insert(b"key", b"value").unwrap();
    db.flush().unwrap();
    let (fsyncs_before, _) = m.fs.stats();
    drop(db);
    assert!(m.fs.stats().0 > fsyncs_before, "dropping the Db did not fsync");
    m.fs.power_cut();
    let db = sled::open(&dir).unwrap();
    assert_eq!(db.get(b"key").unwrap().as_deref(), Some(&b"value"[..]));
}

#[test]
fn a_cut_with_the_mount_still_in_use_does_not_hang() {
    use std::io::Read;

    let mut m = Mounted::new();
    write_synced(&m.path("a"), b"durable");
    let mut held = OpenOptions::new().read(true).write(true).open(m.path("a")).unwrap();
    held.write_all(b"DURABLE plus").unwrap();
    // Not allowed by the contract (the users of the mount must be dead), but it must not hang.
    m.fs.power_cut();
    let mut buf = Vec::new();
    assert!(held.read_to_end(&mut buf).is_err(), "the old mount still serves: {buf:?}");
    assert!(held.write_all(b"more").is_err());
    assert!(held.sync_all().is_err(), "a sync through the old mount must not make anything durable");
    assert_eq!(fs::read(m.path("a")).unwrap(), b"durable");
    drop(held);
    m.fs.power_cut();
    assert_eq!(fs::read(m.path("a")).unwrap(), b"durable");
}
