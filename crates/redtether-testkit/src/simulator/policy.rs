//! The simulated device's side of platform policies, judged as the agent judges them
//! (`src/security/verdict.rs`): a newer policy signed for this device is enforced and answered
//! `applied`; the one in force sent again is answered `applied` again (the hub re-sends the
//! newest after every welcome); anything else is `refused` with the protocol's reason. Nothing
//! is enforced: a simulated device has no gate.

use super::device::Shared;
use redtether_proto::policy::{self, PolicyRefusal};
use redtether_proto::wire::{PolicyReport, PolicyState};

#[derive(Debug)]
pub(super) struct PolicyKeeper {
    hub_key: Vec<u8>,
    /// The number and document hash of the policy in force.
    current: Option<(u64, String)>,
    /// The answer to the last policy sent: sent again at every welcome.
    last: Option<PolicyReport>,
}

impl PolicyKeeper {
    pub fn new(hub_key: Vec<u8>) -> PolicyKeeper {
        PolicyKeeper { hub_key, current: None, last: None }
    }

    pub fn last_report(&self) -> Option<PolicyReport> {
        self.last.clone()
    }

    pub fn apply(&mut self, envelope: &str, shared: &Shared) -> PolicyReport {
        let opened = policy::open(envelope, &self.hub_key);
        let claimed = opened.as_ref().map_or(0, |p| p.number);
        let hash = opened.as_ref().ok().map(|p| p.document.hash());
        let last = self.current.as_ref().map_or(0, |(n, _)| *n);
        let report = match policy::verify(envelope, &self.hub_key, &shared.id, last) {
            Ok(p) => {
                let hash = p.document.hash();
                self.current = Some((p.number, hash.clone()));
                shared.lock().policies.push(p.number);
                PolicyReport { number: p.number, state: PolicyState::Applied, reason: None, hash: Some(hash) }
            }
            Err(PolicyRefusal::Replayed { number, .. })
                if self.current.as_ref().is_some_and(|(n, h)| *n == number && Some(h) == hash.as_ref()) =>
            {
                PolicyReport { number, state: PolicyState::Applied, reason: None, hash }
            }
            Err(refusal) => PolicyReport {
                number: claimed,
                state: PolicyState::Refused,
                reason: Some(refusal.reason().to_string()),
                hash,
            },
        };
        self.last = Some(report.clone());
        report
    }
}
