//! Whether a platform policy is to be enforced: the device's rules over the protocol's checks
//! (signature, device, number, document). Pure.

use redtether_proto::policy::{self, LOCALLY_MANAGED, Policy, PolicyRefusal};

/// What to do with a policy the hub sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A newer valid policy for this device: store it, then enforce it.
    Enforce(Policy),
    /// The policy in force, sent again (after a reconnect): answer `applied` again, record nothing.
    AlreadyEnforced {
        number: u64,
        hash: String,
    },
    Refuse {
        number: u64,
        hash: Option<String>,
        reason: &'static str,
        message: String,
    },
}

/// The policy the device enforces now, if one came from the platform.
#[derive(Debug, Clone, Copy)]
pub struct InForce<'a> {
    pub number: u64,
    pub hash: &'a str,
}

/// Judges `envelope` for `device` (pinned `hub_key`), `managed` as `[policy] managed` says,
/// with `current` the last policy accepted.
pub fn judge(envelope: &str, hub_key: &[u8], device: &str, managed: bool, current: Option<InForce<'_>>) -> Verdict {
    // What the envelope claims, believed only once its signature held.
    let opened = policy::open(envelope, hub_key);
    let number = opened.as_ref().map_or(0, |p| p.number);
    let hash = opened.as_ref().ok().map(|p| p.document.hash());
    if !managed {
        let message = "this device's security settings are managed in its agent.toml ([policy] managed = false)";
        return Verdict::Refuse { number, hash, reason: LOCALLY_MANAGED, message: message.into() };
    }
    let last = current.map_or(0, |c| c.number);
    match policy::verify(envelope, hub_key, device, last) {
        Ok(policy) => Verdict::Enforce(policy),
        Err(PolicyRefusal::Replayed { number, .. })
            if current.is_some_and(|c| c.number == number && Some(c.hash) == hash.as_deref()) =>
        {
            Verdict::AlreadyEnforced { number, hash: hash.unwrap_or_default() }
        }
        Err(refusal) => Verdict::Refuse { number, hash, reason: refusal.reason(), message: refusal.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redtether_proto::policy::{PolicyDocument, sign};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn envelope(key: &Ed25519KeyPair, device: &str, number: u64, protection: bool) -> String {
        let document = PolicyDocument { protection, ..PolicyDocument::default() };
        sign(&Policy { device: device.into(), number, issued_at: 0, document }, key)
    }

    #[test]
    fn newer_is_enforced_the_same_again_is_acknowledged_and_older_is_refused() {
        let k = key();
        let pk = k.public_key().as_ref().to_vec();
        let e5 = envelope(&k, "d", 5, true);
        let Verdict::Enforce(p) = judge(&e5, &pk, "d", true, None) else { panic!() };
        let hash = p.document.hash();
        let current = Some(InForce { number: 5, hash: &hash });
        assert_eq!(judge(&e5, &pk, "d", true, current), Verdict::AlreadyEnforced { number: 5, hash: hash.clone() });
        // The same number with another document is no repeat.
        let other5 = envelope(&k, "d", 5, false);
        assert!(matches!(judge(&other5, &pk, "d", true, current), Verdict::Refuse { reason: "replayed", .. }));
        let e4 = envelope(&k, "d", 4, false);
        assert!(matches!(judge(&e4, &pk, "d", true, current), Verdict::Refuse { reason: "replayed", number: 4, .. }));
        assert!(matches!(judge(&envelope(&k, "d", 6, false), &pk, "d", true, current), Verdict::Enforce(_)));
    }

    #[test]
    fn other_devices_other_keys_and_broken_envelopes_are_refused_with_their_reason() {
        let k = key();
        let pk = k.public_key().as_ref().to_vec();
        let reason = |v: Verdict| match v {
            Verdict::Refuse { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(judge(&envelope(&k, "other", 1, true), &pk, "d", true, None)), "other_device");
        assert_eq!(reason(judge(&envelope(&key(), "d", 1, true), &pk, "d", true, None)), "bad_signature");
        let e = envelope(&k, "d", 1, true);
        assert!(["malformed", "bad_signature"].contains(&reason(judge(&e[..e.len() / 2], &pk, "d", true, None))));
    }

    #[test]
    fn a_locally_managed_device_refuses_even_a_valid_policy_and_says_which() {
        let k = key();
        let pk = k.public_key().as_ref().to_vec();
        match judge(&envelope(&k, "d", 3, true), &pk, "d", false, None) {
            Verdict::Refuse { number: 3, hash: Some(_), reason, .. } => assert_eq!(reason, "locally_managed"),
            other => panic!("{other:?}"),
        }
        // A forged one gets no number believed.
        match judge(&envelope(&key(), "d", 3, true), &pk, "d", false, None) {
            Verdict::Refuse { number: 0, hash: None, .. } => {}
            other => panic!("{other:?}"),
        }
    }
}
