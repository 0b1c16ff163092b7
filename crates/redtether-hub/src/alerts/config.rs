//! `[alerts]` and `[[alerts.webhook]]` in hub.toml: when a condition becomes an alert and where
//! alerts are posted. Checked like the rest of the file: unknown keys refused, every error
//! naming its key.

use super::name::AlertName;
use crate::sso::config::TrustRoots;
use redtether_host::config_file::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    offline_after: Option<Duration>,
    audit_backlog_above: Option<u64>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    certificate_expiring_within: Option<Duration>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    send_resolved: Option<bool>,
    #[serde(default, deserialize_with = "redtether_host::config_file::duration::deserialize_opt")]
    timeout: Option<Duration>,
    ca_file: Option<PathBuf>,
}

/// `[alerts]`: the thresholds of the stateful alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// A device not connected for this long is offline.
    pub offline_after: Duration,
    /// A device whose unacknowledged journal events exceed this has a backlog.
    pub audit_backlog_above: u64,
    /// A certificate expiring within this is about to lock its device out.
    pub certificate_expiring_within: Duration,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            offline_after: Duration::from_secs(5 * 60),
            audit_backlog_above: 10_000,
            certificate_expiring_within: Duration::from_secs(14 * 86_400),
        }
    }
}

/// One `[[alerts.webhook]]`.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// How the audit trail and the log name it (`webhook-N` by position unless named).
    pub name: String,
    /// The full URL, with whatever secret it holds: only ever used to post.
    pub url: url::Url,
    /// The alerts it receives (every one unless `events` lists some).
    pub events: Vec<AlertName>,
    pub send_resolved: bool,
    /// For one attempt, connection included.
    pub timeout: Duration,
    pub roots: TrustRoots,
}

impl Webhook {
    /// The URL's origin only (`https://host:port`): paths, queries and user info often hold
    /// the receiver's token, and this is what goes into logs and the audit trail.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// Whether this webhook gets `name` with `resolved` status or not.
    pub fn wants(&self, name: AlertName, resolved: bool) -> bool {
        self.events.contains(&name) && (!resolved || self.send_resolved)
    }
}

/// Validated `[alerts]`.
#[derive(Debug, Clone, Default)]
pub struct AlertSettings {
    pub thresholds: Thresholds,
    pub webhooks: Vec<Webhook>,
}

pub fn validate(
    raw: RawAlerts,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<AlertSettings, ConfigError> {
    let default = Thresholds::default();
    let positive = |d: Option<Duration>, default: Duration, key: &str| match d.unwrap_or(default) {
        d if d.is_zero() => Err(invalid(key, "must be greater than zero".into())),
        d => Ok(d),
    };
    let thresholds = Thresholds {
        offline_after: positive(raw.offline_after, default.offline_after, "alerts.offline_after")?,
        audit_backlog_above: raw.audit_backlog_above.unwrap_or(default.audit_backlog_above),
        certificate_expiring_within: positive(
            raw.certificate_expiring_within,
            default.certificate_expiring_within,
            "alerts.certificate_expiring_within",
        )?,
    };
    let mut webhooks = Vec::new();
    for (i, hook) in raw.webhook.into_iter().enumerate() {
        let which = format!("webhook {}", i + 1);
        let name = hook.name.unwrap_or_else(|| format!("webhook-{}", i + 1));
        if !redtether_proto::names::valid_name(&name) {
            return Err(invalid(
                "alerts.webhook.name",
                format!("{which}: {name:?} is not a name (1-64 of A-Z a-z 0-9 . _ @ -)"),
            ));
        }
        let Some(text) = hook.url else {
            return Err(invalid("alerts.webhook.url", format!("{which} has no url")));
        };
        // The message never repeats the URL: it may hold the receiver's token.
        let url =
            url::Url::parse(&text).map_err(|e| invalid("alerts.webhook.url", format!("{which}: not a URL ({e})")))?;
        if !["http", "https"].contains(&url.scheme()) || url.host().is_none() {
            return Err(invalid(
                "alerts.webhook.url",
                format!("{which}: must be an http:// or https:// URL with a host"),
            ));
        }
        let events = match hook.events {
            None => AlertName::ALL.to_vec(),
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    "alerts.webhook.events",
                    format!("{which}: lists no alert (leave it out for all)"),
                ));
            }
            Some(list) => list
                .iter()
                .map(|e| {
                    AlertName::parse(e).ok_or_else(|| {
                        let known: Vec<&str> = AlertName::ALL.iter().map(|a| a.as_str()).collect();
                        invalid("alerts.webhook.events", format!("{which}: {e:?} is not one of {}", known.join(", ")))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        webhooks.push(Webhook {
            name,
            url,
            events,
            send_resolved: hook.send_resolved.unwrap_or(true),
            timeout: positive(hook.timeout, Duration::from_secs(10), "alerts.webhook.timeout")?,
            roots: hook.ca_file.map_or(TrustRoots::System, |p| TrustRoots::CaFile(base.join(p))),
        });
    }
    Ok(AlertSettings { thresholds, webhooks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<AlertSettings, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            alerts: RawAlerts,
        }
        let doc: Doc = redtether_host::config_file::parse_toml(text, Path::new("hub.toml"))?;
        validate(doc.alerts, Path::new("/etc/redtether"), &|key, msg| ConfigError::invalid("hub.toml", key, msg))
    }

    #[test]
    fn defaults_and_every_key() {
        let s = check("[alerts]\n").unwrap();
        assert_eq!(s.thresholds, Thresholds::default());
        assert!(s.webhooks.is_empty());
        let s = check(
            "[alerts]\noffline_after = \"2s\"\naudit_backlog_above = 5\ncertificate_expiring_within = \"3d\"\n\
             [[alerts.webhook]]\nurl = \"https://u:p@alerts.example.com:8443/hook?token=t\"\n\
             [[alerts.webhook]]\nname = \"pager\"\nurl = \"http://127.0.0.1:9/x\"\nevents = [\"device.offline\"]\n\
             send_resolved = false\ntimeout = \"3s\"\nca_file = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(s.thresholds.offline_after, Duration::from_secs(2));
        assert_eq!(s.thresholds.audit_backlog_above, 5);
        assert_eq!(s.thresholds.certificate_expiring_within, Duration::from_secs(3 * 86_400));
        let (all, pager) = (&s.webhooks[0], &s.webhooks[1]);
        assert_eq!(all.name, "webhook-1");
        assert_eq!(all.origin(), "https://alerts.example.com:8443", "no credentials, path or query");
        assert!(all.wants(AlertName::HubAuditGap, true));
        assert_eq!(pager.name, "pager");
        assert!(pager.wants(AlertName::DeviceOffline, false) && !pager.wants(AlertName::DeviceOffline, true));
        assert!(!pager.wants(AlertName::RolloutHalted, false));
        assert_eq!(pager.timeout, Duration::from_secs(3));
        assert_eq!(pager.roots, TrustRoots::CaFile("/etc/redtether/ca.pem".into()));
    }

    #[test]
    fn errors_name_their_key_and_never_the_url() {
        let err = |t: &str| check(t).unwrap_err();
        let key = |t: &str| err(t).key().unwrap().to_string();
        assert_eq!(key("[alerts]\noffline_after = \"0s\"\n"), "alerts.offline_after");
        assert_eq!(key("[alerts]\nofline_after = \"1m\"\n"), "alerts.ofline_after");
        assert_eq!(key("[[alerts.webhook]]\nevents = []\n"), "alerts.webhook.url");
        let bad = err("[[alerts.webhook]]\nurl = \"ftp://secret-token@example.com/\"\n");
        assert_eq!(bad.key(), Some("alerts.webhook.url"));
        assert!(!bad.to_string().contains("secret-token"), "{bad}");
        assert_eq!(key("[[alerts.webhook]]\nurl = \"not a url\"\n"), "alerts.webhook.url");
        let unknown = err("[[alerts.webhook]]\nurl = \"https://e.example\"\nevents = [\"device.online\"]\n");
        assert_eq!(unknown.key(), Some("alerts.webhook.events"));
        assert!(unknown.to_string().contains("device.online"), "{unknown}");
        assert_eq!(key("[[alerts.webhook]]\nurl = \"https://e.example\"\nevents = []\n"), "alerts.webhook.events");
    }
}
