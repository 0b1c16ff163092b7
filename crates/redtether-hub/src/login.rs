//! A browser's way into the remote editor: a browser cannot add `Authorization: Bearer` to the
//! editor's page loads, so `GET /login` shows a form for the operator token and `POST /login`
//! turns a valid token into a cookie. The cookie is `HttpOnly`, `SameSite=Strict` (a browser
//! does not send it with requests another site starts, so no cross-site request forgery or
//! websocket hijacking through it), `Path=/devices` (only the editor routes see it; the JSON API
//! keeps requiring the header), `Secure` when the API is HTTPS, and lasts 12 hours. The hub
//! never forwards it to a device.

use crate::api::{Api, ApiBody, Checked, boxed, error, rate_limited};
use crate::store::OperatorRecord;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

pub const COOKIE: &str = "redtether_operator";
const MAX_FORM: usize = 4096;
const COOKIE_SECS: u64 = 12 * 3600;

const FORM: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>redtether hub</title></head>
<body><form method="post" action="/login">
<p><label>Operator token <input name="token" type="password" autocomplete="off" autofocus></label></p>
<input type="hidden" name="next" value="NEXT">
<p><button>Open the editor</button></p>
</form></body></html>
"#;

/// Where to go after logging in: only the hub's own editor routes (no open redirect).
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/devices/")
        && !next.contains("//")
        && !next.contains('\\')
        && next.chars().all(|c| c.is_ascii_graphic());
    if ok { next } else { "/" }
}

/// The operator token in a `Cookie` header, if any.
pub fn token_from_cookie(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn html(status: StatusCode, body: String) -> Response<ApiBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert("content-security-policy", HeaderValue::from_static("default-src 'none'; form-action 'self'"));
    boxed(r)
}

fn form(next: &str) -> String {
    // `next` passed `safe_next` (printable ASCII); escaped for the attribute all the same.
    FORM.replace("NEXT", &next.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;"))
}

impl Api {
    pub(super) async fn login(&self, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<ApiBody> {
        match *req.method() {
            http::Method::GET => {
                let next = req.uri().query().and_then(|q| {
                    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "next").map(|(_, v)| v.into_owned())
                });
                html(StatusCode::OK, form(safe_next(next.as_deref().unwrap_or("/"))))
            }
            http::Method::POST => {
                let Ok(body) = Limited::new(req.into_body(), MAX_FORM).collect().await else {
                    return boxed(error(StatusCode::PAYLOAD_TOO_LARGE, "form_too_large"));
                };
                let fields: Vec<(String, String)> = form_urlencoded::parse(&body.to_bytes()).into_owned().collect();
                let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
                let next = safe_next(field("next").unwrap_or("/")).to_string();
                let operator = match field("token").map(|t| self.check_token(t, peer)) {
                    Some(Checked::Operator(operator)) => operator,
                    Some(Checked::Limited(retry)) => return boxed(rate_limited(retry)),
                    Some(Checked::Refused) | None => {
                        tracing::warn!(%peer, "operator login refused");
                        return html(StatusCode::UNAUTHORIZED, form(&next));
                    }
                };
                self.logged_in(&operator, field("token").unwrap_or_default(), &next)
            }
            _ => boxed(error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")),
        }
    }

    fn logged_in(&self, operator: &OperatorRecord, token: &str, next: &str) -> Response<ApiBody> {
        tracing::info!(operator = %operator.name, "operator logged in for the editor");
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        let cookie =
            format!("{COOKIE}={token}; Path=/devices; Max-Age={COOKIE_SECS}; HttpOnly; SameSite=Strict{secure}");
        let mut r = boxed(error(StatusCode::SEE_OTHER, "logged_in"));
        if let (Ok(c), Ok(l)) = (HeaderValue::from_str(&cookie), HeaderValue::from_str(next)) {
            r.headers_mut().insert(header::SET_COOKIE, c);
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_editor_routes_are_followed_after_login() {
        assert_eq!(safe_next("/devices/pump-1/editor/"), "/devices/pump-1/editor/");
        for evil in [
            "https://evil.example/",
            "//evil.example/devices/",
            "/devices/\\evil",
            "/api/devices",
            "/devices/x\r\nSet-Cookie: a=b",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(evil), "/", "{evil:?}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; redtether_operator=rto_x; b=2"));
        assert_eq!(token_from_cookie(&h), Some("rto_x"));
        let mut h = http::HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("redtether_operator_other=rto_y"));
        assert_eq!(token_from_cookie(&h), None, "a cookie whose name only starts the same");
    }
}
