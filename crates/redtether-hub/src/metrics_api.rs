//! `GET /metrics` on the operator listener (any operator but a dashboard one: the numbers say
//! how many devices there are and how they fare) and `GET /api/devices/{id}/metrics[?since=T]`,
//! a device's resource history (`T`: RFC 3339 or unix seconds; default the last hour).

use crate::api::{Api, ApiBody, boxed, error, json_response};
use crate::metrics::history::Sample;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use std::net::IpAddr;

/// What `since` is when not given.
const DEFAULT_WINDOW_SECS: u64 = 3600;

pub fn sample_json(sample: &Sample) -> serde_json::Value {
    let mut v = json!(sample.resources);
    v["at"] = redtether_proto::time::format_unix(sample.minute).into();
    v["reports"] = sample.reports.into();
    v
}

/// `since` as unix seconds: RFC 3339 or a number.
fn parse_since(text: &str) -> Option<u64> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let at = humantime::parse_rfc3339_weak(text).ok()?;
    at.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

impl Api {
    pub(crate) async fn scrape(&self, req: &Request<Incoming>, peer: IpAddr) -> Response<ApiBody> {
        if let Err(refused) = self.reader(req.headers(), peer) {
            return *refused;
        }
        if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
            return boxed(error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
        }
        boxed(redtether_host::metrics_server::exposition(self.metrics.render().await))
    }

    pub(crate) fn device_metrics(&self, id: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        let mut since = redtether_proto::time::unix_now().saturating_sub(DEFAULT_WINDOW_SECS);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "since" => match parse_since(&value) {
                    Some(s) => since = s,
                    None => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            json!({ "error": "bad_query", "detail": "since: RFC 3339 time or unix seconds" }),
                        );
                    }
                },
                other => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "bad_query", "detail": format!("unknown parameter {other:?}") }),
                    );
                }
            }
        }
        match self.store.device(id) {
            Ok(Some(_)) => {}
            Ok(None) => return error(StatusCode::NOT_FOUND, "unknown_device"),
            Err(e) => return crate::api::store_error(&e),
        }
        let samples: Vec<_> = self.metrics.history.since(id, since).iter().map(sample_json).collect();
        json_response(
            StatusCode::OK,
            json!({
                "device": id,
                "resolution_secs": crate::metrics::history::RESOLUTION,
                "since": redtether_proto::time::format_unix(since),
                "samples": samples,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_is_rfc3339_or_unix_seconds() {
        assert_eq!(parse_since("1800000000"), Some(1_800_000_000));
        assert_eq!(parse_since("2027-01-15T08:00:00Z"), Some(1_800_000_000));
        assert_eq!(parse_since("yesterday"), None);
    }
}
