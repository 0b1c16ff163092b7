//! The alerts the hub raises, by the names `[[alerts.webhook]] events` lists and the JSON body
//! carries.

/// One kind of alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertName {
    /// A device has not been connected for `[alerts] offline_after`. Stateful.
    DeviceOffline,
    /// A device's Node-RED is in a crash loop. Stateful: resolved once it runs again.
    NodeRedCrashLoop,
    /// A device rolled a deployment back. One-shot.
    DeploymentRolledBack,
    /// A rollout halted itself (more devices failed than its plan allows). One-shot.
    RolloutHalted,
    /// A device refused a policy. One-shot.
    PolicyRefused,
    /// A device's unacknowledged journal events exceed `[alerts] audit_backlog_above`. Stateful.
    AuditBacklog,
    /// A device's certificate expires within `[alerts] certificate_expiring_within` (or has
    /// expired). Stateful: resolved by a renewal.
    CertificateExpiring,
    /// The hub's own audit trail misses events: its chain does not verify when the hub starts,
    /// or an event could not be written. One-shot.
    HubAuditGap,
}

impl AlertName {
    pub const ALL: [AlertName; 8] = [
        AlertName::DeviceOffline,
        AlertName::NodeRedCrashLoop,
        AlertName::DeploymentRolledBack,
        AlertName::RolloutHalted,
        AlertName::PolicyRefused,
        AlertName::AuditBacklog,
        AlertName::CertificateExpiring,
        AlertName::HubAuditGap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertName::DeviceOffline => "device.offline",
            AlertName::NodeRedCrashLoop => "node_red.crash_loop",
            AlertName::DeploymentRolledBack => "deployment.rolled_back",
            AlertName::RolloutHalted => "rollout.halted",
            AlertName::PolicyRefused => "policy.refused",
            AlertName::AuditBacklog => "audit.backlog",
            AlertName::CertificateExpiring => "certificate.expiring",
            AlertName::HubAuditGap => "hub.audit_gap",
        }
    }

    pub fn parse(name: &str) -> Option<AlertName> {
        AlertName::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for AlertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_are_documented() {
        let readme = include_str!("../../../../README.md");
        for name in AlertName::ALL {
            assert_eq!(AlertName::parse(name.as_str()), Some(name));
            assert!(readme.contains(&format!("`{name}`")), "{name} is not in README.md");
        }
        assert_eq!(AlertName::parse("device.online"), None);
    }
}
