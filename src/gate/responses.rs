//! Responses the gate makes itself: small JSON bodies, identical for identical causes (a
//! malformed header and a wrong password get byte-for-byte the same 401).

use super::proxy::GateBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use std::time::Duration;

pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<GateBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(bytes))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn error(status: StatusCode, code: &str) -> Response<GateBody> {
    json(status, &serde_json::json!({ "error": code }))
}

pub fn bad_request(detail: &str) -> Response<GateBody> {
    json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": "bad_request", "detail": detail }))
}

/// The 401 answer, with the challenge RFC 9110 §11.6.1 requires. Node space asks browsers for
/// Basic credentials; admin space challenges for Bearer (the editor's session), which browsers
/// answer with no dialog: the editor has its own login, and a dialog would get in its way.
pub fn unauthorized(ask_for_basic: bool) -> Response<GateBody> {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized");
    let challenge =
        if ask_for_basic { "Basic realm=\"redtether\", charset=\"UTF-8\"" } else { "Bearer realm=\"redtether\"" };
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    r
}

pub fn too_many(wait: Duration) -> Response<GateBody> {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

pub fn unavailable(code: &str, retry_after_secs: u64) -> Response<GateBody> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, code);
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// How long a client refused for want of an audit journal is asked to wait: the journal retries
/// every two seconds at most, but only freeing space ends the outage.
const AUDIT_RETRY_AFTER_SECS: u64 = 10;

/// 503 `{"error":"audit_unavailable"}`: the action must leave an audit event and the journal
/// cannot make one durable now (`[audit] on_failure = "deny"`).
pub fn audit_unavailable() -> Response<GateBody> {
    unavailable("audit_unavailable", AUDIT_RETRY_AFTER_SECS)
}

pub fn method_not_allowed(allow: &'static str) -> Response<GateBody> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}
