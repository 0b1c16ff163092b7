//! A device policy: the security part of the gate's settings (protection mode, node-space
//! authentication, editor users, bearer tokens as digests, the request limit, CORS origins),
//! signed by the hub for one device and numbered per device.
//!
//! The signature is over its own domain separator (`redtether policy v1\0`), so neither an
//! operator assertion nor a deployment can be replayed as a policy. A device accepts a policy
//! only for its own id and only with a number above the last one it accepted; the document is
//! checked here at both ends, so the hub never signs one a device would refuse and a device
//! never trusts the hub's check alone. Pure: no I/O, no clock.

use crate::signed::{self, EnvelopeError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const DOMAIN: &[u8] = b"redtether policy v1\0";
/// The largest envelope: it travels in one control frame.
pub const MAX_LEN: usize = crate::wire::MAX_FRAME - 4096;
/// Users and tokens a policy may carry, each (a gateway has a handful).
pub const MAX_ENTRIES: usize = 1000;

/// The roles the gate knows, as written in a policy and in `agent.toml`.
pub const ROLES: [&str; 4] = ["owner", "member", "viewer", "dashboard"];

/// The signed statement: this document, for this device, as its `number`th policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub device: String,
    /// Strictly increasing per device.
    pub number: u64,
    /// Unix seconds when the hub made it (for display; policies do not expire).
    pub issued_at: u64,
    pub document: PolicyDocument,
}

/// The security settings themselves. Every field has the default a missing one means.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Flows read-only in the editor and admin API; changes arrive only as signed deployments.
    #[serde(default)]
    pub protection: bool,
    #[serde(default)]
    pub http_auth: HttpAuth,
    /// The editor's users. Empty: nobody logs in to the editor on the device's network (the
    /// remote editor through the platform still works).
    #[serde(default)]
    pub users: Vec<PolicyUser>,
    /// Bearer tokens for node space, as the hub made them: digests only.
    #[serde(default)]
    pub tokens: Vec<PolicyToken>,
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// Origins allowed cross-origin access (`scheme://host[:port]`), never `*`.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

/// How node space (HTTP-In endpoints, dashboards) is protected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    /// `none`, `basic` or `users` (the default: deny unless opened).
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

impl Default for HttpAuth {
    fn default() -> Self {
        HttpAuth { mode: "users".into(), user: None, password_hash: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUser {
    pub name: String,
    /// An argon2 PHC string.
    pub password_hash: String,
    /// One of [`ROLES`].
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyToken {
    pub name: String,
    /// SHA-256 of the token, lower-case hex. The token itself never leaves the hub's answer.
    pub sha256: String,
    /// Unix seconds; the token is refused from this second on.
    pub expires: u64,
    /// A path prefix the token is limited to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Per source address; 0 turns the request limit off.
    #[serde(default)]
    pub requests_per_second: f64,
    /// 0: twice the rate (at least 1).
    #[serde(default)]
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { requests_per_second: 0.0, burst: 0 }
    }
}

/// A field of a document that cannot be enforced: which one (`users[2].role`) and why. The hub
/// answers it as a 400; the device records it as the reason of a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// Why a device refuses a policy envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    #[error("the policy is malformed")]
    Malformed,
    #[error("the policy is not signed by the hub")]
    BadSignature,
    #[error("the policy is for another device")]
    OtherDevice,
    #[error("policy {number} is not newer than policy {last}, already accepted")]
    Replayed { number: u64, last: u64 },
    #[error("the policy is invalid: {0}")]
    Invalid(FieldError),
}

impl PolicyRefusal {
    /// The `reason` in the `policy.refused` audit event and the device's report.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyRefusal::Malformed => "malformed",
            PolicyRefusal::BadSignature => "bad_signature",
            PolicyRefusal::OtherDevice => "other_device",
            PolicyRefusal::Replayed { .. } => "replayed",
            PolicyRefusal::Invalid(_) => "invalid",
        }
    }
}

/// The reason a device that manages its security settings locally (`[policy] managed = false`)
/// gives for every platform policy.
pub const LOCALLY_MANAGED: &str = "locally_managed";

/// Signs `policy` with the hub's key.
pub fn sign(policy: &Policy, key: &ring::signature::Ed25519KeyPair) -> String {
    signed::seal(DOMAIN, &serde_json::to_vec(policy).expect("policies always encode"), key)
}

/// The policy in `envelope`, signed by `hub_key`, without the device or number rules: for a
/// device re-reading the policy it stored itself.
pub fn open(envelope: &str, hub_key: &[u8]) -> Result<Policy, PolicyRefusal> {
    let payload = signed::open(DOMAIN, envelope, hub_key, MAX_LEN).map_err(|e| match e {
        EnvelopeError::Malformed => PolicyRefusal::Malformed,
        EnvelopeError::BadSignature => PolicyRefusal::BadSignature,
    })?;
    let policy: Policy = serde_json::from_slice(&payload).map_err(|_| PolicyRefusal::Malformed)?;
    policy.document.check().map_err(PolicyRefusal::Invalid)?;
    Ok(policy)
}

/// Checks `envelope` against the pinned hub key, for `device`, after the policy numbered `last`
/// was accepted (0: none yet). The signature is checked before the payload is believed.
pub fn verify(envelope: &str, hub_key: &[u8], device: &str, last: u64) -> Result<Policy, PolicyRefusal> {
    let policy = open(envelope, hub_key)?;
    if policy.device != device {
        return Err(PolicyRefusal::OtherDevice);
    }
    if policy.number <= last {
        return Err(PolicyRefusal::Replayed { number: policy.number, last });
    }
    Ok(policy)
}

impl PolicyDocument {
    /// SHA-256 (hex) of the document's JSON: how the hub, the device's report and its audit
    /// trail name the same document.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }

    /// Whether a device can enforce this document; the first field that is wrong.
    pub fn check(&self) -> Result<(), FieldError> {
        match self.http_auth.mode.as_str() {
            "none" | "users" => {}
            "basic" => {
                let user = self.http_auth.user.as_deref().filter(|u| !u.is_empty());
                let Some(user) = user else {
                    return Err(field_error("http_auth.user", "is required when mode is \"basic\""));
                };
                if user.contains(':') || user.chars().any(char::is_control) || user.len() > 64 {
                    return Err(field_error("http_auth.user", "must be 1-64 characters without ':' or controls"));
                }
                let Some(hash) = self.http_auth.password_hash.as_deref() else {
                    return Err(field_error("http_auth.password_hash", "is required when mode is \"basic\""));
                };
                check_phc(hash).map_err(|e| field_error("http_auth.password_hash", e.to_string()))?;
            }
            other => {
                return Err(field_error("http_auth.mode", format!("{other:?} is not one of none, basic, users")));
            }
        }
        if self.users.len() > MAX_ENTRIES {
            return Err(field_error("users", format!("more than {MAX_ENTRIES} users")));
        }
        for (i, user) in self.users.iter().enumerate() {
            let field = |name: &str| format!("users[{i}].{name}");
            if !crate::names::valid_name(&user.name) {
                return Err(field_error(
                    field("name"),
                    format!("{:?} is not a user name (1-64 of A-Z a-z 0-9 . _ @ -)", user.name),
                ));
            }
            if self.users[..i].iter().any(|u| u.name == user.name) {
                return Err(field_error(field("name"), format!("user {:?} appears twice", user.name)));
            }
            check_phc(&user.password_hash).map_err(|e| field_error(field("password_hash"), e.to_string()))?;
            if !ROLES.contains(&user.role.as_str()) {
                return Err(field_error(field("role"), format!("{:?} is not one of {}", user.role, ROLES.join(", "))));
            }
        }
        if self.tokens.len() > MAX_ENTRIES {
            return Err(field_error("tokens", format!("more than {MAX_ENTRIES} tokens")));
        }
        for (i, token) in self.tokens.iter().enumerate() {
            let field = |name: &str| format!("tokens[{i}].{name}");
            if !crate::names::valid_name(&token.name) || token.name.contains('@') {
                return Err(field_error(
                    field("name"),
                    format!("{:?} is not a token name (1-64 of A-Z a-z 0-9 . _ -)", token.name),
                ));
            }
            if self.tokens[..i].iter().any(|t| t.name == token.name) {
                return Err(field_error(field("name"), format!("token {:?} appears twice", token.name)));
            }
            let hex_digest = token.sha256.len() == 64
                && token.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_digest {
                return Err(field_error(field("sha256"), "is not a lower-case hex SHA-256"));
            }
            if let Some(scope) = &token.scope
                && !valid_scope(scope)
            {
                return Err(field_error(field("scope"), format!("{scope:?} is not a path prefix such as /api")));
            }
        }
        let rate = &self.rate_limit;
        if !(rate.requests_per_second >= 0.0 && rate.requests_per_second.is_finite()) {
            return Err(field_error("rate_limit.requests_per_second", "must be 0 (off) or a positive number"));
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if normalize_origin(origin).is_none() {
                return Err(field_error(
                    format!("cors_origins[{i}]"),
                    format!("{origin:?} is not an origin such as \"https://hmi.example:8443\" (no wildcards)"),
                ));
            }
        }
        Ok(())
    }

    /// What changed from `before` (none: the first policy), for the hub's `policy.changed`
    /// event: names, roles, modes and values, never a hash or a secret.
    pub fn changes_from(&self, before: Option<&PolicyDocument>) -> Value {
        let empty = PolicyDocument::default();
        let before = before.unwrap_or(&empty);
        let mut out = Map::new();
        if self.protection != before.protection {
            out.insert("protection".into(), json!(self.protection));
        }
        if self.http_auth.mode != before.http_auth.mode || self.http_auth.user != before.http_auth.user {
            out.insert("http_auth".into(), json!({ "mode": self.http_auth.mode, "user": self.http_auth.user }));
        } else if self.http_auth.password_hash != before.http_auth.password_hash {
            out.insert("http_auth".into(), json!({ "password_changed": true }));
        }
        let old: BTreeMap<&str, &PolicyUser> = before.users.iter().map(|u| (u.name.as_str(), u)).collect();
        let new: BTreeMap<&str, &PolicyUser> = self.users.iter().map(|u| (u.name.as_str(), u)).collect();
        let added: Vec<Value> = new
            .iter()
            .filter(|(n, _)| !old.contains_key(*n))
            .map(|(n, u)| json!({ "name": n, "role": u.role }))
            .collect();
        let removed: Vec<&str> = old.keys().filter(|n| !new.contains_key(*n)).copied().collect();
        let role_changed: Vec<Value> = new
            .iter()
            .filter_map(|(n, u)| {
                old.get(n).filter(|o| o.role != u.role).map(|o| json!({ "name": n, "from": o.role, "to": u.role }))
            })
            .collect();
        let password_changed: Vec<&str> = new
            .iter()
            .filter(|(n, u)| old.get(*n).is_some_and(|o| o.password_hash != u.password_hash))
            .map(|(n, _)| *n)
            .collect();
        let mut users = Map::new();
        for (key, list) in [
            ("added", json!(added)),
            ("removed", json!(removed)),
            ("role_changed", json!(role_changed)),
            ("password_changed", json!(password_changed)),
        ] {
            if list.as_array().is_some_and(|a| !a.is_empty()) {
                users.insert(key.into(), list);
            }
        }
        if !users.is_empty() {
            out.insert("users".into(), Value::Object(users));
        }
        let old_tokens: Vec<&str> = before.tokens.iter().map(|t| t.name.as_str()).collect();
        let new_tokens: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        let tokens_added: Vec<&str> = new_tokens.iter().filter(|n| !old_tokens.contains(n)).copied().collect();
        let tokens_removed: Vec<&str> = old_tokens.iter().filter(|n| !new_tokens.contains(n)).copied().collect();
        if !tokens_added.is_empty() || !tokens_removed.is_empty() {
            out.insert("tokens".into(), json!({ "added": tokens_added, "removed": tokens_removed }));
        }
        if self.rate_limit != before.rate_limit {
            out.insert("rate_limit".into(), json!(self.rate_limit));
        }
        if self.cors_origins != before.cors_origins {
            out.insert("cors_origins".into(), json!(self.cors_origins));
        }
        Value::Object(out)
    }
}

/// Why a password hash is refused; said after its field, as in
/// "users[0].password_hash is not a PHC password hash (...)".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhcError {
    #[error("is not a PHC password hash ({0}); make one with `redtether passwd`")]
    NotPhc(String),
    #[error("uses {0}; only argon2 hashes are accepted (make one with `redtether passwd`)")]
    NotArgon2(String),
}

/// Accepts argon2 PHC strings only (what `redtether passwd` prints); the one rule for the
/// agent's file and the platform's policies.
pub fn check_phc(hash: &str) -> Result<(), PhcError> {
    let parsed = argon2::password_hash::phc::PasswordHash::new(hash).map_err(|e| PhcError::NotPhc(e.to_string()))?;
    let algorithm = parsed.algorithm.as_str();
    if !algorithm.starts_with("argon2") {
        return Err(PhcError::NotArgon2(algorithm.to_owned()));
    }
    Ok(())
}

/// A plain absolute path prefix: no dot segments, no percent-escapes, no empty segments.
fn valid_scope(scope: &str) -> bool {
    scope.starts_with('/')
        && scope.len() <= 256
        && !scope.contains("//")
        && !scope.contains('%')
        && scope.split('/').all(|s| s != "." && s != "..")
        && scope.chars().all(|c| c.is_ascii_graphic())
}

/// `scheme://host[:port]` in lower case without a trailing slash, or `None` for anything else.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let lower = origin.trim_end_matches('/').to_ascii_lowercase();
    let authority = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"))?;
    let ok = !authority.is_empty() && !authority.contains(['*', '/']) && !authority.starts_with(':');
    ok.then_some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::tests::key;
    use ring::signature::KeyPair;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$KjR7n9y0DC0T8hK1IuvWz9P2qgT8Lw0nJa6W5mR1aF8";

    fn document() -> PolicyDocument {
        PolicyDocument {
            protection: true,
            http_auth: HttpAuth { mode: "users".into(), user: None, password_hash: None },
            users: vec![PolicyUser { name: "ann".into(), password_hash: HASH.into(), role: "viewer".into() }],
            tokens: vec![PolicyToken {
                name: "hmi".into(),
                sha256: "ab".repeat(32),
                expires: 2_000_000_000,
                scope: Some("/api".into()),
            }],
            rate_limit: RateLimit { requests_per_second: 5.0, burst: 10 },
            cors_origins: vec!["https://hmi.example".into()],
        }
    }

    fn policy(device: &str, number: u64) -> Policy {
        Policy { device: device.into(), number, issued_at: 1, document: document() }
    }

    #[test]
    fn a_newer_policy_for_this_device_signed_by_the_hub_is_accepted() {
        let k = key();
        let pk = k.public_key().as_ref();
        let envelope = sign(&policy("pump-1", 3), &k);
        assert_eq!(verify(&envelope, pk, "pump-1", 2).unwrap(), policy("pump-1", 3));
        assert_eq!(verify(&envelope, pk, "pump-1", 0).unwrap().number, 3);
    }

    #[test]
    fn replays_other_devices_other_keys_and_truncations_are_refused() {
        let k = key();
        let pk = k.public_key().as_ref();
        let envelope = sign(&policy("pump-1", 3), &k);
        assert_eq!(verify(&envelope, pk, "pump-1", 3), Err(PolicyRefusal::Replayed { number: 3, last: 3 }));
        assert_eq!(verify(&envelope, pk, "pump-1", 9), Err(PolicyRefusal::Replayed { number: 3, last: 9 }));
        assert_eq!(verify(&envelope, pk, "pump-2", 0), Err(PolicyRefusal::OtherDevice));
        let other = key();
        assert_eq!(verify(&sign(&policy("pump-1", 4), &other), pk, "pump-1", 0), Err(PolicyRefusal::BadSignature));
        let truncated = &envelope[..envelope.len() - 10];
        assert!(matches!(
            verify(truncated, pk, "pump-1", 0),
            Err(PolicyRefusal::BadSignature | PolicyRefusal::Malformed)
        ));
        assert_eq!(verify("garbage", pk, "pump-1", 0), Err(PolicyRefusal::Malformed));
    }

    #[test]
    fn a_deployment_or_assertion_signature_is_no_policy_signature() {
        let k = key();
        let pk = k.public_key().as_ref();
        let payload = serde_json::to_vec(&policy("pump-1", 3)).unwrap();
        for domain in [&b"redtether deployment v1\0"[..], b"redtether assertion v1\0", b""] {
            let envelope = signed::seal(domain, &payload, &k);
            assert_eq!(verify(&envelope, pk, "pump-1", 0), Err(PolicyRefusal::BadSignature), "{domain:?}");
        }
    }

    #[test]
    fn a_signed_but_unenforceable_document_is_refused_as_invalid() {
        let k = key();
        let mut p = policy("pump-1", 1);
        p.document.users[0].role = "admin".into();
        let refusal = verify(&sign(&p, &k), k.public_key().as_ref(), "pump-1", 0).unwrap_err();
        assert_eq!(refusal.reason(), "invalid");
        assert!(refusal.to_string().contains("users[0].role"), "{refusal}");
    }

    #[test]
    fn every_bad_field_is_named() {
        let field = |edit: fn(&mut PolicyDocument)| {
            let mut d = document();
            edit(&mut d);
            d.check().unwrap_err().field
        };
        assert_eq!(field(|d| d.http_auth.mode = "open".into()), "http_auth.mode");
        assert_eq!(field(|d| d.http_auth.mode = "basic".into()), "http_auth.user");
        assert_eq!(
            field(|d| {
                d.http_auth = HttpAuth { mode: "basic".into(), user: Some("hmi".into()), password_hash: None }
            }),
            "http_auth.password_hash"
        );
        assert_eq!(
            field(|d| {
                d.http_auth =
                    HttpAuth { mode: "basic".into(), user: Some("hmi".into()), password_hash: Some("x".into()) }
            }),
            "http_auth.password_hash"
        );
        assert_eq!(field(|d| d.users[0].role = "root".into()), "users[0].role");
        assert_eq!(field(|d| d.users[0].name = "a b".into()), "users[0].name");
        assert_eq!(field(|d| d.users[0].password_hash = "plain".into()), "users[0].password_hash");
        assert_eq!(field(|d| d.users[0].password_hash = "$1$md5$x".into()), "users[0].password_hash");
        assert_eq!(field(|d| d.users.push(d.users[0].clone())), "users[1].name");
        assert_eq!(field(|d| d.tokens[0].sha256 = "zz".into()), "tokens[0].sha256");
        assert_eq!(field(|d| d.tokens[0].scope = Some("/a/../b".into())), "tokens[0].scope");
        assert_eq!(field(|d| d.rate_limit.requests_per_second = -1.0), "rate_limit.requests_per_second");
        assert_eq!(field(|d| d.cors_origins.push("*".into())), "cors_origins[1]");
        assert!(document().check().is_ok());
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(normalize_origin("HTTPS://HMI.example:8443/").as_deref(), Some("https://hmi.example:8443"));
        assert_eq!(normalize_origin("http://a").as_deref(), Some("http://a"));
        for bad in ["*", "https://*.example", "https://", "http://:80", "https://a/path", "ftp://a", "hmi.example"] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn password_hashes_must_be_argon2_phc_strings() {
        assert!(check_phc(HASH).is_ok());
        assert!(matches!(check_phc("plain"), Err(PhcError::NotPhc(_))));
        assert_eq!(
            check_phc("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo"),
            Err(PhcError::NotArgon2("scrypt".into()))
        );
    }

    #[test]
    fn unknown_fields_are_malformed_and_missing_ones_take_their_safe_defaults() {
        assert!(serde_json::from_str::<PolicyDocument>(r#"{"protection":true,"admin":true}"#).is_err());
        let d: PolicyDocument = serde_json::from_str("{}").unwrap();
        assert_eq!(d.http_auth.mode, "users", "node space needs credentials unless opened");
        assert!(!d.protection && d.users.is_empty() && d.tokens.is_empty());
    }

    #[test]
    fn changes_name_what_changed_and_never_hashes_or_digests() {
        let before = document();
        let mut after = document();
        after.protection = false;
        after.users[0].role = "member".into();
        after.users.push(PolicyUser { name: "bob".into(), password_hash: HASH.into(), role: "owner".into() });
        after.tokens.clear();
        let changes = after.changes_from(Some(&before));
        assert_eq!(changes["protection"], json!(false));
        assert_eq!(changes["users"]["added"], json!([{"name": "bob", "role": "owner"}]));
        assert_eq!(changes["users"]["role_changed"], json!([{"name": "ann", "from": "viewer", "to": "member"}]));
        assert_eq!(changes["tokens"]["removed"], json!(["hmi"]));
        assert!(changes.get("cors_origins").is_none(), "unchanged");
        let text = changes.to_string();
        assert!(!text.contains("argon2") && !text.contains(&"ab".repeat(32)), "{text}");
        assert_eq!(document().changes_from(Some(&document())), json!({}));
    }

    #[test]
    fn the_hash_follows_the_document() {
        let mut other = document();
        other.protection = false;
        assert_ne!(document().hash(), other.hash());
        assert_eq!(document().hash(), document().hash());
        assert_eq!(document().hash().len(), 64);
    }
}
