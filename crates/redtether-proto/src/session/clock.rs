//! The state machines' time: a monotonic instant on a virtual clock. The I/O shells map their
//! runtime's clock onto it (time since the session began); the tests advance it by hand, so no
//! test sleeps.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on a monotonic clock, as the time since an origin the caller chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(Duration);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(Duration::ZERO);

    /// The instant `since` after the origin.
    pub fn from_origin(since: Duration) -> Instant {
        Instant(since)
    }

    /// Time since the origin.
    pub fn since_origin(self) -> Duration {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

/// A one-shot timer: armed for an instant, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timer(Option<Instant>);

impl Timer {
    pub fn at(at: Instant) -> Timer {
        Timer(Some(at))
    }
    pub fn set(&mut self, at: Instant) {
        self.0 = Some(at);
    }
    pub fn clear(&mut self) {
        self.0 = None;
    }
    pub fn deadline(self) -> Option<Instant> {
        self.0
    }
    /// Whether it is armed and due at `now`; a due timer disarms itself.
    pub fn fire(&mut self, now: Instant) -> bool {
        match self.0 {
            Some(at) if at <= now => {
                self.0 = None;
                true
            }
            _ => false,
        }
    }
}

/// The earliest of some deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_once_when_due() {
        let mut t = Timer::at(Instant::ZERO + Duration::from_secs(5));
        assert!(!t.fire(Instant::ZERO + Duration::from_secs(4)));
        assert!(t.fire(Instant::ZERO + Duration::from_secs(5)));
        assert!(!t.fire(Instant::ZERO + Duration::from_secs(6)), "once");
        assert_eq!(t.deadline(), None);
        assert_eq!(
            earliest([
                None,
                Some(Instant::ZERO + Duration::from_secs(3)),
                Some(Instant::ZERO + Duration::from_secs(1))
            ]),
            Some(Instant::ZERO + Duration::from_secs(1))
        );
        assert_eq!(Instant::ZERO - (Instant::ZERO + Duration::from_secs(1)), Duration::ZERO);
    }
}
