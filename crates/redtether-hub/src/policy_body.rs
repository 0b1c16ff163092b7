//! Reading an operator's policy and token requests: pure, so each refusal and the field it
//! names is unit-tested without a hub. A refusal names the field to blame (`users[0].role`,
//! `http_auth.user`, `tokens`), or none when the body is not a JSON object at all.

use redtether_proto::policy::{HttpAuth, PolicyDocument, PolicyToken, PolicyUser, RateLimit};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

/// The fields an operator sets; `tokens` is the token routes' business.
const FIELDS: [&str; 5] = ["protection", "http_auth", "users", "rate_limit", "cors_origins"];

/// The longest lifetime a token may be given: a forgotten token must still end.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86400);

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct BodyError {
    /// The field to blame, as `PolicyDocument::check` names fields.
    pub field: Option<String>,
    pub message: String,
}

fn refuse(field: Option<&str>, message: impl Into<String>) -> BodyError {
    BodyError { field: field.map(str::to_string), message: message.into() }
}

fn named<T: DeserializeOwned>(field: &str, value: &Value) -> Result<(), BodyError> {
    serde_json::from_value::<T>(value.clone()).map(drop).map_err(|e| refuse(Some(field), e.to_string()))
}

/// The document in a `PUT .../policy` body, checked as a device would check it.
pub fn parse_document(bytes: &[u8]) -> Result<PolicyDocument, BodyError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| refuse(None, format!("not JSON: {e}")))?;
    let Value::Object(fields) = &value else { return Err(refuse(None, "must be a JSON object")) };
    // Serde names neither an unknown field's path nor the field a wrong type is in; each
    // field is read on its own first so the answer can say which one is wrong.
    for (key, field) in fields {
        match key.as_str() {
            "tokens" => {
                return Err(refuse(
                    Some("tokens"),
                    "tokens are made and revoked with /api/devices/{id}/tokens, not set in a policy",
                ));
            }
            "protection" => named::<bool>(key, field)?,
            "http_auth" => named::<HttpAuth>(key, field)?,
            "rate_limit" => named::<RateLimit>(key, field)?,
            "cors_origins" => named::<Vec<String>>(key, field)?,
            "users" => match field {
                Value::Array(users) => {
                    for (i, user) in users.iter().enumerate() {
                        named::<PolicyUser>(&format!("users[{i}]"), user)?;
                    }
                }
                _ => named::<Vec<PolicyUser>>(key, field)?,
            },
            other => {
                return Err(refuse(Some(other), format!("is not a policy field (one of {})", FIELDS.join(", "))));
            }
        }
    }
    let document: PolicyDocument = serde_json::from_value(value).map_err(|e| refuse(None, e.to_string()))?;
    document.check().map_err(|e| refuse(Some(&e.field), e.message))?;
    Ok(document)
}

/// A `POST .../tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    expires_in: Lifetime,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Lifetime {
    Seconds(u64),
    /// `"1h"`, `"90d"`.
    Text(String),
}

/// What an operator asked a token to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub name: String,
    pub lifetime: Duration,
    pub scope: Option<String>,
}

/// The token request in `bytes`: a name and scope the device accepts (checked by the same
/// rules as a policy's tokens) and a lifetime of at least a second.
pub fn parse_token_request(bytes: &[u8]) -> Result<TokenRequest, BodyError> {
    let body: TokenBody = serde_json::from_slice(bytes).map_err(|e| refuse(None, e.to_string()))?;
    let lifetime = match body.expires_in {
        Lifetime::Seconds(s) => Duration::from_secs(s),
        Lifetime::Text(text) => humantime::parse_duration(&text)
            .map_err(|e| refuse(Some("expires_in"), format!("{text:?} is not a duration such as \"30d\": {e}")))?,
    };
    if lifetime < Duration::from_secs(1) || lifetime > MAX_TOKEN_LIFETIME {
        return Err(refuse(
            Some("expires_in"),
            format!("must be 1 second to {}", humantime::format_duration(MAX_TOKEN_LIFETIME)),
        ));
    }
    // One token alone in a document: the device's own rules say whether name and scope pass.
    let probe = PolicyDocument {
        tokens: vec![PolicyToken {
            name: body.name.clone(),
            sha256: "0".repeat(64),
            expires: 0,
            scope: body.scope.clone(),
        }],
        ..PolicyDocument::default()
    };
    if let Err(e) = probe.check() {
        let field = e.field.strip_prefix("tokens[0].").unwrap_or(&e.field).to_string();
        return Err(BodyError { field: Some(field), message: e.message });
    }
    Ok(TokenRequest { name: body.name, lifetime, scope: body.scope })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$KjR7n9y0DC0T8hK1IuvWz9P2qgT8Lw0nJa6W5mR1aF8";

    fn field(body: Value) -> Option<String> {
        parse_document(body.to_string().as_bytes()).unwrap_err().field
    }

    #[test]
    fn a_valid_document_is_read_with_defaults_for_what_is_missing() {
        let body = json!({"protection": true, "users": [{"name": "ann", "password_hash": HASH, "role": "viewer"}]});
        let document = parse_document(body.to_string().as_bytes()).unwrap();
        assert!(document.protection);
        assert_eq!(document.users[0].role, "viewer");
        assert_eq!(document.http_auth.mode, "users");
        assert_eq!(parse_document(b"{}").unwrap(), PolicyDocument::default());
    }

    #[test]
    fn every_refusal_names_its_field() {
        let user = |role: &str, hash: &str| json!([{"name": "ann", "password_hash": hash, "role": role}]);
        assert_eq!(field(json!({"users": user("root", HASH)})).as_deref(), Some("users[0].role"));
        assert_eq!(
            field(json!({"users": user("viewer", "$argon2id$nope")})).as_deref(),
            Some("users[0].password_hash")
        );
        assert_eq!(field(json!({"http_auth": {"mode": "basic"}})).as_deref(), Some("http_auth.user"));
        assert_eq!(field(json!({"tokens": []})).as_deref(), Some("tokens"));
        assert_eq!(field(json!({"admin": true})).as_deref(), Some("admin"));
        assert_eq!(field(json!({"protection": "yes"})).as_deref(), Some("protection"));
        assert_eq!(field(json!({"users": [{"name": "ann"}]})).as_deref(), Some("users[0]"));
        assert_eq!(field(json!({"users": {"ann": 1}})).as_deref(), Some("users"));
        assert_eq!(field(json!({"http_auth": {"mode": "users", "extra": 1}})).as_deref(), Some("http_auth"));
        assert_eq!(field(json!({"cors_origins": ["*"]})).as_deref(), Some("cors_origins[0]"));
        assert_eq!(field(json!([1])), None);
        assert_eq!(parse_document(b"{nope").unwrap_err().field, None);
    }

    #[test]
    fn token_requests_take_seconds_or_a_duration_and_the_devices_name_rules() {
        let parse = |v: Value| parse_token_request(v.to_string().as_bytes());
        let ok = parse(json!({"name": "hmi", "expires_in": 3600, "scope": "/api"})).unwrap();
        assert_eq!((ok.lifetime, ok.scope.as_deref()), (Duration::from_secs(3600), Some("/api")));
        assert_eq!(parse(json!({"name": "hmi", "expires_in": "1h"})).unwrap().lifetime, Duration::from_secs(3600));
        let field = |v: Value| parse(v).unwrap_err().field;
        assert_eq!(field(json!({"name": "a b", "expires_in": 60})).as_deref(), Some("name"));
        assert_eq!(field(json!({"name": "a@b", "expires_in": 60})).as_deref(), Some("name"));
        assert_eq!(field(json!({"name": "hmi", "expires_in": 60, "scope": "/a/../b"})).as_deref(), Some("scope"));
        assert_eq!(field(json!({"name": "hmi", "expires_in": 0})).as_deref(), Some("expires_in"));
        assert_eq!(field(json!({"name": "hmi", "expires_in": "soon"})).as_deref(), Some("expires_in"));
        assert_eq!(field(json!({"name": "hmi", "expires_in": "100y"})).as_deref(), Some("expires_in"));
        assert_eq!(field(json!({"name": "hmi"})), None, "a lifetime is required");
        assert_eq!(field(json!({"name": "hmi", "expires_in": 60, "token": "rtt_x"})), None);
    }
}
