//! CORS, answered by the gate: an explicit list of origins (never `*`), preflights answered
//! without reaching Node-RED, and the upstream's own CORS headers (Node-RED 4 sends `*` on
//! every admin response) removed.

use http::header::{self, HeaderMap, HeaderValue};

const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, PATCH";
const ALLOWED_HEADERS: &str = "authorization, content-type, node-red-api-version, node-red-deployment-type";

#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    pub fn new(origins: Vec<String>) -> Cors {
        Cors { origins }
    }

    /// The request's Origin if it is on the list.
    pub fn allowed<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        self.allows(headers.get(header::ORIGIN)?).then(|| &headers[header::ORIGIN])
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        !self.origins.is_empty()
            && origin.to_str().is_ok_and(|o| self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
    }

    /// Whether a request is a CORS preflight.
    pub fn is_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
        method == http::Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Headers for a successful preflight from `origin`.
    pub fn preflight_headers(origin: &HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        h
    }

    /// Replaces whatever CORS headers the upstream sent with ours, for a request from `origin`.
    pub fn apply(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        let foreign = |k: &http::header::HeaderName| k.as_str().starts_with("access-control-");
        if response.keys().any(foreign) {
            let names: Vec<_> = response.keys().filter(|k| foreign(k)).cloned().collect();
            for name in names {
                response.remove(name);
            }
        }
        if let Some(origin) = origin.filter(|o| self.allows(o)) {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            response.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            response.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }

    /// Whether a browser on another site sent this: a foreign Origin (not on the list), or
    /// `Sec-Fetch-Site` saying so.
    pub fn is_cross_site(&self, headers: &HeaderMap, scheme: &str) -> bool {
        if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
            && matches!(site, "cross-site" | "same-site")
            && self.allowed(headers).is_none()
        {
            return true;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return false;
        };
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return true;
        };
        let own = format!("{scheme}://{host}");
        let same = origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&own));
        !same && self.allowed(headers).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn upstream_wildcard_is_removed_and_only_listed_origins_are_echoed() {
        let cors = Cors::new(vec!["https://hmi.example".into()]);
        let mut resp = headers(&[("access-control-allow-origin", "*"), ("content-type", "x")]);
        cors.apply(Some(&HeaderValue::from_static("https://evil.example")), &mut resp);
        assert!(resp.get("access-control-allow-origin").is_none());
        cors.apply(Some(&HeaderValue::from_static("https://HMI.example")), &mut resp);
        assert_eq!(resp["access-control-allow-origin"], "https://HMI.example");
    }

    #[test]
    fn cross_site_detection() {
        let cors = Cors::new(vec!["https://hmi.example".into()]);
        assert!(
            !cors.is_cross_site(&headers(&[("host", "gw:1880")]), "http"),
            "no Origin: not a browser's cross-site request"
        );
        assert!(!cors.is_cross_site(&headers(&[("host", "gw:1880"), ("origin", "http://gw:1880")]), "http"));
        assert!(cors.is_cross_site(&headers(&[("host", "gw:1880"), ("origin", "http://evil.example")]), "http"));
        assert!(cors.is_cross_site(&headers(&[("host", "gw:1880"), ("origin", "null")]), "http"));
        assert!(
            cors.is_cross_site(&headers(&[("host", "gw:1880"), ("origin", "https://gw:1880")]), "http"),
            "scheme counts"
        );
        assert!(
            !cors.is_cross_site(&headers(&[("host", "gw:1880"), ("origin", "https://hmi.example")]), "http"),
            "listed origin"
        );
        assert!(cors.is_cross_site(&headers(&[("host", "gw:1880"), ("sec-fetch-site", "cross-site")]), "http"));
    }

    #[test]
    fn preflights_are_recognised() {
        assert!(Cors::is_preflight(
            &http::Method::OPTIONS,
            &headers(&[("origin", "x"), ("access-control-request-method", "POST")])
        ));
        assert!(!Cors::is_preflight(&http::Method::OPTIONS, &headers(&[("origin", "x")])));
    }
}
