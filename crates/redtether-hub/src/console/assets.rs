//! The console's stylesheet and script, compiled into the binary: no CDN, no build step, the
//! console works on a hub with no way out. Served to anyone (they hold nothing secret), with an
//! `ETag` so a browser asks with `If-None-Match` and gets a 304 instead of the file again.

use crate::api::{ApiBody, boxed};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 2] = [
    Asset { name: "console.css", content_type: "text/css; charset=utf-8", body: include_str!("assets/console.css") },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/console.js"),
    },
];

/// Each asset's ETag: the start of its SHA-256, computed once.
fn etag(index: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| ASSETS.iter().map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..16])).collect())
        [index]
}

/// Where a page links `name`; the tag in the query makes a new build's file a new URL.
pub fn href(name: &str) -> String {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => format!("/assets/{name}?v={}", etag(i).trim_matches('"')),
        None => format!("/assets/{name}"),
    }
}

/// The asset `name`, a 304 when the browser has it, or a 404.
pub fn serve(name: &str, request: &HeaderMap) -> Response<ApiBody> {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return boxed(crate::api::error(StatusCode::NOT_FOUND, "not_found"));
    };
    let asset = &ASSETS[index];
    let tag = etag(index);
    let fresh = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == tag);
    let mut r = Response::new(Full::new(if fresh { Bytes::new() } else { Bytes::from_static(asset.body.as_bytes()) }));
    if fresh {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    boxed(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asset_is_served_whole_then_not_again_while_unchanged() {
        let first = serve("console.css", &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve("console.css", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve("../lib.rs", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        assert!(href("console.js").starts_with("/assets/console.js?v="));
    }
}
