//! The syntax of a hub address, `HOST:PORT` (an IPv6 literal in brackets), as `[tunnel] hubs`
//! and `redtether enroll --hub` accept it. Here rather than in the tunnel because configuration
//! uses nothing else of the agent, and both the file and the command line need the same rule.

use std::fmt;
use std::net::Ipv6Addr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubAddressError {
    #[error("{0:?} is not HOST:PORT")]
    NoPort(String),
    #[error("{0:?}: the port must be a number from 1 to 65535")]
    BadPort(String),
    #[error("{0:?}: the host is empty")]
    EmptyHost(String),
    /// `::1:7443` could be read two ways; brackets say where the address ends.
    #[error("{0:?}: write an IPv6 address in brackets, as [::1]:7443")]
    UnbracketedIpv6(String),
    #[error("{0:?}: not an IPv6 address in the brackets")]
    BadIpv6(String),
    #[error("list at least one hub address, HOST:PORT")]
    EmptyList,
    #[error("{0} is listed twice")]
    Repeated(String),
}

/// A hub's QUIC address as written. `host` is what the hub's certificate must name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HubAddress {
    pub host: String,
    pub port: u16,
}

impl HubAddress {
    pub fn parse(text: &str) -> Result<HubAddress, HubAddressError> {
        let text = text.trim();
        let owned = || text.to_string();
        let (host, port) = text.rsplit_once(':').ok_or_else(|| HubAddressError::NoPort(owned()))?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| HubAddressError::BadPort(owned()))?;
        let host = match host.strip_prefix('[') {
            Some(inner) => {
                let inner = inner.strip_suffix(']').ok_or_else(|| HubAddressError::BadIpv6(owned()))?;
                inner.parse::<Ipv6Addr>().map_err(|_| HubAddressError::BadIpv6(owned()))?;
                inner
            }
            None if host.contains(':') => return Err(HubAddressError::UnbracketedIpv6(owned())),
            None => host,
        };
        if host.is_empty() {
            return Err(HubAddressError::EmptyHost(owned()));
        }
        Ok(HubAddress { host: host.to_string(), port })
    }
}

impl fmt::Display for HubAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A non-empty list without repeats (a repeat would only get a double share of the tries).
pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<HubAddress>, HubAddressError> {
    if items.is_empty() {
        return Err(HubAddressError::EmptyList);
    }
    let mut out: Vec<HubAddress> = Vec::with_capacity(items.len());
    for item in items {
        let address = HubAddress::parse(item.as_ref())?;
        if out.contains(&address) {
            return Err(HubAddressError::Repeated(address.to_string()));
        }
        out.push(address);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ipv4_and_bracketed_ipv6_parse_and_print_back() {
        for text in ["hub.example:7443", "127.0.0.1:1", "[::1]:7443", "[fe80::1]:65535"] {
            assert_eq!(HubAddress::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(HubAddress::parse("[::1]:7443").unwrap().host, "::1", "the TLS name has no brackets");
    }

    #[test]
    fn malformed_addresses_say_why() {
        use HubAddressError::*;
        let e = |t: &str| HubAddress::parse(t).unwrap_err();
        assert!(matches!(e("hub.example"), NoPort(_)));
        assert!(matches!(e("hub:0"), BadPort(_)));
        assert!(matches!(e("hub:70000"), BadPort(_)));
        assert!(matches!(e("hub:"), BadPort(_)));
        assert!(matches!(e(":7443"), EmptyHost(_)));
        assert!(matches!(e("::1:7443"), UnbracketedIpv6(_)));
        assert!(matches!(e("[::1:7443"), BadIpv6(_)));
        assert!(matches!(e("[hub]:7443"), BadIpv6(_)));
    }

    #[test]
    fn a_list_is_non_empty_and_has_no_repeats() {
        assert_eq!(parse_list::<&str>(&[]), Err(HubAddressError::EmptyList));
        assert_eq!(parse_list(&["a:1", "a:1"]), Err(HubAddressError::Repeated("a:1".into())));
        assert_eq!(parse_list(&["a:1", "b"]), Err(HubAddressError::NoPort("b".into())));
        assert_eq!(parse_list(&["a:1", "b:2"]).unwrap().len(), 2);
    }
}
