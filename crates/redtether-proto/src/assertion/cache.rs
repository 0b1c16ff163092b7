//! Bounded caches that spare the Ed25519 work of one assertion per remote-editor request: the
//! hub reuses the assertion it signed for the same claim while at least half its lifetime is
//! left ([`Issued`]), and the device remembers the exact tokens it has verified until they
//! expire ([`Verified`]).
//!
//! Neither cache widens what is accepted. The hub's key is the whole claim (operator, role,
//! device): a changed role or another device is a new claim, signed afresh. The device's key is
//! the token's bytes, so a hit is a token whose signature was checked against the same pinned
//! key (one cache per key); expiry and the device are checked on every use. Pure: the caller
//! passes `now` (Unix seconds) and does the signing or verifying.

use super::{Assertion, AssertionError, LIFETIME_SECS};
use std::collections::HashMap;

/// A claim is re-signed once less than this is left of its assertion's lifetime, so a device
/// always gets at least this long to use it.
pub const REUSE_WHILE_LEFT_SECS: u64 = LIFETIME_SECS / 2;

/// The claim an assertion is made for, without its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Claim {
    user: String,
    role: String,
    device: String,
}

/// The hub's side: signed assertions by claim.
#[derive(Debug)]
pub struct Issued {
    capacity: usize,
    by_claim: HashMap<Claim, (u64, String)>,
}

impl Issued {
    pub fn new(capacity: usize) -> Issued {
        Issued { capacity: capacity.max(1), by_claim: HashMap::new() }
    }

    /// The assertion for `user` with `role` on `device` at `now`: one signed earlier when at
    /// least [`REUSE_WHILE_LEFT_SECS`] of it is left, else a new one from `sign` (valid for
    /// [`LIFETIME_SECS`]).
    pub fn get_or_sign(
        &mut self,
        user: &str,
        role: &str,
        device: &str,
        now: u64,
        sign: impl FnOnce(&Assertion) -> String,
    ) -> String {
        let claim = Claim { user: user.to_string(), role: role.to_string(), device: device.to_string() };
        if let Some((exp, token)) = self.by_claim.get(&claim)
            && exp.saturating_sub(now) >= REUSE_WHILE_LEFT_SECS
        {
            return token.clone();
        }
        let assertion = Assertion {
            user: claim.user.clone(),
            role: claim.role.clone(),
            device: claim.device.clone(),
            exp: now + LIFETIME_SECS,
        };
        let token = sign(&assertion);
        if !self.by_claim.contains_key(&claim) {
            make_room(&mut self.by_claim, self.capacity, |(exp, _)| exp.saturating_sub(now) >= REUSE_WHILE_LEFT_SECS);
        }
        self.by_claim.insert(claim, (assertion.exp, token.clone()));
        token
    }

    pub fn len(&self) -> usize {
        self.by_claim.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_claim.is_empty()
    }
}

/// The device's side: tokens whose signature verified against the pinned hub key it holds.
#[derive(Debug)]
pub struct Verified {
    hub_key: Vec<u8>,
    capacity: usize,
    by_token: HashMap<String, Assertion>,
}

impl Verified {
    /// For the hub key pinned at enrollment (32 bytes; anything else verifies nothing).
    pub fn new(hub_key: Vec<u8>, capacity: usize) -> Verified {
        Verified { hub_key, capacity: capacity.max(1), by_token: HashMap::new() }
    }

    /// [`super::verify`] with this cache in front: a token verified before is checked again
    /// only for its device and expiry. Refusals are not kept (a forger pays for every try).
    pub fn verify(&mut self, token: Option<&str>, device: &str, now: u64) -> Result<Assertion, AssertionError> {
        if let Some(known) = token.and_then(|t| self.by_token.get(t)) {
            known.valid_for(device, now)?;
            return Ok(known.clone());
        }
        let assertion = super::verify(token, &self.hub_key, device, now)?;
        if let Some(token) = token {
            make_room(&mut self.by_token, self.capacity, |a| a.exp > now);
            self.by_token.insert(token.to_string(), assertion.clone());
        }
        Ok(assertion)
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// Before one more entry goes into a full `map`: drops the entries no longer worth keeping, and
/// everything if that was not enough (a burst of claims costs a few signatures, never memory).
fn make_room<K, V>(map: &mut HashMap<K, V>, capacity: usize, mut keep: impl FnMut(&V) -> bool) {
    if map.len() >= capacity {
        map.retain(|_, value| keep(value));
        if map.len() >= capacity {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sign;
    use super::*;
    use crate::signed::tests::key;
    use ring::signature::KeyPair;
    use std::cell::Cell;

    #[test]
    fn the_hub_reuses_a_claims_assertion_for_half_its_lifetime_then_signs_anew() {
        let k = key();
        let mut issued = Issued::new(16);
        let signed = Cell::new(0);
        let mut get = |user: &str, role: &str, device: &str, now: u64| {
            issued.get_or_sign(user, role, device, now, |a| {
                signed.set(signed.get() + 1);
                sign(a, &k)
            })
        };
        let first = get("ann", "owner", "pump-1", 1000);
        assert_eq!(get("ann", "owner", "pump-1", 1000 + REUSE_WHILE_LEFT_SECS), first);
        assert_eq!(signed.get(), 1);
        let later = get("ann", "owner", "pump-1", 1001 + REUSE_WHILE_LEFT_SECS);
        assert_ne!(later, first, "less than half the lifetime left: signed again");
        assert_eq!(signed.get(), 2);
        // The new one is valid for a whole lifetime from when it was made.
        let pk = k.public_key().as_ref().to_vec();
        let claim = super::super::verify(Some(&later), &pk, "pump-1", 1000).unwrap();
        assert_eq!(claim.exp, 1001 + REUSE_WHILE_LEFT_SECS + LIFETIME_SECS);
    }

    #[test]
    fn a_changed_role_or_another_device_is_never_served_an_old_assertion() {
        let k = key();
        let pk = k.public_key().as_ref().to_vec();
        let mut issued = Issued::new(16);
        let owner = issued.get_or_sign("ann", "owner", "pump-1", 1000, |a| sign(a, &k));
        // Demoted a second later: the next request carries the new role, not the cached one.
        let viewer = issued.get_or_sign("ann", "viewer", "pump-1", 1001, |a| sign(a, &k));
        assert_ne!(viewer, owner);
        assert_eq!(super::super::verify(Some(&viewer), &pk, "pump-1", 1001).unwrap().role, "viewer");
        let other = issued.get_or_sign("ann", "viewer", "pump-2", 1001, |a| sign(a, &k));
        assert_eq!(super::super::verify(Some(&other), &pk, "pump-2", 1001).unwrap().device, "pump-2");
        let bob = issued.get_or_sign("bob", "viewer", "pump-1", 1001, |a| sign(a, &k));
        assert_eq!(super::super::verify(Some(&bob), &pk, "pump-1", 1001).unwrap().user, "bob");
    }

    #[test]
    fn the_hubs_cache_stays_within_its_capacity() {
        let k = key();
        let mut issued = Issued::new(4);
        for i in 0..100 {
            issued.get_or_sign(&format!("op{i}"), "viewer", "pump-1", 1000, |a| sign(a, &k));
            assert!(issued.len() <= 4);
        }
    }

    #[test]
    fn the_device_verifies_a_token_once_and_still_checks_expiry_and_device() {
        let k = key();
        let pk = k.public_key().as_ref().to_vec();
        let token =
            sign(&Assertion { user: "ann".into(), role: "viewer".into(), device: "pump-1".into(), exp: 1060 }, &k);
        let mut verified = Verified::new(pk, 16);
        assert_eq!(verified.verify(Some(&token), "pump-1", 1000).unwrap().user, "ann");
        assert_eq!(verified.len(), 1);
        assert!(verified.verify(Some(&token), "pump-1", 1059).is_ok());
        assert_eq!(verified.len(), 1, "verified once");
        assert_eq!(verified.verify(Some(&token), "pump-1", 1060), Err(AssertionError::Expired));
        assert_eq!(verified.verify(Some(&token), "pump-2", 1000), Err(AssertionError::OtherDevice));
        assert_eq!(verified.verify(None, "pump-1", 1000), Err(AssertionError::Missing));
    }

    #[test]
    fn refused_tokens_are_not_kept_and_forgeries_stay_refused() {
        let (k, other) = (key(), key());
        let pk = k.public_key().as_ref().to_vec();
        let claim = Assertion { user: "ann".into(), role: "owner".into(), device: "pump-1".into(), exp: 1060 };
        let forged = sign(&claim, &other);
        let mut verified = Verified::new(pk, 16);
        for _ in 0..3 {
            assert_eq!(verified.verify(Some(&forged), "pump-1", 1000), Err(AssertionError::BadSignature));
        }
        assert!(verified.is_empty());
        // A good token in the cache does not vouch for a forgery of the same claim.
        let good = sign(&claim, &k);
        verified.verify(Some(&good), "pump-1", 1000).unwrap();
        assert_eq!(verified.verify(Some(&forged), "pump-1", 1000), Err(AssertionError::BadSignature));
        // Nor for the good token with one byte of its signature changed.
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(verified.verify(Some(&tampered), "pump-1", 1000).is_err());
        // A token cached under one pinned key proves nothing to a cache for another key.
        let mut other_cache = Verified::new(other.public_key().as_ref().to_vec(), 16);
        assert_eq!(other_cache.verify(Some(&good), "pump-1", 1000), Err(AssertionError::BadSignature));
    }

    #[test]
    fn the_devices_cache_stays_within_its_capacity() {
        let k = key();
        let pk = k.public_key().as_ref().to_vec();
        let mut verified = Verified::new(pk, 4);
        for i in 0..20 {
            let token = sign(
                &Assertion { user: format!("op{i}"), role: "viewer".into(), device: "pump-1".into(), exp: 1060 },
                &k,
            );
            verified.verify(Some(&token), "pump-1", 1000).unwrap();
            assert!(verified.len() <= 4);
        }
    }
}
