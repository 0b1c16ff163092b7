//! Token buckets per source address: one for all requests (optional), one for failed
//! authentications (always on, checked before any password is hashed). Refusals are counted per
//! address and window so they can be reported once per window, not once per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A classic token bucket. Pure: the caller passes the time.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, last: now }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    /// `Ok` if a token is available (without taking it); else how long until one is.
    pub fn peek(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 { Ok(()) } else { Err(Duration::from_secs_f64((1.0 - self.tokens) / rate)) }
    }

    /// Takes a token if one is available.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.peek(rate, burst, now)?;
        self.tokens -= 1.0;
        Ok(())
    }

    /// Takes a token even if that leaves the bucket in debt, as a failure that already happened
    /// must count.
    pub fn charge(&mut self, rate: f64, burst: f64, now: Instant) {
        self.refill(rate, burst, now);
        self.tokens = (self.tokens - 1.0).max(-burst);
    }

    fn is_full(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        self.tokens >= burst
    }
}

/// The address a limit applies to: IPv6 clients are grouped by /64, as one host usually holds
/// a whole /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// What a limiter counts by: an address (grouped as [`limit_key`] says) or a name.
pub trait LimitKey: std::hash::Hash + Eq + Clone {
    /// The key the limit applies to.
    fn grouped(&self) -> Self;
}

impl LimitKey for IpAddr {
    fn grouped(&self) -> IpAddr {
        limit_key(*self)
    }
}

impl LimitKey for String {
    fn grouped(&self) -> String {
        self.clone()
    }
}

/// A refusal by [`Limiter::check_burst`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When the next attempt may go on.
    pub retry: Duration,
    /// The first refusal since the key last went on: where a burst is reported, once.
    pub first: bool,
}

struct Entry {
    bucket: Bucket,
    refused: u64,
}

/// Buckets for many addresses (or names), bounded in memory.
pub struct Limiter<K: LimitKey = IpAddr> {
    rate: f64,
    burst: f64,
    capacity: usize,
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: LimitKey> Limiter<K> {
    pub fn new(rate: f64, burst: u32, capacity: usize) -> Self {
        Limiter { rate, burst: f64::from(burst.max(1)), capacity, entries: Mutex::new(HashMap::new()) }
    }

    fn with_entry<T>(&self, ip: K, now: Instant, f: impl FnOnce(&mut Entry, f64, f64) -> T) -> T {
        let key = ip.grouped();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            // Full buckets that reported nothing carry no information; drop them first.
            entries.retain(|_, e| e.refused > 0 || !e.bucket.is_full(rate, burst, now));
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        let entry = entries.entry(key).or_insert_with(|| Entry { bucket: Bucket::full(self.burst, now), refused: 0 });
        f(entry, self.rate, self.burst)
    }

    /// Whether `ip` may go on; a refusal is counted for the next report.
    pub fn check(&self, ip: K, now: Instant) -> Result<(), Duration> {
        self.with_entry(ip, now, |e, rate, burst| e.bucket.peek(rate, burst, now).inspect_err(|_| e.refused += 1))
    }

    /// Takes a token for `ip`, or refuses (and counts it).
    pub fn take(&self, ip: K, now: Instant) -> Result<(), Duration> {
        self.with_entry(ip, now, |e, rate, burst| e.bucket.take(rate, burst, now).inspect_err(|_| e.refused += 1))
    }

    /// Charges `ip` for a failure.
    pub fn charge(&self, ip: K, now: Instant) {
        self.with_entry(ip, now, |e, rate, burst| e.bucket.charge(rate, burst, now));
    }

    /// The refusals counted since the last call, per address, and resets the counts.
    pub fn drain_refusals(&self) -> Vec<(K, u64)> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter_mut()
            .filter(|(_, e)| e.refused > 0)
            .map(|(k, e)| (k.clone(), std::mem::take(&mut e.refused)))
            .collect()
    }

    /// As [`Limiter::check`], telling the first refusal of a burst from the ones after it
    /// (the count starts again once the key goes on).
    pub fn check_burst(&self, key: K, now: Instant) -> Result<(), Limited> {
        self.with_entry(key, now, |e, rate, burst| match e.bucket.peek(rate, burst, now) {
            Ok(()) => {
                e.refused = 0;
                Ok(())
            }
            Err(retry) => {
                e.refused += 1;
                Err(Limited { retry, first: e.refused == 1 })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_burst_of_refusals_is_reported_once_per_name() {
        let t0 = Instant::now();
        let l = Limiter::<String>::new(1.0, 2, 16);
        l.charge("ann".into(), t0);
        l.charge("ann".into(), t0);
        let first = l.check_burst("ann".into(), t0).unwrap_err();
        assert!(first.first);
        assert!(!l.check_burst("ann".into(), t0 + MS(10)).unwrap_err().first);
        assert!(l.check_burst("bob".into(), t0).is_ok(), "names are counted apart");
        assert!(l.check_burst("ann".into(), t0 + MS(1000)).is_ok());
        l.charge("ann".into(), t0 + MS(1000));
        l.charge("ann".into(), t0 + MS(1000));
        assert!(l.check_burst("ann".into(), t0 + MS(1000)).unwrap_err().first, "a new burst");
    }

    #[test]
    fn burst_then_one_per_second() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        for _ in 0..10 {
            b.take(1.0, 10.0, t0).unwrap();
        }
        let wait = b.take(1.0, 10.0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(b.take(1.0, 10.0, t0 + MS(999)).is_err());
        assert!(b.take(1.0, 10.0, t0 + MS(1000)).is_ok());
    }

    #[test]
    fn peek_does_not_consume_and_charge_can_go_into_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::full(1.0, t0);
        assert!(b.peek(1.0, 1.0, t0).is_ok());
        assert!(b.peek(1.0, 1.0, t0).is_ok());
        b.charge(1.0, 1.0, t0);
        b.charge(1.0, 1.0, t0);
        assert_eq!(
            b.peek(1.0, 1.0, t0).unwrap_err(),
            Duration::from_secs(2),
            "a second failure pushes the next try back"
        );
    }

    #[test]
    fn limiter_counts_refusals_per_address_for_one_report() {
        let l = Limiter::<IpAddr>::new(1.0, 2, 100);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.take(a, t0).is_ok() && l.take(a, t0).is_ok());
        for _ in 0..5 {
            assert!(l.take(a, t0).is_err());
        }
        assert!(l.take(b, t0).is_ok(), "another address has its own bucket");
        assert_eq!(l.drain_refusals(), vec![(a, 5)]);
        assert!(l.drain_refusals().is_empty(), "counts reset after a report");
    }

    #[test]
    fn ipv6_hosts_are_limited_per_64() {
        assert_eq!(limit_key("2001:db8:1:2:aaaa::1".parse().unwrap()), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(limit_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn memory_is_bounded() {
        let l = Limiter::<IpAddr>::new(1.0, 1, 16);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let _ = l.take(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.entries.lock().unwrap().len() <= 16);
    }
}
