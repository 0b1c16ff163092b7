//! Exponential backoff with full jitter: the one retry schedule of both ends (Node-RED restarts,
//! npm installs, the tunnel's reconnects). Pure: the caller supplies the random fraction.

use std::time::Duration;

/// A schedule from `min` doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min) }
    }

    /// The upper bound of the delay before retry number `attempt` (0-based): `min·2^attempt`,
    /// capped at `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min.checked_mul(factor).map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before retry `attempt`, spread uniformly over `[min, ceiling]` by `jitter` in
    /// `[0, 1)`. Full jitter keeps a fleet of devices that failed together from retrying
    /// together; the `min` floor keeps a crashing child from being restarted in a tight loop.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let span = ceiling.saturating_sub(self.min);
        self.min + span.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A uniform random fraction in `[0, 1)` for [`Backoff::delay`].
pub fn jitter() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn ceiling_doubles_from_one_second_to_the_cap() {
        let b = Backoff::new(S(1), S(60));
        let ceilings: Vec<u64> = (0..9).map(|a| b.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn huge_attempt_numbers_stay_at_the_cap() {
        let b = Backoff::new(S(1), S(60));
        assert_eq!(b.ceiling(u32::MAX), S(60));
        assert_eq!(b.delay(1000, 0.999), b.min + (S(60) - b.min).mul_f64(0.999));
    }

    #[test]
    fn delay_spans_min_to_ceiling() {
        let b = Backoff::new(S(1), S(60));
        assert_eq!(b.delay(3, 0.0), S(1));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(4500));
        assert!(b.delay(3, 0.999_999) < S(8));
        assert_eq!(b.delay(0, 0.7), S(1), "first retry waits exactly min");
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        let b = Backoff::new(S(1), S(60));
        assert_eq!(b.delay(2, -3.0), S(1));
        assert_eq!(b.delay(2, 7.0), S(4));
    }

    #[test]
    fn max_below_min_is_raised_to_min() {
        assert_eq!(Backoff::new(S(5), S(1)).ceiling(4), S(5));
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
