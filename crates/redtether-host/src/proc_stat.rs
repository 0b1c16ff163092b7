//! What the kernel says about a process and the machine: a process's CPU time and resident
//! memory (`/proc/<pid>/stat`, `/proc/<pid>/status`), the load average and uptime
//! (`/proc/loadavg`, `/proc/uptime`), and a filesystem's free space (`statvfs`). The parsers are
//! pure; [`CpuMeter`] turns two readings of CPU time into a percentage.

use std::path::Path;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process is gone, or /proc is not mounted).
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file did not have the expected shape.
    #[error("{path}: unexpected contents")]
    Malformed { path: String },
    #[error("statvfs {path}: {source}")]
    Statvfs {
        path: String,
        #[source]
        source: nix::Error,
    },
}

/// CPU time a process used so far, in clock ticks (user + system).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses: the
    // fields are counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')' come state (3), ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt,
    // majflt, cmajflt (13), utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory in bytes, from `VmRSS` of `/proc/<pid>/status`.
pub fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..].split_ascii_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The 1-, 5- and 15-minute load averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_ascii_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// Seconds since the machine booted.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read { path: path.to_string(), source })
}

fn parsed<T>(path: &str, value: Option<T>) -> Result<T, ProcError> {
    value.ok_or_else(|| ProcError::Malformed { path: path.to_string() })
}

/// `pid`'s CPU ticks so far.
pub fn cpu_ticks(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/stat");
    parsed(&path, parse_cpu_ticks(&read(&path)?))
}

/// `pid`'s resident memory in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    parsed(&path, parse_rss_bytes(&read(&path)?))
}

pub fn loadavg() -> Result<[f64; 3], ProcError> {
    parsed("/proc/loadavg", parse_loadavg(&read("/proc/loadavg")?))
}

pub fn uptime_secs() -> Result<f64, ProcError> {
    parsed("/proc/uptime", parse_uptime(&read("/proc/uptime")?))
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, ProcError> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|source| ProcError::Statvfs { path: path.display().to_string(), source })?;
    // 32-bit targets (armhf) count in narrower types: widened there, a no-op here.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(st.blocks_available()), u64::from(st.fragment_size()));
    Ok(blocks.saturating_mul(size))
}

/// Clock ticks per second (`CLK_TCK`, what /proc counts CPU time in).
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(100)
}

/// A process's CPU use between readings, as `top` shows it: percent of one CPU (a process busy
/// on two cores reads 200).
#[derive(Debug, Clone)]
pub struct CpuMeter {
    ticks_per_second: u64,
    last: Option<(u32, u64, Instant)>,
}

impl CpuMeter {
    pub fn new(ticks_per_second: u64) -> CpuMeter {
        CpuMeter { ticks_per_second: ticks_per_second.max(1), last: None }
    }

    /// Feeds a reading of `pid`'s CPU ticks at `at`; the percentage since the previous reading
    /// of the same process, `None` for the first (or after the process changed).
    pub fn update(&mut self, pid: u32, ticks: u64, at: Instant) -> Option<f64> {
        let previous = self.last.replace((pid, ticks, at));
        let (last_pid, last_ticks, last_at) = previous?;
        let wall = at.saturating_duration_since(last_at).as_secs_f64();
        if last_pid != pid || wall <= 0.0 || ticks < last_ticks {
            return None;
        }
        let busy = (ticks - last_ticks) as f64 / self.ticks_per_second as f64;
        Some(busy / wall * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_ticks_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (node (red) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 11 0 100 1000000 5000";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("4242 (node) S 1"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn rss_load_and_uptime_are_read() {
        let status = "Name:\tnode\nVmPeak:\t  200 kB\nVmRSS:\t   51200 kB\nThreads:\t11\n";
        assert_eq!(parse_rss_bytes(status), Some(51200 * 1024));
        assert_eq!(parse_rss_bytes("Name:\tkthreadd\n"), None);
        assert_eq!(parse_loadavg("0.52 0.58 0.59 2/712 12345\n"), Some([0.52, 0.58, 0.59]));
        assert_eq!(parse_loadavg("0.52 x"), None);
        assert_eq!(parse_uptime("12345.67 23456.78\n"), Some(12345.67));
    }

    #[test]
    fn cpu_percent_is_ticks_over_wall_time() {
        let mut meter = CpuMeter::new(100);
        let t0 = Instant::now();
        assert_eq!(meter.update(7, 1000, t0), None);
        // 50 ticks of 10 ms in 1 s: half a CPU.
        assert_eq!(meter.update(7, 1050, t0 + Duration::from_secs(1)), Some(50.0));
        // 400 ticks in 2 s: two CPUs.
        assert_eq!(meter.update(7, 1450, t0 + Duration::from_secs(3)), Some(200.0));
        // Another process (Node-RED restarted): no figure until the next reading.
        assert_eq!(meter.update(8, 10, t0 + Duration::from_secs(4)), None);
        assert_eq!(meter.update(8, 20, t0 + Duration::from_secs(5)), Some(10.0));
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
        assert!(uptime_secs().unwrap() > 0.0);
        assert!(loadavg().is_ok());
    }
}
