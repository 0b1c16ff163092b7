//! Which hub address to dial first, when there are several: pure, so its rules are tested
//! without sockets or DNS (the shell resolves names and feeds the addresses in).
//!
//! - A candidate is one socket address of one configured hub address; a DNS name that resolves
//!   to several addresses is several candidates.
//! - At start the candidates are in a random order (seeded by the caller), so a fleet given the
//!   same list spreads over the hubs instead of all landing on the first one.
//! - The candidate that connected goes to the front: the next round (after the connection
//!   drops) tries it first — it sticks.
//! - After a round in which none connected, the front one goes to the back, so the head start
//!   moves on to the next candidate.
//!
//! A round tries every candidate (see `dial::race`); the reconnect backoff applies between
//! rounds, not between candidates.

use crate::config::{HubAddress, HubAddressError};
use crate::identity::HubInfo;
use std::net::SocketAddr;

/// The hub addresses to dial: `[tunnel] hubs` when set (a fleet moved to new hub names by
/// configuration), else the list stored at enrollment (checked then; an error here is an
/// identity file edited by hand).
pub fn to_dial(configured: Option<&[HubAddress]>, enrolled: &HubInfo) -> Result<Vec<HubAddress>, HubAddressError> {
    match configured {
        Some(hubs) => Ok(hubs.to_vec()),
        None => crate::config::parse_hub_list(&enrolled.hub_list()),
    }
}

/// One place to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The hub address as configured: what status and audit name.
    pub hub: String,
    /// The name the hub's certificate must carry: the host part of `hub`.
    pub server_name: String,
    pub addr: SocketAddr,
}

/// A configured hub address and what it resolved to this round (empty: it did not resolve).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub hub: HubAddress,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Chooser {
    /// Every candidate seen, best first.
    order: Vec<(HubAddress, SocketAddr)>,
    rng: SplitMix,
}

impl Chooser {
    pub fn new(seed: u64) -> Chooser {
        Chooser { order: Vec::new(), rng: SplitMix(seed) }
    }

    /// This round's candidates, best first.
    pub fn round(&mut self, resolved: &[Resolved]) -> Vec<Candidate> {
        // Forget candidates of hubs no longer listed, and addresses a name no longer resolves to
        // (a name that failed to resolve this time keeps its old ones: DNS may be back next time).
        self.order.retain(|(hub, addr)| {
            resolved.iter().any(|r| &r.hub == hub && (r.addrs.is_empty() || r.addrs.contains(addr)))
        });
        for r in resolved {
            for addr in &r.addrs {
                let key = (r.hub.clone(), *addr);
                if !self.order.contains(&key) {
                    // Each new one at a uniformly random place: a random order at start.
                    let at = self.rng.below(self.order.len() + 1);
                    self.order.insert(at, key);
                }
            }
        }
        self.order
            .iter()
            .filter(|(hub, addr)| resolved.iter().any(|r| &r.hub == hub && r.addrs.contains(addr)))
            .map(|(hub, addr)| Candidate { hub: hub.to_string(), server_name: hub.host.clone(), addr: *addr })
            .collect()
    }

    /// `candidate` connected: it is tried first from now on.
    pub fn connected(&mut self, candidate: &Candidate) {
        if let Some(at) =
            self.order.iter().position(|(hub, addr)| hub.to_string() == candidate.hub && *addr == candidate.addr)
        {
            let key = self.order.remove(at);
            self.order.insert(0, key);
        }
    }

    /// No candidate connected: the next one gets the head start next round.
    pub fn failed_round(&mut self) {
        if !self.order.is_empty() {
            self.order.rotate_left(1);
        }
    }
}

/// SplitMix64: enough to shuffle a handful of addresses from one seed, and deterministic for tests.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for n this small (the modulo bias is below 2^-50).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn hub(text: &str) -> HubAddress {
        HubAddress::parse(text).unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// hub-a and hub-b by IP, and a name with two addresses.
    fn three_hubs() -> Vec<Resolved> {
        vec![
            Resolved { hub: hub("10.0.0.1:7443"), addrs: vec![addr("10.0.0.1:7443")] },
            Resolved { hub: hub("10.0.0.2:7443"), addrs: vec![addr("10.0.0.2:7443")] },
            Resolved { hub: hub("hubs.example:7443"), addrs: vec![addr("10.0.1.1:7443"), addr("[fd00::1]:7443")] },
        ]
    }

    fn order(candidates: &[Candidate]) -> Vec<String> {
        candidates.iter().map(|c| c.addr.to_string()).collect()
    }

    #[test]
    fn every_address_of_every_hub_is_a_candidate_named_by_its_hub() {
        let candidates = Chooser::new(1).round(&three_hubs());
        assert_eq!(candidates.len(), 4);
        let named = candidates.iter().find(|c| c.addr == addr("[fd00::1]:7443")).unwrap();
        assert_eq!((named.hub.as_str(), named.server_name.as_str()), ("hubs.example:7443", "hubs.example"));
        let by_ip = candidates.iter().find(|c| c.addr == addr("10.0.0.2:7443")).unwrap();
        assert_eq!(by_ip.server_name, "10.0.0.2", "the certificate is checked against the host dialled");
    }

    #[test]
    fn the_start_order_is_random_and_follows_the_seed() {
        let firsts: HashSet<String> =
            (0..64).map(|seed| order(&Chooser::new(seed).round(&three_hubs()))[0].clone()).collect();
        assert_eq!(firsts.len(), 4, "each candidate comes first for some seed: {firsts:?}");
        assert_eq!(order(&Chooser::new(7).round(&three_hubs())), order(&Chooser::new(7).round(&three_hubs())));
        let mut chooser = Chooser::new(7);
        let first = order(&chooser.round(&three_hubs()));
        assert_eq!(order(&chooser.round(&three_hubs())), first, "the order holds from round to round");
    }

    #[test]
    fn the_candidate_that_connected_is_tried_first_again() {
        let mut chooser = Chooser::new(3);
        let candidates = chooser.round(&three_hubs());
        let last = candidates.last().unwrap().clone();
        chooser.connected(&last);
        for _ in 0..3 {
            let next = chooser.round(&three_hubs());
            assert_eq!(next[0], last, "sticks after the connection drops");
            assert_eq!(next.len(), 4, "the others stay behind it");
        }
    }

    #[test]
    fn a_failed_round_moves_the_head_start_to_the_next_candidate_and_all_get_it_in_turn() {
        let mut chooser = Chooser::new(5);
        let start = order(&chooser.round(&three_hubs()));
        let mut firsts = vec![start[0].clone()];
        for _ in 0..3 {
            chooser.failed_round();
            let next = order(&chooser.round(&three_hubs()));
            assert_eq!(next.len(), 4, "all down: every one is still tried");
            firsts.push(next[0].clone());
        }
        assert_eq!(firsts, start, "round by round each gets the head start once");
        chooser.failed_round();
        assert_eq!(order(&chooser.round(&three_hubs())), start, "and round again");
    }

    #[test]
    fn a_sticky_hub_that_fails_loses_its_place_to_the_next() {
        let mut chooser = Chooser::new(9);
        let start = chooser.round(&three_hubs());
        chooser.connected(&start[2]);
        assert_eq!(chooser.round(&three_hubs())[0], start[2]);
        chooser.failed_round();
        let after = chooser.round(&three_hubs());
        assert_ne!(after[0], start[2]);
        assert_eq!(after.last(), Some(&start[2]));
    }

    #[test]
    fn resolution_changes_add_and_drop_candidates_but_a_failed_lookup_keeps_the_old_ones() {
        let mut chooser = Chooser::new(11);
        let mut hubs = three_hubs();
        let all = chooser.round(&hubs);
        let named = all.iter().find(|c| c.hub == "hubs.example:7443").unwrap().clone();
        chooser.connected(&named);
        // The name's lookup fails this round: its addresses are not dialled, but remembered.
        hubs[2].addrs.clear();
        let without = chooser.round(&hubs);
        assert_eq!(without.len(), 2);
        assert!(without.iter().all(|c| c.hub != "hubs.example:7443"));
        hubs[2].addrs = vec![addr("10.0.1.1:7443"), addr("[fd00::1]:7443")];
        assert_eq!(chooser.round(&hubs)[0], named, "back, and still first");
        // The name moved to a new address: the old one is forgotten, the new one is a candidate.
        hubs[2].addrs = vec![addr("10.0.1.9:7443")];
        let moved = chooser.round(&hubs);
        assert_eq!(moved.len(), 3);
        assert!(moved.iter().any(|c| c.addr == addr("10.0.1.9:7443")));
        // A hub no longer listed is no candidate.
        hubs.remove(0);
        assert!(chooser.round(&hubs).iter().all(|c| c.hub != "10.0.0.1:7443"));
    }

    #[test]
    fn the_configured_list_replaces_the_enrolled_one() {
        let enrolled = HubInfo {
            hub: "old-b:7443".into(),
            hubs: vec!["old-a:7443".into(), "old-b:7443".into()],
            server_name: "old-b".into(),
            device_id: "d".into(),
            ca_fingerprint: "f".into(),
            hub_signing_key: "k".into(),
        };
        let names = |list: Vec<HubAddress>| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(to_dial(None, &enrolled).unwrap()), ["old-a:7443", "old-b:7443"]);
        assert_eq!(names(to_dial(Some(&[hub("new:7443")]), &enrolled).unwrap()), ["new:7443"]);
        let single = HubInfo { hubs: Vec::new(), ..enrolled.clone() };
        assert_eq!(names(to_dial(None, &single).unwrap()), ["old-b:7443"], "an identity from before lists");
        let edited = HubInfo { hubs: vec!["no-port".into()], ..enrolled };
        assert!(to_dial(None, &edited).is_err());
    }

    #[test]
    fn nothing_resolved_is_no_candidates() {
        let mut chooser = Chooser::new(1);
        assert!(chooser.round(&[]).is_empty());
        assert!(chooser.round(&[Resolved { hub: hub("gone.example:1"), addrs: vec![] }]).is_empty());
        chooser.failed_round();
    }
}
