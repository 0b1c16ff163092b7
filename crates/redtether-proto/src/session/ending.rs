//! How a tunnel connection ended, and what that means: the one place where a refused device
//! (bad, revoked or expired certificate) is told from a lost path. The I/O shell translates its
//! transport's error into a [`Closed`] one-to-one; [`classify`] decides.

use crate::wire::codes;

/// How the transport says a connection (or a connection attempt) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The peer answered with a stateless reset: it restarted and lost the connection.
    StatelessReset,
    /// A transport-level close, sent or received, with its QUIC transport error code. TLS
    /// alerts are the crypto codes `0x100 + alert`.
    Transport(u64),
    /// The peer closed with an application error code.
    Application(u64),
    /// This side closed it.
    Local,
    /// Anything else: an idle timeout, a version mismatch, no answer at all.
    Other,
}

/// What an ending means for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The agent is stopping.
    Cancelled,
    /// The hub restarted: reconnect at once.
    HubRestarted,
    /// The hub refused the device (a TLS alert about its certificate, revoked, no certificate):
    /// only re-enrolling helps.
    Refused,
    /// The path or the hub went away: retry with backoff.
    Lost,
}

/// QUIC's crypto error range: a TLS alert. With TLS 1.3 the hub judges the device's
/// certificate after the device already considers the handshake done, so a refusal can arrive
/// as the close of an established connection too.
fn is_tls_alert(code: u64) -> bool {
    (0x100..0x200).contains(&code)
}

pub fn classify(closed: Closed) -> Ending {
    match closed {
        Closed::StatelessReset => Ending::HubRestarted,
        Closed::Transport(code) if is_tls_alert(code) => Ending::Refused,
        Closed::Application(code) if [codes::REVOKED, codes::CERTIFICATE_REQUIRED].map(u64::from).contains(&code) => {
            Ending::Refused
        }
        Closed::Local => Ending::Cancelled,
        _ => Ending::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_lost_paths_however_they_arrive() {
        assert_eq!(classify(Closed::Application(codes::REVOKED.into())), Ending::Refused);
        assert_eq!(classify(Closed::Application(codes::CERTIFICATE_REQUIRED.into())), Ending::Refused);
        // bad_certificate (42), certificate_revoked (44), certificate_expired (45) alerts.
        for alert in [42u64, 44, 45] {
            assert_eq!(classify(Closed::Transport(0x100 + alert)), Ending::Refused, "alert {alert}");
        }
        assert_eq!(classify(Closed::Application(codes::SHUTDOWN.into())), Ending::Lost);
        assert_eq!(classify(Closed::Application(codes::REPLACED.into())), Ending::Lost);
        assert_eq!(classify(Closed::Application(codes::DISCONNECTED.into())), Ending::Lost, "reconnects");
        assert_eq!(classify(Closed::Transport(0x0a)), Ending::Lost, "a protocol violation is not a refusal");
        assert_eq!(classify(Closed::Other), Ending::Lost);
        assert_eq!(classify(Closed::StatelessReset), Ending::HubRestarted);
        assert_eq!(classify(Closed::Local), Ending::Cancelled);
    }
}
