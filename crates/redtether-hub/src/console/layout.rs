//! The frame every console page shares (header, navigation, the logout form, a message line)
//! and the headers every page goes out with.
//!
//! Markup comes from `maud`, which escapes every value it is given: a device id, an audit
//! detail or an SBOM string reaches the page as text, never as markup. The policy forbids
//! inline script and inline style altogether (`default-src 'self'`), so even a value that got
//! through unescaped could not run.

use crate::api::{ApiBody, boxed};
use crate::caller::Caller;
use crate::store::OperatorRole;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use maud::{DOCTYPE, Markup, html};

/// The console's content security policy: its own stylesheet and script, nothing inline, no
/// framing, forms only back to the hub.
pub const CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// Which part of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Fleet,
    Devices,
    Groups,
    Audit,
    Enroll,
    Operators,
    Account,
}

/// A line above the page's content: what the last form did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Done(String),
    Failed(String),
}

/// The page around `content`, for `caller`.
pub fn frame(caller: &Caller, nav: Nav, title: &str, notice: Option<&Notice>, content: Markup) -> Markup {
    let role = caller.operator.role;
    let links: Vec<(Nav, &str, &str)> = [
        (Nav::Fleet, "/", "Overview", role >= OperatorRole::Viewer),
        (Nav::Devices, "/devices", "Devices", true),
        (Nav::Groups, "/groups", "Groups", role >= OperatorRole::Viewer),
        (Nav::Audit, "/audit", "Audit", role >= OperatorRole::Viewer),
        (Nav::Enroll, "/enroll", "Enroll", role == OperatorRole::Owner),
        (Nav::Operators, "/operators", "Operators", role == OperatorRole::Owner),
    ]
    .into_iter()
    .filter(|l| l.3)
    .map(|(n, href, label, _)| (n, href, label))
    .collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · redtether hub" }
                link rel="stylesheet" href=(super::assets::href("console.css"));
                script src=(super::assets::href("console.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "redtether hub" }
                    nav aria-label="Main" {
                        ul {
                            @for (n, href, label) in &links {
                                li { a href=(href) aria-current=[(*n == nav).then_some("page")] { (label) } }
                            }
                        }
                    }
                    div.me {
                        a href="/account" aria-current=[(nav == Nav::Account).then_some("page")] {
                            (caller.operator.name) " (" (role.as_str()) ")"
                        }
                        @if let Some(csrf) = caller.csrf() {
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.link { "Log out" }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    @match notice {
                        Some(Notice::Done(text)) => p.notice.ok role="status" { (text) },
                        Some(Notice::Failed(text)) => p.notice.err role="alert" { (text) },
                        None => {},
                    }
                    (content)
                }
            }
        }
    }
}

/// A console page's response: HTML, never cached, under [`CSP`].
pub fn respond(status: StatusCode, markup: Markup) -> Response<ApiBody> {
    let mut r = Response::new(Full::new(Bytes::from(markup.into_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure_headers(h);
    boxed(r)
}

/// The headers every console answer carries.
pub fn secure_headers(h: &mut http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
}

/// A page with only a message (a refusal, a missing device), in the frame when there is a caller.
pub fn message(caller: Option<&Caller>, status: StatusCode, title: &str, text: &str) -> Response<ApiBody> {
    let content = html! { p { (text) } p { a href="/" { "Back to the overview" } } };
    match caller {
        Some(caller) => respond(status, frame(caller, Nav::Fleet, title, None, content)),
        None => respond(
            status,
            html! { (DOCTYPE) html lang="en" { head { meta charset="utf-8"; title { (title) } } body { h1 { (title) } (content) } } },
        ),
    }
}

/// The page for a store that failed while reading `what` (logged here, not shown).
pub fn store_failed(caller: &Caller, title: &str, what: &str, e: &crate::store::StoreError) -> Response<ApiBody> {
    tracing::error!(error = %e, "console: cannot read {what}");
    message(Some(caller), StatusCode::INTERNAL_SERVER_ERROR, title, STORE_FAILED)
}

/// What a page says when the hub's store failed.
pub const STORE_FAILED: &str = "The hub's store failed.";

/// A refused change: `status`, the reason, and a link back to `page`.
pub fn refusal(caller: &Caller, status: StatusCode, reason: &str, page: &str) -> Response<ApiBody> {
    let content = html! { p.notice.err role="alert" { (reason) } p { a href=(page) { "Back" } } };
    respond(status, frame(caller, Nav::Fleet, "Refused", None, content))
}

/// 303 to `location` (after a form), with the console's headers.
pub fn see_other(location: &str) -> Response<ApiBody> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut());
    boxed(r)
}

/// A form's hidden CSRF field (empty for a token caller, whose forms the hub refuses anyway).
pub fn csrf_field(caller: &Caller) -> Markup {
    html! { input type="hidden" name="csrf" value=(caller.csrf().unwrap_or_default()); }
}

/// How long ago `unix` was, roughly, as people say it ("3 min ago").
pub fn ago(unix: u64, now: u64) -> String {
    let secs = now.saturating_sub(unix);
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_people_say_them() {
        assert_eq!(ago(100, 100), "0 s ago");
        assert_eq!(ago(100, 159), "59 s ago");
        assert_eq!(ago(0, 3599), "59 min ago");
        assert_eq!(ago(0, 7200), "2 h ago");
        assert_eq!(ago(0, 3 * 86400), "3 days ago");
        // A clock that went back is no future.
        assert_eq!(ago(200, 100), "0 s ago");
    }
}
