//! When the agent renews its certificate: at 2/3 of its life; a refusal, a bad answer or no
//! answer within [`ANSWER_TIMEOUT`] is retried after 30 s, doubling to an hour. Certificates
//! live on the wall clock, the session on a monotonic one: [`due_in`] is where the two meet.

use std::time::{Duration, SystemTime};

/// Retries after a failed renewal back off from this ...
pub const RETRY_MIN: Duration = Duration::from_secs(30);
/// ... to this.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long the hub has to answer a renewal request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// When a certificate valid from `not_before` to `not_after` should be renewed.
pub fn due(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life * 2 / 3
}

/// How long from `now` until renewal is due (zero if it already is).
pub fn due_in(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> Duration {
    due(not_before, not_after).duration_since(now).unwrap_or_default()
}

/// The wait before retry number `failures` (1 = the first retry).
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_life() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(due(start, start + Duration::from_secs(90 * 86400)), start + Duration::from_secs(60 * 86400));
        assert_eq!(due(start, start + Duration::from_secs(30)), start + Duration::from_secs(20));
        assert_eq!(due(start, start), start, "a certificate with no life is due at once");
        assert_eq!(due(start + Duration::from_secs(5), start), start + Duration::from_secs(5), "inverted: due at once");
        let life = Duration::from_secs(90 * 86400);
        assert_eq!(due_in(start, start + life, start + Duration::from_secs(86400)), Duration::from_secs(59 * 86400));
        assert_eq!(due_in(start, start + life, start + life), Duration::ZERO, "overdue: now");
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(30));
        assert_eq!(retry_delay(2), Duration::from_secs(60));
        assert_eq!(retry_delay(5), Duration::from_secs(480));
        assert_eq!(retry_delay(8), Duration::from_secs(3600));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(3600));
    }
}
