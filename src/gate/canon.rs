//! Request-target canonicalisation: one parse, one canonical form, and a refusal for anything
//! that could mean two different things to the gate and to Node-RED.
//!
//! The canonical path has unreserved percent-escapes decoded, other escapes upper-cased, dot
//! segments resolved and repeated slashes collapsed; it keeps its case and a trailing slash.
//! The classification key is that path lower-cased without a trailing slash, because Node-RED's
//! (Express's) router matches case-insensitively and ignores one trailing slash.

/// The one form of a request target that is decided on and forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// What is forwarded: `/device-editor/flows`.
    pub path: String,
    /// The query, validated but not rewritten, without `?`.
    pub query: Option<String>,
    /// What is classified: lower case, no trailing slash (`/` stays `/`).
    pub key: String,
}

impl Canonical {
    /// Path and query as they go upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Why a target was refused; every one is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// HTTP/1.1 without a Host header (RFC 9112 §3.2).
    #[error("the request has no Host header")]
    MissingHost,
    /// More than one Host field line (RFC 9112 §3.2).
    #[error("the request has more than one Host header")]
    DuplicateHost,
    /// A Host that is not `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2).
    #[error("the Host header is not host[:port]")]
    InvalidHost,
    /// Not `/...`: asterisk-form, authority-form, or a relative path.
    #[error("the request target must be an absolute path")]
    NotOriginForm,
    /// Absolute-form whose authority is not the Host header.
    #[error("absolute-form target does not match the Host header")]
    AuthorityMismatch,
    /// `%2F`: one segment or two?
    #[error("encoded slash in path")]
    EncodedSlash,
    /// `%5C`: a separator on some servers.
    #[error("encoded backslash in path")]
    EncodedBackslash,
    /// `%00`: ends a string on some servers.
    #[error("encoded NUL")]
    EncodedNul,
    /// `%25`: decoded twice, it is another escape.
    #[error("encoded percent sign in path")]
    EncodedPercent,
    /// `%2E`: a dot segment after one decoding more.
    #[error("encoded dot in path")]
    EncodedDot,
    /// An encoded control character.
    #[error("encoded control character")]
    EncodedControl,
    /// A raw backslash: a separator on some servers.
    #[error("backslash in path")]
    Backslash,
    /// A raw control character, space, or non-ASCII byte.
    #[error("control, space or non-ASCII character in target")]
    ControlOrNonAscii,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-escape")]
    BadEscape,
    /// `..` above the root.
    #[error("dot segments above the root")]
    AboveRoot,
    /// `;` path parameters: some servers cut the path there, Express does not.
    #[error("semicolon in path")]
    Semicolon,
    /// A `#` fragment: never part of a request target.
    #[error("fragment in target")]
    Fragment,
}

/// The request's one Host (RFC 9112 §3.2): an HTTP/1.1 request (`required`) has exactly one
/// Host field line, an HTTP/1.0 request at most one, and its value is `uri-host [ ":" port ]`.
/// `None`: an HTTP/1.0 request without one. Checked before anything else is decided, so a
/// request that names its host twice is never routed by one copy and read by Node-RED by the
/// other.
pub fn host<'a>(lines: &[&'a [u8]], required: bool) -> Result<Option<&'a str>, CanonError> {
    match lines {
        [] if required => Err(CanonError::MissingHost),
        [] => Ok(None),
        [value] => {
            let value = std::str::from_utf8(value).map_err(|_| CanonError::InvalidHost)?;
            if valid_host(value) { Ok(Some(value)) } else { Err(CanonError::InvalidHost) }
        }
        _ => Err(CanonError::DuplicateHost),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2-§3.2.3): an IPv6 literal in brackets, or a
/// reg-name / IPv4 address (unreserved, sub-delims, escapes; may be empty), then digits.
fn valid_host(value: &str) -> bool {
    let (host_ok, rest) = match value.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((ip, rest)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), rest),
            None => return false,
        },
        None => {
            let (name, rest) = value.find(':').map_or((value, ""), |i| value.split_at(i));
            (valid_reg_name(name), rest)
        }
    };
    let port_ok = match rest.strip_prefix(':') {
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    };
    host_ok && port_ok
}

fn valid_reg_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if escape_at(bytes, i).is_ok() => i += 3,
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// The parts of a request the canonicaliser needs.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `uri.path()` as received.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `scheme://authority` of an absolute-form target, if it was one.
    pub authority: Option<&'a str>,
    pub host_header: Option<&'a str>,
}

pub fn canonicalize(target: Target<'_>) -> Result<Canonical, CanonError> {
    if let Some(authority) = target.authority {
        let matches = target.host_header.is_some_and(|host| host.trim().eq_ignore_ascii_case(authority));
        if !matches {
            return Err(CanonError::AuthorityMismatch);
        }
    }
    let path = canonical_path(target.path)?;
    let query = match target.query {
        Some(q) => {
            check_query(q)?;
            Some(q.to_string())
        }
        None => None,
    };
    let key = classification_key(&path);
    Ok(Canonical { path, query, key })
}

fn canonical_path(raw: &str) -> Result<String, CanonError> {
    if !raw.starts_with('/') {
        return Err(CanonError::NotOriginForm);
    }
    let decoded = decode_path(raw)?;
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(CanonError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
}

/// Decodes escapes of unreserved characters, upper-cases the rest, refuses the ambiguous ones.
fn decode_path(raw: &str) -> Result<String, CanonError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let value = escape_at(bytes, i)?;
                match value {
                    b'/' => return Err(CanonError::EncodedSlash),
                    b'\\' => return Err(CanonError::EncodedBackslash),
                    0 => return Err(CanonError::EncodedNul),
                    b'%' => return Err(CanonError::EncodedPercent),
                    b'.' => return Err(CanonError::EncodedDot),
                    v if v < 0x20 || v == 0x7f => return Err(CanonError::EncodedControl),
                    v if v.is_ascii_alphanumeric() || v == b'-' || v == b'_' || v == b'~' => out.push(v as char),
                    v => {
                        out.push('%');
                        out.push_str(&format!("{v:02X}"));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(CanonError::Backslash),
            b';' => return Err(CanonError::Semicolon),
            b'#' => return Err(CanonError::Fragment),
            b if b <= 0x20 || b >= 0x7f => return Err(CanonError::ControlOrNonAscii),
            b => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn escape_at(bytes: &[u8], i: usize) -> Result<u8, CanonError> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
        (Some(h), Some(l)) => Ok(h << 4 | l),
        _ => Err(CanonError::BadEscape),
    }
}

/// The query is passed on as sent, so it only has to be unambiguous.
fn check_query(q: &str) -> Result<(), CanonError> {
    let bytes = q.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let v = escape_at(bytes, i)?;
                if v == 0 {
                    return Err(CanonError::EncodedNul);
                }
                if v < 0x20 || v == 0x7f {
                    return Err(CanonError::EncodedControl);
                }
                i += 3;
            }
            b'#' => return Err(CanonError::Fragment),
            b if b <= 0x20 || b >= 0x7f => return Err(CanonError::ControlOrNonAscii),
            _ => i += 1,
        }
    }
    Ok(())
}

fn classification_key(path: &str) -> String {
    let trimmed = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    trimmed.to_ascii_lowercase()
}

/// Whether a query carries a parameter named `name` (as Express's parser would read it).
pub fn query_has_param(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k.eq_ignore_ascii_case(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(path: &str) -> Result<String, CanonError> {
        canonicalize(Target { path, query: None, authority: None, host_header: None }).map(|c| c.path)
    }

    fn key(path: &str) -> String {
        canonicalize(Target { path, query: None, authority: None, host_header: None }).unwrap().key
    }

    #[test]
    fn resolves_dots_and_slashes() {
        assert_eq!(canon("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(canon("//device-editor///flows").unwrap(), "/device-editor/flows");
        assert_eq!(canon("/a/b/..").unwrap(), "/a/");
        assert_eq!(canon("/a/.").unwrap(), "/a/");
        assert_eq!(canon("/").unwrap(), "/");
        assert_eq!(canon("/vendor/../flows").unwrap(), "/flows");
    }

    #[test]
    fn refuses_climbing_above_root() {
        assert_eq!(canon("/../etc/passwd"), Err(CanonError::AboveRoot));
        assert_eq!(canon("/a/../../b"), Err(CanonError::AboveRoot));
    }

    #[test]
    fn decodes_unreserved_and_normalises_other_escapes() {
        assert_eq!(canon("/device-editor/%66lows").unwrap(), "/device-editor/flows");
        assert_eq!(canon("/a%7eb%2D").unwrap(), "/a~b-");
        assert_eq!(canon("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(canon("/a%20b").unwrap(), "/a%20b");
    }

    #[test]
    fn refuses_ambiguous_escapes() {
        assert_eq!(canon("/device-editor%2fflows"), Err(CanonError::EncodedSlash));
        assert_eq!(canon("/a%5Cb"), Err(CanonError::EncodedBackslash));
        assert_eq!(canon("/a%00"), Err(CanonError::EncodedNul));
        assert_eq!(canon("/a%25"), Err(CanonError::EncodedPercent));
        assert_eq!(canon("/%2e%2e/x"), Err(CanonError::EncodedDot));
        assert_eq!(canon("/a%0d%0aSet-Cookie:x"), Err(CanonError::EncodedControl));
        assert_eq!(canon("/a%zz"), Err(CanonError::BadEscape));
        assert_eq!(canon("/a%4"), Err(CanonError::BadEscape));
    }

    #[test]
    fn refuses_raw_oddities() {
        assert_eq!(canon("/a\\b"), Err(CanonError::Backslash));
        assert_eq!(canon("/flows;x=1"), Err(CanonError::Semicolon));
        assert_eq!(canon("/a#b"), Err(CanonError::Fragment));
        assert_eq!(canon("/a b"), Err(CanonError::ControlOrNonAscii));
        assert_eq!(canon("/a\tb"), Err(CanonError::ControlOrNonAscii));
        assert_eq!(canon("/é"), Err(CanonError::ControlOrNonAscii));
        assert_eq!(canon("*"), Err(CanonError::NotOriginForm));
        assert_eq!(canon("flows"), Err(CanonError::NotOriginForm));
    }

    #[test]
    fn classification_key_is_case_and_trailing_slash_insensitive() {
        assert_eq!(key("/DEVICE-EDITOR/Flows/"), "/device-editor/flows");
        assert_eq!(key("/"), "/");
        assert_eq!(key("//"), "/");
    }

    #[test]
    fn absolute_form_only_for_its_own_host() {
        let t = |authority, host| {
            canonicalize(Target { path: "/flows", query: None, authority: Some(authority), host_header: host })
        };
        assert!(t("gw.local:1880", Some("GW.local:1880")).is_ok());
        assert_eq!(t("evil.example", Some("gw.local:1880")), Err(CanonError::AuthorityMismatch));
        assert_eq!(t("gw.local:1880", None), Err(CanonError::AuthorityMismatch));
    }

    #[test]
    fn exactly_one_valid_host() {
        fn h<'a>(lines: &[&'a str], required: bool) -> Result<Option<&'a str>, CanonError> {
            host(&lines.iter().map(|l| l.as_bytes()).collect::<Vec<_>>(), required)
        }
        assert_eq!(h(&["gw.local:1880"], true), Ok(Some("gw.local:1880")));
        assert_eq!(h(&[], true), Err(CanonError::MissingHost), "HTTP/1.1 needs a Host");
        assert_eq!(h(&[], false), Ok(None), "HTTP/1.0 may leave it out");
        assert_eq!(h(&["gw", "gw"], true), Err(CanonError::DuplicateHost), "even the same twice");
        assert_eq!(h(&["gw", "gw"], false), Err(CanonError::DuplicateHost), "in HTTP/1.0 too");
        for valid in ["", "gw", "GW.local", "10.0.0.1:80", "[::1]:1880", "[fe80::1]", "h:", "a%41b", "x-y_z~1", "a,b"] {
            assert_eq!(h(&[valid], true), Ok(Some(valid)), "{valid:?}");
        }
        for invalid in [
            "gw, gw",
            "gw:1880, gw:1880",
            "user@gw",
            "gw/x",
            "gw x",
            "gw:80x",
            "gw:80:81",
            "[::1",
            "[gw]:80",
            "[::1]x",
            "a%4",
            "gw\\x",
            "é",
        ] {
            assert_eq!(h(&[invalid], true), Err(CanonError::InvalidHost), "{invalid:?}");
        }
        assert_eq!(host(&[b"gw\xff"], true), Err(CanonError::InvalidHost), "not UTF-8");
    }

    #[test]
    fn queries_are_kept_but_checked() {
        let q = |query| canonicalize(Target { path: "/x", query: Some(query), authority: None, host_header: None });
        assert_eq!(q("a=%2F&b=c").unwrap().path_and_query(), "/x?a=%2F&b=c");
        assert_eq!(q("a=%00"), Err(CanonError::EncodedNul));
        assert_eq!(q("a=%0a"), Err(CanonError::EncodedControl));
        assert_eq!(q("a=%g1"), Err(CanonError::BadEscape));
    }

    #[test]
    fn finds_query_params_case_insensitively() {
        assert!(query_has_param(Some("x=1&_METHOD=DELETE"), "_method"));
        assert!(query_has_param(Some("access_token=abc"), "access_token"));
        assert!(!query_has_param(Some("method=1"), "_method"));
        assert!(!query_has_param(None, "_method"));
    }

    fn target_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just("//".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2F".to_string()),
            Just("%41".to_string()),
            Just("%c3%a9".to_string()),
            Just("%7e".to_string()),
            Just("device-editor".to_string()),
            Just("DEVICE-EDITOR".to_string()),
            Just("flows".to_string()),
            Just("\\".to_string()),
            Just(";".to_string()),
            "[a-zA-Z0-9_~-]{1,4}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| format!("/{}", p.concat()))
    }

    proptest! {
        #[test]
        fn canonicalisation_is_idempotent(target in target_strategy()) {
            if let Ok(once) = canon(&target) {
                let twice = canon(&once).expect("a canonical path canonicalises");
                prop_assert_eq!(&once, &twice);
                prop_assert_eq!(key(&once), key(&target));
            }
        }

        #[test]
        fn any_bytes_never_panic(target in "\\PC{0,40}") {
            let _ = canon(&target);
            let _ = canon(&format!("/{target}"));
        }
    }
}
