//! The console's checks on a posted form, pure: it must come from the hub's own origin (the
//! browser's `Origin`, or `Sec-Fetch-Site` when a browser sends no `Origin`) and carry the
//! session's CSRF token. Either alone would do against today's browsers; both together also
//! hold when one of them is missing or wrong.

use crate::caller::Caller;
use http::{HeaderMap, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRefusal {
    /// `Origin` names another site (or `null`, as sandboxed frames and some redirects send).
    CrossOrigin,
    /// No `Origin`, and `Sec-Fetch-Site` says another site.
    CrossSite,
    /// No `Host` to compare with.
    NoHost,
}

impl OriginRefusal {
    pub fn text(self) -> &'static str {
        match self {
            OriginRefusal::CrossOrigin | OriginRefusal::CrossSite => {
                "This form was sent from another site; the hub only takes forms from its own pages."
            }
            OriginRefusal::NoHost => "The request named no host.",
        }
    }
}

/// Whether a form post comes from the hub's own pages.
pub fn check_form_origin(headers: &HeaderMap, https: bool) -> Result<(), OriginRefusal> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).ok_or(OriginRefusal::NoHost)?;
    if let Some(origin) = headers.get(header::ORIGIN) {
        let scheme = if https { "https" } else { "http" };
        let expected = format!("{scheme}://{host}");
        return if origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&expected)) {
            Ok(())
        } else {
            Err(OriginRefusal::CrossOrigin)
        };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None | Some("same-origin") | Some("none") => Ok(()),
        Some(_) => Err(OriginRefusal::CrossSite),
    }
}

/// Whether `given` is the session's CSRF token (a token caller has none: browsers do not
/// send bearer tokens with forms, so a form with one is not a console's).
pub fn csrf_ok(caller: &Caller, given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match (caller.csrf(), given) {
        (Some(expected), Some(given)) => {
            !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_hubs_own_origin_may_post() {
        let own = headers(&[("host", "hub:8443"), ("origin", "https://hub:8443")]);
        assert_eq!(check_form_origin(&own, true), Ok(()));
        // The same host over the other scheme is another origin.
        assert_eq!(check_form_origin(&own, false), Err(OriginRefusal::CrossOrigin));
        for evil in ["https://evil.example", "null", "https://hub:8443.evil.example", "https://hub"] {
            let h = headers(&[("host", "hub:8443"), ("origin", evil)]);
            assert_eq!(check_form_origin(&h, true), Err(OriginRefusal::CrossOrigin), "{evil}");
        }
    }

    #[test]
    fn without_an_origin_the_fetch_metadata_decides() {
        let plain = headers(&[("host", "hub")]);
        assert_eq!(check_form_origin(&plain, false), Ok(()));
        let same = headers(&[("host", "hub"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(check_form_origin(&same, false), Ok(()));
        for site in ["cross-site", "same-site"] {
            let h = headers(&[("host", "hub"), ("sec-fetch-site", site)]);
            assert_eq!(check_form_origin(&h, false), Err(OriginRefusal::CrossSite), "{site}");
        }
        assert_eq!(check_form_origin(&HeaderMap::new(), false), Err(OriginRefusal::NoHost));
    }
}
