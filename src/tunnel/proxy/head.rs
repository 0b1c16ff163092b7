//! The bytes of a `CONNECT` exchange: the request the tunnel sends, and what the proxy's
//! response head means. Pure; `super::connect` does the I/O.

use base64::Engine;

/// A response head larger than this is not a proxy answering `CONNECT`.
pub const MAX_HEAD: usize = 16 * 1024;

/// `CONNECT host:port HTTP/1.1` with `Host:` and, when `basic` (`user:password`) is given,
/// `Proxy-Authorization: Basic …`. The result holds the password: never log it.
pub fn request(target: &str, basic: Option<&str>) -> Vec<u8> {
    let mut text = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(basic) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(basic.as_bytes());
        text.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// What a proxy answered, once its head is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The reason phrase, cut to printable ASCII and 64 characters (it goes into status text).
    pub reason: String,
    /// The schemes of the `Proxy-Authenticate` headers (`Basic`, `NTLM`, …), for a 407.
    /// (and of `WWW-Authenticate`, for a 401).
    pub auth_schemes: Vec<String>,
}

/// The outcome of parsing the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// The head ends after this many bytes; any bytes after it already belong to the tunnel.
    Complete { answer: Answer, head_len: usize },
    /// Not an HTTP/1.x response head.
    Invalid(String),
}

pub fn parse(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            Parsed::Invalid(format!("its response head is larger than {MAX_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(head_len)) => {
            let auth_schemes = response
                .headers
                .iter()
                // WWW-Authenticate too: tinyproxy's 401 carries its challenge there.
                .filter(|h| {
                    h.name.eq_ignore_ascii_case("proxy-authenticate") || h.name.eq_ignore_ascii_case("www-authenticate")
                })
                .filter_map(|h| std::str::from_utf8(h.value).ok())
                .filter_map(|v| v.split_whitespace().next())
                .map(|scheme| printable(scheme.trim_end_matches(','), 20))
                .collect();
            let answer = Answer {
                status: response.code.unwrap_or(0),
                reason: printable(response.reason.unwrap_or(""), 64),
                auth_schemes,
            };
            Parsed::Complete { answer, head_len }
        }
        Err(e) => Parsed::Invalid(format!("its answer is not an HTTP response ({e})")),
    }
}

fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(max).collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_target_twice_and_carries_basic_credentials_when_given() {
        assert_eq!(
            request("hub.example:443", None),
            b"CONNECT hub.example:443 HTTP/1.1\r\nHost: hub.example:443\r\n\r\n"
        );
        // RFC 7617's own example: Aladdin / open sesame.
        let with = String::from_utf8(request("[fd00::1]:443", Some("Aladdin:open sesame"))).unwrap();
        assert_eq!(
            with,
            "CONNECT [fd00::1]:443 HTTP/1.1\r\nHost: [fd00::1]:443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
    }

    #[test]
    fn a_complete_head_gives_status_reason_and_its_length() {
        let bytes = b"HTTP/1.1 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n\x16\x03\x01";
        let Parsed::Complete { answer, head_len } = parse(bytes) else { panic!("{:?}", parse(bytes)) };
        assert_eq!((answer.status, answer.reason.as_str()), (200, "Connection established"));
        assert_eq!(head_len, bytes.len() - 3, "bytes after the head are left to the tunnel");
    }

    #[test]
    fn partial_heads_wait_and_oversized_or_foreign_ones_are_invalid() {
        assert_eq!(parse(b""), Parsed::Partial);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nVia: x\r\n"), Parsed::Partial);
        // One endless header: the size bound, not the header count, ends it.
        let mut big = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert!(matches!(parse(&big), Parsed::Invalid(m) if m.contains("larger")));
        assert!(matches!(parse(b"SSH-2.0-OpenSSH_9.2\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"\x16\x03\x01\x00\xa5"), Parsed::Invalid(_)));
    }

    #[test]
    fn a_407_lists_the_schemes_the_proxy_asks_for() {
        let bytes = b"HTTP/1.0 407 Proxy Authentication Required\r\n\
            Proxy-Authenticate: NTLM\r\nproxy-authenticate: Basic realm=\"plant\"\r\nContent-Length: 0\r\n\r\n";
        let Parsed::Complete { answer, .. } = parse(bytes) else { panic!() };
        assert_eq!(answer.status, 407);
        assert_eq!(answer.auth_schemes, vec!["NTLM".to_string(), "Basic".to_string()]);
    }

    #[test]
    fn the_reason_phrase_is_cut_to_printable_text() {
        let mut bytes = b"HTTP/1.1 403 Forbidden by\tpolicy ".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 200));
        bytes.extend_from_slice(b"\r\n\r\n");
        let Parsed::Complete { answer, .. } = parse(&bytes) else { panic!("{:?}", parse(&bytes)) };
        assert!(answer.reason.starts_with("Forbidden bypolicy xxx"), "{}", answer.reason);
        assert_eq!(answer.reason.len(), 64);
    }
}
