//! What an audit event says before the journal seals it: who did what to what, and the facts
//! of the kind.

use super::AuditKind;
use serde::{Deserialize, Serialize};

/// Who caused an event. In JSON it is one string: `user:ann`, `token:ci`,
/// `anonymous@10.0.0.9`, `system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A configured user (HTTP Basic or an editor session).
    User { name: String },
    /// A bearer token, by its name.
    Token { name: String },
    /// Someone who presented no valid credential, by source address.
    Anonymous { addr: String },
    /// The agent itself.
    System,
}

impl Actor {
    pub fn user(name: impl Into<String>) -> Actor {
        Actor::User { name: name.into() }
    }
    pub fn anonymous(addr: std::net::IpAddr) -> Actor {
        Actor::Anonymous { addr: addr.to_string() }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Actor::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not an actor: {text:?}")))
    }
}

impl Actor {
    pub fn parse(text: &str) -> Option<Actor> {
        if text == "system" {
            return Some(Actor::System);
        }
        if let Some(name) = text.strip_prefix("user:") {
            return Some(Actor::User { name: name.to_string() });
        }
        if let Some(name) = text.strip_prefix("token:") {
            return Some(Actor::Token { name: name.to_string() });
        }
        text.strip_prefix("anonymous@").map(|addr| Actor::Anonymous { addr: addr.to_string() })
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::User { name } => write!(f, "user:{name}"),
            Actor::Token { name } => write!(f, "token:{name}"),
            Actor::Anonymous { addr } => write!(f, "anonymous@{addr}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// Whose concern an event is: this Node-RED instance, the application on it, or the team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Instance,
    Application,
    Team,
}

/// An event before the journal gives it a sequence number, id, time and hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What happened: `auth.failed`, `access.denied`, `admin.write`, ...
    pub kind: AuditKind,
    pub actor: Actor,
    /// What was acted on: a canonical path, a token name, "node-red".
    pub target: String,
    pub level: Level,
    /// Kind-specific facts; always a JSON object.
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, actor: Actor, target: impl Into<String>) -> AuditEvent {
        AuditEvent { kind, actor, target: target.into(), level: Level::Instance, detail: serde_json::Map::new() }
    }

    pub fn level(mut self, level: Level) -> AuditEvent {
        self.level = level;
        self
    }

    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> AuditEvent {
        self.detail.insert(key.to_string(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_read_naturally() {
        assert_eq!(Actor::user("ann").to_string(), "user:ann");
        assert_eq!(Actor::anonymous("10.0.0.9".parse().unwrap()).to_string(), "anonymous@10.0.0.9");
        assert_eq!(serde_json::to_value(Actor::Token { name: "ci".into() }).unwrap(), serde_json::json!("token:ci"));
        for a in [
            Actor::System,
            Actor::user("a:b"),
            Actor::Token { name: "t".into() },
            Actor::anonymous("::1".parse().unwrap()),
        ] {
            assert_eq!(Actor::parse(&a.to_string()), Some(a));
        }
    }

    #[test]
    fn details_are_an_object() {
        let e = AuditEvent::new(AuditKind::AccessDenied, Actor::System, "/device-editor/flows").with("method", "POST");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["detail"], serde_json::json!({"method": "POST"}));
        assert_eq!(v["kind"], "access.denied");
    }
}
