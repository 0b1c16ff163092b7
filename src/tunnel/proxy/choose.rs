//! Which proxy, if any, the tunnel dials the hub through: pure, the environment passed in.
//!
//! - `[tunnel] proxy = "http://…"` always wins; `proxy = ""` always means direct.
//! - Otherwise `HTTPS_PROXY`, then `https_proxy` (the first that is set and not empty), unless
//!   `NO_PROXY` (then `no_proxy`) matches the hub. `HTTP_PROXY` is not read (the tunnel is not
//!   plain HTTP), nor is `ALL_PROXY`, which usually names a SOCKS proxy the tunnel cannot use.
//! - `NO_PROXY` does not apply to the configured proxy: that key is written for this one
//!   destination, while the environment is shared with every program on the machine.
//!
//! `NO_PROXY` is a comma-separated list, compared case-insensitively, as curl and Go take it:
//! `*` matches every host; `example.com`, `.example.com` and `*.example.com` each match
//! `example.com` and every name under it; an IP address matches that address, and
//! `10.0.0.0/8` (CIDR) every address in it; an entry may end in `:port` (`[v6]:port` for IPv6)
//! to match that port only. Names are not resolved: a name entry never matches an IP hub.

use super::{ProxyEnv, ProxyError};
use crate::config::{ProxyChoice, ProxyUrl};
use std::net::IpAddr;

/// The proxy to dial `host:port` through, and where it was named (for messages), or `None`
/// for a direct connection.
pub fn choose(
    choice: &ProxyChoice,
    host: &str,
    port: u16,
    env: &ProxyEnv,
) -> Result<Option<(ProxyUrl, &'static str)>, ProxyError> {
    match choice {
        ProxyChoice::Direct => Ok(None),
        ProxyChoice::Url(url) => Ok(Some((url.clone(), "tunnel.proxy"))),
        ProxyChoice::Environment => {
            let Some((variable, text)) = first_set(env, ["HTTPS_PROXY", "https_proxy"]) else {
                return Ok(None);
            };
            let no_proxy = first_set(env, ["NO_PROXY", "no_proxy"]).map(|(_, list)| list).unwrap_or("");
            if no_proxy_matches(no_proxy, host, port) {
                return Ok(None);
            }
            let url = ProxyUrl::parse_env(text).map_err(|reason| ProxyError::BadEnvironment { variable, reason })?;
            Ok(Some((url, variable)))
        }
    }
}

fn first_set<'e>(env: &'e ProxyEnv, names: [&'static str; 2]) -> Option<(&'static str, &'e str)> {
    names.into_iter().find_map(|name| Some((name, env.get(name).filter(|v| !v.trim().is_empty())?)))
}

/// Whether a `NO_PROXY` list names `host` (a name, or an IP address without brackets) on `port`.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        let (pattern, entry_port) = split_entry_port(&entry);
        if entry_port.is_some_and(|p| p != port) {
            return false;
        }
        match host_ip {
            Some(ip) => ip_matches(pattern, ip),
            None => {
                let domain = pattern.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.');
                !domain.is_empty()
                    && (host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.')))
            }
        }
    })
}

/// `pattern[:port]`; an IPv6 pattern has its port only inside `[…]:port`, so a bare IPv6
/// address or CIDR is never split at its own colons.
fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((inner, after)) => (inner, after.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((pattern, port)) if !pattern.contains(':') => match port.parse() {
            Ok(p) => (pattern, Some(p)),
            // `host:junk`: an entry that can never match, rather than one that matches any port.
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn ip_matches(pattern: &str, ip: IpAddr) -> bool {
    if let Some((net, bits)) = pattern.split_once('/') {
        let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
            return false;
        };
        return match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        };
    }
    pattern.parse::<IpAddr>().is_ok_and(|p| p == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_pairs(pairs.iter().copied())
    }

    fn chosen(choice: &ProxyChoice, host: &str, e: &ProxyEnv) -> Option<String> {
        choose(choice, host, 443, e).unwrap().map(|(url, from)| format!("{url} {from}"))
    }

    #[test]
    fn the_configured_proxy_wins_and_an_empty_one_means_direct() {
        let e = env(&[("HTTPS_PROXY", "http://env-proxy:8080"), ("NO_PROXY", "*")]);
        let configured = ProxyChoice::Url(ProxyUrl::parse("http://conf:3128").unwrap());
        assert_eq!(chosen(&configured, "hub.example", &e).as_deref(), Some("http://conf:3128 tunnel.proxy"));
        assert_eq!(chosen(&ProxyChoice::Direct, "hub.example", &e), None);
    }

    #[test]
    fn the_environment_upper_case_first_empty_counts_as_unset() {
        let both = env(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "http://lower:2")]);
        assert_eq!(chosen(&ProxyChoice::Environment, "hub", &both).as_deref(), Some("http://upper:1 HTTPS_PROXY"));
        let lower = env(&[("HTTPS_PROXY", " "), ("https_proxy", "lower:2")]);
        assert_eq!(chosen(&ProxyChoice::Environment, "hub", &lower).as_deref(), Some("http://lower:2 https_proxy"));
        let others = env(&[("HTTP_PROXY", "http://plain:1"), ("ALL_PROXY", "socks5://s:1")]);
        assert_eq!(chosen(&ProxyChoice::Environment, "hub", &others), None);
    }

    #[test]
    fn no_proxy_exempts_the_hub_from_the_environments_proxy() {
        let e = env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "localhost, .Plant.Example")]);
        assert_eq!(chosen(&ProxyChoice::Environment, "hub.plant.example", &e), None);
        assert!(chosen(&ProxyChoice::Environment, "hub.cloud.example", &e).is_some());
        // NO_PROXY is read before no_proxy.
        let upper = env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "other"), ("no_proxy", "hub")]);
        assert!(chosen(&ProxyChoice::Environment, "hub", &upper).is_some());
    }

    #[test]
    fn a_malformed_environment_proxy_is_an_error_naming_the_variable_not_its_value() {
        let e = env(&[("https_proxy", "socks5://user:hunter2@s:1080")]);
        let err = choose(&ProxyChoice::Environment, "hub", 443, &e).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("https_proxy") && text.contains("socks5") && !text.contains("hunter2"), "{text}");
        // ... unless NO_PROXY exempts the hub, when the variable is not needed at all.
        let exempt = env(&[("https_proxy", "socks5://s:1080"), ("NO_PROXY", "hub")]);
        assert!(choose(&ProxyChoice::Environment, "hub", 443, &exempt).unwrap().is_none());
    }

    #[test]
    fn no_proxy_domains_match_the_name_and_names_under_it_only() {
        for list in ["example.com", ".example.com", "*.example.com", "EXAMPLE.COM.", " x , example.com "] {
            assert!(no_proxy_matches(list, "example.com", 443), "{list}");
            assert!(no_proxy_matches(list, "hub.Example.com", 443), "{list}");
            assert!(no_proxy_matches(list, "hub.example.com.", 443), "{list}");
            assert!(!no_proxy_matches(list, "badexample.com", 443), "{list}");
            assert!(!no_proxy_matches(list, "example.com.evil", 443), "{list}");
        }
        assert!(no_proxy_matches("*", "anything", 1));
        assert!(!no_proxy_matches("", "hub", 443));
        assert!(!no_proxy_matches(",, ,", "hub", 443));
        assert!(!no_proxy_matches(".", "hub", 443));
    }

    #[test]
    fn no_proxy_ports_restrict_the_entry() {
        assert!(no_proxy_matches("hub.example:443", "hub.example", 443));
        assert!(!no_proxy_matches("hub.example:443", "hub.example", 4433));
        assert!(!no_proxy_matches("hub.example:junk", "hub.example", 443));
        assert!(no_proxy_matches("10.1.2.3:443", "10.1.2.3", 443));
        assert!(!no_proxy_matches("10.1.2.3:443", "10.1.2.3", 80));
        assert!(no_proxy_matches("[fd00::1]:443", "fd00::1", 443));
        assert!(!no_proxy_matches("[fd00::1]:443", "fd00::1", 80));
    }

    #[test]
    fn no_proxy_ip_entries_match_addresses_exactly_or_by_cidr() {
        assert!(no_proxy_matches("10.1.2.3", "10.1.2.3", 443));
        assert!(!no_proxy_matches("10.1.2.3", "10.1.2.30", 443));
        // A name-like suffix never matches inside an address.
        assert!(!no_proxy_matches("2.3", "10.1.2.3", 443));
        assert!(no_proxy_matches("10.0.0.0/8", "10.200.1.1", 443));
        assert!(!no_proxy_matches("10.0.0.0/8", "11.0.0.1", 443));
        assert!(no_proxy_matches("0.0.0.0/0", "192.0.2.1", 443));
        assert!(no_proxy_matches("fd00::/8", "fd12::5", 443));
        assert!(no_proxy_matches("FD00::1", "[fd00::1]", 443));
        assert!(no_proxy_matches("::1", "::1", 443));
        assert!(!no_proxy_matches("fd00::/8", "10.0.0.1", 443));
        assert!(!no_proxy_matches("10.0.0.0/33", "10.0.0.1", 443));
        // Names are not resolved.
        assert!(!no_proxy_matches("localhost", "127.0.0.1", 443));
    }
}
