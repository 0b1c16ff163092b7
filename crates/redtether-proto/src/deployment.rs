//! A deployment: the snapshot a device should run (flows, credentials, modules, environment,
//! settings overrides), signed by the hub for one device, numbered, and with an expiry.
//!
//! The device refuses anything unsigned or signed by another key, for another device, expired,
//! or numbered at or below the last deployment it accepted (a replay). The snapshot is checked
//! here too, so the hub never signs one the device would refuse and the device never trusts
//! the hub's check alone. Pure: no I/O, no clock.

use crate::signed::{self, EnvelopeError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const DOMAIN: &[u8] = b"redtether deployment v1\0";
/// The largest envelope: it travels in one control frame.
pub const MAX_LEN: usize = crate::wire::MAX_FRAME - 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub id: String,
    pub device: String,
    /// Strictly increasing per device.
    pub number: u64,
    /// Unix seconds after which the device refuses it.
    pub exp: u64,
    pub snapshot: Snapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Node-RED's flow configuration: an array of node objects.
    pub flows: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// npm package name → version or range.
    #[serde(default)]
    pub modules: BTreeMap<String, String>,
    /// Environment variables for Node-RED.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Node-RED settings, limited to [`OVERRIDABLE_SETTINGS`].
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// Credentials never travel or rest in the clear outside the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Credentials {
    /// Sealed by the hub to the device's key (see [`crate::seal`]).
    Sealed(String),
    /// Node-RED's own encrypted credentials file, as taken from this device.
    NodeRed(serde_json::Value),
    /// A portable snapshot's credentials: the device's credentials as plain JSON (node id →
    /// credential fields), sealed (see [`crate::seal`]) to the hub's credentials key with the
    /// label [`PORTABLE_LABEL`]. Only the hub can open them, and it turns them into
    /// [`Credentials::Sealed`] for the device it deploys the snapshot to; a device never applies
    /// them.
    Portable(String),
}

/// The label (the `device` of [`crate::seal::seal`]) that [`Credentials::Portable`] are sealed
/// with to the hub's credentials key.
pub const PORTABLE_LABEL: &str = "hub";

impl Credentials {
    /// Whether a device can apply these as they are (`Portable` ones need the hub first).
    pub fn is_deployable(&self) -> bool {
        !matches!(self, Credentials::Portable(_))
    }
}

/// Settings a deployment may set. Everything the agent relies on (where Node-RED listens, its
/// admin root and auth, its credential secret, its files) is not here, so no deployment can
/// open the device up.
pub const OVERRIDABLE_SETTINGS: &[&str] = &[
    "apiMaxLength",
    "contextStorage",
    "debugMaxLength",
    "debugUseColors",
    "exportGlobalContextKeys",
    "functionExternalModules",
    "functionGlobalContext",
    "functionTimeout",
    "httpNodeCors",
    "lang",
    "logging",
    "mqttReconnectTime",
    "nodeMessageBufferMaxLength",
    "serialReconnectTime",
    "socketReconnectTime",
    "socketTimeout",
];

/// Environment variables a deployment may not set: they belong to the agent, to systemd, or
/// change how node itself loads code.
const RESERVED_ENV: &[&str] =
    &["NODE_OPTIONS", "NODE_PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "HOME", "NOTIFY_SOCKET", "WATCHDOG_USEC"];

/// What makes a snapshot one the device must not apply. (The messages are those the hub's API
/// and the device's audit trail show.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("flows[{0}] needs a string id and type")]
    NodeWithoutIdOrType(usize),
    #[error("flows[{0}]: duplicate id {1:?}")]
    DuplicateId(usize, String),
    #[error("modules: {0:?} is not an npm package name")]
    ModuleName(String),
    #[error("modules: {0}: {1:?} is not a version or range")]
    ModuleVersion(String, String),
    #[error("env: {0:?} is not a variable name")]
    EnvName(String),
    #[error("env: {0} is reserved")]
    ReservedEnv(String),
    #[error("settings: {0} cannot be set by a deployment")]
    Setting(String),
    #[error("credentials: portable credentials must be sealed for the device by the hub first")]
    PortableCredentials,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployRefusal {
    #[error("the deployment is malformed")]
    Malformed,
    #[error("the deployment is not signed by the hub")]
    BadSignature,
    #[error("the deployment is for another device")]
    OtherDevice,
    #[error("the deployment has expired")]
    Expired,
    #[error("deployment {number} is not newer than deployment {last}, already accepted")]
    Replayed { number: u64, last: u64, id: String },
    #[error("the snapshot is invalid: {0}")]
    Invalid(SnapshotError),
}

impl DeployRefusal {
    /// The `reason` in the `deploy.refused` audit event.
    pub fn reason(&self) -> &'static str {
        match self {
            DeployRefusal::Malformed => "malformed",
            DeployRefusal::BadSignature => "bad_signature",
            DeployRefusal::OtherDevice => "other_device",
            DeployRefusal::Expired => "expired",
            DeployRefusal::Replayed { .. } => "replayed",
            DeployRefusal::Invalid(_) => "invalid_snapshot",
        }
    }
}

/// SHA-256 (hex) of the flows as the deployment carries them, so the hub, the audit trail and
/// the device name the same flows the same way.
pub fn flows_hash(flows: &[serde_json::Value]) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(flows).unwrap_or_default()))
}

/// Signs `deployment` with the hub's key.
pub fn sign(deployment: &Deployment, key: &ring::signature::Ed25519KeyPair) -> String {
    signed::seal(DOMAIN, &serde_json::to_vec(deployment).expect("deployments always encode"), key)
}

/// The id an envelope claims, read without trusting it (the signature is not checked): only to
/// label a refusal. `None` unless it is a plausible deployment id.
pub fn claimed_id(envelope: &str) -> Option<String> {
    use base64::Engine;
    let payload = envelope.strip_prefix("v1.")?.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let id = value.get("id")?.as_str()?;
    (id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then(|| id.to_string())
}

/// Checks `envelope` against the pinned hub key, for `device`, at `now`, after the deployment
/// numbered `last` was accepted. The signature is checked before the payload is believed.
pub fn verify(envelope: &str, hub_key: &[u8], device: &str, last: u64, now: u64) -> Result<Deployment, DeployRefusal> {
    let payload = signed::open(DOMAIN, envelope, hub_key, MAX_LEN).map_err(|e| match e {
        EnvelopeError::Malformed => DeployRefusal::Malformed,
        EnvelopeError::BadSignature => DeployRefusal::BadSignature,
    })?;
    let deployment: Deployment = serde_json::from_slice(&payload).map_err(|_| DeployRefusal::Malformed)?;
    if deployment.device != device {
        return Err(DeployRefusal::OtherDevice);
    }
    if deployment.number <= last {
        return Err(DeployRefusal::Replayed { number: deployment.number, last, id: deployment.id });
    }
    if deployment.exp <= now {
        return Err(DeployRefusal::Expired);
    }
    deployment.snapshot.check().map_err(DeployRefusal::Invalid)?;
    Ok(deployment)
}

impl Snapshot {
    /// Whether the device could apply this snapshot at all (names, shapes, reserved keys, and
    /// credentials it can open: never [`Credentials::Portable`]).
    pub fn check(&self) -> Result<(), SnapshotError> {
        if self.credentials.as_ref().is_some_and(|c| !c.is_deployable()) {
            return Err(SnapshotError::PortableCredentials);
        }
        let mut ids = std::collections::HashSet::new();
        for (i, node) in self.flows.iter().enumerate() {
            let id = node.get("id").and_then(|v| v.as_str()).filter(|s| !s.is_empty());
            let kind = node.get("type").and_then(|v| v.as_str()).filter(|s| !s.is_empty());
            let (Some(id), Some(_)) = (id, kind) else {
                return Err(SnapshotError::NodeWithoutIdOrType(i));
            };
            if !ids.insert(id) {
                return Err(SnapshotError::DuplicateId(i, id.to_string()));
            }
        }
        for (name, version) in &self.modules {
            if !is_npm_name(name) {
                return Err(SnapshotError::ModuleName(name.clone()));
            }
            if !is_version_range(version) {
                return Err(SnapshotError::ModuleVersion(name.clone(), version.clone()));
            }
        }
        for key in self.env.keys() {
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(SnapshotError::EnvName(key.clone()));
            }
            if RESERVED_ENV.contains(&key.as_str()) || key.starts_with("REDTETHER_") {
                return Err(SnapshotError::ReservedEnv(key.clone()));
            }
        }
        for key in self.settings.keys() {
            if !OVERRIDABLE_SETTINGS.contains(&key.as_str()) {
                return Err(SnapshotError::Setting(key.clone()));
            }
        }
        Ok(())
    }
}

/// npm's rules for new package names: lower case, URL-safe, optionally scoped, at most 214.
pub fn is_npm_name(name: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '_'])
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~".contains(c))
    };
    let bare = match name.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, rest)) if part_ok(scope) => rest,
            _ => return false,
        },
        None => name,
    };
    name.len() <= 214 && part_ok(bare)
}

/// A registry version or range (`1.2.3`, `^1.2`, `~2`, `>=1 <2`, `1.x`, `latest`), never a URL,
/// path, git or tarball spec: a deployment installs from the registry (or its offline cache).
fn is_version_range(spec: &str) -> bool {
    !spec.is_empty()
        && spec.len() <= 64
        && spec.chars().all(|c| c.is_ascii_alphanumeric() || " .^~<>=*|-+".contains(c))
        && !spec.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::tests::{encode_raw, key};
    use ring::signature::KeyPair;
    use serde_json::json;

    fn deployment(number: u64, exp: u64) -> Deployment {
        Deployment {
            id: "d-1".into(),
            device: "pump-1".into(),
            number,
            exp,
            snapshot: Snapshot {
                flows: vec![json!({"id": "t1", "type": "tab"}), json!({"id": "n1", "type": "inject", "z": "t1"})],
                credentials: None,
                modules: BTreeMap::from([("node-red-contrib-x".into(), "^1.2.0".into())]),
                env: BTreeMap::from([("SITE".into(), "north".into())]),
                settings: serde_json::Map::from_iter([("functionTimeout".to_string(), json!(5))]),
            },
        }
    }

    #[test]
    fn the_claimed_id_is_read_without_the_signature_and_only_when_plausible() {
        let envelope = sign(&deployment(5, 2000), &key());
        assert_eq!(claimed_id(&envelope).as_deref(), Some("d-1"));
        // A forged signature does not hide the claim (it only labels the refusal).
        let forged = format!("{}.AAAA", envelope.rsplit_once('.').unwrap().0);
        assert_eq!(claimed_id(&forged).as_deref(), Some("d-1"));
        let mut odd = deployment(5, 2000);
        odd.id = "<script>".into();
        assert_eq!(claimed_id(&sign(&odd, &key())), None);
        assert_eq!(claimed_id("v2.abc.def"), None);
        assert_eq!(claimed_id("garbage"), None);
    }

    #[test]
    fn a_signed_fresh_newer_deployment_for_this_device_is_accepted() {
        let k = key();
        let envelope = sign(&deployment(5, 2000), &k);
        assert_eq!(verify(&envelope, k.public_key().as_ref(), "pump-1", 4, 1000), Ok(deployment(5, 2000)));
    }

    #[test]
    fn attacks_are_refused() {
        let (k, other) = (key(), key());
        let pk = k.public_key().as_ref().to_vec();
        let good = sign(&deployment(5, 2000), &k);
        assert_eq!(
            verify(&sign(&deployment(5, 2000), &other), &pk, "pump-1", 0, 1000),
            Err(DeployRefusal::BadSignature)
        );
        assert_eq!(verify(&good, &pk, "pump-2", 0, 1000), Err(DeployRefusal::OtherDevice));
        assert_eq!(
            verify(&good, &pk, "pump-1", 5, 1000),
            Err(DeployRefusal::Replayed { number: 5, last: 5, id: "d-1".into() })
        );
        assert_eq!(
            verify(&good, &pk, "pump-1", 9, 1000),
            Err(DeployRefusal::Replayed { number: 5, last: 9, id: "d-1".into() })
        );
        assert_eq!(verify(&good, &pk, "pump-1", 0, 2000), Err(DeployRefusal::Expired));

        // Changed flows under the old signature: refused.
        let (_, sig) = good.rsplit_once('.').unwrap();
        let mut changed = deployment(5, 2000);
        changed.snapshot.flows.push(json!({"id": "x", "type": "exec"}));
        let tampered = format!("{}.{sig}", sign(&changed, &k).rsplit_once('.').unwrap().0);
        assert_eq!(verify(&tampered, &pk, "pump-1", 0, 1000), Err(DeployRefusal::BadSignature));
        // A renumbered payload under the old signature (to get past replay protection): refused.
        let renumbered = format!("{}.{sig}", sign(&deployment(99, 2000), &k).rsplit_once('.').unwrap().0);
        assert_eq!(verify(&renumbered, &pk, "pump-1", 5, 1000), Err(DeployRefusal::BadSignature));
        // An operator assertion's signature is no deployment signature.
        let payload = serde_json::to_vec(&deployment(5, 2000)).unwrap();
        let as_assertion =
            encode_raw(&payload, k.sign(&[&b"redtether platform assertion v1\0"[..], &payload].concat()).as_ref());
        assert_eq!(verify(&as_assertion, &pk, "pump-1", 0, 1000), Err(DeployRefusal::BadSignature));
        for junk in ["", "v1.", "v1.e30.AAAA", "v2.e30.AAAA", &"v1.".repeat(400_000)] {
            assert!(verify(junk, &pk, "pump-1", 0, 1000).is_err());
        }
        // Signed but carrying a snapshot the device must not apply.
        let mut bad = deployment(5, 2000);
        bad.snapshot.settings.insert("adminAuth".into(), json!(null));
        assert!(matches!(verify(&sign(&bad, &k), &pk, "pump-1", 0, 1000), Err(DeployRefusal::Invalid(_))));
    }

    #[test]
    fn snapshots_are_checked() {
        let ok = deployment(1, 1).snapshot;
        assert_eq!(ok.check(), Ok(()));
        let with = |f: &dyn Fn(&mut Snapshot)| {
            let mut s = ok.clone();
            f(&mut s);
            s.check()
        };
        assert!(with(&|s| s.flows.push(json!({"type": "inject"}))).is_err(), "no id");
        assert!(with(&|s| s.flows.push(json!({"id": "n1", "type": "inject"}))).is_err(), "duplicate id");
        assert!(with(&|s| s.flows.push(json!("node"))).is_err(), "not an object");
        for name in ["../x", "X", "@scope", "@/x", ".hidden", "a/b", "a b", ""] {
            assert!(
                with(&|s| {
                    s.modules.insert(name.into(), "1.0.0".into());
                })
                .is_err(),
                "{name}"
            );
        }
        for spec in ["file:../x", "git+https://x/y", "https://x/y.tgz", "/tmp/x", "../x", "", "1.0.0; rm"] {
            assert!(
                with(&|s| {
                    s.modules.insert("x".into(), spec.into());
                })
                .is_err(),
                "{spec}"
            );
        }
        for spec in ["1.2.3", "^1.2", "~2", ">=1 <2", "1.x", "latest", "1 || 2"] {
            assert_eq!(
                with(&|s| {
                    s.modules.insert("@scope/x".into(), spec.into());
                }),
                Ok(()),
                "{spec}"
            );
        }
        for key in ["NODE_OPTIONS", "LD_PRELOAD", "REDTETHER_NODE_RED_INSTANCE", "1X", "A-B", ""] {
            assert!(
                with(&|s| {
                    s.env.insert(key.into(), "v".into());
                })
                .is_err(),
                "{key}"
            );
        }
        for key in
            ["uiHost", "uiPort", "adminAuth", "credentialSecret", "httpAdminRoot", "userDir", "flowFile", "httpStatic"]
        {
            assert!(
                with(&|s| {
                    s.settings.insert(key.into(), json!(1));
                })
                .is_err(),
                "{key}"
            );
        }
    }

    #[test]
    fn portable_credentials_are_not_deployable_and_keep_their_json() {
        let mut s = deployment(1, 1).snapshot;
        s.credentials = Some(Credentials::Portable("v1.a.b.c".into()));
        assert_eq!(s.check(), Err(SnapshotError::PortableCredentials));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["credentials"], json!({"portable": "v1.a.b.c"}));
        assert_eq!(serde_json::from_value::<Snapshot>(json).unwrap(), s);
        s.credentials = Some(Credentials::Sealed("v1.a.b.c".into()));
        assert_eq!(s.check(), Ok(()));
        assert_eq!(serde_json::to_value(&s).unwrap()["credentials"], json!({"sealed": "v1.a.b.c"}));
    }

    #[test]
    fn the_hash_follows_the_flows() {
        let a = vec![json!({"id": "a", "type": "inject"})];
        let b = vec![json!({"id": "b", "type": "inject"})];
        assert_eq!(flows_hash(&a), flows_hash(&a.clone()));
        assert_ne!(flows_hash(&a), flows_hash(&b));
        assert_eq!(flows_hash(&a).len(), 64);
    }
}
