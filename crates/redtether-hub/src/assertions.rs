//! The assertions of who an operator is that the remote editor hands the devices' gates: signed
//! with the hub's key, and one per claim (operator, role, device) reused while half its
//! lifetime is left, so a page load of many requests costs one signature and the device one
//! verification (`redtether_proto::assertion::Issued`, `Verified`).

use redtether_proto::assertion::{self, Issued};
use std::sync::{Arc, Mutex};

/// Claims kept at most: an operator browsing a device is one.
const CAPACITY: usize = 4096;

pub struct Assertions {
    signer: Arc<ring::signature::Ed25519KeyPair>,
    issued: Mutex<Issued>,
}

impl Assertions {
    pub fn new(signer: Arc<ring::signature::Ed25519KeyPair>) -> Assertions {
        Assertions { signer, issued: Mutex::new(Issued::new(CAPACITY)) }
    }

    /// The signed assertion that `user` has `role` on `device`, valid for at least
    /// [`assertion::REUSE_WHILE_LEFT_SECS`].
    pub fn for_operator(&self, user: &str, role: &str, device: &str) -> String {
        let now = redtether_proto::time::unix_now();
        // A poisoned lock only means another request panicked mid-insert; the map is still a
        // map of valid signed tokens.
        let mut issued = self.issued.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        issued.get_or_sign(user, role, device, now, |claim| assertion::sign(claim, &self.signer))
    }
}
