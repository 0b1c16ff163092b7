//! Health of a running Node-RED: the HTTP probe and the pure verdict on its results.

use std::time::{Duration, Instant};

/// What the supervisor should conclude from the probe history of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still starting and within `startup_timeout`.
    Starting,
    Healthy,
    /// Answered before, silent now, but not yet for `health_timeout`.
    Degraded,
    /// No answer for too long: kill and restart.
    Hung,
}

#[derive(Debug, Clone, Copy)]
pub struct HealthLimits {
    pub startup_timeout: Duration,
    pub health_timeout: Duration,
}

/// Judges a run from when it started, when the last probe succeeded, and whether the latest
/// probe succeeded.
pub fn verdict(
    limits: HealthLimits,
    started: Instant,
    last_ok: Option<Instant>,
    latest_ok: bool,
    now: Instant,
) -> Verdict {
    match last_ok {
        None if now.saturating_duration_since(started) >= limits.startup_timeout => Verdict::Hung,
        None => Verdict::Starting,
        Some(_) if latest_ok => Verdict::Healthy,
        Some(ok) if now.saturating_duration_since(ok) >= limits.health_timeout => Verdict::Hung,
        Some(_) => Verdict::Degraded,
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No answer: refused, cut off or timed out.
    #[error("{0}")]
    Request(#[source] reqwest::Error),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
}

/// Probes Node-RED's admin API on loopback with the gate's own credential.
#[derive(Debug, Clone)]
pub struct Probe {
    client: reqwest::Client,
    header: (&'static str, String),
}

impl Probe {
    pub fn new(header_name: &'static str, header_value: String, timeout: Duration) -> Self {
        Probe { client: crate::http_client::loopback(timeout), header: (header_name, header_value) }
    }

    /// `Ok` when Node-RED answers `GET <admin>/settings` with 200: the HTTP server is up, the
    /// admin API is mounted and our credential is accepted.
    pub async fn check(&self, port: u16) -> Result<(), HealthError> {
        let url = format!("http://127.0.0.1:{port}{}/settings", super::settings_js::ADMIN_ROOT);
        let resp =
            self.client.get(url).header(self.header.0, &self.header.1).send().await.map_err(HealthError::Request)?;
        if resp.status().is_success() { Ok(()) } else { Err(HealthError::Status(resp.status())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const L: HealthLimits =
        HealthLimits { startup_timeout: Duration::from_secs(120), health_timeout: Duration::from_secs(30) };

    #[test]
    fn starting_until_startup_timeout_then_hung() {
        let t0 = Instant::now();
        assert_eq!(verdict(L, t0, None, false, t0 + S(119)), Verdict::Starting);
        assert_eq!(verdict(L, t0, None, false, t0 + S(120)), Verdict::Hung);
    }

    #[test]
    fn silence_after_health_is_degraded_then_hung() {
        let t0 = Instant::now();
        let ok = t0 + S(10);
        assert_eq!(verdict(L, t0, Some(ok), true, ok), Verdict::Healthy);
        assert_eq!(verdict(L, t0, Some(ok), false, ok + S(29)), Verdict::Degraded);
        assert_eq!(verdict(L, t0, Some(ok), false, ok + S(30)), Verdict::Hung);
    }

    #[test]
    fn a_run_healthy_long_ago_is_not_judged_by_startup_timeout() {
        let t0 = Instant::now();
        assert_eq!(verdict(L, t0, Some(t0 + S(500)), true, t0 + S(1000)), Verdict::Healthy);
    }
}
