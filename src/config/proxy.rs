//! `[tunnel] proxy`: the HTTP proxy URL the tunnel may dial through, parsed and checked once,
//! and printed only with its password hidden.
//!
//! Only `http://` proxies are taken: the tunnel asks the proxy for `CONNECT host:port` and runs
//! its own TLS inside, so the proxy sees nothing but that TLS. A URL without a port means port
//! 80, as for any `http://` URL (curl would assume 1080; write the port). User and password are
//! percent-decoded (`%40` for an `@` in a password) and sent as Basic proxy authentication.

use std::fmt;
use std::net::Ipv6Addr;

/// What `[tunnel] proxy` says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxyChoice {
    /// The key is absent: `HTTPS_PROXY` / `https_proxy` and `NO_PROXY` / `no_proxy` decide.
    #[default]
    Environment,
    /// `proxy = ""`: connect directly, even if the environment names a proxy.
    Direct,
    /// `proxy = "http://…"`: always this proxy (the environment is not read).
    Url(ProxyUrl),
}

/// An `http://[user[:password]@]host[:port][/]` proxy. `Debug` and `Display` never show the
/// password (it is replaced by `***`), so the value can go into logs and status messages.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Lower-cased; an IPv6 address without brackets.
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: String,
}

/// Why a text is not a proxy URL. The message never repeats the user information of the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    /// A scheme other than `http`.
    #[error("{0}:// proxies are not supported: the tunnel speaks HTTP CONNECT, so give an http:// proxy")]
    Scheme(String),
    /// No `scheme://` at all (only accepted from the environment, as curl and Go do).
    #[error("must start with http://")]
    NoScheme,
    #[error("names no host")]
    NoHost,
    #[error("{0:?} is not a host name or IP address")]
    BadHost(String),
    #[error("{0:?} is not a port (1-65535)")]
    BadPort(String),
    /// A path, query or fragment: a proxy URL has none, so it is most likely a typo.
    #[error("must not have a path, query or fragment after host:port")]
    Path,
    /// A bad `%` escape or one that does not decode to UTF-8; the text itself is not repeated.
    #[error("its user or password is not validly percent-encoded")]
    BadUserinfo,
}

impl ProxyUrl {
    /// Parses a URL as `[tunnel] proxy` takes it: `http://` is required.
    pub fn parse(text: &str) -> Result<ProxyUrl, ProxyUrlError> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(ProxyUrlError::NoScheme);
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(ProxyUrlError::Scheme(scheme.to_ascii_lowercase()));
        }
        let (authority, tail) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !tail.is_empty() && tail != "/" {
            return Err(ProxyUrlError::Path);
        }
        // The last `@` ends the user information, so an unescaped `@` in a password still works.
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                Some(Credentials { user: percent_decode(user)?, password: percent_decode(password)? })
            }
        };
        let (host, port) = split_host_port(hostport)?;
        Ok(ProxyUrl { host, port, credentials })
    }

    /// Parses a URL as the environment gives it: like [`ProxyUrl::parse`], except that a URL
    /// without a scheme is taken as `http://` (`HTTPS_PROXY=proxy:3128`, as curl and Go do).
    pub fn parse_env(text: &str) -> Result<ProxyUrl, ProxyUrlError> {
        if text.contains("://") { ProxyUrl::parse(text) } else { ProxyUrl::parse(&format!("http://{}", text.trim())) }
    }

    /// The host to dial (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` (`[v6]:port`), the proxy's address as a `CONNECT` line or `Host:` names it.
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    /// The user, if the URL has user information.
    pub fn user(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.user.as_str())
    }

    /// `user:password` as Basic authentication encodes it; `None` without user information.
    /// The only way the password leaves this type.
    pub fn basic_credentials(&self) -> Option<String> {
        self.credentials.as_ref().map(|c| format!("{}:{}", c.user, c.password))
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub fn authority(host: &str, port: u16) -> String {
    if host.parse::<Ipv6Addr>().is_ok() { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http://")?;
        if let Some(c) = &self.credentials {
            // The user name stays: it tells an operator which account a 407 refused.
            write!(f, "{}:***@", c.user)?;
        }
        f.write_str(&self.authority())
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), ProxyUrlError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| ProxyUrlError::BadHost(hostport.into()))?;
        v6.parse::<Ipv6Addr>().map_err(|_| ProxyUrlError::BadHost(v6.into()))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| ProxyUrlError::BadHost(hostport.into()))?),
        };
        (v6.to_string(), port)
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if host.is_empty() {
            return Err(ProxyUrlError::NoHost);
        }
        let valid = host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            && !host.starts_with(['-', '.']);
        if !valid {
            return Err(ProxyUrlError::BadHost(host.into()));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        // `http://proxy:` is the default port, as for any URL.
        None | Some("") => 80,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| ProxyUrlError::BadPort(p.into()))?,
    };
    Ok((host, port))
}

fn percent_decode(text: &str) -> Result<String, ProxyUrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(ProxyUrlError::BadUserinfo)?;
            let hex = std::str::from_utf8(hex).map_err(|_| ProxyUrlError::BadUserinfo)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ProxyUrlError::BadUserinfo)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ProxyUrlError::BadUserinfo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_the_default_port_80() {
        let p = ProxyUrl::parse("http://Proxy.Plant.example:3128").unwrap();
        assert_eq!((p.host(), p.port(), p.user()), ("proxy.plant.example", 3128, None));
        assert_eq!(p.basic_credentials(), None);
        assert_eq!(ProxyUrl::parse("http://proxy").unwrap().port(), 80);
        assert_eq!(ProxyUrl::parse("HTTP://proxy:/").unwrap().port(), 80);
        assert_eq!(ProxyUrl::parse("http://10.0.0.1:8080/").unwrap().authority(), "10.0.0.1:8080");
        let v6 = ProxyUrl::parse("http://[fd00::1]:3128").unwrap();
        assert_eq!((v6.host(), v6.authority()), ("fd00::1", "[fd00::1]:3128".to_string()));
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_printed() {
        let p = ProxyUrl::parse("http://plant%20user:p%40ss:w@rd@proxy:3128").unwrap();
        assert_eq!(p.user(), Some("plant user"));
        assert_eq!(p.basic_credentials().as_deref(), Some("plant user:p@ss:w@rd"));
        for shown in [p.to_string(), format!("{p:?}"), format!("{:?}", ProxyChoice::Url(p.clone()))] {
            assert!(!shown.contains("p@ss") && !shown.contains("rd@") && !shown.contains("%40"), "{shown}");
            assert!(shown.contains("http://plant user:***@proxy:3128"), "{shown}");
        }
        // A user without a password is sent with an empty one, as curl does.
        assert_eq!(ProxyUrl::parse("http://alice@proxy:1").unwrap().basic_credentials().as_deref(), Some("alice:"));
    }

    #[test]
    fn other_schemes_and_malformed_urls_are_refused_plainly() {
        let e = ProxyUrl::parse("https://proxy:3128").unwrap_err();
        assert_eq!(e, ProxyUrlError::Scheme("https".into()));
        assert!(e.to_string().contains("https:// proxies are not supported"), "{e}");
        assert_eq!(ProxyUrl::parse("socks5://proxy:1080").unwrap_err(), ProxyUrlError::Scheme("socks5".into()));
        assert_eq!(ProxyUrl::parse("proxy:3128").unwrap_err(), ProxyUrlError::NoScheme);
        assert_eq!(ProxyUrl::parse("http://").unwrap_err(), ProxyUrlError::NoHost);
        assert_eq!(ProxyUrl::parse("http://user:pw@:3128").unwrap_err(), ProxyUrlError::NoHost);
        assert_eq!(ProxyUrl::parse("http://proxy:0").unwrap_err(), ProxyUrlError::BadPort("0".into()));
        assert_eq!(ProxyUrl::parse("http://proxy:99999").unwrap_err(), ProxyUrlError::BadPort("99999".into()));
        assert_eq!(ProxyUrl::parse("http://proxy:3128/path").unwrap_err(), ProxyUrlError::Path);
        assert_eq!(ProxyUrl::parse("http://pro xy:3128").unwrap_err(), ProxyUrlError::BadHost("pro xy".into()));
        assert_eq!(ProxyUrl::parse("http://[zz::1]:3128").unwrap_err(), ProxyUrlError::BadHost("zz::1".into()));
        let bad_escape = ProxyUrl::parse("http://u:secret%zz@proxy:3128").unwrap_err();
        assert_eq!(bad_escape, ProxyUrlError::BadUserinfo);
        assert!(!bad_escape.to_string().contains("secret"));
    }

    #[test]
    fn the_environment_may_leave_out_the_scheme() {
        assert_eq!(ProxyUrl::parse_env("proxy:3128").unwrap(), ProxyUrl::parse("http://proxy:3128").unwrap());
        assert_eq!(ProxyUrl::parse_env("socks5h://p:1").unwrap_err(), ProxyUrlError::Scheme("socks5h".into()));
    }
}
