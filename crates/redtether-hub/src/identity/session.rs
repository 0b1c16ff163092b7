//! How long a login session lives: it ends after `idle` without a request or `max` after the
//! login, whichever comes first (`[auth] session_idle`, `session_max`). Its last use is written
//! back at most once a minute, so a busy editor does not write the store on every request.

use serde::{Deserialize, Serialize};

/// Writes of a session's last use are this far apart at least (seconds).
pub const TOUCH_EVERY: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifetime {
    pub idle: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Valid; `touch` says whether to write `now` as its last use.
    Valid { touch: bool },
    /// Unused for longer than the idle timeout.
    Idle,
    /// Older than the absolute timeout.
    Expired,
}

/// The state at `now` of a session made at `created` and last used at `last_used` (seconds).
pub fn state(lifetime: Lifetime, created: u64, last_used: u64, now: u64) -> SessionState {
    if now >= created.saturating_add(lifetime.max) {
        SessionState::Expired
    } else if now >= last_used.saturating_add(lifetime.idle) {
        SessionState::Idle
    } else {
        SessionState::Valid { touch: now >= last_used.saturating_add(TOUCH_EVERY) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Lifetime = Lifetime { idle: 1800, max: 12 * 3600 };

    #[test]
    fn idle_and_absolute_timeouts_end_a_session() {
        assert_eq!(state(L, 0, 0, 10), SessionState::Valid { touch: false });
        assert_eq!(state(L, 0, 0, 61), SessionState::Valid { touch: true });
        assert_eq!(state(L, 0, 0, 1799), SessionState::Valid { touch: true });
        assert_eq!(state(L, 0, 0, 1800), SessionState::Idle);
        // Kept busy, it still ends at the absolute limit.
        assert_eq!(state(L, 0, 12 * 3600 - 5, 12 * 3600 - 1), SessionState::Valid { touch: false });
        assert_eq!(state(L, 0, 12 * 3600 - 5, 12 * 3600), SessionState::Expired);
    }
}
