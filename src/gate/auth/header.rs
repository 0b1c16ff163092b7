//! Reading the `Authorization` header, strictly: one header, the scheme `Basic` or `Bearer` in
//! any case (RFC 9110 §11.1), one or more spaces (§11.4: `auth-scheme 1*SP token68`), and a
//! well-formed payload (RFC 7617, RFC 6750). Anything else is malformed and is answered exactly
//! like a wrong password.

use base64::Engine;
use http::HeaderMap;
use http::header::AUTHORIZATION;

/// What a request presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    Nothing,
    Basic { user: String, password: String },
    Bearer(String),
    Malformed,
}

// Credentials never appear in logs.
impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Nothing => f.write_str("Nothing"),
            Presented::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Presented::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Presented::Malformed => f.write_str("Malformed"),
        }
    }
}

pub fn presented(headers: &HeaderMap) -> Presented {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Presented::Nothing;
    };
    if values.next().is_some() {
        return Presented::Malformed;
    }
    let Ok(text) = value.to_str() else {
        return Presented::Malformed;
    };
    let Some((scheme, credentials)) = text.split_once(' ') else {
        return Presented::Malformed;
    };
    let credentials = credentials.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("basic") {
        return basic(credentials).unwrap_or(Presented::Malformed);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = credentials;
        let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
        let body = token.trim_end_matches('=');
        if !body.is_empty() && body.bytes().all(b64token) && token.len() <= 512 {
            return Presented::Bearer(token.to_string());
        }
    }
    Presented::Malformed
}

fn basic(encoded: &str) -> Option<Presented> {
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() || user.chars().any(char::is_control) || password.contains(['\0', '\r', '\n']) {
        return None;
    }
    Some(Presented::Basic { user: user.to_string(), password: password.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(values: &[&[u8]]) -> Presented {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        presented(&h)
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn reads_basic_and_bearer() {
        assert_eq!(
            with(&[format!("Basic {}", b64("ann:pa:ss")).as_bytes()]),
            Presented::Basic { user: "ann".into(), password: "pa:ss".into() }
        );
        assert_eq!(with(&[b"Bearer rtt_abc-DEF_123"]), Presented::Bearer("rtt_abc-DEF_123".into()));
        assert_eq!(with(&[]), Presented::Nothing);
    }

    #[test]
    fn everything_slightly_off_is_malformed() {
        let good = b64("ann:pw");
        let cases: Vec<Vec<u8>> = vec![
            format!("Basic {good} ").into(),
            format!(" Basic {good}").into(),
            format!("Basic{good}").into(),
            format!("Basi {good}").into(),
            format!("Basic\t {good}").into(),
            format!("Basic\t{good}").into(),
            b"Basic".to_vec(),
            b"Basic !!!!".to_vec(),
            format!("Basic {}", b64("no-colon")).into(),
            format!("Basic {}", b64(":empty-user")).into(),
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(b"ann:\xff\xfe")).into(),
            b"Bearer ".to_vec(),
            b"Bearer    ".to_vec(),
            b"Bearerabc".to_vec(),
            b"Bearer a b".to_vec(),
            b"Bearer ab\"c".to_vec(),
            b"Digest username=x".to_vec(),
            b"Basic \xc3\xa9".to_vec(),
        ];
        for case in cases {
            assert_eq!(with(&[&case]), Presented::Malformed, "{:?}", String::from_utf8_lossy(&case));
        }
        assert_eq!(
            with(&[format!("Basic {good}").as_bytes(), format!("Basic {good}").as_bytes()]),
            Presented::Malformed,
            "two headers"
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_spaces_may_repeat() {
        let ann = Presented::Basic { user: "ann".into(), password: "pw".into() };
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            for spaces in [" ", "  ", "    "] {
                let value = format!("{scheme}{spaces}{}", b64("ann:pw"));
                assert_eq!(with(&[value.as_bytes()]), ann, "{value:?}");
            }
        }
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let value = format!("{scheme}  rtt_abc");
            assert_eq!(with(&[value.as_bytes()]), Presented::Bearer("rtt_abc".into()), "{value:?}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let p = Presented::Basic { user: "ann".into(), password: "hunter2".into() };
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!format!("{:?}", Presented::Bearer("rtt_secret".into())).contains("secret"));
    }
}
