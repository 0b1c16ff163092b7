//! Each device's resource figures over the last day, one point per minute: what
//! `GET /api/devices/{id}/metrics` answers and the console's charts draw. Reports within one
//! minute are folded into its point (CPU averaged, the rest the latest). Points are compact
//! (52 bytes), so a device's full day is about 73 KiB; older points fall off as new ones come.
//! Kept in memory only: a hub restart starts the charts afresh.

use redtether_proto::wire::DeviceResources;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Seconds per point.
pub const RESOLUTION: u64 = 60;
/// Points kept per device: a day.
pub const POINTS: usize = 24 * 60;

/// One minute of a device's figures. Absent figures are NaN (f32) or `u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// Minutes since the Unix epoch (a u32 lasts until the year 10136).
    minute: u32,
    reports: u16,
    node_red_cpu_reports: u16,
    agent_cpu_reports: u16,
    node_red_cpu_sum: f32,
    agent_cpu_sum: f32,
    node_red_rss_kib: u32,
    agent_rss_kib: u32,
    lag_ms: f32,
    disk_free_mib: u32,
    uptime_secs: u32,
    load: [f32; 3],
}

const NONE: u32 = u32::MAX;

fn kib(bytes: Option<u64>) -> u32 {
    bytes.map_or(NONE, |b| u32::try_from(b / 1024).unwrap_or(NONE - 1))
}

fn mib(bytes: Option<u64>) -> u32 {
    bytes.map_or(NONE, |b| u32::try_from(b / (1024 * 1024)).unwrap_or(NONE - 1))
}

fn back(v: u32, unit: u64) -> Option<u64> {
    (v != NONE).then_some(u64::from(v) * unit)
}

fn float(v: f32) -> Option<f64> {
    // f32 keeps about 7 digits: rounded back to two decimals so 3.2 does not read 3.2000000476.
    (!v.is_nan()).then(|| (f64::from(v) * 100.0).round() / 100.0)
}

impl Point {
    fn new(minute: u32) -> Point {
        Point {
            minute,
            reports: 0,
            node_red_cpu_sum: 0.0,
            node_red_cpu_reports: 0,
            agent_cpu_sum: 0.0,
            agent_cpu_reports: 0,
            node_red_rss_kib: NONE,
            agent_rss_kib: NONE,
            lag_ms: f32::NAN,
            disk_free_mib: NONE,
            uptime_secs: NONE,
            load: [f32::NAN; 3],
        }
    }

    fn fold(&mut self, r: &DeviceResources) {
        // (A minute holds at most a few hundred reports; saturating keeps a flood harmless.)
        self.reports = self.reports.saturating_add(1);
        if let Some(cpu) = r.node_red_cpu_percent
            && self.node_red_cpu_reports < u16::MAX
        {
            self.node_red_cpu_sum += cpu as f32;
            self.node_red_cpu_reports += 1;
        }
        if let Some(cpu) = r.agent_cpu_percent
            && self.agent_cpu_reports < u16::MAX
        {
            self.agent_cpu_sum += cpu as f32;
            self.agent_cpu_reports += 1;
        }
        self.node_red_rss_kib = kib(r.node_red_rss_bytes);
        self.agent_rss_kib = kib(r.agent_rss_bytes);
        self.lag_ms = r.event_loop_lag_ms.map_or(f32::NAN, |v| v as f32);
        self.disk_free_mib = mib(r.disk_free_bytes);
        self.uptime_secs = r.uptime_secs.map_or(NONE, |s| u32::try_from(s).unwrap_or(NONE - 1));
        self.load = r.load_average.map_or([f32::NAN; 3], |l| l.map(|v| v as f32));
    }

    fn sample(&self) -> Sample {
        Sample { minute: u64::from(self.minute) * RESOLUTION, reports: self.reports, resources: self.resources() }
    }

    fn resources(&self) -> DeviceResources {
        let average = |sum: f32, n: u16| (n > 0).then(|| sum / f32::from(n)).and_then(float);
        DeviceResources {
            node_red_cpu_percent: average(self.node_red_cpu_sum, self.node_red_cpu_reports),
            node_red_rss_bytes: back(self.node_red_rss_kib, 1024),
            agent_cpu_percent: average(self.agent_cpu_sum, self.agent_cpu_reports),
            agent_rss_bytes: back(self.agent_rss_kib, 1024),
            event_loop_lag_ms: float(self.lag_ms),
            disk_free_bytes: back(self.disk_free_mib, 1024 * 1024),
            uptime_secs: back(self.uptime_secs, 1),
            load_average: self.load.iter().all(|v| !v.is_nan()).then(|| self.load.map(|v| float(v).unwrap_or(0.0))),
        }
    }
}

/// A point as the API gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unix seconds of the minute's start.
    pub minute: u64,
    /// Status reports folded into it.
    pub reports: u16,
    pub resources: DeviceResources,
}

/// Every device's last day.
#[derive(Debug, Default)]
pub struct History {
    devices: Mutex<HashMap<String, VecDeque<Point>>>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Point>>> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds a report made at `now` (unix seconds) into the device's history.
    pub fn record(&self, device: &str, now: u64, resources: &DeviceResources) {
        let minute = u32::try_from(now / RESOLUTION).unwrap_or(u32::MAX);
        let mut devices = self.lock();
        let points = match devices.get_mut(device) {
            Some(points) => points,
            None => devices.entry(device.to_string()).or_insert_with(|| VecDeque::with_capacity(8)),
        };
        match points.back_mut() {
            Some(last) if last.minute == minute => last.fold(resources),
            // A clock that went back: the report joins the newest point rather than reorder.
            Some(last) if last.minute > minute => last.fold(resources),
            _ => {
                let mut point = Point::new(minute);
                point.fold(resources);
                points.push_back(point);
            }
        }
        // A day by count and by age (a device that was away leaves no stale day behind).
        let oldest = minute.saturating_sub(POINTS as u32 - 1);
        while points.len() > POINTS || points.front().is_some_and(|p| p.minute < oldest) {
            points.pop_front();
        }
    }

    /// The device's points from the minute holding `since` on, oldest first.
    pub fn since(&self, device: &str, since: u64) -> Vec<Sample> {
        let from = since / RESOLUTION;
        self.lock().get(device).map_or_else(Vec::new, |points| {
            points.iter().filter(|p| u64::from(p.minute) >= from).map(Point::sample).collect()
        })
    }

    /// The device's newest point.
    pub fn latest(&self, device: &str) -> Option<Sample> {
        self.lock().get(device)?.back().map(Point::sample)
    }

    /// Forgets a device (it was removed).
    pub fn forget(&self, device: &str) {
        self.lock().remove(device);
    }

    /// Points held over all devices.
    pub fn points(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    /// Bytes the points take (not counting the map's own overhead).
    pub fn bytes(&self) -> usize {
        self.lock().values().map(|p| p.capacity() * std::mem::size_of::<Point>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(percent: f64) -> DeviceResources {
        DeviceResources { node_red_cpu_percent: Some(percent), ..DeviceResources::example() }
    }

    #[test]
    fn reports_in_one_minute_fold_into_one_point_with_cpu_averaged() {
        let h = History::default();
        let t = 1_799_999_940; // a minute's start
        h.record("gw", t + 5, &cpu(10.0));
        h.record("gw", t + 15, &cpu(20.0));
        h.record("gw", t + 65, &cpu(40.0));
        let points = h.since("gw", 0);
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].minute, points[0].reports), (t, 2));
        assert_eq!(points[0].resources.node_red_cpu_percent, Some(15.0));
        assert_eq!(points[1].resources.node_red_cpu_percent, Some(40.0));
        // The rest comes back as sent (to the unit kept: KiB, MiB).
        let example = DeviceResources::example();
        assert_eq!(points[1].resources.node_red_rss_bytes, example.node_red_rss_bytes);
        assert_eq!(points[1].resources.disk_free_bytes, example.disk_free_bytes);
        assert_eq!(points[1].resources.load_average, example.load_average);
        assert_eq!(points[1].resources.event_loop_lag_ms, example.event_loop_lag_ms);
        assert_eq!(h.latest("gw").unwrap().minute, t + 60);
        assert_eq!(h.since("gw", t + 61).len(), 1, "since takes the minute holding it");
        assert!(h.since("other", 0).is_empty());
    }

    #[test]
    fn absent_figures_stay_absent() {
        let h = History::default();
        h.record("gw", 600, &DeviceResources::default());
        assert_eq!(h.latest("gw").unwrap().resources, DeviceResources::default());
    }

    #[test]
    fn a_day_is_kept_by_count_and_by_age() {
        let h = History::default();
        // Ten thousand reports, one a minute: only the last day stays.
        for i in 0..10_000u64 {
            h.record("gw", i * 60, &cpu(i as f64));
        }
        let points = h.since("gw", 0);
        assert_eq!(points.len(), POINTS);
        assert_eq!(points.last().unwrap().minute, 9_999 * 60);
        assert_eq!(points.first().unwrap().minute, (9_999 - POINTS as u64 + 1) * 60);
        assert!(h.bytes() <= 2 * POINTS * std::mem::size_of::<Point>());
        assert_eq!(std::mem::size_of::<Point>(), 52, "what the module's documentation says");
        // A device away for two days: its old day goes with its next report.
        h.record("gw", 9_999 * 60 + 2 * 86_400, &cpu(1.0));
        assert_eq!(h.since("gw", 0).len(), 1);
        h.forget("gw");
        assert_eq!(h.points(), 0);
    }
}
