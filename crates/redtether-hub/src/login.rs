//! The browser's login at `/login`: a form for the name and password, then — for an account
//! with TOTP — a second form for the code (or a recovery code). A successful login sets the
//! session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when the API is HTTPS) and goes back
//! to where the browser wanted to go (the hub's own paths only: no open redirect).
//!
//! The forms carry a CSRF token that must equal the `redtether_login` cookie set with the form
//! (so another site cannot log a browser in as someone else); pages are `no-store` under a CSP
//! that allows nothing but the form posting back here.

use crate::accounts_api::{LoginOutcome, SecondFactor};
use crate::api::{Api, ApiBody, boxed, error};
use crate::caller::cookie;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

const LOGIN_COOKIE: &str = "redtether_login";
const MAX_FORM: usize = 4096;

/// Where to go after logging in: the console's pages and the editor routes, else the root (no
/// open redirect; the API's JSON is no place to land).
pub fn safe_next(next: &str) -> &str {
    let page = ["/devices", "/groups", "/rollouts", "/audit", "/enroll", "/operators", "/account"]
        .iter()
        .any(|p| next.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?'])));
    let ok = page && !next.contains("//") && !next.contains('\\') && next.chars().all(|c| c.is_ascii_graphic());
    if ok { next } else { "/" }
}

/// Escapes text for an HTML attribute or element.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page of the hub's own: `no-store`, a CSP that allows nothing but the console's stylesheet
/// and posting its forms back here (inline SVG is markup, not a resource, so a QR code needs
/// nothing more), no framing.
pub(crate) fn page(status: StatusCode, body: &str, set_cookie: Option<HeaderValue>) -> Response<ApiBody> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>redtether hub</title>\
         <link rel=\"stylesheet\" href=\"{}\"></head>\n<body><main class=\"narrow\">{body}</main></body></html>\n",
        crate::console::stylesheet()
    );
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Some(c) = set_cookie {
        h.insert(header::SET_COOKIE, c);
    }
    boxed(r)
}

fn password_form(csrf: &str, next: &str, message: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/login\">{message}\
         <p><label>Name <input name=\"name\" autocomplete=\"username\" autofocus></label></p>\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label></p>\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p><button>Log in</button></p></form>",
        esc(csrf),
        esc(next)
    )
}

fn code_form(csrf: &str, next: &str, ticket: &str, message: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/login\">{message}\
         <p><label>Code from your authenticator app, or a recovery code \
         <input name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" autofocus></label></p>\
         <input type=\"hidden\" name=\"ticket\" value=\"{}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p><button>Continue</button></p></form>",
        esc(ticket),
        esc(csrf),
        esc(next)
    )
}

const FAILED: &str = "<p role=\"alert\">Login failed.</p>";

/// The form again, saying when logging in is possible again (429 with `Retry-After`).
fn locked_out(csrf: &str, next: &str, retry: std::time::Duration, now: u64) -> Response<ApiBody> {
    let secs = (retry.as_secs() + u64::from(retry.subsec_nanos() > 0)).max(1);
    let message = format!(
        "<p role=\"alert\">Too many failed logins. Try again in {secs} s (from {} UTC).</p>",
        redtether_proto::time::format_unix(now + secs)
    );
    let mut r = page(StatusCode::TOO_MANY_REQUESTS, &password_form(csrf, next, &message), None);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// A form's fields, after checking that its `csrf` field equals cookie `cookie_name` (set with
/// the form): another site's page can post a form here, but not read or set that cookie.
pub(crate) async fn read_form(
    req: Request<Incoming>,
    cookie_name: &str,
) -> Result<Vec<(String, String)>, Box<Response<ApiBody>>> {
    let expected = cookie(req.headers(), cookie_name).map(str::to_string);
    let Ok(body) = Limited::new(req.into_body(), MAX_FORM).collect().await else {
        return Err(Box::new(boxed(error(StatusCode::PAYLOAD_TOO_LARGE, "form_too_large"))));
    };
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body.to_bytes()).into_owned().collect();
    let csrf = fields.iter().find(|(k, _)| k == "csrf").map_or("", |(_, v)| v.as_str());
    let csrf_ok = expected.as_deref().is_some_and(|e| {
        use subtle::ConstantTimeEq;
        !e.is_empty() && bool::from(e.as_bytes().ct_eq(csrf.as_bytes()))
    });
    if !csrf_ok {
        let expired = "<p>The form expired; open it again.</p>";
        return Err(Box::new(page(StatusCode::FORBIDDEN, expired, None)));
    }
    Ok(fields)
}

impl Api {
    /// A fresh CSRF value for a form and the cookie that carries it (for `path` only).
    pub(crate) fn form_cookie(&self, name: &str, path: &str) -> (String, Option<HeaderValue>) {
        let csrf = crate::identity::secrets::random_secret("");
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        let cookie = HeaderValue::from_str(&format!(
            "{name}={csrf}; Path={path}; Max-Age=3600; HttpOnly; SameSite=Strict{secure}"
        ))
        .ok();
        (csrf, cookie)
    }

    pub(super) async fn login(&self, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<ApiBody> {
        match *req.method() {
            http::Method::GET => {
                let next = req.uri().query().and_then(|q| {
                    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "next").map(|(_, v)| v.into_owned())
                });
                let (csrf, cookie) = self.form_cookie(LOGIN_COOKIE, "/login");
                let next = safe_next(next.as_deref().unwrap_or("/"));
                let mut body = password_form(&csrf, next, "");
                if self.sso.oidc.is_some() {
                    let to: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
                    body.push_str(&format!(
                        "<p><a href=\"/auth/oidc/login?next={}\">Log in with single sign-on</a></p>",
                        esc(&to)
                    ));
                }
                page(StatusCode::OK, &body, cookie)
            }
            http::Method::POST => self.login_post(req, peer).await,
            _ => boxed(error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")),
        }
    }

    async fn login_post(&self, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<ApiBody> {
        let fields = match read_form(req, LOGIN_COOKIE).await {
            Ok(f) => f,
            Err(r) => return *r,
        };
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let next = safe_next(field("next").unwrap_or("/")).to_string();
        let csrf = field("csrf").unwrap_or_default();
        let now = redtether_proto::time::unix_now();
        let (name, outcome, factor) = match field("ticket") {
            Some(ticket) => {
                let Some(name) = self.pending_logins.name(ticket, now) else {
                    return page(StatusCode::UNAUTHORIZED, &password_form(csrf, &next, FAILED), None);
                };
                let code = field("code").unwrap_or_default().trim();
                let (second, factor) = if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
                    (SecondFactor::Totp(code.to_string()), "totp")
                } else {
                    (SecondFactor::RecoveryCode(code.to_string()), "recovery_code")
                };
                let outcome = self.check_login(&name, None, Some(second), peer);
                if outcome.is_ok() {
                    self.pending_logins.finish(ticket);
                } else if let Err(LoginOutcome::Refused(_)) = outcome {
                    return page(StatusCode::UNAUTHORIZED, &code_form(csrf, &next, ticket, FAILED), None);
                }
                (name, outcome, factor)
            }
            None => {
                let name = field("name").unwrap_or_default().to_string();
                let outcome = self.password_login(&name, field("password").unwrap_or_default(), None, peer).await;
                let method = outcome.as_ref().map_or("password", |(_, m)| *m);
                (name, outcome.map(|(o, _)| o), if method == "password" { "none" } else { "provider" })
            }
        };
        let method = if factor == "provider" { "ldap" } else { "password" };
        let operator = match outcome {
            Ok(operator) => operator,
            Err(LoginOutcome::Limited(retry)) => return locked_out(csrf, &next, retry, now),
            Err(LoginOutcome::NeedsSecondFactor) => {
                let ticket = self.pending_logins.start(&name, now);
                return page(StatusCode::OK, &code_form(csrf, &next, &ticket, ""), None);
            }
            Err(LoginOutcome::Refused(_)) => {
                return page(StatusCode::UNAUTHORIZED, &password_form(csrf, &next, FAILED), None);
            }
        };
        let (id, _) = match self.start_session(&operator, method, factor, peer) {
            Ok(s) => s,
            Err(r) => return boxed(*r),
        };
        let mut r = boxed(error(StatusCode::SEE_OTHER, "logged_in"));
        r.headers_mut().insert(header::SET_COOKIE, self.session_cookie(&id));
        if let Ok(l) = HeaderValue::from_str(&next) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hubs_own_paths_are_followed_after_login() {
        assert_eq!(safe_next("/devices/pump-1/editor/"), "/devices/pump-1/editor/");
        assert_eq!(safe_next("/devices?q=pump&page=2"), "/devices?q=pump&page=2");
        assert_eq!(safe_next("/audit?kind=gate.denied"), "/audit?kind=gate.denied");
        assert_eq!(safe_next("/groups/prod"), "/groups/prod");
        assert_eq!(safe_next("/rollouts/0193-ab"), "/rollouts/0193-ab");
        for evil in [
            "/auditx",
            "/devices.evil.example/",
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
    fn everything_a_user_sent_is_escaped() {
        assert_eq!(
            esc("\"><script>alert('x')</script>&"),
            "&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
        let form = password_form("c\"", "/devices/a\"b/", "");
        assert!(form.contains("value=\"c&quot;\"") && form.contains("/devices/a&quot;b/"));
    }
}
