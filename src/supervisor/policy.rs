//! When to restart Node-RED after it died: the backoff attempt counter, the crash-loop window,
//! and the reset after a long healthy run. Pure: time and randomness come in as arguments.

use redtether_proto::backoff::Backoff;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig {
    pub backoff: Backoff,
    /// A run healthy for this long forgets earlier crashes.
    pub reset_after: Duration,
    /// More crashes than this within `window` is a crash loop.
    pub crash_loop_restarts: u32,
    pub window: Duration,
}

/// What to do after an unplanned exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPlan {
    pub delay: Duration,
    pub crash_loop: bool,
}

#[derive(Debug)]
pub struct RestartPolicy {
    config: PolicyConfig,
    attempt: u32,
    recent_crashes: VecDeque<Instant>,
    healthy_since: Option<Instant>,
}

impl RestartPolicy {
    pub fn new(config: PolicyConfig) -> Self {
        RestartPolicy { config, attempt: 0, recent_crashes: VecDeque::new(), healthy_since: None }
    }

    /// The child answered its health check. Only the first answer of a run counts as its start.
    pub fn on_healthy(&mut self, now: Instant) {
        self.healthy_since.get_or_insert(now);
    }

    /// The child died without being asked to (or was killed as hung). `jitter` in `[0, 1)`.
    pub fn on_crash(&mut self, now: Instant, jitter: f64) -> RestartPlan {
        if let Some(since) = self.healthy_since.take()
            && now.saturating_duration_since(since) >= self.config.reset_after
        {
            self.attempt = 0;
            self.recent_crashes.clear();
        }
        self.recent_crashes.push_back(now);
        while let Some(&oldest) = self.recent_crashes.front() {
            if now.saturating_duration_since(oldest) > self.config.window {
                self.recent_crashes.pop_front();
            } else {
                break;
            }
        }
        let crash_loop = self.recent_crashes.len() > self.config.crash_loop_restarts as usize;
        // In a crash loop the child is still retried, but only at the cap: an edge device must
        // recover by itself once the cause (a full disk, a bad flow) goes away.
        let delay = if crash_loop { self.config.backoff.max } else { self.config.backoff.delay(self.attempt, jitter) };
        self.attempt = self.attempt.saturating_add(1);
        RestartPlan { delay, crash_loop }
    }

    /// A planned stop or restart: the current run no longer counts as healthy uptime.
    pub fn on_planned_stop(&mut self) {
        self.healthy_since = None;
    }

    /// Crashes inside the current window.
    pub fn recent_crashes(&self) -> usize {
        self.recent_crashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn policy() -> RestartPolicy {
        RestartPolicy::new(PolicyConfig {
            backoff: Backoff::new(S(1), S(60)),
            reset_after: S(600),
            crash_loop_restarts: 5,
            window: S(300),
        })
    }

    #[test]
    fn backoff_grows_with_each_crash() {
        let mut p = policy();
        let t0 = Instant::now();
        let ceilings: Vec<Duration> = (0..5).map(|i| p.on_crash(t0 + S(i * 10), 0.999_999).delay).collect();
        assert!(ceilings.windows(2).all(|w| w[0] < w[1]), "{ceilings:?}");
        assert!(ceilings[4] < S(16));
    }

    #[test]
    fn more_than_n_crashes_in_window_is_a_crash_loop_retried_at_cap() {
        let mut p = policy();
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(!p.on_crash(t0 + S(i), 0.0).crash_loop, "crash {i}");
        }
        let sixth = p.on_crash(t0 + S(5), 0.0);
        assert_eq!(sixth, RestartPlan { delay: S(60), crash_loop: true });
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        let mut p = policy();
        let t0 = Instant::now();
        for i in 0..5 {
            p.on_crash(t0 + S(i * 100), 0.0);
        }
        // Crashes at 0, 100 are older than 300 s at t = 450.
        let plan = p.on_crash(t0 + S(450), 0.0);
        assert!(!plan.crash_loop);
        assert_eq!(p.recent_crashes(), 4);
    }

    #[test]
    fn ten_healthy_minutes_reset_the_backoff() {
        let mut p = policy();
        let t0 = Instant::now();
        for i in 0..4 {
            p.on_crash(t0 + S(i), 0.999_999);
        }
        p.on_healthy(t0 + S(10));
        let plan = p.on_crash(t0 + S(10) + S(600), 0.999_999);
        assert_eq!(plan.delay, S(1), "attempt counter back to zero");
        assert_eq!(p.recent_crashes(), 1);
    }

    #[test]
    fn a_short_healthy_run_does_not_reset() {
        let mut p = policy();
        let t0 = Instant::now();
        for i in 0..4 {
            p.on_crash(t0 + S(i), 0.0);
        }
        p.on_healthy(t0 + S(10));
        p.on_healthy(t0 + S(500)); // later health checks do not move the start of the run
        let plan = p.on_crash(t0 + S(10) + S(599), 0.999_999);
        assert!(plan.delay > S(8), "{plan:?}");
    }

    #[test]
    fn a_planned_stop_ends_the_healthy_run() {
        let mut p = policy();
        let t0 = Instant::now();
        for i in 0..3 {
            p.on_crash(t0 + S(i), 0.0);
        }
        p.on_healthy(t0 + S(5));
        p.on_planned_stop();
        let plan = p.on_crash(t0 + S(5) + S(700), 0.999_999);
        assert!(plan.delay > S(4), "no reset without a healthy run: {plan:?}");
    }
}
