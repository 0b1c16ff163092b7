//! The agent's reconnect loop as a state machine: after each attempt or session, what the
//! tunnel's state is, whether a refusal is audited, and how long to wait before the next try.
//! Backoff with full jitter from 200 ms to 30 s; a session that lasted a minute, or a hub that
//! restarted, starts the schedule over; a refused certificate is retried only at the cap.

use super::ending::Ending;
use crate::backoff::Backoff;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session this long resets the backoff.
pub const HEALTHY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelState {
    /// Not enrolled: no tunnel to keep.
    Offline,
    Connecting,
    Online,
    /// The hub refused the device's certificate (revoked, expired, another CA): re-enroll.
    AuthFailed,
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No connection: the hub's name did not resolve, nothing answered, the handshake was lost.
    Unreachable,
    /// The attempt was refused: a TLS alert or refusal code during the handshake (classified
    /// as [`Ending::Refused`]), or a certificate that has already expired.
    Refused,
    /// A session ran for `lasted` and ended so.
    Ended { ending: Ending, lasted: Duration },
}

/// What the reconnect loop does next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub state: TunnelState,
    /// Record `tunnel.auth_failed`: a refusal spell begins (not at every retry).
    pub audit_refusal: bool,
    /// Wait this long before the next attempt; `None`: stop (the agent is stopping).
    pub retry_in: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Link {
    backoff: Backoff,
    attempt: u32,
    refused: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link { backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX), attempt: 0, refused: false }
    }
}

impl Link {
    /// Whether the last outcome was a refusal (the state stays `auth_failed` while retrying).
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// The state to show while an attempt is under way.
    pub fn connecting_state(&self) -> TunnelState {
        if self.refused { TunnelState::AuthFailed } else { TunnelState::Connecting }
    }

    /// The identity was reloaded (a new enrollment): start the schedule over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// `jitter` in `[0, 1)` spreads the delay (full jitter).
    pub fn on_outcome(&mut self, outcome: Outcome, jitter: f64) -> Decision {
        let refusal = |this: &mut Link| {
            let audit_refusal = !this.refused;
            this.refused = true;
            Decision { state: TunnelState::AuthFailed, audit_refusal, retry_in: Some(BACKOFF_MAX) }
        };
        match outcome {
            Outcome::Refused | Outcome::Ended { ending: Ending::Refused, .. } => refusal(self),
            Outcome::Ended { ending: Ending::Cancelled, .. } => {
                Decision { state: TunnelState::Connecting, audit_refusal: false, retry_in: None }
            }
            Outcome::Ended { ending, lasted } => {
                self.refused = false;
                if lasted >= HEALTHY || ending == Ending::HubRestarted {
                    self.attempt = 0;
                }
                Decision {
                    state: TunnelState::Connecting,
                    audit_refusal: false,
                    retry_in: Some(self.next_delay(jitter)),
                }
            }
            Outcome::Unreachable => {
                let state = self.connecting_state();
                Decision { state, audit_refusal: false, retry_in: Some(self.next_delay(jitter)) }
            }
        }
    }

    fn next_delay(&mut self, jitter: f64) -> Duration {
        let delay = self.backoff.delay(self.attempt, jitter);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_JITTER: f64 = 0.999_999;

    #[test]
    fn unreachable_hubs_back_off_to_the_cap() {
        let mut link = Link::default();
        let delays: Vec<Duration> =
            (0..12).map(|_| link.on_outcome(Outcome::Unreachable, MAX_JITTER).retry_in.unwrap()).collect();
        assert!(delays[0] < Duration::from_millis(201));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert!(delays[11] <= BACKOFF_MAX && delays[11] > Duration::from_secs(29));
        assert_eq!(
            link.on_outcome(Outcome::Unreachable, 0.0).retry_in,
            Some(BACKOFF_MIN),
            "full jitter reaches the floor"
        );
    }

    #[test]
    fn a_refusal_is_audited_once_per_spell_and_retried_at_the_cap() {
        let mut link = Link::default();
        let first = link.on_outcome(Outcome::Refused, 0.5);
        assert_eq!(
            first,
            Decision { state: TunnelState::AuthFailed, audit_refusal: true, retry_in: Some(BACKOFF_MAX) }
        );
        let again = link.on_outcome(Outcome::Ended { ending: Ending::Refused, lasted: Duration::ZERO }, 0.5);
        assert!(!again.audit_refusal, "not at every retry");
        assert_eq!(again.retry_in, Some(BACKOFF_MAX));
        // While refused, a lost path keeps showing auth_failed.
        assert_eq!(link.on_outcome(Outcome::Unreachable, 0.5).state, TunnelState::AuthFailed);
        assert_eq!(link.connecting_state(), TunnelState::AuthFailed);
        // A session that works ends the spell; the next refusal is audited again.
        let ok = link.on_outcome(Outcome::Ended { ending: Ending::Lost, lasted: Duration::from_secs(1) }, 0.5);
        assert_eq!(ok.state, TunnelState::Connecting);
        assert!(link.on_outcome(Outcome::Refused, 0.5).audit_refusal);
    }

    #[test]
    fn a_healthy_session_or_a_restarted_hub_starts_the_schedule_over() {
        let mut link = Link::default();
        for _ in 0..10 {
            link.on_outcome(Outcome::Unreachable, MAX_JITTER);
        }
        let short =
            link.on_outcome(Outcome::Ended { ending: Ending::Lost, lasted: Duration::from_secs(5) }, MAX_JITTER);
        assert!(short.retry_in.unwrap() > Duration::from_secs(29), "a short session keeps backing off");
        let healthy = link.on_outcome(Outcome::Ended { ending: Ending::Lost, lasted: HEALTHY }, MAX_JITTER);
        assert!(healthy.retry_in.unwrap() < Duration::from_millis(201));
        for _ in 0..10 {
            link.on_outcome(Outcome::Unreachable, MAX_JITTER);
        }
        let restarted = link
            .on_outcome(Outcome::Ended { ending: Ending::HubRestarted, lasted: Duration::from_secs(1) }, MAX_JITTER);
        assert!(restarted.retry_in.unwrap() < Duration::from_millis(201), "reconnect at once");
        for _ in 0..10 {
            link.on_outcome(Outcome::Unreachable, MAX_JITTER);
        }
        link.reset();
        assert!(link.on_outcome(Outcome::Unreachable, MAX_JITTER).retry_in.unwrap() < Duration::from_millis(201));
    }

    #[test]
    fn stopping_ends_the_loop() {
        let mut link = Link::default();
        let d = link.on_outcome(Outcome::Ended { ending: Ending::Cancelled, lasted: Duration::ZERO }, 0.5);
        assert_eq!(d.retry_in, None);
    }
}
